//! Balancers and connection pools end to end, against real upstreams that
//! say who they are.

use crate::{config, start};
use remora_test_support::{Http1Conn, Http2Conn, Upstream};
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn backend(name: &str, balancer: &str, eps: &[SocketAddr]) -> String {
    let list: Vec<String> = eps.iter().map(|a| format!("{{ address: {a} }}")).collect();
    format!(
        "  - name: {name}\n    balancer: {balancer}\n    endpoints: [{}]",
        list.join(", ")
    )
}

async fn tally(
    conn: &mut Http1Conn,
    n: usize,
    headers: impl Fn(usize) -> Vec<(String, String)>,
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for i in 0..n {
        let h = headers(i);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let rsp = conn.send("GET", "/", &h, bytes::Bytes::new()).await;
        assert_eq!(rsp.status, 200);
        *out.entry(rsp.upstream().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly() {
    let ups = [
        Upstream::start("u0").await,
        Upstream::start("u1").await,
        Upstream::start("u2").await,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr()).collect();
    let routes = "      - name: all\n        backends: [{ name: b }]";
    let proxy = start(&config(routes, &backend("b", "round_robin", &addrs))).await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    let c = tally(&mut conn, 300, |_| vec![]).await;
    assert_eq!(c.get("u0"), Some(&100), "{c:?}");
    assert_eq!(c.get("u1"), Some(&100), "{c:?}");
    assert_eq!(c.get("u2"), Some(&100), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_a_key_on_one_endpoint() {
    let ups = [
        Upstream::start("u0").await,
        Upstream::start("u1").await,
        Upstream::start("u2").await,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr()).collect();
    let routes = "      - name: all\n        backends: [{ name: b }]";
    let proxy = start(&config(
        routes,
        &backend("b", "{ ring_hash: { header: x-user } }", &addrs),
    ))
    .await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    let mut owner: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for user in 0..100 {
            let key = format!("user-{user}");
            let rsp = conn
                .send("GET", "/", &[("x-user", &key)], bytes::Bytes::new())
                .await;
            let who = rsp.upstream().unwrap().to_string();
            if round == 0 {
                owner.insert(key, who);
            } else {
                assert_eq!(owner[&key], who, "{key} moved");
            }
        }
    }
    let mut per: HashMap<&str, usize> = HashMap::new();
    for who in owner.values() {
        *per.entry(who).or_default() += 1;
    }
    assert_eq!(per.len(), 3, "every endpoint owns keys: {per:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_uses_every_endpoint() {
    let ups = [Upstream::start("u0").await, Upstream::start("u1").await];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr()).collect();
    let routes = "      - name: all\n        backends: [{ name: b }]";
    let proxy = start(&config(routes, &backend("b", "least_request", &addrs))).await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    let c = tally(&mut conn, 400, |_| vec![]).await;
    // Idle endpoints tie, so P2C picks at random: both get a fair share.
    assert!(c["u0"] > 120 && c["u1"] > 120, "{c:?}");
}

/// An HTTP/1.1 upstream that answers every request after `delay_ms`.
async fn slow_upstream(delay_ms: u64) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut have = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have.extend_from_slice(&buf[..n]);
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        have.drain(..end + 4);
                        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                        let rsp = b"HTTP/1.1 200 OK\r\nx-upstream: slow\r\ncontent-length: 5\r\n\r\nslow\n";
                        if s.write_all(rsp).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_less_to_a_slow_endpoint() {
    let fast = [Upstream::start("f0").await, Upstream::start("f1").await];
    let slow = slow_upstream(40).await;
    let addrs = [fast[0].addr(), fast[1].addr(), slow];
    let routes = "      - name: all\n        backends: [{ name: b }]";
    let proxy = start(&config(routes, &backend("b", "peak_ewma", &addrs))).await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    let c = tally(&mut conn, 300, |_| vec![]).await;
    let to_slow = c.get("slow").copied().unwrap_or(0);
    // Uniform would give it 100; peak-EWMA learns it is slow after one try.
    assert!(to_slow < 30, "slow endpoint got {to_slow} of 300: {c:?}");
    assert_eq!(c.values().sum::<usize>(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_connections_are_pooled_and_reused() {
    let up = Upstream::start("up").await;
    let routes = "      - name: all\n        backends: [{ name: b }]";
    let proxy = start(&config(routes, &backend("b", "round_robin", &[up.addr()]))).await;
    // Fresh client connections each time: reuse must come from the proxy's pool.
    for _ in 0..50 {
        let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
        assert_eq!(conn.get("/").await.status, 200);
    }
    assert_eq!(up.requests(), 50);
    assert!(
        up.connections() <= 2,
        "{} upstream connections for 50 sequential requests",
        up.connections()
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("remora_upstream_connections_total{backend=\"b\",protocol=\"http1\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_share_one_upstream_connection() {
    let up = Upstream::start("up").await;
    let routes = "      - name: all\n        backends: [{ name: b }]";
    let backends = format!(
        "  - name: b\n    protocol: http2\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    let proxy = start(&config(routes, &backends)).await;
    let conn = Http2Conn::connect(proxy.listener("edge")).await;
    let calls = (0..40).map(|_| conn.get("/slow/50"));
    let rsps = futures_util::future::join_all(calls).await;
    assert!(rsps
        .iter()
        .all(|r| r.status == 200 && r.upstream() == Some("up")));
    assert_eq!(
        up.connections(),
        1,
        "40 concurrent requests were multiplexed on one connection"
    );
}

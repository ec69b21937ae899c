//! Limits and bad input: 431, slowloris, 413, connection cap, malformed
//! requests — each answered or closed, never a panic.

use crate::{config, start};
use bytes::Bytes;
use remora_test_support::client::{raw, Request};
use remora_test_support::{Http1Conn, Upstream};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn limited(up: &Upstream, limits: &str) -> String {
    let routes = "      - name: all\n        backends: [{ name: up }]";
    let backends = format!(
        "  - name: up\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    config(routes, &backends).replace(
        "    routes:\n",
        &format!("    limits: {limits}\n    routes:\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let up = Upstream::start("up").await;
    let proxy = start(&limited(&up, "{ max_request_header_bytes: 2048 }")).await;
    let base = format!("http://{}", proxy.listener("edge"));
    let big = "x".repeat(3000);
    for h2 in [false, true] {
        let mut req = Request::new("GET", &format!("{base}/")).header("x-big", &big);
        if h2 {
            req = req.http2();
        }
        let rsp = req.send().await;
        assert_eq!(rsp.status, 431, "h2={h2}");
    }
    let rsp = Request::new("GET", &format!("{base}/"))
        .header("x-small", "ok")
        .send()
        .await;
    assert_eq!(rsp.status, 200);
    assert_eq!(
        up.requests(),
        1,
        "oversized requests never reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_senders_are_cut_off() {
    let up = Upstream::start("up").await;
    let proxy = start(&limited(&up, "{ header_read_timeout: 500ms }")).await;
    let mut s = tokio::net::TcpStream::connect(proxy.listener("edge"))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Never finish the head: the proxy must close the connection by itself.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection still open 20 s after a 500 ms header timeout"
    );
    assert_eq!(up.requests(), 0);
    // And it still serves well-behaved clients.
    let rsp = Request::new("GET", &format!("http://{}/", proxy.listener("edge")))
        .send()
        .await;
    assert_eq!(rsp.status, 200);
}

/// The header timeout runs per request head: a kept-alive connection that
/// keeps sending requests outlives it, one left idle past it is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_runs_per_head_and_closes_idle_keep_alive() {
    let up = Upstream::start("up").await;
    let proxy = start(&limited(&up, "{ header_read_timeout: 1s }")).await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    // 8 requests 300 ms apart: 2.4 s on one connection, every head on time.
    for i in 0..8 {
        let rsp = conn
            .try_send("GET", "/", &[], Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("request {i} on the kept-alive connection: {e:#}"));
        assert_eq!(rsp.status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let closed = async {
        while !conn.is_closed() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), closed)
        .await
        .expect("an idle kept-alive connection still open 20 s after a 1 s header timeout");
    assert_eq!(up.requests(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let up = Upstream::start("up").await;
    let proxy = start(&limited(&up, "{ max_request_body_bytes: 1000 }")).await;
    let url = format!("http://{}/sink", proxy.listener("edge"));
    // Declared too large: refused before anything goes upstream.
    let rsp = Request::new("POST", &url)
        .body(Bytes::from(vec![b'x'; 2000]))
        .send()
        .await;
    assert_eq!(rsp.status, 413);
    assert_eq!(rsp.header("remora-error"), Some("body-too-large"));
    assert_eq!(up.requests(), 0);
    // Within the limit: fine.
    let rsp = Request::new("POST", &url)
        .body(Bytes::from(vec![b'x'; 1000]))
        .send()
        .await;
    assert_eq!((rsp.status, rsp.text().as_str()), (200, "1000"));
    // Chunked, no length: cut off while streaming.
    let mut s = tokio::net::TcpStream::connect(proxy.listener("edge"))
        .await
        .unwrap();
    let mut req = b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"258\r\n");
        req.extend_from_slice(&[b'y'; 600]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed() {
    let up = Upstream::start("up").await;
    let proxy = start(&limited(&up, "{ max_connections: 2 }")).await;
    let addr = proxy.listener("edge");
    let mut c1 = Http1Conn::connect(addr).await;
    let mut c2 = Http1Conn::connect(addr).await;
    assert_eq!(c1.get("/").await.status, 200);
    assert_eq!(c2.get("/").await.status, 200);
    let third = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        third.is_empty(),
        "third connection was served: {}",
        String::from_utf8_lossy(&third)
    );
    drop(c1);
    // Once one closes, a new connection is accepted again.
    let mut ok = false;
    for _ in 0..50 {
        let rsp = raw(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        if rsp.starts_with(b"HTTP/1.1 200") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "no connection accepted after one closed");
    assert_eq!(c2.get("/").await.status, 200);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(
            "remora_connections_rejected_total{listener=\"edge\",reason=\"max-connections\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_the_proxy_lives_on() {
    let up = Upstream::start("up").await;
    let proxy = start(&limited(&up, "{}")).await;
    let addr = proxy.listener("edge");
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ] {
        let rsp = raw(addr, junk, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&rsp);
        assert!(
            text.starts_with("HTTP/1.1 400"),
            "{:?} -> {text:?}",
            String::from_utf8_lossy(junk)
        );
    }
    assert_eq!(up.requests(), 0);
    let rsp = Request::new("GET", &format!("http://{addr}/")).send().await;
    assert_eq!(rsp.status, 200);
}

//! A retry goes to another endpoint than the one that just failed: three
//! real upstreams, one killed under concurrent traffic, outlier detection
//! off so the dead endpoint stays in the rotation, `retry` on. Every
//! request must succeed, with every balancer.

use crate::start;
use remora_test_support::{Http1Conn, Upstream};
use std::net::SocketAddr;
use std::time::Duration;

/// Clients sending at once, and requests each sends per kill.
const CLIENTS: usize = 8;
const PER_CLIENT: usize = 100;
/// Times one endpoint is killed (and brought back) per balancer.
const KILLS: usize = 3;

fn yaml(balancer: &str, eps: &[SocketAddr]) -> String {
    let list: Vec<String> = eps.iter().map(|a| format!("{{ address: {a} }}")).collect();
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: r
        backends: [{{ name: b }}]
        retry: {{ attempts: 2, on: [connect-failure, reset], backoff: {{ base: 1ms, max: 2ms }} }}
backends:
  - name: b
    balancer: {balancer}
    endpoints: [{}]
    outlier_detection: {{ consecutive_failures: 0 }}
    retry_budget: {{ ratio: 1.0, min_per_second: 1000 }}
",
        list.join(", ")
    )
}

/// `CLIENTS` connections, `PER_CLIENT` requests each; the failures seen.
async fn traffic(edge: SocketAddr, key: usize) -> usize {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(async move {
                let mut conn = Http1Conn::connect(edge).await;
                let mut failed = 0;
                for i in 0..PER_CLIENT {
                    // A key per request spreads the ring-hash balancer.
                    let k = format!("{key}-{c}-{i}");
                    let rsp = conn
                        .send("GET", "/", &[("x-key", &k)], bytes::Bytes::new())
                        .await;
                    if rsp.status != 200 {
                        failed += 1;
                        if conn.is_closed() {
                            conn = Http1Conn::connect(edge).await;
                        }
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        failed += t.await.expect("client task");
    }
    failed
}

async fn failures_per_kill(balancer: &str) -> Vec<usize> {
    let ups = [
        Upstream::start("u0").await,
        Upstream::start("u1").await,
        Upstream::start("u2").await,
    ];
    let addrs: Vec<_> = ups.iter().map(Upstream::addr).collect();
    let [u0, u1, u2] = ups;
    let proxy = start(&yaml(balancer, &addrs)).await;
    let edge = proxy.listener("edge");
    assert_eq!(traffic(edge, 0).await, 0, "{balancer}: before any kill");
    let mut victim = u2;
    let mut out = Vec::new();
    for kill in 1..=KILLS {
        let addr = victim.kill().await;
        out.push(traffic(edge, kill).await);
        victim = Upstream::start_on("u2", addr).await;
    }
    drop((u0, u1, victim));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_avoids_the_endpoint_that_failed() {
    let mut report = Vec::new();
    for balancer in [
        "round_robin",
        "peak_ewma",
        "least_request",
        "{ ring_hash: { header: x-key } }",
    ] {
        let failures = tokio::time::timeout(Duration::from_secs(120), failures_per_kill(balancer))
            .await
            .expect("bounded");
        eprintln!(
            "failures per kill, {balancer}: {failures:?} (of {} requests each)",
            CLIENTS * PER_CLIENT
        );
        report.push((balancer, failures));
    }
    for (balancer, failures) in &report {
        assert!(failures.iter().all(|f| *f == 0), "{balancer}: {report:?}");
    }
}

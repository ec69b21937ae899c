//! Local rate limits, fault injection and active health checks, end to end.

use crate::{metric, start};
use remora_test_support::client::Request;
use remora_test_support::{Http1Conn, Upstream};
use std::time::Duration;
use tokio::time::Instant;

fn yaml(route: &str, backend: &str, ups: &[&Upstream]) -> String {
    let eps: Vec<String> = ups
        .iter()
        .map(|u| format!("{{ address: {} }}", u.addr()))
        .collect();
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    routes:\n      - name: r\n        backends: [{{ name: b }}]\n{route}\nbackends:\n  - name: b\n    endpoints: [{}]\n{backend}\n",
        eps.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_admits_the_configured_rate_and_answers_429() {
    let up = Upstream::start("up").await;
    let route = "        rate_limit: { requests_per_second: 20, burst: 5 }";
    let proxy = start(&yaml(route, "", &[&up])).await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    let started = Instant::now();
    let (mut ok, mut limited) = (0u64, 0u64);
    // Two seconds of back-to-back requests, at most 20 000.
    for _ in 0..20_000 {
        if started.elapsed() >= Duration::from_secs(2) {
            break;
        }
        let rsp = conn.get("/").await;
        match rsp.status {
            200 => ok += 1,
            429 => {
                assert_eq!(rsp.header("remora-error"), Some("rate-limited"));
                assert!(rsp
                    .header("retry-after")
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|s| s >= 1));
                limited += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 5.0 + 20.0 * elapsed;
    assert!(
        (ok as f64) <= allowed + 1.0,
        "{ok} admitted, at most {allowed:.0} allowed"
    );
    assert!(
        (ok as f64) >= allowed * 0.8,
        "{ok} admitted, {allowed:.0} allowed"
    );
    assert!(
        limited > ok,
        "back-to-back requests are mostly limited: {limited}"
    );
    assert_eq!(up.requests() as u64, ok);
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            "remora_rate_limited_total{listener=\"edge\",route=\"r\"}"
        ),
        limited,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_rate_limits_are_per_key() {
    let up = Upstream::start("up").await;
    let route = "        rate_limit: { requests_per_second: 1, burst: 3, key_header: x-user }";
    let proxy = start(&yaml(route, "", &[&up])).await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    for user in ["alice", "bob"] {
        let statuses: Vec<u16> = {
            let mut v = Vec::new();
            for _ in 0..5 {
                v.push(
                    conn.send("GET", "/", &[("x-user", user)], bytes::Bytes::new())
                        .await
                        .status,
                );
            }
            v
        };
        assert_eq!(&statuses[..3], &[200, 200, 200], "{user}: {statuses:?}");
        assert_eq!(statuses[4], 429, "{user}: {statuses:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_hit_their_configured_share() {
    let up = Upstream::start("up").await;
    let route = "        fault: { abort: { status: 503, percent: 30 }, delay: { duration: 1ms, percent: 50 } }";
    let proxy = start(&yaml(route, "", &[&up])).await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    let n = 2000;
    let mut aborted = 0;
    for _ in 0..n {
        let rsp = conn.get("/").await;
        if rsp.status == 503 {
            assert_eq!(rsp.header("remora-error"), Some("fault-injected"));
            aborted += 1;
        } else {
            assert_eq!(rsp.status, 200);
        }
    }
    // 30 % of 2000, σ ≈ 1 %: ±5 σ.
    let share = aborted as f64 / n as f64;
    assert!((0.25..=0.35).contains(&share), "aborted share {share}");
    assert_eq!(
        up.requests(),
        n - aborted,
        "aborted requests never reach the upstream"
    );
    let m = proxy.metrics().await;
    let delayed = metric(
        &m,
        "remora_faults_injected_total{fault=\"delay\",listener=\"edge\",route=\"r\"}",
    ) as f64
        / n as f64;
    assert!(
        (0.45..=0.55).contains(&delayed),
        "delayed share {delayed}\n{m}"
    );
    assert_eq!(
        metric(
            &m,
            "remora_faults_injected_total{fault=\"abort\",listener=\"edge\",route=\"r\"}"
        ),
        aborted as u64
    );
}

async fn wait_for_metric(proxy: &remora_test_support::ProxyProcess, line: &str) {
    for _ in 0..100 {
        if proxy.metrics().await.lines().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "metric line {line:?} never appeared:\n{}",
        proxy.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_endpoints_out_and_back() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let backend = "    balancer: round_robin\n    health_check: { path: /healthz, interval: 100ms, healthy_threshold: 2, unhealthy_threshold: 2 }";
    let proxy = start(&yaml("", backend, &[&a, &b])).await;
    wait_for_metric(
        &proxy,
        "remora_endpoints{backend=\"b\",state=\"available\"} 2",
    )
    .await;
    a.set_health(false);
    wait_for_metric(
        &proxy,
        "remora_endpoints{backend=\"b\",state=\"unhealthy\"} 1",
    )
    .await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    for _ in 0..20 {
        assert_eq!(
            conn.get("/").await.upstream(),
            Some("b"),
            "the unhealthy endpoint gets no traffic"
        );
    }
    a.set_health(true);
    wait_for_metric(
        &proxy,
        "remora_endpoints{backend=\"b\",state=\"available\"} 2",
    )
    .await;
    let mut to_a = 0;
    for _ in 0..20 {
        if conn.get("/").await.upstream() == Some("a") {
            to_a += 1;
        }
    }
    assert_eq!(to_a, 10, "back in the round-robin rotation");
    assert!(a.health_checks() >= 4);
    let m = proxy.metrics().await;
    assert!(
        metric(
            &m,
            "remora_health_checks_total{backend=\"b\",result=\"unhealthy\"}"
        ) >= 2,
        "{m}"
    );
    let rsp = Request::new("GET", &format!("http://{}/", proxy.listener("edge")))
        .send()
        .await;
    assert_eq!(rsp.status, 200);
}

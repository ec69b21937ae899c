//! Resilience end to end: retries (and what is not retried), the retry
//! budget, outlier ejection and recovery, circuit breaking, per-try timeouts.
//! Upstreams fail on command and say who answered.

use crate::{metric, start};
use bytes::Bytes;
use remora_test_support::client::Request;
use remora_test_support::upstream::Mode;
use remora_test_support::{Http1Conn, Http2Conn, Upstream};
use std::time::Duration;

/// One listener `edge` with one route `r` (extra YAML for the route
/// indented by 8) to backend `b` (extra YAML indented by 4) over `ups`.
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
async fn retries_hide_a_half_failing_upstream() {
    let ups = [Upstream::start("u0").await, Upstream::start("u1").await];
    for u in &ups {
        u.set_mode(Mode::FailEvery { n: 2, status: 503 });
    }
    let route =
        "        retry: { attempts: 4, on: [gateway-error], backoff: { base: 1ms, max: 5ms } }";
    // A budget that lets every request retry: this test is about retries.
    let backend =
        "    retry_budget: { ratio: 3.0 }\n    outlier_detection: { consecutive_failures: 0 }";
    let proxy = start(&yaml(route, backend, &[&ups[0], &ups[1]])).await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    let n = 2000;
    let mut ok = 0;
    for _ in 0..n {
        if conn.get("/").await.status == 200 {
            ok += 1;
        }
    }
    let rate = ok as f64 / n as f64;
    assert!(rate >= 0.999, "success rate {rate} ({ok}/{n})");
    let failed_upstream = ups[0].failures() + ups[1].failures();
    assert!(
        failed_upstream > 500,
        "the upstreams really failed: {failed_upstream}"
    );
    let m = proxy.metrics().await;
    assert!(
        metric(
            &m,
            "remora_retries_total{backend=\"b\",reason=\"gateway-error\"}"
        ) >= failed_upstream as u64 - 5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_a_retry_storm() {
    let up = Upstream::start("down").await;
    up.set_mode(Mode::FailStatus { status: 503 });
    let route =
        "        retry: { attempts: 5, on: [gateway-error], backoff: { base: 1ms, max: 2ms } }";
    let backend = "    retry_budget: { ratio: 0.2, min_per_second: 1, window: 60s }";
    let proxy = start(&yaml(route, backend, &[&up])).await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    let n = 200;
    for _ in 0..n {
        assert_eq!(conn.get("/").await.status, 503);
    }
    // Without a budget: 5 attempts each = 1000. With it: 200 + 60 reserve + 0.2 × 200.
    let attempts = up.requests();
    assert!(
        (n..=n + 60 + 40 + 5).contains(&attempts),
        "{attempts} upstream attempts for {n} requests"
    );
    let m = proxy.metrics().await;
    assert!(
        metric(&m, "remora_retry_budget_exhausted_total{backend=\"b\"}") > 0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_is_ejected_and_comes_back() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let backend = "    balancer: round_robin\n    outlier_detection: { consecutive_failures: 2, base_ejection_time: 1s, max_ejected_percent: 50 }";
    let proxy = start(&yaml("", backend, &[&a, &b, &c])).await;
    let edge = proxy.listener("edge");
    let b_addr = b.kill().await;
    let mut conn = Http1Conn::connect(edge).await;
    let mut failed = 0;
    for _ in 0..60 {
        let rsp = conn.get("/").await;
        if rsp.status != 200 {
            assert_eq!(rsp.header("remora-error"), Some("connect-failed"));
            failed += 1;
        }
    }
    assert_eq!(
        failed, 2,
        "after two failures in a row the dead endpoint is out"
    );
    let m = proxy.metrics().await;
    assert_eq!(
        metric(&m, "remora_outlier_ejections_total{backend=\"b\"}"),
        1,
        "{m}"
    );

    // It comes back, and after its ejection time it serves again.
    let b = Upstream::start_on("b", b_addr).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut seen_b = 0;
    for _ in 0..30 {
        let rsp = conn.get("/").await;
        assert_eq!(rsp.status, 200);
        if rsp.upstream() == Some("b") {
            seen_b += 1;
        }
    }
    assert!(seen_b >= 5, "the recovered endpoint got {seen_b} of 30");
    assert!(b.requests() >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_buffer_is_not_retried() {
    let up = Upstream::start("down").await;
    up.set_mode(Mode::FailStatus { status: 503 });
    let route = "        retry: { attempts: 3, on: [gateway-error], buffer_bytes: 1024, backoff: { base: 1ms, max: 1ms } }";
    let proxy = start(&yaml(route, "", &[&up])).await;
    let url = format!("http://{}/sink", proxy.listener("edge"));
    let rsp = Request::new("POST", &url)
        .body(Bytes::from(vec![b'x'; 100_000]))
        .send()
        .await;
    assert_eq!(rsp.status, 503);
    assert_eq!(up.requests(), 1, "a large body is sent once");
    let rsp = Request::new("POST", &url)
        .body(Bytes::from(vec![b'x'; 100]))
        .send()
        .await;
    assert_eq!(rsp.status, 503);
    assert_eq!(
        up.requests(),
        1 + 3,
        "a small body is replayed for each attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_is_retried() {
    let bad = Upstream::start("bad").await;
    let good = Upstream::start("good").await;
    bad.set_mode(Mode::GrpcStatus { code: 14 });
    let route =
        "        retry: { attempts: 2, on: [unavailable], backoff: { base: 1ms, max: 1ms } }";
    let backend = "    balancer: round_robin\n    protocol: http2\n    outlier_detection: { consecutive_failures: 0 }";
    let proxy = start(&yaml(route, backend, &[&bad, &good])).await;
    let conn = Http2Conn::connect(proxy.listener("edge")).await;
    for _ in 0..20 {
        let rsp = conn
            .send(
                "POST",
                "/echo.Echo/Unary",
                &[("content-type", "application/grpc"), ("te", "trailers")],
                Bytes::new(),
            )
            .await;
        assert_eq!(rsp.status, 200);
        assert_eq!(rsp.upstream(), Some("good"));
        assert_eq!(rsp.header("grpc-status"), None);
    }
    // Round robin: each retry takes the good endpoint's turn, so every first
    // attempt lands on the failing one and every request is retried once.
    assert_eq!(bad.requests(), 20);
    assert_eq!(good.requests(), 20);
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            "remora_retries_total{backend=\"b\",reason=\"unavailable\"}"
        ),
        20,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_fails_fast_when_full() {
    let up = Upstream::start("slow").await;
    let backend = "    circuit_breaker: { max_requests: 2 }";
    let proxy = start(&yaml("", backend, &[&up])).await;
    let edge = proxy.listener("edge");
    let slow: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                Request::new("GET", &format!("http://{edge}/slow/3000"))
                    .send()
                    .await
            })
        })
        .collect();
    for _ in 0..300 {
        if up.requests() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rsp = Request::new("GET", &format!("http://{edge}/")).send().await;
    assert_eq!(rsp.status, 503);
    assert_eq!(rsp.header("remora-error"), Some("overloaded"));
    assert_eq!(up.requests(), 2, "the overflow never reached the upstream");
    for s in slow {
        assert_eq!(
            s.await.unwrap().status,
            200,
            "requests within the limit finish"
        );
    }
    assert_eq!(
        Request::new("GET", &format!("http://{edge}/"))
            .send()
            .await
            .status,
        200
    );
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            "remora_circuit_breaker_overflows_total{backend=\"b\",reason=\"max_requests\"}"
        ),
        1,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeouts_are_retried_then_reported() {
    let up = Upstream::start("slow").await;
    let route = "        retry: { attempts: 2, on: [gateway-error], per_try_timeout: 200ms, backoff: { base: 1ms, max: 1ms } }";
    let proxy = start(&yaml(route, "", &[&up])).await;
    let rsp = Request::new(
        "GET",
        &format!("http://{}/slow/5000", proxy.listener("edge")),
    )
    .send()
    .await;
    assert_eq!(rsp.status, 504);
    assert_eq!(rsp.header("remora-error"), Some("per-try-timeout"));
    assert_eq!(up.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_bounds_every_attempt_together() {
    let up = Upstream::start("slow").await;
    // Two tries of 300 ms do not fit in 450 ms: the second is cut by the
    // route's deadline, and the client hears `timeout`, not `per-try-timeout`.
    let route = "        timeout: 450ms\n        retry: { attempts: 3, on: [gateway-error], per_try_timeout: 300ms, backoff: { base: 1ms, max: 1ms } }";
    let proxy = start(&yaml(route, "", &[&up])).await;
    let rsp = Request::new(
        "GET",
        &format!("http://{}/slow/5000", proxy.listener("edge")),
    )
    .send()
    .await;
    assert_eq!(rsp.status, 504);
    assert_eq!(rsp.header("remora-error"), Some("timeout"));
    assert_eq!(up.requests(), 2);
}

/// An upstream that sends a response head promising 1000 bytes, 10 of
/// them, then stalls with the connection open.
async fn stalling_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                .await;
            held.push(s);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_response_body_is_cut_off_by_the_idle_timeout() {
    let (addr, task) = stalling_upstream().await;
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    routes:\n      - name: r\n        backends: [{{ name: b }}]\n        idle_timeout: 300ms\nbackends:\n  - name: b\n    endpoints: [{{ address: {addr} }}]\n"
    );
    let proxy = start(&yaml).await;
    // The head arrives; the body ends early instead of hanging.
    let result = Request::new("GET", &format!("http://{}/", proxy.listener("edge")))
        .timeout(Duration::from_secs(20))
        .try_send()
        .await;
    assert!(
        result.is_err(),
        "a body cut short is an error for the client: {:?}",
        result.map(|r| r.status)
    );
    proxy
        .wait_for_log("response body idle timeout", Duration::from_secs(5))
        .await
        .unwrap();
    task.abort();
}

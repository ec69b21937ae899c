//! Graceful shutdown: SIGTERM stops accepting, lets in-flight requests
//! finish, then exits 0.

use crate::{config, start};
use bytes::Bytes;
use remora_test_support::client::{Http1Conn, Request};
use remora_test_support::Upstream;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let up = Upstream::start("up").await;
    let routes = "      - name: all\n        backends: [{ name: up }]";
    let backends = format!(
        "  - name: up\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    let mut proxy = start(&config(routes, &backends)).await;
    let addr = proxy.listener("edge");
    let slow = tokio::spawn(async move {
        Request::new("GET", &format!("http://{addr}/slow/1500"))
            .send()
            .await
    });
    // Wait until the slow request is at the upstream, then ask to stop.
    for _ in 0..200 {
        if up.requests() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.requests(), 1);
    proxy.signal("TERM").unwrap();
    proxy
        .wait_for_log("draining", Duration::from_secs(5))
        .await
        .unwrap();
    let refused = Request::new("GET", &format!("http://{addr}/"))
        .timeout(Duration::from_secs(5))
        .try_send()
        .await;
    assert!(
        refused.is_err(),
        "a new connection was served while draining"
    );
    let rsp = slow.await.unwrap();
    assert_eq!(rsp.status, 200, "the in-flight request finished");
    assert_eq!(rsp.upstream(), Some("up"));
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("proxy exited");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_bounds_shutdown() {
    let up = Upstream::start("up").await;
    let routes = "      - name: all\n        backends: [{ name: up }]";
    let backends = format!(
        "  - name: up\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    let yaml = config(routes, &backends).replace("listeners:", "drain_timeout: 300ms\nlisteners:");
    let mut proxy = start(&yaml).await;
    let addr = proxy.listener("edge");
    let _stuck = tokio::spawn(async move {
        Request::new("GET", &format!("http://{addr}/slow/60000"))
            .try_send()
            .await
    });
    for _ in 0..200 {
        if up.requests() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.signal("TERM").unwrap();
    let status = proxy
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exited despite a stuck request");
    assert!(status.success());
    proxy
        .wait_for_log("drain deadline passed", Duration::from_secs(1))
        .await
        .unwrap();
}

/// `POST /shutdown` on the admin port (from loopback, as a Job's app in the
/// pod calls it): the same graceful shutdown as SIGTERM, exit 0. Refusing
/// other peers is the unit test of `admin::refuse_change` (the tests
/// reach the proxy only over loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_shutdown_from_loopback_stops_the_proxy() {
    let up = Upstream::start("up").await;
    let routes = "      - name: all\n        backends: [{ name: up }]";
    let backends = format!(
        "  - name: up\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    let mut proxy = start(&config(routes, &backends)).await;
    let admin = proxy.admin();
    let get = Request::new("GET", &format!("http://{admin}/shutdown"))
        .send()
        .await;
    assert_eq!(get.status, 405, "{}", get.text());
    assert_eq!(
        proxy.admin_get("/ready").await.0,
        200,
        "GET did not stop it"
    );
    let rsp = Request::new("POST", &format!("http://{admin}/shutdown"))
        .send()
        .await;
    assert_eq!(rsp.status, 202, "{}", rsp.text());
    proxy
        .wait_for_log("draining", Duration::from_secs(5))
        .await
        .unwrap();
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("proxy exited");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        proxy
            .logs()
            .iter()
            .any(|l| l.contains("shutdown requested on the admin port")),
        "{:?}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_idle_keep_alive_connections_at_once() {
    let up = Upstream::start("up").await;
    let routes = "      - name: all\n        backends: [{ name: up }]";
    let backends = format!(
        "  - name: up\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    // A deadline far beyond the waits below: the drain must not need it.
    let yaml = format!("drain_timeout: 60s\n{}", config(routes, &backends));
    let mut proxy = start(&yaml).await;
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
        let rsp = conn.send("GET", "/", &[], Bytes::new()).await;
        assert_eq!(rsp.status, 200);
        conns.push(conn);
    }
    proxy.signal("TERM").unwrap();
    // Each idle connection learns of the drain and closes: the drain ends
    // long before its deadline.
    proxy
        .wait_for_log("\"drained\"", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!proxy.logs().join("\n").contains("drain deadline passed"));
    for conn in &conns {
        let closed = conn.closes_within(Duration::from_secs(5)).await;
        assert!(closed, "an idle connection was left open");
    }
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("proxy exited");
    assert!(status.success(), "exit status {status:?}");
}

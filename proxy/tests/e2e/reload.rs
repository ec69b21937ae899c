//! Hot reload under load: a valid config moves traffic with zero failed
//! requests; an invalid one is rejected, counted, and changes nothing.

use crate::{config, start};
use remora_test_support::{Http1Conn, Load, Upstream};
use std::time::Duration;

fn two_backends(a: &Upstream, b: &Upstream, route_to: &str) -> String {
    let routes = format!("      - name: main\n        backends: [{{ name: {route_to} }}]");
    let backends = format!(
        "  - name: a\n    endpoints: [{{ address: {} }}]\n  - name: b\n    endpoints: [{{ address: {} }}]",
        a.addr(),
        b.addr()
    );
    config(&routes, &backends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let proxy = start(&two_backends(&a, &b, "a")).await;
    let load = Load::start(proxy.listener("edge"), None, 4);
    load.wait_for_upstream("a").await;

    // A valid change: traffic moves to b.
    let mark = proxy.log_mark();
    proxy.write_config(&two_backends(&a, &b, "b")).unwrap();
    proxy
        .wait_for_log_where(
            mark,
            |l| l.contains("config applied"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    load.wait_for_upstream("b").await;

    // An invalid change: rejected with its problem, traffic stays on b.
    let mark = proxy.log_mark();
    proxy
        .write_config(&two_backends(&a, &b, "b").replace("name: main", "name: \"bad name!\""))
        .unwrap();
    let line = proxy
        .wait_for_log_where(
            mark,
            |l| l.contains("config rejected"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(line.contains("listeners[0].routes[0].name"), "{line}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(load.last_upstream(), "b");

    let tally = load.finish().await;
    assert_eq!(tally.failures, 0, "{tally:?}");
    assert!(tally.total > 100, "only {} requests ran", tally.total);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("remora_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("remora_config_reloads_total{result=\"applied\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_keeps_pooled_connections() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mut proxy = start(&two_backends(&a, &b, "a")).await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    for _ in 0..5 {
        assert_eq!(conn.get("/").await.upstream(), Some("a"));
    }
    assert_eq!(a.connections(), 1, "one pooled upstream connection");
    // Change the route only; backend a's endpoint state must survive.
    let path = proxy.config_path().to_path_buf();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("name: main", "name: renamed");
    std::fs::write(&path, text).unwrap();
    let mark = proxy.log_mark();
    proxy.signal("HUP").unwrap();
    proxy
        .wait_for_log_where(
            mark,
            |l| l.contains("config applied"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    // The client connection survived the reload, and so did the upstream
    // pool: the next request takes a pooled connection.
    assert_eq!(conn.get("/").await.upstream(), Some("a"));
    assert_eq!(
        a.connections(),
        1,
        "the pooled upstream connection kept across the reload"
    );
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("route=\"renamed\""), "{metrics}");
}

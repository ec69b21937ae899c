//! Routing end to end: each match kind, splits, header ops, rewrites,
//! direct responses, redirects and the proxy's own 404.

use crate::{config, start};
use bytes::Bytes;
use remora_test_support::client::{request, Request};
use remora_test_support::{HttpVersion, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_match_kind_routes_to_its_backend() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let routes = r#"      - name: host-exact
        match: { hosts: [api.test] }
        backends: [{ name: a }]
      - name: host-port
        match: { hosts: ["api.test:9090"] }
        backends: [{ name: b }]
      - name: host-wildcard
        match: { hosts: ["*.wild.test"] }
        backends: [{ name: b }]
      - name: path-exact
        match: { path: { exact: /exact } }
        backends: [{ name: a }]
      - name: path-regex
        match: { path: { regex: "/items/[0-9]+" } }
        backends: [{ name: b }]
      - name: method
        match: { path: { prefix: /m }, methods: [DELETE] }
        backends: [{ name: b }]
      - name: header
        match: { path: { prefix: /m }, headers: [{ name: x-team, exact: blue }] }
        backends: [{ name: b }]
      - name: prefix
        match: { path: { prefix: /m } }
        backends: [{ name: a }]"#;
    let backends = format!(
        "  - name: a\n    endpoints: [{{ address: {} }}]\n  - name: b\n    endpoints: [{{ address: {} }}]",
        a.addr(),
        b.addr()
    );
    let proxy = start(&config(routes, &backends)).await;
    let base = format!("http://{}", proxy.listener("edge"));
    let cases: &[Case] = &[
        ("GET", "api.test", "/anything", &[], Some("a")),
        ("GET", "api.test:8080", "/anything", &[], Some("a")),
        ("GET", "api.test:9090", "/anything", &[], Some("b")),
        ("GET", "x.wild.test", "/anything", &[], Some("b")),
        ("GET", "other.test", "/exact", &[], Some("a")),
        ("GET", "other.test", "/exact/not", &[], None),
        ("GET", "other.test", "/items/17", &[], Some("b")),
        ("GET", "other.test", "/items/x", &[], None),
        ("DELETE", "other.test", "/m/1", &[], Some("b")),
        (
            "GET",
            "other.test",
            "/m/1",
            &[("x-team", "blue")],
            Some("b"),
        ),
        ("GET", "other.test", "/m/1", &[("x-team", "red")], Some("a")),
        ("GET", "other.test", "/mx", &[], None),
    ];
    for (method, host, path, headers, want) in cases {
        let mut h: Vec<(&str, &str)> = vec![("host", host)];
        h.extend_from_slice(headers);
        for version in [HttpVersion::Http1, HttpVersion::Http2] {
            let rsp = request(method, &format!("{base}{path}"), &h, Bytes::new(), version).await;
            match want {
                Some(name) => {
                    assert_eq!(rsp.status, 200, "{method} {host}{path} {version:?}");
                    assert_eq!(
                        rsp.upstream(),
                        Some(*name),
                        "{method} {host}{path} {version:?}"
                    );
                }
                None => {
                    assert_eq!(rsp.status, 404, "{method} {host}{path} {version:?}");
                    assert_eq!(rsp.header("remora-error"), Some("no-route"));
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_follows_weights() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let routes =
        "      - name: split\n        backends: [{ name: a, weight: 80 }, { name: b, weight: 20 }]";
    let backends = format!(
        "  - name: a\n    endpoints: [{{ address: {} }}]\n  - name: b\n    endpoints: [{{ address: {} }}]",
        a.addr(),
        b.addr()
    );
    let proxy = start(&config(routes, &backends)).await;
    let mut conn = remora_test_support::Http1Conn::connect(proxy.listener("edge")).await;
    let n = 2000;
    let mut to_a = 0;
    for _ in 0..n {
        let rsp = conn.get("/").await;
        assert_eq!(rsp.status, 200);
        if rsp.upstream() == Some("a") {
            to_a += 1;
        }
    }
    // 80% of 2000: the standard deviation is ~18, so ±5 % is > 5 sigma.
    let share = to_a as f64 / n as f64;
    assert!((0.75..=0.85).contains(&share), "share to a: {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_rewrites_direct_responses_and_redirects() {
    let up = Upstream::start("up").await;
    let routes = r#"      - name: rewritten
        match: { path: { prefix: /api } }
        backends: [{ name: up }]
        rewrite: { host: internal.test, path_prefix: / }
        request_headers:
          add: { x-added: "1" }
          set: { x-set: new }
          remove: [x-secret]
        response_headers:
          set: { x-proxy: remora }
          remove: [x-upstream]
      - name: moved
        match: { path: { prefix: /old } }
        redirect: { status: 308, scheme: https, host: new.test, path: /new }
      - name: teapot
        match: { path: { exact: /tea } }
        direct_response: { status: 418, body: "short and stout\n" }"#;
    let backends = format!(
        "  - name: up\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    let proxy = start(&config(routes, &backends)).await;
    let base = format!("http://{}", proxy.listener("edge"));

    let rsp = Request::new("GET", &format!("{base}/api/headers?q=1"))
        .header("x-set", "old")
        .header("x-secret", "hunter2")
        .send()
        .await;
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.header("x-proxy"), Some("remora"));
    assert_eq!(rsp.header("x-upstream"), None);
    let seen = rsp.json();
    assert_eq!(seen["uri"], "/headers?q=1");
    let h = &seen["headers"];
    assert_eq!(h["host"][0], "internal.test");
    assert_eq!(h["x-added"][0], "1");
    assert_eq!(h["x-set"], serde_json::json!(["new"]));
    assert!(h.get("x-secret").is_none(), "{h}");

    let rsp = Request::new("GET", &format!("{base}/old/page?x=1"))
        .send()
        .await;
    assert_eq!(rsp.status, 308);
    assert_eq!(rsp.header("location"), Some("https://new.test/new?x=1"));

    let rsp = Request::new("GET", &format!("{base}/tea")).send().await;
    assert_eq!(rsp.status, 418);
    assert_eq!(rsp.text(), "short and stout\n");

    let rsp = Request::new("GET", &format!("{base}/nothing-here"))
        .send()
        .await;
    assert_eq!(rsp.status, 404);
    assert_eq!(rsp.header("remora-error"), Some("no-route"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_map_to_stable_errors() {
    // A port that refuses: bind, read the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let slow = Upstream::start("slow").await;
    let routes = r#"      - name: dead
        match: { path: { prefix: /dead } }
        backends: [{ name: dead }]
      - name: empty
        match: { path: { prefix: /empty } }
        backends: [{ name: empty }]
      - name: slow
        match: { path: { prefix: /slow } }
        backends: [{ name: slow }]
        timeout: 200ms"#;
    let backends = format!(
        "  - name: dead\n    endpoints: [{{ address: {dead} }}]\n  - name: empty\n    endpoints: []\n  - name: slow\n    endpoints: [{{ address: {} }}]",
        slow.addr()
    );
    let proxy = start(&config(routes, &backends)).await;
    let base = format!("http://{}", proxy.listener("edge"));
    for (path, status, cause) in [
        ("/dead", 502, "connect-failed"),
        ("/empty", 503, "no-endpoints"),
        ("/slow/3000", 504, "timeout"),
    ] {
        let rsp = Request::new("GET", &format!("{base}{path}")).send().await;
        assert_eq!(rsp.status, status, "{path}");
        assert_eq!(rsp.header("remora-error"), Some(cause), "{path}");
    }
    let metrics = proxy.metrics().await;
    for (route, code, cause) in [
        ("dead", 502, "connect-failed"),
        ("empty", 503, "no-endpoints"),
        ("slow", 504, "timeout"),
    ] {
        let needle =
            format!("error=\"{cause}\",listener=\"edge\",route=\"{route}\",status_code=\"{code}\"");
        assert!(
            metrics.contains(&needle),
            "{needle} not in metrics:\n{metrics}"
        );
    }
    let logs = proxy.logs().join("\n");
    assert!(logs.contains("\"error\":\"connect-failed\""), "{logs}");
}

/// method, host, path, headers, expected route or upstream (None: 404).
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_one_after_another_reuse_one_upstream_connection() {
    use remora_test_support::Http1Conn;
    let a = Upstream::start("a").await;
    let routes = "      - name: main\n        backends: [{ name: a }]";
    let backends = format!("  - name: a\n    endpoints: [{{ address: {} }}]", a.addr());
    let proxy = start(&config(routes, &backends)).await;
    let mut conn = Http1Conn::connect(proxy.listener("edge")).await;
    // The upstream connection goes back to the pool as its response's last
    // frame is read, before the client has it: the next request finds it.
    for _ in 0..300 {
        assert_eq!(conn.get("/").await.upstream(), Some("a"));
    }
    assert_eq!(
        a.connections(),
        1,
        "one upstream connection for 300 requests"
    );
}

//! gRPC through the proxy: a real grpcio server and client (the Python
//! scripts in `tests/grpc/`) talking h2c via the proxy, unary, server
//! streaming and a failing call whose status travels in trailers; and the
//! proxy's own errors (one proxy's, or a peer proxy's relayed) as the
//! client's gRPC statuses.

use crate::{config, start};
use remora_test_support::grpc::{client, require_grpcio, statuses, EchoServer};

/// The sum of `remora_responses_total` samples whose labels include all of
/// `labels` (each written `name="value"`).
fn responses(metrics: &str, labels: &[&str]) -> f64 {
    sum(metrics, "remora_responses_total{", labels)
}

/// The same of `remora_grpc_responses_total`.
fn grpc_responses(metrics: &str, labels: &[&str]) -> f64 {
    sum(metrics, "remora_grpc_responses_total{", labels)
}

fn sum(metrics: &str, prefix: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_stream_and_fail_through_the_proxy() {
    require_grpcio();
    let server = EchoServer::start().await;
    // The same server behind both upstream protocol settings, chosen by
    // authority: `auto` follows the client (h2c in, h2c out).
    let routes = "      - name: grpc-auto\n        match: { hosts: [auto.test] }\n        backends: [{ name: echo-auto }]\n      - name: grpc-h2\n        match: { hosts: [h2.test] }\n        backends: [{ name: echo-h2 }]";
    let backends = format!(
        "  - name: echo-auto\n    protocol: auto\n    endpoints: [{{ address: 127.0.0.1:{0} }}]\n  - name: echo-h2\n    protocol: http2\n    endpoints: [{{ address: 127.0.0.1:{0} }}]",
        server.port
    );
    let proxy = start(&config(routes, &backends)).await;
    let addr = proxy.listener("edge").to_string();

    for authority in ["auto.test", "h2.test"] {
        let (ok, out) = client(&addr, authority, &["unary", "hello gRPC"]).await;
        assert!(ok, "{authority} unary: {out}");
        assert!(out.contains("echo:hello gRPC"), "{authority}: {out}");

        let (ok, out) = client(&addr, authority, &["stream", "100"]).await;
        assert!(ok, "{authority} stream: {out}");
        assert_eq!(
            out.lines().filter(|l| l.starts_with("msg-")).count(),
            100,
            "{out}"
        );

        let (ok, out) = client(&addr, authority, &["fail"]).await;
        assert!(ok, "{authority} fail must end UNAVAILABLE: {out}");
        assert!(out.contains("status UNAVAILABLE try again"), "{out}");
    }

    // gRPC statuses ride in trailers: all three calls are HTTP 200 answered
    // by the upstream, counted under their route.
    let metrics = proxy.metrics().await;
    for (route, backend) in [("grpc-auto", "echo-auto"), ("grpc-h2", "echo-h2")] {
        let route_label = format!("route=\"{route}\"");
        let backend_label = format!("backend=\"{backend}\"");
        let ok = [
            route_label.as_str(),
            backend_label.as_str(),
            "status_code=\"200\"",
            "error=\"\"",
        ];
        assert_eq!(responses(&metrics, &ok), 3.0, "{route}:\n{metrics}");
        assert_eq!(
            responses(&metrics, &[&route_label]),
            3.0,
            "{route}:\n{metrics}"
        );
        // By the grpc-status they ended with: the unary call's and the
        // stream's in their trailers, the failure's in its head.
        let by = |code: &str| {
            let code = format!("grpc_status=\"{code}\"");
            grpc_responses(&metrics, &[&route_label, &backend_label, &code])
        };
        assert_eq!(by("0"), 2.0, "{route}:\n{metrics}");
        assert_eq!(by("14"), 1.0, "{route}:\n{metrics}");
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_errors_reach_a_grpc_client_as_grpc_statuses() {
    require_grpcio();
    let server = EchoServer::start().await;
    // Takes connections and never answers: the route's timeout runs out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    // Nothing listens here.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let routes = "      - name: slow\n        match: { hosts: [slow.test] }\n        timeout: 300ms\n        backends: [{ name: silent }]\n      - name: limited\n        match: { hosts: [limited.test] }\n        rate_limit: { requests_per_second: 1, burst: 1 }\n        backends: [{ name: echo }]\n      - name: down\n        match: { hosts: [down.test] }\n        backends: [{ name: dead }]\n      - name: ok\n        match: { hosts: [ok.test] }\n        backends: [{ name: echo }]";
    let backends = format!(
        "  - name: silent\n    protocol: http2\n    endpoints: [{{ address: {silent_addr} }}]\n  - name: echo\n    protocol: http2\n    endpoints: [{{ address: 127.0.0.1:{} }}]\n  - name: dead\n    protocol: http2\n    endpoints: [{{ address: {dead} }}]",
        server.port
    );
    let proxy = start(&config(routes, &backends)).await;
    let addr = proxy.listener("edge").to_string();

    assert_eq!(statuses(&addr, "ok.test", 1).await, ["OK echo:hi"]);
    assert_eq!(
        statuses(&addr, "slow.test", 1).await,
        ["DEADLINE_EXCEEDED Gateway Timeout: timeout"]
    );
    assert_eq!(
        statuses(&addr, "nowhere.test", 1).await,
        ["UNIMPLEMENTED Not Found: no-route"]
    );
    assert_eq!(
        statuses(&addr, "down.test", 1).await,
        ["UNAVAILABLE Bad Gateway: connect-failed"]
    );
    // One token: the first call goes through, the next ones are refused.
    let limited = statuses(&addr, "limited.test", 3).await;
    assert_eq!(limited[0], "OK echo:hi", "{limited:?}");
    assert!(
        limited[1..]
            .iter()
            .all(|s| s == "RESOURCE_EXHAUSTED Too Many Requests: rate-limited"),
        "{limited:?}"
    );

    // Metrics keep the HTTP status the proxy chose; the gRPC calls are
    // counted by the status their client saw.
    let metrics = proxy.metrics().await;
    for (route, code, n) in [
        ("ok", "0", 1.0),
        ("slow", "4", 1.0),
        ("", "12", 1.0),
        ("down", "14", 1.0),
        ("limited", "0", 1.0),
        ("limited", "8", 2.0),
    ] {
        let labels = [
            format!("route=\"{route}\""),
            format!("grpc_status=\"{code}\""),
        ];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_eq!(
            grpc_responses(&metrics, &labels),
            n,
            "{route} {code}:\n{metrics}"
        );
    }
    for (route, status, cause) in [
        ("slow", "504", "timeout"),
        ("down", "502", "connect-failed"),
        ("limited", "429", "rate-limited"),
    ] {
        let labels = [
            format!("route=\"{route}\""),
            format!("status_code=\"{status}\""),
            format!("error=\"{cause}\""),
        ];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert!(responses(&metrics, &labels) >= 1.0, "{route}:\n{metrics}");
    }
    hold.abort();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_proxys_error_reaches_a_grpc_client_as_a_grpc_status() {
    use crate::mesh_tls::{identity_section, API, WEB};
    use remora_test_support::proxy::tempdir;
    use remora_test_support::{ProxyProcess, TestCa};
    require_grpcio();
    let ca = TestCa::new("mesh root");
    // Proxy B: the peer, in front of an app that is not running.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b_dir = tempdir();
    let b_yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: inbound\n    address: 127.0.0.1:0\n    inbound: {{ mode: strict }}\n    routes:\n      - name: app\n        backends: [{{ name: app }}]\nbackends:\n  - name: app\n    endpoints: [{{ address: {dead} }}]\n{}",
        identity_section(b_dir.path(), &ca, &ca.issue_spiffe(API))
    );
    let b = ProxyProcess::start_in(b_dir, crate::bin(), &b_yaml)
        .await
        .expect("proxy B starts");
    // Proxy A: the gRPC client's, to B over mutual TLS.
    let a_dir = tempdir();
    let a_yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    routes:\n      - name: all\n        backends: [{{ name: api }}]\nbackends:\n  - name: api\n    protocol: auto\n    endpoints: [{{ address: {}, identity: \"{API}\" }}]\n{}",
        b.listener("inbound"),
        identity_section(a_dir.path(), &ca, &ca.issue_spiffe(WEB))
    );
    let a = ProxyProcess::start_in(a_dir, crate::bin(), &a_yaml)
        .await
        .expect("proxy A starts");

    let addr = a.listener("edge").to_string();
    assert_eq!(
        statuses(&addr, "api.test", 1).await,
        ["UNAVAILABLE Bad Gateway: connect-failed"]
    );
    // Between the proxies the error stayed HTTP: B answered A a 502, which
    // A counts as the upstream's answer.
    let labels = ["status_code=\"502\"", "error=\"connect-failed\""];
    assert_eq!(responses(&b.metrics().await, &labels), 1.0);
    let relayed = ["status_code=\"502\"", "error=\"\""];
    let a_metrics = a.metrics().await;
    assert_eq!(responses(&a_metrics, &relayed), 1.0);
    // Both count the call as the client saw it end.
    let unavailable = ["grpc_status=\"14\""];
    let b_metrics = b.metrics().await;
    assert_eq!(grpc_responses(&b_metrics, &unavailable), 1.0, "{b_metrics}");
    assert_eq!(grpc_responses(&a_metrics, &unavailable), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_server_that_fails_every_call_is_ejected_as_one_answering_5xx_would_be() {
    require_grpcio();
    let (one, two) = (EchoServer::start().await, EchoServer::start().await);
    let routes = "      - name: echo\n        backends: [{ name: echo }]";
    let backends = format!(
        "  - name: echo\n    protocol: http2\n    balancer: round_robin\n    outlier_detection: {{ consecutive_failures: 2, base_ejection_time: 300s }}\n    endpoints: [{{ address: 127.0.0.1:{} }}, {{ address: 127.0.0.1:{} }}]",
        one.port, two.port
    );
    let proxy = start(&config(routes, &backends)).await;
    let addr = proxy.listener("edge").to_string();
    // UNAVAILABLE in the head (Trailers-Only), HTTP 200: two in a row on
    // each endpoint. At most half the endpoints may be ejected: one is.
    for _ in 0..4 {
        let (ok, out) = client(&addr, "echo.test", &["fail"]).await;
        assert!(ok, "{out}");
    }
    let metrics = proxy.metrics().await;
    let ejected = sum(
        &metrics,
        "remora_outlier_ejections_total{",
        &["backend=\"echo\""],
    );
    assert_eq!(ejected, 1.0, "{metrics}");
    // Calls that succeed are not held against an endpoint.
    assert_eq!(statuses(&addr, "echo.test", 4).await, ["OK echo:hi"; 4]);
    let metrics = proxy.metrics().await;
    let ejected = sum(
        &metrics,
        "remora_outlier_ejections_total{",
        &["backend=\"echo\""],
    );
    assert_eq!(ejected, 1.0, "{metrics}");
}

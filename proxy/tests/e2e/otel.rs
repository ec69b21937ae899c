//! OpenTelemetry tracing through the real proxy: curl sends a request with
//! a W3C `traceparent`, the proxy forwards it to a real upstream, and a
//! loopback OTLP receiver (the OpenTelemetry protobuf package, grpcio for
//! gRPC) decodes what the proxy exported.

use crate::{config, require, start};
use remora_test_support::upstream::Mode;
use remora_test_support::{OtlpReceiver, ProxyProcess, Upstream};
use serde_json::Value;
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const WAIT: Duration = Duration::from_secs(20);

/// A proxy with one route `traced` to `up`, exporting to `collector`.
async fn proxy(up: &Upstream, tracing: &str, route_extra: &str) -> ProxyProcess {
    proxy_on(up, tracing, "", route_extra).await
}

/// As [`proxy`], with `listener_extra` lines in the listener.
async fn proxy_on(
    up: &Upstream,
    tracing: &str,
    listener_extra: &str,
    route_extra: &str,
) -> ProxyProcess {
    let routes =
        format!("      - name: traced\n        backends: [{{ name: app }}]\n{route_extra}");
    let backends = format!(
        "  - name: app\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    let config = config(&routes, &backends)
        .replace("    routes:\n", &format!("{listener_extra}    routes:\n"));
    start(&format!("{config}tracing: {tracing}\n")).await
}

fn tracing_to(collector: std::net::SocketAddr, protocol: &str, sampling: f64) -> String {
    format!(
        "{{ collector: '{collector}', protocol: {protocol}, sampling: {sampling}, batch_interval: 100ms }}"
    )
}

/// curl `url` with these extra headers; returns the body (status must be
/// `status`).
fn curl(url: &str, headers: &[String], status: u16) -> String {
    curl_with(&[], url, headers, status)
}

/// As [`curl`], with more of curl's arguments (a method, a body).
fn curl_with(args: &[&str], url: &str, headers: &[String], status: u16) -> String {
    require("curl");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"]);
    cmd.args(args);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    assert_eq!(code, status.to_string(), "curl {url}: {text}");
    body.to_string()
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn of_kind<'a>(spans: &'a [Value], kind: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["kind"] == kind).collect()
}

/// The `traceparent` the upstream saw, split into (trace id, parent id, flags).
fn upstream_traceparent(headers_json: &str) -> (String, String, String) {
    let v: Value = serde_json::from_str(headers_json).expect("the upstream's /headers JSON");
    let tp = v["headers"]["traceparent"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent reached the upstream: {v}"))
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

async fn a_traced_request_is_exported_over(protocol: &str, otlp: &str) {
    let receiver = OtlpReceiver::start(protocol).await;
    let up = Upstream::start("app").await;
    let proxy = proxy(&up, &tracing_to(receiver.addr(), otlp, 1.0), "").await;
    let url = format!("http://{}/headers?x=1", proxy.listener("edge"));
    let headers = [
        format!("traceparent: 00-{TRACE}-{PARENT}-01"),
        "tracestate: vendor=abc".to_string(),
    ];
    let body = curl(&url, &headers, 200);
    let (trace, parent, flags) = upstream_traceparent(&body);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_ne!(parent, PARENT, "the upstream's parent is the proxy's span");

    let spans = receiver.wait_for_trace(TRACE, 2, WAIT).await;
    let server = of_kind(&spans, "server");
    let client = of_kind(&spans, "client");
    assert_eq!((server.len(), client.len()), (1, 1), "{spans:#?}");
    let (server, client) = (server[0], client[0]);
    assert_eq!(server["parent_span_id"], PARENT);
    assert_eq!(server["name"], "GET traced");
    assert_eq!(server["service"], "remora-proxy");
    assert_eq!(server["trace_state"], "vendor=abc");
    assert_eq!(attr(server, "http.request.method"), "GET");
    assert_eq!(attr(server, "url.path"), "/headers");
    assert_eq!(attr(server, "http.response.status_code"), 200);
    assert_eq!(attr(server, "remora.route"), "traced");
    assert_eq!(attr(server, "remora.backend"), "app");
    assert_eq!(attr(server, "remora.endpoint"), &up.addr().to_string());
    assert_eq!(client["parent_span_id"], server["span_id"]);
    assert_eq!(
        client["span_id"],
        parent.as_str(),
        "the upstream's parent is the client span"
    );
    assert_eq!(attr(client, "remora.endpoint"), &up.addr().to_string());
    assert_eq!(attr(client, "http.response.status_code"), 200);
    assert_eq!(attr(client, "server.port"), up.addr().port());
    assert_eq!(client["status"]["code"], 0, "unset: not an error");
    // Counted once the collector has answered.
    let deadline = tokio::time::Instant::now() + WAIT;
    while spans_counted(&proxy, "exported").await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "exports not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `remora_trace_spans_total{outcome}` from the proxy's metrics.
async fn spans_counted(proxy: &ProxyProcess, outcome: &str) -> u64 {
    let m = proxy.metrics().await;
    let series = format!("remora_trace_spans_total{{outcome=\"{outcome}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_request_is_exported_over_otlp_http() {
    a_traced_request_is_exported_over("http", "http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_request_is_exported_over_otlp_grpc() {
    a_traced_request_is_exported_over("grpc", "grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_retry_is_a_client_span() {
    let receiver = OtlpReceiver::start("http").await;
    let up = Upstream::start("app").await;
    up.set_mode(Mode::FailStatus { status: 503 });
    let retry =
        "        retry: { attempts: 3, on: [gateway-error], backoff: { base: 1ms, max: 2ms } }";
    let tracing = tracing_to(receiver.addr(), "http/protobuf", 1.0);
    let proxy = proxy(&up, &tracing, retry).await;
    let url = format!("http://{}/", proxy.listener("edge"));
    curl(&url, &[format!("traceparent: 00-{TRACE}-{PARENT}-01")], 503);
    let spans = receiver.wait_for_trace(TRACE, 4, WAIT).await;
    let server = of_kind(&spans, "server")[0];
    assert_eq!(attr(server, "remora.attempts"), 3);
    assert_eq!(attr(server, "error.type"), "503");
    assert_eq!(server["status"]["code"], 2, "error");
    let mut resends: Vec<i64> = of_kind(&spans, "client")
        .iter()
        .map(|c| {
            assert_eq!(c["parent_span_id"], server["span_id"]);
            attr(c, "http.request.resend_count").as_i64().unwrap()
        })
        .collect();
    resends.sort();
    assert_eq!(resends, [0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_0_exports_no_new_trace_but_follows_a_sampled_parent() {
    let receiver = OtlpReceiver::start("http").await;
    let up = Upstream::start("app").await;
    let proxy = proxy(&up, &tracing_to(receiver.addr(), "http/protobuf", 0.0), "").await;
    let url = format!("http://{}/headers", proxy.listener("edge"));
    for _ in 0..5 {
        let (_, _, flags) = upstream_traceparent(&curl(&url, &[], 200));
        assert_eq!(flags, "00", "the next hops are told: not sampled");
    }
    // A sampled parent is followed; once its spans arrive, the unsampled
    // requests (sent earlier, on the same queue) would have too.
    curl(&url, &[format!("traceparent: 00-{TRACE}-{PARENT}-01")], 200);
    receiver.wait_for_trace(TRACE, 2, WAIT).await;
    let others: Vec<Value> = receiver
        .spans()
        .into_iter()
        .filter(|s| s["trace_id"] != TRACE)
        .collect();
    assert!(others.is_empty(), "{others:#?}");
}

/// Requests the edge middleware answers itself (a CORS preflight, a body
/// in a coding the listener does not decode) reach no backend, yet get
/// their server span, sampled as any request: in the client's trace, named
/// after the route they would take, with no backend and no attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_edge_answers_itself_are_traced() {
    const REFUSED: &str = "0af7651916cd43dd8448eb211c80319c";
    const UNSAMPLED: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let receiver = OtlpReceiver::start("http").await;
    let up = Upstream::start("app").await;
    let edge = "    edge: { cors: { allowed_origins: ['https://app.example'] }, \
                decompression: { algorithms: [gzip] } }\n";
    let tracing = tracing_to(receiver.addr(), "http/protobuf", 1.0);
    let proxy = proxy_on(&up, &tracing, edge, "").await;
    let url = format!("http://{}/items", proxy.listener("edge"));
    let preflight = [
        "-X",
        "OPTIONS",
        "-H",
        "origin: https://app.example",
        "-H",
        "access-control-request-method: GET",
    ];
    let parent =
        |trace: &str, flags: &str| vec![format!("traceparent: 00-{trace}-{PARENT}-{flags}")];
    curl_with(&preflight, &url, &parent(UNSAMPLED, "00"), 200);
    let mut sampled = parent(TRACE, "01");
    sampled.push("tracestate: vendor=abc".into());
    curl_with(&preflight, &url, &sampled, 200);
    let br = [
        "-X",
        "POST",
        "-H",
        "content-encoding: br",
        "--data-binary",
        "x",
    ];
    curl_with(&br, &url, &parent(REFUSED, "01"), 415);
    assert_eq!(up.requests(), 0, "the edge answered both");

    let spans = receiver.wait_for_trace(TRACE, 1, WAIT).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span["kind"], "server");
    assert_eq!(span["parent_span_id"], PARENT);
    assert_eq!(span["trace_state"], "vendor=abc");
    assert_eq!(span["name"], "OPTIONS traced");
    assert_eq!(attr(span, "http.request.method"), "OPTIONS");
    assert_eq!(attr(span, "url.path"), "/items");
    assert_eq!(attr(span, "http.response.status_code"), 200);
    assert_eq!(attr(span, "remora.route"), "traced");
    assert_eq!(attr(span, "remora.backend"), &Value::Null);
    assert_eq!(attr(span, "remora.attempts"), 0);
    assert_eq!(span["status"]["code"], 0, "unset: not an error");

    let spans = receiver.wait_for_trace(REFUSED, 1, WAIT).await;
    let span = &spans[0];
    assert_eq!(span["name"], "POST traced");
    assert_eq!(attr(span, "http.response.status_code"), 415);
    assert_eq!(attr(span, "error.type"), "unsupported-encoding");
    // Sent before the sampled ones, on the same queue: none came.
    let unsampled: Vec<Value> = receiver
        .spans()
        .into_iter()
        .filter(|s| s["trace_id"] == UNSAMPLED)
        .collect();
    assert!(unsampled.is_empty(), "{unsampled:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_does_not_break_requests() {
    let collector = closed_port();
    let up = Upstream::start("app").await;
    let proxy = proxy(&up, &tracing_to(collector, "grpc", 1.0), "").await;
    let url = format!("http://{}/", proxy.listener("edge"));
    for _ in 0..10 {
        curl(&url, &[], 200);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while spans_counted(&proxy, "failed").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed export counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy
        .wait_for_log("span export failed", WAIT)
        .await
        .expect("the failure is logged");
}

#[test]
fn check_accepts_the_tracing_example_and_names_a_bad_field() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tracing.yaml");
    let run = |path: &std::path::Path| {
        std::process::Command::new(crate::bin())
            .arg("check")
            .arg(path)
            .output()
            .unwrap()
    };
    let out = run(std::path::Path::new(example));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");

    let dir = remora_test_support::proxy::tempdir();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("sampling: 1.0 ", "sampling: 1.5 ");
    std::fs::write(&bad, text).unwrap();
    let out = run(&bad);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("tracing.sampling: must be a ratio from 0 to 1"),
        "{stdout}"
    );
}

/// Spans still queued when the proxy is told to stop are sent before it
/// exits: with a batch interval far longer than the test, only the
/// shutdown's flush can deliver them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_spans_are_sent_at_shutdown() {
    let receiver = OtlpReceiver::start("http").await;
    let up = Upstream::start("app").await;
    let tracing = format!(
        "{{ collector: '{}', protocol: http/protobuf, batch_interval: 1h }}",
        receiver.addr()
    );
    let mut proxy = proxy(&up, &tracing, "").await;
    let url = format!("http://{}/", proxy.listener("edge"));
    let traceparent = format!("traceparent: 00-{TRACE}-{PARENT}-01");
    curl(&url, &[traceparent], 200);
    assert!(receiver.spans().is_empty(), "exported before the shutdown");

    proxy.signal("TERM").unwrap();
    let status = proxy.wait_exit(WAIT).await.expect("the proxy exits");
    assert!(status.success(), "exit status {status:?}");
    let spans = receiver.wait_for_trace(TRACE, 2, WAIT).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(
        proxy.logs().iter().any(|l| l.contains("queued spans sent")),
        "{:?}",
        proxy.logs()
    );
}

/// With the collector down at shutdown, the queued spans cannot go: the
/// proxy says so and exits anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_that_cannot_be_sent_at_shutdown_are_reported_and_the_proxy_exits() {
    let collector = closed_port();
    let up = Upstream::start("app").await;
    let tracing =
        format!("{{ collector: '{collector}', protocol: http/protobuf, batch_interval: 1h }}");
    let mut proxy = proxy(&up, &tracing, "").await;
    curl(&format!("http://{}/", proxy.listener("edge")), &[], 200);

    proxy.signal("TERM").unwrap();
    let status = proxy.wait_exit(WAIT).await.expect("the proxy exits");
    assert!(status.success(), "exit status {status:?}");
    let logs = proxy.logs();
    assert!(
        logs.iter().any(|l| l.contains("queued spans not sent")),
        "{logs:?}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("queued spans sent")),
        "{logs:?}"
    );
}

/// A loopback port nothing listens on: a collector that is down.
fn closed_port() -> std::net::SocketAddr {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    closed.local_addr().unwrap()
}

//! Edge middleware end to end, seen by curl: compressed responses it
//! decodes (gzip, br, zstd), small ones left alone, a gzip request body
//! decompressed before the upstream, CORS preflights, request ids, and the
//! access log's chosen headers with sensitive ones redacted.

use crate::tls::curl;
use crate::{metric, start};
use remora_test_support::{ProxyProcess, Upstream};
use std::time::Duration;

const TEXT: &str = "remora compresses text at the edge\n";

/// A proxy whose listener `web` has `edge` (a YAML flow mapping), routes
/// `/big` and `/small` (direct text), `/plain` (`/big` with compression
/// off for the route), `/public` (GET only, CORS open to any origin) and
/// the rest to `up`.
async fn proxy(edge: &str, up: &Upstream) -> ProxyProcess {
    let big = TEXT.repeat(100);
    let routes = format!(
        "      - name: big
        match: {{ path: {{ exact: /big }} }}
        direct_response: {{ status: 200, body: {big:?}, content_type: text/plain }}
      - name: small
        match: {{ path: {{ exact: /small }} }}
        direct_response: {{ status: 200, body: \"hi\\n\", content_type: text/plain }}
      - name: plain
        match: {{ path: {{ exact: /plain }} }}
        direct_response: {{ status: 200, body: {big:?}, content_type: text/plain }}
        edge: {{ compression: {{ enabled: false }} }}
      - name: public
        match: {{ path: {{ prefix: /public }}, methods: [GET] }}
        direct_response: {{ status: 200, body: \"open\\n\" }}
        edge: {{ cors: {{ allowed_origins: ['*'] }} }}
"
    );
    proxy_with(edge, &routes, up).await
}

/// A proxy whose listener `web` has `edge`, `routes` (YAML list items),
/// then route `up` (the rest) to `up`.
async fn proxy_with(edge: &str, routes: &str, up: &Upstream) -> ProxyProcess {
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: web
    address: 127.0.0.1:0
    access_log: true
    edge: {edge}
    routes:
{routes}      - name: up
        backends: [{{ name: up }}]
backends:
  - name: up
    endpoints: [{{ address: {} }}]
",
        up.addr()
    );
    start(&yaml).await
}

/// curl's response: lower-cased header lines, then the (decoded) body.
async fn fetch(args: &[&str]) -> (String, String) {
    let mut all = vec!["-D", "-"];
    all.extend_from_slice(args);
    let out = curl(&all).await;
    assert!(out.ok, "curl {args:?}: {}", out.stderr);
    let (head, body) = out
        .stdout
        .split_once("\r\n\r\n")
        .expect("headers, then body");
    (head.to_ascii_lowercase(), body.to_string())
}

/// Listener `web` counted `requests` requests, one of them answered at
/// the edge with `status` and `error` (route `up`, no backend).
async fn assert_counted(p: &ProxyProcess, requests: u64, status: &str, error: &str) {
    let m = p.metrics().await;
    let received = metric(&m, "remora_requests_total{listener=\"web\"}");
    assert_eq!(received, requests, "{m}");
    let answered = format!(
        "remora_responses_total{{backend=\"\",error=\"{error}\",listener=\"web\",route=\"up\",status_code=\"{status}\"}}"
    );
    assert_eq!(metric(&m, &answered), 1, "{m}");
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}: ");
    head.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_as_the_client_accepts() {
    let up = Upstream::start("up").await;
    let p = proxy("{ compression: { min_size: 64 } }", &up).await;
    let base = format!("http://{}", p.listener("web"));
    for enc in ["gzip", "br", "zstd"] {
        let accept = format!("accept-encoding: {enc}");
        let (head, body) = fetch(&["--compressed", "-H", &accept, &format!("{base}/big")]).await;
        assert_eq!(header(&head, "content-encoding"), Some(enc), "{head}");
        assert_eq!(body, TEXT.repeat(100), "{enc}");
        // From the upstream too (JSON, a few hundred bytes).
        let (head, body) =
            fetch(&["--compressed", "-H", &accept, &format!("{base}/headers")]).await;
        assert_eq!(header(&head, "content-encoding"), Some(enc), "{head}");
        assert!(body.contains("\"method\":\"GET\""), "{body}");
    }
    let gzip = ["--compressed", "-H", "accept-encoding: gzip"];
    let (head, body) = fetch(&[&gzip[..], &[&format!("{base}/small")]].concat()).await;
    assert_eq!(header(&head, "content-encoding"), None, "small: {head}");
    assert_eq!(body, "hi\n");
    let (head, body) = fetch(&[&gzip[..], &[&format!("{base}/plain")]].concat()).await;
    assert_eq!(header(&head, "content-encoding"), None, "route off: {head}");
    // Nothing varies by Accept-Encoding where compression is off.
    assert_eq!(header(&head, "vary"), None, "route off: {head}");
    assert_eq!(body, TEXT.repeat(100));
    // No Accept-Encoding, nothing compressed.
    let (head, _) = fetch(&[&format!("{base}/big")]).await;
    assert_eq!(header(&head, "content-encoding"), None, "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_request_body_reaches_the_upstream_decompressed() {
    crate::require("gzip");
    let up = Upstream::start("up").await;
    let p = proxy("{ decompression: { algorithms: [gzip] } }", &up).await;
    let dir = remora_test_support::proxy::tempdir();
    let file = dir.path().join("body.gz");
    let gz = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' \"$BODY\" | gzip -c > {}",
            file.display()
        ))
        .env("BODY", TEXT.repeat(20))
        .status()
        .expect("run gzip");
    assert!(gz.success());
    let data = format!("@{}", file.display());
    let url = format!("http://{}/echo", p.listener("web"));
    let gzip = ["-H", "content-encoding: gzip", "--data-binary", &data];
    let (_, body) = fetch(&[&gzip[..], &[&url]].concat()).await;
    assert_eq!(body, TEXT.repeat(20));
    // A coding the listener does not take is refused, saying which it takes.
    let (head, _) = fetch(&["-H", "content-encoding: br", "--data-binary", &data, &url]).await;
    assert!(head.starts_with("http/1.1 415"), "{head}");
    assert_eq!(header(&head, "accept-encoding"), Some("gzip"), "{head}");
    assert_eq!(
        header(&head, "remora-error"),
        Some("unsupported-encoding"),
        "{head}"
    );
    // Refused at the edge, yet in the metrics and the access log.
    assert_counted(&p, 2, "415", "unsupported-encoding").await;
    let line = p
        .wait_for_log_where(
            0,
            |l| l.contains("remora_proxy::access") && l.contains("\"status\":415"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["error"], "unsupported-encoding", "{line}");
    assert_eq!(entry["method"], "POST", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_for_allowed_origins_only() {
    let up = Upstream::start("up").await;
    let cors =
        "{ cors: { allowed_origins: ['https://app.example.com'], allowed_methods: [GET, PUT], \
                allowed_headers: [content-type], expose_headers: [x-upstream], max_age: 10m } }";
    let p = proxy(cors, &up).await;
    let url = format!("http://{}/headers", p.listener("web"));
    let preflight = |origin: &'static str| {
        let url = url.clone();
        async move {
            let origin = format!("origin: {origin}");
            fetch(&[
                "-X",
                "OPTIONS",
                "-H",
                &origin,
                "-H",
                "access-control-request-method: PUT",
                "-H",
                "access-control-request-headers: content-type",
                &url,
            ])
            .await
        }
    };
    let (head, _) = preflight("https://app.example.com").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("https://app.example.com"),
        "{head}"
    );
    assert_eq!(
        header(&head, "access-control-allow-methods"),
        Some("get,put"),
        "{head}"
    );
    assert_eq!(
        header(&head, "access-control-allow-headers"),
        Some("content-type"),
        "{head}"
    );
    assert_eq!(
        header(&head, "access-control-max-age"),
        Some("600"),
        "{head}"
    );
    assert_eq!(up.requests(), 0, "a preflight is answered by the proxy");
    // Answered at the edge, yet counted and logged like any request: by
    // the route the method it asks about would take.
    let line = p
        .wait_for_log("\"method\":\"OPTIONS\"", Duration::from_secs(5))
        .await
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["target"], "remora_proxy::access", "{line}");
    assert_eq!(entry["route"], "up", "{line}");
    assert_eq!(entry["status"], 200, "{line}");
    assert_eq!(entry["path"], "/headers", "{line}");
    assert_counted(&p, 1, "200", "").await;
    let (head, _) = preflight("https://evil.example.com").await;
    // No allowed origin: the browser refuses (tower-http still lists methods).
    assert_eq!(header(&head, "access-control-allow-origin"), None, "{head}");
    // A route of its own: any origin, found by the method asked about.
    let public = format!("http://{}/public", p.listener("web"));
    let (head, _) = fetch(&[
        "-X",
        "OPTIONS",
        "-H",
        "origin: https://evil.example.com",
        "-H",
        "access-control-request-method: GET",
        &public,
    ])
    .await;
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("*"),
        "{head}"
    );
    // An actual request from the allowed origin goes through, with headers.
    let (head, body) = fetch(&["-H", "origin: https://app.example.com", &url]).await;
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("https://app.example.com"),
        "{head}"
    );
    assert_eq!(
        header(&head, "access-control-expose-headers"),
        Some("x-upstream"),
        "{head}"
    );
    assert!(body.contains("https://app.example.com"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_made_kept_sent_upstream_and_echoed() {
    let up = Upstream::start("up").await;
    let p = proxy("{ request_id: {} }", &up).await;
    let url = format!("http://{}/headers", p.listener("web"));
    let (head, body) = fetch(&[&url]).await;
    let id = header(&head, "x-request-id").expect("an id on the response");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-request-id"][0], id, "{body}");
    let (head, body) = fetch(&["-H", "x-request-id: order-7", &url]).await;
    assert_eq!(header(&head, "x-request-id"), Some("order-7"), "{head}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-request-id"][0], "order-7", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_shows_chosen_headers_with_sensitive_ones_redacted() {
    let up = Upstream::start("up").await;
    let edge =
        "{ request_id: {}, log_headers: [user-agent, authorization, x-api-key, x-request-id], \
                sensitive_headers: [x-api-key] }";
    let p = proxy(edge, &up).await;
    let url = format!("http://{}/small", p.listener("web"));
    fetch(&[
        "-A",
        "edge-test/1",
        "-H",
        "authorization: Bearer s3cret",
        "-H",
        "x-api-key: k3y",
        "-H",
        "x-request-id: log-1",
        &url,
    ])
    .await;
    let line = p
        .wait_for_log(
            "\"target\":\"remora_proxy::access\"",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        entry["headers"],
        "user-agent=edge-test/1 authorization=[redacted] x-api-key=[redacted] x-request-id=log-1",
        "{line}"
    );
    assert!(!p.logs().join("\n").contains("s3cret"));
    assert!(!p.logs().join("\n").contains("k3y"));
}

/// With nothing else of the edge's on a request (no request id, CORS or
/// compression; decompression with no encoded body) its sensitive headers
/// are still marked: the proxy does it without the tower-http stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_headers_are_redacted_when_nothing_else_of_the_edge_applies() {
    let up = Upstream::start("up").await;
    // No route overrides either (`proxy`'s routes have some).
    let edge =
        "{ log_headers: [user-agent, authorization, x-api-key], sensitive_headers: [x-api-key], \
                decompression: { algorithms: [gzip] } }";
    let p = proxy_with(edge, "", &up).await;
    let url = format!("http://{}/", p.listener("web"));
    let (head, _) = fetch(&[
        "-A",
        "bare/1",
        "-H",
        "authorization: Bearer s3cret",
        "-H",
        "x-api-key: k3y",
        &url,
    ])
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let line = p
        .wait_for_log("\"headers\":\"user-agent=bare/1", Duration::from_secs(5))
        .await
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        entry["headers"], "user-agent=bare/1 authorization=[redacted] x-api-key=[redacted]",
        "{line}"
    );
    assert!(!p.logs().join("\n").contains("s3cret"));
    assert!(!p.logs().join("\n").contains("k3y"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_edge_middleware_of_the_next_request() {
    let up = Upstream::start("up").await;
    let mut p = proxy("{ request_id: {} }", &up).await;
    let url = format!("http://{}/big", p.listener("web"));
    let gzip = ["--compressed", "-H", "accept-encoding: gzip", &url];
    let (head, _) = fetch(&gzip).await;
    assert!(header(&head, "x-request-id").is_some(), "{head}");
    assert_eq!(header(&head, "content-encoding"), None, "{head}");
    let path = p.config_path().to_path_buf();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("edge: { request_id: {} }", "edge: { compression: {} }");
    std::fs::write(&path, text).unwrap();
    let mark = p.log_mark();
    p.signal("HUP").unwrap();
    p.wait_for_log_where(
        mark,
        |l| l.contains("config applied"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (head, body) = fetch(&gzip).await;
    assert_eq!(header(&head, "x-request-id"), None, "{head}");
    assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{head}");
    assert_eq!(body, TEXT.repeat(100));
}

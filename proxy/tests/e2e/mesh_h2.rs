//! HTTP/2 between proxies: curl speaks HTTP/1.1 to proxy A, A carries the
//! requests to proxy B over one multiplexed HTTP/2 mutual-TLS connection,
//! and B gives its app HTTP/1.1 again. With `pool.mesh_http2: false`, or a
//! peer that only speaks HTTP/1.1, the same requests go over HTTP/1.1.

use crate::bin;
use crate::mesh_tls::{identity_section, API, WEB};
use remora_test_support::proxy::tempdir;
use remora_test_support::{ProxyProcess, TestCa, Upstream};
use std::net::SocketAddr;

/// Requests curl sends at once (each on a connection of its own to A).
const PARALLEL: usize = 8;
/// Requests in one curl run.
const REQUESTS: usize = 40;

/// B's inbound listener serves HTTP through its routes.
const HTTP: &str = "    routes:\n      - name: app\n        backends: [{ name: app }]\n";
/// B's inbound listener forwards opaque TCP.
const OPAQUE: &str = "    protocol: tcp\n    tcp_backend: app\n";

/// Proxy B: inbound listener `inbound` (mutual TLS, strict) to the app,
/// the rest of the listener being `listener` ([`HTTP`] or [`OPAQUE`]).
async fn inbound_proxy(ca: &TestCa, app: &Upstream, listener: &str) -> ProxyProcess {
    inbound_proxy_at(ca, app, listener, "127.0.0.1:0").await
}

/// [`inbound_proxy`] with its inbound listener at `address`.
async fn inbound_proxy_at(
    ca: &TestCa,
    app: &Upstream,
    listener: &str,
    address: &str,
) -> ProxyProcess {
    let dir = tempdir();
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: inbound\n    address: {address}\n    access_log: true\n    inbound: {{ mode: strict }}\n{listener}backends:\n  - name: app\n    endpoints: [{{ address: {} }}]\n{}",
        app.addr(),
        identity_section(dir.path(), ca, &ca.issue_spiffe(API))
    );
    start(dir, &yaml).await
}

/// Proxy A: listener `edge` to the peer at `to` (identity API), with
/// `pool.mesh_http2` as given.
async fn outbound_proxy(ca: &TestCa, to: SocketAddr, mesh_http2: bool) -> ProxyProcess {
    let dir = tempdir();
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    routes:\n      - name: all\n        backends: [{{ name: api }}]\nbackends:\n  - name: api\n    pool: {{ mesh_http2: {mesh_http2} }}\n    endpoints: [{{ address: {to}, identity: \"{API}\" }}]\n{}",
        identity_section(dir.path(), ca, &ca.issue_spiffe(WEB))
    );
    start(dir, &yaml).await
}

/// Starts a proxy as a sidecar usually runs: one worker, so the
/// single-threaded runtime (the other tests run one worker per CPU).
async fn start(dir: remora_test_support::proxy::TempDir, yaml: &str) -> ProxyProcess {
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).expect("write config.yaml");
    let args = vec![
        "--config".into(),
        config.into(),
        "--workers".into(),
        "1".into(),
    ];
    ProxyProcess::start_with(dir, bin(), args)
        .await
        .expect("proxy starts")
}

/// curl, HTTP/1.1: `REQUESTS` GETs of `/` through `edge`, `PARALLEL` at a
/// time; every one must answer 200.
async fn curl_many(edge: SocketAddr) {
    crate::require("curl");
    let url = format!("http://{edge}/");
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--http1.1", "--max-time", "20", "--parallel"])
        .args(["--parallel-max", &PARALLEL.to_string()])
        .args(["-o", "/dev/null", "-w", "%{http_code}\\n"]);
    for _ in 0..REQUESTS {
        cmd.arg(&url);
    }
    let out = cmd.output().await.expect("run curl");
    let codes = String::from_utf8_lossy(&out.stdout);
    let ok = codes.lines().filter(|c| *c == "200").count();
    assert_eq!(
        ok,
        REQUESTS,
        "{codes}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// curl, HTTP/1.1: what the app saw of one request (`/headers`).
async fn curl_headers(edge: SocketAddr) -> serde_json::Value {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http1.1", "--max-time", "10"])
        .arg(format!("http://{edge}/headers"))
        .output()
        .await
        .expect("run curl");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

/// The app saw HTTP/1.1, the Host curl sent, and no trace of the hop.
fn assert_app_saw_http1(seen: &serde_json::Value, edge: SocketAddr) {
    assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
    assert_eq!(seen["headers"]["host"][0], edge.to_string(), "{seen}");
    assert!(seen["headers"].get("remora-orig-proto").is_none(), "{seen}");
}

/// curl → proxy A → proxy B → app, all running.
struct Mesh {
    app: Upstream,
    a: ProxyProcess,
    b: ProxyProcess,
}

impl Mesh {
    async fn start(listener: &str, mesh_http2: bool) -> Mesh {
        let ca = TestCa::new("mesh root");
        let app = Upstream::start("app").await;
        let b = inbound_proxy(&ca, &app, listener).await;
        let a = outbound_proxy(&ca, b.listener("inbound"), mesh_http2).await;
        Mesh { app, a, b }
    }

    /// curl's requests through both proxies, the app seeing each one as
    /// HTTP/1.1; then B's metrics.
    async fn exercise(&self) -> String {
        let edge = self.a.listener("edge");
        curl_many(edge).await;
        assert_app_saw_http1(&curl_headers(edge).await, edge);
        assert_eq!(self.app.requests(), REQUESTS + 1);
        self.b.metrics().await
    }
}

fn mtls_connections(metrics: &str, alpn: &str) -> u64 {
    let series =
        format!("remora_inbound_mtls_connections_total{{alpn=\"{alpn}\",listener=\"inbound\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_between_proxies_share_one_http2_connection() {
    let mesh = Mesh::start(HTTP, true).await;
    let m = mesh.exercise().await;
    assert_eq!(
        (mtls_connections(&m, "h2"), mtls_connections(&m, "http/1.1")),
        (1, 0),
        "{m}"
    );
    // B's access log shows the request as the app got it.
    let line = mesh
        .b
        .wait_for_log_where(
            0,
            |l| l.contains("\"path\":\"/headers\""),
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(line.contains("\"version\":\"HTTP/1.1\""), "{line}");
}

/// The peer proxy dies (SIGKILL, as a node failure or an OOM kill) and a
/// new one comes up at the same address: the caller's HTTP/2 connection is
/// gone, and its next requests go over a new one, none of them failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_peer_restarts_requests_go_over_a_new_http2_connection() {
    let ca = TestCa::new("mesh root");
    let app = Upstream::start("app").await;
    let mut b = inbound_proxy(&ca, &app, HTTP).await;
    let at = b.listener("inbound");
    let a = outbound_proxy(&ca, at, true).await;
    let edge = a.listener("edge");
    curl_many(edge).await;
    b.signal("KILL").unwrap();
    b.wait_exit(std::time::Duration::from_secs(10))
        .await
        .expect("the peer exits");
    let b = inbound_proxy_at(&ca, &app, HTTP, &at.to_string()).await;
    curl_many(edge).await;
    assert_app_saw_http1(&curl_headers(edge).await, edge);
    let m = b.metrics().await;
    assert_eq!(mtls_connections(&m, "h2"), 1, "{m}");
    let opened = a.metrics().await;
    let series = "remora_upstream_connections_total{backend=\"api\",protocol=\"http2\"} 2";
    assert!(opened.contains(series), "{opened}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mesh_http2_off_the_hop_is_http1() {
    let m = Mesh::start(HTTP, false).await.exercise().await;
    assert_eq!(mtls_connections(&m, "h2"), 0, "{m}");
    assert!(mtls_connections(&m, "http/1.1") >= 1, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_only_speaks_http1_gets_http1() {
    let ca = TestCa::new("mesh root");
    let api = ca.issue_spiffe(API);
    let old = Upstream::start_mtls_alpn(
        "old-peer",
        &api.cert_pem,
        &api.key_pem,
        &ca.ca_pem(),
        &[b"http/1.1"],
    )
    .await;
    let a = outbound_proxy(&ca, old.addr(), true).await;
    let edge = a.listener("edge");
    curl_many(edge).await;
    assert_app_saw_http1(&curl_headers(edge).await, edge);
    assert_eq!(old.requests(), REQUESTS + 1);
    // Pooled: far fewer connections than requests.
    assert!(old.connections() <= PARALLEL + 1, "{}", old.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_between_proxies_stays_on_http1() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = Mesh::start(HTTP, true).await;
    mesh.exercise().await;
    let headers = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "x3JJHMbDL1EzLkh9GBhXDw=="),
        ("sec-websocket-version", "13"),
    ];
    let edge = mesh.a.listener("edge");
    let (head, mut ws) = remora_test_support::client::upgrade(edge, "/chat", &headers)
        .await
        .expect("the upgrade passes both proxies");
    assert_eq!((head.status, head.upstream()), (101, Some("app")));
    // The app echoes bytes: a masked text frame "hi" comes back as sent.
    let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    ws.write_all(&frame).await.unwrap();
    let mut back = [0u8; 8];
    tokio::time::timeout(std::time::Duration::from_secs(10), ws.read_exact(&mut back))
        .await
        .expect("echoed within 10 s")
        .unwrap();
    assert_eq!(back, frame);
    // The requests shared the h2 connection; the upgrade had its own.
    let m = mesh.b.metrics().await;
    assert_eq!(
        (mtls_connections(&m, "h2"), mtls_connections(&m, "http/1.1")),
        (1, 1),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_inbound_listener_offers_no_alpn_and_gets_http1_bytes() {
    let m = Mesh::start(OPAQUE, true).await.exercise().await;
    assert_eq!(mtls_connections(&m, "h2"), 0, "{m}");
    assert!(mtls_connections(&m, "-") >= 1, "{m}");
}

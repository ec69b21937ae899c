//! Transparent mode (`original_destination`) end to end.
//!
//! As root: two network namespaces, a "client pod" and a "server pod",
//! joined by a veth (IPv4 and IPv6), both intercepted by `remora-proxy
//! init`. A plain client in the client pod connects to the app's own
//! address in the server pod and reaches it through the client pod's
//! outbound proxy and the server pod's inbound proxy, over mutual TLS: the
//! inbound proxy counts the caller's identity, and the app sees the
//! connection come from 127.0.0.1. The proxies run as the proxy UID (as a
//! pod's proxy container does), so their own connections skip the
//! redirect; the plain client runs as root, so its connections do not.
//! Without root these tests print SKIPPED and pass.
//!
//! On loopback, without root: connections that were not redirected go to
//! `tcp_backend` or are refused, and HTTP on a transparent listener with
//! routes goes through the routes.

pub(crate) mod pods;

use crate::mesh_tls::{identity_section, API, WEB};
use crate::{bin, require};
use pods::{curl, root, wire, Netns, Server, CLIENT};
use remora_test_support::client::Request;
use remora_test_support::proxy::{tempdir, TempDir};
use remora_test_support::{ProxyProcess, TestCa, Upstream};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The UID the proxies run as and `init` exempts (its default).
const PROXY_UID: &str = "2102";

/// Bound on every wait in this file.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_reaches_another_pod_through_both_proxies_over_mutual_tls() {
    if !root("a_plain_client_reaches_another_pod_through_both_proxies_over_mutual_tls") {
        return;
    }
    for tool in ["ip", "python3", "curl", "setpriv", "iptables-nft-restore"] {
        require(tool);
    }
    let client_pod = Netns::new("client").await;
    let server_pod = Netns::new("server").await;
    wire(&client_pod, &server_pod).await;
    let init = [bin_str(), "init", "--ipv6", "--proxy-uid", PROXY_UID];
    client_pod.ok(&init).await;
    // Port 9000 stays outside the mesh: plain servers can be reached there.
    server_pod
        .ok(&[&init[..], &["--skip-inbound-ports", "9000"]].concat())
        .await;

    let _app = Server::start(&server_pod, "app", 8080).await;
    let _plain = Server::start(&server_pod, "plain", 9000).await;
    let ca = TestCa::new("mesh root");
    let inbound = start_proxy(&server_pod, &ca, API, SERVER_PROXY).await;
    let endpoints = format!(
        "[{{ address: \"10.254.0.2:8080\", identity: \"{API}\" }}, {{ address: \"[fd00:254::2]:8080\", identity: \"{API}\" }}]"
    );
    let mut outbound = start_proxy(
        &client_pod,
        &ca,
        WEB,
        &CLIENT_PROXY.replace("ENDPOINTS", &endpoints),
    )
    .await;

    // The plain client, as root: intercepted. The app sees the inbound
    // proxy's connection, not the client pod's address.
    let via_mesh = "app saw 127.0.0.1";
    assert_eq!(
        curl(&client_pod, None, "http://10.254.0.2:8080/").await,
        via_mesh
    );
    assert_eq!(
        curl(&client_pod, None, "http://[fd00:254::2]:8080/").await,
        via_mesh
    );
    // Opaque bytes both ways, with half-close.
    let echoed = client_pod
        .ok(&["python3", "-c", CLIENT, "10.254.0.2", "8080"])
        .await;
    assert_eq!(echoed.trim(), "ping over the mesh|bye from app");

    let metrics = inbound.metrics().await;
    let by_web = [("listener", "inbound"), ("client_id", WEB)];
    assert_eq!(
        value(&metrics, "remora_inbound_connections_total", &by_web),
        3.0,
        "{metrics}"
    );
    let to_app = [("listener", "inbound"), ("backend", "passthrough")];
    assert_eq!(
        value(&metrics, "remora_tcp_connections_total", &to_app),
        3.0,
        "{metrics}"
    );
    let metrics = outbound.metrics().await;
    for (listener, n) in [("outbound", 2.0), ("outbound6", 1.0)] {
        let labels = [("listener", listener), ("backend", "api")];
        assert_eq!(
            value(&metrics, "remora_tcp_connections_total", &labels),
            n,
            "{metrics}"
        );
    }

    // A destination outside the snapshot: reached directly, in plaintext.
    assert_eq!(
        curl(&client_pod, None, "http://10.254.0.2:9000/").await,
        "plain saw 10.254.0.1"
    );
    let metrics = outbound.metrics().await;
    let passthrough = [("listener", "outbound"), ("backend", "passthrough")];
    assert_eq!(
        value(&metrics, "remora_tcp_connections_total", &passthrough),
        1.0
    );

    // Plaintext that skips the client pod's proxy (sent as the proxy UID)
    // is refused by the strict inbound proxy: the app is only reached over
    // mutual TLS.
    let bypass = curl(&client_pod, Some(PROXY_UID), "http://10.254.0.2:8080/").await;
    assert!(bypass.starts_with("ERROR"), "{bypass}");
    let refused = [("listener", "inbound"), ("reason", "plaintext")];
    assert_eq!(
        value(
            &inbound.metrics().await,
            "remora_inbound_refused_total",
            &refused
        ),
        1.0
    );

    // Dialing the outbound listener itself is not redirected: refused
    // rather than forwarded to itself.
    let direct = curl(&client_pod, None, "http://127.0.0.1:4140/").await;
    assert!(direct.starts_with("ERROR"), "{direct}");
    outbound
        .wait_for_log("it was not redirected", WAIT)
        .await
        .unwrap();

    // With routes, HTTP on the outbound listener is routed by host; a host
    // no route knows, dialed at an address a route stands for (10.254.0.99,
    // no pod's: a Service's ClusterIP called by a short name), takes that
    // route; else it goes on to where the client was headed: the
    // snapshot's backend with an endpoint there, else the address itself.
    let text = std::fs::read_to_string(outbound.config_path()).unwrap();
    let routes = "    routes:\n      - { name: api, match: { hosts: [api], destinations: [\"10.254.0.99:8080\"] }, backends: [{ name: api }] }\n      - { name: plain, match: { hosts: [plain], destinations: [\"10.254.0.99:9000\"] }, backends: [{ name: plain }] }\n";
    let routed = text.replacen(
        "    original_destination: true\n",
        &format!("    original_destination: true\n{routes}"),
        1,
    );
    let routed = routed.replacen(
        "backends:\n",
        "backends:\n  - name: plain\n    endpoints: [{ address: \"10.254.0.99:9000\" }]\n",
        1,
    );
    let mark = outbound.log_mark();
    outbound.write_config(&routed).unwrap();
    outbound
        .wait_for_log_where(mark, |l| l.contains("config applied"), WAIT)
        .await
        .unwrap();
    assert_eq!(
        curl(&client_pod, None, "http://10.254.0.2:9000/").await,
        "plain saw 10.254.0.1"
    );
    assert_eq!(
        curl(&client_pod, None, "http://10.254.0.2:8080/").await,
        via_mesh
    );
    let by_name = curl_as_api(&client_pod, "http://10.254.0.2:8080/").await;
    assert_eq!(by_name, via_mesh);
    assert_eq!(
        curl(&client_pod, None, "http://10.254.0.99:8080/").await,
        via_mesh
    );
    let metrics = outbound.metrics().await;
    let http = |route: &str, backend: &str| {
        let labels = [
            ("listener", "outbound"),
            ("route", route),
            ("backend", backend),
            ("status_code", "200"),
        ];
        value(&metrics, "remora_responses_total", &labels)
    };
    assert_eq!(http("", "passthrough"), 1.0, "{metrics}");
    assert_eq!(http("", "api"), 1.0, "{metrics}");
    assert_eq!(http("api", "api"), 2.0, "{metrics}");
    assert_eq!(
        value(&metrics, "remora_tcp_connections_total", &passthrough),
        1.0,
        "HTTP did not go as opaque TCP"
    );
    // Opaque bytes to the address the route stands for: to the route's
    // backend, over mutual TLS, not to 10.254.0.99 itself.
    let echoed = client_pod
        .ok(&["python3", "-c", CLIENT, "10.254.0.99", "8080"])
        .await;
    assert_eq!(echoed.trim(), "ping over the mesh|bye from app");
    let metrics = outbound.metrics().await;
    let to_api = [("listener", "outbound"), ("backend", "api")];
    assert_eq!(
        value(&metrics, "remora_tcp_connections_total", &to_api),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, "remora_tcp_connections_total", &passthrough),
        1.0
    );
    // Another port of that address (another port of the Service, a
    // service of its own): not the route's, though the host names it; the
    // route of that address and port.
    server_pod
        .ok(&["ip", "addr", "add", "10.254.0.99/24", "dev", "tp1"])
        .await;
    let other_port = curl_as_api(&client_pod, "http://10.254.0.99:9000/").await;
    assert_eq!(other_port, "plain saw 10.254.0.1");
    let metrics = outbound.metrics().await;
    let labels = [
        ("listener", "outbound"),
        ("route", "plain"),
        ("backend", "plain"),
        ("status_code", "200"),
    ];
    assert_eq!(
        value(&metrics, "remora_responses_total", &labels),
        1.0,
        "{metrics}"
    );

    // With the client pod's proxy gone, the plain client's connection goes
    // nowhere: it was intercepted, not sent straight to the app.
    outbound.signal("TERM").unwrap();
    assert!(
        outbound.wait_exit(WAIT).await.is_some(),
        "proxy drained and exited"
    );
    let gone = curl(&client_pod, None, "http://10.254.0.2:8080/").await;
    assert!(gone.starts_with("ERROR"), "{gone}");
    let metrics = inbound.metrics().await;
    // The 4 opaque ones, and the 3 routed HTTP requests' (pooled or not:
    // at least one, at most one each).
    let total = value(&metrics, "remora_inbound_connections_total", &by_web);
    assert!((5.0..=7.0).contains(&total), "{metrics}");
}

/// A GET of `url` from `ns` (as root: intercepted) with the host `api`.
async fn curl_as_api(ns: &Netns, url: &str) -> String {
    ns.ok(&["curl", "-sS", "--max-time", "5", "-H", "Host: api", url])
        .await
}

/// The server pod's proxy: strict mutual TLS, any authenticated peer, and
/// redirected connections to the app on 127.0.0.1 at their original port.
const SERVER_PROXY: &str = "\
admin: { address: \"127.0.0.1:0\" }
listeners:
  - name: inbound
    address: \"[::]:4143\"
    protocol: detect
    original_destination: true
    inbound: { mode: strict, authorization: { default: all-authenticated } }
";

/// The client pod's proxy: redirected connections to the address they were
/// for; the app's two addresses are endpoints with the API identity.
const CLIENT_PROXY: &str = "\
admin: { address: \"127.0.0.1:0\" }
listeners:
  - name: outbound
    address: \"127.0.0.1:4140\"
    protocol: detect
    original_destination: true
  - name: outbound6
    address: \"[::1]:4140\"
    protocol: tcp
    original_destination: true
backends:
  - name: api
    endpoints: ENDPOINTS
";

/// Starts a proxy with identity `me` in `ns` as the proxy UID.
async fn start_proxy(ns: &Netns, ca: &TestCa, me: &str, yaml: &str) -> ProxyProcess {
    let dir = tempdir();
    let yaml = format!(
        "{yaml}{}",
        identity_section(dir.path(), ca, &ca.issue_spiffe(me))
    );
    readable_by_all(&dir);
    let wrapper = [
        "setpriv",
        "--reuid",
        PROXY_UID,
        "--regid",
        PROXY_UID,
        "--clear-groups",
    ];
    ProxyProcess::start_in_netns(dir, bin(), &yaml, &ns.name, &wrapper)
        .await
        .expect("proxy starts")
}

/// Lets the proxy UID read the directory (a temporary directory is 0700)
/// and the files in it.
fn readable_by_all(dir: &TempDir) {
    let mode = |m| std::fs::Permissions::from_mode(m);
    std::fs::set_permissions(dir.path(), mode(0o755)).unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::set_permissions(entry.unwrap().path(), mode(0o644)).unwrap();
    }
}

/// The value of the sample of `name` that has all of `labels`; 0 if none.
fn value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn bin_str() -> &'static str {
    bin().to_str().expect("a UTF-8 binary path")
}

// ---- On loopback, no root needed. ----

/// Echoes what it reads after saying `hello from <name>\n`.
async fn echo_server(name: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp
                    .write_all(format!("hello from {name}\n").as_bytes())
                    .await;
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Everything a connection to `addr` says until it closes, after sending
/// `ping\n` (not HTTP at once) and ending its writing.
async fn exchange(addr: std::net::SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(b"ping\n").await;
    let _ = tcp.shutdown().await;
    let mut out = String::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_string(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_were_not_redirected_go_to_tcp_backend_or_are_refused() {
    let echo = echo_server("echo").await;
    let web = Upstream::start("web").await;
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: fallback
    address: 127.0.0.1:0
    protocol: tcp
    original_destination: true
    tcp_backend: echo
  - name: bare
    address: 127.0.0.1:0
    protocol: detect
    original_destination: true
  - name: routed
    address: 127.0.0.1:0
    protocol: detect
    original_destination: true
    tcp_backend: echo
    routes:
      - name: web
        backends: [{{ name: web }}]
backends:
  - name: echo
    endpoints: [{{ address: {echo} }}]
  - name: web
    endpoints: [{{ address: {} }}]
",
        web.addr()
    );
    let proxy = crate::start(&yaml).await;

    // Not redirected, with a `tcp_backend`: there.
    assert_eq!(
        exchange(proxy.listener("fallback")).await,
        "hello from echo\nping\n"
    );
    // Not redirected and nowhere else to go: closed, and the log says why.
    assert_eq!(exchange(proxy.listener("bare")).await, "");
    let line = proxy
        .wait_for_log("it was not redirected", WAIT)
        .await
        .unwrap();
    assert!(line.contains("\"bare\""), "{line}");
    // A transparent listener with routes still serves HTTP through them,
    // and sends other bytes to `tcp_backend` when not redirected.
    let rsp = Request::new("GET", &format!("http://{}/", proxy.listener("routed")))
        .send()
        .await;
    assert_eq!(
        (rsp.status, rsp.upstream()),
        (200, Some("web")),
        "{}",
        rsp.text()
    );
    assert_eq!(
        exchange(proxy.listener("routed")).await,
        "hello from echo\nping\n"
    );
    let metrics = proxy.metrics().await;
    let labels = [("listener", "fallback"), ("backend", "echo")];
    assert_eq!(
        value(&metrics, "remora_tcp_connections_total", &labels),
        1.0
    );
}

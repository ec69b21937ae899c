//! Mutual TLS between proxies, with identities from files (`identity:` in
//! the config; the control plane's CA is tested with the control plane).
//! The outbound side: a proxy connects to an endpoint with an `identity`
//! over mutual TLS and fails the request unless the peer proves exactly that
//! SPIFFE ID with a certificate from the mesh's roots.

use crate::bin;
use remora_test_support::client::Request;
use remora_test_support::proxy::{tempdir, TempDir};
use remora_test_support::{CertPair, ProxyProcess, TestCa, Upstream};
use std::path::Path;

pub const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
pub const API: &str = "spiffe://cluster.local/ns/shop/sa/api";

/// Writes the mesh roots and this proxy's certificate into `dir`; returns
/// the `identity:` section naming them.
pub fn identity_section(dir: &Path, ca: &TestCa, me: &CertPair) -> String {
    let (cert, key) = me.write_to(dir, "me");
    let roots = dir.join("roots.pem");
    std::fs::write(&roots, ca.ca_pem()).unwrap();
    format!(
        "identity:\n  trust_roots_file: \"{}\"\n  certificate: {{ cert: \"{}\", key: \"{}\" }}\n",
        roots.display(),
        cert.display(),
        key.display()
    )
}

/// An edge listener sending everything to backend `api`, whose one
/// endpoint at `addr` must prove `expect`.
fn outbound_config(
    dir: &Path,
    ca: &TestCa,
    me: &CertPair,
    addr: std::net::SocketAddr,
    expect: &str,
) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    routes:\n      - name: all\n        backends: [{{ name: api }}]\nbackends:\n  - name: api\n    endpoints: [{{ address: {addr}, identity: \"{expect}\" }}]\n{}",
        identity_section(dir, ca, me)
    )
}

async fn start_in(dir: TempDir, yaml: &str) -> ProxyProcess {
    ProxyProcess::start_in(dir, bin(), yaml)
        .await
        .expect("proxy starts")
}

async fn get(proxy: &ProxyProcess) -> remora_test_support::Response {
    Request::new("GET", &format!("http://{}/", proxy.listener("edge")))
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_mtls_reaches_the_expected_identity_and_nothing_else() {
    let ca = TestCa::new("mesh root");
    let api = ca.issue_spiffe(API);
    // The upstream demands a client certificate from the mesh CA.
    let up = Upstream::start_mtls("api", &api.cert_pem, &api.key_pem, &ca.ca_pem()).await;
    let dir = tempdir();
    let yaml = outbound_config(dir.path(), &ca, &ca.issue_spiffe(WEB), up.addr(), API);
    let proxy = start_in(dir, &yaml).await;
    let rsp = get(&proxy).await;
    assert_eq!(
        (rsp.status, rsp.upstream()),
        (200, Some("api")),
        "{}",
        rsp.text()
    );

    // The snapshot expects another identity at that address: 502, and why.
    let dir = tempdir();
    let other = "spiffe://cluster.local/ns/shop/sa/payments";
    let yaml = outbound_config(dir.path(), &ca, &ca.issue_spiffe(WEB), up.addr(), other);
    let proxy = start_in(dir, &yaml).await;
    let rsp = get(&proxy).await;
    assert_eq!(rsp.status, 502, "{}", rsp.text());
    assert_eq!(rsp.header("remora-error"), Some("identity-mismatch"));
    let line = proxy
        .wait_for_log("request failed", std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert!(line.contains(API) && line.contains(other), "{line}");
    assert_eq!(up.requests(), 1, "nothing was sent to the wrong peer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new("mesh root");
    let rogue = TestCa::new("rogue root");
    let fake = rogue.issue_spiffe(API);
    let up = Upstream::start_mtls("fake", &fake.cert_pem, &fake.key_pem, &ca.ca_pem()).await;
    let dir = tempdir();
    let yaml = outbound_config(dir.path(), &ca, &ca.issue_spiffe(WEB), up.addr(), API);
    let proxy = start_in(dir, &yaml).await;
    let rsp = get(&proxy).await;
    assert_eq!(rsp.status, 502, "{}", rsp.text());
    assert_eq!(rsp.header("remora-error"), Some("upstream-tls"));
    assert_eq!(up.requests(), 0);
}

/// An inbound proxy: listener `inbound` (with `inbound_yaml` as its
/// `inbound:` section) sending everything to the app at `app`; identity API.
async fn inbound_proxy(ca: &TestCa, app: &Upstream, inbound_yaml: &str) -> ProxyProcess {
    let dir = tempdir();
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: inbound\n    address: 127.0.0.1:0\n    access_log: true\n    inbound: {inbound_yaml}\n    routes:\n      - name: app\n        backends: [{{ name: app }}]\nbackends:\n  - name: app\n    endpoints: [{{ address: {} }}]\n{}",
        app.addr(),
        identity_section(dir.path(), ca, &ca.issue_spiffe(API))
    );
    start_in(dir, &yaml).await
}

/// An outbound proxy with identity `me`, sending everything on `edge` to
/// the proxy at `to`, which must prove API.
async fn outbound_proxy(ca: &TestCa, me: &str, to: std::net::SocketAddr) -> ProxyProcess {
    let dir = tempdir();
    let yaml = outbound_config(dir.path(), ca, &ca.issue_spiffe(me), to, API);
    start_in(dir, &yaml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_carry_a_request_over_mutual_tls_and_the_inbound_side_knows_the_caller() {
    let ca = TestCa::new("mesh root");
    let app = Upstream::start("app").await;
    let inbound = inbound_proxy(&ca, &app, "{ mode: strict }").await;
    let outbound = outbound_proxy(&ca, WEB, inbound.listener("inbound")).await;
    for version in [
        remora_test_support::HttpVersion::Http1,
        remora_test_support::HttpVersion::Http2,
    ] {
        let rsp = Request::new(
            "GET",
            &format!("http://{}/hello", outbound.listener("edge")),
        )
        .version(version)
        .send()
        .await;
        assert_eq!(
            (rsp.status, rsp.upstream()),
            (200, Some("app")),
            "{}",
            rsp.text()
        );
    }
    // The inbound proxy logged who called.
    let line = inbound
        .wait_for_log_where(
            0,
            |l| l.contains("\"path\":\"/hello\""),
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(line.contains(&format!("\"client_id\":\"{WEB}\"")), "{line}");
    let m = inbound.metrics().await;
    assert!(
        m.contains(&format!(
            "remora_inbound_connections_total{{client_id=\"{WEB}\",listener=\"inbound\"}}"
        )),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_plaintext_and_tls_without_a_mesh_certificate() {
    crate::require("openssl");
    let ca = TestCa::new("mesh root");
    let app = Upstream::start("app").await;
    let inbound = inbound_proxy(&ca, &app, "{ mode: strict }").await;
    let addr = inbound.listener("inbound");

    // Plaintext: the connection is closed without an answer.
    let raw = remora_test_support::client::raw(
        addr,
        b"GET / HTTP/1.1\r\nhost: app\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
    // A TCP health check (connect, close) is neither plaintext nor TLS:
    // not counted as refused.
    for _ in 0..3 {
        drop(tokio::net::TcpStream::connect(addr).await.unwrap());
    }

    // TLS without a client certificate, then with one from another CA.
    let dir = tempdir();
    let rogue = TestCa::new("rogue root").issue_spiffe(WEB);
    let (rogue_cert, rogue_key) = rogue.write_to(dir.path(), "rogue");
    let base = [
        "s_client",
        "-connect",
        &addr.to_string(),
        "-quiet",
        "-no_ign_eof",
    ];
    let rogue_args = [
        "-cert",
        rogue_cert.to_str().unwrap(),
        "-key",
        rogue_key.to_str().unwrap(),
    ];
    for extra in [&[][..], &rogue_args[..]] {
        let out = openssl(&base, extra).await;
        assert!(!out.contains("HTTP/1.1"), "{out}");
    }
    assert_eq!(app.requests(), 0, "nothing reached the app");
    let m = inbound.metrics().await;
    assert!(
        m.contains("remora_inbound_refused_total{listener=\"inbound\",reason=\"plaintext\"} 1"),
        "{m}"
    );
}

/// Runs `openssl <args> <extra>` with an HTTP request on stdin; stdout and
/// stderr together.
async fn openssl(args: &[&str], extra: &[&str]) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("openssl")
        .args(args)
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"GET / HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("openssl finished")
        .unwrap();
    drop(stdin);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_by_identity_and_by_network() {
    let ca = TestCa::new("mesh root");
    let app = Upstream::start("app").await;
    // Only WEB may call; plaintext is allowed in, but only from 10.0.0.0/8.
    let policy = format!(
        "{{ mode: permissive, authorization: {{ allow: [{{ identities: [\"{WEB}\"] }}, {{ networks: [10.0.0.0/8] }}] }} }}"
    );
    let inbound = inbound_proxy(&ca, &app, &policy).await;
    let web = outbound_proxy(&ca, WEB, inbound.listener("inbound")).await;
    let other = outbound_proxy(
        &ca,
        "spiffe://cluster.local/ns/shop/sa/payments",
        inbound.listener("inbound"),
    )
    .await;

    let rsp = get(&web).await;
    assert_eq!(
        (rsp.status, rsp.upstream()),
        (200, Some("app")),
        "{}",
        rsp.text()
    );
    let rsp = get(&other).await;
    assert_eq!(rsp.status, 403, "{}", rsp.text());
    assert_eq!(rsp.header("remora-error"), Some("forbidden"));
    // Plaintext from 127.0.0.1: not in 10.0.0.0/8.
    let rsp = Request::new("GET", &format!("http://{}/", inbound.listener("inbound")))
        .send()
        .await;
    assert_eq!(rsp.status, 403, "{}", rsp.text());
    assert_eq!(app.requests(), 1);
    let line = inbound
        .wait_for_log(
            "denied by the authorization policy",
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(
        line.contains("spiffe://cluster.local/ns/shop/sa/payments"),
        "{line}"
    );
    let m = inbound.metrics().await;
    assert!(
        m.contains("remora_authorization_denials_total{listener=\"inbound\",route=\"app\"} 2"),
        "{m}"
    );

    // /explain gives the verdicts those requests got, without sending one.
    let admin = inbound.admin();
    for (who, allowed) in [
        (format!("client_id={WEB}"), true),
        (
            "client_id=spiffe://cluster.local/ns/shop/sa/payments".into(),
            false,
        ),
        ("client_addr=127.0.0.1".into(), false),
        ("client_addr=10.1.2.3".into(), true),
    ] {
        let query = format!("host=app&path=/&{who}");
        let e = crate::explain::explain(admin, &query).await;
        let verdict = &e["policies"]["authorization"];
        assert_eq!(verdict["allowed"], allowed, "{who}: {e:#}");
        assert_eq!(verdict["policy"], "listener", "{who}: {e:#}");
        let reason = verdict["reason"].as_str().unwrap();
        let word = if allowed { "is allowed" } else { "is denied" };
        assert!(reason.contains(word), "{who}: {reason}");
        // Without client_addr, the networks rule saw no real address.
        assert_eq!(
            reason.contains("no client_addr given"),
            who.starts_with("client_id="),
            "{who}: {reason}"
        );
        let outcome = e["outcome"].as_str().unwrap();
        assert_eq!(
            outcome.starts_with("403 forbidden"),
            !allowed,
            "{who}: {outcome}"
        );
    }

    // Permissive with the default policy: plaintext reaches the app.
    let open = inbound_proxy(&ca, &app, "{ mode: permissive }").await;
    let rsp = Request::new("GET", &format!("http://{}/", open.listener("inbound")))
        .send()
        .await;
    assert_eq!(
        (rsp.status, rsp.upstream()),
        (200, Some("app")),
        "{}",
        rsp.text()
    );
}

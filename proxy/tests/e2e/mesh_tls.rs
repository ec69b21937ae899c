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

//! The test CA's certificates verify with rustls, against the TLS upstream
//! and over an in-memory handshake, including mutual TLS.

use std::sync::Arc;

use remora_test_support::client::Request;
use remora_test_support::tls::{self, rustls_client_config, rustls_client_config_with_cert};
use remora_test_support::{TestCa, Upstream};
use rustls_pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[tokio::test]
async fn tls_upstream_negotiates_h2_and_http11() {
    let ca = TestCa::new("test ca");
    let cert = ca.issue_server(&["backend.test", "127.0.0.1"]);
    let up = Upstream::start_tls("secure", &cert.cert_pem, &cert.key_pem).await;
    let url = format!("https://{}/headers", up.addr());
    for (alpn, version) in [(&b"h2"[..], "HTTP/2.0"), (&b"http/1.1"[..], "HTTP/1.1")] {
        let config = rustls_client_config(&ca.ca_pem(), &[alpn]);
        let resp = Request::new("GET", &url)
            .tls(config)
            .server_name("backend.test")
            .send()
            .await;
        assert_eq!(resp.json()["version"], version);
        assert_eq!(resp.upstream(), Some("secure"));
    }
    // The IP SAN verifies too (server name defaults to the URL host).
    let config = rustls_client_config(&ca.ca_pem(), &[b"h2"]);
    assert_eq!(
        Request::new("GET", &url).tls(config).send().await.status,
        200
    );
}

#[tokio::test]
async fn wrong_name_or_wrong_ca_fails_the_handshake() {
    let ca = TestCa::new("ca");
    let cert = ca.issue_server(&["backend.test"]);
    let up = Upstream::start_tls("secure", &cert.cert_pem, &cert.key_pem).await;
    let url = format!("https://{}/", up.addr());
    let good = rustls_client_config(&ca.ca_pem(), &[b"h2"]);
    let other = rustls_client_config(&TestCa::new("other").ca_pem(), &[b"h2"]);
    assert!(Request::new("GET", &url)
        .tls(good)
        .server_name("other.test")
        .try_send()
        .await
        .is_err());
    assert!(Request::new("GET", &url)
        .tls(other)
        .server_name("backend.test")
        .try_send()
        .await
        .is_err());
}

#[tokio::test]
async fn mtls_upstream_requires_a_client_cert() {
    let ca = TestCa::new("mesh ca");
    let server = ca.issue_server(&["backend.test"]);
    let up = Upstream::start_mtls("m", &server.cert_pem, &server.key_pem, &ca.ca_pem()).await;
    let url = format!("https://{}/", up.addr());
    let with = rustls_client_config_with_cert(&ca.ca_pem(), &[b"h2"], &ca.issue_client("web"));
    let resp = Request::new("GET", &url)
        .tls(with)
        .server_name("backend.test")
        .send()
        .await;
    assert_eq!(resp.text(), "m\n");
    let without = rustls_client_config(&ca.ca_pem(), &[b"h2"]);
    let failed = Request::new("GET", &url)
        .tls(without)
        .server_name("backend.test")
        .try_send()
        .await;
    assert!(failed.is_err());
}

#[tokio::test]
async fn in_memory_handshake_sees_the_client_identity() {
    let ca = TestCa::new("ca");
    let server = ca.issue_server(&["svc.test"]);
    let client = ca.issue_client("client-a");
    let server_config =
        tls::rustls_server_config_mtls(&server.cert_pem, &server.key_pem, &ca.ca_pem(), &[b"h2"]);
    let client_config = rustls_client_config_with_cert(&ca.ca_pem(), &[b"h2"], &client);
    let (a, b) = tokio::io::duplex(64 * 1024);
    let accept = tokio::spawn(async move { TlsAcceptor::from(server_config).accept(b).await });
    let sni = ServerName::try_from("svc.test").unwrap();
    let tls = TlsConnector::from(Arc::clone(&client_config))
        .connect(sni, a)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let server_side = accept.await.unwrap().unwrap();
    let peer = server_side.get_ref().1.peer_certificates().unwrap();
    assert_eq!(peer[0], tls::parse_certs(&client.cert_pem)[0]);
}

#[test]
fn cert_pair_writes_crt_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let pair = TestCa::new("ca").issue_server(&["localhost"]);
    let (crt, key) = pair.write_to(dir.path(), "server");
    assert_eq!(crt, dir.path().join("server.crt"));
    assert_eq!(key, dir.path().join("server.key"));
    let crt = std::fs::read_to_string(crt).unwrap();
    assert_eq!(tls::parse_certs(&crt).len(), 1);
    let _ = tls::parse_key(&std::fs::read_to_string(key).unwrap());
}

//! A throwaway certificate authority for tests ([`TestCa`]) that issues
//! server and client certificates as PEM, plus rustls client and server
//! configs built on the ring provider explicitly, so no test depends on a
//! process-wide default crypto provider having been installed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A self-signed CA (ECDSA P-256) living only in memory.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertPair {
    /// Writes `<stem>.crt` and `<stem>.key` into `dir`; returns their paths.
    pub fn write_to(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write private key");
        (cert, key)
    }
}

impl TestCa {
    /// A new CA whose subject common name is `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign CA");
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names`: each is an IP SAN if it parses as an
    /// IP address, a DNS SAN otherwise. The first name is also the CN.
    pub fn issue_server(&self, names: &[&str]) -> CertPair {
        let mut params = CertificateParams::default();
        params.subject_alt_names = names.iter().map(|n| san(n)).collect();
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with subject CN `common_name` and no SANs.
    pub fn issue_client(&self, common_name: &str) -> CertPair {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    /// A mesh workload certificate: `id` (a `spiffe://` URI) as the only
    /// SAN, usable as server and as client, like the control plane's CA issues.
    pub fn issue_spiffe(&self, id: &str) -> CertPair {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.try_into().expect("valid URI"))];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(params)
    }

    /// Signs arbitrary parameters (for SANs or usages the helpers above
    /// don't cover) with a fresh key.
    pub fn issue(&self, mut params: CertificateParams) -> CertPair {
        params.use_authority_key_identifier_extension = true;
        if !params
            .key_usages
            .contains(&KeyUsagePurpose::DigitalSignature)
        {
            params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        }
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign leaf certificate");
        CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn san(name: &str) -> SanType {
    match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.try_into().expect("valid DNS name")),
    }
}

/// The ring crypto provider every config here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate in a PEM string.
pub fn parse_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("parse PEM certificates")
}

/// Parses the first private key in a PEM string.
pub fn parse_key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("parse PEM private key")
}

fn roots(ca_pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem) {
        roots.add(cert).expect("add CA to root store");
    }
    roots
}

fn client_builder(
    ca_pem: &str,
) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots(ca_pem))
}

/// A client config trusting only `ca_pem`, offering `alpn` (e.g. `&[b"h2"]`).
pub fn rustls_client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config = client_builder(ca_pem).with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Like [`rustls_client_config`], presenting `identity` as a client certificate.
pub fn rustls_client_config_with_cert(
    ca_pem: &str,
    alpn: &[&[u8]],
    identity: &CertPair,
) -> Arc<ClientConfig> {
    let mut config = client_builder(ca_pem)
        .with_client_auth_cert(
            parse_certs(&identity.cert_pem),
            parse_key(&identity.key_pem),
        )
        .expect("client certificate and key match");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A server config presenting `cert_pem` (leaf first, then any chain).
pub fn rustls_server_config(cert_pem: &str, key_pem: &str, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(parse_certs(cert_pem), parse_key(key_pem))
        .expect("server certificate and key match");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Like [`rustls_server_config`], requiring a client certificate issued by
/// `client_ca_pem`.
pub fn rustls_server_config_mtls(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
    alpn: &[&[u8]],
) -> Arc<ServerConfig> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca_pem)), provider())
            .build()
            .expect("client verifier");
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(parse_certs(cert_pem), parse_key(key_pem))
        .expect("server certificate and key match");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

//! Mutual TLS between proxies. Both sides present the proxy's current mesh
//! certificate (read from [`Identity`] at each handshake, so a renewal
//! applies to the next connection and never touches open ones) and verify
//! the peer's chain against the snapshot's trust roots. The client also
//! checks that the server proves the SPIFFE ID the snapshot expects for that
//! endpoint; the server reads the client's ID for authorization.
//!
//! Certificates carry URI SANs only, so name checks are SPIFFE ID checks;
//! the SNI a client sends is a DNS-safe rendering of the ID it expects
//! ([`sni_for`]), for logs and packet captures.

use super::{peer_spiffe_id, Identity};
use crate::http::client::UpstreamTls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use std::sync::Arc;

/// The mesh's trust roots, parsed once per snapshot.
pub struct MeshRoots {
    pub store: Arc<rustls::RootCertStore>,
    anchors: Vec<TrustAnchor<'static>>,
    /// Hash of the roots: part of the snapshot version.
    pub digest: u64,
}

impl std::fmt::Debug for MeshRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MeshRoots({} roots)", self.anchors.len())
    }
}

impl MeshRoots {
    /// Parses PEM trust roots (several concatenated or in several strings).
    pub fn from_pem(pems: &[&[u8]]) -> Result<MeshRoots, String> {
        let mut store = rustls::RootCertStore::empty();
        let mut anchors = Vec::new();
        let mut all = Vec::new();
        for pem in pems {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
                all.extend_from_slice(cert.as_ref());
                let anchor = webpki::anchor_from_trusted_cert(&cert)
                    .map_err(|e| format!("not a usable trust root: {e:?}"))?
                    .to_owned();
                anchors.push(anchor);
                store
                    .add(cert)
                    .map_err(|e| format!("not a usable trust root: {e}"))?;
            }
        }
        if anchors.is_empty() {
            return Err("no trust root certificate".into());
        }
        Ok(MeshRoots {
            store: Arc::new(store),
            anchors,
            digest: crate::balance::content_hash(&all),
        })
    }
}

/// The SNI for a connection expecting `id`: `spiffe://td/ns/NS/sa/SA` →
/// `SA.NS.serviceaccount.identity.td` (a DNS name, as Linkerd does).
pub fn sni_for(id: &str) -> Option<ServerName<'static>> {
    let (td, ns, sa) = remora_api::identity::parse_spiffe(id)?;
    ServerName::try_from(format!("{sa}.{ns}.serviceaccount.identity.{td}")).ok()
}

/// The peer proved another identity than the one expected.
#[derive(Debug, thiserror::Error)]
#[error("peer identity is {found}, expected {expected}")]
pub struct IdentityMismatch {
    pub expected: String,
    pub found: String,
}

/// Finds an [`IdentityMismatch`] in a handshake error, if that is what it was.
pub fn identity_mismatch(e: &std::io::Error) -> Option<&IdentityMismatch> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) => {
            other.downcast_ref::<IdentityMismatch>()
        }
        _ => None,
    }
}

/// Presents the current mesh certificate, as client and as server.
#[derive(Debug)]
struct CurrentCert(Arc<Identity>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|c| c.certified.clone())
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|c| c.certified.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.current().is_some()
    }
}

/// Presents the proxy's current mesh certificate, when it has one, as a
/// TLS client (to the control plane).
pub fn client_cert_resolver(identity: &Arc<Identity>) -> Arc<dyn ResolvesClientCert> {
    Arc::new(CurrentCert(identity.clone()))
}

/// Verifies a server's chain against the mesh roots and that its SPIFFE ID
/// is the expected one.
#[derive(Debug)]
struct ExpectIdentity {
    roots: Arc<MeshRoots>,
    expected: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ExpectIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.roots.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(webpki_error)?;
        let found = peer_spiffe_id(end_entity).unwrap_or_else(|| "(no SPIFFE ID)".into());
        if found != self.expected {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(IdentityMismatch {
                    expected: self.expected.clone(),
                    found,
                })),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn webpki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let c = match e {
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        other => CertificateError::Other(OtherError(Arc::new(WebPki(format!("{other:?}"))))),
    };
    rustls::Error::InvalidCertificate(c)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WebPki(String);

/// Client configs (ALPN http/1.1, h2, and both for the mesh's HTTP/2
/// between proxies) for connecting to the proxy at an endpoint whose
/// identity must be `expected`.
pub fn client_tls(
    identity: &Arc<Identity>,
    roots: &Arc<MeshRoots>,
    expected: &str,
) -> Result<UpstreamTls, String> {
    let provider = crate::tls::provider();
    let server_name =
        sni_for(expected).ok_or_else(|| format!("`{expected}` is not a SPIFFE ID"))?;
    let verifier = Arc::new(ExpectIdentity {
        roots: roots.clone(),
        expected: expected.to_string(),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(CurrentCert(identity.clone())));
    let mut h1 = config.clone();
    h1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut h2 = config.clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let mut mesh = config;
    mesh.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(UpstreamTls {
        h1: Arc::new(h1),
        h2: Arc::new(h2),
        mesh: Some(Arc::new(mesh)),
        server_name,
    })
}

/// The server config of an inbound listener: the current mesh certificate,
/// and a client certificate required and verified against the roots.
/// `alpn` is what it offers: `h2` and `http/1.1` on an HTTP listener (a
/// peer proxy then multiplexes its requests on one HTTP/2 connection),
/// nothing on an opaque one (its bytes are the app's, not ours to frame).
pub fn server_config(
    identity: &Arc<Identity>,
    roots: &MeshRoots,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = crate::tls::provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.store.clone(), provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CurrentCert(identity.clone())));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The client's SPIFFE ID on an accepted mutual-TLS connection.
pub fn client_id(conn: &rustls::ServerConnection) -> Option<String> {
    conn.peer_certificates()?.first().and_then(peer_spiffe_id)
}

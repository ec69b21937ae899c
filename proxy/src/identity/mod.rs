//! The proxy's mesh identity: its current certificate (swapped in whole on
//! every renewal, so a handshake always sees a consistent chain and key, and
//! established connections are never touched), and the certificate's SPIFFE
//! ID.
//!
//! Where the certificate comes from is someone else's job: files named in
//! the config, or the control plane's CA (`issuer`). Both call
//! [`Identity::install`].

pub mod issuer;
pub mod tls;

use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A certificate ready for handshakes, with what we know about it.
pub struct Credential {
    pub certified: Arc<CertifiedKey>,
    /// The SPIFFE ID in the leaf's URI SAN.
    pub id: String,
    pub not_after: SystemTime,
}

/// The proxy's identity; empty until a first certificate is installed.
#[derive(Default)]
pub struct Identity {
    current: ArcSwapOption<Credential>,
}

/// The identity of this process: one proxy, one identity. The TLS configs
/// compiled from each snapshot and the certificate sources share it.
pub fn global() -> &'static Arc<Identity> {
    static GLOBAL: std::sync::OnceLock<Arc<Identity>> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(Identity::new)
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.current() {
            Some(c) => write!(f, "Identity({})", c.id),
            None => write!(f, "Identity(none yet)"),
        }
    }
}

impl Identity {
    pub fn new() -> Arc<Identity> {
        Arc::new(Identity::default())
    }

    /// The certificate to present now, if any.
    pub fn current(&self) -> Option<Arc<Credential>> {
        self.current.load_full()
    }

    /// Installs a certificate chain (PEM, leaf first) and its private key
    /// (PEM); see [`Credential::parse`]. Returns the installed credential.
    pub fn install(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<Credential>, String> {
        let credential = Arc::new(Credential::parse(chain_pem, key_pem)?);
        self.set(credential.clone());
        Ok(credential)
    }

    /// Makes `credential` the certificate of the next handshakes.
    pub fn set(&self, credential: Arc<Credential>) {
        self.current.store(Some(credential));
    }
}

impl Credential {
    /// A certificate chain (PEM, leaf first) and its private key (PEM),
    /// checked to belong together, with the leaf's SPIFFE ID.
    pub fn parse(chain_pem: &[u8], key_pem: &[u8]) -> Result<Credential, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
        let leaf = chain.first().ok_or("no certificate in the chain")?;
        let (id, not_after) = spiffe_id_and_expiry(leaf)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("no usable private key: {e}"))?;
        let certified = CertifiedKey::from_der(chain, key, &crate::tls::provider())
            .map_err(|e| format!("certificate and key do not belong together: {e}"))?;
        Ok(Credential {
            certified: Arc::new(certified),
            id,
            not_after,
        })
    }
}

/// The SPIFFE ID (URI SAN starting `spiffe://`) and the expiry of a certificate.
pub fn spiffe_id_and_expiry(cert: &CertificateDer<'_>) -> Result<(String, SystemTime), String> {
    use x509_parser::prelude::*;
    let (_, x509) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let not_after = x509.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64);
    let id = spiffe_id(&x509).ok_or("the certificate has no spiffe:// URI SAN")?;
    Ok((id, not_after))
}

/// The SPIFFE ID of a peer's leaf certificate, if it has one.
pub fn peer_spiffe_id(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, x509) = X509Certificate::from_der(cert.as_ref()).ok()?;
    spiffe_id(&x509)
}

fn spiffe_id(x509: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let san = x509.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) if u.starts_with("spiffe://") => Some(u.to_string()),
        _ => None,
    })
}

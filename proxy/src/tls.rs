//! TLS material: server configs for listeners (several certificates chosen by
//! SNI, optional client-certificate verification) and client configs for
//! upstreams. Loading reads PEM files; everything returns errors, never panics.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in file", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: no usable private key: {e}", path.display()))
}

pub fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .map_err(|e| format!("{}: bad CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

/// Roots from PEM text (`what` names where it came from, for errors).
pub fn roots_from_pem(pem: &str, what: &str) -> Result<rustls::RootCertStore, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no certificate"));
    }
    let mut store = rustls::RootCertStore::empty();
    for c in certs {
        store
            .add(c)
            .map_err(|e| format!("{what}: bad CA certificate: {e}"))?;
    }
    Ok(store)
}

/// Picks a listener's certificate by SNI: exact name, then `*.suffix`, then
/// the first certificate.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(c) = self.wildcard.get(parent) {
                return Some(c.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// Builds a listener's TLS config. Errors name the file and field at fault.
pub fn server_config(
    tls: &remora_api::ServerTls,
    at: &str,
) -> Result<Arc<rustls::ServerConfig>, (String, String)> {
    let provider = provider();
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for (i, c) in tls.certificates.iter().enumerate() {
        let at = format!("{at}.certificates[{i}]");
        let chain = certs(&c.cert).map_err(|e| (format!("{at}.cert"), e))?;
        let key = key(&c.key).map_err(|e| (format!("{at}.key"), e))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| (format!("{at}.key"), format!("unsupported key: {e}")))?;
        let names: Vec<String> = if c.server_names.is_empty() {
            dns_names(&chain[0]).map_err(|e| (format!("{at}.cert"), e))?
        } else {
            c.server_names.clone()
        };
        let ck = Arc::new(CertifiedKey::new(chain, signing));
        ck.keys_match().map_err(|e| {
            (
                format!("{at}.key"),
                format!("does not match the certificate: {e}"),
            )
        })?;
        for n in names {
            let n = n.to_ascii_lowercase();
            match n.strip_prefix("*.") {
                Some(parent) => wildcard
                    .entry(parent.to_string())
                    .or_insert_with(|| ck.clone()),
                None => exact.entry(n).or_insert_with(|| ck.clone()),
            };
        }
        default.get_or_insert(ck);
    }
    let default = default.ok_or_else(|| {
        (
            format!("{at}.certificates"),
            "needs at least one certificate".to_string(),
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| (at.to_string(), e.to_string()))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = roots(ca).map_err(|e| (format!("{at}.client_ca"), e))?;
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if tls.require_client_certificate {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| (format!("{at}.client_ca"), e.to_string()))?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver {
        exact,
        wildcard,
        default,
    }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("cannot parse certificate: {e:?}"))?;
    Ok(ee.valid_dns_names().map(str::to_string).collect())
}

/// Builds the two client configs of an upstream (ALPN http/1.1 and h2).
pub fn client_configs(
    tls: &remora_api::UpstreamTls,
    at: &str,
) -> Result<(Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>), (String, String)> {
    let roots = roots(&tls.ca).map_err(|e| (format!("{at}.ca"), e))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| (at.to_string(), e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(c), Some(k)) => {
            let chain = certs(c).map_err(|e| (format!("{at}.client_cert"), e))?;
            let key = key(k).map_err(|e| (format!("{at}.client_key"), e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| (format!("{at}.client_key"), e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    let mut h1 = config.clone();
    h1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut h2 = config;
    h2.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(h1), Arc::new(h2)))
}

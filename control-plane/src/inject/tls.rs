//! The webhook's serving certificate, re-read when its files change: a
//! handshake at most once a second compares the files' modification times
//! and sizes, and a changed pair that loads replaces the served one (a pair
//! that does not load is logged; the old one keeps serving). This follows a
//! mounted Secret that cert-manager or the chart renews.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often a handshake may look at the files.
const CHECK_EVERY: Duration = Duration::from_secs(1);

type Stamp = Option<(SystemTime, u64)>;

#[derive(Debug)]
struct State {
    key: Arc<CertifiedKey>,
    stamps: (Stamp, Stamp),
    checked: tokio::time::Instant,
}

#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<State>,
}

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The certificate chain and key of the two files.
pub fn load_pair(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("--webhook-cert {}: {e}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "--webhook-cert {}: no certificate in the file",
        cert.display()
    );
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("--webhook-key {}: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let pair = CertifiedKey::from_der(certs, der, &provider)
        .map_err(|e| anyhow::anyhow!("--webhook-key {}: {e}", key.display()))?;
    Ok(Arc::new(pair))
}

impl ReloadingCert {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<ReloadingCert> {
        let stamps = (stamp(cert), stamp(key));
        Ok(ReloadingCert {
            state: Mutex::new(State {
                key: load_pair(cert, key)?,
                stamps,
                checked: tokio::time::Instant::now(),
            }),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = tokio::time::Instant::now();
            let stamps = (stamp(&self.cert), stamp(&self.key));
            if stamps != state.stamps {
                state.stamps = stamps;
                match load_pair(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                        state.key = key;
                    }
                    Err(e) => tracing::warn!(error = %e, "webhook certificate not reloaded"),
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

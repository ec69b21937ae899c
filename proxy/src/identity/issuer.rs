//! Certificates from the control plane's CA: generate a key locally, send a
//! CSR with a credential, install the certificate, renew before expiry.
//!
//! Each attempt makes a new ECDSA P-256 key in memory (it is never written
//! anywhere and never sent: only the CSR, which carries the public key,
//! is), reads the join token from its file (so a replaced token applies to
//! the next attempt), and posts a [`CertifyRequest`] to `POST /v1/certify`
//! on the control plane's snapshot port over plain HTTP/1.1. The
//! certificate is installed into the proxy's [`Identity`], which only the
//! next handshakes read: connections already open keep theirs.
//!
//! Renewal comes after 65-75% of the remaining lifetime (70% with jitter,
//! so proxies that got certificates together do not renew together). A
//! failure is retried after 0.5 s × 2ⁿ⁻¹ (at most 30 s), times a jitter in
//! [0.5, 1); meanwhile the old certificate keeps serving until it expires.

use super::{Credential, Identity};
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use remora_api::mesh::{CertifyRequest, CertifyResponse};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{oneshot, watch};

/// Where the CA is and what this proxy asks it for.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The control plane (`--control-plane`, TLS with
    /// `--control-plane-ca`); `POST /v1/certify` there.
    pub control_plane: crate::control_plane::Dial,
    pub workload: String,
    /// The file holding the join token (`--identity-token`).
    pub token_file: PathBuf,
}

pub const CERTIFY_PATH: &str = "/v1/certify";
/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The largest response read (a chain and a few roots are a few KiB).
const MAX_RESPONSE: usize = 1024 * 1024;

pub struct Issuer {
    settings: Settings,
    identity: Arc<Identity>,
    metrics: Arc<Metrics>,
    first: Option<oneshot::Sender<()>>,
}

impl Issuer {
    /// The issuer, and a receiver that resolves once the first certificate
    /// is installed.
    pub fn new(
        settings: Settings,
        identity: Arc<Identity>,
        metrics: Arc<Metrics>,
    ) -> (Issuer, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let issuer = Issuer {
            settings,
            identity,
            metrics,
            first: Some(tx),
        };
        (issuer, rx)
    }

    /// Gets a certificate, then renews it, until `stop`.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut rng = fastrand::Rng::new();
        let mut failures = 0u32;
        loop {
            let attempt = tokio::select! {
                r = self.renew() => r,
                _ = crate::drain::stopped(&mut stop) => return,
            };
            let wait = match attempt {
                Ok(credential) => {
                    failures = 0;
                    let left = credential
                        .not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    left.mul_f64(0.65 + rng.f64() / 10.0).max(BACKOFF_BASE)
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.identity_renewal_failures.inc();
                    let current = self.identity.current();
                    let expires_at = current.as_ref().map(|c| remora_api::rfc3339(c.not_after));
                    let expired = current.is_some_and(|c| c.not_after <= SystemTime::now());
                    tracing::warn!(
                        address = %self.settings.control_plane.address,
                        workload = %self.settings.workload,
                        reason = %e,
                        failures,
                        current_expires_at = expires_at.as_deref().unwrap_or("none"),
                        expired,
                        "certificate renewal failed"
                    );
                    backoff(failures).mul_f64(0.5 + rng.f64() / 2.0)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = crate::drain::stopped(&mut stop) => return,
            }
        }
    }

    /// One request: new key, CSR, certificate, installed.
    async fn renew(&mut self) -> Result<Arc<Credential>, String> {
        let token = tokio::fs::read_to_string(&self.settings.token_file)
            .await
            .map_err(|e| {
                format!(
                    "cannot read the identity token {}: {e}",
                    self.settings.token_file.display()
                )
            })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(format!(
                "the identity token file {} is empty",
                self.settings.token_file.display()
            ));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot generate a key: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(|e| format!("cannot make a CSR: {e}"))?;
        let req = CertifyRequest {
            workload: self.settings.workload.clone(),
            csr,
        };
        let rsp = tokio::time::timeout(
            REQUEST_TIMEOUT,
            post(&self.settings.control_plane, token, &req),
        )
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))??;
        let credential = self
            .identity
            .install(
                rsp.certificate_chain.as_bytes(),
                key.serialize_pem().as_bytes(),
            )
            .map_err(|e| format!("unusable certificate: {e}"))?;
        let expiry = credential
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.metrics.identity_expiry.set(expiry.as_secs_f64());
        self.metrics.identity_renewals.inc();
        tracing::info!(
            spiffe_id = %credential.id,
            serial = %serial(&credential),
            expires_at = %remora_api::rfc3339(credential.not_after),
            trust_roots = rsp.trust_roots.len(),
            "certificate issued"
        );
        if let Some(first) = self.first.take() {
            let _ = first.send(());
        }
        Ok(credential)
    }
}

/// The ceiling of the wait after the n-th failure in a row.
fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

/// `POST /v1/certify` over HTTP/1.1; a refusal becomes its status and text.
async fn post(
    control_plane: &crate::control_plane::Dial,
    token: &str,
    req: &CertifyRequest,
) -> Result<CertifyResponse, String> {
    let address = &control_plane.address;
    let io = control_plane
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    let request = http::Request::post(CERTIFY_PATH)
        .header(http::header::HOST, address.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let rsp = send
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = rsp.status();
    let body = Limited::new(rsp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| format!("reading the response: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(format!(
            "{status}: {}",
            text.lines().next().unwrap_or("").trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("not a certificate response: {e}"))
}

/// The leaf's serial in upper-case hex, as `openssl x509 -serial` prints it.
fn serial(c: &Credential) -> String {
    let leaf = c
        .certified
        .cert
        .first()
        .map(|d| d.as_ref())
        .unwrap_or_default();
    x509_parser::parse_x509_certificate(leaf)
        .map(|(_, x)| x.raw_serial().iter().map(|b| format!("{b:02X}")).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        let secs: Vec<f64> = (1..=9).map(|n| backoff(n).as_secs_f64()).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}

//! `POST /v1/certify` on the snapshot listener: a proxy sends a CSR for its
//! workload with a bearer token and gets a short-lived certificate for the
//! workload's SPIFFE ID.
//!
//! The checks, in order: a CA is configured (else 503), a bearer token is
//! present (401), the body is a [`CertifyRequest`] (400, 413), the workload
//! is in the mesh (404), the credential allows it (401 unknown token, 403
//! another workload's, 503 when it cannot be checked now, e.g. the
//! Kubernetes API server is down), the CSR parses and its signature
//! verifies (400).
//! Every refusal is one line of text, logged (never with the token) and
//! counted by reason.

use crate::auth::{Authenticator, Denied};
use crate::ca::Ca;
use crate::metrics::Metrics;
use crate::proxies::rfc3339;
use crate::source::Generation;
use crate::Error;
use bytes::Bytes;
use http::{header, HeaderMap, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use remora_api::mesh::{CertifyRequest, CertifyResponse};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

pub const CERTIFY: &str = "/v1/certify";
/// A CSR is about 500 bytes; anything near this is not one.
pub const MAX_BODY: usize = 64 * 1024;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What a certificate request needs: the CA (if any), the credential
/// check, and the mesh (for the workload's identity).
pub struct Certifier {
    pub ca: Option<Arc<Ca>>,
    pub auth: Option<Arc<dyn Authenticator>>,
    pub generations: watch::Receiver<Arc<Generation>>,
    pub metrics: Arc<Metrics>,
}

impl Certifier {
    /// Serves one request: the certificate as JSON, or the refusal as a
    /// line of text.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(Error::BodyTooLarge(MAX_BODY))
            }
            Err(e) => Err(Error::Body(e.to_string())),
        };
        // For the refusal's log line, when the body says.
        let mut asked = None;
        let result = match body {
            Ok(body) => {
                asked = serde_json::from_slice::<CertifyRequest>(&body)
                    .ok()
                    .map(|r| r.workload);
                self.certify(&parts.headers, &body, SystemTime::now()).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(c) => {
                self.metrics.certificates_issued.inc();
                tracing::info!(workload = %c.workload, spiffe_id = %c.spiffe_id, serial = %c.serial, expires_at = %c.response.expires_at, peer = %peer, "certificate issued");
                let json = serde_json::to_vec(&c.response).unwrap_or_default();
                let mut r = Response::new(Full::new(Bytes::from(json)).boxed_unsync());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(e) => {
                self.metrics
                    .certificate_failures
                    .with_label_values(&[e.reason()])
                    .inc();
                let workload = asked.as_deref().unwrap_or("");
                tracing::warn!(error = %e, workload = %workload, peer = %peer, "certificate refused");
                let mut r = Response::new(Full::new(Bytes::from(format!("{e}\n"))).boxed_unsync());
                *r.status_mut() = e.status();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
        }
    }

    /// The checks and the signing, without the HTTP around them.
    pub async fn certify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Certified, Error> {
        let ca = self.ca.as_ref().ok_or(Error::NoCa)?;
        let token = bearer(headers).ok_or(Error::NoToken)?;
        let req: CertifyRequest =
            serde_json::from_slice(body).map_err(|e| Error::BadRequest(e.to_string()))?;
        let spiffe_id = {
            let current = self.generations.borrow();
            match current.identities.get(&req.workload) {
                Some(id) => id.clone(),
                None => {
                    let known: Vec<&str> = current.identities.keys().map(String::as_str).collect();
                    return Err(Error::UnknownWorkload {
                        workload: req.workload,
                        known: known.join(", "),
                    });
                }
            }
        };
        // Without a credential check every token is unknown (the CLI
        // requires one with a CA).
        let verdict = match &self.auth {
            Some(auth) => auth.authorize(token, &req.workload, &spiffe_id).await,
            None => Err(Denied::Unknown),
        };
        match verdict {
            Ok(()) => {}
            Err(Denied::Unknown) => return Err(Error::UnknownToken),
            Err(Denied::NotFor) => return Err(Error::Forbidden(req.workload)),
            Err(Denied::Unavailable(why)) => return Err(Error::CredentialUnavailable(why)),
        }
        let issued = ca.issue(&req.csr, &spiffe_id, now)?;
        Ok(Certified {
            workload: req.workload,
            spiffe_id,
            serial: issued.serial,
            response: CertifyResponse {
                certificate_chain: issued.chain,
                trust_roots: ca.trust_roots().to_vec(),
                expires_at: rfc3339(issued.not_after),
            },
        })
    }
}

/// A certificate request that succeeded.
#[derive(Debug)]
pub struct Certified {
    pub workload: String,
    pub spiffe_id: String,
    /// As `openssl x509 -serial` prints it.
    pub serial: String,
    pub response: CertifyResponse,
}

/// The token of `authorization: Bearer <token>` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests;

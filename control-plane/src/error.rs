//! The control plane's one error type: what can go wrong with a
//! subscription or a certificate request, and the one place
//! ([`Error::status`]) that maps it to an HTTP status. Most variants are
//! the caller's fault (a 4xx); [`Error::NoCa`],
//! [`Error::CredentialUnavailable`] and [`Error::Internal`] are ours.
//! Internal failures of a running stream end it instead and are logged.

use http::StatusCode;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the first line must be a Hello: {0}")]
    BadHello(String),
    #[error("no Hello line within {0:?}")]
    HelloTimeout(Duration),
    #[error("the request body ended before a Hello line")]
    NoHello,
    #[error("unknown workload `{workload}`; the mesh has: {known}")]
    UnknownWorkload { workload: String, known: String },
    #[error("a line is longer than {0} bytes")]
    LineTooLong(usize),
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("this control plane has no CA: start it with --ca-cert and --ca-key")]
    NoCa,
    #[error("no credential: send `authorization: Bearer <token>`")]
    NoToken,
    #[error("unknown token")]
    UnknownToken,
    #[error("this token does not allow workload `{0}`")]
    Forbidden(String),
    #[error("cannot check the credential now, try again later: {0}")]
    CredentialUnavailable(String),
    #[error("bad request body: {0}")]
    BadRequest(String),
    #[error("the request body is longer than {0} bytes")]
    BodyTooLarge(usize),
    #[error("bad CSR: {0}")]
    BadCsr(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("a client certificate is required: the proxy's mesh certificate (this control plane runs with --require-proxy-identity)")]
    IdentityRequired,
    #[error(
        "the client certificate is for {presented}, not for workload `{workload}` ({expected})"
    )]
    WrongIdentity {
        presented: String,
        workload: String,
        expected: String,
    },
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::UnknownWorkload { .. } => StatusCode::NOT_FOUND,
            Error::HelloTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::LineTooLong(_) | Error::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BadHello(_)
            | Error::NoHello
            | Error::Body(_)
            | Error::BadRequest(_)
            | Error::BadCsr(_) => StatusCode::BAD_REQUEST,
            Error::NoToken | Error::UnknownToken | Error::IdentityRequired => {
                StatusCode::UNAUTHORIZED
            }
            Error::WrongIdentity { .. } => StatusCode::FORBIDDEN,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NoCa | Error::CredentialUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A bounded label for metrics (`remora_cp_certificate_failures_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NoCa => "no_ca",
            Error::CredentialUnavailable(_) => "credential_unavailable",
            Error::NoToken | Error::UnknownToken | Error::IdentityRequired => "unauthenticated",
            Error::WrongIdentity { .. } => "forbidden",
            Error::Forbidden(_) => "forbidden",
            Error::UnknownWorkload { .. } => "unknown_workload",
            Error::BadCsr(_) => "bad_csr",
            Error::Internal(_) => "internal",
            Error::BadHello(_)
            | Error::HelloTimeout(_)
            | Error::NoHello
            | Error::LineTooLong(_)
            | Error::Body(_)
            | Error::BadRequest(_)
            | Error::BodyTooLarge(_) => "bad_request",
        }
    }
}

/// Every value of [`Error::reason`] a certificate request can have.
pub const CERTIFY_REASONS: &[&str] = &[
    "no_ca",
    "credential_unavailable",
    "unauthenticated",
    "forbidden",
    "unknown_workload",
    "bad_request",
    "bad_csr",
    "internal",
];

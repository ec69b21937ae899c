//! The proxy's own errors, and the one place that turns them into responses.
//!
//! Every failure the proxy itself produces travels as a [`ProxyError`]. Each
//! variant knows its status, a stable cause name (sent in the `remora-error`
//! header, used as the `error` metric label and logged), and whose fault it is.

use super::body::ResponseBody;
use http::{HeaderValue, Response, StatusCode};
use std::net::SocketAddr;
use std::time::Duration;

/// Response header naming the cause of a response the proxy made itself.
pub const REMORA_ERROR: &str = "remora-error";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The request breaks an HTTP message rule (http/message.rs).
    #[error("{0}")]
    Message(#[from] super::message::Violation),
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The client's request body failed on its way in (a malformed chunk,
    /// the connection cut short): the client's fault, never the endpoint's.
    #[error("the client's request body failed: {0}")]
    ClientBody(super::body::BoxError),
    #[error("request headers larger than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("backend `{backend}` has no endpoint to send to")]
    NoEndpoints { backend: std::sync::Arc<str> },
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    #[error("TLS handshake with {addr} failed: {source}")]
    UpstreamTls {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} is not who the mesh says it is: {mismatch}")]
    IdentityMismatch {
        addr: SocketAddr,
        mismatch: crate::identity::tls::IdentityMismatch,
    },
    #[error("the authorization policy does not allow {client}")]
    Forbidden { client: String },
    #[error("upstream {addr} failed: {source}")]
    Upstream {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("attempt got no response within {0:?}")]
    PerTryTimeout(Duration),
    #[error("backend `{backend}` is at its {limit} limit")]
    Overloaded {
        backend: std::sync::Arc<str>,
        limit: &'static str,
    },
    #[error("rate limit reached; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("fault injected: {0}")]
    FaultInjected(StatusCode),
}

/// Who caused a failure: decides the log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Downstream,
    Upstream,
    Config,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Malformed(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Message(v) => v.status(),
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::NoEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::UpstreamTls { .. }
            | ProxyError::IdentityMismatch { .. }
            | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::Timeout(_) | ProxyError::PerTryTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::FaultInjected(status) => *status,
        }
    }

    /// Stable name of the cause: the `remora-error` header and `error` label.
    pub fn cause(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no-route",
            ProxyError::Malformed(_) => "malformed-request",
            ProxyError::ClientBody(_) => "client-body",
            ProxyError::Message(v) => v.cause(),
            ProxyError::BodyTooLarge { .. } => "body-too-large",
            ProxyError::HeadersTooLarge { .. } => "headers-too-large",
            ProxyError::NoEndpoints { .. } => "no-endpoints",
            ProxyError::Connect { .. } => "connect-failed",
            ProxyError::ConnectTimeout { .. } => "connect-timeout",
            ProxyError::UpstreamTls { .. } => "upstream-tls",
            ProxyError::IdentityMismatch { .. } => "identity-mismatch",
            ProxyError::Forbidden { .. } => "forbidden",
            ProxyError::Upstream { .. } => "upstream-failed",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::PerTryTimeout(_) => "per-try-timeout",
            ProxyError::Overloaded { .. } => "overloaded",
            ProxyError::RateLimited { .. } => "rate-limited",
            ProxyError::FaultInjected(_) => "fault-injected",
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::NoRoute | ProxyError::NoEndpoints { .. } | ProxyError::FaultInjected(_) => {
                Fault::Config
            }
            ProxyError::Malformed(_)
            | ProxyError::ClientBody(_)
            | ProxyError::Message(_)
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::Forbidden { .. }
            | ProxyError::RateLimited { .. } => Fault::Downstream,
            _ => Fault::Upstream,
        }
    }
}

/// The deepest cause of an error, for the log line.
pub fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(next) = e.source() {
        e = next;
    }
    e.to_string()
}

/// The one mapping from a proxy error to what the client sees.
pub fn error_response(err: &ProxyError) -> Response<ResponseBody> {
    let status = err.status();
    let mut body = String::with_capacity(64);
    body.push_str(status.canonical_reason().unwrap_or("error"));
    body.push_str(": ");
    body.push_str(err.cause());
    body.push('\n');
    let mut rsp = Response::new(ResponseBody::full(body));
    *rsp.status_mut() = status;
    let h = rsp.headers_mut();
    h.insert(REMORA_ERROR, HeaderValue::from_static(err.cause()));
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    if let ProxyError::Message(_) = err {
        // The request broke the message rules: its framing cannot be
        // trusted, so an HTTP/1 connection ends here (RFC 9112 §6.3;
        // hyper leaves the header out on HTTP/2).
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let ProxyError::RateLimited { retry_after } = err {
        // Whole seconds, rounded up: at least 1.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    rsp
}

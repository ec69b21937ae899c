//! The HTTP message rules the proxy enforces itself, on top of what hyper's
//! codecs already refuse: one valid `Host` that agrees with the request
//! target (RFC 9112 §3.2, RFC 9113 §8.3.1), transfer codings the proxy can
//! forward (RFC 9112 §6.1), and no `CONNECT` tunnels (RFC 9110 §9.3.6).
//! The response to a violation closes an HTTP/1 connection. (hyper itself
//! refuses conflicting lengths, obs-fold and bad field syntax, and for
//! `Content-Length` with `Transfer-Encoding` lets chunked win, drops the
//! length and closes the connection after the response, as RFC 9112 §6.3
//! asks of an intermediary.)
//!
//! [`check`] is pure and runs on every request before routing: it reads the
//! head without allocating. [`max_forwards`] says what `Max-Forwards` asks
//! of an OPTIONS or TRACE request (RFC 9110 §7.6.2), and
//! [`final_recipient`] is the proxy's answer when it is 0. Which rule hyper enforces and which this module
//! does is listed in docs/operations.md ("HTTP message rules").

use super::body::ResponseBody;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, Uri, Version};

/// A request that breaks a message rule, and so is not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("an HTTP/1.1 request without a Host header (RFC 9112 §3.2)")]
    MissingHost,
    #[error("more than one Host header (RFC 9112 §3.2)")]
    MultipleHosts,
    #[error("the Host header is not a valid host[:port] (RFC 9112 §3.2)")]
    InvalidHost,
    #[error("the Host header disagrees with the request target's authority (RFC 9112 §3.2.2, RFC 9113 §8.3.1)")]
    HostMismatch,
    #[error("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)")]
    TransferEncodingInHttp10,
    #[error("a transfer coding other than chunked (RFC 9112 §6.1)")]
    UnsupportedTransferCoding,
    #[error("CONNECT: the proxy does not open tunnels (RFC 9110 §9.3.6)")]
    Connect,
}

impl Violation {
    /// 501 for what the proxy does not implement, 400 for a bad request.
    pub fn status(self) -> http::StatusCode {
        match self {
            Violation::UnsupportedTransferCoding | Violation::Connect => {
                http::StatusCode::NOT_IMPLEMENTED
            }
            _ => http::StatusCode::BAD_REQUEST,
        }
    }

    /// The `remora-error` cause.
    pub fn cause(self) -> &'static str {
        match self.status() {
            http::StatusCode::NOT_IMPLEMENTED => "not-implemented",
            _ => "bad-request",
        }
    }
}

/// Checks a request head against the rules above.
pub fn check(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> Result<(), Violation> {
    if method == Method::CONNECT {
        return Err(Violation::Connect);
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Violation::MultipleHosts);
    }
    match host {
        None if version == Version::HTTP_11 => return Err(Violation::MissingHost),
        None => {}
        Some(h) => {
            let (name, port) = split_host(h.as_bytes()).ok_or(Violation::InvalidHost)?;
            if let Some(a) = uri.authority() {
                let default = default_port(uri);
                let same_port = port.or(default) == a.port_u16().or(default);
                if !name.eq_ignore_ascii_case(a.host().as_bytes()) || !same_port {
                    return Err(Violation::HostMismatch);
                }
            }
        }
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(Violation::TransferEncodingInHttp10);
        }
        if !only_chunked(headers) {
            return Err(Violation::UnsupportedTransferCoding);
        }
    }
    Ok(())
}

/// What `Max-Forwards` (RFC 9110 §7.6.2) asks of the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxForwards {
    /// Not a TRACE or OPTIONS request, or no (valid) `Max-Forwards`: forward
    /// as it is.
    Ignore,
    /// Zero: the proxy is the final recipient and must answer itself.
    Answer,
    /// Forward with this value (the received one minus one).
    Forward(u32),
}

/// Only TRACE and OPTIONS carry `Max-Forwards` semantics; an invalid value
/// is ignored, as if absent.
pub fn max_forwards(method: &Method, headers: &HeaderMap) -> MaxForwards {
    if method != Method::OPTIONS && method != Method::TRACE {
        return MaxForwards::Ignore;
    }
    let n = headers
        .get(header::MAX_FORWARDS)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match n {
        None => MaxForwards::Ignore,
        Some(0) => MaxForwards::Answer,
        Some(n) => MaxForwards::Forward((n - 1).min(u64::from(u32::MAX)) as u32),
    }
}

/// The proxy's own answer to OPTIONS or TRACE with `Max-Forwards: 0`
/// (RFC 9110 §7.6.2): OPTIONS gets 200 with what the proxy may forward;
/// TRACE, which would reflect the request (headers and all), is not
/// supported here: 501.
pub fn final_recipient(method: &Method) -> Response<ResponseBody> {
    let mut rsp = Response::new(ResponseBody::empty());
    if method == Method::TRACE {
        *rsp.status_mut() = http::StatusCode::NOT_IMPLEMENTED;
    } else {
        rsp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),
        );
    }
    rsp
}

fn default_port(uri: &Uri) -> Option<u16> {
    match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") | None => Some(80),
        Some(_) => None,
    }
}

/// A `Host` value split into its host and port; `None` when it is not
/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2). An empty value is valid (a
/// target without an authority).
fn split_host(v: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (name, port) = if v.first() == Some(&b'[') {
        let end = v.iter().position(|b| *b == b']')?;
        let inner = &v[1..end];
        let ok = !inner.is_empty()
            && inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'));
        if !ok {
            return None;
        }
        match &v[end + 1..] {
            [] => (&v[..=end], None),
            [b':', port @ ..] => (&v[..=end], Some(port)),
            _ => return None,
        }
    } else {
        match v.iter().rposition(|b| *b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        }
    };
    let reg_name = |b: &u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    };
    if name.first() != Some(&b'[') && !name.iter().all(reg_name) {
        return None;
    }
    let port = match port {
        None => None,
        // `host:` is allowed by the grammar: the default port.
        Some([]) => None,
        Some(p) if p.len() <= 5 && p.iter().all(u8::is_ascii_digit) => {
            let n = p.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            Some(u16::try_from(n).ok()?)
        }
        Some(_) => return None,
    };
    Some((name, port))
}

/// Whether every transfer coding named is `chunked` (hyper decodes chunked
/// and nothing else; a body in any other coding cannot be forwarded).
fn only_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .all(|t| t.eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests;

//! gRPC calls: the proxy's errors as gRPC errors, each call counted by
//! the `grpc-status` it ended with, and a server's gRPC failures held
//! against its endpoint ([`endpoint_failed`]).
//!
//! A gRPC client reads a call's outcome from `grpc-status`, not from the
//! HTTP status: an HTTP `504` reaches its application as `UNAVAILABLE`
//! ("Received http2 header with status: 504"), so a route timeout looks
//! like a dead server and the cause is lost. For a gRPC request (HTTP/2,
//! `content-type: application/grpc` or `application/grpc+…`) from a client
//! that is not a mesh peer, an error the proxy answers — its own, or a peer
//! proxy's relayed with its `remora-error` — goes out as a gRPC
//! "Trailers-Only" response: HTTP `200`, `grpc-status` by cause,
//! `grpc-message` with the HTTP status and the cause, no body. Between
//! proxies errors stay HTTP, so the caller's retries and outlier detection
//! read them as before; metrics, logs and tap keep the HTTP status.
//!
//! Every gRPC call is also counted by the `grpc-status` it ends with
//! (`remora_grpc_responses_total`): a gRPC error rides an HTTP `200`, so
//! `remora_responses_total` alone shows a failing gRPC service as healthy.
//! The status is read from the response head (Trailers-Only, or an error
//! the proxy made), else from the body's trailers when it ends ([`Tally`]).

use super::body::ResponseBody;
use super::error::REMORA_ERROR;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use prometheus::IntCounterVec;

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Whether `headers` are a gRPC request's: `application/grpc`, alone or
/// with a `+format` or parameters (not gRPC-Web's `application/grpc-web`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    const PREFIX: &[u8] = b"application/grpc";
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= PREFIX.len()
            && v[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
            && matches!(v.get(PREFIX.len()), None | Some(b'+' | b';'))
    })
}

/// The gRPC status code for a proxy error: by its cause where that says
/// more than the HTTP status, else by gRPC's own mapping of HTTP statuses
/// (`doc/http-grpc-status-mapping.md` in the gRPC repository).
pub fn code(status: StatusCode, cause: &str) -> u8 {
    const DEADLINE_EXCEEDED: u8 = 4;
    const PERMISSION_DENIED: u8 = 7;
    const RESOURCE_EXHAUSTED: u8 = 8;
    const UNIMPLEMENTED: u8 = 12;
    const INTERNAL: u8 = 13;
    const UNAVAILABLE: u8 = 14;
    const UNAUTHENTICATED: u8 = 16;
    match cause {
        "timeout" | "per-try-timeout" => DEADLINE_EXCEEDED,
        "rate-limited" | "body-too-large" | "headers-too-large" => RESOURCE_EXHAUSTED,
        "forbidden" => PERMISSION_DENIED,
        "no-route" | "not-implemented" => UNIMPLEMENTED,
        _ => match status.as_u16() {
            400 => INTERNAL,
            401 => UNAUTHENTICATED,
            403 => PERMISSION_DENIED,
            404 => UNIMPLEMENTED,
            429 | 502 | 503 | 504 => UNAVAILABLE,
            _ => 2, // UNKNOWN
        },
    }
}

/// Where a gRPC call is counted: the counters and their labels but the
/// status.
pub struct Tally {
    /// By grpc-status (`remora_grpc_responses_total`).
    counter: IntCounterVec,
    /// A server's failures in HTTP 2xx answers (the stats report's).
    failures: IntCounterVec,
    /// Listener, route, backend.
    labels: [String; 3],
    done: bool,
}

impl Tally {
    pub fn new(
        metrics: &crate::metrics::Metrics,
        listener: &str,
        route: &str,
        backend: &str,
    ) -> Self {
        Tally {
            counter: metrics.grpc_responses.clone(),
            failures: metrics.grpc_failures.clone(),
            labels: [listener.into(), route.into(), backend.into()],
            done: false,
        }
    }

    /// Counts the call with the `grpc-status` of `trailers` (`none` without
    /// one); only the first time.
    pub fn end(&mut self, trailers: &HeaderMap) {
        self.server_answered(trailers.get(&GRPC_STATUS));
    }

    /// Counts a call whose status the server sent (in an HTTP 2xx answer).
    fn server_answered(&mut self, status: Option<&HeaderValue>) {
        if !self.done && status.is_some_and(|v| failed(v.as_bytes())) {
            let [l, r, b] = &self.labels;
            self.failures.with_label_values(&[l, r, b]).inc();
        }
        self.count(status_label(status));
    }

    fn count(&mut self, status: &str) {
        if !std::mem::replace(&mut self.done, true) {
            let [l, r, b] = &self.labels;
            self.counter.with_label_values(&[l, r, b, status]).inc();
        }
    }
}

impl Drop for Tally {
    /// A call whose body ended (or was dropped) without trailers.
    fn drop(&mut self) {
        self.count("none");
    }
}

/// A `grpc-status` value as a label: the code, `none` when missing or not
/// a code.
fn status_label(v: Option<&HeaderValue>) -> &str {
    match v.and_then(|v| v.to_str().ok()) {
        Some(c) if !c.is_empty() && c.len() <= 2 && c.bytes().all(|b| b.is_ascii_digit()) => c,
        _ => "none",
    }
}

/// Counts the gRPC call `rsp` answers (`cause`: the proxy's error, empty
/// when it did not make one): now, when its head tells the status (an
/// error of the proxy's or a peer proxy's, Trailers-Only, an HTTP error
/// the client maps), else when its body ends.
pub fn count(tally: Tally, rsp: &mut Response<ResponseBody>, cause: &str) {
    let mut tally = tally;
    let status = rsp.status();
    let relayed = rsp
        .headers()
        .get(REMORA_ERROR)
        .filter(|_| !status.is_success());
    let code = if !cause.is_empty() {
        code(status, cause)
    } else if let Some(c) = relayed {
        code(status, c.to_str().unwrap_or(""))
    } else if let Some(v) = rsp
        .headers()
        .get(&GRPC_STATUS)
        .filter(|_| status.is_success())
    {
        return tally.server_answered(Some(v));
    } else if !status.is_success() {
        code(status, "")
    } else {
        // The status comes in the trailers (or never: `none`).
        let _ = rsp.body_mut().count_grpc(tally);
        return;
    };
    tally.count(&code.to_string());
}

/// Whether a gRPC answer's head tells of the endpoint failing, for outlier
/// detection as a 5xx does: a Trailers-Only `grpc-status` that gRPC maps to
/// a 5xx but `UNIMPLEMENTED` (`UNKNOWN`, `DEADLINE_EXCEEDED`, `INTERNAL`,
/// `UNAVAILABLE`, `DATA_LOSS`). A status in the trailers, after messages,
/// comes too late to count.
pub fn endpoint_failed(headers: &HeaderMap) -> bool {
    headers
        .get(&GRPC_STATUS)
        .is_some_and(|v| failed(v.as_bytes()))
}

/// A server's failure: a status gRPC maps to a 5xx, but `UNIMPLEMENTED`.
fn failed(status: &[u8]) -> bool {
    matches!(status, b"2" | b"4" | b"13" | b"14" | b"15")
}

/// The response for a gRPC client: an error of the proxy's (`cause`, else
/// a relayed `remora-error`) as a Trailers-Only response; anything else
/// as it is.
pub fn answer(rsp: Response<ResponseBody>, cause: &str) -> Response<ResponseBody> {
    let relayed;
    let cause = if !cause.is_empty() {
        cause
    } else {
        match rsp.headers().get(REMORA_ERROR) {
            Some(v) if !rsp.status().is_success() => {
                relayed = v.clone();
                relayed.to_str().unwrap_or("error")
            }
            _ => return rsp,
        }
    };
    let status = rsp.status();
    let mut out = Response::new(ResponseBody::empty());
    let h = out.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(
        &GRPC_STATUS,
        HeaderValue::from(u16::from(code(status, cause))),
    );
    // Printable ASCII without `%` needs no percent-encoding (gRPC's rule
    // for grpc-message); a cause outside that is not ours: left out.
    let reason = status.canonical_reason().unwrap_or("error");
    let plain = cause
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'%');
    let message = format!("{reason}: {}", if plain { cause } else { "error" });
    if let Ok(v) = HeaderValue::try_from(message) {
        h.insert(&GRPC_MESSAGE, v);
    }
    for name in [HeaderName::from_static(REMORA_ERROR), RETRY_AFTER] {
        if let Some(v) = rsp.headers().get(&name) {
            h.insert(name, v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::{error_response, ProxyError};
    use std::time::Duration;

    #[test]
    fn grpc_requests_are_known_by_content_type() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_grpc(&h)
        };
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
            "Application/GRPC",
        ] {
            assert!(with(yes), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpcx",
            "application/json",
        ] {
            assert!(!with(no), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn a_proxy_error_becomes_trailers_only_with_its_code() {
        let cases = [
            (ProxyError::Timeout(Duration::from_secs(1)), 4, "timeout"),
            (
                ProxyError::RateLimited {
                    retry_after: Duration::from_millis(1500),
                },
                8,
                "rate-limited",
            ),
            (ProxyError::NoRoute, 12, "no-route"),
            (ProxyError::Forbidden { client: "x".into() }, 7, "forbidden"),
            (
                ProxyError::NoEndpoints {
                    backend: "api".into(),
                },
                14,
                "no-endpoints",
            ),
            (ProxyError::Malformed("no host"), 13, "malformed-request"),
        ];
        for (e, want, cause) in cases {
            let rsp = answer(error_response(&e), e.cause());
            assert_eq!(rsp.status(), StatusCode::OK, "{cause}");
            let h = rsp.headers();
            assert_eq!(h["content-type"], "application/grpc");
            assert_eq!(h["grpc-status"], want.to_string().as_str(), "{cause}");
            assert_eq!(h[REMORA_ERROR], cause);
            let message = h["grpc-message"].to_str().unwrap();
            assert!(message.ends_with(&format!(": {cause}")), "{message}");
            assert!(http_body::Body::is_end_stream(rsp.body()), "{cause}");
        }
        let limited = answer(
            error_response(&ProxyError::RateLimited {
                retry_after: Duration::from_millis(1500),
            }),
            "rate-limited",
        );
        assert_eq!(limited.headers()["retry-after"], "2");
    }

    #[test]
    fn a_peer_proxys_error_is_converted_and_an_upstream_answer_is_not() {
        let mut peer = error_response(&ProxyError::NoRoute);
        *peer.status_mut() = StatusCode::BAD_GATEWAY;
        peer.headers_mut()
            .insert(REMORA_ERROR, HeaderValue::from_static("connect-failed"));
        let rsp = answer(peer, "");
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["grpc-status"], "14");
        assert_eq!(rsp.headers()["grpc-message"], "Bad Gateway: connect-failed");

        let mut upstream = Response::new(ResponseBody::full("x"));
        upstream
            .headers_mut()
            .insert(GRPC_STATUS.clone(), HeaderValue::from_static("5"));
        let rsp = answer(upstream, "");
        assert_eq!(rsp.headers()["grpc-status"], "5");
        assert!(rsp.headers().get(&GRPC_MESSAGE).is_none());
    }

    #[test]
    fn a_call_is_counted_once_by_the_status_it_ends_with() {
        let metrics = crate::metrics::Metrics::new();
        let get = |code: &str| {
            metrics
                .grpc_responses
                .with_label_values(&["l", "r", "b", code])
                .get()
        };
        let failures = || {
            metrics
                .grpc_failures
                .with_label_values(&["l", "r", "b"])
                .get()
        };
        let tally = || Tally::new(&metrics, "l", "r", "b");
        // In the trailers, once however often they are seen.
        let mut t = tally();
        let mut trailers = HeaderMap::new();
        trailers.insert(&GRPC_STATUS, HeaderValue::from_static("0"));
        t.end(&trailers);
        t.end(&trailers);
        drop(t);
        assert_eq!(get("0"), 1);
        // Ended without: none.
        drop(tally());
        assert_eq!(get("none"), 1);
        // Told by the head: an error of the proxy's, a Trailers-Only answer.
        let mut rsp = error_response(&ProxyError::Timeout(Duration::from_secs(1)));
        count(tally(), &mut rsp, "timeout");
        assert_eq!(get("4"), 1);
        let mut rsp = Response::new(ResponseBody::empty());
        rsp.headers_mut()
            .insert(&GRPC_STATUS, HeaderValue::from_static("5"));
        count(tally(), &mut rsp, "");
        assert_eq!(get("5"), 1);
        // A 200 the proxy made without a status (not a gRPC server's): none.
        let mut rsp = Response::new(ResponseBody::full("x"));
        count(tally(), &mut rsp, "");
        assert_eq!(get("none"), 2);
        // Only a server's failure in a 2xx answer is one for the stats
        // report (the proxy's own errors are 5xx there already).
        assert_eq!(failures(), 0);
        let mut t = tally();
        trailers.insert(&GRPC_STATUS, HeaderValue::from_static("14"));
        t.end(&trailers);
        drop(t);
        let mut rsp = Response::new(ResponseBody::empty());
        rsp.headers_mut()
            .insert(&GRPC_STATUS, HeaderValue::from_static("13"));
        count(tally(), &mut rsp, "");
        assert_eq!((get("14"), get("13"), failures()), (1, 1, 2));
    }
}

//! Requests the edge middleware answers itself (tower-http's CORS answers
//! every `OPTIONS`; request decompression refuses a coding it does not take
//! with 415): watched on their way through, so the observe layer can count
//! and log them like the requests that reach it, and give them a server
//! span while tracing is on ([`super::Loads::answered`]).

use super::{encoded, logged_headers, route_index};
use crate::snapshot::{ListenerTable, Snapshot};
use crate::telemetry::otel::TraceHead;
use http::{Method, Request};
use hyper::body::Incoming;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

/// A request the edge middleware answered without the inner service.
pub struct Answered<'a> {
    pub snapshot: &'a Snapshot,
    pub index: usize,
    pub head: &'a EdgeHead,
    pub status: http::StatusCode,
    /// The metrics' `error` label: empty for a preflight.
    pub cause: &'static str,
    pub started: tokio::time::Instant,
    /// For a tap, when one is open.
    pub seen: Option<crate::tap::Seen>,
}

/// What the access log and the metrics say of a request the edge
/// middleware may answer, taken as it reaches CORS (after the request id
/// and the sensitive marks).
pub struct EdgeHead {
    pub method: Method,
    pub uri: http::Uri,
    pub version: http::Version,
    /// The route it would go to (index in the listener's routes).
    pub route: Option<u32>,
    /// `edge.log_headers`, when the listener logs access.
    pub headers: String,
    /// For its server span, while tracing is on.
    pub trace: Option<TraceHead>,
}

/// Watches a request that the edge middleware may answer itself: what it
/// looked like, and whether it went further down.
#[derive(Default)]
pub(super) struct Watch {
    pub(super) head: OnceLock<EdgeHead>,
    pub(super) reached: AtomicBool,
}

/// Whether the edge middleware may answer `req` itself: an `OPTIONS`
/// request where CORS is on (tower-http answers every one), a body with a
/// `Content-Encoding` where decompression is.
pub(super) fn answerable(listener: &ListenerTable, req: &Request<Incoming>) -> bool {
    let Some(edge) = &listener.edge else {
        return false;
    };
    let cors = edge.cors.is_some() || edge.route_overrides;
    (req.method() == Method::OPTIONS && cors) || (edge.decompress.is_some() && encoded(req))
}

impl EdgeHead {
    pub(super) fn of(snapshot: &Snapshot, index: usize, req: &Request<Incoming>) -> Self {
        let listener = &snapshot.listeners[index];
        let headers = match &listener.edge {
            Some(e) if listener.access_log => logged_headers(&e.log_headers, req.headers()),
            _ => String::new(),
        };
        EdgeHead {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            route: route_index(listener, req),
            headers,
            trace: snapshot.tracer.as_ref().map(|_| TraceHead::of(req)),
        }
    }
}

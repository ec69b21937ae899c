//! A listener's edge middleware compiled from its config (`edge:` and the
//! routes' overrides), and what the edge layer asks of it.

use super::compress::Compress;
use super::{cors, encoded};
use http::{HeaderName, Request};
use remora_api::edge::{Algorithm, ListenerEdge, RouteEdge as ApiRouteEdge};
use std::sync::Arc;
use tower_http::cors::CorsLayer;

/// A listener's edge middleware, compiled.
pub struct EdgeTable {
    pub(super) compress: Compress,
    /// Codings decompressed: gzip, br, zstd; `None` leaves bodies as sent.
    pub(super) decompress: Option<[bool; 3]>,
    pub(super) cors: Option<CorsLayer>,
    pub(super) request_id: Option<RequestId>,
    pub(super) sensitive: Arc<[HeaderName]>,
    /// Shown in the access log.
    pub log_headers: Box<[HeaderName]>,
    /// Some route overrides compression or CORS: find the request's route.
    pub(super) route_overrides: bool,
}

pub(super) struct RequestId {
    pub(super) header: HeaderName,
    pub(super) generate: bool,
    pub(super) echo: bool,
}

/// A route's overrides, compiled; `None` keeps the listener's.
pub struct RouteEdge {
    pub(super) compress: Option<Compress>,
    pub(super) cors: Option<Option<CorsLayer>>,
}

impl EdgeTable {
    /// `None` for a listener without `edge:` whose routes override nothing.
    pub fn for_listener(l: &remora_api::Listener) -> Option<Self> {
        let overrides = l.routes.iter().any(|r| r.edge.is_some());
        match &l.edge {
            Some(e) => Some(EdgeTable::compile(e, overrides)),
            None if overrides => Some(EdgeTable::compile(&ListenerEdge::default(), true)),
            None => None,
        }
    }

    fn compile(e: &ListenerEdge, route_overrides: bool) -> Self {
        let name = |h: &String| HeaderName::from_bytes(h.as_bytes()).ok();
        let sensitive = remora_api::edge::defaults::SENSITIVE_HEADERS
            .iter()
            .map(|h| HeaderName::from_static(h))
            .chain(e.sensitive_headers.iter().filter_map(name))
            .collect();
        EdgeTable {
            compress: e
                .compression
                .as_ref()
                .map_or_else(Compress::off, Compress::compile),
            decompress: e
                .decompression
                .as_ref()
                .map(|d| Algorithm::ALL.map(|a| d.algorithms.contains(&a))),
            cors: e.cors.as_ref().and_then(cors::compile),
            request_id: e.request_id.as_ref().and_then(|r| {
                Some(RequestId {
                    header: name(&r.header)?,
                    generate: r.generate,
                    echo: r.echo,
                })
            }),
            sensitive,
            log_headers: e.log_headers.iter().filter_map(name).collect(),
            route_overrides,
        }
    }
}

impl EdgeTable {
    /// Only the sensitive marks apply to `req`: no CORS (nor a route that
    /// may set it), no request id, no compression, and no body to decode.
    pub(super) fn bare<B>(&self, req: &Request<B>) -> bool {
        self.cors.is_none()
            && !self.route_overrides
            && self.request_id.is_none()
            && !self.compress.is_on()
            && !(self.decompress.is_some() && encoded(req))
    }

    /// What `SetSensitiveRequestHeaders` does: the listener's sensitive
    /// headers marked, so no log shows them and HTTP/2 never indexes them.
    pub(super) fn mark_sensitive(&self, headers: &mut http::HeaderMap) {
        for name in self.sensitive.iter() {
            if let http::header::Entry::Occupied(mut e) = headers.entry(name) {
                for value in e.iter_mut() {
                    value.set_sensitive(true);
                }
            }
        }
    }
}

impl RouteEdge {
    pub fn compile(e: &ApiRouteEdge) -> Self {
        RouteEdge {
            compress: e.compression.as_ref().map(Compress::compile),
            cors: e.cors.as_ref().map(cors::compile),
        }
    }
}

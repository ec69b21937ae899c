//! Routing: the route a request matches (by host, path, method and
//! headers), else, on a transparent listener, the route for its
//! connection's original destination (`match.destinations`) or that
//! destination itself, else `404`.

use super::Step;
use crate::http::call::{Answer, Call};
use crate::http::error::ProxyError;
use http::{header, Request};

#[derive(Clone, Copy, Debug, Default)]
pub struct Route;

impl<B> Step<B> for Route {
    fn step(&self, call: &mut Call<B>) -> Option<Answer> {
        let req = &call.req;
        let host = request_host(req).unwrap_or("");
        let view = &mut call.cx.view;
        let router = &view.listener().router;
        let found = router.find_index(host, req.method(), req.uri().path(), req.headers());
        let found = match (found, &call.cx.down.passthrough) {
            // Dialed at another port of its Service's ClusterIP: not this
            // route's, whatever the host says.
            (Some(i), Some(p)) if router.routes()[i as usize].names_another_port(p.addr()) => None,
            (found, _) => found,
        };
        match (found, &call.cx.down.passthrough) {
            (Some(i), _) => view.set_route(i),
            (None, Some(p)) => {
                // A host no route names, dialed at an address a route
                // stands for (a ClusterIP, called by a short name or by
                // its IP): that route; else the original destination.
                let path = req.uri().path();
                match router.find_index_at(p.addr(), req.method(), path, req.headers()) {
                    Some(i) => view.set_route(i),
                    None => {
                        let backend = p.backend(view.listener()).clone();
                        view.set_passthrough(backend);
                    }
                }
            }
            (None, None) => return Some(Err(ProxyError::NoRoute)),
        }
        None
    }
}

/// The host a request is for (without port), from its URI or `Host` header.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    if let Some(a) = req.uri().authority() {
        return Some(a.host());
    }
    let h = req.headers().get(header::HOST)?.to_str().ok()?;
    let a: &str = h;
    // Strip the port, minding IPv6 literals.
    Some(match a.rfind(':') {
        Some(i) if !a[i..].contains(']') => &a[..i],
        _ => a,
    })
}

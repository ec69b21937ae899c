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
        let passthrough = &call.cx.down.passthrough;
        let router = &view.listener().router;
        let found = router
            .find_index(host, req.method(), req.uri().path(), req.headers())
            // Dialed at another port of its Service's ClusterIP: not this
            // route's, whatever the host says.
            .filter(|&i| {
                let route = &router.routes()[i as usize];
                !passthrough
                    .as_ref()
                    .is_some_and(|p| route.names_another_port(p.addr()))
            });
        match (found, passthrough) {
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
    let a = req.headers().get(header::HOST)?.to_str().ok()?;
    // Strip the port, minding IPv6 literals. On bytes: `str::rfind` with a
    // char costs ~160 instructions on a short host (perf, issue 12).
    let b = a.as_bytes();
    Some(match b.iter().rposition(|&c| c == b':') {
        Some(i) if !b[i..].contains(&b']') => &a[..i],
        _ => a,
    })
}

#[cfg(test)]
mod tests {
    use super::request_host;
    use http::Request;

    #[test]
    fn the_host_is_without_its_port_minding_ipv6_literals() {
        let host = |h: &str| {
            let req = Request::builder().header("host", h).body(()).unwrap();
            request_host(&req).map(str::to_string)
        };
        assert_eq!(
            host("api.example.com:8080").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(host("api.example.com").as_deref(), Some("api.example.com"));
        assert_eq!(host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(host("10.96.0.12:80").as_deref(), Some("10.96.0.12"));
        let absolute = Request::builder()
            .uri("http://web.shop:8080/x")
            .header("host", "other")
            .body(())
            .unwrap();
        assert_eq!(request_host(&absolute), Some("web.shop"));
    }
}

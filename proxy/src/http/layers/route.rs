//! Routing: the route a request matches (by host, path, method and
//! headers), else, on a transparent listener, the route for its
//! connection's original destination (`match.destinations`) or that
//! destination itself, else `404`.

use super::Step;
use crate::http::call::{Answer, Call};
use crate::http::error::ProxyError;
use crate::http::router::Port;
use http::{header, Request};

#[derive(Clone, Copy, Debug, Default)]
pub struct Route;

impl<B> Step<B> for Route {
    fn step(&self, call: &mut Call<B>) -> Option<Answer> {
        let req = &call.req;
        let (host, port) = request_authority(req).unwrap_or_default();
        let view = &mut call.cx.view;
        let passthrough = &call.cx.down.passthrough;
        let router = &view.listener().router;
        let found = router
            .find_index(host, port, req.method(), req.uri().path(), req.headers())
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
    request_authority(req).map(|(host, _)| host)
}

/// The host a request is for and the port it names, from its URI or `Host`
/// header.
pub fn request_authority<B>(req: &Request<B>) -> Option<(&str, Port<'_>)> {
    if let Some(a) = req.uri().authority() {
        return Some(split_authority(a.as_str()));
    }
    let a = req.headers().get(header::HOST)?.to_str().ok()?;
    Some(split_authority(a))
}

/// `host[:port]` split, minding IPv6 literals (`[::1]:80`). The port is not
/// parsed here: see [`Port`].
pub fn split_authority(a: &str) -> (&str, Port<'_>) {
    // On bytes: `str::rfind` with a char costs ~160 instructions on a short
    // host (perf, issue 12). A colon is the port's unless the host is an
    // IPv6 literal and the colon is not right after its `]`.
    let b = a.as_bytes();
    match b.iter().rposition(|&c| c == b':') {
        Some(i) if b[0] != b'[' || b[i - 1] == b']' => (&a[..i], Port::named(&a[i + 1..])),
        _ => (a, Port::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::{request_authority, request_host, split_authority};
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

    #[test]
    fn the_port_is_the_one_named_if_it_is_a_port() {
        let at = |a: &str| {
            let (host, port) = split_authority(a);
            (host.to_string(), port.number(80))
        };
        assert_eq!(at("api.shop:9090"), ("api.shop".into(), Some(9090)));
        assert_eq!(at("api.shop"), ("api.shop".into(), Some(80)));
        assert_eq!(at("[::1]:8080"), ("[::1]".into(), Some(8080)));
        assert_eq!(at("[::1]"), ("[::1]".into(), Some(80)));
        assert_eq!(at("api.shop:"), ("api.shop".into(), Some(80)));
        for bad in [
            "api.shop:65536",
            "api.shop:123456",
            "api.shop:8x",
            "api.shop:0",
        ] {
            assert_eq!(at(bad), ("api.shop".into(), None), "{bad}");
        }
        let absolute = Request::builder()
            .uri("http://web.shop:8080/x")
            .header("host", "other:9090")
            .body(())
            .unwrap();
        let (host, port) = request_authority(&absolute).unwrap();
        assert_eq!((host, port.number(80)), ("web.shop", Some(8080)));
    }
}

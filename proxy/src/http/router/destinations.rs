//! Routes by the address a client dialed (`match.destinations`), for
//! transparent listeners: a Kubernetes Service's ClusterIP stands for its
//! routes when the host names none (a short name, the IP itself), for
//! opaque TCP too; and a route is not for another port of its addresses.

use super::{Action, Matcher, PathMatcher, Route, RouteMetrics, Router, Split};
use http::{HeaderMap, Method};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Where opaque connections to an address of `match.destinations` go: a
/// route's split ([`Router::tcp_destinations`]), drawn from by weight.
pub type TcpDestinations = HashMap<SocketAddr, TcpDestination>;

/// The route whose split takes opaque connections to one address.
pub struct TcpDestination {
    /// Its index in [`Router::routes`] (for `/explain`).
    pub route: u32,
    pub split: Split,
}

impl Router {
    /// The route for a request whose host matched none, by the address its
    /// client dialed (a transparent listener's original destination): the
    /// first route with that address in `match.destinations` whose path,
    /// methods and headers match.
    pub fn find_index_at(
        &self,
        destination: SocketAddr,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<u32> {
        let candidates = self.destinations.get(&destination)?;
        candidates.iter().copied().find(|i| {
            self.routes[*i as usize]
                .matcher
                .matches(method, path, headers)
        })
    }

    /// For opaque TCP on a transparent listener, per address of some
    /// route's `match.destinations`: the split of the first route naming it
    /// that takes any request (no path, method or header condition) and
    /// forwards. An address whose routes all match
    /// on HTTP details has none: its connections go to it directly.
    pub fn tcp_destinations(&self) -> TcpDestinations {
        let mut out = TcpDestinations::new();
        for (dst, list) in &self.destinations {
            let any_request = list.iter().copied().find(|i| {
                let r = &self.routes[*i as usize];
                r.matcher.takes_any_request() && matches!(r.action, Action::Forward(_))
            });
            if let Some((
                route,
                Route {
                    action: Action::Forward(split),
                    ..
                },
            )) = any_request.map(|i| (i, &self.routes[i as usize]))
            {
                // The same backends and weights; no route metrics (TCP
                // connections are counted by the TCP metrics).
                let backends = split
                    .backends
                    .iter()
                    .map(|(b, w, _)| (b.clone(), *w, RouteMetrics::default()))
                    .collect();
                let total = split.total;
                let split = Split { backends, total };
                out.insert(*dst, TcpDestination { route, split });
            }
        }
        out
    }
}

impl Route {
    /// Whether a request that matched this route by host was dialed at
    /// another port of an IP in its `match.destinations` (another port of
    /// its Service's ClusterIP): it is for what listens there, not for
    /// this route.
    pub fn names_another_port(&self, dialed: SocketAddr) -> bool {
        !self.destinations.is_empty()
            && !self.destinations.contains(&dialed)
            && self.destinations.iter().any(|d| d.ip() == dialed.ip())
    }
}

impl Matcher {
    /// No path, method or header condition.
    fn takes_any_request(&self) -> bool {
        matches!(self.path, PathMatcher::Any) && self.methods.is_empty() && self.headers.is_empty()
    }
}

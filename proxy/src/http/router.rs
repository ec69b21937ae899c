//! Route selection: pure, table-tested, no I/O.
//!
//! Order (documented in `docs/config.md`): first the host. Routes that name
//! the exact host win; else those with the longest matching `*.suffix`; else
//! routes without `hosts`. A host or suffix named with the request's port
//! (`api.example.com:9090`) goes before the same one named without a port.
//! Routes without `hosts` also join every host's list.
//! Then, within that list, routes are tried in file order and the first whose
//! path, methods and headers all match wins. Nothing matching is a 404.

use super::headers::HeaderOps;
use crate::balance::Backend;
use crate::policy::fault::FaultInjector;
use crate::policy::ratelimit::RateLimiter;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use regex::Regex;
use remora_api as api;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub struct Router {
    routes: Vec<Route>,
    exact: HashMap<Box<str>, Named>,
    /// Keyed by the suffix with its leading dot: `.example.com`.
    suffix: HashMap<Box<str>, Named>,
    any: Vec<u32>,
    /// The port of a request that names none: 443 on a listener that
    /// terminates TLS, else 80.
    default_port: u16,
    /// Routes by `match.destinations`, in order: for a request whose host
    /// matches none, by the address its client dialed.
    destinations: HashMap<SocketAddr, Vec<u32>>,
}

/// The routes naming one host (or one `*.suffix`), each list with the
/// routes without `hosts` merged in, in file order.
#[derive(Default)]
struct Named {
    /// Those naming it without a port; `None`: none do.
    any_port: Option<Vec<u32>>,
    /// Those naming it at a port, by port.
    ports: Vec<(u16, Vec<u32>)>,
}

impl Named {
    /// The routes for this host at `port`: those naming the port, else
    /// those naming no port; `None` when neither.
    fn at(&self, port: u16) -> Option<&[u32]> {
        match self.ports.iter().find(|(p, _)| *p == port) {
            Some((_, list)) => Some(list),
            None => self.any_port.as_deref(),
        }
    }

    fn lists(&mut self) -> impl Iterator<Item = &mut Vec<u32>> {
        self.any_port
            .iter_mut()
            .chain(self.ports.iter_mut().map(|(_, l)| l))
    }
}

pub struct Route {
    pub name: Arc<str>,
    matcher: Matcher,
    pub action: Action,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub rewrite_host: Option<HeaderValue>,
    /// (matched prefix, replacement).
    pub rewrite_prefix: Option<(Box<str>, Box<str>)>,
    pub timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub retry: Option<api::RetryPolicy>,
    /// The limit as configured, and its buckets.
    pub rate_limit: Option<(api::RateLimit, Arc<RateLimiter>)>,
    pub fault: Option<FaultInjector>,
    /// On an inbound listener: who may use this route, instead of the
    /// listener's policy.
    pub authz: Option<crate::policy::authz::Authz>,
    /// Overrides of the listener's edge compression and CORS.
    pub edge: Option<super::edge::RouteEdge>,
    /// `match.destinations`.
    destinations: Box<[SocketAddr]>,
}

pub enum Action {
    Forward(Split),
    Direct {
        status: StatusCode,
        body: Bytes,
        content_type: HeaderValue,
    },
    Redirect(api::Redirect),
}

impl Route {
    /// What a request that matches no route of a transparent listener goes
    /// through on its way to its original destination: no timeout, no
    /// retries, no header operations, no rewrites.
    pub fn passthrough() -> Route {
        Route {
            name: "".into(),
            matcher: Matcher {
                path: PathMatcher::Any,
                methods: Vec::new(),
                headers: Vec::new(),
            },
            action: Action::Forward(Split {
                backends: Vec::new(),
                total: 0,
            }),
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            rewrite_host: None,
            rewrite_prefix: None,
            timeout: None,
            idle_timeout: None,
            retry: None,
            rate_limit: None,
            fault: None,
            authz: None,
            edge: None,
            destinations: Box::default(),
        }
    }
}

/// Weighted backends of a route (a traffic split), each with the metric
/// handles of its (listener, route, backend).
pub struct Split {
    backends: Vec<(Arc<Backend>, u32, RouteMetrics)>,
    total: u32,
}

impl Split {
    pub fn pick(&self, rng: &mut fastrand::Rng) -> &Arc<Backend> {
        self.entry_at(self.pick_index(rng)).0
    }

    /// The index of a backend picked by weight (see [`Split::entry_at`]).
    pub fn pick_index(&self, rng: &mut fastrand::Rng) -> usize {
        if self.backends.len() == 1 {
            return 0;
        }
        let mut n = rng.u32(0..self.total);
        for (i, e) in self.backends.iter().enumerate() {
            if n < e.1 {
                return i;
            }
            n -= e.1;
        }
        self.backends.len() - 1
    }

    /// The backend at `index`, with its metric handles for this route.
    pub fn entry_at(&self, index: usize) -> (&Arc<Backend>, &RouteMetrics) {
        let (b, _, m) = &self.backends[index];
        (b, m)
    }

    /// The split has no backend (the passthrough route's).
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.backends.iter().map(|(b, _, _)| b)
    }

    /// Each backend with its weight.
    pub fn weights(&self) -> impl Iterator<Item = (&Arc<Backend>, u32)> {
        self.backends.iter().map(|(b, w, _)| (b, *w))
    }
}

/// The metric series a request through one route to one backend ends in,
/// looked up once (on the first such request after a swap) and kept: the
/// request path then counts without hashing labels or taking the metric
/// vector's lock. Only the common outcome is kept (a 200 without a proxy
/// error); others are looked up each time.
#[derive(Default)]
pub struct RouteMetrics {
    pub ok: OnceLock<prometheus::IntCounter>,
    pub duration: OnceLock<prometheus::Histogram>,
}

struct Matcher {
    path: PathMatcher,
    methods: Vec<Method>,
    headers: Vec<(http::HeaderName, ValueMatcher)>,
}

enum PathMatcher {
    Any,
    Exact(Box<str>),
    /// Without a trailing slash, except for the root `/`.
    Prefix(Box<str>),
    Regex(Regex),
}

enum ValueMatcher {
    Exact(HeaderValue),
    Regex(Regex),
    Present(bool),
}

impl PathMatcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Any => true,
            PathMatcher::Exact(p) => path == &**p,
            PathMatcher::Prefix(p) => prefix_match(p, path),
            PathMatcher::Regex(re) => re.is_match(path),
        }
    }
}

/// Segment-aware: `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`.
fn prefix_match(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl Matcher {
    fn matches(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        if !self.path.matches(path) {
            return false;
        }
        self.headers.iter().all(|(name, m)| {
            let mut values = headers.get_all(name).iter();
            match m {
                ValueMatcher::Present(want) => values.next().is_some() == *want,
                ValueMatcher::Exact(v) => values.any(|x| x == v),
                ValueMatcher::Regex(re) => values.any(|x| x.to_str().is_ok_and(|s| re.is_match(s))),
            }
        })
    }
}

impl Router {
    /// Compiles validated routes; `backend` resolves a backend by name.
    pub fn compile(
        routes: &[api::Route],
        backend: impl Fn(&str) -> Option<Arc<Backend>>,
    ) -> Result<Router, String> {
        Self::compile_after(routes, backend, None)
    }

    /// Like [`Router::compile`]; a route of `prev` with the same name and
    /// the same rate limit lends its limiter, so buckets survive a swap.
    pub fn compile_after(
        routes: &[api::Route],
        backend: impl Fn(&str) -> Option<Arc<Backend>>,
        prev: Option<&Router>,
    ) -> Result<Router, String> {
        let mut router = Router {
            routes: Vec::with_capacity(routes.len()),
            exact: HashMap::new(),
            suffix: HashMap::new(),
            any: Vec::new(),
            default_port: 80,
            destinations: HashMap::new(),
        };
        for (i, r) in routes.iter().enumerate() {
            let mut route = compile_route(r, &backend)?;
            if let Some(rl) = &r.rate_limit {
                let kept = prev
                    .and_then(|p| p.routes.iter().find(|pr| *pr.name == *r.name))
                    .and_then(|pr| pr.rate_limit.as_ref())
                    .filter(|(cfg, _)| cfg == rl)
                    .map(|(_, l)| l.clone());
                let limiter = kept.unwrap_or_else(|| Arc::new(RateLimiter::new(rl)));
                route.rate_limit = Some((rl.clone(), limiter));
            }
            router.routes.push(route);
            let i = i as u32;
            for d in &r.matches.destinations {
                router.destinations.entry(*d).or_default().push(i);
            }
            let hosts = &r.matches.hosts;
            if hosts.is_empty() || hosts.iter().any(|h| h == "*") {
                router.any.push(i);
            }
            for h in hosts {
                let (h, port) = api::route_host(h).map_err(|e| format!("host `{h}`: {e}"))?;
                let named = if let Some(s) = h.strip_prefix('*') {
                    if s.is_empty() {
                        continue;
                    }
                    router.suffix.entry(s.into()).or_default()
                } else {
                    router.exact.entry(h.into()).or_default()
                };
                let list = match port {
                    None => named.any_port.get_or_insert_default(),
                    Some(p) => match named.ports.iter().position(|(q, _)| *q == p) {
                        Some(k) => &mut named.ports[k].1,
                        None => {
                            named.ports.push((p, Vec::new()));
                            &mut named.ports.last_mut().unwrap().1
                        }
                    },
                };
                list.push(i);
            }
        }
        // Host-less routes apply to every host, in file order.
        let any = router.any.clone();
        let named = router.exact.values_mut().chain(router.suffix.values_mut());
        for list in named.flat_map(Named::lists) {
            list.extend(any.iter().copied());
            list.sort_unstable();
            list.dedup();
        }
        Ok(router)
    }

    /// Sets the port of requests that name none (80 unless set).
    pub fn set_default_port(&mut self, port: u16) {
        self.default_port = port;
    }

    /// The route for a request; `host` is without port, any case; `port` is
    /// the one the request names, if any.
    pub fn find(
        &self,
        host: &str,
        port: Option<u16>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<&Route> {
        let i = self.find_index(host, port, method, path, headers)?;
        Some(&self.routes[i as usize])
    }

    /// Like [`Router::find`]: the route's index in [`Router::routes`].
    pub fn find_index(
        &self,
        host: &str,
        port: Option<u16>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<u32> {
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let candidates = self.candidates(host, port.unwrap_or(self.default_port));
        candidates.iter().copied().find(|i| {
            self.routes[*i as usize]
                .matcher
                .matches(method, path, headers)
        })
    }

    fn candidates(&self, host: &str, port: u16) -> &[u32] {
        if let Some(list) = self.exact.get(host).and_then(|n| n.at(port)) {
            return list;
        }
        if !self.suffix.is_empty() {
            // Longest suffix first: cut at each dot from the left.
            for (i, _) in host.match_indices('.') {
                if let Some(list) = self.suffix.get(&host[i..]).and_then(|n| n.at(port)) {
                    return list;
                }
            }
        }
        &self.any
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

fn compile_route(
    r: &api::Route,
    backend: &impl Fn(&str) -> Option<Arc<Backend>>,
) -> Result<Route, String> {
    let m = &r.matches;
    let path = match &m.path {
        None => PathMatcher::Any,
        Some(api::PathMatch::Exact(p)) => PathMatcher::Exact(p.as_str().into()),
        Some(api::PathMatch::Prefix(p)) => {
            let p = if p.len() > 1 {
                p.trim_end_matches('/')
            } else {
                p
            };
            PathMatcher::Prefix(p.into())
        }
        Some(api::PathMatch::Regex(re)) => PathMatcher::Regex(anchored(re)?),
    };
    let methods = m
        .methods
        .iter()
        .map(|x| Method::from_bytes(x.as_bytes()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut headers = Vec::new();
    for h in &m.headers {
        let name = http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| e.to_string())?;
        let vm = if let Some(v) = &h.exact {
            ValueMatcher::Exact(HeaderValue::from_str(v).map_err(|e| e.to_string())?)
        } else if let Some(re) = &h.regex {
            ValueMatcher::Regex(anchored(re)?)
        } else {
            ValueMatcher::Present(h.present.unwrap_or(true))
        };
        headers.push((name, vm));
    }
    let action = if let Some(d) = &r.direct_response {
        Action::Direct {
            status: StatusCode::from_u16(d.status).map_err(|e| e.to_string())?,
            body: Bytes::from(d.body.clone()),
            content_type: HeaderValue::from_str(&d.content_type).map_err(|e| e.to_string())?,
        }
    } else if let Some(rd) = &r.redirect {
        Action::Redirect(rd.clone())
    } else {
        let mut backends = Vec::new();
        for wb in &r.backends {
            let b =
                backend(&wb.name).ok_or_else(|| format!("no backend is named `{}`", wb.name))?;
            backends.push((b, wb.weight, RouteMetrics::default()));
        }
        let total = backends.iter().map(|(_, w, _)| *w).sum();
        Action::Forward(Split { backends, total })
    };
    let rewrite_prefix = match (
        &m.path,
        r.rewrite.as_ref().and_then(|rw| rw.path_prefix.as_ref()),
    ) {
        (Some(api::PathMatch::Prefix(p)), Some(to)) => {
            let from = if p.len() > 1 {
                p.trim_end_matches('/')
            } else {
                p
            };
            Some((from.into(), to.as_str().into()))
        }
        _ => None,
    };
    Ok(Route {
        name: r.name.as_str().into(),
        matcher: Matcher {
            path,
            methods,
            headers,
        },
        action,
        request_headers: HeaderOps::compile(&r.request_headers),
        response_headers: HeaderOps::compile(&r.response_headers),
        rewrite_host: r
            .rewrite
            .as_ref()
            .and_then(|rw| rw.host.as_ref())
            .and_then(|h| HeaderValue::from_str(h).ok()),
        rewrite_prefix,
        timeout: r.timeout.map(|t| t.get()),
        idle_timeout: r.idle_timeout.map(|t| t.get()),
        retry: r.retry.clone(),
        rate_limit: None,
        fault: r.fault.as_ref().map(FaultInjector::new),
        authz: r
            .authorization
            .as_ref()
            .map(crate::policy::authz::Authz::new),
        edge: r.edge.as_ref().map(super::edge::RouteEdge::compile),
        destinations: r.matches.destinations.clone().into(),
    })
}

fn anchored(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| e.to_string())
}

/// Replaces `from` at the start of `path` with `to`, keeping the query.
pub fn rewrite_prefix(path_and_query: &str, from: &str, to: &str) -> String {
    let rest = if from == "/" {
        path_and_query
    } else {
        path_and_query.strip_prefix(from).unwrap_or(path_and_query)
    };
    let mut out = String::with_capacity(to.len() + rest.len() + 1);
    out.push_str(to);
    if out.ends_with('/') && rest.starts_with('/') {
        out.push_str(&rest[1..]);
    } else if !out.ends_with('/') && !rest.is_empty() && !rest.starts_with(['/', '?']) {
        out.push('/');
        out.push_str(rest);
    } else {
        out.push_str(rest);
    }
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

mod destinations;
mod explain;

pub use destinations::{TcpDestination, TcpDestinations};
pub use explain::{RouteStep, RouteTrace};

#[cfg(test)]
mod tests;

//! Route selection: pure, table-tested, no I/O.
//!
//! Order (documented in `docs/config.md`): first the host and port pick a
//! candidate list (`router/hosts.rs`). Then, within that list, routes are tried in
//! file order and the first whose path, methods and headers all match wins.
//! Nothing matching is a 404.

use super::headers::HeaderOps;
use crate::balance::Backend;
use crate::policy::fault::FaultInjector;
use crate::policy::ratelimit::RateLimiter;
use bytes::Bytes;
use hosts::Hosts;
pub use hosts::Port;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use regex::Regex;
use remora_api as api;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub struct Router {
    routes: Vec<Route>,
    /// The candidate routes by host and port.
    hosts: Hosts,
    /// Routes by `match.destinations`, in order: for a request whose host
    /// matches none, by the address its client dialed.
    destinations: HashMap<SocketAddr, Vec<u32>>,
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
            hosts: Hosts::default(),
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
            router.hosts.add(i, &r.matches.hosts)?;
        }
        router.hosts.finish();
        Ok(router)
    }

    /// Sets the port of requests that name none (80 unless set).
    pub fn set_default_port(&mut self, port: u16) {
        self.hosts.default_port = port;
    }

    /// The route for a request; `host` is without port, any case; `port` is
    /// the one the request names.
    pub fn find(
        &self,
        host: &str,
        port: Port<'_>,
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
        port: Port<'_>,
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
        let candidates = self.hosts.candidates(host, port);
        candidates.iter().copied().find(|i| {
            self.routes[*i as usize]
                .matcher
                .matches(method, path, headers)
        })
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
mod hosts;

pub use destinations::{TcpDestination, TcpDestinations};
pub use explain::{RouteStep, RouteTrace};

#[cfg(test)]
mod tests;

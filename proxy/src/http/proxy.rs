//! One request through the proxy: route, then answer directly, redirect, or
//! forward to an endpoint of a backend chosen by the route's split.

use super::body::{BodyTooLarge, Prepared, RequestBody, ResponseBody};
use super::client::Proto;
use super::error::ProxyError;
use super::headers::{add_forwarded, is_upgrade, remove_hop_by_hop};
use super::message::{self, MaxForwards};
use super::passthrough::Passthrough;
use super::retry;
use super::router::{rewrite_prefix, Action, Route, RouteMetrics};
use crate::balance::{now_ns, Backend, InFlight, Overflow, Tried};
use crate::snapshot::ListenerTable;
use crate::telemetry::otel::Traced;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// Where a client connection came from.
#[derive(Clone, Debug)]
pub struct Downstream {
    pub client: SocketAddr,
    pub tls: bool,
    /// The client's mesh identity (SPIFFE ID), proved with mutual TLS on an
    /// inbound listener.
    pub client_id: Option<Arc<str>>,
    /// On a connection redirected to a transparent outbound listener: where
    /// requests that match no route go.
    pub passthrough: Option<Arc<Passthrough>>,
}

impl Downstream {
    pub fn new(client: SocketAddr, tls: bool) -> Self {
        Downstream {
            client,
            tls,
            client_id: None,
            passthrough: None,
        }
    }
}

/// What happened to a request: the response (or the proxy's error) and the
/// route and backend that served it, for metrics and logs.
pub struct Outcome<'a> {
    pub result: Result<Response<ResponseBody>, ProxyError>,
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    /// The route-and-backend's metric handles, when it was forwarded.
    pub metrics: Option<&'a RouteMetrics>,
    /// A fault delay was injected.
    pub delayed: bool,
}

impl Outcome<'_> {
    fn err(e: ProxyError) -> Self {
        Outcome {
            result: Err(e),
            route: None,
            backend: None,
            metrics: None,
            delayed: false,
        }
    }

    fn answered(rsp: Response<ResponseBody>) -> Self {
        Outcome {
            result: Ok(rsp),
            route: None,
            backend: None,
            metrics: None,
            delayed: false,
        }
    }

    fn route(route: &Route, result: Result<Response<ResponseBody>, ProxyError>) -> Self {
        Outcome {
            result,
            route: Some(route.name.clone()),
            backend: None,
            metrics: None,
            delayed: false,
        }
    }
}

/// The host a request is for (without port), from its URI or `Host` header.
fn request_host(req: &Request<Incoming>) -> Option<&str> {
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

pub async fn handle<'a>(
    listener: &'a ListenerTable,
    down: &Downstream,
    mut req: Request<Incoming>,
) -> Outcome<'a> {
    if let Err(v) = message::check(req.method(), req.uri(), req.version(), req.headers()) {
        return Outcome::err(v.into());
    }
    match message::max_forwards(req.method(), req.headers()) {
        MaxForwards::Ignore => {}
        MaxForwards::Answer => return Outcome::answered(message::final_recipient(req.method())),
        MaxForwards::Forward(n) => {
            req.headers_mut()
                .insert(header::MAX_FORWARDS, HeaderValue::from(n));
        }
    }
    let limits = &listener.limits;
    let limit = limits.max_request_header_bytes;
    if (limit < 8192 || req.version() == Version::HTTP_2) && head_size(&req) > limit {
        return Outcome::err(ProxyError::HeadersTooLarge { limit });
    }
    if let Some(max) = limits.max_request_body_bytes {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Outcome::err(ProxyError::BodyTooLarge { limit: max });
        }
    }
    if let Some((_, limiter)) = &listener.rate_limit {
        if let Err(wait) = limiter.check(req.headers()) {
            return Outcome::err(ProxyError::RateLimited {
                retry_after: wait.0,
            });
        }
    }
    let host = request_host(&req).unwrap_or("");
    let Some(route) = listener
        .router
        .find(host, req.method(), req.uri().path(), req.headers())
    else {
        return match &down.passthrough {
            Some(p) => super::passthrough::forward_to(p, listener, down, req).await,
            None => Outcome::err(ProxyError::NoRoute),
        };
    };
    if let Some((_, limiter)) = &route.rate_limit {
        if let Err(wait) = limiter.check(req.headers()) {
            return Outcome::route(
                route,
                Err(ProxyError::RateLimited {
                    retry_after: wait.0,
                }),
            );
        }
    }
    let mut rng = fastrand::Rng::new();
    let mut delayed = false;
    if let Some(fault) = &route.fault {
        let injection = fault.decide(&mut rng);
        if let Some(delay) = injection.delay {
            tokio::time::sleep(delay).await;
            delayed = true;
        }
        if let Some(status) = injection.abort {
            let mut outcome = Outcome::route(route, Err(ProxyError::FaultInjected(status)));
            outcome.delayed = delayed;
            return outcome;
        }
    }
    if let Some(inbound) = &listener.inbound {
        let authz = route.authz.as_ref().unwrap_or(&inbound.authz);
        let peer = crate::policy::authz::Peer {
            id: down.client_id.as_deref(),
            addr: down.client.ip(),
        };
        if !authz.allows(peer) {
            let client = down.client_id.as_deref().map_or_else(
                || format!("{} (no mesh identity)", down.client.ip()),
                str::to_string,
            );
            return Outcome::route(route, Err(ProxyError::Forbidden { client }));
        }
    }
    let route_name = Some(route.name.clone());
    let split = match &route.action {
        Action::Direct {
            status,
            body,
            content_type,
        } => {
            let mut rsp = Response::new(ResponseBody::full(body.clone()));
            *rsp.status_mut() = *status;
            rsp.headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
            route.response_headers.apply(rsp.headers_mut());
            return Outcome {
                result: Ok(rsp),
                route: route_name,
                backend: None,
                metrics: None,
                delayed,
            };
        }
        Action::Redirect(rd) => {
            return Outcome {
                result: redirect(rd, &req, down.tls, route),
                route: route_name,
                backend: None,
                metrics: None,
                delayed,
            }
        }
        Action::Forward(split) => split,
    };
    let (backend, metrics) = split.pick_with_metrics(&mut rng);
    let on_upgrade = (req.version() == Version::HTTP_11 && is_upgrade(req.headers()))
        .then(|| hyper::upgrade::on(&mut req));
    let result = forward(
        backend,
        route,
        limits.max_request_body_bytes,
        down,
        req,
        on_upgrade,
        &mut rng,
    )
    .await;
    Outcome {
        result,
        route: route_name,
        backend: Some(backend.name.clone()),
        metrics: Some(metrics),
        delayed,
    }
}

fn head_size(req: &Request<Incoming>) -> usize {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + uri
}

pub(super) async fn forward(
    backend: &Backend,
    route: &Route,
    body_limit: Option<u64>,
    down: &Downstream,
    req: Request<Incoming>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    rng: &mut fastrand::Rng,
) -> Result<Response<ResponseBody>, ProxyError> {
    let upgrade = on_upgrade.is_some();
    let proto = match backend.protocol {
        _ if upgrade => Proto::Http1,
        remora_api::UpstreamProtocol::Http1 => Proto::Http1,
        remora_api::UpstreamProtocol::Http2 => Proto::Http2,
        remora_api::UpstreamProtocol::Auto if req.version() == Version::HTTP_2 => Proto::Http2,
        remora_api::UpstreamProtocol::Auto => Proto::Http1,
    };
    let (mut parts, body) = req.into_parts();
    upstream_head(&mut parts, route, backend, proto, down, upgrade)?;
    let policy = route.retry.as_ref().filter(|_| !upgrade);
    // The route timeout is a deadline each wait below is bounded by, rather
    // than a timer around them all: on the happy path one timer is armed
    // per request, whether the route has a timeout, a per-try timeout or both.
    let deadline = route.timeout.map(|t| Deadline {
        at: Instant::now() + t,
        timeout: t,
    });
    let mut body = match policy.filter(|p| p.attempts > 1) {
        Some(p) => {
            let prepare = RequestBody::prepare(body, p.buffer_bytes, body_limit);
            match deadline {
                Some(d) => tokio::time::timeout_at(d.at, prepare)
                    .await
                    .unwrap_or(Err(ProxyError::Timeout(d.timeout)))?,
                None => prepare.await?,
            }
        }
        None => Prepared::Streaming(RequestBody::stream(body, body_limit)),
    };
    let (mut rsp, in_flight) = exchange(
        backend, policy, parts, &mut body, proto, upgrade, deadline, rng,
    )
    .await?;
    if let (Some(client), StatusCode::SWITCHING_PROTOCOLS) = (on_upgrade, rsp.status()) {
        super::upgrade::tunnel(client, hyper::upgrade::on(&mut rsp));
        let (parts, _) = rsp.into_parts();
        return Ok(Response::from_parts(parts, ResponseBody::empty()));
    }
    let (mut parts, body) = rsp.into_parts();
    remove_hop_by_hop(&mut parts.headers, false);
    route.response_headers.apply(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        ResponseBody::upstream(body, Some(in_flight), route.idle_timeout),
    ))
}

/// Rewrites the request head for the upstream: hop-by-hop headers out,
/// forwarding headers in, the route's header operations, host and path
/// rewrites, and the URI form the upstream protocol needs.
fn upstream_head(
    parts: &mut http::request::Parts,
    route: &Route,
    backend: &Backend,
    proto: Proto,
    down: &Downstream,
    upgrade: bool,
) -> Result<(), ProxyError> {
    let authority = match &route.rewrite_host {
        Some(h) => Some(h.clone()),
        None => match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => parts.headers.get(header::HOST).cloned(),
        },
    };
    let path = match (&route.rewrite_prefix, parts.uri.path_and_query()) {
        (Some((from, to)), Some(pq)) => {
            PathAndQuery::try_from(rewrite_prefix(pq.as_str(), from, to))
                .map_err(|_| ProxyError::Malformed("rewritten path is invalid"))?
        }
        (_, Some(pq)) => pq.clone(),
        (_, None) => PathAndQuery::from_static("/"),
    };
    let h = &mut parts.headers;
    remove_hop_by_hop(h, upgrade);
    h.remove(header::EXPECT);
    add_forwarded(h, down.client.ip(), down.tls);
    route.request_headers.apply(h);
    match proto {
        Proto::Http1 => {
            parts.version = Version::HTTP_11;
            parts.uri = Uri::from(path);
            match authority {
                Some(a) => h.insert(header::HOST, a),
                None => return Err(ProxyError::Malformed("no host")),
            };
        }
        Proto::Http2 => {
            parts.version = Version::HTTP_2;
            h.remove(header::HOST);
            let authority = authority
                .and_then(|a| Authority::try_from(a.as_bytes()).ok())
                .ok_or(ProxyError::Malformed("no valid authority"))?;
            let scheme = if backend.tls {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            };
            parts.uri = Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(path)
                .build()
                .map_err(|_| ProxyError::Malformed("invalid request target"))?;
        }
    }
    Ok(())
}

/// When the route's timeout runs out.
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    timeout: std::time::Duration,
}

/// Sends the request, retrying under the route's policy while attempts,
/// the body's replayability and the backend's retry budget allow, all
/// within the route's deadline.
#[allow(clippy::too_many_arguments)]
async fn exchange(
    backend: &Backend,
    policy: Option<&remora_api::RetryPolicy>,
    parts: http::request::Parts,
    body: &mut Prepared,
    proto: Proto,
    upgrade: bool,
    deadline: Option<Deadline>,
    rng: &mut fastrand::Rng,
) -> Result<(Response<Incoming>, InFlight), ProxyError> {
    let attempts = policy.map_or(1, |p| p.attempts);
    let per_try = policy.and_then(|p| p.per_try_timeout).map(|t| t.get());
    backend.budget.deposit(now_ns());
    let mut parts = Some(parts);
    let mut retries = 0;
    // Endpoints this request went to: a retry goes elsewhere if it can.
    let mut tried = Tried::NONE;
    loop {
        let last = retries + 1 >= attempts || !body.replayable();
        let head = match parts.take() {
            Some(p) if last => p,
            Some(p) => {
                let copy = copy_head(&p);
                parts = Some(p);
                copy
            }
            None => return Err(ProxyError::Malformed("request was already sent")),
        };
        let req_body = body
            .attempt()
            .ok_or(ProxyError::Malformed("request body was already sent"))?;
        let result = attempt(
            backend,
            Request::from_parts(head, req_body),
            proto,
            upgrade,
            per_try,
            deadline,
            rng,
            &mut tried,
        )
        .await;
        let reason = match (&result, policy) {
            (_, None) => None,
            (Ok((rsp, _)), Some(p)) => retry::reason_of_response(p, rsp.status(), rsp.headers()),
            (Err(e), Some(p)) => retry::reason_of_error(p, e),
        };
        let (Some(reason), false, Some(p)) = (reason, last, policy) else {
            return result;
        };
        if !backend.budget.withdraw(now_ns()) {
            backend.metrics.budget_exhausted.inc();
            tracing::debug!(backend = %backend.name, reason, "retry budget exhausted; returning the failure");
            return result;
        }
        backend
            .metrics
            .retries
            .with_label_values(&[&*backend.name, reason])
            .inc();
        retries += 1;
        drop(result);
        let wake = Instant::now() + retry::backoff(p, retries, rng);
        match deadline {
            Some(d) if d.at <= wake => {
                tokio::time::sleep_until(d.at).await;
                return Err(ProxyError::Timeout(d.timeout));
            }
            _ => tokio::time::sleep_until(wake).await,
        }
    }
}

/// A copy of a request head for one more attempt (of the extensions, only
/// the trace is kept).
fn copy_head(p: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    // otel: each attempt carries the request's trace.
    if let Some(t) = p.extensions.get::<Traced>() {
        req.extensions_mut().insert(t.clone());
    }
    req.into_parts().0
}

/// One attempt on one endpoint: circuit breaker, balancer (avoiding the
/// endpoints in `tried`, and adding the one chosen), per-try timeout, and
/// what the outcome teaches the balancer and outlier detection.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    backend: &Backend,
    req: Request<RequestBody>,
    proto: Proto,
    upgrade: bool,
    per_try: Option<std::time::Duration>,
    deadline: Option<Deadline>,
    rng: &mut fastrand::Rng,
    tried: &mut Tried,
) -> Result<(Response<Incoming>, InFlight), ProxyError> {
    let overloaded = |limit: Overflow| {
        backend
            .metrics
            .overflows
            .with_label_values(&[&*backend.name, limit.as_str()])
            .inc();
        ProxyError::Overloaded {
            backend: backend.name.clone(),
            limit: limit.as_str(),
        }
    };
    let slot = backend
        .breaker
        .acquire(Overflow::Requests, backend.limits.max_requests)
        .map_err(overloaded)?;
    let (index, ep) = backend
        .pick_excluding(req.headers(), rng, tried)
        .ok_or_else(|| ProxyError::NoEndpoints {
            backend: backend.name.clone(),
        })?;
    tried.insert(index);
    let mut in_flight = InFlight::start(ep, slot);
    let mut req = req;
    // otel: a client span per attempt; the upstream gets its traceparent.
    let span = Traced::of(&req)
        .cloned()
        .map(|t| t.attempt(&mut req, index));
    in_flight.request_sent = req.body_mut().track_sent();
    let started = Instant::now();
    let send = ep
        .client
        .send(req, proto, upgrade, &backend.breaker, &backend.limits);
    // One timer: the per-try timeout or the route's deadline, whichever
    // comes first.
    let limit = match (per_try.map(|t| (started + t, t)), deadline) {
        (Some((at, t)), Some(d)) if at < d.at => Some((at, ProxyError::PerTryTimeout(t))),
        (_, Some(d)) => Some((d.at, ProxyError::Timeout(d.timeout))),
        (Some((at, t)), None) => Some((at, ProxyError::PerTryTimeout(t))),
        (None, None) => None,
    };
    let sent = match limit {
        Some((at, timed_out)) => tokio::time::timeout_at(at, send)
            .await
            .unwrap_or(Err(timed_out)),
        None => send.await,
    };
    if let Some(span) = span {
        let result = sent
            .as_ref()
            .map(|(r, _)| r.status())
            .map_err(|e| e.cause());
        span.finish(result, ep.addr, &backend.name);
    }
    match sent {
        Ok((rsp, checkin)) => {
            ep.load.observe(started.elapsed());
            backend.report(ep, !rsp.status().is_server_error());
            in_flight.checkin = checkin;
            if hyper::body::Body::is_end_stream(rsp.body()) {
                // No body to read (204, 304, an empty 503 about to be
                // retried): the connection is free now.
                in_flight.body_done();
            }
            Ok((rsp, in_flight))
        }
        Err(e) => {
            let client_failed = in_flight
                .request_sent
                .as_ref()
                .is_some_and(|u| u.client_failed());
            // Once the client's body failed, the attempt's error (whatever
            // the upstream made of the broken stream) is the client's.
            let e = match body_error(e) {
                e @ ProxyError::BodyTooLarge { .. } => e,
                e if client_failed => ProxyError::ClientBody(super::error::innermost(&e).into()),
                e => e,
            };
            match &e {
                // Our own limits: not the endpoint's fault.
                ProxyError::Overloaded { limit, .. } => {
                    backend
                        .metrics
                        .overflows
                        .with_label_values(&[&*backend.name, limit])
                        .inc();
                }
                // The client's fault.
                ProxyError::BodyTooLarge { .. } | ProxyError::ClientBody(_) => {}
                _ => {
                    // A failing endpoint looks slow to the balancer for a while.
                    ep.load.observe_failure(started.elapsed());
                    backend.report(ep, false);
                }
            }
            Err(e)
        }
    }
}

/// A request body cut off at the size limit shows up as an upstream error.
fn body_error(e: ProxyError) -> ProxyError {
    if let ProxyError::Upstream { source, .. } = &e {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(c) = cause {
            if let Some(BodyTooLarge(limit)) = c.downcast_ref::<BodyTooLarge>() {
                return ProxyError::BodyTooLarge { limit: *limit };
            }
            cause = c.source();
        }
    }
    e
}

fn redirect(
    rd: &remora_api::Redirect,
    req: &Request<Incoming>,
    tls: bool,
    route: &Route,
) -> Result<Response<ResponseBody>, ProxyError> {
    let scheme = rd
        .scheme
        .as_deref()
        .unwrap_or(if tls { "https" } else { "http" });
    let host = rd
        .host
        .as_deref()
        .or_else(|| request_host(req))
        .ok_or(ProxyError::Malformed("no host"))?;
    let port = rd.port.or_else(|| {
        // Keep an explicit port only if neither scheme nor host changes.
        if rd.scheme.is_some() || rd.host.is_some() {
            return None;
        }
        req.uri().port_u16().or_else(|| {
            req.headers()
                .get(header::HOST)?
                .to_str()
                .ok()?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()
        })
    });
    let path = rd.path.as_deref().unwrap_or(req.uri().path());
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port {
        location.push_str(&format!(":{p}"));
    }
    location.push_str(path);
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let mut rsp = Response::new(ResponseBody::empty());
    *rsp.status_mut() = StatusCode::from_u16(rd.status).unwrap_or(StatusCode::FOUND);
    let loc = HeaderValue::from_str(&location)
        .map_err(|_| ProxyError::Malformed("invalid redirect location"))?;
    rsp.headers_mut().insert(header::LOCATION, loc);
    route.response_headers.apply(rsp.headers_mut());
    Ok(rsp)
}

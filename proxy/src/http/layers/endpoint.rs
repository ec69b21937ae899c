//! The bottom of the stack: one attempt sent to the endpoint the balancer
//! chose, within the per-try timeout or the route's deadline (one timer,
//! whichever comes first), and what its outcome teaches the balancer and
//! outlier detection.
//!
//! Its future is boxed, one per attempt: it borrows the backend and the
//! endpoint from the request's snapshot while it waits, which only an
//! `async` block (a type without a name) can do without counting
//! references.

use super::breaker::count_overflow;
use crate::balance::{ns_at, Backend, InFlight};
use crate::http::body::{BodyTooLarge, RequestBody, ResponseBody};
use crate::http::call::{Call, Cx, Done, Ready};
use crate::http::error::{innermost, ProxyError};
use crate::telemetry::otel::Traced;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower::Service;

#[derive(Clone, Copy, Debug, Default)]
pub struct Endpoint;

impl Service<Call> for Endpoint {
    type Response = Done;
    type Error = Infallible;
    type Future = BoxFuture<'static, Ready>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        Box::pin(async move {
            let Call { req, mut cx } = call;
            let Some(mut in_flight) = cx.attempt.in_flight.take() else {
                let e = ProxyError::Malformed("no endpoint was chosen");
                return Ok(Done::new(Err(e), cx));
            };
            let sent = send(req, &cx, &mut in_flight).await;
            let idle_timeout = cx.view.forward_route().idle_timeout;
            let result = sent.map(|rsp| {
                let (parts, body) = rsp.into_parts();
                let body = ResponseBody::upstream(body, Some(in_flight), idle_timeout);
                Response::from_parts(parts, body)
            });
            Ok(Done::new(result, cx))
        })
    }
}

async fn send(
    req: Box<Request<RequestBody>>,
    cx: &Cx,
    in_flight: &mut InFlight,
) -> Result<Response<Incoming>, ProxyError> {
    let (attempt, deadline) = (&cx.attempt, cx.deadline);
    let Some(backend) = cx.view.backend() else {
        return Err(ProxyError::Malformed("no backend was chosen"));
    };
    let ep = &backend.endpoints[attempt.endpoint];
    let proto = attempt.proto.unwrap_or(crate::http::client::Proto::Http1);
    let mut req = req;
    // otel: a client span per attempt; the upstream gets its traceparent.
    let span = Traced::of(&req)
        .cloned()
        .map(|t| t.attempt(&mut *req, attempt.endpoint));
    let started = Instant::now();
    let send = ep.client.send(
        req,
        proto,
        attempt.upgrade,
        &backend.breaker,
        &backend.limits,
        started,
    );
    // One timer: the per-try timeout or the route's deadline, whichever
    // comes first.
    let limit = match (attempt.per_try.map(|t| (started + t, t)), deadline) {
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
            // One clock read for the round trip and the estimate's stamp.
            let answered = Instant::now();
            ep.load.observe_at(answered - started, ns_at(answered));
            // A gRPC server's failure rides an HTTP 200: its Trailers-Only
            // status counts as a 5xx does.
            let failed = rsp.status().is_server_error()
                || (cx.grpc && crate::http::grpc::endpoint_failed(rsp.headers()));
            backend.report(ep, !failed);
            in_flight.checkin = checkin;
            if hyper::body::Body::is_end_stream(rsp.body()) {
                // No body to read (204, 304, an empty 503 about to be
                // retried): the connection is free now.
                in_flight.body_done();
            }
            Ok(rsp)
        }
        Err(e) => Err(failed(backend, ep, started, in_flight, e)),
    }
}

/// What a failed attempt's error is, and whom it is counted against.
fn failed(
    backend: &Backend,
    ep: &crate::balance::Endpoint,
    started: Instant,
    in_flight: &InFlight,
    e: ProxyError,
) -> ProxyError {
    let client_failed = in_flight
        .request_sent
        .as_ref()
        .is_some_and(|u| u.client_failed());
    // Once the client's body failed, the attempt's error (whatever
    // the upstream made of the broken stream) is the client's.
    let e = match body_error(e) {
        e @ ProxyError::BodyTooLarge { .. } => e,
        e if client_failed => ProxyError::ClientBody(innermost(&e).into()),
        e => e,
    };
    match &e {
        // Our own limits: not the endpoint's fault.
        ProxyError::Overloaded { limit, .. } => count_overflow(backend, limit),
        // The client's fault.
        ProxyError::BodyTooLarge { .. } | ProxyError::ClientBody(_) => {}
        _ => {
            // A failing endpoint looks slow to the balancer for a while.
            ep.load.observe_failure(started.elapsed());
            backend.report(ep, false);
        }
    }
    e
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

//! Retries under the route's policy while attempts, the body's
//! replayability and the backend's retry budget allow, with backoff, all
//! within the route's deadline. A route with retries reads the client's
//! body first (up to its `buffer_bytes`) so each attempt can send it again.
//!
//! A route without retries makes one attempt through the concrete future
//! of the layers below; a route with retries runs its loop in one boxed
//! future (it buffers the body and may sleep between attempts anyway).

use crate::balance::{now_ns, ns_at};
use crate::http::body::{Prepared, RequestBody};
use crate::http::call::{Call, Cx, Done, Ready};
use crate::http::error::ProxyError;
use crate::http::retry;
use futures_util::future::{BoxFuture, Either};
use http::request::Parts;
use http::Request;
use std::convert::Infallible;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

#[derive(Clone, Copy, Debug, Default)]
pub struct RetryLayer;

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
}

impl<S> Service<Call> for Retry<S>
where
    S: Service<Call, Response = Done, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Done;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Ready>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let Call { mut req, mut cx } = call;
        let policy = cx.view.forward_route().retry.as_ref();
        let policy = policy.filter(|_| !cx.attempt.upgrade);
        cx.attempt.per_try = policy.and_then(|p| p.per_try_timeout).map(|t| t.get());
        let Some(keep) = policy.filter(|p| p.attempts > 1).map(|p| p.buffer_bytes) else {
            // One attempt: the client's body streams on as it came.
            deposit(&cx);
            return Either::Left(self.inner.call(Call { req, cx }));
        };
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let body = std::mem::replace(req.body_mut(), RequestBody::empty());
        let parts = (*req).into_parts().0;
        let prepare = body.prepare(keep);
        Either::Right(Box::pin(async move {
            let prepared = match cx.deadline {
                Some(d) => tokio::time::timeout_at(d.at, prepare)
                    .await
                    .unwrap_or(Err(ProxyError::Timeout(d.timeout))),
                None => prepare.await,
            };
            match prepared {
                Ok(body) => {
                    deposit(&cx);
                    attempts(inner, parts, body, cx).await
                }
                Err(e) => Ok(Done::new(Err(e), cx)),
            }
        }))
    }
}

/// Every request counts toward the backend's retry budget, at the time it
/// came in (no clock read of its own).
fn deposit(cx: &Cx) {
    if let Some(b) = cx.view.backend() {
        b.budget.deposit(ns_at(cx.started));
    }
}

async fn attempts<S>(mut inner: S, parts: Parts, mut body: Prepared, mut cx: Box<Cx>) -> Ready
where
    S: Service<Call, Response = Done, Error = Infallible>,
{
    let mut parts = Some(parts);
    let mut retries = 0;
    loop {
        let attempts = cx
            .view
            .forward_route()
            .retry
            .as_ref()
            .map_or(1, |p| p.attempts);
        let last = retries + 1 >= attempts || !body.replayable();
        let head = match parts.take() {
            Some(p) if last => p,
            Some(p) => {
                let copy = copy_head(&p);
                parts = Some(p);
                copy
            }
            None => {
                return Ok(Done::new(
                    Err(ProxyError::Malformed("request was already sent")),
                    cx,
                ))
            }
        };
        let Some(req_body) = body.attempt() else {
            let e = ProxyError::Malformed("request body was already sent");
            return Ok(Done::new(Err(e), cx));
        };
        let req = Box::new(Request::from_parts(head, req_body));
        let Ok(svc) = inner.ready().await;
        let Ok(Done { cx: back }) = svc.call(Call { req, cx }).await;
        cx = back;
        let (Some(p), Some(backend)) = (cx.view.forward_route().retry.as_ref(), cx.view.backend())
        else {
            return Ok(Done { cx });
        };
        let reason = match &cx.answer {
            Ok(rsp) => retry::reason_of_response(p, rsp.status(), rsp.headers()),
            Err(e) => retry::reason_of_error(p, e),
        };
        let (Some(reason), false) = (reason, last) else {
            return Ok(Done { cx });
        };
        if !backend.budget.withdraw(now_ns()) {
            backend.metrics.budget_exhausted.inc();
            tracing::debug!(backend = %backend.name, reason, "retry budget exhausted; returning the failure");
            return Ok(Done { cx });
        }
        backend
            .metrics
            .retries
            .with_label_values(&[&*backend.name, reason])
            .inc();
        retries += 1;
        cx.answer = Cx::no_answer();
        let wake = Instant::now() + retry::backoff(p, retries, &mut cx.rng);
        match cx.deadline {
            Some(d) if d.at <= wake => {
                tokio::time::sleep_until(d.at).await;
                return Ok(Done::new(Err(ProxyError::Timeout(d.timeout)), cx));
            }
            _ => tokio::time::sleep_until(wake).await,
        }
    }
}

/// A copy of a request head for one more attempt (extensions are not kept).
fn copy_head(p: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    // otel: each attempt carries the request's trace.
    if let Some(t) = p.extensions.get::<crate::telemetry::otel::Traced>() {
        req.extensions_mut().insert(t.clone());
    }
    req.into_parts().0
}

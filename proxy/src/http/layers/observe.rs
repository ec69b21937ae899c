//! The top of the request path: takes the request from the connection,
//! loads the snapshot (the request's one `ArcSwap` load, kept to its end),
//! and sends it down the stack as a [`Call`]; on the way back turns a proxy
//! error into its response (the one place, [`error_response`]), counts the
//! request in metrics, and logs it (access log, failures, denials). With
//! `tracing:`, starts and ends the request's server span.

use crate::http::body::{RequestBody, ResponseBody};
use crate::http::call::{Call, Cx, Done, Downstream, Ready, View};
use crate::http::edge::{logged_headers, Answered, Loads};
use crate::http::error::{error_response, Fault};
use crate::http::server::ListenerCtx;
use crate::http::ReqBody;
use crate::snapshot::Snapshot;
use crate::telemetry::otel::{Traced, Unforwarded};
use http::{Method, Request, Response, Uri, Version};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::time::Instant;
use tower::{Layer, Service};

/// Observes the requests of one connection.
#[derive(Clone)]
pub struct ObserveLayer {
    ctx: Arc<ListenerCtx>,
    down: Arc<Downstream>,
}

impl ObserveLayer {
    pub fn new(ctx: Arc<ListenerCtx>, down: Downstream) -> Self {
        ObserveLayer {
            ctx,
            down: Arc::new(down),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            ctx: self.ctx.clone(),
            down: self.down.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    ctx: Arc<ListenerCtx>,
    down: Arc<Downstream>,
    inner: S,
}

/// What the access log says of the request, taken before it goes down.
/// With the request headers the listener's `edge.log_headers` shows.
type Access = Option<(Method, Uri, Version, String)>;

impl<S> Service<Request<ReqBody>> for Observe<S>
where
    S: Service<Call, Response = Done, Error = Infallible>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The one snapshot load of this request: kept to its end.
        self.call_loaded(self.ctx.store.load_full(), req)
    }
}

/// The edge layer above makes the request's one load through observe.
impl<S> Loads for Observe<S>
where
    S: Service<Call, Response = Done, Error = Infallible>,
{
    fn load(&self) -> (Arc<Snapshot>, usize) {
        (self.ctx.store.load_full(), self.ctx.index)
    }

    fn see(&self, req: &Request<hyper::body::Incoming>) -> Option<crate::tap::Seen> {
        self.ctx.metrics.tap.see(req, &self.ctx.name, &self.down)
    }

    fn answered(&self, a: Answered<'_>) {
        let ctx = &self.ctx;
        let listener = &a.snapshot.listeners[a.index];
        let name = &*ctx.name;
        let route_name = a
            .head
            .route
            .map(|i| &listener.router.routes()[i as usize].name);
        let route = route_name.map_or("", |r| &**r);
        ctx.requests.inc();
        // otel: its server span, sampled as any request's.
        if let (Some(tracer), Some(head)) = (&a.snapshot.tracer, &a.head.trace) {
            tracer.answered(Unforwarded {
                head,
                method: &a.head.method,
                started: a.started,
                status: a.status,
                error: a.cause,
                listener: &ctx.name,
                route: route_name,
            });
        }
        if !a.cause.is_empty() {
            tracing::debug!(
                listener = name,
                route,
                status = a.status.as_u16(),
                error = a.cause,
                "request refused"
            );
        }
        if listener.access_log {
            AccessEvent {
                listener: name,
                route,
                backend: "",
                down: &self.down,
                method: &a.head.method,
                uri: &a.head.uri,
                version: a.head.version,
                headers: &a.head.headers,
                status: a.status,
                cause: a.cause,
                started: a.started,
            }
            .log();
        }
        if let Some(seen) = a.seen {
            ctx.metrics
                .tap
                .publish(seen, route, "", a.status, None, a.cause); // tap
        }
        let m = &ctx.metrics;
        m.responses
            .with_label_values(&[name, route, "", a.status.as_str(), a.cause])
            .inc();
        m.duration
            .with_label_values(&[name, route, ""])
            .observe(a.started.elapsed().as_secs_f64());
    }

    fn call_loaded(&mut self, snapshot: Arc<Snapshot>, req: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        self.ctx.requests.inc();
        let mut req = req;
        // otel: a server span when tracing is on and the request is sampled.
        let traced = snapshot.tracer.as_ref().and_then(|t| t.start(&mut req));
        let view = View::new(snapshot, self.ctx.index);
        let listener = view.listener();
        let access = listener.access_log.then(|| {
            // edge: chosen headers, after the edge layers (a generated
            // request id, sensitive values marked).
            let headers = listener.edge.as_ref().map_or_else(String::new, |e| {
                logged_headers(&e.log_headers, req.headers())
            });
            (
                req.method().clone(),
                req.uri().clone(),
                req.version(),
                headers,
            )
        });
        let tap = self.ctx.metrics.tap.see(&req, &self.ctx.name, &self.down); // tap: the head, while someone taps
        let limit = listener.limits.max_request_body_bytes;
        // gRPC is HTTP/2: an HTTP/1.1 request costs no header lookup.
        let grpc = req.version() == Version::HTTP_2 && crate::http::grpc::is_grpc(req.headers());
        let req = req.map(|body| RequestBody::stream(body, limit));
        let mut cx = Box::new(Cx::new(view, self.down.clone(), started));
        cx.grpc = grpc;
        Observed {
            inner: self.inner.call(Call {
                req: Box::new(req),
                cx,
            }),
            ctx: self.ctx.clone(),
            access,
            traced,
            tap,
        }
    }
}

pin_project! {
    /// The stack's answer on its way to the connection.
    pub struct Observed<F> {
        #[pin]
        inner: F,
        ctx: Arc<ListenerCtx>,
        access: Access,
        traced: Option<Traced>,
        tap: Option<crate::tap::Seen>, // tap: the head, until the answer
    }
}

impl<F: Future<Output = Ready>> Future for Observed<F> {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(done) = ready!(this.inner.poll(cx));
        let traced = this.traced.take();
        let rsp = record(this.ctx, done, this.access.take(), this.tap.take(), traced);
        Poll::Ready(Ok(rsp))
    }
}

/// The response for the client, with the request counted and logged.
fn record(
    ctx: &ListenerCtx,
    done: Done,
    access: Access,
    tap: Option<crate::tap::Seen>,
    traced: Option<Traced>,
) -> Response<ResponseBody> {
    let (result, cx) = done.into_parts();
    let view = &cx.view;
    let down = &cx.down;
    let name = &*ctx.name;
    let route = view.route().map_or("", |r| &*r.name);
    let backend = view.backend().map_or("", |b| &*b.name);
    let (rsp, cause) = match result {
        Ok(rsp) => (rsp, ""),
        Err(e) => {
            let rsp = error_response(&e);
            let status = rsp.status().as_u16();
            match e.fault() {
                Fault::Upstream => tracing::warn!(
                    listener = name, route, backend, status, error = e.cause(), detail = %e, "request failed"
                ),
                _ => tracing::debug!(
                    listener = name, route, backend, status, error = e.cause(), detail = %e, "request refused"
                ),
            }
            (rsp, e.cause())
        }
    };
    if let Some(seen) = tap {
        let (status, endpoint) = (rsp.status(), rsp.body().endpoint());
        ctx.metrics
            .tap
            .publish(seen, route, backend, status, endpoint, cause); // tap: the summary
    }
    if let Some((method, uri, version, headers)) = &access {
        AccessEvent {
            listener: name,
            route,
            backend,
            down,
            method,
            uri,
            version: *version,
            headers,
            status: rsp.status(),
            cause,
            started: cx.started,
        }
        .log();
    }
    // otel: the server span ends with the response head.
    if let Some(t) = traced {
        t.finish(crate::telemetry::otel::End {
            status: rsp.status(),
            error: cause,
            listener: &ctx.name,
            route: view.route().map(|r| &r.name),
            backend: view.backend(),
        });
    }
    let m = &ctx.metrics;
    match cause {
        "rate-limited" => m.rate_limited.with_label_values(&[name, route]).inc(),
        "fault-injected" => m.faults.with_label_values(&[name, route, "abort"]).inc(),
        "forbidden" => {
            m.authorization_denials
                .with_label_values(&[name, route])
                .inc();
            tracing::info!(
                listener = name, route, client = %down.client,
                client_id = down.client_id.as_deref().unwrap_or("none"),
                "request denied by the authorization policy"
            );
        }
        _ => {}
    }
    if cx.delayed {
        m.faults.with_label_values(&[name, route, "delay"]).inc();
    }
    let elapsed = cx.started.elapsed().as_secs_f64();
    // The route's handles for the common outcome; else a label lookup.
    let status = rsp.status();
    let responses = || {
        m.responses
            .with_label_values(&[name, route, backend, status.as_str(), cause])
    };
    let ok = status == http::StatusCode::OK && cause.is_empty();
    let handles = view.route_metrics();
    match handles {
        Some(h) if ok => h.ok.get_or_init(responses).inc(),
        _ => responses().inc(),
    }
    let duration = || m.duration.with_label_values(&[name, route, backend]);
    match handles {
        Some(h) => h.duration.get_or_init(duration).observe(elapsed),
        None => duration().observe(elapsed),
    }
    if cx.grpc {
        let mut rsp = rsp;
        let tally = crate::http::grpc::Tally::new(m, name, route, backend);
        crate::http::grpc::count(tally, &mut rsp, cause);
        // Counted and logged with its HTTP status; a gRPC client (not a
        // mesh peer: its retries and outlier detection read HTTP errors)
        // reads it as a gRPC error.
        if down.client_id.is_none() {
            return crate::http::grpc::answer(rsp, cause);
        }
        return rsp;
    }
    rsp
}

/// One event of a listener's access log (`access_log: true`).
struct AccessEvent<'a> {
    listener: &'a str,
    route: &'a str,
    backend: &'a str,
    down: &'a Downstream,
    method: &'a Method,
    uri: &'a Uri,
    version: Version,
    /// `edge.log_headers`, redacted.
    headers: &'a str,
    status: http::StatusCode,
    cause: &'a str,
    started: Instant,
}

impl AccessEvent<'_> {
    fn log(&self) {
        let down = self.down;
        tracing::info!(
            target: "remora_proxy::access",
            listener = self.listener, route = self.route, backend = self.backend,
            client = %down.client, tls = down.tls,
            client_id = down.client_id.as_deref().unwrap_or(""),
            method = %self.method, path = self.uri.path(), version = ?self.version,
            status = self.status.as_u16(), error = self.cause, headers = self.headers,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}

//! OpenTelemetry tracing: a server span per request and a client span per
//! attempt to an endpoint, W3C `traceparent` in and out, exported over OTLP
//! (HTTP or gRPC) by a background task.
//!
//! The compiled snapshot holds the [`Tracer`] when the config has a
//! `tracing:` section (none: the request path costs one branch). A tracer
//! whose config is unchanged is carried across snapshot swaps, so its queue
//! and exporter live on; a replaced tracer's exporter sends what is queued
//! and ends when the last request holding it is done.
//!
//! On the request path nothing blocks and nothing locks: a finished span
//! goes into a bounded queue, and when that is full it is dropped and
//! counted (`remora_trace_spans_total{outcome="dropped"}`).

pub mod context;
mod export;
pub mod span;

use crate::metrics::Metrics;
use context::{Parent, SpanId, TraceId};
use http::header::{HeaderName, HOST};
use http::{HeaderValue, Method, Request, StatusCode};
use prometheus::IntCounter;
use span::{Kind, SpanRecord};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Samples, records and queues spans for one `tracing:` config.
pub struct Tracer {
    config: remora_api::Tracing,
    /// A new trace is sampled when the last 8 bytes of its id, as a
    /// number, are below this; `None`: always.
    threshold: Option<u64>,
    queue: mpsc::Sender<SpanRecord>,
    flushes: mpsc::Sender<export::Flush>,
    dropped: IntCounter,
}

impl Tracer {
    /// The tracer for `config`: `previous` if it was built from the same
    /// config, else a new one (with its exporter task, when a runtime runs).
    pub fn carry(
        config: Option<&remora_api::Tracing>,
        previous: Option<&Arc<Tracer>>,
        metrics: &Metrics,
    ) -> Option<Arc<Tracer>> {
        let config = config?;
        if let Some(p) = previous.filter(|p| p.config == *config) {
            return Some(p.clone());
        }
        let (queue, rx) = mpsc::channel(config.queue.max(1));
        let (flushes, flush_rx) = mpsc::channel(1);
        let outcome = |o: &str| metrics.trace_spans.with_label_values(&[o]);
        export::spawn(
            config,
            rx,
            flush_rx,
            export::Counters {
                exported: outcome("exported"),
                failed: outcome("failed"),
            },
        );
        Some(Arc::new(Tracer {
            threshold: (config.sampling < 1.0)
                .then_some((config.sampling * u64::MAX as f64) as u64),
            config: config.clone(),
            queue,
            flushes,
            dropped: outcome("dropped"),
        }))
    }

    /// Sends every span queued now to the collector, for a proxy about to
    /// exit: waits at most the export timeout in all. Returns whether the
    /// collector took them all in time.
    pub async fn flush(&self) -> bool {
        let wait = self.config.export_timeout.get();
        let (done, answered) = tokio::sync::oneshot::channel();
        let asked = async {
            self.flushes.send(done).await.ok()?;
            answered.await.ok()
        };
        matches!(tokio::time::timeout(wait, asked).await, Ok(Some(true)))
    }

    /// Starts the server span of `req`, when it is sampled: the request's
    /// `traceparent` if it has a valid one (its sampled flag decides), else
    /// a new trace sampled at the configured ratio. The request then
    /// carries the returned [`Traced`] (for its attempts) and a
    /// `traceparent` naming the server span. A new trace that is not
    /// sampled still gets a `traceparent` (not sampled), so the proxies and
    /// services after this one agree.
    pub fn start<B>(self: &Arc<Self>, req: &mut Request<B>) -> Option<Traced> {
        let mut rng = fastrand::Rng::new();
        let headers = req.headers_mut();
        let (trace_id, parent) = match self.join(headers.get(&TRACEPARENT), &mut rng) {
            Join::Sampled(trace_id, parent) => (trace_id, parent),
            Join::Unsampled(None) => return None,
            Join::Unsampled(Some(trace_id)) => {
                let span_id = context::new_span_id(&mut rng);
                headers.insert(&TRACEPARENT, context::format(&trace_id, &span_id, false));
                headers.remove(&TRACESTATE);
                return None;
            }
        };
        if parent.is_none() {
            headers.remove(&TRACESTATE);
        }
        let span_id = context::new_span_id(&mut rng);
        headers.insert(&TRACEPARENT, context::format(&trace_id, &span_id, true));
        let slot = Slot {
            tracer: self.clone(),
            trace_id,
            span_id,
            parent,
            trace_state: headers.get(&TRACESTATE).cloned(),
            host: headers.get(HOST).cloned(),
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            start_ns: unix_ns(),
            started: Instant::now(),
            attempts: AtomicU32::new(0),
            endpoint: AtomicUsize::new(usize::MAX),
        };
        let traced = Traced(Arc::new(slot));
        req.extensions_mut().insert(traced.clone());
        Some(traced)
    }

    /// The trace a request with this `traceparent` joins: the client's
    /// when the header is valid (its sampled flag decides), else a new one,
    /// sampled at the configured ratio.
    fn join(&self, traceparent: Option<&HeaderValue>, rng: &mut fastrand::Rng) -> Join {
        match traceparent.and_then(context::parse) {
            Some(Parent { sampled: false, .. }) => Join::Unsampled(None),
            Some(p) => Join::Sampled(p.trace_id, Some(p.span_id)),
            None => {
                let trace_id = context::new_trace_id(rng);
                if self.samples(&trace_id) {
                    Join::Sampled(trace_id, None)
                } else {
                    Join::Unsampled(Some(trace_id))
                }
            }
        }
    }

    /// Queues the server span of a request the proxy answered before it
    /// went anywhere (the edge middleware's answers: a CORS preflight, a
    /// 415), ending now, when it is sampled as [`Tracer::start`] would have
    /// sampled it. Such a request has no attempts and no backend.
    pub fn answered(&self, a: Unforwarded<'_>) {
        let mut rng = fastrand::Rng::new();
        let Join::Sampled(trace_id, parent) = self.join(a.head.traceparent.as_ref(), &mut rng)
        else {
            return;
        };
        let end_ns = unix_ns();
        self.submit(SpanRecord {
            kind: Kind::Server,
            trace_id,
            span_id: context::new_span_id(&mut rng),
            parent,
            trace_state: parent.and(a.head.tracestate.clone()),
            start_ns: end_ns.saturating_sub(elapsed_ns(a.started)),
            end_ns,
            method: a.method.clone(),
            path: a.head.path.clone(),
            host: a.head.host.clone(),
            status: Some(a.status.as_u16()),
            listener: Some(a.listener.clone()),
            route: a.route.cloned(),
            backend: None,
            endpoint: None,
            attempt: 0,
            error: a.error,
        });
    }

    fn samples(&self, trace_id: &TraceId) -> bool {
        let Some(threshold) = self.threshold else {
            return true;
        };
        let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or_default());
        low < threshold
    }

    /// Queues a finished span, or drops it when the queue is full.
    fn submit(&self, span: SpanRecord) {
        if self.queue.try_send(span).is_err() {
            self.dropped.inc();
        }
    }
}

/// The trace a request joins ([`Tracer::join`]).
enum Join {
    /// Sampled: the trace, and the client's span in it (none: a new trace).
    Sampled(TraceId, Option<SpanId>),
    /// Not sampled: a new trace's id, or none when the client's
    /// `traceparent` says not sampled.
    Unsampled(Option<TraceId>),
}

/// What the server span of a request answered at the edge needs of its
/// head, taken as it went through (only while tracing is on).
pub struct TraceHead {
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
    host: Option<HeaderValue>,
    path: Option<http::uri::PathAndQuery>,
}

impl TraceHead {
    pub fn of<B>(req: &Request<B>) -> Self {
        let h = req.headers();
        TraceHead {
            traceparent: h.get(&TRACEPARENT).cloned(),
            tracestate: h.get(&TRACESTATE).cloned(),
            host: h.get(HOST).cloned(),
            path: req.uri().path_and_query().cloned(),
        }
    }
}

/// A request the proxy answered before it went anywhere, for
/// [`Tracer::answered`].
pub struct Unforwarded<'a> {
    pub head: &'a TraceHead,
    pub method: &'a Method,
    pub started: Instant,
    pub status: StatusCode,
    /// The proxy's error cause, empty when none.
    pub error: &'static str,
    pub listener: &'a Arc<str>,
    pub route: Option<&'a Arc<str>>,
}

/// A sampled request being traced: what its server span needs at the end,
/// shared with the attempts (a request extension, copied to each attempt).
#[derive(Clone)]
pub struct Traced(Arc<Slot>);

struct Slot {
    tracer: Arc<Tracer>,
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    trace_state: Option<HeaderValue>,
    host: Option<HeaderValue>,
    method: Method,
    path: Option<http::uri::PathAndQuery>,
    start_ns: u64,
    started: Instant,
    /// Attempts made so far.
    attempts: AtomicU32,
    /// Index (in its backend) of the endpoint of the last attempt.
    endpoint: AtomicUsize,
}

/// How a traced request ended, for its server span.
pub struct End<'a> {
    pub status: StatusCode,
    /// The proxy's error cause, empty when none.
    pub error: &'static str,
    pub listener: &'a Arc<str>,
    pub route: Option<&'a Arc<str>>,
    pub backend: Option<&'a crate::balance::Backend>,
}

impl Traced {
    /// The trace a request carries, if it is traced.
    pub fn of<B>(req: &Request<B>) -> Option<&Traced> {
        req.extensions().get::<Traced>()
    }

    /// Starts the client span of an attempt to endpoint `index` of the
    /// backend: the request now carries a `traceparent` naming it.
    pub fn attempt<B>(&self, req: &mut Request<B>, index: usize) -> Attempt {
        let s = &self.0;
        let number = s.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        s.endpoint.store(index, Ordering::Relaxed);
        let span_id = context::new_span_id(&mut fastrand::Rng::new());
        req.headers_mut()
            .insert(&TRACEPARENT, context::format(&s.trace_id, &span_id, true));
        Attempt {
            slot: self.0.clone(),
            span_id,
            number,
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            start_ns: unix_ns(),
            started: Instant::now(),
        }
    }

    /// Ends and queues the server span.
    pub fn finish(self, end: End<'_>) {
        let s = &self.0;
        let endpoint = match (end.backend, s.endpoint.load(Ordering::Relaxed)) {
            (Some(b), i) => b.endpoints.get(i).map(|e| e.addr),
            (None, _) => None,
        };
        s.tracer.submit(SpanRecord {
            kind: Kind::Server,
            trace_id: s.trace_id,
            span_id: s.span_id,
            parent: s.parent,
            trace_state: s.trace_state.clone(),
            start_ns: s.start_ns,
            end_ns: s.start_ns + elapsed_ns(s.started),
            method: s.method.clone(),
            path: s.path.clone(),
            host: s.host.clone(),
            status: Some(end.status.as_u16()),
            listener: Some(end.listener.clone()),
            route: end.route.cloned(),
            backend: end.backend.map(|b| b.name.clone()),
            endpoint,
            attempt: s.attempts.load(Ordering::Relaxed),
            error: end.error,
        });
    }
}

/// The client span of one attempt, until its response head (or failure).
pub struct Attempt {
    slot: Arc<Slot>,
    span_id: SpanId,
    number: u32,
    method: Method,
    path: Option<http::uri::PathAndQuery>,
    start_ns: u64,
    started: Instant,
}

impl Attempt {
    /// Ends and queues the client span: the endpoint answered `status`, or
    /// the attempt failed with the proxy error cause `Err`.
    pub fn finish(
        self,
        result: Result<StatusCode, &'static str>,
        endpoint: SocketAddr,
        backend: &Arc<str>,
    ) {
        let s = &self.slot;
        s.tracer.submit(SpanRecord {
            kind: Kind::Client,
            trace_id: s.trace_id,
            span_id: self.span_id,
            parent: Some(s.span_id),
            trace_state: s.trace_state.clone(),
            start_ns: self.start_ns,
            end_ns: self.start_ns + elapsed_ns(self.started),
            method: self.method,
            path: self.path,
            host: None,
            status: result.ok().map(|s| s.as_u16()),
            listener: None,
            route: None,
            backend: Some(backend.clone()),
            endpoint: Some(endpoint),
            attempt: self.number,
            error: result.err().unwrap_or(""),
        });
    }
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn elapsed_ns(since: Instant) -> u64 {
    since.elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests;

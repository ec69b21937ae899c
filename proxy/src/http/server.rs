//! Serving one client connection: HTTP/1.1 and HTTP/2 on the same socket
//! (h2 preface or ALPN), each request routed and forwarded, then counted in
//! metrics and, when the proxy failed it, logged with its cause.

use super::body::ResponseBody;
use super::error::{error_response, Fault};
use super::proxy::{self, Downstream};
use crate::drain::Watch;
use crate::metrics::Metrics;
use crate::snapshot::Store;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntCounter;
use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// What every connection of one listener shares.
pub struct ListenerCtx {
    /// Index of this listener in every snapshot.
    pub index: usize,
    pub name: Arc<str>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Client connections open now.
    pub open: AtomicUsize,
    requests: IntCounter,
}

impl ListenerCtx {
    pub fn new(index: usize, name: Arc<str>, store: Store, metrics: Arc<Metrics>) -> Self {
        let requests = metrics.requests.with_label_values(&[&*name]);
        ListenerCtx {
            index,
            name,
            store,
            metrics,
            open: AtomicUsize::new(0),
            requests,
        }
    }

    async fn handle(&self, down: &Downstream, req: Request<Incoming>) -> Response<ResponseBody> {
        let started = Instant::now();
        self.requests.inc();
        // The one snapshot load of this request: kept to its end.
        let snapshot = self.store.load_full();
        let listener = &snapshot.listeners[self.index];
        let access = listener
            .access_log
            .then(|| (req.method().clone(), req.uri().clone(), req.version()));
        let tap = self.metrics.tap.see(&req, &self.name, down); // tap: the head, while someone taps
        let outcome = proxy::handle(listener, down, req).await;
        let route = outcome.route.as_deref().unwrap_or("");
        let backend = outcome.backend.as_deref().unwrap_or("");
        let (rsp, cause) = match outcome.result {
            Ok(rsp) => (rsp, ""),
            Err(e) => {
                let rsp = error_response(&e);
                let status = rsp.status().as_u16();
                match e.fault() {
                    Fault::Upstream => tracing::warn!(
                        listener = %self.name, route, backend, status, error = e.cause(), detail = %e, "request failed"
                    ),
                    _ => tracing::debug!(
                        listener = %self.name, route, backend, status, error = e.cause(), detail = %e, "request refused"
                    ),
                }
                (rsp, e.cause())
            }
        };
        if let Some(seen) = tap {
            self.metrics.tap.publish(seen, route, backend, &rsp, cause); // tap: the summary
        }
        if let Some((method, uri, version)) = access {
            tracing::info!(
                target: "remora_proxy::access",
                listener = %self.name, route, backend, client = %down.client, tls = down.tls,
                client_id = down.client_id.as_deref().unwrap_or(""),
                method = %method, path = uri.path(), version = ?version,
                status = rsp.status().as_u16(), error = cause,
                duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request"
            );
        }
        let m = &self.metrics;
        match cause {
            "rate-limited" => m
                .rate_limited
                .with_label_values(&[&*self.name, route])
                .inc(),
            "fault-injected" => m
                .faults
                .with_label_values(&[&*self.name, route, "abort"])
                .inc(),
            "forbidden" => {
                m.authorization_denials
                    .with_label_values(&[&*self.name, route])
                    .inc();
                tracing::info!(
                    listener = %self.name, route, client = %down.client,
                    client_id = down.client_id.as_deref().unwrap_or("none"),
                    "request denied by the authorization policy"
                );
            }
            _ => {}
        }
        if outcome.delayed {
            m.faults
                .with_label_values(&[&*self.name, route, "delay"])
                .inc();
        }
        let elapsed = started.elapsed().as_secs_f64();
        // The route's handles for the common outcome; else a label lookup.
        let status = rsp.status();
        let responses = || {
            m.responses
                .with_label_values(&[&*self.name, route, backend, status.as_str(), cause])
        };
        let ok = status == http::StatusCode::OK && cause.is_empty();
        match outcome.metrics {
            Some(h) if ok => h.ok.get_or_init(responses).inc(),
            _ => responses().inc(),
        }
        let duration = || m.duration.with_label_values(&[&*self.name, route, backend]);
        match outcome.metrics {
            Some(h) => h.duration.get_or_init(duration).observe(elapsed),
            None => duration().observe(elapsed),
        }
        rsp
    }
}

/// Serves HTTP on one accepted (and, with TLS, handshaken) connection until
/// the client closes it or a drain finishes it.
pub async fn serve<I>(
    ctx: Arc<ListenerCtx>,
    io: I,
    down: Downstream,
    limits: &remora_api::Limits,
    mut drain: Watch,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = down.client;
    let peer = down.client_id.is_some(); // h2-peers
    let svc = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        let down = down.clone();
        // h2-peers: a peer's HTTP/1.1 request, carried over HTTP/2, is HTTP/1.1 again.
        let req = super::orig_proto::restore(req);
        async move { Ok::<_, Infallible>(ctx.handle(&down, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.get())
        .max_buf_size(limits.max_request_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_request_header_bytes.min(u32::MAX as usize) as u32);
    if peer {
        super::peer::tune_server(&mut builder, limits); // h2-peers
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = drain.signaled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%client, error = %e, "client connection ended with an error");
    }
}

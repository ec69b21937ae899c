//! Serving one client connection: HTTP/1.1 and HTTP/2 on the same socket
//! (h2 preface or ALPN), each request through the layer stack
//! ([`super::stack`]). The HTTP/1.1 header read timeout: [`super::head_timer`].

use super::call::Downstream;
use super::stack::UserLayers;
use crate::drain::Watch;
use crate::metrics::Metrics;
use crate::snapshot::Store;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prometheus::IntCounter;
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// What every connection of one listener shares.
pub struct ListenerCtx {
    /// Index of this listener in every snapshot.
    pub index: usize,
    pub name: Arc<str>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Client connections open now.
    pub open: AtomicUsize,
    /// Requests taken (counted by the observe layer).
    pub(crate) requests: IntCounter,
    /// The library user's layers (see [`UserLayers`]).
    pub user_layers: UserLayers,
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
            user_layers: UserLayers::default(),
        }
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
    let svc = TowerToHyperService::new(super::stack::build(ctx, down));
    // The header read timeout's one sleep for the connection (perf, issue
    // 12): see `head_timer`.
    let (head_timer, watchdog) = super::head_timer::new(limits.header_read_timeout.get());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(head_timer)
        .header_read_timeout(limits.header_read_timeout.get())
        .max_buf_size(limits.max_request_header_bytes.max(8192))
        .writev(false); // perf: one write per response, not a writev (issue 12)
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_request_header_bytes.min(u32::MAX as usize) as u32);
    if peer {
        super::peer::tune_server(&mut builder, limits); // h2-peers
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    let mut signaled = std::pin::pin!(drain.signaled());
    let mut watchdog = std::pin::pin!(watchdog);
    let mut draining = false;
    // One task polls the watchdog and, after it, the connection: the
    // watchdog's sleep wakes the task for hyper's head timer.
    let result = std::future::poll_fn(|cx| {
        if !draining && signaled.as_mut().poll(cx).is_ready() {
            conn.as_mut().graceful_shutdown();
            draining = true;
        }
        watchdog.as_mut().poll(cx);
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(%client, error = %e, "client connection ended with an error");
    }
}

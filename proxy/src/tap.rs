//! Tap: a live, filtered stream of request summaries (listener, route,
//! backend, endpoint, method, authority, path, status, latency, peer
//! identity, error cause), like `linkerd tap`: `GET /tap` on the admin port
//! streams NDJSON (`tap/http.rs`), `remora-proxy tap` prints it
//! (`tap/cli.rs`).
//!
//! Cost when nobody listens: one relaxed atomic load per request
//! ([`Hub::see`]). While someone listens, each request copies its head
//! once and publishes one summary to a bounded broadcast channel; a slow
//! listener loses the oldest summaries (it is told how many), and the
//! request path never waits. Every stream is bounded in count and time
//! ([`filter`]), and at most [`MAX_STREAMS`] run at once.

pub mod cli;
pub mod filter;
pub mod http;

use crate::http::call::Downstream;
use ::http::Request;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Summaries a stream may fall behind by before it loses the oldest.
const BUFFER: usize = 1024;
/// Tap streams open at once, at most.
pub const MAX_STREAMS: usize = 16;

/// Where requests are published to whoever taps. Lives in `Metrics`.
pub struct Hub {
    streams: AtomicUsize,
    tx: broadcast::Sender<Arc<Summary>>,
}

/// One request, as tap shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// Seconds since the Unix epoch when the request came in.
    pub time: f64,
    pub listener: String,
    #[serde(default)]
    pub route: String,
    #[serde(default)]
    pub backend: String,
    /// The endpoint that answered, when one did.
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub status: u16,
    pub latency_ms: f64,
    pub client: SocketAddr,
    /// The client's mesh identity (SPIFFE ID), when it proved one.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The proxy's error cause (as in `remora-error`); empty on success.
    #[serde(default)]
    pub error: String,
}

/// A request's head and its client, copied when it came in because
/// someone taps.
pub struct Seen {
    time: SystemTime,
    started: Instant,
    listener: Arc<str>,
    client: SocketAddr,
    client_id: Option<Arc<str>>,
    method: ::http::Method,
    authority: String,
    path: String,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            streams: AtomicUsize::new(0),
            tx: broadcast::channel(BUFFER).0,
        }
    }
}

impl Hub {
    /// The request's head if anyone listens; else `None` for one relaxed load.
    #[inline]
    pub fn see<B>(&self, req: &Request<B>, listener: &Arc<str>, down: &Downstream) -> Option<Seen> {
        if self.streams.load(Relaxed) == 0 {
            return None;
        }
        let authority = match req.uri().authority() {
            Some(a) => a.as_str().to_string(),
            None => req
                .headers()
                .get(::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string(),
        };
        Some(Seen {
            time: SystemTime::now(),
            started: Instant::now(),
            listener: listener.clone(),
            client: down.client,
            client_id: down.client_id.clone(),
            method: req.method().clone(),
            authority,
            path: req.uri().path().to_string(),
        })
    }

    /// Publishes a request seen by [`Hub::see`] with its outcome (`error`:
    /// the proxy's cause, empty on success); never waits.
    pub fn publish(
        &self,
        seen: Seen,
        route: &str,
        backend: &str,
        status: ::http::StatusCode,
        endpoint: Option<std::net::SocketAddr>,
        error: &str,
    ) {
        let summary = Summary {
            time: seen
                .time
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            listener: seen.listener.to_string(),
            route: route.into(),
            backend: backend.into(),
            endpoint,
            method: seen.method.to_string(),
            authority: seen.authority,
            path: seen.path,
            status: status.as_u16(),
            latency_ms: seen.started.elapsed().as_secs_f64() * 1000.0,
            client: seen.client,
            client_id: seen.client_id.as_deref().map(str::to_string),
            error: error.into(),
        };
        // No stream left is fine: it just ended.
        let _ = self.tx.send(Arc::new(summary));
    }

    /// A new stream, or `None` when [`MAX_STREAMS`] are open.
    pub fn subscribe(self: &Arc<Self>) -> Option<Stream> {
        let taken = self
            .streams
            .fetch_update(Relaxed, Relaxed, |n| (n < MAX_STREAMS).then_some(n + 1));
        taken.ok()?;
        Some(Stream {
            rx: self.tx.subscribe(),
            hub: self.clone(),
        })
    }
}

/// One listener's receiving end; counted in the hub until dropped.
pub struct Stream {
    pub rx: broadcast::Receiver<Arc<Summary>>,
    hub: Arc<Hub>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.hub.streams.fetch_sub(1, Relaxed);
    }
}

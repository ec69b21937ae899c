//! The admin server (default 127.0.0.1:4191): `/live`, `/ready`,
//! `/metrics`, `/config`, `/explain` (where a request would go, and why:
//! `explain.rs`), `/tap` (requests as they finish: `tap.rs`), `/log-level` and `POST /shutdown` (graceful
//! shutdown, for the app of a Job whose proxy is a regular container). It
//! keeps answering while the proxy drains, so `/ready` can say so.
//!
//! Endpoints that change state (`PUT /log-level`, `POST /shutdown`) answer only clients on
//! loopback, unless `admin.allow_remote_changes` (or, in sidecar mode,
//! `--admin-allow-remote-changes`) says otherwise: binding the admin server
//! to `0.0.0.0` for probes and scrapes does not open them to the network.
//! [`peer_may_change`] is the one rule; every such endpoint asks it.
//! `/tap` shows live requests (paths, peers, identities), so it follows the
//! same rule with its own switch, `admin.allow_remote_tap`
//! ([`refuse_tap`]): `kubectl port-forward` reaches it as loopback.

use crate::metrics::Metrics;
use crate::snapshot::Store;
use crate::telemetry::LogLevel;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Readiness: starting → ready → draining, and never back.
pub struct Readiness(AtomicU8);

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Default for Readiness {
    fn default() -> Self {
        Readiness(AtomicU8::new(STARTING))
    }
}

impl Readiness {
    pub fn set_ready(&self) {
        let _ = self
            .0
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }
    pub fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }
    fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct Admin {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub log_level: LogLevel,
    /// Notified by `POST /shutdown`: the binary then shuts down as on SIGTERM.
    pub shutdown: Arc<tokio::sync::Notify>,
}

/// The body of every admin response: whole, or streamed (`/tap`).
pub type Body = BoxBody<Bytes, Infallible>;

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut rsp = Response::new(Full::new(body.into()).boxed());
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

pub fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    let mut rsp = text(status, serde_json::to_vec_pretty(body).unwrap_or_default());
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    rsp
}

/// Whether a client at `peer` may call an endpoint that changes state:
/// always from loopback (127.0.0.0/8, ::1, and ::ffff:127.0.0.0/104 as a
/// dual-stack socket sees IPv4 loopback), from anywhere with `allow_remote`.
pub fn peer_may_change(peer: SocketAddr, allow_remote: bool) -> bool {
    allow_remote
        || match peer.ip() {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        }
}

/// The 403 for a state-changing request from a peer that may not make it,
/// or `None` when the request may go on.
fn refuse_change(
    method: &Method,
    path: &str,
    peer: SocketAddr,
    allow_remote: bool,
) -> Option<Response<Body>> {
    let changes = matches!(
        (method, path),
        (&Method::PUT, "/log-level") | (&Method::POST, "/shutdown")
    );
    if !changes || peer_may_change(peer, allow_remote) {
        return None;
    }
    tracing::warn!(%peer, %method, path, "admin change refused: the client is not on loopback");
    Some(text(
        StatusCode::FORBIDDEN,
        "changes are allowed only from localhost; set admin.allow_remote_changes: true \
         (sidecar mode: --admin-allow-remote-changes) to allow them from elsewhere\n",
    ))
}

/// The 403 for `/tap` from a peer off loopback while `allow_remote_tap`
/// is off, or `None` when the request may go on.
fn refuse_tap(path: &str, peer: SocketAddr, allow_remote: bool) -> Option<Response<Body>> {
    if path != "/tap" || peer_may_change(peer, allow_remote) {
        return None;
    }
    tracing::warn!(%peer, "tap refused: the client is not on loopback");
    Some(text(
        StatusCode::FORBIDDEN,
        "tap is allowed only from localhost (kubectl port-forward arrives as localhost); \
         set admin.allow_remote_tap: true to allow it from elsewhere\n",
    ))
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let (allow_changes, allow_tap) = {
            let admin = &self.store.load().config.admin;
            (admin.allow_remote_changes, admin.allow_remote_tap)
        };
        let path = req.uri().path();
        let refused = refuse_change(req.method(), path, peer, allow_changes)
            .or_else(|| refuse_tap(path, peer, allow_tap));
        if let Some(refused) = refused {
            return refused;
        }
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/shutdown") => {
                tracing::info!(%peer, "shutdown requested on the admin port");
                self.readiness.set_draining();
                self.shutdown.notify_one();
                text(StatusCode::ACCEPTED, "shutting down\n")
            }
            (_, "/shutdown") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
            (&Method::GET, "/ready") => match self.readiness.get() {
                READY => text(StatusCode::OK, "ready\n"),
                DRAINING => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
                _ => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
            },
            (&Method::GET, "/metrics") => {
                let mut rsp = text(StatusCode::OK, self.metrics.encode());
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                );
                rsp
            }
            (&Method::GET, "/config") => {
                let snap = self.store.load_full();
                let body = serde_json::json!({ "version": snap.version, "config": &*snap.config });
                json(StatusCode::OK, &body)
            }
            (_, "/explain") => crate::explain::http::handle(&self.store, req).await,
            (method, "/tap") => {
                crate::tap::http::handle(&self.metrics.tap, method, req.uri().query().unwrap_or(""))
            }
            (&Method::GET, "/log-level") => {
                text(StatusCode::OK, format!("{}\n", self.log_level.get()))
            }
            (&Method::PUT, "/log-level") => {
                let body = match Limited::new(req.into_body(), 4096).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return text(StatusCode::BAD_REQUEST, "body too large\n"),
                };
                let filter = String::from_utf8_lossy(&body);
                match self.log_level.set(filter.trim()) {
                    Ok(()) => {
                        tracing::info!(filter = %filter.trim(), "log level changed");
                        text(StatusCode::OK, format!("{}\n", self.log_level.get()))
                    }
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("invalid filter: {e}\n")),
                }
            }
            (_, "/live" | "/ready" | "/metrics" | "/config") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
            }
            (_, "/log-level") => text(StatusCode::METHOD_NOT_ALLOWED, "use GET or PUT\n"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /live /ready /metrics /config /explain /tap /log-level /shutdown\n",
            ),
        }
    }
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::drain::stopped(&mut stop) => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req, peer).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests;

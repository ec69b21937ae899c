//! Connections to one endpoint: pooled keep-alive HTTP/1.1 connections and one
//! multiplexed HTTP/2 connection, over TCP or TLS, opened with a timeout.
//!
//! The pool is a lock-free queue of idle HTTP/1.1 senders. A sender goes back
//! to it as soon as its response body has been read to the end (the
//! [`Checkin`] travels with the response, in its [`InFlight`]), before the
//! last bytes reach the client: the client's next request on the same
//! connection finds it there. A response dropped before its end takes its
//! connection with it. Connections idle longer than the idle timeout are
//! closed by [`EndpointClient::evict_idle`] or on checkout. The queue is
//! allocated when the first sender goes back to it: most endpoints of a
//! large snapshot are never used, and 100,000 queues of 64 slots would take
//! about 400 MB.
//!
//! To another Remora proxy (an endpoint with a mesh identity), HTTP/1.1
//! requests too go over the one HTTP/2 connection when the peer accepts
//! ALPN `h2`: see [`mesh`].
//!
//! [`InFlight`]: crate::balance::InFlight

mod conn;
mod mesh;

pub use conn::Conn;

use super::body::RequestBody;
use super::error::ProxyError;
use crate::balance::{now_ns, ns_at, Breaker, Overflow, Slot};
use crate::metrics::UpstreamMetrics;
use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use remora_api::CircuitBreaker;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How to reach an endpoint: plain TCP, or TLS with these settings.
#[derive(Clone)]
pub struct Transport {
    pub tls: Option<UpstreamTls>,
    /// With `tls`: the SPIFFE ID the endpoint must prove (mesh mutual TLS).
    pub identity: Option<Arc<str>>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

impl Transport {
    /// Plaintext, 1 s connect timeout, 90 s idle, one idle connection: for
    /// tests and benchmarks whose endpoints are never dialled.
    pub fn plain() -> Self {
        Transport {
            tls: None,
            identity: None,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(90),
            max_idle: 1,
        }
    }
}

#[derive(Clone)]
pub struct UpstreamTls {
    /// ALPN `http/1.1`.
    pub h1: Arc<rustls::ClientConfig>,
    /// ALPN `h2`.
    pub h2: Arc<rustls::ClientConfig>,
    /// ALPN `h2` and `http/1.1`: to a mesh peer with `pool.mesh_http2`.
    pub mesh: Option<Arc<rustls::ClientConfig>>,
    pub server_name: ServerName<'static>,
}

/// Which HTTP version to speak to the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

struct Idle {
    tx: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// How long a checkout waits for a pooled connection to be ready again.
const READY_WAIT: Duration = Duration::from_millis(100);

/// An HTTP/1.1 sender on loan to a response.
pub struct Checkin {
    tx: http1::SendRequest<RequestBody>,
    pool: Arc<ArrayQueue<Idle>>,
}

impl Checkin {
    /// Back to the pool (a full pool drops, so closes, the connection). The
    /// connection may take a moment to be ready again: checkout waits.
    pub fn finish(self) {
        let _ = self.pool.push(Idle {
            tx: self.tx,
            since: Instant::now(),
        });
    }
}

pub struct EndpointClient {
    addr: SocketAddr,
    transport: Transport,
    /// The pool; empty until a connection is first checked in.
    idle: OnceLock<Arc<ArrayQueue<Idle>>>,
    h2: ArcSwapOption<http2::SendRequest<RequestBody>>,
    h2_connecting: tokio::sync::Mutex<()>,
    /// When the HTTP/2 connection last started a request ([`now_ns`]).
    h2_last_used: AtomicU64,
    /// Until when ([`now_ns`]) this mesh peer is known not to take ALPN
    /// `h2`: HTTP/1.1 requests stay on HTTP/1.1 until then.
    mesh_h1_until: AtomicU64,
    metrics: UpstreamMetrics,
}

impl EndpointClient {
    pub fn new(addr: SocketAddr, transport: Transport, metrics: UpstreamMetrics) -> Self {
        EndpointClient {
            addr,
            idle: OnceLock::new(),
            transport,
            h2: ArcSwapOption::empty(),
            h2_connecting: tokio::sync::Mutex::new(()),
            h2_last_used: AtomicU64::new(0),
            mesh_h1_until: AtomicU64::new(0),
            metrics,
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn idle_connections(&self) -> usize {
        self.idle.get().map_or(0, |pool| pool.len())
    }

    /// Sends a request; `upgrade` requests get a connection of their own.
    /// New connections count against the backend's circuit breaker. An
    /// HTTP/1.1 response comes with the [`Checkin`] of its pooled connection.
    ///
    /// Every path that opens a connection boxes that future (`Box::pin`):
    /// opening is rare (connections are pooled or shared), and unboxed, the
    /// TCP connect and TLS handshake would make this future, which every
    /// request in flight holds, that much larger.
    ///
    /// The request stays boxed until hyper takes it: each `async fn` it
    /// passes through keeps its arguments in its own state, and a box is
    /// one pointer to copy instead of a whole request (perf, issue 12).
    pub async fn send(
        &self,
        req: Box<http::Request<RequestBody>>,
        proto: Proto,
        upgrade: bool,
        breaker: &Arc<Breaker>,
        limits: &CircuitBreaker,
        now: Instant,
    ) -> Result<(http::Response<Incoming>, Option<Checkin>), ProxyError> {
        let limits = Limits {
            breaker,
            limits,
            now,
        };
        match proto {
            Proto::Http2 => self.send_h2(req, limits).await.map(|rsp| (rsp, None)),
            Proto::Http1 if !upgrade && self.mesh_h2(&req) => self.send_mesh(req, limits).await,
            Proto::Http1 if upgrade => {
                let mut tx = Box::pin(self.connect_h1(limits)).await?;
                tx.send_request(*req)
                    .await
                    .map(|rsp| (rsp, None))
                    .map_err(|source| self.upstream_error(source))
            }
            Proto::Http1 => self.send_h1(req, limits).await,
        }
    }

    async fn send_h1(
        &self,
        req: Box<http::Request<RequestBody>>,
        limits: Limits<'_>,
    ) -> Result<(http::Response<Incoming>, Option<Checkin>), ProxyError> {
        let (mut tx, reused) = match self.checkout(limits.now).await {
            Some(tx) => (tx, true),
            None => (Box::pin(self.connect_h1(limits)).await?, false),
        };
        let req = match tx.try_send_request(*req).await {
            Ok(rsp) => return Ok((rsp, self.checkin(tx))),
            Err(mut e) => match e.take_message() {
                // A pooled connection closed before the request was written:
                // safe to send it once more on a new connection.
                Some(req) if reused => req,
                _ => return Err(self.upstream_error(e.into_error())),
            },
        };
        let mut tx = Box::pin(self.connect_h1(limits)).await?;
        let rsp = tx
            .send_request(req)
            .await
            .map_err(|source| self.upstream_error(source))?;
        Ok((rsp, self.checkin(tx)))
    }

    /// A pooled sender idle for less than the idle timeout. One checked in
    /// at the end of its response body may need a moment for its connection
    /// to take the next request: waited for, at most [`READY_WAIT`] (more
    /// means its request body is still being sent: an upstream that answered
    /// early; that connection is let go).
    async fn checkout(&self, now: Instant) -> Option<http1::SendRequest<RequestBody>> {
        let pool = self.idle.get()?;
        while let Some(mut idle) = pool.pop() {
            let idle_for = now.saturating_duration_since(idle.since);
            if idle_for >= self.transport.idle_timeout || idle.tx.is_closed() {
                continue;
            }
            if idle.tx.is_ready() {
                return Some(idle.tx);
            }
            let ready = tokio::time::timeout(READY_WAIT, idle.tx.ready());
            if matches!(ready.await, Ok(Ok(()))) {
                return Some(idle.tx);
            }
        }
        None
    }

    /// The loan of `tx` to its response, or `None` when pooling is off (the
    /// connection closes after this response).
    fn checkin(&self, tx: http1::SendRequest<RequestBody>) -> Option<Checkin> {
        if self.transport.max_idle == 0 {
            return None;
        }
        // Allocated once per endpoint, with its first pooled connection.
        let size = self.transport.max_idle;
        let pool = self.idle.get_or_init(|| Arc::new(ArrayQueue::new(size)));
        Some(Checkin {
            tx,
            pool: pool.clone(),
        })
    }

    /// Closes pooled connections idle for longer than the idle timeout. An
    /// idle HTTP/2 connection is let go: requests still running on it keep
    /// their own handle, and it closes when the last one finishes.
    pub fn evict_idle(&self) {
        let idle_ns = self.transport.idle_timeout.as_nanos() as u64;
        if self.h2.load().is_some()
            && now_ns().saturating_sub(self.h2_last_used.load(Relaxed)) > idle_ns
        {
            self.h2.store(None);
        }
        let Some(pool) = self.idle.get() else {
            return;
        };
        for _ in 0..pool.len() {
            match pool.pop() {
                Some(i) if i.since.elapsed() < self.transport.idle_timeout && !i.tx.is_closed() => {
                    let _ = pool.push(i);
                }
                Some(_) => {}
                None => break,
            }
        }
    }

    async fn send_h2(
        &self,
        req: Box<http::Request<RequestBody>>,
        limits: Limits<'_>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let tx = match self.h2.load_full() {
            Some(tx) if !tx.is_closed() => (*tx).clone(),
            _ => Box::pin(self.connect_h2(limits)).await?,
        };
        self.send_on_h2(tx, *req, limits.now).await
    }

    async fn send_on_h2(
        &self,
        mut tx: http2::SendRequest<RequestBody>,
        req: http::Request<RequestBody>,
        now: Instant,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        self.h2_last_used.store(ns_at(now), Relaxed);
        tx.ready()
            .await
            .map_err(|source| self.upstream_error(source))?;
        tx.send_request(req)
            .await
            .map_err(|source| self.upstream_error(source))
    }

    async fn connect_h2(
        &self,
        limits: Limits<'_>,
    ) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        let _one_at_a_time = self.h2_connecting.lock().await;
        if let Some(tx) = self.h2.load_full() {
            if !tx.is_closed() {
                return Ok((*tx).clone());
            }
        }
        let (io, slot) = self.connect(Offer::Only(Proto::Http2), limits).await?;
        self.handshake_h2(io, slot).await
    }

    /// Starts HTTP/2 on `io` and makes it the endpoint's shared connection.
    /// To a mesh peer, with the peer tuning (a large connection window).
    async fn handshake_h2(
        &self,
        io: Conn,
        slot: Slot,
    ) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20));
        if self.transport.identity.is_some() {
            super::peer::tune_client(&mut builder);
        }
        let (tx, conn) = builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| self.upstream_error(source))?;
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
        self.h2.store(Some(Arc::new(tx.clone())));
        Ok(tx)
    }

    async fn connect_h1(
        &self,
        limits: Limits<'_>,
    ) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
        let (io, slot) = self.connect(Offer::Only(Proto::Http1), limits).await?;
        self.handshake_h1(io, slot).await
    }

    async fn handshake_h1(
        &self,
        io: Conn,
        slot: Slot,
    ) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
        let (tx, conn) = http1::Builder::new()
            // One buffer per write (head and small body copied together):
            // one `write` syscall instead of a `writev`, cheaper per request.
            .writev(false)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| self.upstream_error(source))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
            drop(slot);
        });
        Ok(tx)
    }

    /// Opens a connection, holding a connection slot of the circuit
    /// breaker for its lifetime and a pending slot while it is opened.
    async fn connect(&self, offer: Offer, limits: Limits<'_>) -> Result<(Conn, Slot), ProxyError> {
        let overloaded = |limit: Overflow| ProxyError::Overloaded {
            backend: self.metrics.backend().clone(),
            limit: limit.as_str(),
        };
        let slot = limits
            .breaker
            .acquire(Overflow::Connections, limits.limits.max_connections)
            .map_err(overloaded)?;
        let _pending = limits
            .breaker
            .acquire(Overflow::Pending, limits.limits.max_pending_requests)
            .map_err(overloaded)?;
        let addr = self.addr;
        let after = self.transport.connect_timeout;
        let result = tokio::time::timeout(after, async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| ProxyError::Connect { addr, source })?;
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &self.transport.tls else {
                return Ok(Conn::Plain(tcp));
            };
            let config = match (offer, &tls.mesh) {
                (Offer::Only(Proto::Http1), _) | (Offer::Mesh, None) => tls.h1.clone(),
                (Offer::Only(Proto::Http2), _) => tls.h2.clone(),
                (Offer::Mesh, Some(mesh)) => mesh.clone(),
            };
            tokio_rustls::TlsConnector::from(config)
                .connect(tls.server_name.clone(), tcp)
                .await
                .map(|s| Conn::Tls(Box::new(s)))
                .map_err(
                    |source| match crate::identity::tls::identity_mismatch(&source) {
                        Some(m) => ProxyError::IdentityMismatch {
                            addr,
                            mismatch: crate::identity::tls::IdentityMismatch {
                                expected: m.expected.clone(),
                                found: m.found.clone(),
                            },
                        },
                        None => ProxyError::UpstreamTls { addr, source },
                    },
                )
        })
        .await
        .unwrap_or(Err(ProxyError::ConnectTimeout { addr, after }));
        match &result {
            Ok(conn) => self.metrics.connected(match offer {
                Offer::Only(proto) => proto,
                Offer::Mesh if conn.is_h2() => Proto::Http2,
                Offer::Mesh => Proto::Http1,
            }),
            Err(e) => self.metrics.connect_failed(e.cause()),
        }
        result.map(|conn| (conn, slot))
    }

    fn upstream_error(&self, source: hyper::Error) -> ProxyError {
        ProxyError::Upstream {
            addr: self.addr,
            source,
        }
    }
}

/// The circuit breaker of the backend a request goes to, with its limits,
/// and when the attempt started (the clock read once per attempt).
#[derive(Clone, Copy)]
struct Limits<'a> {
    breaker: &'a Arc<Breaker>,
    limits: &'a CircuitBreaker,
    now: Instant,
}

/// The ALPN a new connection offers.
#[derive(Clone, Copy)]
enum Offer {
    /// Just this protocol's (none in plaintext).
    Only(Proto),
    /// `h2` and `http/1.1`, to a mesh peer: the peer picks.
    Mesh,
}

//! Opaque TCP: a client connection forwarded byte for byte to a [`Target`]:
//! one endpoint of the listener's `tcp_backend`, or, on a transparent
//! (`original_destination`) listener, the address the client dialed.
//!
//! For `tcp_backend` the endpoint is chosen per connection by the backend's
//! balancer, skipping ejected and unhealthy endpoints. The connection holds
//! a slot of the backend's circuit breaker (`max_connections`) and counts as
//! in flight on its endpoint for as long as it lives. A failed connect
//! (refused, timed out, TLS) is reported to outlier detection and another
//! endpoint is tried, up to [`MAX_ATTEMPTS`] in all. Endpoints reached over
//! TLS (a backend's `tls`, or mesh identities) get TLS here too, without
//! ALPN. An original destination that is an endpoint of the snapshot is
//! that one endpoint, with the same transport, breaker and outlier
//! reporting, and no other endpoint is tried; one that a route names in
//! `match.destinations` (a ClusterIP) is its backend's, balanced as for
//! `tcp_backend`; any other address is reached directly in plaintext and
//! counted under the backend label [`PASSTHROUGH`].
//!
//! Bytes are copied both ways with half-close: when one side ends its
//! writing, the other side's write half is shut down and the copy goes on
//! the other way until that side ends too.

use crate::balance::{now_ns, Backend, Endpoint, InFlight, Overflow};
use crate::drain::Watch;
use crate::http::call::Downstream;
use crate::http::client::Conn;
use crate::http::error::ProxyError;
use crate::http::server::ListenerCtx;
use crate::listen::Plan;
use crate::metrics::TcpMetrics;
use prometheus::{IntCounter, IntGauge};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Endpoints tried for one connection (fewer if the backend has fewer).
pub const MAX_ATTEMPTS: usize = 3;

/// The `backend` label of connections to a [`Target::Direct`] address.
pub const PASSTHROUGH: &str = "passthrough";

/// Where an opaque connection goes.
pub enum Target {
    /// An endpoint of this backend, chosen by its balancer (`tcp_backend`).
    Balanced(Arc<Backend>),
    /// This endpoint of its backend: an original destination the snapshot
    /// knows.
    Endpoint(Arc<Backend>, Arc<Endpoint>),
    /// An address the snapshot does not know, connected to in plaintext:
    /// an unmeshed original destination, or the local app behind a
    /// transparent inbound listener.
    Direct(SocketAddr),
}

impl Target {
    /// The `backend` metric and log label.
    fn label(&self) -> &str {
        match self {
            Target::Balanced(b) | Target::Endpoint(b, _) => &b.name,
            Target::Direct(_) => PASSTHROUGH,
        }
    }
}

/// Where an opaque connection goes. Redirected to a transparent listener:
/// on an inbound listener the local app on `127.0.0.1` at the original
/// port; else the original destination, as the snapshot's endpoint there
/// when it has one, or as the backend of the route that names it in
/// `match.destinations` (a ClusterIP: balanced over the service's
/// endpoints). Otherwise `tcp_backend`.
pub fn target(plan: &Plan) -> Option<Target> {
    Some(match choice(plan)? {
        Choice::LocalApp(addr) | Choice::Passthrough(addr) => Target::Direct(addr),
        Choice::Endpoint(backend, ep) => Target::Endpoint(backend.clone(), ep.clone()),
        Choice::Destination(d) => Target::Balanced(d.split.pick(&mut fastrand::Rng::new()).clone()),
        Choice::TcpBackend(backend) => Target::Balanced(backend.clone()),
    })
}

/// [`target`]'s choice before any draw: what `/explain` shows.
pub enum Choice<'a> {
    /// Redirected to an inbound listener: the app at this address.
    LocalApp(SocketAddr),
    /// The original destination is this endpoint of the snapshot.
    Endpoint(&'a Arc<Backend>, &'a Arc<Endpoint>),
    /// The original destination is in a route's `match.destinations`.
    Destination(&'a crate::http::router::TcpDestination),
    /// The original destination, unknown to the snapshot: in plaintext.
    Passthrough(SocketAddr),
    /// Not redirected: the listener's `tcp_backend`.
    TcpBackend(&'a Arc<Backend>),
}

/// Where [`target`] sends a connection of `plan`, before any draw.
pub fn choice(plan: &Plan) -> Option<Choice<'_>> {
    match (plan.destination, &plan.original_destination) {
        (Some(dst), Some(_)) if plan.inbound.is_some() => Some(Choice::LocalApp(SocketAddr::from(
            ([127, 0, 0, 1], dst.port()),
        ))),
        (Some(dst), Some(index)) => Some(match index.get(&dst) {
            Some((backend, ep)) => Choice::Endpoint(backend, ep),
            None => match plan.tcp_destinations.as_ref().and_then(|d| d.get(&dst)) {
                Some(d) => Choice::Destination(d),
                None => Choice::Passthrough(dst),
            },
        }),
        _ => plan.tcp_backend.as_ref().map(Choice::TcpBackend),
    }
}

/// Forwards `client` to `target` until both sides are done. `_drain` is
/// held for the connection's life: a drain waits for it until the drain
/// deadline, when the process exits and closes it.
pub async fn forward<I>(
    ctx: &ListenerCtx,
    client: I,
    down: Downstream,
    target: Target,
    _drain: Watch,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let backend = target.label();
    let m = ctx.metrics.tcp(&ctx.name, backend);
    m.connections.inc();
    let _open = Open::new(m.open.clone());
    let connected = match &target {
        Target::Balanced(b) => connect(b, &m).await.map(|(c, a, f)| (c, a, Some(f))),
        Target::Endpoint(b, ep) => connect_to(b, ep, &m)
            .await
            .map(|(c, f)| (c, ep.addr, Some(f))),
        Target::Direct(addr) => direct(*addr, &m).await.map(|c| (c, *addr, None)),
    };
    let (upstream, endpoint, in_flight) = match connected {
        Ok(c) => c,
        Err(e) => {
            match e {
                ProxyError::Overloaded { .. } => tracing::debug!(
                    listener = %ctx.name, backend, client = %down.client,
                    error = e.cause(), detail = %e, "opaque TCP connection refused"
                ),
                _ => tracing::warn!(
                    listener = %ctx.name, backend, client = %down.client,
                    error = e.cause(), detail = %e, "opaque TCP connection failed"
                ),
            }
            return;
        }
    };
    let mut client = Counted::new(client, m.to_upstream);
    let mut upstream = Counted::new(upstream, m.to_client);
    let result = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    match result {
        Ok((sent, received)) => tracing::debug!(
            listener = %ctx.name, backend, %endpoint, client = %down.client,
            sent, received, "opaque TCP connection closed"
        ),
        Err(e) => tracing::debug!(
            listener = %ctx.name, backend, %endpoint, client = %down.client,
            error = %e, "opaque TCP connection ended with an error"
        ),
    }
    drop(in_flight);
}

/// Opens a connection to an endpoint of `backend`, trying others when one
/// fails; holds a circuit-breaker connection slot for the connection's life.
async fn connect(
    backend: &Backend,
    m: &TcpMetrics,
) -> Result<(Conn, SocketAddr, InFlight), ProxyError> {
    let slot = slot(backend, m)?;
    let mut rng = fastrand::Rng::new();
    let mut tried: Vec<&Arc<Endpoint>> = Vec::new();
    let mut last = ProxyError::NoEndpoints {
        backend: backend.name.clone(),
    };
    for _ in 0..backend.endpoints.len().min(MAX_ATTEMPTS) {
        let Some(ep) = next_endpoint(backend, &tried, &mut rng) else {
            break;
        };
        tried.push(ep);
        match attempt(backend, ep, m).await {
            Ok(conn) => return Ok((conn, ep.addr, InFlight::start(ep, slot))),
            Err(e) => {
                tracing::debug!(backend = %backend.name, endpoint = %ep.addr, error = %e, "opaque TCP connect failed; trying another endpoint");
                last = e;
            }
        }
    }
    if tried.is_empty() {
        m.connect_errors
            .with_label_values(&[&*backend.name, last.cause()])
            .inc();
    }
    Err(last)
}

/// Opens a connection to `ep` of `backend` (an original destination): the
/// same breaker slot and outlier reporting, and no other endpoint.
async fn connect_to(
    backend: &Backend,
    ep: &Arc<Endpoint>,
    m: &TcpMetrics,
) -> Result<(Conn, InFlight), ProxyError> {
    let slot = slot(backend, m)?;
    let conn = attempt(backend, ep, m).await?;
    Ok((conn, InFlight::start(ep, slot)))
}

/// Connects to an address outside the snapshot, in plaintext, within the
/// default connect timeout.
async fn direct(addr: SocketAddr, m: &TcpMetrics) -> Result<Conn, ProxyError> {
    let after = remora_api::defaults::connect_timeout().get();
    let connect = TcpStream::connect(addr);
    let result = match tokio::time::timeout(after, connect).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            return Ok(Conn::Plain(tcp));
        }
        Ok(Err(source)) => ProxyError::Connect { addr, source },
        Err(_) => ProxyError::ConnectTimeout { addr, after },
    };
    m.connect_errors
        .with_label_values(&[PASSTHROUGH, result.cause()])
        .inc();
    Err(result)
}

/// A slot of the backend's circuit breaker for one connection, or the
/// overflow, counted.
fn slot(backend: &Backend, m: &TcpMetrics) -> Result<crate::balance::Slot, ProxyError> {
    let slot = backend
        .breaker
        .acquire(Overflow::Connections, backend.limits.max_connections)
        .map_err(|limit| {
            backend
                .metrics
                .overflows
                .with_label_values(&[&*backend.name, limit.as_str()])
                .inc();
            ProxyError::Overloaded {
                backend: backend.name.clone(),
                limit: limit.as_str(),
            }
        });
    slot.inspect_err(|e| {
        m.connect_errors
            .with_label_values(&[&*backend.name, e.cause()])
            .inc();
    })
}

/// One connect to `ep`; the outcome feeds its latency estimate and outlier
/// detection, a failure the connect-error counter.
async fn attempt(backend: &Backend, ep: &Endpoint, m: &TcpMetrics) -> Result<Conn, ProxyError> {
    let started = Instant::now();
    let result = open(ep).await;
    match &result {
        Ok(_) => ep.load.observe(started.elapsed()),
        Err(e) => {
            m.connect_errors
                .with_label_values(&[&*backend.name, e.cause()])
                .inc();
            ep.load.observe_failure(started.elapsed());
        }
    }
    backend.report(ep, result.is_ok());
    result
}

/// The balancer's choice, unless it was tried already: then any endpoint
/// not tried yet, available ones first.
fn next_endpoint<'a>(
    backend: &'a Backend,
    tried: &[&Arc<Endpoint>],
    rng: &mut fastrand::Rng,
) -> Option<&'a Arc<Endpoint>> {
    let was_tried = |e: &Arc<Endpoint>| tried.iter().any(|t| Arc::ptr_eq(t, e));
    let ep = backend.pick(&http::HeaderMap::new(), rng)?;
    if !was_tried(ep) {
        return Some(ep);
    }
    let now = now_ns();
    let mut untried = backend.endpoints.iter().filter(|e| !was_tried(e));
    let first = untried.clone().next();
    untried.find(|e| e.available(now)).or(first)
}

/// Connects to `ep` the way its backend says (plain or TLS), within the
/// backend's connect timeout.
async fn open(ep: &Endpoint) -> Result<Conn, ProxyError> {
    let addr = ep.addr;
    let transport = ep.client.transport();
    let after = transport.connect_timeout;
    let connect = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ProxyError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &transport.tls else {
            return Ok(Conn::Plain(tcp));
        };
        // The same trust and identity checks as for HTTP; no ALPN, as the
        // bytes inside are not HTTP.
        let mut config = (*tls.h1).clone();
        config.alpn_protocols.clear();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(tls.server_name.clone(), tcp)
            .await
            .map(|s| Conn::Tls(Box::new(s)))
            .map_err(|source| ProxyError::UpstreamTls { addr, source })
    };
    tokio::time::timeout(after, connect)
        .await
        .unwrap_or(Err(ProxyError::ConnectTimeout { addr, after }))
}

/// Holds the open-connections gauge up while it lives.
struct Open(IntGauge);

impl Open {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Open(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A stream that counts the bytes read from it as they arrive (so a long
/// connection's byte counters move while it lives, not only at its end).
struct Counted<S> {
    inner: S,
    read: IntCounter,
}

impl<S> Counted<S> {
    fn new(inner: S, read: IntCounter) -> Self {
        Counted { inner, read }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read.inc_by(n as u64);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

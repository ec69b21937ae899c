//! Accept loops: one per listener. Each accepted connection is checked
//! against the listener's connection limit, TLS-terminated when configured
//! (the handshake bounded by the header-read timeout; failures are counted,
//! logged and dropped), then given a [`Decision`] by the listener's
//! `protocol` and served on a task of its own by [`dispatch`]: HTTP
//! (`http/server.rs`) or opaque TCP (`tcp.rs`).
//!
//! `protocol: http` never looks at the bytes; `tcp` sends every connection
//! to `tcp_backend`; `detect` classifies the first bytes (`detect.rs`):
//! HTTP/1 and HTTP/2 go to the routes, anything else (TLS this listener does
//! not terminate, other protocols, silence) to `tcp_backend`. With `tls`,
//! `detect` looks at the decrypted stream: ALPN `h2` or `http/1.1` means
//! HTTP at once, else the first decrypted bytes decide.
//!
//! A transparent listener (`original_destination`) reads each connection's
//! original destination at accept (`orig_dst.rs`). Opaque connections that
//! were redirected go there ([`crate::tcp::target`]); one that was not (dialed
//! at the listener itself) goes to `tcp_backend`, or is closed when there
//! is none, as forwarding it to its own address would loop. Such a
//! listener without routes forwards everything opaquely, without looking.

use crate::balance::Backend;
use crate::detect::{self, Detection, Reason, Rewind};
use crate::drain::Watch;
use crate::http::call::Downstream;
use crate::http::passthrough::Passthrough;
use crate::http::router::TcpDestinations;
use crate::http::server::{serve, ListenerCtx};
use crate::snapshot::{EndpointIndex, InboundTable, ListenerTable};
use remora_api::ListenerProtocol;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

pub async fn accept_loop(listener: TcpListener, ctx: Arc<ListenerCtx>, mut drain: Watch) {
    // The destination port of every connection: where the server-speaks-
    // first ports are checked.
    let dst_port = listener.local_addr().map_or(0, |a| a.port());
    loop {
        let accepted = tokio::select! {
            // A drain wins over a connection waiting to be accepted.
            biased;
            _ = drain.signaled() => break,
            a = listener.accept() => a,
        };
        let (tcp, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(listener = %ctx.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let snapshot = ctx.store.load_full();
        let table = &snapshot.listeners[ctx.index];
        if ctx.open.load(Relaxed) >= table.limits.max_connections {
            ctx.metrics
                .connections_rejected
                .with_label_values(&[&*ctx.name, "max-connections"])
                .inc();
            tracing::debug!(listener = %ctx.name, %client, "connection limit reached; closing new connection");
            drop(tcp);
            continue;
        }
        let plan = Plan::new(table);
        drop(snapshot);
        let guard = OpenConnection::new(ctx.clone());
        let drain = drain.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            connection(&guard.0, tcp, client, dst_port, plan, drain).await;
            drop(guard);
        });
    }
}

/// What the snapshot at accept time says about one connection.
pub struct Plan {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: remora_api::Limits,
    pub protocol: ListenerProtocol,
    pub detect_timeout: Duration,
    pub tcp_backend: Option<Arc<Backend>>,
    pub inbound: Option<Arc<InboundTable>>,
    /// Set on a transparent listener: the snapshot's endpoints by address.
    pub original_destination: Option<Arc<EndpointIndex>>,
    /// Set on a transparent listener whose routes name destinations.
    pub tcp_destinations: Option<Arc<TcpDestinations>>,
    /// Where the client meant to connect, when iptables redirected it to a
    /// transparent listener; set per connection at accept.
    pub destination: Option<SocketAddr>,
}

impl Plan {
    pub fn new(table: &ListenerTable) -> Self {
        Plan {
            tls: table.tls.clone(),
            limits: table.limits.clone(),
            protocol: Plan::protocol(table),
            detect_timeout: table.detect_timeout,
            tcp_backend: table.tcp_backend.clone(),
            inbound: table.inbound.clone(),
            original_destination: table.original_destination.clone(),
            tcp_destinations: table.tcp_destinations.clone(),
            destination: None,
        }
    }

    /// What `table`'s connections are served as: its `protocol`, except
    /// that a transparent listener without routes has no use for HTTP.
    pub fn protocol(table: &ListenerTable) -> ListenerProtocol {
        if table.original_destination.is_some() && table.router.routes().is_empty() {
            ListenerProtocol::Tcp
        } else {
            table.protocol
        }
    }
}

/// Where a connection goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The HTTP server and the listener's routes.
    Http,
    /// Opaque TCP to `tcp_backend`.
    Opaque,
}

/// Reads the original destination on a transparent listener, terminates
/// TLS if the listener has it, decides, and dispatches.
async fn connection(
    ctx: &Arc<ListenerCtx>,
    tcp: TcpStream,
    client: SocketAddr,
    mut dst_port: u16,
    mut plan: Plan,
    drain: Watch,
) {
    if plan.original_destination.is_some() {
        let local = tcp.local_addr();
        match crate::orig_dst::original_dst(&tcp).and_then(|dst| Ok((dst, local?))) {
            Ok((dst, local)) => {
                // Detection checks the port the client meant.
                dst_port = dst.port();
                if crate::orig_dst::redirected(dst, local) {
                    plan.destination = Some(dst);
                }
            }
            Err(e) => {
                tracing::warn!(listener = %ctx.name, %client, error = %e, "cannot read the original destination (SO_ORIGINAL_DST); connection closed");
                return;
            }
        }
    }
    // The task of every connection is as large as its largest path: the
    // TLS and inbound paths (a handshake, and a server over a TLS stream)
    // are boxed so a plaintext connection does not carry their size.
    if let Some(inbound) = plan.inbound.clone() {
        let inbound = inbound_connection(ctx, tcp, client, dst_port, plan, &inbound, drain);
        return Box::pin(inbound).await;
    }
    let Some(config) = plan.tls.clone() else {
        return plain(ctx, tcp, client, dst_port, plan, drain).await;
    };
    Box::pin(terminated(ctx, tcp, client, dst_port, plan, config, drain)).await
}

/// Terminates TLS, then serves the decrypted stream.
async fn terminated(
    ctx: &Arc<ListenerCtx>,
    tcp: TcpStream,
    client: SocketAddr,
    dst_port: u16,
    plan: Plan,
    config: Arc<rustls::ServerConfig>,
    drain: Watch,
) {
    let timeout = plan.limits.header_read_timeout.get();
    let Ok(stream) = handshake(ctx, tcp, config, timeout, client).await else {
        return;
    };
    let down = Downstream::new(client, true);
    decrypted(ctx, stream, down, dst_port, plan, drain).await
}

/// Serves a plaintext connection: decided by the listener's protocol (for
/// `detect`, by peeking at its first bytes).
async fn plain(
    ctx: &Arc<ListenerCtx>,
    tcp: TcpStream,
    client: SocketAddr,
    dst_port: u16,
    plan: Plan,
    drain: Watch,
) {
    let decision = match plan.protocol {
        ListenerProtocol::Detect => {
            let peek = detect::peek(&tcp, dst_port, plan.detect_timeout);
            decided(ctx, Box::pin(peek).await)
        }
        configured => without_looking(ctx, configured),
    };
    let down = Downstream::new(client, false);
    dispatch(ctx, tcp, down, decision, plan, drain).await
}

/// A connection to an inbound listener: mutual TLS from another proxy (its
/// identity then known), or plaintext, which strict mode refuses. The first
/// byte tells them apart (a TLS record starts with 0x16); a client that
/// sends nothing within `detect_timeout` is plaintext.
async fn inbound_connection(
    ctx: &Arc<ListenerCtx>,
    tcp: TcpStream,
    client: SocketAddr,
    dst_port: u16,
    plan: Plan,
    inbound: &InboundTable,
    drain: Watch,
) {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(plan.detect_timeout, tcp.peek(&mut first)).await;
    if matches!(peeked, Ok(Ok(0))) {
        // Connected and closed without a byte: a TCP health check.
        tracing::debug!(listener = %ctx.name, %client, "connection closed before its first byte");
        return;
    }
    let tls = matches!(peeked, Ok(Ok(1))) && first[0] == 0x16;
    let m = &ctx.metrics;
    if !tls {
        if inbound.strict {
            m.inbound_refused
                .with_label_values(&[&*ctx.name, "plaintext"])
                .inc();
            tracing::info!(listener = %ctx.name, %client, "plaintext connection refused: the inbound listener is strict (mutual TLS only)");
            return;
        }
        m.inbound_connections
            .with_label_values(&[&*ctx.name, "-"])
            .inc();
        return plain(ctx, tcp, client, dst_port, plan, drain).await;
    }
    let timeout = plan.limits.header_read_timeout.get();
    let stream = match handshake(ctx, tcp, inbound.tls.clone(), timeout, client).await {
        Ok(stream) => stream,
        Err(Handshake::ClientLeft) => return,
        Err(Handshake::Failed) => {
            m.inbound_refused
                .with_label_values(&[&*ctx.name, "handshake"])
                .inc();
            return;
        }
    };
    let id = crate::identity::tls::client_id(stream.get_ref().1);
    let alpn = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => "h2",
        Some(b"http/1.1") => "http/1.1",
        _ => "-",
    };
    m.inbound_mtls_connections
        .with_label_values(&[&*ctx.name, alpn])
        .inc();
    m.inbound_connections
        .with_label_values(&[&*ctx.name, id.as_deref().unwrap_or("-")])
        .inc();
    let down = Downstream {
        client_id: id.map(Arc::from),
        ..Downstream::new(client, true)
    };
    decrypted(ctx, stream, down, dst_port, plan, drain).await
}

/// Serves a connection whose TLS was terminated: ALPN, else (for `detect`)
/// the first decrypted bytes, decide how.
async fn decrypted(
    ctx: &Arc<ListenerCtx>,
    mut stream: tokio_rustls::server::TlsStream<TcpStream>,
    down: Downstream,
    dst_port: u16,
    plan: Plan,
    drain: Watch,
) {
    let client = down.client;
    if plan.protocol != ListenerProtocol::Detect {
        let decision = without_looking(ctx, plan.protocol);
        return dispatch(ctx, stream, down, decision, plan, drain).await;
    }
    let alpn = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Some(detect::Protocol::Http2),
        Some(b"http/1.1") => Some(detect::Protocol::Http1),
        _ => None,
    };
    let (detection, prefix) = match alpn {
        Some(protocol) => (
            Detection {
                protocol,
                reason: Reason::Detected,
                took: None,
            },
            bytes::Bytes::new(),
        ),
        None => match detect::read(&mut stream, dst_port, plan.detect_timeout).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(listener = %ctx.name, %client, error = %e, "connection ended during protocol detection");
                return;
            }
        },
    };
    let decision = decided(ctx, detection);
    dispatch(
        ctx,
        Rewind::new(prefix, stream),
        down,
        decision,
        plan,
        drain,
    )
    .await
}

/// The decision for a listener that does not look: `http` or `tcp`.
fn without_looking(ctx: &ListenerCtx, protocol: ListenerProtocol) -> Decision {
    if protocol == ListenerProtocol::Http {
        return Decision::Http;
    }
    ctx.metrics
        .detected(&ctx.name, &Detection::opaque(Reason::Configured));
    Decision::Opaque
}

/// Counts a detection and turns it into a decision.
fn decided(ctx: &ListenerCtx, d: Detection) -> Decision {
    ctx.metrics.detected(&ctx.name, &d);
    if d.protocol.is_http() {
        Decision::Http
    } else {
        Decision::Opaque
    }
}

/// Serves an accepted (and, with TLS, decrypted) connection as `decision`
/// says: HTTP through the routes, or opaque TCP to `tcp_backend`.
pub async fn dispatch<I>(
    ctx: &Arc<ListenerCtx>,
    io: I,
    down: Downstream,
    decision: Decision,
    plan: Plan,
    drain: Watch,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let (Decision::Opaque, Some(inbound)) = (decision, &plan.inbound) {
        let peer = crate::policy::authz::Peer {
            id: down.client_id.as_deref(),
            addr: down.client.ip(),
        };
        if !inbound.authz.allows(peer) {
            let m = &ctx.metrics;
            m.authorization_denials
                .with_label_values(&[&*ctx.name, "-"])
                .inc();
            m.inbound_refused
                .with_label_values(&[&*ctx.name, "denied"])
                .inc();
            tracing::info!(
                listener = %ctx.name, client = %down.client,
                client_id = down.client_id.as_deref().unwrap_or("none"),
                "connection denied by the authorization policy"
            );
            return;
        }
    }
    if decision == Decision::Http {
        let mut down = down;
        // Redirected out of the pod: a host no route knows goes on to where
        // the client was headed.
        if let (Some(dst), Some(_), None) =
            (plan.destination, &plan.original_destination, &plan.inbound)
        {
            down.passthrough = Some(Arc::new(Passthrough::new(dst, ctx.metrics.clone())));
        }
        return serve(ctx.clone(), io, down, &plan.limits, drain).await;
    }
    match crate::tcp::target(&plan) {
        // Boxed: an HTTP connection's task does not carry its size.
        Some(target) => Box::pin(crate::tcp::forward(ctx, io, down, target, drain)).await,
        None if plan.original_destination.is_some() => tracing::warn!(
            listener = %ctx.name, client = %down.client,
            "connection refused: it was not redirected (addressed to this listener itself) \
             and the listener has no `tcp_backend`; forwarding it to its own address would loop"
        ),
        // Validation gives other `tcp` and `detect` listeners a `tcp_backend`.
        None => {
            tracing::warn!(listener = %ctx.name, client = %down.client, "opaque connection on a listener without `tcp_backend`; closed")
        }
    }
}

/// Terminates TLS. A client that goes away during the handshake (a TCP
/// health check that connects and closes, a client that gives up) is no
/// TLS failure: logged at debug, not counted. Anything else (no shared
/// version or cipher, a bad or missing client certificate, a timeout) is
/// counted in `remora_tls_handshake_errors_total` and logged.
async fn handshake(
    ctx: &ListenerCtx,
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    client: std::net::SocketAddr,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Handshake> {
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
    let error = match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(stream)) => return Ok(stream),
        Ok(Err(e)) if client_went_away(&e) => {
            tracing::debug!(listener = %ctx.name, %client, error = %e, "client closed the connection during the TLS handshake");
            return Err(Handshake::ClientLeft);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "handshake timed out".to_string(),
    };
    ctx.metrics
        .tls_handshake_errors
        .with_label_values(&[&*ctx.name])
        .inc();
    tracing::info!(listener = %ctx.name, %client, error, "TLS handshake failed; connection dropped");
    Err(Handshake::Failed)
}

/// Why a handshake did not give a connection.
#[derive(Debug, PartialEq, Eq)]
enum Handshake {
    /// The client closed or reset the connection.
    ClientLeft,
    Failed,
}

fn client_went_away(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Counts a client connection as open for as long as it lives.
struct OpenConnection(Arc<ListenerCtx>);

impl OpenConnection {
    fn new(ctx: Arc<ListenerCtx>) -> Self {
        ctx.open.fetch_add(1, Relaxed);
        ctx.metrics
            .open_connections
            .with_label_values(&[&*ctx.name])
            .inc();
        ctx.metrics
            .connections
            .with_label_values(&[&*ctx.name])
            .inc();
        OpenConnection(ctx)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
        self.0
            .metrics
            .open_connections
            .with_label_values(&[&*self.0.name])
            .dec();
    }
}

//! Accept loops: one per listener. Each accepted connection is checked
//! against the listener's connection limit, TLS-terminated when configured
//! (the handshake bounded by the header-read timeout; failures are counted,
//! logged and dropped) and served on a task of its own.

use crate::drain::Watch;
use crate::http::proxy::Downstream;
use crate::http::server::{serve, ListenerCtx};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

pub async fn accept_loop(listener: TcpListener, ctx: Arc<ListenerCtx>, mut drain: Watch) {
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
        let tls = table.tls.clone();
        let limits = table.limits.clone();
        drop(snapshot);
        let guard = OpenConnection::new(ctx.clone());
        let drain = drain.clone();
        tokio::spawn(async move {
            let ctx = guard.0.clone();
            let _ = tcp.set_nodelay(true);
            match tls {
                None => serve(ctx, tcp, Downstream { client, tls: false }, &limits, drain).await,
                Some(config) => {
                    let Some(stream) =
                        handshake(&ctx, tcp, config, limits.header_read_timeout.get(), client)
                            .await
                    else {
                        return;
                    };
                    serve(
                        ctx,
                        stream,
                        Downstream { client, tls: true },
                        &limits,
                        drain,
                    )
                    .await
                }
            }
            drop(guard);
        });
    }
}

async fn handshake(
    ctx: &ListenerCtx,
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    client: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
    let error = match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "handshake timed out".to_string(),
    };
    ctx.metrics
        .tls_handshake_errors
        .with_label_values(&[&*ctx.name])
        .inc();
    tracing::info!(listener = %ctx.name, %client, error, "TLS handshake failed; connection dropped");
    None
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

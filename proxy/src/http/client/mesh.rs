//! HTTP/1.1 requests to a mesh peer (an endpoint with an `identity`, so
//! another Remora proxy) over the one HTTP/2 connection to it, as Linkerd
//! does: a new connection offers ALPN `h2` and `http/1.1`; when the peer
//! picks `h2`, every request rides that connection, the HTTP/1.1 ones
//! marked with `remora-orig-proto` so that the peer gives its app HTTP/1.1
//! again ([`orig_proto`]). A peer that picks `http/1.1` (an older proxy, a
//! plain mutual-TLS server) or nothing gets HTTP/1.1 with pooling, and is
//! not offered `h2` again for [`H1_FALLBACK`].
//!
//! Upgrades (WebSocket) never come here; nor does what HTTP/2 cannot carry
//! as it is (`CONNECT`, `OPTIONS *`).
//!
//! [`orig_proto`]: crate::http::orig_proto

use super::{Checkin, EndpointClient, Limits, Offer};
use crate::balance::{now_ns, ns_at};
use crate::http::body::RequestBody;
use crate::http::error::ProxyError;
use crate::http::orig_proto;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// How long a peer that did not take `h2` gets HTTP/1.1 before it is
/// offered `h2` again (it may have been upgraded meanwhile).
pub const H1_FALLBACK: Duration = Duration::from_secs(60);

/// The connection a mesh request goes on.
enum Peer {
    /// The shared HTTP/2 connection.
    H2(http2::SendRequest<RequestBody>),
    /// A new HTTP/1.1 connection: the peer just declined `h2`.
    H1(http1::SendRequest<RequestBody>),
    /// The HTTP/1.1 pool: the peer declined `h2` while this request waited.
    Pool,
}

impl EndpointClient {
    /// Whether this HTTP/1.1 request goes over HTTP/2: the endpoint is a
    /// mesh peer with `pool.mesh_http2` on that has not lately declined
    /// `h2`, and HTTP/2 can carry the request.
    pub(super) fn mesh_h2(&self, req: &Request<RequestBody>) -> bool {
        let Some(tls) = &self.transport.tls else {
            return false;
        };
        if tls.mesh.is_none() || req.method() == Method::CONNECT || req.uri().path() == "*" {
            return false;
        }
        let until = self.mesh_h1_until.load(Relaxed);
        until == 0 || now_ns() >= until
    }

    /// Sends an HTTP/1.1 request to a mesh peer: over HTTP/2 when the peer
    /// takes it, else over HTTP/1.1 (with its [`Checkin`]).
    pub(super) async fn send_mesh(
        &self,
        req: Box<Request<RequestBody>>,
        limits: Limits<'_>,
    ) -> Result<(Response<Incoming>, Option<Checkin>), ProxyError> {
        let peer = match self.h2.load_full() {
            Some(tx) if !tx.is_closed() => Peer::H2((*tx).clone()),
            _ => Box::pin(self.connect_mesh(limits)).await?,
        };
        match peer {
            Peer::H2(mut tx) => {
                let req = orig_proto::to_h2(*req)?;
                self.h2_last_used.store(ns_at(limits.now), Relaxed);
                let (req, not_sent) = match tx.try_send_request(req).await {
                    Ok(rsp) => return Ok((rsp, None)),
                    Err(mut e) => match e.take_message() {
                        // The connection closed (the peer restarting, say)
                        // before the request went out: once more, on a new
                        // one if the peer still takes `h2`.
                        Some(req) => (req, e),
                        None => return Err(self.upstream_error(e.into_error())),
                    },
                };
                match Box::pin(self.connect_mesh(limits)).await? {
                    Peer::H2(tx) => self
                        .send_on_h2(tx, req, limits.now)
                        .await
                        .map(|rsp| (rsp, None)),
                    // It just declined `h2`: the request is HTTP/2-shaped by now.
                    _ => Err(self.upstream_error(not_sent.into_error())),
                }
            }
            Peer::H1(mut tx) => {
                let rsp = tx
                    .send_request(*req)
                    .await
                    .map_err(|source| self.upstream_error(source))?;
                Ok((rsp, self.checkin(tx)))
            }
            Peer::Pool => self.send_h1(req, limits).await,
        }
    }

    /// One connection at a time: the first request to a peer opens it, the
    /// ones that arrive meanwhile wait and then share it (or, when the peer
    /// declined `h2`, use the pool).
    async fn connect_mesh(&self, limits: Limits<'_>) -> Result<Peer, ProxyError> {
        let _one_at_a_time = self.h2_connecting.lock().await;
        if let Some(tx) = self.h2.load_full() {
            if !tx.is_closed() {
                return Ok(Peer::H2((*tx).clone()));
            }
        }
        if self.mesh_h1_until.load(Relaxed) > now_ns() {
            return Ok(Peer::Pool);
        }
        let (io, slot) = self.connect(Offer::Mesh, limits).await?;
        if io.is_h2() {
            return self.handshake_h2(io, slot).await.map(Peer::H2);
        }
        let fallback = H1_FALLBACK.as_nanos() as u64;
        self.mesh_h1_until.store(now_ns() + fallback, Relaxed);
        tracing::debug!(
            addr = %self.addr,
            "mesh peer declined ALPN h2: HTTP/1.1 to it for {}s",
            H1_FALLBACK.as_secs()
        );
        self.handshake_h1(io, slot).await.map(Peer::H1)
    }
}

//! The snapshot stream: `POST /v1/subscribe` over HTTP/2 (clear text, prior
//! knowledge; HTTP/1.1 works too). Both bodies are newline-delimited JSON.
//!
//! The proxy's request body starts with a [`Hello`] (sent with the request:
//! the response headers wait for it), then carries one [`Ack`] per snapshot.
//! The response body carries the workload's current snapshot at once
//! (`SnapshotMsg`), unless the Hello says the proxy already serves that
//! version, then each new version as the mesh changes: as a `DeltaMsg` (the
//! changed services' routes and backends) when only services changed and
//! the session knows what the proxy has, else whole. A NACKed delta makes
//! the next push whole. An unknown workload gets a 404.
//! Each subscription is a [`Session`] task (`stream/session.rs`) that owns
//! its entry in [`Proxies`], so the entry goes when the stream ends.
//!
//! The same listener serves certificate requests, `POST /v1/certify`
//! ([`crate::certify`]).

use crate::app::stopped;
use crate::certify::{Certifier, CERTIFY};
use crate::metrics::Metrics;
use crate::ndjson::Lines;
use crate::proxies::Proxies;
use crate::source::Generation;
use crate::Error;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use remora_api::mesh::Hello;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

mod session;
pub use session::Session;

pub const SUBSCRIBE: &str = "/v1/subscribe";
/// How long a subscriber has to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings find proxies that vanished without closing.
const KEEPALIVE: Duration = Duration::from_secs(15);

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What every subscription shares.
pub struct Stream {
    /// Subscriptions must present the mesh certificate of their workload.
    pub require_identity: bool,
    pub generations: watch::Receiver<Arc<Generation>>,
    pub proxies: Arc<Proxies>,
    pub metrics: Arc<Metrics>,
    pub stop: watch::Receiver<bool>,
    pub certifier: Arc<Certifier>,
    /// Ask every proxy for a stats report this often (`None`: never).
    pub stats_interval: Option<Duration>,
}

/// How long a client has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves subscriptions until `stop`, over TLS when `tls` is given; then
/// ends every stream and gives the connections a second to close.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    stream: Arc<Stream>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = tcp.set_nodelay(true);
        let (stream, watcher) = (stream.clone(), graceful.watcher());
        let Some(acceptor) = acceptor.clone() else {
            connection(tcp, peer, None, stream, watcher);
            continue;
        };
        // The handshake runs in its own task: a slow client holds up no one.
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let id = tls.get_ref().1.peer_certificates().and_then(spiffe_id);
                    connection(tls, peer, id.map(Arc::from), stream, watcher)
                }
                Ok(Err(e)) => {
                    tracing::info!(peer = %peer, error = %e, "TLS handshake failed; connection dropped")
                }
                Err(_) => {
                    tracing::info!(peer = %peer, "TLS handshake timed out; connection dropped")
                }
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
}

/// Serves one connection (HTTP/2 or HTTP/1.1) in a task of its own.
/// `client_id`: the SPIFFE ID of the client's certificate, verified against
/// the mesh roots in the handshake.
fn connection<I>(
    io: I,
    peer: SocketAddr,
    client_id: Option<Arc<str>>,
    stream: Arc<Stream>,
    watcher: Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let (stream, client_id) = (stream.clone(), client_id.clone());
        async move { Ok::<_, Infallible>(stream.handle(req, peer, client_id.as_deref()).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE);
    let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
    let conn = watcher.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "subscriber connection ended");
        }
    });
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

impl Stream {
    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        client_id: Option<&str>,
    ) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::POST, SUBSCRIBE) => match self.subscribe(req, peer, client_id).await {
                Ok(rsp) => rsp,
                Err(e) => {
                    tracing::warn!(error = %e, peer = %peer, "subscription refused");
                    text(e.status(), format!("{e}\n"))
                }
            },
            (&Method::POST, CERTIFY) => self.certifier.handle(req, peer).await,
            (_, SUBSCRIBE | CERTIFY) => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n".into()),
            _ => text(
                StatusCode::NOT_FOUND,
                format!("not found; try POST {SUBSCRIBE} or POST {CERTIFY}\n"),
            ),
        }
    }

    async fn subscribe(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        client_id: Option<&str>,
    ) -> Result<Response<Body>, Error> {
        let mut lines = Lines::new(req.into_body());
        let first = tokio::time::timeout(HELLO_TIMEOUT, lines.next())
            .await
            .map_err(|_| Error::HelloTimeout(HELLO_TIMEOUT))??
            .ok_or(Error::NoHello)?;
        let hello: Hello =
            serde_json::from_slice(&first).map_err(|e| Error::BadHello(e.to_string()))?;
        let session = self.open(hello, client_id, peer)?;
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        tokio::spawn(session.run(lines, tx, self.generations.clone(), self.stop.clone()));
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(line)), rx))
        });
        let mut rsp = Response::new(StreamBody::new(frames).boxed_unsync());
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-ndjson"),
        );
        if let Some(every) = self.stats_interval {
            rsp.headers_mut().insert(
                remora_api::stats::STATS_INTERVAL,
                header::HeaderValue::from(every.as_millis() as u64),
            );
        }
        Ok(rsp)
    }

    /// Checks a subscriber's Hello against the generation served (a
    /// workload of the mesh; `client_id`, the SPIFFE ID of its certificate,
    /// the workload's; one required with `require_identity`) and records
    /// the subscription in [`Proxies`].
    pub fn open(
        &self,
        hello: Hello,
        client_id: Option<&str>,
        peer: SocketAddr,
    ) -> Result<Session, Error> {
        {
            let current = self.generations.borrow();
            if !current.snapshots.contains_key(&hello.workload) {
                let known: Vec<&str> = current.snapshots.keys().map(String::as_str).collect();
                return Err(Error::UnknownWorkload {
                    workload: hello.workload,
                    known: known.join(", "),
                });
            }
            let expected = current.identities.get(&hello.workload);
            match (client_id, expected) {
                (Some(id), Some(expected)) if id != expected => {
                    return Err(Error::WrongIdentity {
                        presented: id.to_string(),
                        workload: hello.workload,
                        expected: expected.clone(),
                    });
                }
                (None, _) if self.require_identity => return Err(Error::IdentityRequired),
                _ => {}
            }
        }
        let conn = self.proxies.connect(
            &hello.workload,
            hello.identity.clone(),
            client_id.map(str::to_string),
            hello.version.clone(),
            peer,
        );
        tracing::info!(id = conn.id, workload = %hello.workload, peer = %peer, version = %hello.version.as_deref().unwrap_or("none"), verified_identity = client_id.unwrap_or("none"), "proxy subscribed");
        Ok(Session::new(
            conn,
            hello.workload,
            hello.version,
            self.metrics.clone(),
        ))
    }
}

/// The SPIFFE ID (URI SAN `spiffe://...`) of a verified client chain's leaf.
fn spiffe_id(chain: &[rustls::pki_types::CertificateDer<'_>]) -> Option<String> {
    let (_, leaf) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
    let san = leaf.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
            Some(u.to_string())
        }
        _ => None,
    })
}

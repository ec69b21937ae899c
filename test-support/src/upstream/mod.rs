//! Upstream HTTP servers that say who they are. Each [`Upstream`] listens on
//! `127.0.0.1:0`, serves HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN over
//! TLS) on the same port, stamps `x-upstream: <name>` on every response and
//! counts the connections and requests it saw, so a test can assert which
//! endpoint served a request and whether the proxy reused a connection. The
//! paths it understands are listed on [`Upstream`].

mod body;
mod routes;
mod websocket;

pub use body::pattern_byte;
pub use websocket::accept_key;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A running test upstream. Dropping it stops the server: the accept loop is
/// aborted and every connection (and upgraded connection) task ends.
///
/// Behaviour by request path:
///
/// | path | response |
/// |---|---|
/// | anything else | 200, body `<name>\n` (the request body is read and discarded first) |
/// | `/headers` | 200, JSON `{"method","uri","version":"HTTP/1.1"\|"HTTP/2.0","headers":{name:[values]}}` |
/// | `/echo` | 200, the request body streamed back |
/// | `/status/NNN` | status NNN, body `<name>\n` |
/// | `/slow/MS` | waits MS milliseconds, then 200 `<name>\n` |
/// | `/bytes/N` | 200, N bytes where byte `i` is [`pattern_byte`]`(i)`, streamed in 64 KiB chunks |
/// | `/sink` | reads the body without keeping it, 200 with the byte count as decimal text |
/// | `/trailers` | 200, body `ok`, trailer `x-trailer: yes` (HTTP/1.1 only if the client sent `te: trailers`) |
///
/// An HTTP/1.1 request with `upgrade: websocket` and `connection: upgrade`
/// gets `101 Switching Protocols` (with `sec-websocket-accept` when a
/// `sec-websocket-key` was sent), then every byte received is echoed back.
pub struct Upstream {
    name: Arc<str>,
    addr: SocketAddr,
    stats: Arc<Stats>,
    accept: JoinHandle<()>,
    /// Dropped with the upstream; every spawned task watches it.
    _shutdown: watch::Sender<()>,
}

#[derive(Default)]
struct Stats {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// What the accept loop, connection tasks and handlers share.
#[derive(Clone)]
struct Ctx {
    name: Arc<str>,
    header: HeaderValue,
    stats: Arc<Stats>,
    shutdown: watch::Receiver<()>,
}

impl Ctx {
    /// Spawns `fut` so that it ends when the owning [`Upstream`] is dropped.
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.changed() => {}
                () = fut => {}
            }
        });
    }
}

impl Upstream {
    /// Starts a plain-text upstream (HTTP/1.1 and HTTP/2 prior knowledge).
    ///
    /// Panics if `name` is not a valid header value or the bind fails.
    pub async fn start(name: &str) -> Upstream {
        Self::spawn(name, None).await
    }

    /// Starts an upstream behind rustls, offering ALPN `h2` and `http/1.1`.
    pub async fn start_tls(name: &str, cert_pem: &str, key_pem: &str) -> Upstream {
        let config = crate::tls::rustls_server_config(cert_pem, key_pem, &[b"h2", b"http/1.1"]);
        Self::spawn(name, Some(TlsAcceptor::from(config))).await
    }

    /// Like [`Upstream::start_tls`], but the handshake also requires a client
    /// certificate issued by `client_ca_pem`.
    pub async fn start_mtls(
        name: &str,
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: &str,
    ) -> Upstream {
        let config = crate::tls::rustls_server_config_mtls(
            cert_pem,
            key_pem,
            client_ca_pem,
            &[b"h2", b"http/1.1"],
        );
        Self::spawn(name, Some(TlsAcceptor::from(config))).await
    }

    async fn spawn(name: &str, tls: Option<TlsAcceptor>) -> Upstream {
        let header =
            HeaderValue::from_str(name).expect("upstream name must be a valid header value");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream on 127.0.0.1:0");
        let addr = listener.local_addr().expect("upstream local_addr");
        let (shutdown_tx, shutdown) = watch::channel(());
        let ctx = Ctx {
            name: name.into(),
            header,
            stats: Arc::default(),
            shutdown,
        };
        let stats = ctx.stats.clone();
        let accept = tokio::spawn(accept_loop(listener, tls, ctx));
        Upstream {
            name: name.into(),
            addr,
            stats,
            accept,
            _shutdown: shutdown_tx,
        }
    }

    /// The bound address (always `127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name stamped on every response.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:<port><path>`, for talking to the upstream directly.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// TCP connections accepted so far (counted before any TLS handshake).
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far, upgrades included.
    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Stops the server and waits until the listening socket is closed, so a
    /// following connect is refused. (Dropping also stops it, a moment later.)
    pub async fn stop(mut self) {
        self.accept.abort();
        let _ = (&mut self.accept).await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, ctx: Ctx) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        ctx.stats.connections.fetch_add(1, Ordering::SeqCst);
        let _ = tcp.set_nodelay(true);
        let (tls, conn_ctx) = (tls.clone(), ctx.clone());
        ctx.spawn(async move {
            match tls {
                None => serve(tcp, conn_ctx).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        serve(stream, conn_ctx).await;
                    }
                }
            }
        });
    }
}

/// Serves one connection; the auto builder sniffs the HTTP/2 preface.
async fn serve<IO>(io: IO, ctx: Ctx)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::handle(req, ctx).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await;
}

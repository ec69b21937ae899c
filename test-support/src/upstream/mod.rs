//! Upstream HTTP servers that say who they are. Each [`Upstream`] listens on
//! `127.0.0.1:0`, serves HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN over
//! TLS) on the same port, stamps `x-upstream: <name>` on every response and
//! counts the connections and requests it saw, so a test can assert which
//! endpoint served a request and whether the proxy reused a connection. The
//! paths it understands are listed on [`Upstream`].
//!
//! A test can also script failures: [`Upstream::set_mode`] switches every
//! request to an error status, a gRPC error or a dropped connection (see
//! [`Mode`]), [`Upstream::set_health`] flips `/healthz`, and
//! [`Upstream::kill`] plus [`Upstream::start_on`] take an endpoint away and
//! bring it back on the same address.

mod body;
mod control;
mod routes;
mod server;
mod websocket;

pub use body::pattern_byte;
pub use control::Mode;
pub use websocket::accept_key;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use control::Shared;
use server::{accept_loop, bind, Ctx};

/// How long [`Upstream::kill`] waits for its connection tasks to end.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// A running test upstream. Dropping it stops the server: the accept loop is
/// aborted and every connection (and upgraded connection) task ends.
///
/// Behaviour by request path (in [`Mode::Normal`]; other modes override all
/// of it except `/healthz`):
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
/// | `/healthz` (any method) | 200 `<name> healthy\n`, or 503 `<name> unhealthy\n` after `set_health(false)`; never affected by the mode, counted in [`health_checks`](Upstream::health_checks) and not in [`requests`](Upstream::requests) |
///
/// An HTTP/1.1 request with `upgrade: websocket` and `connection: upgrade`
/// gets `101 Switching Protocols` (with `sec-websocket-accept` when a
/// `sec-websocket-key` was sent), then every byte received is echoed back.
pub struct Upstream {
    name: Arc<str>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    /// Every spawned task watches it: a send or dropping it ends them all.
    shutdown: watch::Sender<()>,
}

impl Upstream {
    /// Starts a plain-text upstream (HTTP/1.1 and HTTP/2 prior knowledge).
    ///
    /// Panics if `name` is not a valid header value or the bind fails.
    pub async fn start(name: &str) -> Upstream {
        Self::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a plain-text upstream on `addr`, typically one returned by
    /// [`Upstream::kill`], to bring an endpoint back where the proxy expects
    /// it. Retries for up to 2 s while the address is in use; panics after
    /// that (another socket may have taken the port in the meantime). The
    /// new upstream starts afresh: counters at zero, [`Mode::Normal`],
    /// healthy.
    pub async fn start_on(name: &str, addr: SocketAddr) -> Upstream {
        Self::spawn(name, bind(addr).await, None)
    }

    /// Starts an upstream behind rustls, offering ALPN `h2` and `http/1.1`.
    pub async fn start_tls(name: &str, cert_pem: &str, key_pem: &str) -> Upstream {
        let config = crate::tls::rustls_server_config(cert_pem, key_pem, &[b"h2", b"http/1.1"]);
        Self::spawn(name, bind_any().await, Some(TlsAcceptor::from(config)))
    }

    /// Like [`Upstream::start_tls`], but the handshake also requires a client
    /// certificate issued by `client_ca_pem`.
    pub async fn start_mtls(
        name: &str,
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: &str,
    ) -> Upstream {
        Self::start_mtls_alpn(
            name,
            cert_pem,
            key_pem,
            client_ca_pem,
            &[b"h2", b"http/1.1"],
        )
        .await
    }

    /// Like [`Upstream::start_mtls`], offering just the ALPN protocols in
    /// `alpn` (e.g. only `http/1.1`: a peer that does not speak HTTP/2).
    pub async fn start_mtls_alpn(
        name: &str,
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: &str,
        alpn: &[&[u8]],
    ) -> Upstream {
        let config = crate::tls::rustls_server_config_mtls(cert_pem, key_pem, client_ca_pem, alpn);
        Self::spawn(name, bind_any().await, Some(TlsAcceptor::from(config)))
    }

    fn spawn(name: &str, listener: TcpListener, tls: Option<TlsAcceptor>) -> Upstream {
        let header =
            HeaderValue::from_str(name).expect("upstream name must be a valid header value");
        let addr = listener.local_addr().expect("upstream local_addr");
        let (shutdown_tx, shutdown) = watch::channel(());
        let ctx = Ctx {
            name: name.into(),
            header,
            shared: Arc::default(),
            shutdown,
        };
        let shared = ctx.shared.clone();
        let accept = tokio::spawn(accept_loop(listener, tls, ctx));
        Upstream {
            name: name.into(),
            addr,
            shared,
            accept,
            shutdown: shutdown_tx,
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
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far, upgrades and failed requests included,
    /// `/healthz` excluded.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests the [`Mode`] answered with a failure (or dropped) instead of
    /// serving them.
    pub fn failures(&self) -> usize {
        self.shared.failures.load(Ordering::SeqCst)
    }

    /// `/healthz` requests received so far.
    pub fn health_checks(&self) -> usize {
        self.shared.health_checks.load(Ordering::SeqCst)
    }

    /// Switches how requests are answered from now on, on every connection
    /// (requests already being served finish as they started).
    ///
    /// Panics on `FailEvery { n: 0, .. }` or a status outside `200..=999`.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.set_mode(mode);
    }

    /// What `/healthz` answers: 200 when healthy (the default), 503 when not.
    pub fn set_health(&self, healthy: bool) {
        self.shared.set_health(healthy);
    }

    /// Stops the server and returns its address. When this returns the
    /// listening socket is closed (a connect is refused) and so is every
    /// connection it had accepted, kept-alive and upgraded ones included.
    /// Pass the address to [`Upstream::start_on`] to bring it back.
    pub async fn kill(mut self) -> SocketAddr {
        self.accept.abort();
        let _ = (&mut self.accept).await;
        self.shutdown.send_replace(());
        // Every task holds a receiver until it has dropped its connection.
        let _ = tokio::time::timeout(KILL_WAIT, self.shutdown.closed()).await;
        self.addr
    }

    /// Like [`Upstream::kill`], without the address. (Dropping also stops
    /// the upstream, a moment later.)
    pub async fn stop(self) {
        self.kill().await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn bind_any() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream on 127.0.0.1:0")
}

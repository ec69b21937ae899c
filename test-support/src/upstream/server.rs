//! The test upstream's plumbing: binding (with a retry for rebinding a port
//! that was just released), the accept loop, one task per connection, and
//! the shutdown signal every task — hyper's HTTP/2 stream tasks included —
//! watches, so that stopping an upstream ends all of its work at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::control::Shared;
use super::routes;

/// How long [`bind`] keeps retrying while the address is still in use.
const REBIND_FOR: Duration = Duration::from_secs(2);

/// What the accept loop, connection tasks and handlers share.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) name: Arc<str>,
    pub(super) header: HeaderValue,
    pub(super) shared: Arc<Shared>,
    pub(super) shutdown: watch::Receiver<()>,
}

impl Ctx {
    /// Spawns `fut` so that it ends when the owning upstream stops.
    pub(super) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        spawn_watched(self.shutdown.clone(), fut);
    }
}

fn spawn_watched(
    mut shutdown: watch::Receiver<()>,
    fut: impl Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.changed() => {}
            () = fut => {}
        }
    });
}

/// hyper's executor for HTTP/2 streams: like `TokioExecutor`, but the tasks
/// end with the upstream.
#[derive(Clone)]
struct Exec(watch::Receiver<()>);

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        spawn_watched(self.0.clone(), async move {
            let _ = fut.await;
        });
    }
}

/// Lets a handler close its own connection instead of answering.
#[derive(Clone)]
pub(super) struct ConnAbort(Arc<watch::Sender<bool>>);

impl ConnAbort {
    /// Closes the connection; resolves once it is gone. (On HTTP/1.1 the
    /// handler is dropped along with it and this never resolves.)
    pub(super) async fn abort(&self) {
        self.0.send_replace(true);
        self.0.closed().await;
    }
}

/// Binds `addr`, retrying for up to [`REBIND_FOR`] while it is in use.
/// Panics if that does not succeed.
pub(super) async fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + REBIND_FOR;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("bind upstream on {addr}: {e}"),
        }
    }
}

pub(super) async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, ctx: Ctx) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        ctx.shared.connections.fetch_add(1, Ordering::SeqCst);
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

/// Serves one connection; the auto builder sniffs the HTTP/2 preface. Ends
/// early, dropping the connection unanswered, when a handler aborts it.
async fn serve<IO>(io: IO, ctx: Ctx)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (abort_tx, mut aborted) = watch::channel(false);
    let abort = ConnAbort(Arc::new(abort_tx));
    let exec = Exec(ctx.shutdown.clone());
    let service = hyper::service::service_fn(move |req| {
        let (ctx, abort) = (ctx.clone(), abort.clone());
        async move { Ok::<_, std::convert::Infallible>(routes::handle(req, ctx, abort).await) }
    });
    let builder = auto::Builder::new(exec);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::select! {
        _ = conn => {}
        _ = aborted.wait_for(|aborted| *aborted) => {}
    }
}

//! Wiring: get the first config (file, or control plane and cache), bind
//! the admin server and the listeners, start the accept loops, the config
//! source, the pool sweeper and the health checker. [`App`] exposes the
//! bound addresses, so tests and callers can bind port 0.

use crate::admin::{self, Admin, Readiness};
use crate::drain::Drain;
use crate::http::server::ListenerCtx;
use crate::http::stack::UserLayers;
use crate::identity::issuer::{self, Issuer};
use crate::identity::Identity;
use crate::listen::accept_loop;
use crate::metrics::Metrics;
use crate::snapshot::control::{Settings, Subscriber};
use crate::snapshot::{self, FileSource, Snapshot, Store};
use crate::telemetry::LogLevel;
use anyhow::Context as _;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct App {
    pub admin_addr: SocketAddr,
    /// `(name, bound address)` of each listener, in config order.
    pub listeners: Vec<(Arc<str>, SocketAddr)>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// The proxy's mesh certificate (from files or the control plane's CA).
    pub identity: Arc<Identity>,
    readiness: Arc<Readiness>,
    /// Notified by the admin server's `POST /shutdown`.
    shutdown_requested: Arc<tokio::sync::Notify>,
    drain: Drain,
    stop: watch::Sender<bool>,
}

/// Where the proxy's config comes from.
pub enum Source {
    /// A YAML file, watched for changes.
    File(PathBuf),
    /// A control-plane subscription; the admin server listens on `admin`.
    ControlPlane {
        settings: Settings,
        admin: SocketAddr,
    },
}

impl App {
    /// Starts serving from `source`. With a control plane, the admin server
    /// answers (not ready) at once and this returns once a first snapshot
    /// (from the control plane or the cache) is being served.
    pub async fn start(source: Source, log_level: LogLevel) -> anyhow::Result<App> {
        Self::start_with_issuer(source, None, log_level).await
    }

    /// Like [`App::start`]; with `issuer` (sidecar mode) the proxy also gets
    /// its certificate from the control plane's CA and renews it, and is
    /// ready once it has both a snapshot and a first certificate.
    pub async fn start_with_issuer(
        source: Source,
        issuer: Option<issuer::Settings>,
        log_level: LogLevel,
    ) -> anyhow::Result<App> {
        Self::start_with(source, issuer, log_level, UserLayers::default()).await
    }

    /// Like [`App::start_with_issuer`], with a library user's layers in
    /// every HTTP listener's stack (see [`crate::builder`]).
    pub async fn start_with(
        source: Source,
        issuer: Option<issuer::Settings>,
        log_level: LogLevel,
        layers: UserLayers,
    ) -> anyhow::Result<App> {
        let metrics = Metrics::new();
        let (stop, stop_rx) = watch::channel(false);
        let readiness = Arc::new(Readiness::default());
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let store: Store = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
        let path = match source {
            Source::File(path) => path,
            Source::ControlPlane { settings, admin } => {
                let admin_addr = bind_admin(
                    admin,
                    &store,
                    &metrics,
                    (&readiness, &shutdown),
                    log_level.clone(),
                    &stop_rx,
                )
                .await?;
                let first_cert = issuer.map(|s| {
                    let identity = crate::identity::global().clone();
                    let (issuer, first) = Issuer::new(s, identity, metrics.clone());
                    tokio::spawn(issuer.run(stop_rx.clone()));
                    first
                });
                let (first, answer) =
                    first_snapshot(settings, admin_addr, &store, &metrics, &stop_rx).await?;
                let admin = (admin_addr, readiness, shutdown);
                let app = Self::serve(first, admin, (store, metrics, layers), stop, stop_rx).await;
                let _ = answer.send(app.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
                if let Ok(app) = &app {
                    app.set_ready_after(first_cert);
                }
                return app;
            }
        };
        let first = load_config_file(&path, &metrics).await?;
        let admin_at = first.config.admin.address;
        let admin_addr = bind_admin(
            admin_at,
            &store,
            &metrics,
            (&readiness, &shutdown),
            log_level,
            &stop_rx,
        )
        .await?;
        tokio::spawn(FileSource::new(path, store.clone(), metrics.clone()).watch(stop_rx.clone()));
        let admin = (admin_addr, readiness, shutdown);
        let shared = (store, metrics, layers);
        let app = Self::serve(Some(first), admin, shared, stop, stop_rx).await?;
        app.set_ready_after(None);
        Ok(app)
    }

    /// Ready now, or once `first_cert` resolves (the first certificate
    /// from the control plane's CA is installed).
    fn set_ready_after(&self, first_cert: Option<tokio::sync::oneshot::Receiver<()>>) {
        let Some(first_cert) = first_cert else {
            self.readiness.set_ready();
            return;
        };
        if self.identity.current().is_none() {
            tracing::info!("waiting for the first certificate from the control plane's CA");
        }
        let readiness = self.readiness.clone();
        tokio::spawn(async move {
            if first_cert.await.is_ok() {
                readiness.set_ready();
            }
        });
    }

    /// Swaps in the first snapshot (`None`: the store holds it already),
    /// binds its listeners and starts the background tasks. The caller
    /// then sets the app ready.
    async fn serve(
        first: Option<Snapshot>,
        (admin_addr, readiness, shutdown_requested): (
            SocketAddr,
            Arc<Readiness>,
            Arc<tokio::sync::Notify>,
        ),
        (store, metrics, layers): (Store, Arc<Metrics>, UserLayers),
        stop: watch::Sender<bool>,
        stop_rx: watch::Receiver<bool>,
    ) -> anyhow::Result<App> {
        if let Some(first) = first {
            store.store(Arc::new(first));
        }
        let serving = store.load_full();
        metrics.set_config_version(&serving.version);
        let cfg = serving.config.clone();
        let (drain, watch) = Drain::new();
        let mut listeners = Vec::new();
        for (index, l) in cfg.listeners.iter().enumerate() {
            let tcp = TcpListener::bind(l.address)
                .await
                .with_context(|| format!("cannot bind listener `{}` to {}", l.name, l.address))?;
            let addr = tcp.local_addr()?;
            tracing::info!(listener = %l.name, address = %addr, tls = l.tls.is_some(), "listener bound");
            let name: Arc<str> = l.name.as_str().into();
            let mut ctx = ListenerCtx::new(index, name.clone(), store.clone(), metrics.clone());
            ctx.user_layers = layers.clone();
            let ctx = Arc::new(ctx);
            tokio::spawn(accept_loop(tcp, ctx, watch.clone()));
            listeners.push((name, addr));
        }
        drop(watch);
        tokio::spawn(sweep_idle(store.clone(), stop_rx.clone()));
        tokio::spawn(crate::policy::checker::run(
            store.clone(),
            metrics.clone(),
            stop_rx,
        ));
        Ok(App {
            admin_addr,
            listeners,
            store,
            metrics,
            identity: crate::identity::global().clone(),
            readiness,
            shutdown_requested,
            drain,
            stop,
        })
    }

    /// The bound address of a listener.
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, a)| *a)
    }

    /// Resolves when a local client asked for shutdown (`POST /shutdown` on
    /// the admin port); the caller then calls [`App::shutdown`].
    pub async fn shutdown_requested(&self) {
        self.shutdown_requested.notified().await
    }

    /// The drain deadline of the running config.
    pub fn drain_timeout(&self) -> Duration {
        self.store.load().config.drain_timeout.get()
    }

    /// Stops accepting, lets in-flight requests finish (at most `deadline`),
    /// then stops the admin server. Returns whether everything finished.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        self.readiness.set_draining();
        self.drain.signal();
        tracing::info!(deadline = ?deadline, "draining");
        let clean = self.drain.drain(deadline).await;
        if clean {
            tracing::info!("drained");
        } else {
            tracing::warn!("drain deadline passed; closing remaining connections");
        }
        // otel: spans still queued go out before the process exits.
        let tracer = self.store.load().tracer.clone();
        if let Some(tracer) = tracer {
            if tracer.flush().await {
                tracing::info!("queued spans sent");
            } else {
                tracing::warn!(
                    "queued spans not sent: the collector failed or did not answer within the export timeout; dropped"
                );
            }
        }
        let _ = self.stop.send(true);
        clean
    }
}

/// Closes pooled upstream connections that sat idle past their timeout.
async fn sweep_idle(store: Store, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = crate::drain::stopped(&mut stop) => return,
        }
        let snap = store.load_full();
        for b in snap.backends.values() {
            for e in &b.endpoints {
                e.client.evict_idle();
            }
        }
    }
}

async fn load_config_file(
    path: &std::path::Path,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Snapshot> {
    let (p, m) = (path.to_path_buf(), metrics.clone());
    let first = tokio::task::spawn_blocking(move || snapshot::load_file(&p, &m))
        .await?
        .map_err(|problems| {
            let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
            anyhow::anyhow!("invalid config {}:\n{}", path.display(), list.join("\n"))
        })?;
    metrics.config_reloads.with_label_values(&["applied"]).inc();
    tracing::info!(version = %first.version, path = %path.display(), "config applied");
    Ok(first)
}

async fn bind_admin(
    at: SocketAddr,
    store: &Store,
    metrics: &Arc<Metrics>,
    (readiness, shutdown): (&Arc<Readiness>, &Arc<tokio::sync::Notify>),
    log_level: LogLevel,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let tcp = TcpListener::bind(at)
        .await
        .with_context(|| format!("cannot bind the admin server to {at}"))?;
    let addr = tcp.local_addr()?;
    tracing::info!(address = %addr, "admin bound");
    let admin = Arc::new(Admin {
        store: store.clone(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        log_level,
        shutdown: shutdown.clone(),
    });
    tokio::spawn(admin::serve(tcp, admin, stop.clone()));
    Ok(addr)
}

/// How long a proxy with a snapshot cache waits for the control plane's
/// first snapshot before it starts from the cache instead.
const CACHE_GRACE: Duration = Duration::from_secs(2);

/// Starts the subscription and waits for the first snapshot: the control
/// plane's first, or, with a usable cache and no snapshot within
/// [`CACHE_GRACE`], the cached one (`None`: already in the store, see
/// [`Subscriber::fall_back_to_cache`]). The returned sender takes the
/// app's verdict (the first ACK or NACK).
async fn first_snapshot(
    settings: Settings,
    admin: SocketAddr,
    store: &Store,
    metrics: &Arc<Metrics>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(
    Option<Snapshot>,
    tokio::sync::oneshot::Sender<Result<(), String>>,
)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let cached = Subscriber::cached(&settings, admin, metrics);
    let subscriber = Subscriber::new(settings, store.clone(), metrics.clone(), tx).admin(admin);
    tokio::spawn(subscriber.run(stop.clone()));
    tracing::info!("waiting for the first snapshot from the control plane");
    if let Some((version, snap)) = cached {
        // The control plane's snapshot is newer than any cache: wait for it
        // a little, and start from the cache only if it does not come.
        if let Ok(Some((first, answer))) = tokio::time::timeout(CACHE_GRACE, rx.recv()).await {
            return Ok((Some(first), answer));
        }
        if let Some((first, answer)) = Subscriber::fall_back_to_cache(store, &mut rx, snap) {
            return Ok((Some(first), answer));
        }
        tracing::info!(version = %version, "no snapshot from the control plane yet; serving the cached snapshot");
        let (answer, _) = tokio::sync::oneshot::channel();
        return Ok((None, answer));
    }
    let (first, answer) = rx
        .recv()
        .await
        .ok_or_else(|| anyhow::anyhow!("the subscription ended before a first snapshot"))?;
    Ok((Some(first), answer))
}

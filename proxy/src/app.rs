//! Wiring: load the config, bind the listeners and the admin server, start
//! the accept loops, the config watcher and the pool sweeper. [`App`]
//! exposes the bound addresses, so tests and callers can bind port 0.

use crate::admin::{self, Admin, Readiness};
use crate::drain::Drain;
use crate::http::server::ListenerCtx;
use crate::listen::accept_loop;
use crate::metrics::Metrics;
use crate::snapshot::{self, FileSource, Store};
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
    readiness: Arc<Readiness>,
    drain: Drain,
    stop: watch::Sender<bool>,
}

impl App {
    /// Loads `config` and starts serving it. Errors list every problem.
    pub async fn start(config: PathBuf, log_level: LogLevel) -> anyhow::Result<App> {
        let metrics = Metrics::new();
        let path = config.clone();
        let m = metrics.clone();
        let first = tokio::task::spawn_blocking(move || snapshot::load_file(&path, &m))
            .await?
            .map_err(|problems| {
                let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
                anyhow::anyhow!("invalid config {}:\n{}", config.display(), list.join("\n"))
            })?;
        metrics.set_config_version(&first.version);
        metrics.config_reloads.with_label_values(&["applied"]).inc();
        tracing::info!(version = %first.version, path = %config.display(), "config applied");
        let cfg = first.config.clone();
        let store: Store = Arc::new(ArcSwap::from_pointee(first));

        let (drain, watch) = Drain::new();
        let (stop, stop_rx) = watch::channel(false);
        let mut listeners = Vec::new();
        for (index, l) in cfg.listeners.iter().enumerate() {
            let tcp = TcpListener::bind(l.address)
                .await
                .with_context(|| format!("cannot bind listener `{}` to {}", l.name, l.address))?;
            let addr = tcp.local_addr()?;
            tracing::info!(listener = %l.name, address = %addr, tls = l.tls.is_some(), "listener bound");
            let name: Arc<str> = l.name.as_str().into();
            let ctx = Arc::new(ListenerCtx::new(
                index,
                name.clone(),
                store.clone(),
                metrics.clone(),
            ));
            tokio::spawn(accept_loop(tcp, ctx, watch.clone()));
            listeners.push((name, addr));
        }
        drop(watch);

        let admin_tcp = TcpListener::bind(cfg.admin.address)
            .await
            .with_context(|| format!("cannot bind the admin server to {}", cfg.admin.address))?;
        let admin_addr = admin_tcp.local_addr()?;
        tracing::info!(address = %admin_addr, "admin bound");
        let readiness = Arc::new(Readiness::default());
        let admin = Arc::new(Admin {
            store: store.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            log_level,
        });
        tokio::spawn(admin::serve(admin_tcp, admin, stop_rx.clone()));
        tokio::spawn(
            FileSource::new(config, store.clone(), metrics.clone()).watch(stop_rx.clone()),
        );
        tokio::spawn(sweep_idle(store.clone(), stop_rx.clone()));
        tokio::spawn(crate::policy::checker::run(
            store.clone(),
            metrics.clone(),
            stop_rx,
        ));
        readiness.set_ready();
        Ok(App {
            admin_addr,
            listeners,
            store,
            metrics,
            readiness,
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

    /// The drain deadline of the running config.
    pub fn drain_timeout(&self) -> Duration {
        self.store.load().config.drain_timeout.get()
    }

    /// Stops accepting, lets in-flight requests finish (at most `deadline`),
    /// then stops the admin server. Returns whether everything finished.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        self.readiness.set_draining();
        tracing::info!(deadline = ?deadline, "draining");
        let clean = self.drain.drain(deadline).await;
        if clean {
            tracing::info!("drained");
        } else {
            tracing::warn!("drain deadline passed; closing remaining connections");
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

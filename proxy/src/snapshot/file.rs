//! The file source: a YAML config read from disk, reloaded when it (or a
//! certificate it names) changes, and on SIGHUP.
//!
//! A new config is parsed, validated and compiled before anything changes;
//! if any step fails, every problem is logged, a reject is counted and the
//! running snapshot stays. Listener names and addresses are fixed at start:
//! a config that changes them is rejected with a problem saying a restart is
//! needed.

use super::swap::{swap_in, Reload};
use super::{compile, load_materials, Snapshot, Store};
use crate::metrics::Metrics;
use remora_api::{Config, Problem};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the files are checked for changes.
const POLL: Duration = Duration::from_millis(500);

/// Reads, validates and compiles a config file (no previous state).
pub fn load_file(path: &Path, metrics: &Arc<Metrics>) -> Result<Snapshot, Vec<Problem>> {
    let config = read(path)?;
    let materials = load_materials(&config)?;
    compile(config, materials, None, metrics)
}

fn read(path: &Path) -> Result<Config, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
            line: None,
        }]
    })?;
    remora_api::parse_yaml(&text)
}

pub struct FileSource {
    path: PathBuf,
    store: Store,
    metrics: Arc<Metrics>,
}

impl FileSource {
    pub fn new(path: PathBuf, store: Store, metrics: Arc<Metrics>) -> Self {
        FileSource {
            path,
            store,
            metrics,
        }
    }

    /// Loads the file again and swaps it in if it is valid and different.
    pub fn reload(&self) -> Result<Reload, Vec<Problem>> {
        let result = self.try_reload();
        let label = match &result {
            Ok(Reload::Applied(version)) => {
                tracing::info!(version = %version, path = %self.path.display(), "config applied");
                self.metrics.set_config_version(version);
                "applied"
            }
            Ok(Reload::Unchanged) => "unchanged",
            Err(problems) => {
                for p in problems {
                    tracing::error!(problem = %p, path = %self.path.display(), "config rejected");
                }
                "rejected"
            }
        };
        self.metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        result
    }

    fn try_reload(&self) -> Result<Reload, Vec<Problem>> {
        swap_in(&self.store, &self.metrics, read(&self.path)?)
    }

    /// Reloads on SIGHUP and whenever the config file or a file it names
    /// changes, until `stop` turns true.
    pub async fn watch(self, mut stop: watch::Receiver<bool>) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by file change only");
                None
            }
        };
        let this = Arc::new(self);
        let mut seen = fingerprint(&this.watched_files()).await;
        loop {
            let by_signal = tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(POLL) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let files = this.watched_files();
            let now = fingerprint(&files).await;
            if !by_signal && now == seen {
                continue;
            }
            seen = now;
            if by_signal {
                tracing::info!("SIGHUP: reloading config");
            }
            let source = this.clone();
            // Parsing and compiling may take a while for a large config.
            let _ = tokio::task::spawn_blocking(move || source.reload()).await;
        }
    }

    /// The config file and every certificate file the running config names.
    fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        let cfg = self.store.load();
        for l in &cfg.config.listeners {
            if let Some(tls) = &l.tls {
                for c in &tls.certificates {
                    files.push(c.cert.clone());
                    files.push(c.key.clone());
                }
                files.extend(tls.client_ca.clone());
            }
        }
        for b in &cfg.config.backends {
            if let Some(tls) = &b.tls {
                files.push(tls.ca.clone());
                files.extend(tls.client_cert.clone());
                files.extend(tls.client_key.clone());
            }
        }
        files
    }
}

type Fingerprint = Vec<Option<(SystemTime, u64)>>;

async fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        // metadata follows symlinks, so a Kubernetes ConfigMap swap is seen.
        let m = tokio::fs::metadata(f).await.ok();
        out.push(m.and_then(|m| Some((m.modified().ok()?, m.len()))));
    }
    out
}

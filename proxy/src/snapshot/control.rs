//! The control-plane source: a subscription over HTTP/2 that receives
//! snapshots, validates and swaps each in, and answers ACK or NACK.
//!
//! Wire format (both directions newline-delimited JSON on one HTTP/2
//! stream, `POST /v1/subscribe`): the proxy sends a [`Hello`] then one
//! [`Ack`] per snapshot; the control plane sends whole snapshots
//! ([`SnapshotMsg`]) and deltas ([`remora_api::mesh::DeltaMsg`]: the
//! changes from the version the proxy serves, applied to a copy of its
//! config, validated whole, and swapped in like any snapshot). The proxy
//! reconnects with capped exponential backoff and jitter ([`super::backoff`]:
//! at most 1 s apart while the control plane is unreachable), keeps serving its
//! last good snapshot while the control plane is away, and, with a cache
//! file, can start from its last good snapshot when the control plane is
//! down. When the control plane asks (response header
//! `remora-stats-interval`), the proxy also sends a stats report
//! ([`crate::stats`]) on its request body at that interval.

mod body;
mod decode;

use body::{line, send_stats, stats_interval, AbortOnDrop, Lines};
use decode::strings;
pub use decode::{decode, decode_against, Decoded};

use super::backoff::{self, Backoff, Outcome};
use super::{
    compile_as, content_version, load_materials, swap_in_versioned, Reload, Snapshot, Store,
};
use crate::metrics::Metrics;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use remora_api::mesh::{Ack, Hello, SnapshotMsg};
use remora_api::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How a proxy finds and identifies itself to its control plane.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The control plane (`--control-plane`, TLS with `--control-plane-ca`).
    pub control_plane: crate::control_plane::Dial,
    pub workload: String,
    pub identity: Option<String>,
    /// Where the last good snapshot is kept across restarts.
    pub cache: Option<PathBuf>,
    /// The proxy gets its mesh certificate from the control plane (over
    /// TLS): a subscription waits a little for it, to present it.
    pub await_identity: bool,
    /// `--admin-allow-remote-changes`: set on every snapshot's
    /// `admin.allow_remote_changes` (the control plane never sets it).
    pub admin_allow_remote_changes: bool,
}

/// How long a subscription waits for the first certificate before it goes
/// without one (a control plane that requires it then refuses, and the
/// subscription is tried again).
const AWAIT_IDENTITY: Duration = Duration::from_secs(5);

/// How long a connect (TCP, and TLS with --control-plane-ca) may take: a
/// control plane whose address drops packets counts as unreachable after
/// this, instead of after the kernel's SYN retries (minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 ping interval, and how long a ping may go unanswered.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The first snapshot, compiled, handed to the app to bind its listeners.
/// The app answers whether it could; the answer is the first ACK or NACK.
pub type First = (Snapshot, oneshot::Sender<Result<(), String>>);

pub struct Subscriber {
    settings: Settings,
    /// The admin address the proxy really serves (`--admin`): it replaces
    /// the snapshot's, which the proxy never binds.
    admin: Option<SocketAddr>,
    /// The last session got as far as subscribing.
    subscribed: bool,
    /// The last session could not connect: nothing answered (see
    /// [`backoff::unreachable`]).
    unreachable: bool,
    store: Store,
    metrics: Arc<Metrics>,
    first: Option<mpsc::Sender<First>>,
    /// The control-plane version the proxy serves now.
    version: Option<String>,
    /// The version last written to the cache.
    saved: Option<String>,
}

impl Subscriber {
    pub fn new(
        settings: Settings,
        store: Store,
        metrics: Arc<Metrics>,
        first: mpsc::Sender<First>,
    ) -> Self {
        Subscriber {
            settings,
            admin: None,
            subscribed: false,
            unreachable: false,
            store,
            metrics,
            first: Some(first),
            version: None,
            saved: None,
        }
    }

    /// Serves `--admin`, whatever admin address snapshots name.
    pub fn admin(mut self, admin: SocketAddr) -> Self {
        self.admin = Some(admin);
        self
    }

    /// The cached snapshot, if there is a usable one (with `admin` as its
    /// admin address).
    pub fn cached(
        settings: &Settings,
        admin: SocketAddr,
        metrics: &Arc<Metrics>,
    ) -> Option<(String, Snapshot)> {
        let path = settings.cache.as_ref()?;
        let text = std::fs::read(path).ok()?;
        let mut msg: SnapshotMsg = match serde_json::from_slice(&text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable snapshot cache");
                return None;
            }
        };
        let problems = remora_api::validate(&msg.config);
        if !problems.is_empty() {
            tracing::warn!(path = %path.display(), problems = problems.len(), "ignoring an invalid snapshot cache");
            return None;
        }
        msg.config.admin.address = admin;
        msg.config.admin.allow_remote_changes |= settings.admin_allow_remote_changes;
        let materials = load_materials(&msg.config).ok()?;
        let local = content_version(&msg.version, materials.digest());
        let snap = compile_as(msg.config, materials, local, None, metrics).ok()?;
        tracing::info!(path = %path.display(), version = %msg.version, "read the cached snapshot");
        Some((msg.version, snap))
    }

    /// The app's side of the cache grace period ending without a first
    /// snapshot: the cached snapshot goes into the store *before* the
    /// channel closes, so whatever the subscriber takes from then on is
    /// swapped in over the cache. (Closing first let a snapshot arriving
    /// in between be checked against the empty store, whose listeners no
    /// snapshot matches: a valid snapshot was NACKed and the proxy stayed
    /// on its cache until the next change; found by the simulation.)
    /// Returns a first snapshot that raced in, which the app serves
    /// instead; `None`: the cache is served, and the store is the
    /// subscriber's from now on (the app must not store the cache again).
    pub fn fall_back_to_cache(
        store: &Store,
        rx: &mut mpsc::Receiver<First>,
        cached: Snapshot,
    ) -> Option<First> {
        store.store(Arc::new(cached));
        rx.close();
        rx.try_recv().ok()
    }

    /// Starts from a snapshot already being served (e.g. the cache).
    pub fn serving(mut self, version: String) -> Self {
        self.first = None;
        self.saved = Some(version.clone());
        self.version = Some(version);
        self
    }

    /// Subscribes until `stop`, reconnecting after any failure.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(fastrand::Rng::new());
        loop {
            let result = tokio::select! {
                r = self.session() => r,
                _ = crate::drain::stopped(&mut stop) => return,
            };
            self.metrics.control_plane_connected.set(0);
            let outcome = if std::mem::take(&mut self.subscribed) {
                Outcome::Subscribed
            } else if std::mem::take(&mut self.unreachable) {
                Outcome::Unreachable
            } else {
                Outcome::Failed
            };
            let serving = !self.store.load().version.is_empty();
            let wait = backoff.next(outcome);
            let retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            match result {
                Ok(()) => {
                    tracing::warn!(address = %self.settings.control_plane.address, serving, retry_in_ms, "control plane closed the subscription; reconnecting");
                }
                Err(e) => {
                    let unreachable = outcome == Outcome::Unreachable;
                    tracing::warn!(address = %self.settings.control_plane.address, error = %e, serving, unreachable, retry_in_ms, "subscription to the control plane failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = crate::drain::stopped(&mut stop) => return,
            }
        }
    }

    /// One subscription: hello, then snapshots in and verdicts out.
    async fn session(&mut self) -> anyhow::Result<()> {
        if self.settings.await_identity {
            // The certificate request goes out at the same time, and takes
            // a few milliseconds: then the subscription can prove its
            // workload from the start.
            let identity = crate::identity::global();
            let deadline = tokio::time::Instant::now() + AWAIT_IDENTITY;
            while identity.current().is_none() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, self.settings.control_plane.connect());
        let io = match connect.await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => {
                self.unreachable = backoff::unreachable(e.kind());
                return Err(e.into());
            }
            Err(_) => {
                self.unreachable = true;
                anyhow::bail!("connect timed out after {CONNECT_TIMEOUT:?}");
            }
        };
        // Pings find a control plane that vanished without closing.
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(conn);
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let body = Lines(rx);
        let req = http::Request::post("http://remora-control-plane/v1/subscribe")
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body)?;
        tx.send(line(&self.hello())).await?;
        let rsp = send.send_request(req).await?;
        if !rsp.status().is_success() {
            let status = rsp.status();
            let text = rsp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            anyhow::bail!(
                "subscribe refused: {status}: {}",
                String::from_utf8_lossy(&text).trim()
            );
        }
        tracing::info!(address = %self.settings.control_plane.address, workload = %self.settings.workload, "subscribed to the control plane");
        self.metrics.control_plane_connected.set(1);
        self.subscribed = true;
        // Aborted when the session ends: reports go on this stream only.
        let _stats = stats_interval(rsp.headers()).map(|every| {
            AbortOnDrop(tokio::spawn(send_stats(
                every,
                self.metrics.clone(),
                tx.clone(),
            )))
        });
        let mut body = rsp.into_body();
        let mut buf = BytesMut::new();
        // Bytes of `buf` known to hold no newline: a 10 MB snapshot arrives
        // in hundreds of frames, and each is searched once.
        let mut searched = 0;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = buf[searched..].iter().position(|b| *b == b'\n') {
                let mut msg = buf.split_to(searched + end + 1).freeze();
                searched = 0;
                msg.truncate(msg.len() - 1);
                let verdict = self.receive(msg).await?;
                tx.send(line(&verdict)).await?;
                self.remember(&verdict).await;
            }
            searched = buf.len();
        }
        Ok(())
    }

    /// The Hello a subscription opens with: the workload, and the
    /// control-plane version served (if any).
    pub fn hello(&self) -> Hello {
        Hello {
            workload: self.settings.workload.clone(),
            identity: self.settings.identity.clone(),
            version: self.version.clone(),
        }
    }

    /// The control-plane version served now.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Takes one line of the stream (without its newline): decodes it (a
    /// delta against the config served now), validates and applies it, and
    /// returns the verdict to send. `Err` when the line is not a message at
    /// all, which ends the subscription. The subscription loop and the
    /// deterministic simulation (`control-plane/tests/sim/`) both call it.
    pub async fn receive(&mut self, line: Bytes) -> anyhow::Result<Ack> {
        // Decoding and validating a large snapshot takes tens of
        // milliseconds: not on a runtime worker.
        let (store, has) = (self.store.clone(), self.version.clone());
        let decoded = tokio::task::spawn_blocking(move || {
            let current = store.load_full();
            decode_against(&line, has.as_deref(), &current.config)
        })
        .await??;
        Ok(self.apply(decoded).await)
    }

    /// After a verdict went out: an applied version is written to the cache
    /// (after the ACK, so it does not delay convergence).
    pub async fn remember(&mut self, verdict: &Ack) {
        if let Ack::Ack { version } = verdict {
            if self.saved.as_ref() != Some(version) {
                self.save(version).await;
                self.saved = Some(version.clone());
            }
        }
    }

    async fn apply(&mut self, mut decoded: Decoded) -> Ack {
        if let (Ok(config), Some(admin)) = (&mut decoded.config, self.admin) {
            config.admin.address = admin;
            config.admin.allow_remote_changes |= self.settings.admin_allow_remote_changes;
        }
        let version = decoded.version;
        let delta = decoded.delta;
        let result = self.try_apply(decoded.config, version.clone()).await;
        let label = match &result {
            Ok(_) => "applied",
            Err(_) => "rejected",
        };
        self.metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        match result {
            Ok(Reload::Applied(local)) => {
                match delta {
                    Some(changes) => {
                        tracing::info!(version = %version, local_version = %local, changes, "delta applied")
                    }
                    None => {
                        tracing::info!(version = %version, local_version = %local, "snapshot applied")
                    }
                }
                self.metrics.set_config_version(&local);
                self.version = Some(version.clone());
                Ack::Ack { version }
            }
            Ok(Reload::Unchanged) => {
                self.version = Some(version.clone());
                Ack::Ack { version }
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(version = %version, problem = %e, "snapshot rejected");
                }
                Ack::Nack { version, errors }
            }
        }
    }

    /// Swaps `config` in, or hands it to the app as the first snapshot. Its
    /// local version derives from the control plane's `version` (no 10 MB
    /// serialization to hash).
    async fn try_apply(
        &mut self,
        config: Result<Config, Vec<String>>,
        version: String,
    ) -> Result<Reload, Vec<String>> {
        let config = config?;
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        // Without anyone waiting for a first snapshot (the proxy started from
        // its cache), every snapshot is a swap.
        let first = self.first.take().filter(|f| !f.is_closed());
        let Some(first) = first else {
            // Compiling a large snapshot must not stall the runtime.
            return tokio::task::spawn_blocking(move || {
                swap_in_versioned(&store, &metrics, config, Some(&version))
            })
            .await
            .map_err(|e| vec![e.to_string()])?
            .map_err(strings);
        };
        let content = version.clone();
        let snap = tokio::task::spawn_blocking(move || {
            let materials = load_materials(&config)?;
            let local = content_version(&content, materials.digest());
            compile_as(config, materials, local, None, &metrics)
        })
        .await
        .map_err(|e| vec![e.to_string()])?
        .map_err(strings)?;
        let local = snap.version.clone();
        let (answer, bound) = oneshot::channel();
        if let Err(mpsc::error::SendError((snap, _))) = first.send((snap, answer)).await {
            // The app stopped waiting (it started from the cache) just now.
            let (store, metrics) = (self.store.clone(), self.metrics.clone());
            let config = (*snap.config).clone();
            return tokio::task::spawn_blocking(move || {
                swap_in_versioned(&store, &metrics, config, Some(&version))
            })
            .await
            .map_err(|e| vec![e.to_string()])?
            .map_err(strings);
        }
        match bound.await {
            Ok(Ok(())) => Ok(Reload::Applied(local)),
            Ok(Err(e)) => Err(vec![e]),
            Err(_) => Err(vec!["the proxy is shutting down".to_string()]),
        }
    }

    /// Keeps the applied snapshot for a restart while the control plane is
    /// away. Encoding and writing a large snapshot runs on a blocking thread.
    async fn save(&self, version: &str) {
        let Some(path) = self.settings.cache.clone() else {
            return;
        };
        let (store, version) = (self.store.clone(), version.to_string());
        let written = tokio::task::spawn_blocking(move || {
            let snap = store.load_full();
            let msg = SnapshotMsg {
                version,
                config: (*snap.config).clone(),
            };
            let tmp = path.with_extension("tmp");
            serde_json::to_vec(&msg)
                .map_err(std::io::Error::other)
                .and_then(|bytes| std::fs::write(&tmp, bytes))
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| (path, e))
        })
        .await;
        if let Ok(Err((path, e))) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the snapshot cache");
        }
    }
}

#[cfg(test)]
mod tests;

//! One simulated sidecar: the real [`Subscriber`] (decode, delta base
//! check, validate, swap, ACK/NACK, snapshot cache) over a real [`Store`],
//! and the app's first-snapshot handoff modelled on `proxy/src/app.rs`
//! (`first_snapshot`): wait for the control plane's first snapshot, or,
//! with a usable cache, for a grace period, then fall back to the cache
//! (the real [`Subscriber::fall_back_to_cache`]). The grace period ends at a
//! step of its own, so a line can reach the subscriber just before or just
//! after it, as on the real app's multi-threaded runtime.

use bytes::Bytes;
use remora_api::mesh::Ack;
use remora_proxy::control_plane::Dial;
use remora_proxy::metrics::Metrics;
use remora_proxy::snapshot::control::{First, Settings, Subscriber};
use remora_proxy::snapshot::{Snapshot, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Where the app is in getting its first snapshot.
pub enum App {
    /// Waiting on the subscriber's channel (`cache`: what it falls back to).
    Waiting {
        rx: mpsc::Receiver<First>,
        cache: Option<(String, Snapshot)>,
    },
    /// Serving; nothing more from the app.
    Serving,
}

pub struct Proxy {
    /// `w0#1`: the workload and the replica.
    pub name: String,
    pub workload: String,
    pub admin: SocketAddr,
    pub cache: PathBuf,
    pub store: Store,
    pub sub: Subscriber,
    pub app: App,
    /// Readiness as the app sets it: once, when it first serves.
    pub ready: bool,
    /// The control-plane version the proxy serves as the simulation
    /// follows it, and the generation (see `World::seq`) of the line it
    /// came from.
    pub serving: Option<(String, u64)>,
    /// The generation of the version last written to the cache.
    pub cache_tag: Option<(String, u64)>,
    /// The open connection, by id.
    pub conn: Option<u64>,
    /// Connections cannot reach the control plane until this step.
    pub isolated_until: u64,
}

impl Proxy {
    /// A proxy process starting: empty store, cache read, subscriber made.
    pub fn start(name: String, workload: String, admin: SocketAddr, cache: PathBuf) -> Proxy {
        let metrics = Metrics::new();
        let store: Store = Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::empty()));
        let settings = Settings {
            control_plane: Dial::plain(SocketAddr::from(([127, 0, 0, 1], 8086))),
            workload: workload.clone(),
            identity: None,
            cache: Some(cache.clone()),
            await_identity: false,
            admin_allow_remote_changes: false,
        };
        let (tx, rx) = mpsc::channel(1);
        let cached = Subscriber::cached(&settings, admin, &metrics);
        let sub = Subscriber::new(settings, store.clone(), metrics, tx).admin(admin);
        Proxy {
            name,
            workload,
            admin,
            cache,
            store,
            sub,
            app: App::Waiting { rx, cache: cached },
            ready: false,
            serving: None,
            cache_tag: None,
            conn: None,
            isolated_until: 0,
        }
    }

    /// Restarts the process: everything but the cache file is lost.
    pub fn restart(&mut self) {
        let tag = self.cache_tag.take();
        *self = Proxy::start(
            self.name.clone(),
            self.workload.clone(),
            self.admin,
            self.cache.clone(),
        );
        self.cache_tag = tag;
    }

    /// Whether the app waits with a cache to fall back to.
    pub fn has_grace(&self) -> bool {
        matches!(self.app, App::Waiting { cache: Some(_), .. })
    }

    /// The cache grace period ends: the app falls back to the cache with
    /// the real [`Subscriber::fall_back_to_cache`] (serving a first
    /// snapshot that raced in instead). Returns the version served from
    /// the cache, if that is what happened.
    pub fn grace_expires(&mut self) -> Option<String> {
        let App::Waiting { mut rx, cache } = std::mem::replace(&mut self.app, App::Serving) else {
            return None;
        };
        let (version, snap) = cache?;
        if let Some(first) = Subscriber::fall_back_to_cache(&self.store, &mut rx, snap) {
            self.serve_first(first);
            return None;
        }
        self.ready = true;
        self.serving = self.cache_tag.clone().filter(|(v, _)| *v == version);
        Some(version)
    }

    /// The app takes the first snapshot: stores it (it would bind its
    /// listeners), answers OK, becomes ready.
    fn serve_first(&mut self, (snap, answer): First) {
        self.store.store(Arc::new(snap));
        let _ = answer.send(Ok(()));
        self.ready = true;
        self.app = App::Serving;
    }

    /// The subscriber takes one line, while the app (if it waits) takes a
    /// first snapshot handed to it. `Err`: the line was no message, the
    /// subscription ends.
    pub async fn receive(&mut self, line: Bytes) -> anyhow::Result<Ack> {
        let (sub, app) = (&mut self.sub, &mut self.app);
        let receive = sub.receive(line);
        tokio::pin!(receive);
        let mut first = None;
        let verdict = loop {
            let waiting = match app {
                App::Waiting { rx, .. } if first.is_none() => Some(rx),
                _ => None,
            };
            tokio::select! {
                v = &mut receive => break v,
                f = async { waiting.unwrap().recv().await }, if waiting.is_some() => {
                    // The app stores it and answers; the subscriber then
                    // finishes (the answer is its verdict).
                    let Some((snap, answer)) = f else { continue };
                    self.store.store(Arc::new(snap));
                    let _ = answer.send(Ok(()));
                    first = Some(());
                }
            }
        };
        if first.is_some() {
            self.ready = true;
            self.app = App::Serving;
        }
        verdict
    }
}

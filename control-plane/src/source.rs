//! Mesh sources and the generations they publish: [`MeshSource`] validates
//! and compiles each mesh a source offers, and publishes each new
//! [`Generation`] on a `watch` channel that every subscription follows. The
//! mesh file is one source (here); others (`k8s`, `etcd`) offer meshes
//! through [`MeshSource::offer`] too, so everything downstream is shared.
//!
//! The file is polled (modification time and length) every 100 ms; a
//! change starts a debounce that waits until the file has been still for
//! 100 ms, so an editor's burst of writes is read once.
//! SIGHUP reloads at once. An invalid mesh is rejected (every problem logged,
//! counted, shown on `/status`) and the last good one stays.

use crate::app::stopped;
use crate::compile::{
    compile_parts, resolve, version_of, workload_snapshot, Parts, Shared, WorkloadSnapshot,
};
use crate::metrics::Metrics;
use crate::proxies::rfc3339;
use arc_swap::ArcSwap;
use bytes::Bytes;
use remora_api::mesh::{DeltaMsg, Mesh};
use remora_api::Problem;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the file is checked for changes (a `stat`: cheap).
pub const POLL: Duration = Duration::from_millis(100);
/// How long the file must stay unchanged before it is read.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// One workload's snapshot, ready to send: whole, or as a delta from the
/// version a proxy has.
#[derive(Clone, Debug)]
pub struct Published {
    pub version: String,
    pub snapshot: Arc<WorkloadSnapshot>,
    /// When the change that produced this version was seen.
    pub since: Instant,
}

impl Published {
    fn new(snapshot: WorkloadSnapshot, since: Instant) -> Published {
        Published {
            version: snapshot.version.clone(),
            snapshot: Arc::new(snapshot),
            since,
        }
    }

    /// The whole snapshot as a line (a `SnapshotMsg` and a newline), put
    /// together from JSON the workloads that call the same services share
    /// (with 10k services: a 10 MB copy, a few milliseconds; nothing is
    /// kept per workload).
    pub fn line(&self) -> Bytes {
        Bytes::from(self.snapshot.line())
    }

    /// The changes from `prev` as a line (a `DeltaMsg` and a newline), when
    /// a delta can say them (see [`WorkloadSnapshot::delta_from`]).
    pub fn delta_line(&self, prev: &Published) -> Option<(Bytes, usize)> {
        let delta = self.snapshot.delta_from(&prev.snapshot)?;
        let changes = delta.len();
        let msg = DeltaMsg {
            version: self.version.clone(),
            base: prev.version.clone(),
            delta,
        };
        Some((crate::ndjson::line(&msg), changes))
    }
}

/// The mesh being served, compiled.
#[derive(Debug)]
pub struct Generation {
    pub mesh_version: String,
    pub services: Vec<String>,
    pub snapshots: BTreeMap<String, Published>,
    /// Each workload's SPIFFE ID.
    pub identities: BTreeMap<String, String>,
    /// Every service compiled, for the next generation to reuse.
    parts: Parts,
}

impl Generation {
    /// Compiles `mesh` without trust roots (a control plane without a CA);
    /// see [`Generation::build_with_roots`].
    pub fn build(mesh: &Mesh, prev: Option<&Generation>, seen: Instant) -> Generation {
        Self::build_with_roots(mesh, &[], prev, seen)
    }

    /// Compiles `mesh`, every snapshot carrying `trust_roots` (if any),
    /// reusing what `prev` compiled of the services that did not change; a
    /// snapshot whose version is unchanged from `prev` is `prev`'s (its
    /// `since` kept, so convergence is timed from the change that made it).
    pub fn build_with_roots(
        mesh: &Mesh,
        trust_roots: &[String],
        prev: Option<&Generation>,
        seen: Instant,
    ) -> Generation {
        Self::build_as(mesh, version_of(mesh), trust_roots, prev, seen)
    }

    /// [`Generation::build_with_roots`] with the mesh's version already
    /// computed (serializing a 10k-service mesh takes a while: once a reload).
    fn build_as(
        mesh: &Mesh,
        mesh_version: String,
        trust_roots: &[String],
        prev: Option<&Generation>,
        seen: Instant,
    ) -> Generation {
        let resolved = resolve(mesh);
        let parts = compile_parts(&resolved, prev.map(|g| &g.parts));
        let mut shared = Shared::default();
        let snapshots = resolved
            .workloads
            .iter()
            .map(|w| {
                let snap = workload_snapshot(&parts, w, trust_roots, &mut shared);
                let kept = prev
                    .and_then(|g| g.snapshots.get(&w.name))
                    .filter(|p| p.version == snap.version);
                let published = match kept {
                    Some(p) => p.clone(),
                    None => Published::new(snap, seen),
                };
                (w.name.clone(), published)
            })
            .collect();
        Generation {
            mesh_version,
            services: mesh.services.iter().map(|s| s.name.clone()).collect(),
            snapshots,
            identities: mesh
                .workloads
                .iter()
                .map(|w| (w.name.clone(), mesh.spiffe_id(w)))
                .collect(),
            parts,
        }
    }
}

/// The mesh source's side of `/status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MeshStatus {
    /// Where the mesh comes from: the file's path, `kubernetes`, or an etcd
    /// address and prefix.
    pub path: String,
    /// When the mesh being served was applied (RFC 3339).
    pub applied_at: String,
    /// When the file was last rejected, if it still is.
    pub rejected_at: Option<String>,
    /// Why: every problem of the rejected file.
    pub problems: Vec<String>,
    /// What the source left out of the mesh it serves (the Kubernetes
    /// source: each object it could not take, named, and why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

/// Reads and validates a mesh file, as for a control plane with a CA.
pub fn read(path: &Path) -> Result<Mesh, Vec<Problem>> {
    read_for(path, true)
}

/// Reads and validates a mesh file for a control plane with or without a
/// CA (see [`crate::mesh::parse_for`]).
pub fn read_for(path: &Path, with_ca: bool) -> Result<Mesh, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
            line: None,
        }]
    })?;
    crate::mesh::parse_for(&text, with_ca)
}

/// Publishes generations: every source (the mesh file, and any other that
/// produces a [`Mesh`]) hands each mesh it reads to [`MeshSource::offer`],
/// which rejects an invalid one (the last good one stays), skips an
/// unchanged one and compiles and publishes the rest.
pub struct MeshSource {
    /// Where the mesh comes from, for logs and `/status` (a file's path,
    /// `kubernetes`, an etcd address and prefix).
    origin: String,
    /// The CA's trust roots, put in every snapshot (empty without a CA).
    trust_roots: Vec<String>,
    tx: watch::Sender<Arc<Generation>>,
    metrics: Arc<Metrics>,
    pub status: Arc<ArcSwap<MeshStatus>>,
}

impl MeshSource {
    /// Starts publishing from `first`, a valid mesh (see
    /// [`MeshSource::check`]). Every snapshot carries `trust_roots` (none
    /// without a CA).
    pub fn new(
        origin: String,
        first: &Mesh,
        trust_roots: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> MeshSource {
        let first = Generation::build_with_roots(first, &trust_roots, None, Instant::now());
        log_applied(&origin, &first, first.snapshots.len());
        metrics.mesh_reloads.with_label_values(&["applied"]).inc();
        metrics.set_mesh_version(&first.mesh_version);
        let status = MeshStatus {
            path: origin.clone(),
            applied_at: rfc3339(SystemTime::now()),
            ..MeshStatus::default()
        };
        MeshSource {
            origin,
            trust_roots,
            tx: watch::channel(Arc::new(first)).0,
            metrics,
            status: Arc::new(ArcSwap::from_pointee(status)),
        }
    }

    /// Starts with no mesh yet (an empty one, not counted as applied), for
    /// a source that has none until it first reads its store (etcd); the
    /// first mesh it offers is then applied.
    pub fn starting(origin: String, trust_roots: Vec<String>, metrics: Arc<Metrics>) -> MeshSource {
        let mut empty =
            Generation::build_with_roots(&Mesh::default(), &trust_roots, None, Instant::now());
        // No version yet: the first mesh offered is applied, even an empty one.
        empty.mesh_version = String::new();
        let status = MeshStatus {
            path: origin.clone(),
            ..MeshStatus::default()
        };
        MeshSource {
            origin,
            trust_roots,
            tx: watch::channel(Arc::new(empty)).0,
            metrics,
            status: Arc::new(ArcSwap::from_pointee(status)),
        }
    }

    /// Loads the mesh file once; fails with every problem if it is invalid.
    pub fn load(
        path: PathBuf,
        trust_roots: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<MeshSource> {
        let mesh = read_for(&path, !trust_roots.is_empty()).map_err(|problems| {
            let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
            anyhow::anyhow!("invalid mesh {}:\n{}", path.display(), list.join("\n"))
        })?;
        Ok(MeshSource::new(
            path.display().to_string(),
            &mesh,
            trust_roots,
            metrics,
        ))
    }

    /// Every problem of a mesh that did not come from a file (lines unset),
    /// with the rules of this control plane (with or without a CA).
    pub fn check(&self, mesh: &Mesh) -> Vec<Problem> {
        crate::mesh::problems_for(mesh, !self.trust_roots.is_empty())
    }

    /// Says, on `/status`, what the source left out of the mesh.
    pub fn set_left_out(&self, left_out: Vec<String>) {
        let mut status = MeshStatus::clone(&self.status.load());
        status.left_out = left_out;
        self.status.store(Arc::new(status));
    }

    /// Follows the generations this source publishes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Generation>> {
        self.tx.subscribe()
    }

    /// Reads the mesh file at `path` again and offers it.
    pub fn reload(&self, path: &Path, seen: Instant) {
        self.offer(read_for(path, !self.trust_roots.is_empty()), seen);
    }

    /// Publishes `mesh` if it is valid and different from the one served;
    /// `Err` (every problem of a mesh read) is a rejection. `seen` is when
    /// the change was noticed.
    pub fn offer(&self, mesh: Result<Mesh, Vec<Problem>>, seen: Instant) {
        let mut status = MeshStatus::clone(&self.status.load());
        let now = rfc3339(SystemTime::now());
        let result = match mesh {
            Err(problems) => {
                for p in &problems {
                    tracing::error!(problem = %p, source = %self.origin, "mesh rejected");
                }
                status.rejected_at = Some(now);
                status.problems = problems.iter().map(|p| p.to_string()).collect();
                "rejected"
            }
            Ok(mesh) => {
                status.rejected_at = None;
                status.problems.clear();
                let current = self.tx.borrow().clone();
                let version = version_of(&mesh);
                if version == current.mesh_version {
                    "unchanged"
                } else {
                    let next = Generation::build_as(
                        &mesh,
                        version,
                        &self.trust_roots,
                        Some(&current),
                        seen,
                    );
                    let changed = next
                        .snapshots
                        .iter()
                        .filter(|(w, p)| {
                            current.snapshots.get(*w).map(|c| &c.version) != Some(&p.version)
                        })
                        .count();
                    log_applied(&self.origin, &next, changed);
                    self.metrics.set_mesh_version(&next.mesh_version);
                    self.tx.send_replace(Arc::new(next));
                    status.applied_at = now;
                    "applied"
                }
            }
        };
        self.status.store(Arc::new(status));
        self.metrics.mesh_reloads.with_label_values(&[result]).inc();
    }

    /// Reloads the mesh file at `path` when it changes (debounced) and on
    /// SIGHUP, until `stop`.
    pub async fn watch_file(self: Arc<Self>, path: PathBuf, mut stop: watch::Receiver<bool>) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by file change only"))
            .ok();
        let mut seen = fingerprint(&path).await;
        loop {
            let by_signal = tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(POLL) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let now = fingerprint(&path).await;
            if !by_signal && now == seen {
                continue;
            }
            let noticed = Instant::now();
            let mut last = now;
            // Wait for the writes to settle.
            loop {
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(DEBOUNCE) => {}
                }
                let again = fingerprint(&path).await;
                if again == last {
                    break;
                }
                last = again;
            }
            seen = last;
            if by_signal {
                tracing::info!("SIGHUP: reloading the mesh");
            }
            let source = self.clone();
            let path = path.clone();
            // Validating and compiling a large mesh may take a while.
            let _ = tokio::task::spawn_blocking(move || source.reload(&path, noticed)).await;
        }
    }
}

fn log_applied(origin: &str, g: &Generation, changed: usize) {
    tracing::info!(
        version = %g.mesh_version,
        source = %origin,
        services = g.services.len(),
        workloads = g.snapshots.len(),
        changed_workloads = changed,
        "mesh applied"
    );
}

type Fingerprint = Option<(SystemTime, u64)>;

async fn fingerprint(path: &Path) -> Fingerprint {
    // metadata follows symlinks, so a Kubernetes ConfigMap swap is seen.
    let m = tokio::fs::metadata(path).await.ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = include_str!("../../examples/mesh.yaml");

    #[tokio::test]
    async fn reload_publishes_changes_keeps_unchanged_snapshots_and_rejects_bad_files() {
        let dir = remora_test_support::proxy::tempdir();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, MESH).unwrap();
        let metrics = Metrics::new();
        let source = MeshSource::load(path.clone(), Vec::new(), metrics.clone()).unwrap();
        let mut gens = source.subscribe();
        let first = gens.borrow_and_update().clone();
        let reloads = |r: &str| metrics.mesh_reloads.with_label_values(&[r]).get();

        std::fs::write(&path, format!("# a comment\n{MESH}")).unwrap();
        source.reload(&path, Instant::now());
        assert!(!gens.has_changed().unwrap(), "same mesh, nothing published");
        assert_eq!(reloads("unchanged"), 1);

        std::fs::write(&path, "services: [{name: Bad}]").unwrap();
        source.reload(&path, Instant::now());
        assert!(!gens.has_changed().unwrap());
        assert_eq!(reloads("rejected"), 1);
        let status = source.status.load();
        assert!(status.rejected_at.is_some());
        assert!(
            status.problems[0].contains("services[0].name"),
            "{:?}",
            status.problems
        );

        let seen = Instant::now();
        std::fs::write(&path, MESH.replace("127.0.0.1:7005", "127.0.0.1:17005")).unwrap();
        source.reload(&path, seen);
        assert!(gens.has_changed().unwrap());
        let next = gens.borrow_and_update().clone();
        assert_ne!(next.mesh_version, first.mesh_version);
        // `web` does not call `users`: its snapshot and its clock are kept.
        assert_eq!(
            next.snapshots["web"].version,
            first.snapshots["web"].version
        );
        assert_eq!(next.snapshots["web"].since, first.snapshots["web"].since);
        assert_ne!(
            next.snapshots["api"].version,
            first.snapshots["api"].version
        );
        assert_eq!(next.snapshots["api"].since, seen);
        assert!(source.status.load().problems.is_empty());
        assert_eq!(reloads("applied"), 2);
    }
}

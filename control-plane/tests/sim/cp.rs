//! The simulated control plane: the real [`MeshSource`] (mesh rules,
//! rejection of invalid meshes, generations, versions), the real
//! [`Stream::open`] (Hello checks, the `Proxies` entry) and one real
//! [`Session`] per subscription (what to push: nothing, a delta or the
//! whole snapshot; what an ACK or NACK means). Only the transport is the
//! simulation's: lines go through its queues instead of HTTP/2.

use remora_api::mesh::Mesh;
use remora_control_plane::certify::Certifier;
use remora_control_plane::metrics::Metrics;
use remora_control_plane::proxies::Proxies;
use remora_control_plane::source::{Generation, MeshSource};
use remora_control_plane::stream::Stream;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

pub struct ControlPlane {
    pub source: MeshSource,
    pub stream: Arc<Stream>,
    pub proxies: Arc<Proxies>,
    pub generations: watch::Receiver<Arc<Generation>>,
    _stop: watch::Sender<bool>,
}

impl ControlPlane {
    /// A control plane starting on `mesh` (valid: a control plane whose
    /// file is invalid does not start).
    pub fn start(mesh: &Mesh) -> ControlPlane {
        let metrics = Metrics::new();
        let source = MeshSource::new("sim".into(), mesh, Vec::new(), metrics.clone());
        let proxies = Proxies::new(metrics.clone());
        let (stop_tx, stop) = watch::channel(false);
        let generations = source.subscribe();
        let certifier = Arc::new(Certifier {
            ca: None,
            auth: None,
            generations: generations.clone(),
            metrics: metrics.clone(),
        });
        let stream = Arc::new(Stream {
            require_identity: false,
            generations: generations.clone(),
            proxies: proxies.clone(),
            metrics,
            stop,
            certifier,
            stats_interval: None,
        });
        ControlPlane {
            source,
            stream,
            proxies,
            generations,
            _stop: stop_tx,
        }
    }

    /// The generation served now.
    pub fn current(&self) -> Arc<Generation> {
        self.generations.borrow().clone()
    }

    /// Offers a mesh as a source does: its problems by the control plane's
    /// rules, then [`MeshSource::offer`]. Returns the problems.
    pub fn offer(&self, mesh: &Mesh) -> Vec<remora_api::Problem> {
        let problems = self.source.check(mesh);
        let offered = if problems.is_empty() {
            Ok(mesh.clone())
        } else {
            Err(problems.clone())
        };
        self.source.offer(offered, Instant::now());
        problems
    }
}

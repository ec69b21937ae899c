//! What the control plane knows about each connected proxy: its workload,
//! since when it is connected, the version it was last sent, the version it
//! applied (ACK), the version it rejected (NACK) with its errors, and the
//! last thing that went wrong. Replicas of a workload are separate entries,
//! each with its own id. An entry lives as long as its [`Connection`].

use crate::metrics::Metrics;
use remora_api::stats::StatsReport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct ProxyState {
    pub id: u64,
    pub workload: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The SPIFFE ID of the client certificate it subscribed with (over
    /// TLS), checked to be its workload's; `null` without one.
    pub verified_identity: Option<String>,
    /// The proxy's address as this control plane sees it.
    pub peer: String,
    /// RFC 3339, UTC.
    pub connected_since: String,
    /// The version last sent on this stream.
    pub sent: Option<String>,
    /// The version the proxy serves: its last ACK, or what its Hello said.
    pub applied: Option<String>,
    /// The last version it rejected, until it applies a later one.
    pub rejected: Option<String>,
    /// The errors of that rejection.
    pub errors: Vec<String>,
    pub last_error: Option<String>,
    /// Its last two stats reports (`remora-stats-interval`), for
    /// [`crate::graph`].
    #[serde(skip)]
    pub stats: Stats,
}

/// A proxy's last two stats reports, each with when it arrived.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub prev: Option<(Instant, Arc<StatsReport>)>,
    pub last: Option<(Instant, Arc<StatsReport>)>,
}

/// Every connected proxy, by connection id.
pub struct Proxies {
    next: AtomicU64,
    all: Mutex<BTreeMap<u64, ProxyState>>,
    metrics: Arc<Metrics>,
}

impl Proxies {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Proxies {
            next: AtomicU64::new(1),
            all: Mutex::default(),
            metrics,
        })
    }

    /// Records a new subscription; it is forgotten when the handle drops.
    pub fn connect(
        self: &Arc<Self>,
        workload: &str,
        identity: Option<String>,
        verified_identity: Option<String>,
        serving: Option<String>,
        peer: std::net::SocketAddr,
    ) -> Connection {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = ProxyState {
            id,
            workload: workload.to_string(),
            identity,
            verified_identity,
            peer: peer.to_string(),
            connected_since: rfc3339(SystemTime::now()),
            sent: None,
            applied: serving,
            rejected: None,
            errors: Vec::new(),
            last_error: None,
            stats: Stats::default(),
        };
        self.lock().insert(id, state);
        self.metrics.connected_proxies.inc();
        Connection {
            id,
            proxies: self.clone(),
        }
    }

    /// A copy of every entry, by id.
    pub fn list(&self) -> Vec<ProxyState> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ProxyState>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One subscription's entry in [`Proxies`].
pub struct Connection {
    pub id: u64,
    proxies: Arc<Proxies>,
}

impl Connection {
    fn update(&self, f: impl FnOnce(&mut ProxyState)) {
        if let Some(state) = self.proxies.lock().get_mut(&self.id) {
            f(state);
        }
    }

    pub fn sent(&self, version: &str) {
        self.update(|s| s.sent = Some(version.to_string()));
    }

    pub fn applied(&self, version: &str) {
        self.update(|s| {
            if s.sent.as_deref() == Some(version) {
                // In step with what it was sent: an older rejection is history.
                s.rejected = None;
                s.errors.clear();
            }
            s.applied = Some(version.to_string());
        });
    }

    pub fn rejected(&self, version: &str, errors: Vec<String>) {
        self.update(|s| {
            s.last_error = errors.first().cloned();
            s.rejected = Some(version.to_string());
            s.errors = errors;
        });
    }

    /// Keeps a stats report (and the one before it).
    pub fn stats(&self, report: StatsReport) {
        let report = (Instant::now(), Arc::new(report));
        self.update(|s| s.stats.prev = s.stats.last.replace(report));
    }

    pub fn error(&self, message: String) {
        self.update(|s| s.last_error = Some(message));
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.proxies.lock().remove(&self.id);
        self.proxies.metrics.connected_proxies.dec();
    }
}

pub use remora_api::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_separate_and_forgotten_on_drop() {
        let proxies = Proxies::new(Metrics::new());
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let a = proxies.connect("web", None, None, None, peer);
        let b = proxies.connect("web", None, None, Some("v0".into()), peer);
        a.sent("v1");
        a.rejected("v1", vec!["bad".into()]);
        b.sent("v1");
        b.applied("v1");
        let list = proxies.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].rejected.as_deref(), Some("v1"));
        assert_eq!(list[0].last_error.as_deref(), Some("bad"));
        assert_eq!(list[1].applied.as_deref(), Some("v1"));
        a.sent("v2");
        a.applied("v2");
        assert_eq!(proxies.list()[0].rejected, None);
        drop(a);
        assert_eq!(proxies.list().len(), 1);
        assert_eq!(proxies.metrics.connected_proxies.get(), 1);
    }
}

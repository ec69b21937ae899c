//! What the control plane knows about each connected proxy: its workload,
//! since when it is connected, the version it was last sent, the version it
//! applied (ACK), the version it rejected (NACK) with its errors, and the
//! last thing that went wrong. Replicas of a workload are separate entries,
//! each with its own id. An entry lives as long as its [`Connection`].

use crate::metrics::Metrics;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Clone, Debug, Serialize)]
pub struct ProxyState {
    pub id: u64,
    pub workload: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
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
        serving: Option<String>,
        peer: std::net::SocketAddr,
    ) -> Connection {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = ProxyState {
            id,
            workload: workload.to_string(),
            identity,
            peer: peer.to_string(),
            connected_since: rfc3339(SystemTime::now()),
            sent: None,
            applied: serving,
            rejected: None,
            errors: Vec::new(),
            last_error: None,
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

/// `2024-05-01T12:00:00Z` (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn replicas_are_separate_and_forgotten_on_drop() {
        let proxies = Proxies::new(Metrics::new());
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let a = proxies.connect("web", None, None, peer);
        let b = proxies.connect("web", None, Some("v0".into()), peer);
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

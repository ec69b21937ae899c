//! The supervisor of active health checks: every tick, probes each endpoint
//! of each backend that has a `health_check` when its interval is due, and
//! applies the thresholds. Also publishes how many endpoints of each
//! backend are available, ejected or unhealthy.

use super::health::probe;
use crate::balance::now_ns;
use crate::metrics::Metrics;
use crate::snapshot::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const TICK: Duration = Duration::from_millis(100);

pub async fn run(store: Store, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = crate::drain::stopped(&mut stop) => return,
        }
        ticks += 1;
        let snap = store.load_full();
        let now = now_ns();
        for backend in snap.backends.values() {
            let Some(hc) = &backend.health_check else {
                continue;
            };
            for ep in &backend.endpoints {
                if !ep.health.due(now, hc.interval.get()) {
                    continue;
                }
                let (ep, hc, backend_name, metrics) = (
                    ep.clone(),
                    hc.clone(),
                    backend.name.clone(),
                    metrics.clone(),
                );
                tokio::spawn(async move {
                    let host = ep.addr.to_string();
                    let ok = probe(ep.addr, &host, &hc.path, hc.timeout.get()).await;
                    let result = if ok { "healthy" } else { "unhealthy" };
                    metrics
                        .health_checks
                        .with_label_values(&[&*backend_name, result])
                        .inc();
                    if let Some(healthy) = ep.health.record(ok, &hc) {
                        let state = if healthy { "healthy" } else { "unhealthy" };
                        tracing::warn!(backend = %backend_name, endpoint = %ep.addr, state, "endpoint health changed");
                    }
                });
            }
        }
        if ticks % 10 == 0 {
            publish(&snap, &metrics, now);
        }
    }
}

/// `remora_endpoints{backend, state}` for the running snapshot.
fn publish(snap: &crate::snapshot::Snapshot, metrics: &Metrics, now: u64) {
    metrics.endpoints.reset();
    for b in snap.backends.values() {
        let (mut up, mut ejected, mut unhealthy) = (0, 0, 0);
        for e in &b.endpoints {
            if !e.health.is_healthy() {
                unhealthy += 1;
            } else if e.outlier.is_ejected(now) {
                ejected += 1;
            } else {
                up += 1;
            }
        }
        for (state, n) in [
            ("available", up),
            ("ejected", ejected),
            ("unhealthy", unhealthy),
        ] {
            metrics
                .endpoints
                .with_label_values(&[&*b.name, state])
                .set(n);
        }
    }
}

//! The supervisor of active health checks: every tick, probes each endpoint
//! of each backend that has a `health_check` when its interval is due, and
//! applies the thresholds. Also publishes how many endpoints of each
//! backend are available, ejected or unhealthy.

use super::health::probe;
use crate::balance::now_ns;
use crate::metrics::Metrics;
use crate::snapshot::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const TICK: Duration = Duration::from_millis(100);

pub async fn run(store: Store, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let mut ticks: u64 = 0;
    let mut published = Published::new();
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
        if ticks.is_multiple_of(10) {
            publish(&snap, &metrics, now, &mut published);
        }
    }
}

/// The counts last published, by backend: available, ejected, unhealthy.
type Published = HashMap<Arc<str>, [i64; 3]>;

const STATES: [&str; 3] = ["available", "ejected", "unhealthy"];

/// `remora_endpoints{backend, state}` for the running snapshot. Only the
/// backends whose counts changed are written, and the series of backends
/// that are gone removed: with 10k backends, writing all 30k series every
/// second held a runtime thread for about 100 ms.
fn publish(snap: &crate::snapshot::Snapshot, metrics: &Metrics, now: u64, last: &mut Published) {
    for b in snap.backends.values() {
        let mut counts = [0i64; 3];
        for e in &b.endpoints {
            let state = if !e.health.is_healthy() {
                2
            } else if e.outlier.is_ejected(now) {
                1
            } else {
                0
            };
            counts[state] += 1;
        }
        if last.get(&b.name) == Some(&counts) {
            continue;
        }
        for (state, n) in STATES.iter().zip(counts) {
            metrics
                .endpoints
                .with_label_values(&[&*b.name, state])
                .set(n);
        }
        last.insert(b.name.clone(), counts);
    }
    last.retain(|name, _| {
        let keep = snap.backends.contains_key(name);
        if !keep {
            for state in STATES {
                let _ = metrics.endpoints.remove_label_values(&[name, state]);
            }
        }
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(yaml: &str, metrics: &Arc<Metrics>) -> crate::snapshot::Snapshot {
        let config = remora_api::parse_yaml(yaml).unwrap();
        let materials = crate::snapshot::load_materials(&config).unwrap();
        crate::snapshot::compile(config, materials, None, metrics).unwrap()
    }

    #[test]
    fn endpoint_counts_follow_the_snapshot_and_gone_backends_disappear() {
        let metrics = Metrics::new();
        let two = "listeners: [{name: l, address: '127.0.0.1:0', routes: [{name: r, backends: [{name: a}, {name: b}]}]}]
backends:
  - {name: a, endpoints: [{address: '127.0.0.1:1'}, {address: '127.0.0.1:2'}]}
  - {name: b, endpoints: [{address: '127.0.0.1:3'}]}";
        let mut last = Published::new();
        publish(&snapshot(two, &metrics), &metrics, now_ns(), &mut last);
        let text = metrics.encode();
        assert!(
            text.contains("remora_endpoints{backend=\"a\",state=\"available\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("remora_endpoints{backend=\"b\",state=\"available\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("remora_endpoints{backend=\"b\",state=\"ejected\"} 0"),
            "{text}"
        );

        let one = "listeners: [{name: l, address: '127.0.0.1:0', routes: [{name: r, backends: [{name: a}]}]}]
backends:
  - {name: a, endpoints: [{address: '127.0.0.1:1'}]}";
        publish(&snapshot(one, &metrics), &metrics, now_ns(), &mut last);
        let text = metrics.encode();
        assert!(
            text.contains("remora_endpoints{backend=\"a\",state=\"available\"} 1"),
            "{text}"
        );
        assert!(!text.contains("remora_endpoints{backend=\"b\""), "{text}");
    }
}

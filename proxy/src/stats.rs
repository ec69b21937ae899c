//! The stats report a proxy sends its control plane when asked (see
//! [`remora_api::stats`]): read off the proxy's own metric families
//! (`remora_responses_total`, `remora_request_duration_seconds`) when a
//! report is due (with the certificate's expiry), so the request path
//! records nothing more for it, but for gRPC calls a count of the server
//! failures that rode an HTTP 2xx (`Metrics::grpc_failures`, not exported).

use crate::metrics::Metrics;
use prometheus::core::Collector;
use prometheus::proto::Metric;
use remora_api::stats::{Series, StatsReport};
use std::collections::BTreeMap;

type Key = (String, String, String);

fn label<'a>(m: &'a Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

fn key(m: &Metric) -> Key {
    let l = |n| label(m, n).to_string();
    (l("listener"), l("route"), l("backend"))
}

/// Every listener, route and backend that answered, cumulative.
pub fn report(metrics: &Metrics) -> StatsReport {
    let mut series: BTreeMap<Key, Series> = BTreeMap::new();
    for family in metrics.responses.collect() {
        for m in family.get_metric() {
            let n = m.get_counter().get_value() as u64;
            let class = label(m, "status_code")
                .as_bytes()
                .first()
                .map_or(5, |d| usize::from(d.saturating_sub(b'0')));
            let s = series.entry(key(m)).or_default();
            if let Some(slot) = s.status.get_mut(class.wrapping_sub(1)) {
                *slot += n;
            }
            if !label(m, "error").is_empty() {
                s.errors += n;
            }
        }
    }
    for family in metrics.grpc_failures.collect() {
        for m in family.get_metric() {
            series.entry(key(m)).or_default().grpc_failures += m.get_counter().get_value() as u64;
        }
    }
    let mut buckets = Vec::new();
    for family in metrics.duration.collect() {
        for m in family.get_metric() {
            let h = m.get_histogram();
            if buckets.is_empty() {
                buckets = h.get_bucket().iter().map(|b| b.upper_bound()).collect();
            }
            let s = series.entry(key(m)).or_default();
            s.count = h.get_sample_count();
            s.latency = h
                .get_bucket()
                .iter()
                .map(|b| b.cumulative_count())
                .collect();
        }
    }
    let expiry = metrics.identity_expiry.get();
    StatsReport {
        certificate_expires_at: (expiry > 0.0).then(|| {
            remora_api::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(expiry))
        }),
        buckets,
        series: series
            .into_iter()
            .map(|((listener, route, backend), s)| Series {
                listener,
                route,
                backend,
                ..s
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_by_status_class_and_latency_bucket() {
        let m = Metrics::new();
        let responses = |status, error| {
            m.responses
                .with_label_values(&["outbound", "api", "api", status, error])
        };
        responses("200", "").inc_by(3);
        responses("503", "").inc();
        responses("500", "fault-injected").inc_by(2);
        m.grpc_failures
            .with_label_values(&["outbound", "api", "api"])
            .inc_by(4);
        let d = m.duration.with_label_values(&["outbound", "api", "api"]);
        for seconds in [0.0001, 0.003, 0.2] {
            d.observe(seconds);
        }
        let r = report(&m);
        assert_eq!(r.certificate_expires_at, None);
        assert_eq!(r.series.len(), 1);
        let s = &r.series[0];
        assert_eq!(
            (s.listener.as_str(), s.route.as_str(), s.backend.as_str()),
            ("outbound", "api", "api")
        );
        assert_eq!((s.status, s.errors, s.count), ([0, 3, 0, 0, 3], 2, 3));
        assert_eq!(s.grpc_failures, 4);
        let at = |bound: f64| s.latency[r.buckets.iter().position(|b| *b == bound).unwrap()];
        assert_eq!((at(0.0005), at(0.005), at(0.25)), (1, 2, 3));
    }
}

//! Proxy → control plane, on the snapshot stream when the control plane
//! asks for it (response header [`STATS_INTERVAL`]): a compact copy of the
//! proxy's own request metrics, cumulative since the proxy started. The
//! control plane turns the difference between two reports into rates,
//! success rates and latency quantiles (its service graph).

use serde::{Deserialize, Serialize};

/// Subscribe response header: send a [`Report`] every this many
/// milliseconds. Without it the proxy sends none (and spends nothing).
pub const STATS_INTERVAL: &str = "remora-stats-interval";

/// A line of the proxy's request body that is not an ACK or NACK.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    Stats(StatsReport),
}

/// Everything the proxy answered, by where it went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsReport {
    /// Upper bounds (seconds) of the latency buckets every series counts
    /// in; `+Inf` is implied (a series' `count`).
    pub buckets: Vec<f64>,
    pub series: Vec<Series>,
    /// When the proxy's mesh certificate expires (RFC 3339), if it has one
    /// from the control plane's CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires_at: Option<String>,
}

/// Responses of one listener, route and backend, cumulative.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    pub listener: String,
    pub route: String,
    pub backend: String,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 5],
    /// Responses the proxy made itself (its `remora-error`), of any status.
    pub errors: u64,
    /// gRPC calls answered with an HTTP 2xx that ended with a status gRPC
    /// maps to a 5xx but `UNIMPLEMENTED` (a gRPC server's failure: `14`
    /// UNAVAILABLE, ...): failures, as 5xx responses are. Sent only when
    /// not 0: a control plane from before it still parses every report
    /// without such failures, and drops one with them (it does not know
    /// the field; its graph misses that proxy until then).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub grpc_failures: u64,
    /// Requests timed, and how many of them took at most each bucket's
    /// bound (cumulative, like Prometheus' `le`).
    pub count: u64,
    pub latency: Vec<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Series {
    /// Every response counted.
    pub fn responses(&self) -> u64 {
        self.status.iter().sum()
    }
}

/// The latency under which `q` (0..1) of the requests counted in
/// `cumulative` (per bucket of `bounds`, with `count` in all) fell,
/// interpolated linearly inside its bucket as Prometheus'
/// `histogram_quantile` does; the last bound when it fell beyond it,
/// `None` for no requests.
pub fn quantile(q: f64, bounds: &[f64], cumulative: &[u64], count: u64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut below = (0.0, 0u64);
    for (bound, &n) in bounds.iter().zip(cumulative) {
        if n as f64 >= rank {
            let (lo, lo_n) = below;
            let share = (rank - lo_n as f64) / (n - lo_n).max(1) as f64;
            return Some(lo + (bound - lo) * share.clamp(0.0, 1.0));
        }
        below = (*bound, n);
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let bounds = [0.1, 0.2, 0.4];
        assert_eq!(quantile(0.99, &bounds, &[0, 0, 0], 0), None);
        // 100 requests: 50 under 0.1 s, 100 under 0.2 s.
        let p50 = quantile(0.5, &bounds, &[50, 100, 100], 100).unwrap();
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        let p99 = quantile(0.99, &bounds, &[50, 100, 100], 100).unwrap();
        assert!((p99 - 0.198).abs() < 1e-9, "{p99}");
        // Beyond the last bound: the last bound.
        assert_eq!(quantile(0.99, &bounds, &[0, 0, 0], 10), Some(0.4));
    }

    #[test]
    fn a_report_is_a_tagged_line() {
        let r = Report::Stats(StatsReport::default());
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"type":"stats","buckets":[],"series":[]}"#);
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }
}

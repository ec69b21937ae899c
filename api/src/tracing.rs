//! The `tracing:` section: OpenTelemetry spans exported over OTLP to a
//! collector. Documented in `docs/config.md` ("Tracing") and
//! `docs/operations.md` ("Tracing").

use crate::Duration;
use serde::{Deserialize, Serialize};

/// Where and how the proxy exports its spans. Absent: no spans, and the
/// request path costs one branch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// The collector's OTLP receiver, `host:port` (e.g. `127.0.0.1:4318`
    /// for OTLP/HTTP, `otel-collector:4317` for OTLP/gRPC).
    pub collector: String,
    /// `http/protobuf` (default: `POST /v1/traces`) or `grpc`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Share of new traces recorded, from 0 to 1. A request that carries a
    /// `traceparent` follows its sampled flag instead.
    #[serde(default = "defaults::sampling")]
    pub sampling: f64,
    /// The `service.name` resource attribute of every span.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// Spans sent in one export at most.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// How long a span may wait for a batch to fill before it is sent.
    #[serde(default = "defaults::batch_interval")]
    pub batch_interval: Duration,
    /// Spans waiting for export at most; more are dropped (and counted),
    /// never waited for.
    #[serde(default = "defaults::queue")]
    pub queue: usize,
    /// How long one export may take.
    #[serde(default = "defaults::export_timeout")]
    pub export_timeout: Duration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

pub mod defaults {
    //! Default values, in one place so docs and code agree.
    use crate::Duration;

    pub fn sampling() -> f64 {
        1.0
    }
    pub fn service_name() -> String {
        "remora-proxy".into()
    }
    pub fn batch_size() -> usize {
        512
    }
    pub fn batch_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn queue() -> usize {
        2048
    }
    pub fn export_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

/// Every problem with `t` as (path under `tracing`, message).
pub fn check(t: &Tracing, found: &mut Vec<(String, String)>) {
    let mut add = |field: &str, message: &str| {
        found.push((format!("tracing.{field}"), message.to_string()));
    };
    if !collector_ok(&t.collector) {
        add(
            "collector",
            "must be host:port (e.g. 127.0.0.1:4318), without a scheme or path",
        );
    }
    if !(0.0..=1.0).contains(&t.sampling) {
        add("sampling", "must be a ratio from 0 to 1");
    }
    if t.service_name.is_empty() {
        add("service_name", "must not be empty");
    }
    if t.batch_size == 0 {
        add("batch_size", "must be > 0");
    }
    if t.queue < t.batch_size {
        add("queue", "must be at least batch_size");
    }
    if t.batch_interval.get().is_zero() {
        add("batch_interval", "must be > 0");
    }
    if t.export_timeout.get().is_zero() {
        add("export_timeout", "must be > 0");
    }
}

/// `host:port` with a non-empty host (an IPv6 literal in brackets) and a
/// port from 1 to 65535.
fn collector_ok(c: &str) -> bool {
    let Some((host, port)) = c.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let t: Tracing = serde_yaml_ng::from_str(yaml).unwrap();
        let mut found = Vec::new();
        check(&t, &mut found);
        found
            .into_iter()
            .map(|(p, m)| format!("{p}: {m}"))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_http() {
        let t: Tracing = serde_yaml_ng::from_str("collector: 127.0.0.1:4318").unwrap();
        assert_eq!(t.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(t.sampling, 1.0);
        assert!(problems("collector: otel-collector.observability:4317").is_empty());
        assert!(problems("collector: '[::1]:4317'\nprotocol: grpc").is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        let table = [
            ("collector: http://c:4318/v1/traces", "tracing.collector"),
            ("collector: c", "tracing.collector"),
            ("collector: 'c:0'", "tracing.collector"),
            ("collector: c:1\nsampling: 1.5", "tracing.sampling"),
            ("collector: c:1\nsampling: -0.1", "tracing.sampling"),
            ("collector: c:1\nservice_name: ''", "tracing.service_name"),
            ("collector: c:1\nbatch_size: 0", "tracing.batch_size"),
            ("collector: c:1\nqueue: 10\nbatch_size: 20", "tracing.queue"),
            (
                "collector: c:1\nbatch_interval: 0s",
                "tracing.batch_interval",
            ),
        ];
        for (yaml, field) in table {
            let found = problems(yaml);
            assert_eq!(found.len(), 1, "{yaml}: {found:?}");
            assert!(found[0].starts_with(field), "{yaml}: {found:?}");
        }
    }

    #[test]
    fn an_unknown_protocol_is_refused() {
        let e = serde_yaml_ng::from_str::<Tracing>("collector: c:1\nprotocol: http/json");
        assert!(e.is_err());
    }
}

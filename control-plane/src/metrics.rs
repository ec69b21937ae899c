//! The control plane's Prometheus metrics, built from a registry the app
//! owns (no globals, so tests never share counters). Labels are bounded by
//! the mesh: a workload name at most.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::sync::Arc;

/// The Content-Type of `/metrics`: Prometheus text format 0.0.4 (the same
/// as the proxy's; no OpenMetrics, which the `prometheus` crate cannot encode).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Metrics {
    registry: Registry,
    pub connected_proxies: IntGauge,
    pub pushes: IntCounterVec,
    pub acks: IntCounter,
    pub nacks: IntCounterVec,
    pub push_bytes: Histogram,
    pub convergence: Histogram,
    pub mesh_reloads: IntCounterVec,
    pub mesh_info: IntGaugeVec,
    pub certificates_issued: IntCounter,
    pub certificate_failures: IntCounterVec,
    pub ca_expiry: Gauge,
    pub injections: IntCounterVec,
}

/// From when a change is seen to when a proxy applied it.
const CONVERGENCE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        let build = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "remora_cp_build_info",
                    "Build of the running control plane (always 1).",
                ),
                &["version"],
            )
            .expect("valid metric"),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            reg(
                &r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("valid metric"),
            )
        };
        let m = Metrics {
            connected_proxies: reg(
                &r,
                IntGauge::new("remora_cp_connected_proxies", "Proxies subscribed now.").expect("valid metric"),
            ),
            pushes: counter(
                "remora_cp_pushes_total",
                "Snapshots sent to proxies, by workload and kind (`snapshot`: whole; `delta`: the changes from the version the proxy has).",
                &["workload", "kind"],
            ),
            acks: reg(
                &r,
                IntCounter::new("remora_cp_acks_total", "Snapshots proxies reported applied (ACK).")
                    .expect("valid metric"),
            ),
            nacks: counter(
                "remora_cp_nacks_total",
                "Snapshots proxies reported rejected (NACK), by workload.",
                &["workload"],
            ),
            push_bytes: histogram(
                "remora_cp_push_bytes",
                "Size of each snapshot sent, in bytes.",
                prometheus::exponential_buckets(256.0, 4.0, 10).expect("valid buckets"),
            ),
            convergence: histogram(
                "remora_cp_convergence_seconds",
                "Time from a mesh change being seen (or a proxy subscribing, if later) to a proxy's ACK of the snapshot it produced.",
                CONVERGENCE_BUCKETS.to_vec(),
            ),
            mesh_reloads: counter(
                "remora_cp_mesh_reloads_total",
                "Mesh loads, by result (applied, unchanged, rejected).",
                &["result"],
            ),
            mesh_info: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("remora_cp_mesh_info", "Version of the mesh being served (always 1)."),
                    &["version"],
                )
                .expect("valid metric"),
            ),
            certificates_issued: reg(
                &r,
                IntCounter::new(
                    "remora_cp_certificates_issued_total",
                    "Workload certificates signed (POST /v1/certify).",
                )
                .expect("valid metric"),
            ),
            certificate_failures: counter(
                "remora_cp_certificate_failures_total",
                "Certificate requests refused, by reason (no_ca, credential_unavailable, unauthenticated, forbidden, unknown_workload, bad_request, bad_csr, internal).",
                &["reason"],
            ),
            ca_expiry: reg(
                &r,
                Gauge::new(
                    "remora_cp_ca_certificate_expiry_timestamp_seconds",
                    "When the CA certificate expires, as a Unix time (0 without a CA).",
                )
                .expect("valid metric"),
            ),
            injections: counter(
                "remora_cp_injections_total",
                "Pods the injector webhook saw, by outcome (injected, opted_out, already_injected, host_network, not_opted_in, invalid).",
                &["outcome"],
            ),
            registry: r,
        };
        for reason in crate::error::CERTIFY_REASONS {
            m.certificate_failures.with_label_values(&[reason]);
        }
        for result in ["applied", "unchanged", "rejected"] {
            m.mesh_reloads.with_label_values(&[result]);
        }
        Arc::new(m)
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(8 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    pub fn set_mesh_version(&self, version: &str) {
        self.mesh_info.reset();
        self.mesh_info.with_label_values(&[version]).set(1);
    }
}

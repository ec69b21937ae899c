//! The proxy's Prometheus metrics: built from a registry the app owns (no
//! globals, so tests never share counters), with bounded labels only — never a
//! raw path or a client address.

use crate::http::client::Proto;
use prometheus::{
    Counter, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::Arc;

/// The Content-Type of `/metrics`: the Prometheus text exposition format
/// 0.0.4, whatever the client's Accept header asks. OpenMetrics is not
/// offered: the `prometheus` crate (0.14) has no OpenMetrics encoder, and
/// Prometheus reads this format whenever it asked for OpenMetrics first.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub responses: IntCounterVec,
    pub grpc_responses: IntCounterVec,
    /// gRPC calls answered HTTP 2xx that ended with a server failure
    /// ([`crate::http::grpc::endpoint_failed`]'s statuses), by listener,
    /// route and backend: for the stats report only (not exported: it is
    /// `remora_grpc_responses_total` seen another way).
    pub grpc_failures: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_connections: IntCounterVec,
    pub upstream_connect_errors: IntCounterVec,
    pub open_connections: IntGaugeVec,
    pub connections: IntCounterVec,
    pub connections_rejected: IntCounterVec,
    pub tls_handshake_errors: IntCounterVec,
    pub inbound_connections: IntCounterVec,
    pub inbound_refused: IntCounterVec,
    pub inbound_mtls_connections: IntCounterVec,
    pub authorization_denials: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub retries: IntCounterVec,
    pub budget_exhausted: IntCounterVec,
    pub ejections: IntCounterVec,
    pub overflows: IntCounterVec,
    pub endpoints: IntGaugeVec,
    pub rate_limited: IntCounterVec,
    pub faults: IntCounterVec,
    pub health_checks: IntCounterVec,
    pub config_info: IntGaugeVec,
    pub config_last_applied: Gauge,
    pub control_plane_connected: IntGauge,
    pub identity_expiry: Gauge,
    pub identity_renewals: IntCounter,
    pub identity_renewal_failures: IntCounter,
    pub detections: IntCounterVec,
    pub detection_duration: HistogramVec,
    pub tcp_connections: IntCounterVec,
    pub tcp_open_connections: IntGaugeVec,
    pub tcp_bytes: IntCounterVec,
    pub tcp_connect_errors: IntCounterVec,
    pub trace_spans: IntCounterVec,
    /// Live request summaries for `/tap` (see `tap.rs`).
    pub tap: Arc<crate::tap::Hub>,
    process: Process,
}

struct Process {
    cpu: Counter,
    rss: IntGauge,
    vsize: IntGauge,
    fds: IntGauge,
    max_fds: IntGauge,
    start: Gauge,
    threads: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// First bytes usually come with the connection (microseconds); a silent
/// client costs the whole `detect_timeout`.
const DETECTION_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        let build = gauge_vec(
            &r,
            "remora_build_info",
            "Build of the running proxy (always 1).",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let m = Metrics {
            requests: counter(&r, "remora_requests_total", "Requests received, by listener.", &["listener"]),
            responses: counter(
                &r,
                "remora_responses_total",
                "Responses sent, by listener, route, backend, status code and the proxy's error cause (empty when the upstream answered).",
                &["listener", "route", "backend", "status_code", "error"],
            ),
            grpc_responses: counter(
                &r,
                "remora_grpc_responses_total",
                "gRPC calls ended, by listener, route, backend and grpc-status (none: ended without one).",
                &["listener", "route", "backend", "grpc_status"],
            ),
            grpc_failures: IntCounterVec::new(
                Opts::new("grpc_failures", "gRPC server failures in HTTP 2xx answers"),
                &["listener", "route", "backend"],
            )
            .expect("valid metric"),
            duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "remora_request_duration_seconds",
                        "Time from a request's arrival to its response head, by listener, route and backend.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["listener", "route", "backend"],
                )
                .expect("valid metric"),
            ),
            upstream_connections: counter(
                &r,
                "remora_upstream_connections_total",
                "Connections opened to upstream endpoints, by backend and protocol.",
                &["backend", "protocol"],
            ),
            upstream_connect_errors: counter(
                &r,
                "remora_upstream_connect_errors_total",
                "Failed attempts to connect to an upstream endpoint, by backend and cause.",
                &["backend", "error"],
            ),
            open_connections: gauge_vec(&r, "remora_open_connections", "Client connections open now, by listener.", &["listener"]),
            connections: counter(&r, "remora_connections_total", "Client connections accepted, by listener.", &["listener"]),
            connections_rejected: counter(
                &r,
                "remora_connections_rejected_total",
                "Client connections closed on accept, by listener and reason.",
                &["listener", "reason"],
            ),
            tls_handshake_errors: counter(
                &r,
                "remora_tls_handshake_errors_total",
                "Client TLS handshakes that failed, by listener.",
                &["listener"],
            ),
            inbound_connections: counter(
                &r,
                "remora_inbound_connections_total",
                "Connections accepted on inbound listeners, by the client's mesh identity (`-` for plaintext).",
                &["listener", "client_id"],
            ),
            inbound_mtls_connections: counter(
                &r,
                "remora_inbound_mtls_connections_total",
                "Mutual-TLS connections accepted on inbound listeners, by the ALPN protocol agreed (`h2`: a peer proxy multiplexing its requests; `-`: none).",
                &["listener", "alpn"],
            ),
            inbound_refused: counter(
                &r,
                "remora_inbound_refused_total",
                "Connections an inbound listener closed before serving them, by reason (plaintext in strict mode, handshake failed, denied).",
                &["listener", "reason"],
            ),
            authorization_denials: counter(
                &r,
                "remora_authorization_denials_total",
                "Requests (by route) and opaque connections (route `-`) the authorization policy refused.",
                &["listener", "route"],
            ),
            config_reloads: counter(
                &r,
                "remora_config_reloads_total",
                "Config loads, by result (applied, rejected, unchanged).",
                &["result"],
            ),
            retries: counter(
                &r,
                "remora_retries_total",
                "Requests sent again after a failed attempt, by backend and reason.",
                &["backend", "reason"],
            ),
            budget_exhausted: counter(
                &r,
                "remora_retry_budget_exhausted_total",
                "Retryable failures returned as they were because the backend's retry budget was spent.",
                &["backend"],
            ),
            ejections: counter(
                &r,
                "remora_outlier_ejections_total",
                "Endpoints ejected after consecutive failures, by backend.",
                &["backend"],
            ),
            overflows: counter(
                &r,
                "remora_circuit_breaker_overflows_total",
                "Requests failed fast at a circuit-breaker limit, by backend and limit.",
                &["backend", "reason"],
            ),
            endpoints: gauge_vec(
                &r,
                "remora_endpoints",
                "Endpoints of each backend by state (available, ejected, unhealthy).",
                &["backend", "state"],
            ),
            rate_limited: counter(
                &r,
                "remora_rate_limited_total",
                "Requests refused with 429 by a local rate limit, by listener and route (empty for the listener's own limit).",
                &["listener", "route"],
            ),
            faults: counter(
                &r,
                "remora_faults_injected_total",
                "Faults injected, by listener, route and kind (delay, abort).",
                &["listener", "route", "fault"],
            ),
            health_checks: counter(
                &r,
                "remora_health_checks_total",
                "Active health check probes, by backend and result (healthy, unhealthy).",
                &["backend", "result"],
            ),
            config_info: gauge_vec(&r, "remora_config_info", "Version of the running config (always 1).", &["version"]),
            config_last_applied: reg(
                &r,
                Gauge::new(
                    "remora_config_last_applied_timestamp_seconds",
                    "When the running config was applied, as a Unix time.",
                )
                .expect("valid metric"),
            ),
            control_plane_connected: reg(
                &r,
                IntGauge::new(
                    "remora_control_plane_connected",
                    "1 while the proxy holds a subscription to its control plane.",
                )
                .expect("valid metric"),
            ),
            detections: counter(
                &r,
                "remora_protocol_detections_total",
                "Connections classified by protocol detection, by listener, protocol (http1, http2, tls, opaque) and reason (detected, timeout, server-speaks-first, configured).",
                &["listener", "protocol", "reason"],
            ),
            detection_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "remora_protocol_detection_seconds",
                        "Time spent looking at a connection's first bytes, by listener.",
                    )
                    .buckets(DETECTION_BUCKETS.to_vec()),
                    &["listener"],
                )
                .expect("valid metric"),
            ),
            tcp_connections: counter(
                &r,
                "remora_tcp_connections_total",
                "Client connections forwarded as opaque TCP, by listener and backend.",
                &["listener", "backend"],
            ),
            tcp_open_connections: gauge_vec(
                &r,
                "remora_tcp_open_connections",
                "Opaque TCP connections open now, by listener and backend.",
                &["listener", "backend"],
            ),
            tcp_bytes: counter(
                &r,
                "remora_tcp_bytes_total",
                "Bytes forwarded by opaque TCP, by listener, backend and direction (to_upstream, to_client).",
                &["listener", "backend", "direction"],
            ),
            tcp_connect_errors: counter(
                &r,
                "remora_tcp_connect_errors_total",
                "Failed attempts to open an opaque TCP connection to a backend, by backend and cause.",
                &["backend", "cause"],
            ),
            trace_spans: counter(
                &r,
                "remora_trace_spans_total",
                "Trace spans by outcome: exported to the collector, failed (the export failed), dropped (the export queue was full).",
                &["outcome"],
            ),
            identity_expiry: reg(
                &r,
                Gauge::new(
                    "remora_identity_certificate_expiry_timestamp_seconds",
                    "When the proxy's mesh certificate from the control plane's CA expires, as a Unix time (0 before the first).",
                )
                .expect("valid metric"),
            ),
            identity_renewals: reg(
                &r,
                IntCounter::new(
                    "remora_identity_renewals_total",
                    "Certificates obtained from the control plane's CA, the first included.",
                )
                .expect("valid metric"),
            ),
            identity_renewal_failures: reg(
                &r,
                IntCounter::new(
                    "remora_identity_renewal_failures_total",
                    "Failed attempts to get a certificate from the control plane's CA.",
                )
                .expect("valid metric"),
            ),
            tap: Arc::default(),
            process: Process {
                cpu: reg(&r, Counter::new("process_cpu_seconds_total", "User and system CPU time spent, in seconds.").expect("valid metric")),
                rss: reg(&r, IntGauge::new("process_resident_memory_bytes", "Resident memory size in bytes.").expect("valid metric")),
                vsize: reg(&r, IntGauge::new("process_virtual_memory_bytes", "Virtual memory size in bytes.").expect("valid metric")),
                fds: reg(&r, IntGauge::new("process_open_fds", "Open file descriptors.").expect("valid metric")),
                max_fds: reg(&r, IntGauge::new("process_max_fds", "Limit on open file descriptors.").expect("valid metric")),
                start: reg(&r, Gauge::new("process_start_time_seconds", "Start time of the process as a Unix time.").expect("valid metric")),
                threads: reg(&r, IntGauge::new("process_threads", "OS threads in the process.").expect("valid metric")),
            },
            registry: r,
        };
        Arc::new(m)
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.process.update();
        let mut buf = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    pub fn set_config_version(&self, version: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[version]).set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.config_last_applied.set(now.as_secs_f64());
    }

    /// Handles bound to one backend.
    pub fn backend(&self, backend: &str) -> crate::balance::BackendMetrics {
        crate::balance::BackendMetrics {
            ejections: self.ejections.with_label_values(&[backend]),
            budget_exhausted: self.budget_exhausted.with_label_values(&[backend]),
            retries: self.retries.clone(),
            overflows: self.overflows.clone(),
        }
    }

    pub fn upstream(self: &Arc<Self>, backend: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            backend: backend.into(),
            metrics: self.clone(),
        }
    }
}

impl Metrics {
    /// Counts a detection outcome, and times it when bytes were looked at.
    pub fn detected(&self, listener: &str, d: &crate::detect::Detection) {
        self.detections
            .with_label_values(&[listener, d.protocol.as_str(), d.reason.as_str()])
            .inc();
        if let Some(took) = d.took {
            self.detection_duration
                .with_label_values(&[listener])
                .observe(took.as_secs_f64());
        }
    }

    /// Handles for one opaque TCP connection from `listener` to `backend`.
    pub fn tcp(&self, listener: &str, backend: &str) -> TcpMetrics {
        TcpMetrics {
            connections: self.tcp_connections.with_label_values(&[listener, backend]),
            open: self
                .tcp_open_connections
                .with_label_values(&[listener, backend]),
            to_upstream: self
                .tcp_bytes
                .with_label_values(&[listener, backend, "to_upstream"]),
            to_client: self
                .tcp_bytes
                .with_label_values(&[listener, backend, "to_client"]),
            connect_errors: self.tcp_connect_errors.clone(),
        }
    }
}

/// Metrics of one opaque TCP connection, bound to its listener and backend.
pub struct TcpMetrics {
    pub connections: prometheus::IntCounter,
    pub open: IntGauge,
    pub to_upstream: prometheus::IntCounter,
    pub to_client: prometheus::IntCounter,
    /// By backend and cause; looked up only when a connect fails.
    pub connect_errors: IntCounterVec,
}

/// Metrics an endpoint client records, already bound to its backend.
#[derive(Clone)]
pub struct UpstreamMetrics {
    backend: Arc<str>,
    metrics: Arc<Metrics>,
}

impl UpstreamMetrics {
    pub fn backend(&self) -> &Arc<str> {
        &self.backend
    }

    pub fn connected(&self, proto: Proto) {
        let p = match proto {
            Proto::Http1 => "http1",
            Proto::Http2 => "http2",
        };
        self.metrics
            .upstream_connections
            .with_label_values(&[&*self.backend, p])
            .inc();
    }

    pub fn connect_failed(&self, cause: &str) {
        self.metrics
            .upstream_connect_errors
            .with_label_values(&[&*self.backend, cause])
            .inc();
    }
}

impl Process {
    /// Reads /proc/self; on other systems the values stay 0.
    fn update(&self) {
        let page = 4096i64;
        let ticks = 100.0;
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which is in parentheses.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                // rest[0] is field 3 (state); utime=14, stime=15, threads=20, starttime=22, vsize=23, rss=24.
                let cpu = (num(11) + num(12)) / ticks;
                let prev = self.cpu.get();
                if cpu > prev {
                    self.cpu.inc_by(cpu - prev);
                }
                self.threads.set(num(17) as i64);
                self.vsize.set(num(20) as i64);
                self.rss.set(num(21) as i64 * page);
                if let Some(boot) = boot_time() {
                    self.start.set(boot + num(19) / ticks);
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.fds.set(dir.count() as i64);
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            if let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) {
                if let Some(v) = line.split_whitespace().nth(3).and_then(|v| v.parse().ok()) {
                    self.max_fds.set(v);
                }
            }
        }
    }
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

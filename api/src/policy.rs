//! Resilience policies: retries and their budget, outlier ejection, circuit
//! breaking, local rate limits, fault injection and active health checks.
//! Documented field by field in `docs/config.md` ("Resilience").

use crate::Duration;
use serde::{Deserialize, Serialize};

/// When and how often a route retries a failed request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (2 = one retry).
    #[serde(default = "defaults::attempts")]
    pub attempts: u32,
    /// Conditions that make a failure retryable.
    #[serde(default = "defaults::retry_on")]
    pub on: Vec<RetryOn>,
    /// Further response statuses that are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u16>,
    /// Timeout of each attempt (until response headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    #[serde(default)]
    pub backoff: Backoff,
    /// Request bodies up to this size are kept for replay; a request whose
    /// body is larger is not retried.
    #[serde(default = "defaults::retry_buffer")]
    pub buffer_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// Any 5xx response.
    #[serde(rename = "5xx")]
    ServerError,
    /// 502, 503 or 504.
    GatewayError,
    /// The connection failed or was reset before a response.
    Reset,
    /// The endpoint could not be connected to.
    ConnectFailure,
    /// HTTP/2 REFUSED_STREAM: the upstream did not process the request.
    RefusedStream,
    /// gRPC status UNAVAILABLE (14).
    Unavailable,
    /// gRPC status RESOURCE_EXHAUSTED (8).
    ResourceExhausted,
    /// gRPC status DEADLINE_EXCEEDED (4).
    DeadlineExceeded,
    /// gRPC status CANCELLED (1).
    Cancelled,
}

impl RetryOn {
    /// Read from a gRPC status rather than from the HTTP status.
    pub fn is_grpc(self) -> bool {
        matches!(
            self,
            RetryOn::Unavailable
                | RetryOn::ResourceExhausted
                | RetryOn::DeadlineExceeded
                | RetryOn::Cancelled
        )
    }
}

/// Exponential backoff with full jitter: attempt n waits a random time in
/// `[0, min(max, base * 2^(n-1))]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "defaults::backoff_base")]
    pub base: Duration,
    #[serde(default = "defaults::backoff_max")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: defaults::backoff_base(),
            max: defaults::backoff_max(),
        }
    }
}

/// Caps retries per backend: at most `ratio` retries per request over the
/// window, plus `min_per_second` always allowed (Linkerd's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(default = "defaults::budget_ratio")]
    pub ratio: f64,
    #[serde(default = "defaults::budget_min")]
    pub min_per_second: u32,
    #[serde(default = "defaults::budget_window")]
    pub window: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: defaults::budget_ratio(),
            min_per_second: defaults::budget_min(),
            window: defaults::budget_window(),
        }
    }
}

/// Ejects an endpoint after consecutive failures, for a time that grows
/// with each ejection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// 5xx responses and connection failures in a row that eject. 0 turns
    /// ejection off.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection in a row lasts n times this.
    #[serde(default = "defaults::base_ejection")]
    pub base_ejection_time: Duration,
    #[serde(default = "defaults::max_ejection")]
    pub max_ejection_time: Duration,
    /// At most this share of a backend's endpoints is ejected at once.
    #[serde(default = "defaults::max_ejected_percent")]
    pub max_ejected_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: defaults::consecutive_failures(),
            base_ejection_time: defaults::base_ejection(),
            max_ejection_time: defaults::max_ejection(),
            max_ejected_percent: defaults::max_ejected_percent(),
        }
    }
}

/// Per-backend limits; overflow fails fast with 503 `overloaded`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Open connections to all endpoints of the backend.
    #[serde(default = "defaults::breaker_limit")]
    pub max_connections: u32,
    /// Requests waiting for a new connection to be established.
    #[serde(default = "defaults::breaker_limit")]
    pub max_pending_requests: u32,
    /// Requests in flight to the backend.
    #[serde(default = "defaults::breaker_limit")]
    pub max_requests: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            max_connections: defaults::breaker_limit(),
            max_pending_requests: defaults::breaker_limit(),
            max_requests: defaults::breaker_limit(),
        }
    }
}

/// A token bucket: `requests_per_second` refill, `burst` capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: u32,
    /// Bucket size; default: one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// One bucket per value of this header (requests without it share one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_header: Option<String>,
}

/// Faults injected into a share of a route's requests (for chaos testing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    pub duration: Duration,
    /// Share of requests delayed, 0-100 (decimals allowed).
    pub percent: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    pub status: u16,
    /// Share of requests aborted, 0-100 (decimals allowed).
    pub percent: f64,
}

/// Active HTTP health checks of every endpoint of a backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path requested with GET; a 2xx answer is healthy.
    pub path: String,
    #[serde(default = "defaults::hc_interval")]
    pub interval: Duration,
    #[serde(default = "defaults::hc_timeout")]
    pub timeout: Duration,
    /// Successes in a row that make an unhealthy endpoint healthy.
    #[serde(default = "defaults::hc_healthy")]
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy endpoint unhealthy.
    #[serde(default = "defaults::hc_unhealthy")]
    pub unhealthy_threshold: u32,
}

pub mod defaults {
    //! Defaults of the resilience policies.
    use super::RetryOn;
    use crate::Duration;

    pub fn attempts() -> u32 {
        2
    }
    pub fn retry_on() -> Vec<RetryOn> {
        vec![
            RetryOn::GatewayError,
            RetryOn::Reset,
            RetryOn::ConnectFailure,
            RetryOn::RefusedStream,
        ]
    }
    pub fn retry_buffer() -> usize {
        64 * 1024
    }
    pub fn backoff_base() -> Duration {
        Duration::from_millis(25)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_millis(250)
    }
    pub fn budget_ratio() -> f64 {
        0.2
    }
    pub fn budget_min() -> u32 {
        10
    }
    pub fn budget_window() -> Duration {
        Duration::from_secs(10)
    }
    pub fn consecutive_failures() -> u32 {
        5
    }
    pub fn base_ejection() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_ejection() -> Duration {
        Duration::from_secs(300)
    }
    pub fn max_ejected_percent() -> u32 {
        50
    }
    pub fn breaker_limit() -> u32 {
        1024
    }
    pub fn hc_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn hc_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn hc_healthy() -> u32 {
        2
    }
    pub fn hc_unhealthy() -> u32 {
        3
    }
}

/// Problems of the policies, as (field path, message).
pub(crate) type Found = Vec<(String, String)>;

fn positive(found: &mut Found, at: String, d: Duration) {
    if d.get().is_zero() {
        found.push((at, "must be > 0".into()));
    }
}

fn percent(found: &mut Found, at: String, p: f64) {
    if !(0.0..=100.0).contains(&p) || p.is_nan() {
        found.push((at, "must be between 0 and 100".into()));
    }
}

impl RetryPolicy {
    pub(crate) fn check(&self, at: &str, found: &mut Found) {
        if !(1..=10).contains(&self.attempts) {
            found.push((format!("{at}.attempts"), "must be 1-10".into()));
        }
        if self.on.is_empty() && self.status_codes.is_empty() {
            found.push((
                format!("{at}.on"),
                "lists no condition: nothing would be retried".into(),
            ));
        }
        for (i, s) in self.status_codes.iter().enumerate() {
            if !(100..=599).contains(s) {
                found.push((format!("{at}.status_codes[{i}]"), "must be 100-599".into()));
            }
        }
        if let Some(t) = self.per_try_timeout {
            positive(found, format!("{at}.per_try_timeout"), t);
        }
        positive(found, format!("{at}.backoff.base"), self.backoff.base);
        if self.backoff.max < self.backoff.base {
            found.push((
                format!("{at}.backoff.max"),
                "must be >= backoff.base".into(),
            ));
        }
        if self.buffer_bytes > 16 * 1024 * 1024 {
            found.push((format!("{at}.buffer_bytes"), "must be <= 16777216".into()));
        }
    }
}

impl RateLimit {
    pub(crate) fn check(&self, at: &str, found: &mut Found) {
        if self.requests_per_second == 0 {
            found.push((format!("{at}.requests_per_second"), "must be > 0".into()));
        }
        if self.burst == Some(0) {
            found.push((format!("{at}.burst"), "must be > 0".into()));
        }
        if let Some(h) = &self.key_header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                found.push((
                    format!("{at}.key_header"),
                    format!("`{h}` is not a header name"),
                ));
            }
        }
    }
}

impl Fault {
    pub(crate) fn check(&self, at: &str, found: &mut Found) {
        if let Some(d) = &self.delay {
            positive(found, format!("{at}.delay.duration"), d.duration);
            percent(found, format!("{at}.delay.percent"), d.percent);
        }
        if let Some(a) = &self.abort {
            if !(200..=599).contains(&a.status) {
                found.push((format!("{at}.abort.status"), "must be 200-599".into()));
            }
            percent(found, format!("{at}.abort.percent"), a.percent);
        }
        if self.delay.is_none() && self.abort.is_none() {
            found.push((at.to_string(), "needs `delay` or `abort`".into()));
        }
    }
}

impl RetryBudget {
    pub(crate) fn check(&self, at: &str, found: &mut Found) {
        if !(0.0..=1000.0).contains(&self.ratio) || self.ratio.is_nan() {
            found.push((format!("{at}.ratio"), "must be between 0 and 1000".into()));
        }
        positive(found, format!("{at}.window"), self.window);
    }
}

impl OutlierDetection {
    pub(crate) fn check(&self, at: &str, found: &mut Found) {
        positive(
            found,
            format!("{at}.base_ejection_time"),
            self.base_ejection_time,
        );
        if self.max_ejection_time < self.base_ejection_time {
            found.push((
                format!("{at}.max_ejection_time"),
                "must be >= base_ejection_time".into(),
            ));
        }
        if self.max_ejected_percent > 100 {
            found.push((format!("{at}.max_ejected_percent"), "must be 0-100".into()));
        }
    }
}

impl CircuitBreaker {
    pub(crate) fn check(&self, at: &str, found: &mut Found) {
        for (name, v) in [
            ("max_connections", self.max_connections),
            ("max_pending_requests", self.max_pending_requests),
            ("max_requests", self.max_requests),
        ] {
            if v == 0 {
                found.push((format!("{at}.{name}"), "must be > 0".into()));
            }
        }
    }
}

impl HealthCheck {
    pub(crate) fn check(&self, at: &str, found: &mut Found) {
        if !self.path.starts_with('/') {
            found.push((format!("{at}.path"), "must start with '/'".into()));
        }
        positive(found, format!("{at}.interval"), self.interval);
        positive(found, format!("{at}.timeout"), self.timeout);
        if self.healthy_threshold == 0 {
            found.push((format!("{at}.healthy_threshold"), "must be > 0".into()));
        }
        if self.unhealthy_threshold == 0 {
            found.push((format!("{at}.unhealthy_threshold"), "must be > 0".into()));
        }
    }
}

//! Retries: which failures are retried, how long to wait between attempts,
//! and the per-backend budget that keeps retries from turning an outage into
//! a retry storm.

use super::error::ProxyError;
use http::{HeaderMap, HeaderName, StatusCode};
use remora_api::{RetryOn, RetryPolicy};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Response header an upstream sets to ask that its answer not be retried.
pub const NO_RETRY: &str = "remora-no-retry";

/// Why an attempt is retried: the `reason` label of `remora_retries_total`.
pub fn reason_of_error(policy: &RetryPolicy, e: &ProxyError) -> Option<&'static str> {
    let on = |c| policy.on.contains(&c);
    match e {
        ProxyError::Connect { .. }
        | ProxyError::ConnectTimeout { .. }
        | ProxyError::UpstreamTls { .. }
            if on(RetryOn::ConnectFailure)
                || on(RetryOn::Reset)
                || on(RetryOn::ServerError)
                || on(RetryOn::GatewayError) =>
        {
            Some("connect-failure")
        }
        ProxyError::Upstream { source, .. }
            if refused_stream(source) && (on(RetryOn::RefusedStream) || on(RetryOn::Reset)) =>
        {
            Some("refused-stream")
        }
        ProxyError::Upstream { .. } if on(RetryOn::Reset) || on(RetryOn::ServerError) => {
            Some("reset")
        }
        ProxyError::PerTryTimeout(_)
            if on(RetryOn::GatewayError) || on(RetryOn::ServerError) || on(RetryOn::Reset) =>
        {
            Some("per-try-timeout")
        }
        _ => None,
    }
}

fn refused_stream(e: &hyper::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(h2) = c.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cause = c.source();
    }
    false
}

/// Whether a response is retried under `policy`, and why.
pub fn reason_of_response(
    policy: &RetryPolicy,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<&'static str> {
    static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    static NO_RETRY_HEADER: HeaderName = HeaderName::from_static(NO_RETRY);
    let on = |c| policy.on.contains(&c);
    let code = status.as_u16();
    let reason = if on(RetryOn::ServerError) && status.is_server_error() {
        Some("5xx")
    } else if on(RetryOn::GatewayError) && matches!(code, 502..=504) {
        Some("gateway-error")
    } else if policy.status_codes.contains(&code) {
        Some("status-code")
    } else if policy.on.iter().any(|c| c.is_grpc()) {
        // A gRPC error answered before any message carries its status in
        // the headers ("trailers-only").
        let grpc = headers
            .get(&GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        match grpc {
            Some(14) if on(RetryOn::Unavailable) => Some("unavailable"),
            Some(8) if on(RetryOn::ResourceExhausted) => Some("resource-exhausted"),
            Some(4) if on(RetryOn::DeadlineExceeded) => Some("deadline-exceeded"),
            Some(1) if on(RetryOn::Cancelled) => Some("cancelled"),
            _ => None,
        }
    } else {
        None
    };
    // Looked up only for a response that would be retried.
    reason.filter(|_| !headers.contains_key(&NO_RETRY_HEADER))
}

/// Wait before retry number `retry` (1-based): full jitter over an
/// exponentially growing, capped interval.
pub fn backoff(policy: &RetryPolicy, retry: u32, rng: &mut fastrand::Rng) -> Duration {
    let base = policy.backoff.base.get();
    let cap = policy.backoff.max.get();
    let ceiling = base.saturating_mul(1u32 << (retry - 1).min(20)).min(cap);
    ceiling.mul_f64(rng.f64())
}

const SLOTS: usize = 10;

/// A retry budget over a sliding window of `SLOTS` slots: a retry is allowed
/// while retries in the window stay within `min_per_second × window +
/// ratio × requests`. Lock-free; concurrent updates may race by a count.
pub struct RetryBudget {
    ratio: f64,
    reserve: f64,
    slot_ns: u64,
    slots: [Slot; SLOTS],
}

#[derive(Default)]
struct Slot {
    epoch: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl RetryBudget {
    pub fn new(cfg: &remora_api::RetryBudget) -> Self {
        let window = cfg.window.get();
        RetryBudget {
            ratio: cfg.ratio,
            reserve: f64::from(cfg.min_per_second) * window.as_secs_f64(),
            slot_ns: (window.as_nanos() as u64 / SLOTS as u64).max(1),
            slots: Default::default(),
        }
    }

    fn current(&self, now: u64) -> &Slot {
        let epoch = now / self.slot_ns + 1;
        let slot = &self.slots[(epoch % SLOTS as u64) as usize];
        let seen = slot.epoch.load(Relaxed);
        if seen != epoch
            && slot
                .epoch
                .compare_exchange(seen, epoch, Relaxed, Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Relaxed);
            slot.retries.store(0, Relaxed);
        }
        slot
    }

    /// Counts a request (its first attempt).
    pub fn deposit(&self, now: u64) {
        self.current(now).requests.fetch_add(1, Relaxed);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self, now: u64) -> bool {
        let current = self.current(now);
        let oldest = (now / self.slot_ns + 1).saturating_sub(SLOTS as u64 - 1);
        let (mut requests, mut retries) = (0u64, 0u64);
        for s in &self.slots {
            if s.epoch.load(Relaxed) >= oldest {
                requests += u64::from(s.requests.load(Relaxed));
                retries += u64::from(s.retries.load(Relaxed));
            }
        }
        if (retries + 1) as f64 > self.reserve + self.ratio * requests as f64 {
            return false;
        }
        current.retries.fetch_add(1, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests;

//! Per-endpoint load: requests in flight and a peak-EWMA latency estimate.
//!
//! Updates are lock-free and may race; a lost sample only nudges an estimate.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// How fast the latency estimate forgets: the EWMA's time constant.
const DECAY: Duration = Duration::from_secs(10);
/// Estimate of an endpoint that has not answered yet (as Linkerd does).
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// A failure counts as this many times the endpoint's latency estimate.
const FAILURE_PENALTY: u32 = 5;

pub struct Load {
    in_flight: AtomicU32,
    /// Latency estimate in nanoseconds, as f64 bits.
    rtt_ns: AtomicU64,
    /// When `rtt_ns` was last updated, in ns since [`epoch`].
    stamp_ns: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the first call in this process, on the tokio clock.
pub fn now_ns() -> u64 {
    ns_at(Instant::now())
}

/// [`now_ns`] of an instant already read (perf, issue 12: a request reads
/// the clock once where it can).
pub fn ns_at(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

impl Load {
    pub fn new() -> Self {
        Load {
            in_flight: AtomicU32::new(0),
            rtt_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            stamp_ns: AtomicU64::new(now_ns()),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Current latency estimate, decayed to now.
    pub fn rtt(&self) -> Duration {
        Duration::from_nanos(self.decayed(now_ns()) as u64)
    }

    fn decayed(&self, now: u64) -> f64 {
        let rtt = f64::from_bits(self.rtt_ns.load(Relaxed));
        let elapsed = now.saturating_sub(self.stamp_ns.load(Relaxed)) as f64;
        rtt * (-elapsed / DECAY.as_nanos() as f64).exp()
    }

    /// Records a round trip: a higher sample replaces the estimate at once
    /// (the "peak"), a lower one is blended in as time passes.
    pub fn observe(&self, rtt: Duration) {
        self.observe_at(rtt, now_ns());
    }

    /// [`Load::observe`] of a round trip that ended at `now` ([`ns_at`]).
    pub fn observe_at(&self, rtt: Duration, now: u64) {
        let sample = rtt.as_nanos() as f64;
        let prev = f64::from_bits(self.rtt_ns.load(Relaxed));
        let elapsed = now.saturating_sub(self.stamp_ns.load(Relaxed)) as f64;
        let next = if sample > prev {
            sample
        } else {
            let w = (-elapsed / DECAY.as_nanos() as f64).exp();
            prev * w + sample * (1.0 - w)
        };
        self.rtt_ns.store(next.to_bits(), Relaxed);
        self.stamp_ns.store(now, Relaxed);
    }

    /// Records a failed request: the endpoint looks several times slower
    /// than its estimate, so the balancer avoids it until the penalty decays.
    pub fn observe_failure(&self, elapsed: Duration) {
        let penalty = self.rtt().saturating_mul(FAILURE_PENALTY).max(elapsed);
        self.observe(penalty);
    }

    /// Linkerd's cost: decayed latency × (in flight + 1), scaled down by weight.
    pub fn peak_ewma_cost(&self, weight: u32) -> f64 {
        self.peak_ewma_cost_at(weight, now_ns())
    }

    /// [`Load::peak_ewma_cost`] at `now` ([`now_ns`]), read once per pick.
    pub fn peak_ewma_cost_at(&self, weight: u32, now: u64) -> f64 {
        let rtt = self.decayed(now);
        (rtt.max(1.0)) * (self.in_flight() as f64 + 1.0) / weight as f64
    }

    pub fn least_request_cost(&self, weight: u32) -> f64 {
        (self.in_flight() as f64 + 1.0) / weight as f64
    }
}

/// A request in flight to an endpoint, holding its circuit-breaker slot;
/// dropping it (when the response body ends) ends the request.
pub struct InFlight {
    ep: Arc<super::Endpoint>,
    _slot: Option<super::Slot>,
    /// The pooled HTTP/1.1 connection the response came on: back to the
    /// pool once its body has been read to the end ([`InFlight::body_done`]).
    pub checkin: Option<crate::http::client::Checkin>,
    /// For a streamed upload: how it is going. A response that ends before
    /// all of it was sent leaves its connection busy: not pooled.
    pub request_sent: Option<Arc<crate::http::body::Upload>>,
}

impl InFlight {
    pub fn start(ep: &Arc<super::Endpoint>, slot: impl Into<Option<super::Slot>>) -> Self {
        ep.load.in_flight.fetch_add(1, Relaxed);
        InFlight {
            ep: ep.clone(),
            _slot: slot.into(),
            checkin: None,
            request_sent: None,
        }
    }

    /// The endpoint this request went to.
    pub fn endpoint(&self) -> std::net::SocketAddr {
        self.ep.addr
    }

    /// The response body was read to its end: its connection can take the
    /// next request.
    pub fn body_done(&mut self) {
        let uploading = self.request_sent.as_ref().is_some_and(|s| !s.is_sent());
        match self.checkin.take() {
            Some(c) if !uploading => c.finish(),
            // Dropped: the connection closes once the upload is through.
            _ => {}
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ep.load.in_flight.fetch_sub(1, Relaxed);
    }
}

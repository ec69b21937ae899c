//! What the balancer of a backend sees now, and which endpoint it would
//! choose, for `/explain` on the admin port. Read-only: the round robin's
//! turn is peeked, not taken, so explaining a request moves no state.

use super::{now_ns, Backend, Balancer, Tried};
use http::HeaderMap;
use serde::Serialize;
use std::net::SocketAddr;

/// A backend's endpoints as the balancer sees them, and its choice.
#[derive(Debug, Serialize)]
pub struct BackendTrace {
    pub backend: String,
    pub balancer: String,
    pub endpoints: Vec<EndpointState>,
    /// The endpoint a request would go to now; `None` without endpoints.
    pub chosen: Option<SocketAddr>,
    /// How the choice was made.
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct EndpointState {
    pub address: SocketAddr,
    pub weight: u32,
    /// Neither ejected nor failing its health checks: the balancer may choose it.
    pub available: bool,
    /// Seconds of outlier ejection left, when ejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_for_seconds: Option<f64>,
    pub healthy: bool,
    pub in_flight: u32,
    /// The decayed latency estimate (peak EWMA).
    pub latency_ms: f64,
}

impl Backend {
    /// The state of every endpoint and the endpoint a request with these
    /// headers would go to.
    pub fn explain(&self, headers: &HeaderMap, rng: &mut fastrand::Rng) -> BackendTrace {
        let now = now_ns();
        let endpoints = self
            .endpoints
            .iter()
            .zip(&self.weights)
            .map(|(e, w)| EndpointState {
                address: e.addr,
                weight: *w,
                available: e.available(now),
                ejected_for_seconds: e.outlier.ejected_for(now).map(|d| d.as_secs_f64()),
                healthy: e.health.is_healthy(),
                in_flight: e.load.in_flight(),
                latency_ms: e.load.rtt().as_secs_f64() * 1000.0,
            })
            .collect::<Vec<_>>();
        let up = endpoints.iter().filter(|e| e.available).count();
        let (balancer, how) = match &self.balancer {
            Balancer::PeakEwma => (
                "peak_ewma",
                "two endpoints drawn at random, the one with the lower latency × load wins",
            ),
            Balancer::LeastRequest => (
                "least_request",
                "two endpoints drawn at random, the one with fewer requests in flight wins",
            ),
            Balancer::RoundRobin { .. } => {
                ("round_robin", "the next turn of the weighted schedule")
            }
            Balancer::RingHash { key, .. } if key.hash(headers).is_some() => {
                ("ring_hash", "the hash of the request's key on the ring")
            }
            Balancer::RingHash { .. } => (
                "ring_hash",
                "the request has no hash key (header or cookie): an endpoint at random",
            ),
        };
        let chosen = self.explain_pick(headers, rng, now);
        let reason = match (endpoints.len(), up) {
            (0, _) => "the backend has no endpoints: 503 no-endpoints".to_string(),
            (1, _) => "the only endpoint".to_string(),
            (n, 0) => format!("all {n} endpoints are unavailable: one is tried anyway"),
            (n, up) if up < n => format!(
                "{how}, among the {up} of {n} available (ejected or unhealthy ones skipped)"
            ),
            _ => how.to_string(),
        };
        BackendTrace {
            backend: self.name.to_string(),
            balancer: balancer.into(),
            endpoints,
            chosen,
            reason,
        }
    }

    /// [`Backend::pick`] without moving the round robin's turn.
    fn explain_pick(
        &self,
        headers: &HeaderMap,
        rng: &mut fastrand::Rng,
        now: u64,
    ) -> Option<SocketAddr> {
        let Balancer::RoundRobin { schedule, next } = &self.balancer else {
            let picked = self.pick_excluding(headers, rng, &Tried::NONE);
            return picked.map(|(_, e)| e.addr);
        };
        let eps = &self.endpoints;
        let first = eps.first()?;
        if schedule.is_empty() || eps.len() == 1 {
            return Some(first.addr);
        }
        let at = next.load(std::sync::atomic::Ordering::Relaxed);
        let turn = |k: usize| &eps[schedule[(at + k) % schedule.len()] as usize];
        let found = (0..schedule.len())
            .map(turn)
            .find(|e| e.available(now))
            .unwrap_or_else(|| turn(0));
        Some(found.addr)
    }
}

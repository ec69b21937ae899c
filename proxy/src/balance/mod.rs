//! Backends, their endpoints, and how one endpoint is chosen per request.
//!
//! A [`Backend`] is built from config on every snapshot, but each
//! [`Endpoint`] (with its latency estimate, in-flight count and connection
//! pool) is carried over from the previous snapshot when it remains, so a
//! config swap neither forgets what was learnt nor drops connections.

mod breaker;
mod explain;
mod load;
mod outlier;
mod p2c;
mod ring_hash;
mod round_robin;
mod tower_traits;
mod tried;

pub use breaker::{Breaker, Overflow, Slot};
pub use explain::{BackendTrace, EndpointState};
pub use load::{now_ns, ns_at, InFlight, Load};
pub use outlier::Outlier;
pub use ring_hash::{hash as content_hash, HashKey};
pub use tried::Tried;

use crate::http::client::EndpointClient;
use http::HeaderMap;
use remora_api as api;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// A named group of endpoints that routes send to.
pub struct Backend {
    pub name: Arc<str>,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Weight of each endpoint, by index (kept out of [`Endpoint`] so a
    /// weight change keeps the endpoint's state).
    pub weights: Vec<u32>,
    pub protocol: api::UpstreamProtocol,
    /// How endpoints are reached (see `snapshot::compile`); endpoint state
    /// is carried across a swap only when this is unchanged.
    pub transport_key: u64,
    /// The digest of the files behind that transport (TLS files, and the
    /// mesh roots when endpoints have an identity); part of the key.
    pub transport_files: u64,
    /// Whether endpoints are reached over TLS.
    pub tls: bool,
    balancer: Balancer,
    pub outlier_detection: api::OutlierDetection,
    pub health_check: Option<api::HealthCheck>,
    pub limits: api::CircuitBreaker,
    /// Counts for the circuit breaker, carried across swaps by name.
    pub breaker: Arc<Breaker>,
    /// Carried across swaps by name while its settings stay the same.
    pub budget: Arc<crate::http::retry::RetryBudget>,
    pub metrics: BackendMetrics,
}

/// Metric handles of a backend, bound to its name once.
pub struct BackendMetrics {
    pub ejections: prometheus::IntCounter,
    pub budget_exhausted: prometheus::IntCounter,
    /// By reason; looked up only when a retry happens.
    pub retries: prometheus::IntCounterVec,
    pub overflows: prometheus::IntCounterVec,
}

impl BackendMetrics {
    /// Handles not registered anywhere (for tests and benchmarks).
    pub fn detached() -> Self {
        let c = |n: &str| prometheus::IntCounter::new(n, n).expect("valid metric");
        let v = |n: &str| {
            prometheus::IntCounterVec::new(prometheus::Opts::new(n, n), &["backend", "reason"])
                .expect("valid metric")
        };
        BackendMetrics {
            ejections: c("ejections"),
            budget_exhausted: c("budget_exhausted"),
            retries: v("retries"),
            overflows: v("overflows"),
        }
    }
}

/// One upstream address with its runtime state, carried across config swaps.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub load: Load,
    pub outlier: Outlier,
    pub health: crate::policy::health::HealthState,
    pub client: EndpointClient,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, client: EndpointClient) -> Self {
        Endpoint {
            addr,
            load: Load::new(),
            outlier: Outlier::default(),
            health: Default::default(),
            client,
        }
    }

    /// Whether the balancer may choose it now: not ejected, and healthy
    /// by its active health checks (if any).
    pub fn available(&self, now: u64) -> bool {
        !self.outlier.is_ejected(now) && self.health.is_healthy()
    }
}

/// The balancing algorithm of a backend, with any state it needs.
pub enum Balancer {
    PeakEwma,
    LeastRequest,
    RoundRobin {
        schedule: Box<[u32]>,
        next: AtomicUsize,
    },
    RingHash {
        ring: Box<[(u64, u32)]>,
        key: HashKey,
    },
}

impl Balancer {
    pub fn build(cfg: &api::Balancer, endpoints: &[Arc<Endpoint>], weights: &[u32]) -> Balancer {
        match cfg {
            api::Balancer::PeakEwma => Balancer::PeakEwma,
            api::Balancer::LeastRequest => Balancer::LeastRequest,
            api::Balancer::RoundRobin => Balancer::RoundRobin {
                schedule: round_robin::schedule(weights),
                next: AtomicUsize::new(0),
            },
            api::Balancer::RingHash(rh) => Balancer::RingHash {
                ring: ring_hash::ring(endpoints.iter().zip(weights).map(|(e, w)| (e.addr, *w))),
                key: HashKey::from_config(rh),
            },
        }
    }
}

impl Backend {
    pub fn new(
        name: Arc<str>,
        endpoints: Vec<(Arc<Endpoint>, u32)>,
        balancer: &api::Balancer,
        protocol: api::UpstreamProtocol,
    ) -> Self {
        let (endpoints, weights): (Vec<_>, Vec<_>) =
            endpoints.into_iter().map(|(e, w)| (e, w.max(1))).unzip();
        let balancer = Balancer::build(balancer, &endpoints, &weights);
        Backend {
            name,
            endpoints,
            weights,
            protocol,
            transport_key: 0,
            transport_files: 0,
            tls: false,
            balancer,
            outlier_detection: api::OutlierDetection::default(),
            health_check: None,
            limits: api::CircuitBreaker::default(),
            breaker: Arc::default(),
            budget: Arc::new(crate::http::retry::RetryBudget::new(
                &api::RetryBudget::default(),
            )),
            metrics: BackendMetrics::detached(),
        }
    }

    /// Records the outcome of a request to `ep` for outlier ejection.
    pub fn report(&self, ep: &Endpoint, ok: bool) {
        if ok {
            ep.outlier.success();
            return;
        }
        let now = now_ns();
        let cfg = &self.outlier_detection;
        let may_eject = || {
            let ejected = self
                .endpoints
                .iter()
                .filter(|e| e.outlier.is_ejected(now))
                .count();
            (ejected + 1) * 100 <= self.endpoints.len() * cfg.max_ejected_percent as usize
        };
        if ep.outlier.failure(cfg, now, may_eject) {
            self.metrics.ejections.inc();
            tracing::warn!(backend = %self.name, endpoint = %ep.addr, "endpoint ejected after consecutive failures");
        }
    }

    /// Chooses the endpoint for a request among those available (not
    /// ejected), or `None` when the backend has none. When every endpoint
    /// is unavailable, any may be chosen: better a likely failure than a
    /// certain one.
    pub fn pick(&self, headers: &HeaderMap, rng: &mut fastrand::Rng) -> Option<&Arc<Endpoint>> {
        self.pick_excluding(headers, rng, &Tried::NONE)
            .map(|(_, ep)| ep)
    }

    /// Like [`Backend::pick`], for a retry: an endpoint in `tried` is chosen
    /// only when no other is available. Each balancer treats tried
    /// endpoints as it treats ejected ones (P2C: infinitely costly; round
    /// robin: the next turn; ring hash: the next distinct endpoint along
    /// the ring). Returns the endpoint's index too.
    pub fn pick_excluding(
        &self,
        headers: &HeaderMap,
        rng: &mut fastrand::Rng,
        tried: &Tried,
    ) -> Option<(usize, &Arc<Endpoint>)> {
        let (eps, w) = (&self.endpoints, &self.weights);
        match eps.len() {
            0 => return None,
            1 => return Some((0, &eps[0])),
            _ => {}
        }
        let now = now_ns();
        let available = |i: usize| eps[i].available(now);
        let up = |i: usize| available(i) && !tried.contains(i);
        let i = match &self.balancer {
            Balancer::PeakEwma => p2c::pick(eps.len(), rng, |i| {
                cost(up(i), eps[i].load.peak_ewma_cost_at(w[i], now))
            }),
            Balancer::LeastRequest => p2c::pick(eps.len(), rng, |i| {
                cost(up(i), eps[i].load.least_request_cost(w[i]))
            }),
            Balancer::RoundRobin { schedule, next } => {
                let first = round_robin::pick(schedule, next);
                let mut i = first;
                for _ in 1..eps.len() {
                    if up(i) {
                        break;
                    }
                    i = round_robin::pick(schedule, next);
                }
                i
            }
            Balancer::RingHash { ring, key } => match key.hash(headers) {
                Some(h) => ring_hash::pick_where(ring, h, up),
                None => rng.usize(0..eps.len()),
            },
        };
        if up(i) {
            return Some((i, &eps[i]));
        }
        // The choice is out: take any endpoint that is up and untried, else
        // any that is up, else this one.
        let start = rng.usize(0..eps.len());
        let from_start = || (0..eps.len()).map(|k| (start + k) % eps.len());
        let any = from_start()
            .find(|i| up(*i))
            .or_else(|| from_start().find(|i| available(*i)))
            .unwrap_or(i);
        Some((any, &eps[any]))
    }
}

#[cfg(test)]
mod tests;

/// An unavailable endpoint costs more than any available one.
fn cost(available: bool, cost: f64) -> f64 {
    if available {
        cost
    } else {
        f64::INFINITY
    }
}

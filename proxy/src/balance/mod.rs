//! Backends, their endpoints, and how one endpoint is chosen per request.
//!
//! A [`Backend`] is built from config on every snapshot, but each
//! [`Endpoint`] (with its latency estimate, in-flight count and connection
//! pool) is carried over from the previous snapshot when it remains, so a
//! config swap neither forgets what was learnt nor drops connections.

mod load;
mod p2c;
mod ring_hash;
mod round_robin;

pub use load::{now_ns, InFlight, Load};
pub use ring_hash::{hash as content_hash, HashKey};

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
    balancer: Balancer,
}

/// One upstream address with its runtime state, carried across config swaps.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub load: Load,
    pub client: EndpointClient,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, client: EndpointClient) -> Self {
        Endpoint {
            addr,
            load: Load::new(),
            client,
        }
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
        let (endpoints, weights): (Vec<_>, Vec<_>) = endpoints.into_iter().map(|(e, w)| (e, w.max(1))).unzip();
        let balancer = Balancer::build(balancer, &endpoints, &weights);
        Backend {
            name,
            endpoints,
            weights,
            protocol,
            transport_key: 0,
            balancer,
        }
    }

    /// Chooses the endpoint for a request, or `None` when there is none.
    pub fn pick(&self, headers: &HeaderMap, rng: &mut fastrand::Rng) -> Option<&Arc<Endpoint>> {
        let (eps, w) = (&self.endpoints, &self.weights);
        match eps.len() {
            0 => return None,
            1 => return Some(&eps[0]),
            _ => {}
        }
        let i = match &self.balancer {
            Balancer::PeakEwma => p2c::pick(eps.len(), rng, |i| eps[i].load.peak_ewma_cost(w[i])),
            Balancer::LeastRequest => p2c::pick(eps.len(), rng, |i| eps[i].load.least_request_cost(w[i])),
            Balancer::RoundRobin { schedule, next } => round_robin::pick(schedule, next),
            Balancer::RingHash { ring, key } => match key.hash(headers) {
                Some(h) => ring_hash::pick(ring, h),
                None => rng.usize(0..eps.len()),
            },
        };
        eps.get(i)
    }
}

#[cfg(test)]
mod tests;

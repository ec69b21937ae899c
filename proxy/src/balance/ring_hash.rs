//! Consistent hashing: a ring of virtual nodes, so a key keeps its endpoint
//! and adding or removing one endpoint moves only that endpoint's share.

use http::{header, HeaderMap, HeaderName};
use remora_api as api;
use std::net::SocketAddr;

/// Virtual nodes per unit of weight.
const VNODES: u32 = 160;
const MAX_RING: usize = 100_000;

pub enum HashKey {
    Header(HeaderName),
    Cookie(Box<str>),
}

impl HashKey {
    pub fn from_config(rh: &api::RingHash) -> Self {
        match (&rh.header, &rh.cookie) {
            (Some(h), _) => HeaderName::from_bytes(h.as_bytes())
                .map(HashKey::Header)
                .unwrap_or_else(|_| HashKey::Cookie("".into())),
            (None, Some(c)) => HashKey::Cookie(c.as_str().into()),
            (None, None) => HashKey::Cookie("".into()),
        }
    }

    /// The hash of the request's key, or `None` when it has none.
    pub fn hash(&self, headers: &HeaderMap) -> Option<u64> {
        match self {
            HashKey::Header(name) => headers.get(name).map(|v| hash(v.as_bytes())),
            HashKey::Cookie(name) => headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| *k == &**name)
                .map(|(_, v)| hash(v.as_bytes())),
        }
    }
}

/// FNV-1a with a final mix: stable across builds and platforms.
pub fn hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    // splitmix64 finalizer spreads FNV's weak low bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58476d1ce4e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d049bb133111eb);
    h ^ (h >> 31)
}

/// Builds the ring: `VNODES` points per unit of weight, scaled down evenly
/// when the total would pass `MAX_RING`, so every endpoint keeps its share.
pub fn ring(endpoints: impl Iterator<Item = (SocketAddr, u32)>) -> Box<[(u64, u32)]> {
    let endpoints: Vec<_> = endpoints.collect();
    let total: u64 = endpoints
        .iter()
        .map(|(_, w)| u64::from((*w).max(1)) * u64::from(VNODES))
        .sum();
    let scale = (MAX_RING as f64 / total.max(1) as f64).min(1.0);
    let mut ring = Vec::new();
    for (i, (addr, weight)) in endpoints.iter().enumerate() {
        let key = addr.to_string();
        let points = ((f64::from((*weight).max(1)) * f64::from(VNODES) * scale) as u32).max(1);
        for v in 0..points {
            let mut k = key.clone().into_bytes();
            k.extend_from_slice(&v.to_le_bytes());
            ring.push((hash(&k), i as u32));
        }
    }
    ring.sort_unstable();
    ring.into_boxed_slice()
}

/// The owner of hash `h`: the first point at or after it, walking on around
/// the ring past endpoints that are not `up` (at most once around).
pub fn pick_where(ring: &[(u64, u32)], h: u64, up: impl Fn(usize) -> bool) -> usize {
    if ring.is_empty() {
        return 0;
    }
    let start = ring.partition_point(|(p, _)| *p < h);
    (0..ring.len())
        .map(|k| ring[(start + k) % ring.len()].1 as usize)
        .find(|i| up(*i))
        .unwrap_or(ring[start % ring.len()].1 as usize)
}

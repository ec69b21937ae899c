//! Local rate limits: one token bucket per route, or one per value of a key
//! header, implemented as GCRA (the generic cell rate algorithm).
//!
//! GCRA keeps a single number per bucket, the theoretical arrival time (TAT)
//! of the next request in nanoseconds since the limiter was built, and behaves
//! exactly like a token bucket of capacity `burst` refilled at
//! `requests_per_second`: a request is admitted when the TAT, pushed one
//! emission interval on, is at most `burst` intervals ahead of now. A bucket
//! whose TAT has passed is full, so it carries no information and can be
//! forgotten. The unkeyed bucket is one `AtomicU64` updated in a CAS loop (no
//! lock). Keyed buckets live in [`SHARDS`] mutex-guarded maps, each locked for
//! one lookup only, keyed by a 64-bit keyed hash of the header value (so
//! nothing is allocated per request and memory is bounded, see
//! [`SHARD_CAPACITY`]).

use http::{HeaderMap, HeaderName};
use remora_api as api;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Number of key shards (a power of two).
const SHARDS: usize = 16;
/// Keys tracked per shard, so at most 160 000 per limiter (~4 MB). When a
/// full shard meets a new key, buckets that have refilled are dropped (no
/// loss: a forgotten key starts full); if that frees less than a quarter,
/// the shard is cleared, forgiving its keys' debts (fail-open rather than
/// refusing new clients or growing without bound).
const SHARD_CAPACITY: usize = 10_000;

/// The request was refused; a token is available after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// The `retry-after` header value: whole seconds, rounded up, at least 1.
    pub fn as_header_secs(&self) -> u64 {
        let d = self.0;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

/// A rate limit of one route (see [`api::RateLimit`]).
pub struct RateLimiter {
    /// Emission interval: nanoseconds per request at the steady rate.
    interval: u64,
    /// How far ahead of now the TAT may be: `burst` intervals.
    tolerance: u64,
    /// Time zero of every TAT.
    epoch: Instant,
    /// The bucket of requests without a key (or of all, when unkeyed).
    shared: AtomicU64,
    /// `None` when unkeyed (validation rejects an invalid header name).
    key: Option<HeaderName>,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

/// Keyed buckets: TAT by hash of the key.
type Shard = HashMap<u64, u64, BuildHasherDefault<Prehashed>>;

impl RateLimiter {
    /// Builds a limiter whose buckets all start full.
    pub fn new(cfg: &api::RateLimit) -> RateLimiter {
        let rate = u64::from(cfg.requests_per_second.max(1));
        let burst = u64::from(cfg.burst.unwrap_or(cfg.requests_per_second).max(1));
        let interval = (1_000_000_000 / rate).max(1);
        let key = cfg
            .key_header
            .as_deref()
            .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok());
        let shards = match key {
            Some(_) => (0..SHARDS).map(|_| Mutex::default()).collect(),
            None => Box::default(),
        };
        RateLimiter {
            interval,
            tolerance: interval.saturating_mul(burst),
            epoch: Instant::now(),
            shared: AtomicU64::new(0),
            key,
            hasher: RandomState::new(),
            shards,
        }
    }

    /// Takes a token from the request's bucket, or says how long until one
    /// is available.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), RetryAfter> {
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.check_at(headers, now)
            .map_err(|wait| RetryAfter(Duration::from_nanos(wait)))
    }

    /// [`RateLimiter::check`] at `now` ns since the epoch; `Err` is the wait
    /// in ns.
    fn check_at(&self, headers: &HeaderMap, now: u64) -> Result<(), u64> {
        match self.key.as_ref().and_then(|k| headers.get(k)) {
            None => self.check_shared(now),
            Some(v) => self.check_keyed(self.hasher.hash_one(v.as_bytes()), now),
        }
    }

    fn check_shared(&self, now: u64) -> Result<(), u64> {
        let mut tat = self.shared.load(Relaxed);
        loop {
            let next = self.step(tat, now)?;
            match self
                .shared
                .compare_exchange_weak(tat, next, Relaxed, Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    fn check_keyed(&self, hash: u64, now: u64) -> Result<(), u64> {
        // Bits 32.. are neither the map's bucket index (low bits) nor its
        // control tag (top 7), so the shard choice does not skew the map.
        let shard = (hash >> 32) as usize % SHARDS;
        let mut map = self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = map.get_mut(&hash) {
            *tat = self.step(*tat, now)?;
            return Ok(());
        }
        let tat = self.step(0, now)?;
        if map.len() >= SHARD_CAPACITY {
            map.retain(|_, tat| *tat > now);
            if map.len() > SHARD_CAPACITY * 3 / 4 {
                map.clear();
            }
        }
        map.insert(hash, tat);
        Ok(())
    }

    /// One GCRA step: the bucket's next TAT if a request at `now` is
    /// admitted, else the wait in ns until it would be.
    fn step(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let next = tat.max(now).saturating_add(self.interval);
        let ahead = next - now;
        if ahead <= self.tolerance {
            Ok(next)
        } else {
            Err(ahead - self.tolerance)
        }
    }
}

/// Hashes a `u64` that is already a keyed hash to itself.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `u64: Hash`; fold anything else.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests;

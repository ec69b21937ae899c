//! Circuit breaking: per-backend counts of connections, connection attempts
//! and requests in flight, checked against the backend's limits so overload
//! fails fast (503 `overloaded`) instead of queueing without bound.
//!
//! The counts live in an `Arc` carried across config swaps by backend name;
//! the limits come from the running config.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Default)]
pub struct Breaker {
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
}

/// Which limit a request ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    Connections,
    Pending,
    Requests,
}

impl Overflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Connections => "max_connections",
            Overflow::Pending => "max_pending_requests",
            Overflow::Requests => "max_requests",
        }
    }
}

/// A counted unit (a connection, a connection attempt, a request): the
/// count drops when it is dropped.
pub struct Slot {
    breaker: Arc<Breaker>,
    kind: Overflow,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.breaker.counter(self.kind).fetch_sub(1, Relaxed);
    }
}

impl Breaker {
    fn counter(&self, kind: Overflow) -> &AtomicU32 {
        match kind {
            Overflow::Connections => &self.connections,
            Overflow::Pending => &self.pending,
            Overflow::Requests => &self.requests,
        }
    }

    /// Takes a slot of `kind` if fewer than `limit` are taken.
    pub fn acquire(self: &Arc<Self>, kind: Overflow, limit: u32) -> Result<Slot, Overflow> {
        let c = self.counter(kind);
        let mut n = c.load(Relaxed);
        loop {
            if n >= limit {
                return Err(kind);
            }
            match c.compare_exchange_weak(n, n + 1, Relaxed, Relaxed) {
                Ok(_) => {
                    return Ok(Slot {
                        breaker: self.clone(),
                        kind,
                    })
                }
                Err(now) => n = now,
            }
        }
    }

    pub fn count(&self, kind: Overflow) -> u32 {
        self.counter(kind).load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_and_given_back() {
        let b = Arc::new(Breaker::default());
        let s1 = b.acquire(Overflow::Requests, 2).unwrap();
        let _s2 = b.acquire(Overflow::Requests, 2).unwrap();
        assert_eq!(
            b.acquire(Overflow::Requests, 2).err(),
            Some(Overflow::Requests)
        );
        assert!(
            b.acquire(Overflow::Connections, 2).is_ok(),
            "kinds are counted apart"
        );
        drop(s1);
        assert!(b.acquire(Overflow::Requests, 2).is_ok());
        assert_eq!(b.count(Overflow::Requests), 1);
    }
}

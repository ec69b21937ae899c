//! Our balancer's load and our retry budget behind tower's traits.
//!
//! On the same benchmark (`benches/tower_pieces.rs`, results in
//! `benches/RESULTS.md`) ours are cheaper than tower's `PeakEwma` (a mutex
//! per endpoint, two clock reads per cost) and lock-free where `TpsBudget`
//! takes a mutex on every deposit, so the request path keeps ours. These
//! impls let tower's own machinery (`tower::balance::p2c::Balance`,
//! `tower::retry::Policy` implementations, user layers of the library) use
//! them as they would tower's.

use super::{now_ns, Endpoint};
use crate::http::retry::RetryBudget;

/// An endpoint's peak-EWMA cost (decayed latency × (in flight + 1), in ns),
/// as [`Backend::pick`](super::Backend::pick) compares it at weight 1.
impl tower::load::Load for Endpoint {
    type Metric = f64;

    fn load(&self) -> f64 {
        self.load.peak_ewma_cost(1)
    }
}

/// The per-backend retry budget: a deposit per request, a withdrawal per
/// retry, both at the current time.
impl tower::retry::budget::Budget for RetryBudget {
    fn deposit(&self) {
        RetryBudget::deposit(self, now_ns())
    }

    fn withdraw(&self) -> bool {
        RetryBudget::withdraw(self, now_ns())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{tests::backend, InFlight};
    use super::*;
    use remora_api as api;
    use std::time::Duration;
    use tower::load::Load;
    use tower::retry::budget::Budget;

    /// What tower's P2C does with two candidates: keeps the lesser load.
    fn less_loaded<'a, L: Load>(a: &'a L, b: &'a L) -> &'a L
    where
        L::Metric: PartialOrd,
    {
        if b.load() < a.load() {
            b
        } else {
            a
        }
    }

    #[test]
    fn tower_sees_the_slower_and_busier_endpoint_as_more_loaded() {
        let b = backend(&[1, 1, 1], api::Balancer::PeakEwma);
        let (fast, slow, busy) = (&*b.endpoints[0], &*b.endpoints[1], &*b.endpoints[2]);
        fast.load.observe(Duration::from_millis(1));
        slow.load.observe(Duration::from_millis(50));
        assert!(std::ptr::eq(less_loaded(fast, slow), fast));

        // The same latency, one request in flight: the idle one is cheaper.
        busy.load.observe(Duration::from_millis(1));
        let before = busy.load();
        let _in_flight = InFlight::start(&b.endpoints[2], None);
        assert!(busy.load() > before, "a request in flight adds to the load");
        assert!(std::ptr::eq(less_loaded(busy, fast), fast));
    }

    /// What a tower retry policy does: deposit each request, withdraw
    /// before each retry.
    fn retries_allowed<B: Budget>(budget: &B, requests: u32, retries: u32) -> u32 {
        (0..requests).for_each(|_| budget.deposit());
        (0..retries).filter(|_| budget.withdraw()).count() as u32
    }

    #[test]
    fn tower_spends_our_budget_as_configured() {
        let budget = RetryBudget::new(&api::RetryBudget {
            ratio: 0.2,
            min_per_second: 0,
            window: api::Duration::from_secs(10),
        });
        assert_eq!(retries_allowed(&budget, 0, 5), 0, "nothing deposited");
        // 20% of 100 requests: 20 retries, however many are asked for.
        assert_eq!(retries_allowed(&budget, 100, 50), 20);
    }
}

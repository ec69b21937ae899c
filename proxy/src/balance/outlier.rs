//! Outlier ejection (failure accrual): an endpoint that fails several times
//! in a row leaves the balancer for a while, longer with each ejection in a
//! row, and comes back by itself when the time is up (the next requests probe
//! it; as many failures in a row again eject it again, for longer, while a
//! success resets the growth).
//!
//! State lives in the endpoint, so it survives config swaps.

use remora_api::OutlierDetection;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Outlier {
    consecutive: AtomicU32,
    /// Ejected until this time ([`super::now_ns`]); 0 when never ejected.
    ejected_until: AtomicU64,
    /// Ejections in a row, without a success between them.
    ejections: AtomicU32,
}

impl Outlier {
    pub fn is_ejected(&self, now: u64) -> bool {
        now < self.ejected_until.load(Relaxed)
    }

    /// How long it stays ejected after `now` (ns), if it is ejected.
    pub fn ejected_for(&self, now: u64) -> Option<std::time::Duration> {
        let until = self.ejected_until.load(Relaxed);
        (now < until).then(|| std::time::Duration::from_nanos(until - now))
    }

    pub fn success(&self) {
        if self.consecutive.load(Relaxed) != 0 {
            self.consecutive.store(0, Relaxed);
        }
        if self.ejections.load(Relaxed) != 0 {
            self.ejections.store(0, Relaxed);
        }
    }

    /// Records a failure; returns true when it ejects the endpoint.
    /// `may_eject` says whether the backend can lose one more endpoint.
    pub fn failure(
        &self,
        cfg: &OutlierDetection,
        now: u64,
        may_eject: impl FnOnce() -> bool,
    ) -> bool {
        if cfg.consecutive_failures == 0 {
            return false;
        }
        let n = self.consecutive.fetch_add(1, Relaxed) + 1;
        if n < cfg.consecutive_failures || self.is_ejected(now) || !may_eject() {
            return false;
        }
        let times = self.ejections.fetch_add(1, Relaxed) + 1;
        let time = cfg
            .base_ejection_time
            .get()
            .saturating_mul(times)
            .min(cfg.max_ejection_time.get());
        self.ejected_until
            .store(now + time.as_nanos() as u64, Relaxed);
        self.consecutive.store(0, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora_api::Duration;

    fn cfg() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 3,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejected_percent: 50,
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn ejects_after_consecutive_failures_for_growing_times() {
        let o = Outlier::default();
        let c = cfg();
        assert!(!o.failure(&c, 0, || true));
        assert!(!o.failure(&c, 0, || true));
        assert!(o.failure(&c, 0, || true), "third failure in a row ejects");
        assert!(o.is_ejected(9 * S));
        assert!(!o.is_ejected(10 * S), "back after the base time");
        // Failing again right away ejects for twice as long.
        for _ in 0..2 {
            assert!(!o.failure(&c, 10 * S, || true));
        }
        assert!(o.failure(&c, 10 * S, || true));
        assert!(o.is_ejected(29 * S) && !o.is_ejected(30 * S));
        // The third time is capped at the maximum.
        for _ in 0..3 {
            o.failure(&c, 30 * S, || true);
        }
        assert!(o.is_ejected(54 * S) && !o.is_ejected(55 * S));
    }

    #[test]
    fn a_success_resets_the_count() {
        let o = Outlier::default();
        let c = cfg();
        o.failure(&c, 0, || true);
        o.failure(&c, 0, || true);
        o.success();
        assert!(!o.failure(&c, 0, || true));
        assert!(!o.is_ejected(0));
    }

    #[test]
    fn the_backend_can_refuse_an_ejection() {
        let o = Outlier::default();
        let c = cfg();
        for _ in 0..5 {
            assert!(!o.failure(&c, 0, || false));
        }
        assert!(!o.is_ejected(1));
    }
}

//! Fault injection for chaos testing: a route delays and/or aborts a
//! configured share of its requests. A decision is two independent draws
//! from the caller's RNG, so the hot path takes no lock and allocates
//! nothing, and tests are deterministic with a seeded RNG.

use http::StatusCode;
use remora_api as api;
use std::time::Duration;

/// The faults of one route (see [`api::Fault`]), ready to draw from.
pub struct FaultInjector {
    /// Delay, and the probability (0-1) of applying it.
    delay: Option<(Duration, f64)>,
    /// Abort status, and the probability (0-1) of applying it.
    abort: Option<(StatusCode, f64)>,
}

/// What to do to one request. Both may be set: the caller waits out the
/// delay first, then aborts (as Envoy does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injection {
    pub delay: Option<Duration>,
    /// Answer with this status instead of forwarding the request.
    pub abort: Option<StatusCode>,
}

impl FaultInjector {
    /// Percentages outside 0-100 are clamped; an invalid abort status (which
    /// validation rejects) disables the abort.
    pub fn new(cfg: &api::Fault) -> FaultInjector {
        FaultInjector {
            delay: cfg
                .delay
                .as_ref()
                .map(|d| (d.duration.get(), probability(d.percent))),
            abort: cfg.abort.as_ref().and_then(|a| {
                let status = StatusCode::from_u16(a.status).ok()?;
                Some((status, probability(a.percent)))
            }),
        }
    }

    /// Draws the faults for one request.
    pub fn decide(&self, rng: &mut fastrand::Rng) -> Injection {
        Injection {
            delay: self.delay.and_then(|(d, p)| hit(rng, p).then_some(d)),
            abort: self.abort.and_then(|(s, p)| hit(rng, p).then_some(s)),
        }
    }
}

/// A percentage as a probability; NaN becomes 0.
fn probability(percent: f64) -> f64 {
    if percent.is_nan() {
        0.0
    } else {
        (percent / 100.0).clamp(0.0, 1.0)
    }
}

/// True with probability `p`: `f64()` is in `[0, 1)`, so 0 never hits and 1
/// always does.
fn hit(rng: &mut fastrand::Rng, p: f64) -> bool {
    rng.f64() < p
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora_api::{FaultAbort, FaultDelay};

    const DRAWS: usize = 100_000;

    fn injector(delay: Option<f64>, abort: Option<f64>) -> FaultInjector {
        FaultInjector::new(&api::Fault {
            delay: delay.map(|percent| FaultDelay {
                duration: api::Duration::from_millis(250),
                percent,
            }),
            abort: abort.map(|percent| FaultAbort {
                status: 503,
                percent,
            }),
        })
    }

    /// Percentages of (delayed, aborted, both) over [`DRAWS`] seeded draws.
    fn shares(f: &FaultInjector, seed: u64) -> (f64, f64, f64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (mut d, mut a, mut both) = (0, 0, 0);
        for _ in 0..DRAWS {
            let i = f.decide(&mut rng);
            d += usize::from(i.delay.is_some());
            a += usize::from(i.abort.is_some());
            both += usize::from(i.delay.is_some() && i.abort.is_some());
        }
        let pct = |n| n as f64 * 100.0 / DRAWS as f64;
        (pct(d), pct(a), pct(both))
    }

    #[test]
    fn observed_shares_match_configured_percentages() {
        for (seed, delay, abort) in [
            (1, 0.5, 99.5),
            (2, 10.0, 33.3),
            (3, 50.0, 1.0),
            (4, 75.25, 0.1),
        ] {
            let (d, a, _) = shares(&injector(Some(delay), Some(abort)), seed);
            assert!((d - delay).abs() <= 0.5, "delay {delay}%: observed {d}%");
            assert!((a - abort).abs() <= 0.5, "abort {abort}%: observed {a}%");
        }
    }

    #[test]
    fn zero_never_and_hundred_always() {
        assert_eq!(
            shares(&injector(Some(0.0), Some(100.0)), 5),
            (0.0, 100.0, 0.0)
        );
        assert_eq!(
            shares(&injector(Some(100.0), Some(0.0)), 6),
            (100.0, 0.0, 0.0)
        );
        assert_eq!(shares(&injector(None, None), 7), (0.0, 0.0, 0.0));
        assert_eq!(
            shares(&injector(Some(f64::NAN), Some(250.0)), 8),
            (0.0, 100.0, 0.0)
        );
    }

    #[test]
    fn delay_and_abort_are_drawn_independently() {
        let (_, _, both) = shares(&injector(Some(50.0), Some(50.0)), 9);
        assert!(
            (both - 25.0).abs() <= 0.5,
            "both in {both}% of requests, want ~25%"
        );
    }

    #[test]
    fn injection_carries_the_configured_values() {
        let mut rng = fastrand::Rng::with_seed(10);
        let i = injector(Some(100.0), Some(100.0)).decide(&mut rng);
        assert_eq!(i.delay, Some(Duration::from_millis(250)));
        assert_eq!(i.abort, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(injector(None, None).decide(&mut rng), Injection::default());
    }
}

//! When a sidecar tries its control plane again after a subscription ended.
//!
//! The wait is a random fraction, between half and all, of a ceiling that
//! doubles with each failure in a row (from 100 ms). How high the ceiling
//! may grow depends on how the last attempt ended:
//!
//! * **unreachable** (nothing listens: connection refused, no route, the
//!   connect timed out): at most [`UNREACHABLE_MAX`], 1 s. Such an attempt
//!   costs the control plane nothing (a SYN answered by a reset, or nothing
//!   at all), so during an outage of any length the proxy keeps trying
//!   every 0.5-1 s, and is back within about a second of the control plane.
//! * **failed** (the control plane answered, then the subscription failed:
//!   a TLS or HTTP/2 error, a refusal such as 404 or 403, a bad message):
//!   at most [`FAILED_MAX`], 10 s. Each such attempt costs the control plane
//!   a handshake and a request, so a fleet backs off further.
//! * **subscribed** (an accepted subscription that later ended, cleanly or
//!   not): the count starts over, so the next try comes after 50-100 ms.

use std::io::ErrorKind;
use std::time::Duration;

/// The first ceiling, and the wait's unit.
pub const BASE: Duration = Duration::from_millis(100);
/// The largest ceiling while the control plane does not answer at all.
pub const UNREACHABLE_MAX: Duration = Duration::from_secs(1);
/// The largest ceiling while the control plane answers but the
/// subscription fails.
pub const FAILED_MAX: Duration = Duration::from_secs(10);

/// How a subscription attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The subscription was accepted, then ended.
    Subscribed,
    /// The control plane could not be reached (see [`unreachable`]).
    Unreachable,
    /// The control plane was reached, but no subscription came of it.
    Failed,
}

/// Whether a connect error means nothing answers at the address (as
/// opposed to a peer that answered wrongly, e.g. a TLS error).
pub fn unreachable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionRefused
            | ErrorKind::TimedOut
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
            | ErrorKind::AddrNotAvailable
    )
}

/// The reconnect schedule: failures in a row, and the jitter's source.
pub struct Backoff {
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(rng: fastrand::Rng) -> Self {
        Backoff { failures: 0, rng }
    }

    /// The ceiling of the wait after `outcome`, with `failures` failures in
    /// a row before it (this one not counted).
    pub fn ceiling(failures: u32, outcome: Outcome) -> Duration {
        let (n, max) = match outcome {
            Outcome::Subscribed => (0, BASE),
            Outcome::Unreachable => (failures + 1, UNREACHABLE_MAX),
            Outcome::Failed => (failures + 1, FAILED_MAX),
        };
        BASE.saturating_mul(1 << n.min(10)).min(max)
    }

    /// Records `outcome` and returns how long to wait before the next try.
    pub fn next(&mut self, outcome: Outcome) -> Duration {
        let ceiling = Self::ceiling(self.failures, outcome);
        self.failures = match outcome {
            Outcome::Subscribed => 0,
            Outcome::Unreachable | Outcome::Failed => self.failures.saturating_add(1),
        };
        ceiling.mul_f64(0.5 + self.rng.f64() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceilings() {
        use Outcome::*;
        let table = [
            (0, Subscribed, ms(100)),
            (7, Subscribed, ms(100)),
            (0, Unreachable, ms(200)),
            (1, Unreachable, ms(400)),
            (2, Unreachable, ms(800)),
            (3, Unreachable, ms(1000)),
            (50, Unreachable, ms(1000)),
            (u32::MAX - 1, Unreachable, ms(1000)),
            (0, Failed, ms(200)),
            (3, Failed, ms(1600)),
            (5, Failed, ms(6400)),
            (6, Failed, ms(10_000)),
            (1000, Failed, ms(10_000)),
        ];
        for (failures, outcome, want) in table {
            assert_eq!(
                Backoff::ceiling(failures, outcome),
                want,
                "{failures} failures then {outcome:?}"
            );
        }
    }

    #[test]
    fn connect_errors() {
        let table = [
            (ErrorKind::ConnectionRefused, true),
            (ErrorKind::TimedOut, true),
            (ErrorKind::HostUnreachable, true),
            (ErrorKind::NetworkUnreachable, true),
            (ErrorKind::AddrNotAvailable, true),
            (ErrorKind::InvalidData, false), // a TLS error: someone answered
            (ErrorKind::ConnectionReset, false),
            (ErrorKind::UnexpectedEof, false),
            (ErrorKind::PermissionDenied, false),
        ];
        for (kind, want) in table {
            assert_eq!(unreachable(kind), want, "{kind:?}");
        }
    }

    #[test]
    fn waits_are_between_half_and_all_of_the_ceiling() {
        for seed in 0..200 {
            let mut b = Backoff::new(fastrand::Rng::with_seed(seed));
            let outcomes = [Outcome::Failed, Outcome::Failed, Outcome::Unreachable];
            for (failures, outcome) in (0..).zip(outcomes) {
                let ceiling = Backoff::ceiling(failures, outcome);
                let wait = b.next(outcome);
                assert!(
                    wait >= ceiling / 2 && wait < ceiling,
                    "seed {seed}: {wait:?} of {ceiling:?}"
                );
            }
        }
    }

    /// The schedule a proxy follows through a control-plane outage: it loses
    /// an accepted subscription, then every connect is refused until the
    /// control plane is back after `outage`. Returns how long after that the
    /// first attempt comes (the clock is paused: tokio advances it exactly).
    async fn back_after(outage: Duration, seed: u64) -> Duration {
        let mut b = Backoff::new(fastrand::Rng::with_seed(seed));
        let start = Instant::now();
        let mut outcome = Outcome::Subscribed;
        loop {
            tokio::time::sleep(b.next(outcome)).await;
            if start.elapsed() >= outage {
                return start.elapsed() - outage;
            }
            outcome = Outcome::Unreachable;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_of_any_length_is_noticed_within_a_second() {
        for outage in [ms(10), ms(2000), ms(60_000), ms(3_600_000)] {
            for seed in 0..20 {
                let late = back_after(outage, seed).await;
                assert!(late < UNREACHABLE_MAX, "{outage:?} seed {seed}: {late:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_control_plane_is_tried_ever_less_often() {
        let mut b = Backoff::new(fastrand::Rng::with_seed(1));
        let start = Instant::now();
        let mut tries = 0;
        while start.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(b.next(Outcome::Failed)).await;
            tries += 1;
        }
        // The first 6 waits (ceilings 0.2, 0.4, … 6.4 s) take 6.3-12.6 s,
        // then one per 5-10 s: 11 to 17 tries in a minute.
        assert!((11..=17).contains(&tries), "{tries} tries in 60 s");
        // A subscription that works starts over.
        let wait = b.next(Outcome::Subscribed);
        assert!(wait < BASE, "{wait:?}");
        assert!(b.next(Outcome::Unreachable) < ms(200));
    }
}

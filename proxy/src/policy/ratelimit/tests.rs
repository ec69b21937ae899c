use super::*;
use http::HeaderValue;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

fn limiter(rps: u32, burst: Option<u32>, key: Option<&str>) -> RateLimiter {
    RateLimiter::new(&api::RateLimit {
        requests_per_second: rps,
        burst,
        key_header: key.map(str::to_string),
    })
}

fn keyed(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-user", HeaderValue::from_str(value).unwrap());
    h
}

/// Requests admitted out of `n` sent at `now`.
fn admitted(l: &RateLimiter, h: &HeaderMap, now: u64, n: usize) -> usize {
    (0..n).filter(|_| l.check_at(h, now).is_ok()).count()
}

#[test]
fn burst_then_limited_then_refilled() {
    let l = limiter(10, None, None);
    let none = HeaderMap::new();
    assert_eq!(
        admitted(&l, &none, 0, 10),
        10,
        "starts full: burst defaults to the rate"
    );
    assert_eq!(l.check_at(&none, 0), Err(100 * MS), "next token in 1/10 s");
    assert_eq!(l.check_at(&none, 40 * MS), Err(60 * MS));
    assert_eq!(
        admitted(&l, &none, SEC, 11),
        10,
        "a second refills the bucket"
    );
    assert_eq!(
        admitted(&l, &none, SEC + 250 * MS, 3),
        2,
        "a quarter second refills 2.5"
    );
    assert_eq!(l.check_at(&none, SEC + 250 * MS), Err(50 * MS));
}

#[test]
fn idle_time_does_not_overfill() {
    let l = limiter(1, Some(5), None);
    let none = HeaderMap::new();
    assert_eq!(
        admitted(&l, &none, 0, 9),
        5,
        "explicit burst is the capacity"
    );
    assert_eq!(
        admitted(&l, &none, 3600 * SEC, 9),
        5,
        "an hour idle still holds only burst"
    );
}

#[test]
fn long_run_admits_rate_times_time_plus_burst() {
    let l = limiter(100, None, None);
    let none = HeaderMap::new();
    // Three attempts every simulated millisecond for 5 s.
    let total: usize = (0..=5000).map(|ms| admitted(&l, &none, ms * MS, 3)).sum();
    assert!((598..=602).contains(&total), "admitted {total}, want ~600");
}

#[test]
fn keys_have_their_own_buckets() {
    let l = limiter(1, Some(2), Some("X-User"));
    let (a, b, none) = (keyed("alice"), keyed("bob"), HeaderMap::new());
    assert_eq!(admitted(&l, &a, 0, 5), 2);
    assert_eq!(l.check_at(&a, 0), Err(SEC));
    assert_eq!(admitted(&l, &b, 0, 5), 2, "bob is not limited by alice");
    assert_eq!(
        admitted(&l, &none, 0, 5),
        2,
        "requests without the header share one bucket"
    );
    assert_eq!(admitted(&l, &HeaderMap::new(), 0, 5), 0);
    assert_eq!(admitted(&l, &a, SEC, 5), 1);
}

#[test]
fn concurrent_checks_never_overadmit() {
    let l = limiter(1, Some(50), None);
    let none = HeaderMap::new();
    let total: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| s.spawn(|| admitted(&l, &none, 0, 100)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(total, 50);
}

fn tracked(l: &RateLimiter) -> usize {
    l.shards.iter().map(|s| s.lock().unwrap().len()).sum()
}

#[test]
fn key_memory_is_bounded() {
    let l = limiter(1, Some(1), Some("x-user"));
    let n = SHARDS * SHARD_CAPACITY + 20_000;
    for i in 0..n {
        assert!(l
            .check_keyed((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15), 0)
            .is_ok());
    }
    assert!(
        tracked(&l) <= SHARDS * SHARD_CAPACITY,
        "{} keys tracked",
        tracked(&l)
    );
}

#[test]
fn refilled_buckets_are_evicted_first() {
    let l = limiter(1, Some(1), Some("x-user"));
    // Spread over the map, but all in shard 0 (bits 32..36 clear).
    let hash = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) & !(0xf << 32);
    for i in 0..SHARD_CAPACITY as u64 {
        l.check_keyed(hash(i), 0).unwrap();
    }
    // Key 0 stays busy; every other key's bucket refills by t = 1 s.
    l.check_keyed(hash(0), SEC).unwrap();
    l.check_keyed(hash(SHARD_CAPACITY as u64), SEC).unwrap();
    assert_eq!(
        tracked(&l),
        2,
        "idle keys dropped, the busy one and the new one kept"
    );
    assert_eq!(
        l.check_keyed(hash(0), SEC),
        Err(SEC),
        "the busy key is still limited"
    );
}

#[test]
fn retry_after_header_rounds_up_to_whole_seconds() {
    let secs = |ns| RetryAfter(Duration::from_nanos(ns)).as_header_secs();
    assert_eq!(secs(0), 1);
    assert_eq!(secs(100 * MS), 1);
    assert_eq!(secs(SEC), 1);
    assert_eq!(secs(SEC + 1), 2);
    assert_eq!(secs(59 * SEC + 500 * MS), 60);
}

#[test]
fn check_reads_the_clock() {
    let l = limiter(1, Some(3), None);
    let none = HeaderMap::new();
    assert!((0..3).all(|_| l.check(&none).is_ok()));
    let RetryAfter(wait) = l.check(&none).unwrap_err();
    assert!(
        wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
}

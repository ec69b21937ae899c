use super::*;
use crate::http::client::{EndpointClient, Transport};
use crate::metrics::Metrics;
use http::HeaderValue;
use std::collections::HashMap;
use std::time::Duration;

pub(super) fn backend(weights: &[u32], balancer: api::Balancer) -> Backend {
    let metrics = Metrics::new();
    let eps = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let addr: SocketAddr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
            let t = Transport {
                tls: None,
                identity: None,
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                max_idle: 1,
            };
            (
                Arc::new(Endpoint::new(
                    addr,
                    EndpointClient::new(addr, t, metrics.upstream("b")),
                )),
                *w,
            )
        })
        .collect();
    Backend::new("b".into(), eps, &balancer, api::UpstreamProtocol::Auto)
}

fn counts(b: &Backend, n: usize, headers: impl Fn(usize) -> HeaderMap) -> HashMap<u16, usize> {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut out = HashMap::new();
    for i in 0..n {
        let ep = b.pick(&headers(i), &mut rng).unwrap();
        *out.entry(ep.addr.port()).or_default() += 1;
    }
    out
}

#[test]
fn round_robin_is_exact_and_weighted() {
    let b = backend(&[1, 2, 1], api::Balancer::RoundRobin);
    let c = counts(&b, 4000, |_| HeaderMap::new());
    assert_eq!(c[&1000], 1000);
    assert_eq!(c[&1001], 2000);
    assert_eq!(c[&1002], 1000);
    // Interleaved: the heavy endpoint never gets its whole share in a row.
    let s = round_robin::schedule(&[1, 2, 1]);
    assert_eq!(&*s, &[1, 0, 2, 1]);
}

#[test]
fn peak_ewma_prefers_the_fast_endpoint() {
    let b = backend(&[1, 1, 1], api::Balancer::PeakEwma);
    b.endpoints[0].load.observe(Duration::from_millis(200));
    b.endpoints[1].load.observe(Duration::from_millis(5));
    b.endpoints[2].load.observe(Duration::from_millis(5));
    let c = counts(&b, 3000, |_| HeaderMap::new());
    // With P2C the slow endpoint only wins when both samples are itself: never.
    assert_eq!(c.get(&1000).copied().unwrap_or(0), 0, "{c:?}");
    assert_eq!(c[&1001] + c[&1002], 3000, "{c:?}");
    assert!(
        c[&1001] > 500 && c[&1002] > 500,
        "both fast endpoints serve: {c:?}"
    );
}

#[test]
fn least_request_avoids_busy_endpoints() {
    let b = backend(&[1, 1], api::Balancer::LeastRequest);
    let _busy: Vec<_> = (0..5)
        .map(|_| InFlight::start(&b.endpoints[0], None))
        .collect();
    let c = counts(&b, 1000, |_| HeaderMap::new());
    assert_eq!(c[&1001], 1000, "{c:?}");
    drop(_busy);
    let c = counts(&b, 10_000, |_| HeaderMap::new());
    assert!(
        c[&1000] > 4500 && c[&1001] > 4500,
        "balanced when idle: {c:?}"
    );
}

#[test]
fn ring_hash_is_sticky_and_spread() {
    let b = backend(
        &[1, 1, 1, 1],
        api::Balancer::RingHash(api::RingHash {
            header: Some("x-user".into()),
            cookie: None,
        }),
    );
    let user = |i: usize| {
        let mut h = HeaderMap::new();
        h.insert(
            "x-user",
            HeaderValue::from_str(&format!("user-{}", i % 1000)).unwrap(),
        );
        h
    };
    let mut rng = fastrand::Rng::with_seed(1);
    for i in 0..1000 {
        let first = b.pick(&user(i), &mut rng).unwrap().addr;
        assert_eq!(
            b.pick(&user(i), &mut rng).unwrap().addr,
            first,
            "key {i} moved"
        );
    }
    let c = counts(&b, 1000, user);
    for port in 1000..1004 {
        let share = c[&port] as f64 / 1000.0;
        assert!((0.15..0.35).contains(&share), "{c:?}");
    }
}

#[test]
fn ring_hash_by_cookie() {
    let b = backend(
        &[1, 1, 1],
        api::Balancer::RingHash(api::RingHash {
            header: None,
            cookie: Some("session".into()),
        }),
    );
    let mut h = HeaderMap::new();
    h.insert(
        "cookie",
        HeaderValue::from_static("theme=dark; session=abc123"),
    );
    let mut rng = fastrand::Rng::with_seed(3);
    let first = b.pick(&h, &mut rng).unwrap().addr;
    for _ in 0..100 {
        assert_eq!(b.pick(&h, &mut rng).unwrap().addr, first);
    }
}

#[test]
fn ewma_peaks_then_decays() {
    let l = Load::new();
    l.observe(Duration::from_millis(100));
    assert!(l.rtt() >= Duration::from_millis(99));
    l.observe(Duration::from_millis(1));
    // A low sample right after a peak barely moves the estimate.
    assert!(l.rtt() > Duration::from_millis(90), "{:?}", l.rtt());
}

fn every_balancer() -> Vec<(&'static str, api::Balancer)> {
    vec![
        ("peak_ewma", api::Balancer::PeakEwma),
        ("least_request", api::Balancer::LeastRequest),
        ("round_robin", api::Balancer::RoundRobin),
        (
            "ring_hash",
            api::Balancer::RingHash(api::RingHash {
                header: Some("x-key".into()),
                cookie: None,
            }),
        ),
    ]
}

fn key(i: usize) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-key", HeaderValue::from_str(&format!("k{i}")).unwrap());
    h
}

#[test]
fn a_pick_with_exclusions_avoids_them_while_another_is_available() {
    for (name, balancer) in every_balancer() {
        let b = backend(&[1, 2, 1, 1], balancer);
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 0..500 {
            // Exclude what this key would get first, then that and the next.
            let mut tried = Tried::NONE;
            for round in 0..3 {
                let (idx, ep) = b.pick_excluding(&key(i), &mut rng, &tried).unwrap();
                assert!(
                    !tried.contains(idx),
                    "{name}: key {i} round {round} got tried {idx}"
                );
                assert!(Arc::ptr_eq(ep, &b.endpoints[idx]), "{name}");
                tried.insert(idx);
            }
        }
    }
}

#[test]
fn every_endpoint_tried_still_picks_one() {
    for (name, balancer) in every_balancer() {
        let b = backend(&[1, 1, 1], balancer);
        let mut rng = fastrand::Rng::with_seed(9);
        let mut tried = Tried::NONE;
        (0..3).for_each(|i| tried.insert(i));
        for i in 0..50 {
            assert!(
                b.pick_excluding(&key(i), &mut rng, &tried).is_some(),
                "{name}"
            );
        }
    }
}

#[test]
fn tried_and_ejected_leave_the_one_left() {
    let cfg = api::OutlierDetection {
        consecutive_failures: 1,
        ..Default::default()
    };
    for (name, balancer) in every_balancer() {
        let b = backend(&[1, 1, 1], balancer);
        assert!(b.endpoints[0].outlier.failure(&cfg, now_ns(), || true));
        let mut tried = Tried::NONE;
        tried.insert(1);
        let mut rng = fastrand::Rng::with_seed(11);
        for i in 0..100 {
            let (idx, _) = b.pick_excluding(&key(i), &mut rng, &tried).unwrap();
            assert_eq!(idx, 2, "{name}: key {i}");
        }
        // Only tried ones are up: a tried one that is up beats an ejected one.
        tried.insert(2);
        for i in 0..100 {
            let (idx, _) = b.pick_excluding(&key(i), &mut rng, &tried).unwrap();
            assert_ne!(idx, 0, "{name}: key {i} got the ejected endpoint");
        }
    }
}

#[test]
fn the_tried_set_is_small_and_inline() {
    let mut t = Tried::NONE;
    assert!(t.is_empty());
    for i in [3, 3, 900, 0] {
        t.insert(i);
    }
    assert!(t.contains(3) && t.contains(900) && t.contains(0) && !t.contains(1));
    // Past its capacity it forgets new ones rather than allocating.
    (10..30).for_each(|i| t.insert(i));
    assert!(t.contains(10) && !t.contains(29));
    assert!(std::mem::size_of::<Tried>() <= 40);
}

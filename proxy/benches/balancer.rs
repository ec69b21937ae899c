//! Endpoint choice cost: `Backend::pick` for each balancer, 3 and 100 endpoints.
//!
//! Run: `cargo bench -p remora-proxy --bench balancer -- --warm-up-time 1 --measurement-time 3`
//!
//! Endpoints carry a little state so the P2C balancers compare real costs:
//! endpoint `i` has seen a latency of `1 + i % 7` ms and has `i % 3` requests
//! in flight. `ring_hash` hashes the `x-user` header; lookups cycle through
//! 256 different users so the hash and ring search are not one cached path.
//! No I/O: endpoints point at ports nothing listens on and are never dialled.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue};
use remora_api as api;
use remora_proxy::balance::{Backend, Endpoint, InFlight};
use remora_proxy::http::client::{EndpointClient, Transport};
use remora_proxy::metrics::Metrics;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const SIZES: [usize; 2] = [3, 100];

/// A backend of `n` endpoints with some load, and the in-flight guards that
/// hold that load (keep them alive while measuring).
fn backend(n: usize, balancer: &api::Balancer) -> (Backend, Vec<InFlight>) {
    let metrics = Metrics::new();
    let transport = Transport::plain();
    let eps: Vec<_> = (0..n)
        .map(|i| {
            let addr: SocketAddr = format!("127.0.0.{}:{}", 1 + i / 200, 1000 + i)
                .parse()
                .unwrap();
            let client = EndpointClient::new(addr, transport.clone(), metrics.upstream("b"));
            (Arc::new(Endpoint::new(addr, client)), 1)
        })
        .collect();
    let mut in_flight = Vec::new();
    for (i, (ep, _)) in eps.iter().enumerate() {
        ep.load.observe(Duration::from_millis(1 + (i % 7) as u64));
        in_flight.extend((0..i % 3).map(|_| InFlight::start(ep, None)));
    }
    (
        Backend::new("b".into(), eps, balancer, api::UpstreamProtocol::Auto),
        in_flight,
    )
}

fn bench_pick(c: &mut Criterion) {
    let ring_hash = api::Balancer::RingHash(api::RingHash {
        header: Some("x-user".into()),
        cookie: None,
    });
    let balancers = [
        ("peak_ewma", api::Balancer::PeakEwma),
        ("least_request", api::Balancer::LeastRequest),
        ("round_robin", api::Balancer::RoundRobin),
        ("ring_hash", ring_hash),
    ];
    let users: Vec<HeaderMap> = (0..256)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert(
                "x-user",
                HeaderValue::from_str(&format!("user-{i:05}")).unwrap(),
            );
            h
        })
        .collect();
    let mut g = c.benchmark_group("balancer/pick");
    for (name, cfg) in &balancers {
        for n in SIZES {
            let (b, _in_flight) = backend(n, cfg);
            let mut rng = fastrand::Rng::with_seed(7);
            g.bench_function(BenchmarkId::new(*name, n), |bench| {
                let mut i = 0;
                bench.iter(|| {
                    let h = &users[i & 255];
                    i += 1;
                    black_box(b.pick(black_box(h), &mut rng).map(|e| e.addr))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);

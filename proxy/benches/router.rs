//! Route table cost: `Router::compile`, then `Router::find` per request.
//!
//! Run: `cargo bench -p remora-proxy --bench router -- --warm-up-time 1 --measurement-time 3`
//!
//! Two tables, each with 1, 100 and 10,000 routes:
//!
//! * `hosts`: the usual sidecar/edge shape. Route `i` names the exact host
//!   `svc-{i/4}.example.com` and one of four prefixes (`/api/v1`, `/api/v2`,
//!   `/static`, `/`), so each host has four routes. Lookups cycle through
//!   1,024 requests spread over all hosts and paths (lower-case hosts, as
//!   most clients send them).
//! * `worst`: host-less prefix routes `/p0`, `/p1`, ... and a request that
//!   only the last one matches, so `find` tries every route.
//!
//! Built without I/O: one backend shared by every route, with an endpoint
//! on a port nothing listens on (nothing connects while benchmarking).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use http::{HeaderMap, Method};
use remora_api as api;
use remora_proxy::balance::{Backend, Endpoint};
use remora_proxy::http::client::{EndpointClient, Transport};
use remora_proxy::http::router::{Port, Router};
use remora_proxy::metrics::Metrics;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const SIZES: [usize; 3] = [1, 100, 10_000];
const PREFIXES: [&str; 4] = ["/api/v1", "/api/v2", "/static", "/"];

fn backend() -> Arc<Backend> {
    let transport = Transport {
        tls: None,
        identity: None,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(90),
        max_idle: 1,
    };
    let addr = "127.0.0.1:1".parse().unwrap();
    let client = EndpointClient::new(addr, transport, Metrics::new().upstream("b"));
    Arc::new(Backend::new(
        "b".into(),
        vec![(Arc::new(Endpoint::new(addr, client)), 1)],
        &api::Balancer::RoundRobin,
        api::UpstreamProtocol::Auto,
    ))
}

fn parse(yaml: &str) -> Vec<api::Route> {
    let de = serde_yaml_ng::Deserializer::from_str(yaml);
    serde_yaml_ng::with::singleton_map_recursive::deserialize(de).unwrap()
}

/// `n` routes, four per host: `svc-{i/4}.example.com` with one prefix each.
fn host_routes(n: usize) -> Vec<api::Route> {
    let mut yaml = String::new();
    for i in 0..n {
        let (host, prefix) = (i / 4, PREFIXES[i % 4]);
        writeln!(
            yaml,
            "- name: r{i}\n  match: {{ hosts: [svc-{host}.example.com], path: {{ prefix: {prefix} }} }}\n  backends: [{{ name: b }}]"
        )
        .unwrap();
    }
    parse(&yaml)
}

/// `n` host-less prefix routes `/p0` .. `/p{n-1}`.
fn prefix_routes(n: usize) -> Vec<api::Route> {
    let mut yaml = String::new();
    for i in 0..n {
        writeln!(
            yaml,
            "- name: r{i}\n  match: {{ path: {{ prefix: /p{i} }} }}\n  backends: [{{ name: b }}]"
        )
        .unwrap();
    }
    parse(&yaml)
}

fn compile(routes: &[api::Route], b: &Arc<Backend>) -> Router {
    Router::compile(routes, |_| Some(b.clone())).unwrap()
}

/// 1,024 (host, path) pairs, each matching a route of [`host_routes`] drawn
/// uniformly.
fn host_requests(n: usize) -> Vec<(String, String)> {
    const PATHS: [&str; 4] = [
        "/api/v1/users/42",
        "/api/v2/orders",
        "/static/app.js",
        "/index.html",
    ];
    let mut rng = fastrand::Rng::with_seed(1);
    (0..1024)
        .map(|_| {
            let r = rng.usize(0..n);
            (
                format!("svc-{}.example.com", r / 4),
                PATHS[r % 4].to_string(),
            )
        })
        .collect()
}

fn bench_compile(c: &mut Criterion) {
    let b = backend();
    let mut g = c.benchmark_group("router/compile");
    for n in SIZES {
        let routes = host_routes(n);
        if n >= 10_000 {
            // Milliseconds per iteration: fewer, flat samples keep the run short.
            g.sample_size(10).sampling_mode(SamplingMode::Flat);
        }
        g.bench_with_input(BenchmarkId::new("hosts", n), &routes, |bench, routes| {
            bench.iter(|| compile(black_box(routes), &b))
        });
    }
    g.finish();
}

fn bench_find(c: &mut Criterion) {
    let b = backend();
    let get = Method::GET;
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("router/find");
    for n in SIZES {
        let router = compile(&host_routes(n), &b);
        let requests = host_requests(n);
        for (host, path) in &requests {
            assert!(
                router
                    .find(host, Port::default(), &get, path, &headers)
                    .is_some(),
                "{host}{path}"
            );
        }
        g.bench_function(BenchmarkId::new("hosts", n), |bench| {
            let mut i = 0;
            bench.iter(|| {
                let (host, path) = &requests[i & 1023];
                i += 1;
                black_box(
                    router
                        .find(
                            black_box(host),
                            Port::default(),
                            &get,
                            black_box(path),
                            &headers,
                        )
                        .is_some(),
                )
            })
        });
    }
    for n in SIZES {
        let router = compile(&prefix_routes(n), &b);
        let path = format!("/p{}/x", n - 1);
        let want = format!("r{}", n - 1);
        assert_eq!(
            router
                .find("any.host", Port::default(), &get, &path, &headers)
                .map(|r| &*r.name),
            Some(&*want)
        );
        g.bench_function(BenchmarkId::new("worst", n), |bench| {
            bench.iter(|| {
                black_box(
                    router
                        .find(
                            black_box("any.host"),
                            Port::default(),
                            &get,
                            black_box(&path),
                            &headers,
                        )
                        .is_some(),
                )
            })
        });
    }
    // Costs on top of the common case, at 100 routes.
    let router = compile(&host_routes(100), &b);
    g.bench_function("hosts-100/upper-case-host", |bench| {
        bench.iter(|| {
            black_box(router.find(
                black_box("SVC-7.Example.com"),
                Port::default(),
                &get,
                black_box("/static/a.js"),
                &headers,
            ))
        })
    });
    g.bench_function("hosts-100/unknown-host", |bench| {
        bench.iter(|| {
            black_box(router.find(
                black_box("nope.example.org"),
                Port::default(),
                &get,
                black_box("/"),
                &headers,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_compile, bench_find);
criterion_main!(benches);

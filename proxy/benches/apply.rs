//! Applying a control-plane snapshot of 10,000 services in the proxy: from
//! the received JSON line to the new config stored, on the subscriber's own
//! code path, then a check that traffic keeps flowing while it happens.
//!
//! Run: `cargo bench -p remora-proxy --bench apply -- --warm-up-time 1 --measurement-time 5`
//! (`-- traffic` runs only the traffic part; any other filter skips it.)
//!
//! The snapshot is what the control plane compiles for a workload that calls
//! every service: one listener, 10,000 routes (one per service, matching its
//! host; every 10th a 90/10 split with a timeout and retries), 10,000
//! backends of 10 endpoints each (100,000 endpoints; every 7th backend with
//! outlier detection, every 11th with a circuit breaker). No health checks:
//! the traffic part runs a real proxy, whose checker would probe 100,000
//! addresses nothing listens on. Two versions differ in `svc-0`'s route
//! timeout, so every apply is a real swap.
//!
//! | bench | what |
//! |---|---|
//! | `apply/10k/parse` | the line deserialized into a `SnapshotMsg` |
//! | `apply/10k/validate` | `remora_api::validate` of its config |
//! | `apply/10k/build+swap` | `swap_in_versioned` of an already validated config with the line's version: listener check, versioning, compiling the routers and backends against the running snapshot (unchanged backends kept whole, endpoint state kept), the store, and dropping the old snapshot |
//! | `apply/10k/build+swap/serialized` | the same with no version given (`swap_in`, as for a file): the version hashes the config serialized |
//! | `apply/10k/total` | line in, config stored: `control::decode` then `swap_in_versioned` with the line's version, what the subscriber runs (it runs both on blocking threads) |
//! | `apply/10k/delta` | a one-route change as a delta line: `control::decode_against` (parse, apply to a copy of the served config, validate the whole) then `swap_in_versioned`, what the subscriber runs for a delta |
//! | `apply/10k/unchanged` | the same, for a line whose version is already served |
//! | `apply/10k/first` | the first snapshot, nothing to reuse: every endpoint and its client built |
//! | `apply/10k/drop` | dropping a snapshot that owns its endpoints (as at shutdown, or when every endpoint changed) |
//! | `apply/10k/drop-replaced` | dropping a snapshot replaced by a newer one that kept its endpoints: done by whoever holds it last (the swap, or a request or background task still using it) |
//!
//! The traffic part (`apply/traffic.rs`) then runs the real proxy subscribed
//! to a stand-in control plane that pushes the two versions in turn, with
//! requests flowing through it, and prints how requests and a 1 ms ticker on
//! the proxy's runtime fared while snapshots were applied, and while the
//! same work ran outside the proxy (CPU contention alone).

#[path = "apply/traffic.rs"]
mod traffic;

use criterion::{BatchSize, Criterion, SamplingMode};
use remora_api::mesh::{DeltaMsg, SnapshotMsg};
use remora_api::{Config, Delta, RoutesDelta};
use remora_proxy::metrics::Metrics;
use remora_proxy::snapshot::control::{decode, decode_against};
use remora_proxy::snapshot::{compile, load_materials, swap_in, swap_in_versioned, Reload, Store};
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

const SERVICES: usize = 10_000;

/// The snapshot's config. `timeout` is `svc-0`'s route timeout in seconds
/// (what differs between two versions); with `real`, `svc-0` has that one
/// endpoint instead of ten made-up ones.
fn config(services: usize, timeout: u32, real: Option<SocketAddr>) -> Config {
    let mut y = String::with_capacity(services * 700);
    y.push_str("admin: { address: 127.0.0.1:0 }\n");
    y.push_str("listeners:\n  - name: outbound\n    address: 127.0.0.1:0\n    routes:\n");
    for i in 0..services {
        let name = format!("svc-{i}");
        writeln!(
            y,
            "      - name: {name}\n        match: {{ hosts: [{name}] }}"
        )
        .unwrap();
        if i % 10 == 1 && i + 1 < services {
            writeln!(
                y,
                "        backends: [{{ name: {name}, weight: 90 }}, {{ name: svc-{}, weight: 10 }}]\n        timeout: 5s\n        retry: {{ attempts: 2 }}",
                i + 1
            )
            .unwrap();
        } else {
            writeln!(y, "        backends: [{{ name: {name} }}]").unwrap();
        }
        if i == 0 {
            writeln!(y, "        timeout: {timeout}s").unwrap();
        }
    }
    y.push_str("backends:\n");
    for i in 0..services {
        writeln!(y, "  - name: svc-{i}\n    endpoints:").unwrap();
        match real {
            Some(addr) if i == 0 => writeln!(y, "      - address: {addr}").unwrap(),
            _ => {
                for e in 1..=10 {
                    writeln!(y, "      - address: 10.{}.{}.{e}:8080", i / 256, i % 256).unwrap();
                }
            }
        }
        if i % 7 == 0 {
            y.push_str("    outlier_detection: { consecutive_failures: 5 }\n");
        }
        if i % 11 == 0 {
            y.push_str("    circuit_breaker: { max_requests: 100 }\n");
        }
    }
    remora_api::parse_yaml(&y).unwrap_or_else(|p| panic!("invalid config: {:?}", &p[..1]))
}

/// The snapshot as the control plane sends it: compact JSON, one line.
fn line(config: Config) -> Vec<u8> {
    let msg = SnapshotMsg {
        version: format!("{:016x}", fastrand::u64(..)),
        config,
    };
    let mut v = serde_json::to_vec(&msg).unwrap();
    v.push(b'\n');
    v
}

/// The control plane's version of a line (its `version` field).
fn version_of(line: &[u8]) -> String {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    serde_json::from_slice::<SnapshotMsg>(body).unwrap().version
}

/// A store serving `config`, as after the first snapshot.
fn serving(config: Config, metrics: &Arc<Metrics>) -> Store {
    let materials = load_materials(&config).unwrap();
    let snap = compile(config, materials, None, metrics).unwrap();
    Arc::new(arc_swap::ArcSwap::from_pointee(snap))
}

/// This process's resident set size (`VmRSS`), in MB.
fn rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kb.unwrap_or(0) / 1024
}

/// Line in, config stored: the subscriber's path for every snapshot after
/// the first.
fn apply(store: &Store, metrics: &Arc<Metrics>, line: &[u8]) -> Reload {
    let decoded = decode(line.strip_suffix(b"\n").unwrap_or(line)).unwrap();
    let version = Some(decoded.version.as_str());
    swap_in_versioned(store, metrics, decoded.config.unwrap(), version).unwrap()
}

fn bench_apply(c: &mut Criterion) {
    let (a, b) = (config(SERVICES, 5, None), config(SERVICES, 4, None));
    let lines = [line(a.clone()), line(b.clone())];
    let endpoints: usize = a.backends.iter().map(|b| b.endpoints.len()).sum();
    println!(
        "\nsnapshot: {} routes, {} backends, {endpoints} endpoints, line {} bytes\n",
        a.listeners[0].routes.len(),
        a.backends.len(),
        lines[0].len()
    );
    let (metrics, before) = (Metrics::new(), rss_mb());
    let store = serving(a.clone(), &metrics);
    println!(
        "resident memory: {before} MB before the first snapshot, {} MB serving it\n",
        rss_mb()
    );
    let mut g = c.benchmark_group("apply/10k");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    let body = &lines[0][..lines[0].len() - 1];
    g.bench_function("parse", |bench| {
        bench.iter(|| serde_json::from_slice::<SnapshotMsg>(black_box(body)).unwrap())
    });
    g.bench_function("validate", |bench| {
        bench.iter(|| assert!(remora_api::validate(black_box(&a)).is_empty()))
    });
    let configs = [a.clone(), b.clone()];
    let versions = [version_of(&lines[0]), version_of(&lines[1])];
    // Every swap takes the other config than the one served: `i` counts
    // them across the benches below.
    let mut i = 0;
    g.bench_function("build+swap", |bench| {
        bench.iter_batched(
            || {
                i += 1;
                (configs[i % 2].clone(), &versions[i % 2])
            },
            |(config, version)| {
                assert!(matches!(
                    swap_in_versioned(&store, &metrics, config, Some(version)),
                    Ok(Reload::Applied(_))
                ))
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("build+swap/serialized", |bench| {
        bench.iter_batched(
            || {
                i += 1;
                configs[i % 2].clone()
            },
            |config| {
                assert!(matches!(
                    swap_in(&store, &metrics, config),
                    Ok(Reload::Applied(_))
                ))
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("total", |bench| {
        bench.iter(|| {
            i += 1;
            assert!(matches!(
                apply(&store, &metrics, &lines[i % 2]),
                Reload::Applied(_)
            ));
        })
    });
    // Deltas between the two versions: svc-0's route, as the control plane
    // sends a one-route change.
    let deltas: Vec<Vec<u8>> = (0..2)
        .map(|k| {
            let route = configs[k].listeners[0].routes[0].clone();
            let msg = DeltaMsg {
                version: versions[k].clone(),
                base: versions[1 - k].clone(),
                delta: Delta {
                    routes: [(
                        "outbound".to_string(),
                        RoutesDelta {
                            remove: Vec::new(),
                            upsert: vec![route],
                        },
                    )]
                    .into(),
                    ..Delta::default()
                },
            };
            serde_json::to_vec(&msg).unwrap()
        })
        .collect();
    g.bench_function("delta", |bench| {
        bench.iter(|| {
            i += 1;
            let k = i % 2;
            let served = store.load_full();
            let decoded = decode_against(&deltas[k], Some(&versions[1 - k]), &served.config);
            let decoded = decoded.unwrap();
            let config = decoded.config.unwrap();
            drop(served);
            let version = Some(decoded.version.as_str());
            assert!(matches!(
                swap_in_versioned(&store, &metrics, config, version),
                Ok(Reload::Applied(_))
            ));
        })
    });
    let now = &lines[i % 2];
    g.bench_function("unchanged", |bench| {
        bench.iter(|| assert_eq!(apply(&store, &metrics, now), Reload::Unchanged))
    });
    g.bench_function("first", |bench| {
        bench.iter_batched(
            || (a.clone(), Metrics::new()),
            |(config, fresh)| {
                let materials = load_materials(&config).unwrap();
                compile(config, materials, None, &fresh).unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("drop", |bench| {
        bench.iter_batched(
            || {
                let materials = load_materials(&a).unwrap();
                compile(a.clone(), materials, None, &metrics).unwrap()
            },
            drop,
            BatchSize::PerIteration,
        )
    });
    g.bench_function("drop-replaced", |bench| {
        bench.iter_batched(
            || {
                let old = compile(a.clone(), load_materials(&a).unwrap(), None, &metrics);
                let old = old.unwrap();
                let new = compile(b.clone(), load_materials(&b).unwrap(), Some(&old), &metrics);
                (old, new.unwrap())
            },
            |(old, new)| {
                drop(old);
                new
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// The benchmark filter given on the command line, if any (the first
/// argument that is neither an option nor an option's value).
fn filter() -> Option<String> {
    const WITH_VALUE: &[&str] = &[
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--profile-time",
        "--output-format",
        "--color",
        "--plotting-backend",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

fn main() {
    let filter = filter();
    let mut c = Criterion::default().configure_from_args();
    bench_apply(&mut c);
    c.final_summary();
    // `cargo test --benches` runs each bench once; the traffic part needs a
    // real run: with no filter, or the filter `traffic`.
    let testing = !std::env::args().any(|a| a == "--bench");
    if !testing && filter.as_deref().is_none_or(|f| f == "traffic") {
        traffic::run();
    }
}

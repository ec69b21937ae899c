//! The control plane's compile step at mesh scale: parsing the mesh YAML,
//! validating it, compiling every workload's snapshot, and the size of the
//! snapshot line each proxy is sent.
//!
//! Run: `cargo bench -p remora-control-plane --bench compile -- --warm-up-time 1 --measurement-time 3`
//!
//! Meshes of 100, 1,000 and 10,000 services with 10 endpoints each (see
//! `common/mod.rs` for the routes and policies some services carry) and two
//! workloads: `all` calls every service, `few` calls five. Before measuring,
//! it prints a table of the compiled snapshots and their sizes in bytes (the
//! compact JSON line as sent, newline included).
//!
//! | bench | what |
//! |---|---|
//! | `cp/parse/N` | `mesh::parse` of the YAML text: deserialize and validate, as a reload does |
//! | `cp/validate/N` | `mesh::validate` alone: the mesh rules, then the proxy's validation of one config that calls everything and of each workload's own part |
//! | `cp/compile/N` | `compile`: both workloads' whole snapshots, versions included |
//! | `cp/validate+compile/N` | both |
//! | `cp/publish/N` | `Generation::build` with nothing to reuse: every service compiled into its part, each workload's snapshot put together from the parts and versioned (what a reload hands the streams; no line encoded yet) |
//! | `cp/republish/N` | `Generation::build` after a one-service change (`svc-0`'s split), reusing the previous generation: what a reload after a small change does |
//! | `cp/encode/N` | both workloads' whole snapshot lines encoded (done once per version, when first sent whole) |
//! | `cp/delta/N` | the delta line for `all` after the one-service change (done per subscription) |

mod common;

use common::{mesh_yaml, two_workloads};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use remora_api::mesh::Mesh;
use remora_control_plane::source::Generation;
use remora_control_plane::{compile, mesh, ndjson};
use std::hint::black_box;
use tokio::time::Instant;

const SIZES: [usize; 3] = [100, 1_000, 10_000];

fn build(n: usize) -> (String, Mesh) {
    let text = mesh_yaml(n, &two_workloads(n), 90);
    let mesh = mesh::parse(&text).unwrap_or_else(|p| panic!("invalid mesh: {p:?}"));
    (text, mesh)
}

/// Prints what each mesh compiles to, and how big each snapshot line is.
fn print_sizes() {
    println!();
    println!("| services | mesh YAML bytes | workload | routes | backends | endpoints | snapshot line bytes |");
    println!("|---:|---:|---|---:|---:|---:|---:|");
    for n in SIZES {
        let (text, mesh) = build(n);
        for (workload, msg) in compile(&mesh) {
            let c = &msg.config;
            let endpoints: usize = c.backends.iter().map(|b| b.endpoints.len()).sum();
            println!(
                "| {n} | {} | {workload} | {} | {} | {endpoints} | {} |",
                text.len(),
                c.listeners[0].routes.len(),
                c.backends.len(),
                ndjson::line(&msg).len(),
            );
        }
    }
    println!();
}

fn bench_compile(c: &mut Criterion) {
    print_sizes();
    let mut g = c.benchmark_group("cp");
    for n in SIZES {
        let (text, mesh) = build(n);
        if n >= 1_000 {
            // Tens to hundreds of milliseconds an iteration: fewer, flat samples.
            g.sample_size(10).sampling_mode(SamplingMode::Flat);
        }
        g.bench_with_input(BenchmarkId::new("parse", n), &text, |b, text| {
            b.iter(|| mesh::parse(black_box(text)).is_ok())
        });
        g.bench_with_input(BenchmarkId::new("validate", n), &mesh, |b, mesh| {
            b.iter(|| mesh::validate(black_box(mesh)).len())
        });
        g.bench_with_input(BenchmarkId::new("compile", n), &mesh, |b, mesh| {
            b.iter(|| compile(black_box(mesh)))
        });
        g.bench_with_input(BenchmarkId::new("validate+compile", n), &mesh, |b, mesh| {
            b.iter(|| {
                assert!(mesh::validate(black_box(mesh)).is_empty());
                compile(mesh)
            })
        });
        g.bench_with_input(BenchmarkId::new("publish", n), &mesh, |b, mesh| {
            b.iter(|| Generation::build(black_box(mesh), None, Instant::now()))
        });
        let first = Generation::build(&mesh, None, Instant::now());
        let changed = mesh::parse(&mesh_yaml(n, &two_workloads(n), 60)).unwrap();
        g.bench_with_input(BenchmarkId::new("republish", n), &changed, |b, changed| {
            b.iter(|| Generation::build(black_box(changed), Some(&first), Instant::now()))
        });
        g.bench_with_input(BenchmarkId::new("encode", n), &mesh, |b, mesh| {
            b.iter_batched(
                || Generation::build(mesh, None, Instant::now()),
                |g| g.snapshots.values().map(|p| p.line().len()).sum::<usize>(),
                criterion::BatchSize::PerIteration,
            )
        });
        let second = Generation::build(&changed, Some(&first), Instant::now());
        let (was, now) = (&first.snapshots["all"], &second.snapshots["all"]);
        g.bench_function(BenchmarkId::new("delta", n), |b| {
            b.iter(|| now.delta_line(black_box(was)).unwrap().0.len())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_compile);
criterion_main!(benches);

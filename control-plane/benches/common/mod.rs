//! The synthetic meshes the control-plane benches share, written as mesh
//! YAML (so parsing is measured too, and the convergence bench can write it
//! to a file).
//!
//! Service `svc-{i}` has 10 endpoints `10.{i/256}.{i%256}.{1..=10}:8080`.
//! Some services carry routes and policies, like a real mesh would:
//!
//! | services | what they add |
//! |---|---|
//! | `i % 10 == 0` | one route `canary`: a 90/10 split with `svc-{i+1}`, a 5 s timeout, 2 attempts |
//! | `i % 25 == 5` | two routes: `v2` (path prefix `/v2`, 2 s timeout) and `default` |
//! | `i % 7 == 0` | outlier detection (5 failures in a row) |
//! | `i % 11 == 0` | a circuit breaker (100 requests in flight) |
//! | `i % 50 == 3` | an HTTP health check (`/healthz`) |
//!
//! The rest get the default route the compiler makes for a service without
//! routes. `svc-0`'s split is what [`mesh_yaml`]'s `split` changes.

use std::fmt::Write as _;

/// Endpoints per service.
pub const ENDPOINTS: usize = 10;

/// A workload of the mesh: its name and the services it calls (empty: all).
pub struct WorkloadSpec {
    pub name: String,
    pub calls: Vec<usize>,
}

/// Two workloads: `all` calls every service, `few` calls five.
#[allow(dead_code)] // the compile bench's; the convergence bench has its own
pub fn two_workloads(services: usize) -> Vec<WorkloadSpec> {
    vec![
        WorkloadSpec {
            name: "all".into(),
            calls: Vec::new(),
        },
        WorkloadSpec {
            name: "few".into(),
            calls: (0..5).map(|k| k * services / 5).collect(),
        },
    ]
}

/// The mesh YAML: `services` services and `workloads`; `split` is the
/// weight `svc-0`'s canary route gives `svc-0` (the rest goes to `svc-1`).
pub fn mesh_yaml(services: usize, workloads: &[WorkloadSpec], split: u32) -> String {
    let mut y = String::with_capacity(services * 600);
    y.push_str("services:\n");
    for i in 0..services {
        writeln!(y, "  - name: svc-{i}").unwrap();
        y.push_str("    endpoints:\n");
        for e in 1..=ENDPOINTS {
            writeln!(y, "      - address: 10.{}.{}.{e}:8080", i / 256, i % 256).unwrap();
        }
        if i % 10 == 0 && i + 1 < services {
            let weight = if i == 0 { split } else { 90 };
            writeln!(
                y,
                "    routes:\n      - name: canary\n        backends: [{{ name: svc-{i}, weight: {weight} }}, {{ name: svc-{}, weight: {} }}]\n        timeout: 5s\n        retry: {{ attempts: 2 }}",
                i + 1,
                100 - weight
            )
            .unwrap();
        } else if i % 25 == 5 {
            writeln!(
                y,
                "    routes:\n      - name: v2\n        match: {{ path: {{ prefix: /v2 }} }}\n        backends: [{{ name: svc-{i} }}]\n        timeout: 2s\n      - name: default\n        backends: [{{ name: svc-{i} }}]"
            )
            .unwrap();
        }
        if i % 7 == 0 {
            y.push_str("    outlier_detection: { consecutive_failures: 5 }\n");
        }
        if i % 11 == 0 {
            y.push_str("    circuit_breaker: { max_requests: 100 }\n");
        }
        if i % 50 == 3 {
            y.push_str("    health_check: { path: /healthz, interval: 5s }\n");
        }
    }
    y.push_str("workloads:\n");
    for (j, w) in workloads.iter().enumerate() {
        writeln!(
            y,
            "  - name: {}\n    outbound: 127.0.0.1:{}\n    admin: 127.0.0.1:{}",
            w.name,
            20_000 + j,
            40_000 + j
        )
        .unwrap();
        if !w.calls.is_empty() {
            let calls: Vec<String> = w.calls.iter().map(|c| format!("svc-{c}")).collect();
            writeln!(y, "    calls: [{}]", calls.join(", ")).unwrap();
        }
    }
    y
}

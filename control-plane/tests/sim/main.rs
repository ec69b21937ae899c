//! Deterministic simulation of the control plane and many proxies (see
//! docs/simulation.md): seeded runs of the real session, mesh-source and
//! subscriber code under partitions, delays, restarts of either side and,
//! for a third of the seeds, an adversary that reorders, duplicates and
//! corrupts deltas in flight. `REMORA_SIM_SEED=<n>` replays one seed;
//! `REMORA_SIM_SEEDS=<n>` runs seeds 0..n (default 64);
//! `REMORA_SIM_STEPS=<n>` sets the steps with faults per seed (default 200).
//! A failing seed is printed as `seed=<n>` with the tail of its step log.

mod cp;
mod meshes;
mod proxy;
mod world;

use tokio::time::Instant;

fn env(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v}: not a number"),
    }
}

type Counts = std::collections::BTreeMap<&'static str, u64>;

/// Runs one seed: its step log, the violations found, and what happened.
fn run(seed: u64, steps: u64) -> (Vec<String>, Vec<String>, Counts) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut w = world::World::new(seed);
        w.run(steps).await;
        (
            std::mem::take(&mut w.log),
            std::mem::take(&mut w.violations),
            std::mem::take(&mut w.counts),
        )
    })
}

fn report(seed: u64, log: &[String], violations: &[String]) -> String {
    let tail = &log[log.len().saturating_sub(40)..];
    format!(
        "seed={seed} failed:\n  {}\nlast steps:\n  {}\nreplay: REMORA_SIM_SEED={seed} cargo test -p remora-control-plane --test sim -- --nocapture",
        violations.join("\n  "),
        tail.join("\n  ")
    )
}

#[test]
fn simulated_proxies_converge_and_never_apply_a_bad_snapshot() {
    let steps = env("REMORA_SIM_STEPS").unwrap_or(200);
    let seeds: Vec<u64> = match env("REMORA_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("REMORA_SIM_SEEDS").unwrap_or(64)).collect(),
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut total = Counts::new();
    for (n, &seed) in seeds.iter().enumerate() {
        if n > 0 && n % 1000 == 0 {
            println!("{n} seeds in {:.1?}, failed: {failed:?}", started.elapsed());
        }
        let outcome = std::panic::catch_unwind(|| run(seed, steps));
        match outcome {
            Ok((log, violations, counts)) if violations.is_empty() => {
                if seeds.len() == 1 {
                    println!("{}", log.join("\n"));
                }
                for (k, n) in counts {
                    *total.entry(k).or_default() += n;
                }
            }
            Ok((log, violations, _)) => {
                if seeds.len() == 1 {
                    println!("{}", log.join("\n"));
                }
                eprintln!("{}", report(seed, &log, &violations));
                failed.push(seed);
            }
            Err(_) => {
                eprintln!("seed={seed} panicked (see above)");
                failed.push(seed);
            }
        }
    }
    let counts: Vec<String> = total.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "simulation: {} seeds x {steps} steps in {:.1?}, {} failed {:?}\n  {}",
        seeds.len(),
        started.elapsed(),
        failed.len(),
        failed,
        counts.join(", ")
    );
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

#[test]
fn one_seed_gives_one_trace() {
    let (a, va, _) = run(7, 120);
    let (b, vb, _) = run(7, 120);
    assert!(a.len() > 50, "a run takes steps: {a:?}");
    assert_eq!(a, b);
    assert_eq!(va, vb);
    let (c, _, _) = run(8, 120);
    assert_ne!(a, c, "another seed, another run");
}

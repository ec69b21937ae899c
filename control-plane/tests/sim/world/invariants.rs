//! The invariants checked after every step, and the end: heal every
//! fault, run until nothing is left to do, and check that every proxy
//! serves its workload's latest version.

use super::*;

/// Steps the healed world may take to settle, at most.
const SETTLE: u64 = 20_000;

impl World {
    /// The invariants that hold after every step.
    pub(super) fn check(&mut self) {
        let mut found = Vec::new();
        for p in &self.proxies {
            let snap = p.store.load();
            if p.ready && snap.version.is_empty() {
                found.push(format!("{} is ready and serves nothing", p.name));
            }
            let Some((version, _)) = &p.serving else {
                if p.ready && p.sub.version().is_some() {
                    found.push(format!(
                        "{} serves a version the simulation lost track of",
                        p.name
                    ));
                }
                continue;
            };
            if !p.ready {
                found.push(format!("{} applied {version} but is not ready", p.name));
            }
            match self.published.get(&(p.workload.clone(), version.clone())) {
                Some(expected) => {
                    let mut expected = expected.clone();
                    expected.admin.address = p.admin;
                    if canonical(&snap.config) != canonical(&expected) {
                        found.push(format!(
                            "{} serves a config that is not version {version}'s",
                            p.name
                        ));
                    }
                }
                None => found.push(format!("{} serves {version}, never published", p.name)),
            }
            if !remora_api::validate(&snap.config).is_empty() {
                found.push(format!("{} serves an invalid config", p.name));
            }
        }
        for f in found {
            self.violation(f);
        }
    }

    /// Heals every fault, runs until nothing is left to do, and checks
    /// that every proxy serves its workload's latest version.
    pub(super) async fn settle(&mut self) {
        self.faults = false;
        self.note("heal: no more faults or mesh changes");
        for p in &mut self.proxies {
            p.isolated_until = 0;
        }
        if !self.file.1 {
            // The operator fixes the file.
            let last = self.history.last().cloned().expect("a mesh");
            if let Some(cp) = &self.cp {
                cp.offer(&last);
            }
            self.file = (last, true);
        }
        for _ in 0..SETTLE {
            let Some(ev) = self.pick() else { break };
            self.step += 1;
            self.apply(ev).await;
            self.check();
            if !self.violations.is_empty() {
                return;
            }
        }
        if self.pick().is_some() {
            self.violation(format!("still busy after {SETTLE} steps"));
            return;
        }
        let Some(cp) = &self.cp else {
            self.violation("the control plane is down after healing".into());
            return;
        };
        let generation = cp.current();
        let mut found = Vec::new();
        for p in &self.proxies {
            let latest = generation
                .snapshots
                .get(&p.workload)
                .map(|s| s.version.clone());
            let serving = p.serving.as_ref().map(|s| s.0.clone());
            if latest != serving || !p.ready {
                found.push(format!(
                    "{} serves {serving:?} (ready: {}), latest is {latest:?}",
                    p.name, p.ready
                ));
            }
        }
        let states = cp.proxies.list();
        if states.len() != self.proxies.len() {
            found.push(format!(
                "the control plane lists {} proxies, not {}",
                states.len(),
                self.proxies.len()
            ));
        }
        for s in states {
            let latest = generation
                .snapshots
                .get(&s.workload)
                .map(|p| p.version.clone());
            if s.applied != latest {
                found.push(format!(
                    "the control plane says conn {} applied {:?}, latest is {latest:?}",
                    s.id, s.applied
                ));
            }
        }
        for f in found {
            self.violation(f);
        }
        let versions: Vec<String> = generation
            .snapshots
            .iter()
            .map(|(w, p)| format!("{w}={}", p.version))
            .collect();
        self.note(format!("settled: {}", versions.join(" ")));
    }
}

/// A config in the order a delta keeps: a delta puts a new service's
/// routes after the others and new backends at the end (see
/// `api/src/delta.rs`), so the routes are compared grouped by their hosts
/// (one service's, in their order) and the backends by name.
fn canonical(config: &Config) -> Config {
    let mut c = config.clone();
    for l in &mut c.listeners {
        l.routes
            .sort_by(|a, b| a.matches.hosts.cmp(&b.matches.hosts));
    }
    c.backends.sort_by(|a, b| a.name.cmp(&b.name));
    c
}

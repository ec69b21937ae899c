//! Validation, object by object: the draft mesh goes through the control
//! plane's own check, and each problem takes out the smallest part it is
//! in (a route, an endpoint, a service, a workload), reported with the
//! object behind that part. Removing a service can leave routes that name
//! it, so the check runs again, a bounded number of times.
//!
//! Why not reject the whole mesh, as for a file: in a cluster, many teams
//! write objects, and one bad HTTPRoute must not freeze every other
//! change (endpoints above all) for everyone. Why not keep the last good
//! version of the bad object: a replica that started later never saw it,
//! and replicas must agree. So the bad part is left out, and said so.

use super::{Draft, ObjectProblem, Translation};
use remora_api::mesh::Mesh;
use remora_api::Problem;
use std::collections::BTreeSet;

/// Rounds of check-and-remove before giving up (each round removes at
/// least one part, and removals cascade only through route backends).
const ROUNDS: usize = 8;

pub fn prune(mut draft: Draft, check: impl Fn(&Mesh) -> Vec<Problem>) -> Translation {
    let mut problems = std::mem::take(&mut draft.problems);
    for _ in 0..ROUNDS {
        let found = check(&draft.mesh);
        if found.is_empty() {
            return done(draft.mesh, problems, Vec::new());
        }
        let mut cut = Cut::default();
        let mut fatal = Vec::new();
        for p in found {
            match part(&p.path) {
                Some(Part::Route(s, r)) if s < draft.routes.len() && r < draft.routes[s].len() => {
                    problems.push(draft.routes[s][r].problem(format!("{}: {}", p.path, p.message)));
                    cut.routes.insert((s, r));
                }
                Some(Part::Endpoint(s, e)) if s < draft.services.len() => {
                    problems.push(draft.services[s].problem(format!("{}: {}", p.path, p.message)));
                    cut.endpoints.insert((s, e));
                }
                Some(Part::Service(s)) if s < draft.services.len() => {
                    problems.push(draft.services[s].problem(format!("{}: {}", p.path, p.message)));
                    cut.services.insert(s);
                }
                Some(Part::Workload(w)) if w < draft.workloads.len() => {
                    problems.push(draft.workloads[w].problem(format!("{}: {}", p.path, p.message)));
                    cut.workloads.insert(w);
                }
                _ => fatal.push(p),
            }
        }
        if !fatal.is_empty() {
            return done(draft.mesh, problems, fatal);
        }
        cut.apply(&mut draft);
    }
    let fatal = check(&draft.mesh);
    done(draft.mesh, problems, fatal)
}

fn done(mesh: Mesh, mut problems: Vec<ObjectProblem>, fatal: Vec<Problem>) -> Translation {
    problems.sort();
    problems.dedup();
    Translation {
        mesh,
        problems,
        fatal,
    }
}

#[derive(Debug, PartialEq)]
enum Part {
    Service(usize),
    Route(usize, usize),
    Endpoint(usize, usize),
    Workload(usize),
}

/// The part of the mesh a problem path is in.
fn part(path: &str) -> Option<Part> {
    let index = |s: &str, prefix: &str| -> Option<(usize, String)> {
        let rest = s.strip_prefix(prefix)?;
        let (n, rest) = rest.split_once(']')?;
        Some((n.parse().ok()?, rest.to_string()))
    };
    if let Some((w, _)) = index(path, "workloads[") {
        return Some(Part::Workload(w));
    }
    let (s, rest) = index(path, "services[")?;
    if let Some((r, _)) = index(&rest, ".routes[") {
        return Some(Part::Route(s, r));
    }
    if let Some((e, _)) = index(&rest, ".endpoints[") {
        return Some(Part::Endpoint(s, e));
    }
    Some(Part::Service(s))
}

#[derive(Default)]
struct Cut {
    services: BTreeSet<usize>,
    routes: BTreeSet<(usize, usize)>,
    endpoints: BTreeSet<(usize, usize)>,
    workloads: BTreeSet<usize>,
}

impl Cut {
    fn apply(self, d: &mut Draft) {
        for (si, s) in d.mesh.services.iter_mut().enumerate() {
            let mut ri = 0;
            let objs = &mut d.routes[si];
            let mut keep_objs = Vec::new();
            s.routes.retain(|_| {
                let keep = !self.routes.contains(&(si, ri));
                if keep {
                    keep_objs.push(objs[ri].clone());
                }
                ri += 1;
                keep
            });
            *objs = keep_objs;
            let mut ei = 0;
            s.endpoints.retain(|_| {
                ei += 1;
                !self.endpoints.contains(&(si, ei - 1))
            });
        }
        retain_indexed(&mut d.mesh.services, &self.services);
        retain_indexed(&mut d.services, &self.services);
        retain_indexed(&mut d.routes, &self.services);
        retain_indexed(&mut d.mesh.workloads, &self.workloads);
        retain_indexed(&mut d.workloads, &self.workloads);
    }
}

fn retain_indexed<T>(v: &mut Vec<T>, cut: &BTreeSet<usize>) {
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        !cut.contains(&(i - 1))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_paths_name_the_smallest_part() {
        for (path, want) in [
            ("services[2].routes[1].match.path", Some(Part::Route(2, 1))),
            (
                "services[2].endpoints[0].address",
                Some(Part::Endpoint(2, 0)),
            ),
            ("services[3].aliases[1]", Some(Part::Service(3))),
            ("services[3]", Some(Part::Service(3))),
            ("workloads[0].inbound", Some(Part::Workload(0))),
            ("trust_domain", None),
        ] {
            assert_eq!(part(path), want, "{path}");
        }
    }
}

//! The meshes the simulation offers the control plane: a small starting
//! mesh, then seeded mutations of the one served. Valid mutations change
//! what workloads see (endpoints, route timeouts and retries, splits,
//! services added and removed, a workload's calls, access logs) or go back
//! to an earlier mesh (a revert: versions recur). Invalid ones break a mesh
//! rule; the control plane must reject them and keep serving the last good
//! mesh. Listener addresses never change: a proxy refuses that without a
//! restart, by design (see ARCHITECTURE.md, "Departures").

use fastrand::Rng;
use remora_api::mesh::{Mesh, Service};

/// The first mesh: `services` services (`s0`…), `workloads` workloads
/// (`w0`…) each calling a few of them.
pub fn initial(rng: &mut Rng, services: usize, workloads: usize) -> Mesh {
    let mut yaml = String::from("trust_domain: sim.local\nservices:\n");
    for i in 0..services {
        yaml.push_str(&format!(
            "  - name: s{i}\n    endpoints: [{{ address: 127.0.0.1:{} }}]\n",
            7000 + i
        ));
    }
    yaml.push_str("workloads:\n");
    for i in 0..workloads {
        let calls: Vec<String> = (0..services)
            .filter(|_| rng.u8(..3) == 0)
            .map(|s| format!("s{s}"))
            .collect();
        yaml.push_str(&format!(
            "  - name: w{i}\n    outbound: 127.0.0.1:{}\n    calls: [{}]\n",
            4100 + i,
            calls.join(", ")
        ));
    }
    remora_control_plane::mesh::parse_for(&yaml, false).expect("the initial mesh is valid")
}

/// What a mutation meant to do: `Valid` ones may still be refused (the
/// control plane is the judge), `Invalid` ones must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    Valid,
    Invalid,
}

/// A mutation of `mesh` (or an earlier mesh from `history`), with a short
/// description for the step log.
pub fn mutate(rng: &mut Rng, mesh: &Mesh, history: &[Mesh]) -> (Mesh, Intent, String) {
    let mut m = mesh.clone();
    let n = m.services.len();
    let pick = |rng: &mut Rng| rng.usize(..n.max(1));
    let what = match rng.u8(..13) {
        0 | 1 if n > 0 => {
            let s = pick(rng);
            let port = 7000 + rng.u16(..2000);
            m.services[s].endpoints[0].address.set_port(port);
            format!("move {} to port {port}", m.services[s].name)
        }
        2 if n > 0 => {
            let s = pick(rng);
            let mut e = m.services[s].endpoints[0].clone();
            e.address.set_port(9000 + rng.u16(..1000));
            m.services[s].endpoints.push(e);
            format!("add an endpoint to {}", m.services[s].name)
        }
        3 if n > 0 => {
            let s = pick(rng);
            let svc = &mut m.services[s];
            if svc.endpoints.len() > 1 {
                svc.endpoints.pop();
            }
            format!("drop an endpoint of {}", svc.name)
        }
        4 | 5 if n > 1 => {
            // A route splitting the service with another one.
            let (s, t) = (pick(rng), pick(rng));
            let (name, other) = (m.services[s].name.clone(), m.services[t].name.clone());
            let timeout = 1 + rng.u8(..9);
            let yaml = format!(
                "name: main\nbackends: [{{ name: {name}, weight: 90 }}, {{ name: {other}, weight: 10 }}]\ntimeout: {timeout}s\n"
            );
            let route = serde_yaml_ng::from_str(&yaml).expect("a route");
            m.services[s].routes = vec![route];
            format!("route {name} 90/10 with {other}, timeout {timeout}s")
        }
        6 if n > 0 => {
            let s = pick(rng);
            let svc = &mut m.services[s];
            svc.routes.clear();
            format!("drop the routes of {}", svc.name)
        }
        7 => {
            let name = format!("s{}", 100 + rng.u16(..900));
            if m.services.iter().any(|s| s.name == name) {
                return mutate(rng, mesh, history);
            }
            let mut svc: Service = m.services[0].clone();
            svc.name = name.clone();
            svc.routes.clear();
            svc.endpoints.truncate(1);
            svc.endpoints[0].address.set_port(8000 + rng.u16(..1000));
            m.services.push(svc);
            format!("add service {name}")
        }
        8 if n > 1 => {
            // Only a service nothing names can go (else it is invalid).
            let s = pick(rng);
            let name = m.services[s].name.clone();
            let named = m.services.iter().any(|o| {
                o.routes
                    .iter()
                    .any(|r| r.backends.iter().any(|b| b.name == name))
            }) || m.workloads.iter().any(|w| w.calls.contains(&name));
            if named {
                return mutate(rng, mesh, history);
            }
            m.services.remove(s);
            format!("remove service {name}")
        }
        9 if !m.workloads.is_empty() => {
            let w = rng.usize(..m.workloads.len());
            let calls = m
                .services
                .iter()
                .filter(|_| rng.u8(..3) == 0)
                .map(|s| s.name.clone())
                .collect();
            m.workloads[w].calls = calls;
            format!("{} calls {:?}", m.workloads[w].name, m.workloads[w].calls)
        }
        10 if !m.workloads.is_empty() => {
            let w = rng.usize(..m.workloads.len());
            m.workloads[w].access_log = !m.workloads[w].access_log;
            format!("toggle the access log of {}", m.workloads[w].name)
        }
        11 if !history.is_empty() => {
            let back = rng.usize(..history.len());
            m = history[back].clone();
            format!("revert to mesh #{back}")
        }
        _ => return invalid(rng, m),
    };
    (m, Intent::Valid, what)
}

/// A mesh that breaks a rule.
fn invalid(rng: &mut Rng, mut m: Mesh) -> (Mesh, Intent, String) {
    let what = match rng.u8(..4) {
        0 if !m.services.is_empty() => {
            let dup = m.services[0].clone();
            m.services.push(dup);
            "a duplicate service".to_string()
        }
        1 if !m.workloads.is_empty() => {
            m.workloads[0].calls.push("nowhere".into());
            "a workload calling an unknown service".to_string()
        }
        2 if !m.services.is_empty() => {
            let yaml = "name: main\nbackends: [{ name: missing }]\n";
            m.services[0].routes = vec![serde_yaml_ng::from_str(yaml).expect("a route")];
            "a route to an unknown service".to_string()
        }
        _ => {
            m.trust_domain = "Not A Domain".into();
            "a bad trust domain".to_string()
        }
    };
    (m, Intent::Invalid, format!("INVALID: {what}"))
}

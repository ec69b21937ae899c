//! `delta`: snapshot deltas applied to the config a proxy serves
//! (`remora_api::Delta::apply`, and the proxy's whole line decoder
//! `remora_proxy::snapshot::control::decode_against`).
//!
//! Input: byte 0 even, the rest is a line of the snapshot stream (JSON: a
//! delta or a whole snapshot); odd, the rest builds a delta of small names
//! (so that they collide with the base config's) with `arbitrary`.
//! Invariants: no panic and no endless loop; `apply` does exactly what
//! `delta.rs` documents — compared with a plain model of it here: the same
//! refusals, and on success the same config; the proxy's decoder gives a
//! config only when it validates.

use arbitrary::{Arbitrary, Unstructured};
use remora_api::{parse_yaml, Backend, Config, Delta, Route, RoutesDelta};
use remora_proxy::snapshot::control::decode_against;
use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

/// The config served: two listeners, routes `r0`..`r3`, backends `b0`..`b2`.
const BASE: &str = "
listeners:
  - name: out
    address: 127.0.0.1:1
    routes:
      - {name: r0, match: {hosts: [a]}, backends: [{name: b0}]}
      - {name: r1, match: {hosts: [b], path: {prefix: /v1}}, backends: [{name: b1, weight: 3}, {name: b2}]}
      - {name: r2, match: {hosts: ['*.c']}, direct_response: {status: 204}}
  - name: in
    address: 127.0.0.1:2
    routes:
      - {name: r3, backends: [{name: b2}]}
backends:
  - {name: b0, endpoints: [{address: 127.0.0.1:10}]}
  - {name: b1, endpoints: [{address: 127.0.0.1:11}], balancer: round_robin}
  - {name: b2, endpoints: [{address: 127.0.0.1:12}, {address: 127.0.0.1:13}]}
";

/// The version `BASE` is served as.
const VERSION: &str = "v1";

fn base() -> &'static Config {
    static BASE_CONFIG: OnceLock<Config> = OnceLock::new();
    BASE_CONFIG.get_or_init(|| parse_yaml(BASE).expect("the base config is valid"))
}

pub fn run(data: &[u8]) {
    let [mode, rest @ ..] = data else {
        return;
    };
    if mode % 2 == 0 {
        line(rest);
    } else if let Ok(delta) = Small::arbitrary_take_rest(Unstructured::new(rest)) {
        check_apply(&delta.build());
    }
}

/// A stream line through the proxy's decoder, and its delta (if it is one
/// from the version served) through the model.
fn line(line: &[u8]) {
    let Ok(decoded) = decode_against(line, Some(VERSION), base()) else {
        return;
    };
    if let Ok(config) = &decoded.config {
        let problems = remora_api::validate(config);
        assert!(problems.is_empty(), "decoded, yet invalid: {problems:?}");
    }
    #[derive(serde::Deserialize)]
    struct DeltaLine {
        base: String,
        delta: Delta,
    }
    if let Ok(d) = serde_json::from_slice::<DeltaLine>(line) {
        if d.base == VERSION {
            check_apply(&d.delta);
        }
    }
}

/// `apply` against the model.
fn check_apply(delta: &Delta) {
    let mut got = base().clone();
    let result = delta.apply(&mut got);
    let mut want = base().clone();
    let model = model_apply(delta, &mut want);
    match (result, model) {
        (Ok(()), Ok(())) => assert_eq!(got, want, "applied otherwise than documented"),
        (Err(e), Err(())) => assert!(!e.is_empty()),
        (r, m) => panic!("apply says {r:?}, the model {m:?}, for {delta:?}"),
    }
    // Whatever came out, validating it is safe.
    let _ = remora_api::validate(&got);
}

/// `Delta::apply` as its docs say, slowly. `Err` when it must be refused.
fn model_apply(delta: &Delta, config: &mut Config) -> Result<(), ()> {
    let mut ok = true;
    for (name, change) in &delta.routes {
        match config.listeners.iter_mut().find(|l| l.name == *name) {
            Some(l) => ok &= model_routes(change, &mut l.routes),
            None => ok = false,
        }
    }
    for r in &delta.remove_backends {
        ok &= config.backends.iter().any(|b| b.name == *r);
    }
    config
        .backends
        .retain(|b| !delta.remove_backends.contains(&b.name));
    for b in &delta.backends {
        match config.backends.iter_mut().find(|x| x.name == b.name) {
            Some(x) => *x = b.clone(),
            None => config.backends.push(b.clone()),
        }
    }
    ok.then_some(()).ok_or(())
}

fn model_routes(change: &RoutesDelta, routes: &mut Vec<Route>) -> bool {
    if !change
        .remove
        .iter()
        .all(|r| routes.iter().any(|x| x.name == *r))
    {
        return false;
    }
    routes.retain(|r| !change.remove.contains(&r.name));
    // A route named twice in one upsert list is refused: its place is
    // ambiguous.
    let mut seen = HashSet::new();
    if !change.upsert.iter().all(|r| seen.insert(r.name.as_str())) {
        return false;
    }
    let existing: HashSet<String> = routes.iter().map(|r| r.name.clone()).collect();
    let mut previous: Option<&str> = None;
    for r in &change.upsert {
        let at = |routes: &Vec<Route>, name: &str| routes.iter().position(|x| x.name == name);
        if existing.contains(&r.name) {
            let i = at(routes, &r.name).expect("an existing route");
            routes[i] = r.clone();
        } else {
            match previous.and_then(|p| at(routes, p)) {
                Some(i) => routes.insert(i + 1, r.clone()),
                None => routes.push(r.clone()),
            }
        }
        previous = Some(r.name.as_str());
    }
    true
}

/// A delta over few names.
#[derive(Debug, Arbitrary)]
struct Small {
    routes: Vec<Change>,
    remove_backends: Vec<BackendName>,
    backends: Vec<(BackendName, u8)>,
}

/// One listener's route changes: names removed, names upserted (each a
/// copy of a template route).
#[derive(Debug, Arbitrary)]
struct Change(Listener, Vec<Name>, Vec<(Name, Template)>);

#[derive(Debug, Arbitrary)]
enum Listener {
    Out,
    In,
    Nope,
}

/// `r0`..`r5`: `r0`..`r3` exist.
#[derive(Debug, Arbitrary)]
struct Name(u8);

/// Which base route a new one is a copy of (renamed).
#[derive(Debug, Arbitrary)]
struct Template(u8);

/// `b0`..`b4`: `b0`..`b2` exist.
#[derive(Debug, Arbitrary)]
struct BackendName(u8);

impl Small {
    fn build(&self) -> Delta {
        let base = base();
        let templates: Vec<&Route> = base.listeners.iter().flat_map(|l| &l.routes).collect();
        let mut routes = BTreeMap::new();
        for Change(listener, remove, upsert) in &self.routes {
            let name = match listener {
                Listener::Out => "out",
                Listener::In => "in",
                Listener::Nope => "nope",
            };
            let change: &mut RoutesDelta = routes.entry(name.to_string()).or_default();
            change
                .remove
                .extend(remove.iter().map(|n| format!("r{}", n.0 % 6)));
            change.upsert.extend(upsert.iter().map(|(n, t)| {
                let mut r = templates[t.0 as usize % templates.len()].clone();
                r.name = format!("r{}", n.0 % 6);
                r
            }));
        }
        let backend = |n: &BackendName| format!("b{}", n.0 % 5);
        Delta {
            routes,
            remove_backends: self.remove_backends.iter().map(backend).collect(),
            backends: self
                .backends
                .iter()
                .map(|(n, t)| {
                    let mut b: Backend = base.backends[*t as usize % base.backends.len()].clone();
                    b.name = backend(n);
                    b
                })
                .collect(),
        }
    }
}

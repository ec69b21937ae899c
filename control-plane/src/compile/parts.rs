//! Large meshes: each service compiled once into a [`ServicePart`] that
//! every caller shares (and the next reload reuses if the service did not
//! change); a [`WorkloadSnapshot`] is the workload's own part plus shared
//! parts, versioned from their hashes; [`WorkloadSnapshot::delta_from`] says
//! what changed between two of them.

use super::{backend, fnv1a64, index, own_config, routes_of, OUTBOUND};
use remora_api::mesh::{Mesh, Service, Workload};
use remora_api::{Backend, Config, Delta, IdentityConfig, Route, RoutesDelta};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// One service compiled, once per change of the service, and shared by
/// every workload that calls it (or reaches it through a split): its routes
/// as a caller's outbound listener has them, and its backend.
#[derive(Debug)]
pub struct ServicePart {
    /// The service (endpoint `workload`s resolved) it was compiled from: an
    /// equal service on the next reload reuses the part.
    source: Service,
    pub(crate) routes: Vec<Route>,
    /// The services its routes send to, sorted, without duplicates.
    reaches: Vec<String>,
    pub(crate) backend: Backend,
    /// The routes' compact JSON without the brackets (elements joined by
    /// commas), and the backend's: a whole line is put together from these.
    routes_json: Vec<u8>,
    backend_json: Vec<u8>,
    /// FNV-1a 64 of the routes' and of the backend's compact JSON.
    routes_hash: u64,
    backend_hash: u64,
}

/// Every service's part, by service name.
pub type Parts = BTreeMap<String, Arc<ServicePart>>;

/// Compiles every service of a resolved mesh (see [`resolve`]) into its
/// part; a service equal to the one a part of `prev` came from keeps that
/// part, so a reload compiles (and hashes) only the services that changed.
pub fn compile_parts(mesh: &Mesh, prev: Option<&Parts>) -> Parts {
    index(mesh)
        .into_iter()
        .map(|(name, (_, s))| {
            let kept = prev
                .and_then(|p| p.get(name))
                .filter(|p| p.source == *s)
                .cloned();
            (name.to_string(), kept.unwrap_or_else(|| Arc::new(part(s))))
        })
        .collect()
}

fn part(s: &Service) -> ServicePart {
    let routes = routes_of(s);
    let reaches: BTreeSet<&str> = routes
        .iter()
        .flat_map(|r| r.backends.iter().map(|b| b.name.as_str()))
        .collect();
    let backend = backend(s);
    let routes_array = json(&routes);
    let backend_json = json(&backend);
    ServicePart {
        source: s.clone(),
        reaches: reaches.into_iter().map(str::to_string).collect(),
        routes_hash: fnv1a64(&routes_array),
        backend_hash: fnv1a64(&backend_json),
        // `[...]` → `...`
        routes_json: routes_array[1..routes_array.len() - 1].to_vec(),
        backend_json,
        routes,
        backend,
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("config types serialize")
}

/// What a set of callers shares: the parts whose routes it has and the
/// parts whose backends it has, both sorted by service name.
#[derive(Debug)]
pub struct Outbound {
    pub(crate) routes: Vec<Arc<ServicePart>>,
    pub(crate) backends: Vec<Arc<ServicePart>>,
    hash: u64,
    /// The routes' and the backends' JSON elements, joined once when a
    /// workload with this outbound side is first sent whole, and shared.
    json: std::sync::OnceLock<(Vec<u8>, Vec<u8>)>,
}

/// Outbound sides already built in this compile, by the sorted list of
/// services called (empty: every service). A hundred workloads that call the
/// same services share one.
#[derive(Default)]
pub struct Shared(HashMap<Vec<String>, Arc<Outbound>>);

/// One workload's snapshot: its own part (admin, listeners without the
/// outbound routes, the app's backend, identity) and the shared outbound
/// side. The whole config is put together only when it is sent whole.
#[derive(Debug)]
pub struct WorkloadSnapshot {
    /// FNV-1a 64 of the own part's compact JSON and the outbound side's
    /// parts' hashes, as 16 hex digits: the same content has the same
    /// version.
    pub version: String,
    own: Config,
    /// The own part's compact JSON with no backends (`"backends":[]`), and
    /// the app's backend's JSON (empty without one): where the whole line
    /// starts from.
    own_json: Vec<u8>,
    app_json: Vec<u8>,
    own_hash: u64,
    pub(crate) outbound: Arc<Outbound>,
}

/// The snapshot of workload `w`, from `parts`.
pub fn workload_snapshot(
    parts: &Parts,
    w: &Workload,
    trust_roots: &[String],
    shared: &mut Shared,
) -> WorkloadSnapshot {
    let mut own = own_config(w);
    if !trust_roots.is_empty() {
        own.identity = Some(IdentityConfig {
            trust_roots: trust_roots.to_vec(),
            ..IdentityConfig::default()
        });
    }
    let mut calls: Vec<String> = w
        .calls
        .iter()
        .filter(|c| parts.contains_key(c.as_str()))
        .cloned()
        .collect();
    calls.sort_unstable();
    calls.dedup();
    if w.calls.is_empty() {
        calls.clear();
    } else if calls.is_empty() {
        // Calls only services that do not exist: validation says so; an
        // empty call list must not mean "everything".
        calls.push(String::new());
    }
    let outbound = shared
        .0
        .entry(calls)
        .or_insert_with_key(|calls| Arc::new(outbound(parts, w.calls.is_empty(), calls)))
        .clone();
    let mut bare = own.clone();
    let app = std::mem::take(&mut bare.backends);
    let own_json = json(&bare);
    let app_json = app.first().map(json).unwrap_or_default();
    let own_hash = fnv1a64(&[&own_json[..], &app_json[..]].concat());
    let mut bytes = own_hash.to_le_bytes().to_vec();
    bytes.extend_from_slice(&outbound.hash.to_le_bytes());
    WorkloadSnapshot {
        version: format!("{:016x}", fnv1a64(&bytes)),
        own,
        own_json,
        app_json,
        own_hash,
        outbound,
    }
}

fn outbound(parts: &Parts, everything: bool, calls: &[String]) -> Outbound {
    let routes: Vec<Arc<ServicePart>> = if everything {
        parts.values().cloned().collect()
    } else {
        calls.iter().filter_map(|c| parts.get(c).cloned()).collect()
    };
    let reached: BTreeSet<&str> = routes
        .iter()
        .flat_map(|p| p.reaches.iter().map(String::as_str))
        .collect();
    let backends: Vec<Arc<ServicePart>> = reached
        .into_iter()
        .filter_map(|name| parts.get(name).cloned())
        .collect();
    let mut bytes = Vec::with_capacity((routes.len() + backends.len()) * 8 + 8);
    for p in &routes {
        bytes.extend_from_slice(&p.routes_hash.to_le_bytes());
    }
    // Where the routes end and the backends begin.
    bytes.extend_from_slice(&(routes.len() as u64).to_le_bytes());
    for p in &backends {
        bytes.extend_from_slice(&p.backend_hash.to_le_bytes());
    }
    Outbound {
        hash: fnv1a64(&bytes),
        routes,
        backends,
        json: std::sync::OnceLock::new(),
    }
}

impl Outbound {
    /// The routes' JSON elements and the backends', each joined by commas.
    fn json(&self) -> &(Vec<u8>, Vec<u8>) {
        self.json.get_or_init(|| {
            let join = |items: &mut dyn Iterator<Item = &[u8]>| {
                let mut out = Vec::new();
                for item in items.filter(|i| !i.is_empty()) {
                    if !out.is_empty() {
                        out.push(b',');
                    }
                    out.extend_from_slice(item);
                }
                out
            };
            let routes = join(&mut self.routes.iter().map(|p| &p.routes_json[..]));
            let backends = join(&mut self.backends.iter().map(|p| &p.backend_json[..]));
            (routes, backends)
        })
    }
}

impl WorkloadSnapshot {
    /// The whole snapshot as it is sent: a `SnapshotMsg` of [`Self::config`]
    /// as compact JSON and a newline, byte for byte, put together from the
    /// own part's JSON and the outbound side's (joined once, shared by every
    /// workload with the same calls) rather than by building and encoding
    /// the config.
    pub fn line(&self) -> Vec<u8> {
        let (routes, backends) = self.outbound.json();
        let own = &self.own_json;
        // The first `"routes":[]` is the outbound listener's (listeners
        // come before backends, `outbound` first, and a JSON string cannot
        // hold an unescaped quote); the only `"backends":[]` is the top-level
        // one (the inbound listener's route has a backend).
        let at_routes = find(own, br#""routes":[]"#).expect("the outbound listener has no routes");
        let at_backends = find(own, br#""backends":[]"#).expect("the own part has no backends");
        let mut line = Vec::with_capacity(own.len() + routes.len() + backends.len() + 64);
        line.extend_from_slice(br#"{"version":""#);
        line.extend_from_slice(self.version.as_bytes());
        line.extend_from_slice(br#"","config":"#);
        line.extend_from_slice(&own[..at_routes + 10]);
        line.extend_from_slice(routes);
        line.extend_from_slice(&own[at_routes + 10..at_backends + 12]);
        line.extend_from_slice(backends);
        if !self.app_json.is_empty() {
            if !backends.is_empty() {
                line.push(b',');
            }
            line.extend_from_slice(&self.app_json);
        }
        line.extend_from_slice(&own[at_backends + 12..]);
        line.extend_from_slice(b"}\n");
        line
    }

    /// The whole config: the own part with the outbound routes (by service
    /// name, each service's routes in order) and the backends they reach
    /// (by name), then the app's.
    pub fn config(&self) -> Config {
        let mut config = self.own.clone();
        let routes = self
            .outbound
            .routes
            .iter()
            .flat_map(|p| p.routes.iter().cloned());
        config.listeners[0].routes = routes.collect();
        let mut backends: Vec<Backend> = self
            .outbound
            .backends
            .iter()
            .map(|p| p.backend.clone())
            .collect();
        backends.append(&mut config.backends);
        config.backends = backends;
        config
    }

    /// The changes from `prev` to this snapshot, when only services changed
    /// (`None` when the workload's own part did: admin, listeners, the app,
    /// trust roots).
    pub fn delta_from(&self, prev: &WorkloadSnapshot) -> Option<Delta> {
        if self.own_hash != prev.own_hash || self.own != prev.own {
            return None;
        }
        let (old, new) = (&prev.outbound, &self.outbound);
        let mut routes = RoutesDelta::default();
        for step in merge(&old.routes, &new.routes, |p| p.routes_hash) {
            match step {
                Step::Removed(p) => routes
                    .remove
                    .extend(p.routes.iter().map(|r| r.name.clone())),
                Step::Added(p) => routes.upsert.extend(p.routes.iter().cloned()),
                Step::Changed(before, after) => {
                    let names = |p: &ServicePart| -> Vec<String> {
                        p.routes.iter().map(|r| r.name.clone()).collect()
                    };
                    let (was, now) = (names(before), names(after));
                    // In place when the routes that stay keep their order
                    // and the new list starts with one of them (new routes
                    // then follow the one before them); else all out and
                    // all back in, in the new order.
                    let stays: Vec<&String> = was.iter().filter(|n| now.contains(n)).collect();
                    let kept: Vec<&String> = now.iter().filter(|n| was.contains(n)).collect();
                    if stays == kept && now.first().is_some_and(|f| was.contains(f)) {
                        routes
                            .remove
                            .extend(was.into_iter().filter(|n| !now.contains(n)));
                    } else {
                        routes.remove.extend(was);
                    }
                    routes.upsert.extend(after.routes.iter().cloned());
                }
            }
        }
        let mut delta = Delta::default();
        for step in merge(&old.backends, &new.backends, |p| p.backend_hash) {
            match step {
                Step::Removed(p) => delta.remove_backends.push(p.backend.name.clone()),
                Step::Added(p) | Step::Changed(_, p) => delta.backends.push(p.backend.clone()),
            }
        }
        if !routes.remove.is_empty() || !routes.upsert.is_empty() {
            delta.routes.insert(OUTBOUND.to_string(), routes);
        }
        Some(delta)
    }
}

enum Step<'a> {
    Removed(&'a ServicePart),
    Added(&'a ServicePart),
    Changed(&'a ServicePart, &'a ServicePart),
}

/// The differences between two lists of parts sorted by service name,
/// compared by `hash`.
fn merge<'a>(
    old: &'a [Arc<ServicePart>],
    new: &'a [Arc<ServicePart>],
    hash: impl Fn(&ServicePart) -> u64,
) -> Vec<Step<'a>> {
    let (mut i, mut j) = (0, 0);
    let mut steps = Vec::new();
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.source.name.cmp(&b.source.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                steps.push(Step::Removed(&old[i]));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                steps.push(Step::Added(&new[j]));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (a, b) = (&old[i], &new[j]);
                if !Arc::ptr_eq(a, b) && hash(a) != hash(b) {
                    steps.push(Step::Changed(a, b));
                }
                i += 1;
                j += 1;
            }
        }
    }
    steps
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

//! The pure compile step: a [`Mesh`] in, one proxy [`Config`] per workload
//! out, each versioned by a hash of its content, so the same content always
//! has the same version and an unchanged snapshot is never pushed.
//!
//! A workload's config has its admin address and one listener, `outbound`,
//! whose routes are those of every service the workload may call (sorted by
//! service name, each service's routes in their order), with `match.hosts`
//! set to the service's name and aliases, `match.destinations` to its
//! `addresses`, and route names prefixed by the service (`api.canary`). A service without routes gets one route named
//! after it, to itself. The backends are the services those routes reach.
//! With a CA, every config also carries `identity: { trust_roots }`.
//!
//! Large meshes: each service is compiled once into a [`ServicePart`] that
//! every caller shares (and that the next reload reuses if the service did
//! not change); a [`WorkloadSnapshot`] is the workload's own part plus the
//! shared parts, versioned from their hashes, so a reload of a mesh with
//! 10k services and 100 workloads compiles only what changed and never
//! builds 100 whole configs. The whole config is put together when it is
//! sent whole; [`WorkloadSnapshot::delta_from`] gives the [`remora_api::Delta`] between
//! two versions.

use remora_api::mesh::{Mesh, Service, SnapshotMsg, Workload, WorkloadInbound};
use remora_api::{
    defaults, Admin, Backend, Config, Endpoint, Inbound, Limits, Listener, ListenerProtocol, Route,
    RouteMatch, WeightedBackend,
};
use std::collections::{BTreeMap, BTreeSet};

/// The listener for the workload's calls out.
pub const OUTBOUND: &str = "outbound";
/// The listener for calls from other proxies (workloads with `inbound`).
pub const INBOUND: &str = "inbound";
/// The backend of the workload's own app, behind `inbound`. Not a DNS name,
/// so no service can have it.
pub const APP: &str = "local_app";

/// Every workload's snapshot, by workload name, without trust roots (a
/// control plane without a CA). Pure and deterministic.
pub fn compile(mesh: &Mesh) -> BTreeMap<String, SnapshotMsg> {
    compile_with_roots(mesh, &[])
}

/// Every workload's snapshot, by workload name; with `trust_roots` (PEM,
/// the CA's) each config carries them as its `identity`. Pure and
/// deterministic.
pub fn compile_with_roots(mesh: &Mesh, trust_roots: &[String]) -> BTreeMap<String, SnapshotMsg> {
    let resolved = resolve(mesh);
    let parts = compile_parts(&resolved, None);
    let mut shared = Shared::default();
    resolved
        .workloads
        .iter()
        .map(|w| {
            let snap = workload_snapshot(&parts, w, trust_roots, &mut shared);
            let msg = SnapshotMsg {
                version: snap.version.clone(),
                config: snap.config(),
            };
            (w.name.clone(), msg)
        })
        .collect()
}

/// A service's routes as its callers have them: for the service's name and
/// aliases, named `<service>.<route>`; or one route to the service, named
/// after it, when it has none.
fn routes_of(s: &Service) -> Vec<Route> {
    let hosts: Vec<String> = std::iter::once(&s.name)
        .chain(&s.aliases)
        .cloned()
        .collect();
    if s.routes.is_empty() {
        let mut r = default_route(s, hosts);
        r.matches.destinations = s.addresses.clone();
        return vec![r];
    }
    s.routes
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.name = format!("{}.{}", s.name, r.name);
            r.matches.hosts = hosts.clone();
            r.matches.destinations = s.addresses.clone();
            r
        })
        .collect()
}

/// The mesh with every endpoint's `workload` turned into the `identity` of
/// that workload (names that resolve to nothing are left for validation),
/// and the mesh's `tracing` given to each workload without its own.
pub fn resolve(mesh: &Mesh) -> std::borrow::Cow<'_, Mesh> {
    let named =
        |e: &remora_api::mesh::ServiceEndpoint| e.workload.is_some() && e.identity.is_none();
    if !mesh.services.iter().any(|s| s.endpoints.iter().any(named)) && mesh.tracing.is_none() {
        return std::borrow::Cow::Borrowed(mesh);
    }
    let ids: BTreeMap<&str, String> = mesh
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), mesh.spiffe_id(w)))
        .collect();
    let mut resolved = mesh.clone();
    for e in resolved
        .services
        .iter_mut()
        .flat_map(|s| s.endpoints.iter_mut())
    {
        if let (Some(w), None) = (&e.workload, &e.identity) {
            e.identity = ids.get(w.as_str()).cloned();
        }
    }
    if let Some(t) = &mesh.tracing {
        for w in resolved
            .workloads
            .iter_mut()
            .filter(|w| w.tracing.is_none())
        {
            w.tracing = Some(workload_tracing(t, &w.name));
        }
    }
    std::borrow::Cow::Owned(resolved)
}

/// The mesh's `tracing` as workload `name` has it: spans named after the
/// workload unless the mesh names a service.
fn workload_tracing(t: &remora_api::Tracing, name: &str) -> remora_api::Tracing {
    let mut t = t.clone();
    if t.service_name == remora_api::tracing::defaults::service_name() && !name.is_empty() {
        t.service_name = name.to_string();
    }
    t
}

/// The version of a value (the mesh): FNV-1a 64 of its compact JSON, as 16
/// hex digits.
/// Struct fields serialize in declaration order and maps are `BTreeMap`s, so
/// the JSON (and the version) depends on the content only.
pub fn version_of<T: serde::Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    format!("{:016x}", fnv1a64(&json))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Services by name (the first of duplicates), with their index in the mesh.
pub(crate) type Services<'a> = BTreeMap<&'a str, (usize, &'a Service)>;

pub(crate) fn index(mesh: &Mesh) -> Services<'_> {
    let mut services = BTreeMap::new();
    for (i, s) in mesh.services.iter().enumerate() {
        services.entry(s.name.as_str()).or_insert((i, s));
    }
    services
}

/// Where each part of a compiled config came from in the mesh, so a problem
/// found in the config can be reported at a mesh path.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Origins {
    /// Per listener route: the service's index, and the route's index in the
    /// service (`None` for the default route).
    pub routes: Vec<(usize, Option<usize>)>,
    /// Per backend: the service's index.
    pub backends: Vec<usize>,
}

/// The config of workload `w`, as the control plane's validation compiles
/// it: like [`WorkloadSnapshot::config`], and `origins` learns where each
/// route and backend came from. Names that resolve to no service are left
/// out (validation reports them).
pub(crate) fn workload_config(
    services: &Services<'_>,
    w: &Workload,
    origins: &mut Origins,
) -> Config {
    let callable: Vec<(usize, &Service)> = if w.calls.is_empty() {
        services.values().copied().collect()
    } else {
        let calls: BTreeSet<&str> = w.calls.iter().map(String::as_str).collect();
        calls
            .into_iter()
            .filter_map(|c| services.get(c).copied())
            .collect()
    };
    let mut routes = Vec::new();
    for (si, s) in callable {
        if s.routes.is_empty() {
            origins.routes.push((si, None));
        }
        origins
            .routes
            .extend((0..s.routes.len()).map(|ri| (si, Some(ri))));
        routes.extend(routes_of(s));
    }
    let reached: BTreeSet<&str> = routes
        .iter()
        .flat_map(|r| r.backends.iter().map(|b| b.name.as_str()))
        .collect();
    let mut backends = Vec::new();
    for name in reached {
        if let Some((si, s)) = services.get(name) {
            backends.push(backend(s));
            origins.backends.push(*si);
        }
    }
    let mut config = own_config(w);
    config.listeners[0].routes = routes;
    backends.append(&mut config.backends);
    config.backends = backends;
    config
}

/// Workload `w`'s own part of its config: admin, the `outbound` listener
/// without routes, the `inbound` listener and the app's backend if it takes
/// calls, its `tracing` (the mesh's, once [`resolve`]d); no identity.
pub(crate) fn own_config(w: &Workload) -> Config {
    let mut listeners = vec![Listener {
        name: OUTBOUND.to_string(),
        address: w.outbound,
        tls: None,
        limits: Limits::default(),
        access_log: w.access_log,
        rate_limit: None,
        routes: Vec::new(),
        // Redirected: any TCP may come; HTTP is detected and routed by host,
        // the rest goes to where it was headed.
        protocol: if w.transparent {
            ListenerProtocol::Detect
        } else {
            ListenerProtocol::Http
        },
        tcp_backend: None,
        detect_timeout: Listener::default_detect_timeout(),
        inbound: None,
        original_destination: w.transparent,
        edge: None,
    }];
    let mut backends = Vec::new();
    if let Some(inbound) = &w.inbound {
        let (mut listener, app) = inbound_side(inbound);
        // Redirected opaque connections go to 127.0.0.1:<original port>.
        listener.original_destination = w.transparent;
        listeners.push(listener);
        backends.push(app);
    }
    Config {
        admin: Admin {
            address: w.admin,
            ..Admin::default()
        },
        drain_timeout: defaults::drain_timeout(),
        listeners,
        backends,
        identity: None,
        tracing: w.tracing.clone().map(Box::new),
    }
}

/// The inbound listener and the backend of the app behind it: HTTP (told
/// apart by protocol detection, after mutual TLS) through one route to the
/// app, anything else as opaque TCP to it.
fn inbound_side(inbound: &WorkloadInbound) -> (Listener, Backend) {
    let mut route = default_route_to(APP, Vec::new());
    route.name = "app".to_string();
    let listener = Listener {
        name: INBOUND.to_string(),
        address: inbound.address,
        tls: None,
        limits: Limits::default(),
        access_log: false,
        rate_limit: None,
        routes: vec![route],
        protocol: ListenerProtocol::Detect,
        tcp_backend: Some(APP.to_string()),
        detect_timeout: Listener::default_detect_timeout(),
        inbound: Some(Inbound {
            mode: inbound.mode,
            authorization: inbound.authorization.clone(),
        }),
        original_destination: false,
        edge: None,
    };
    let app = Backend {
        name: APP.to_string(),
        endpoints: vec![Endpoint {
            address: inbound.app,
            weight: defaults::weight(),
            identity: None,
        }],
        balancer: Default::default(),
        protocol: inbound.app_protocol,
        tls: None,
        connect_timeout: defaults::connect_timeout(),
        pool: Default::default(),
        retry_budget: Default::default(),
        outlier_detection: Default::default(),
        circuit_breaker: Default::default(),
        health_check: None,
    };
    (listener, app)
}

/// Everything for the service's host goes to the service.
fn default_route(s: &Service, hosts: Vec<String>) -> Route {
    default_route_to(&s.name, hosts)
}

/// A route named after `backend`, for `hosts`, to `backend`.
fn default_route_to(backend: &str, hosts: Vec<String>) -> Route {
    Route {
        name: backend.to_string(),
        matches: RouteMatch {
            hosts,
            ..RouteMatch::default()
        },
        backends: vec![WeightedBackend {
            name: backend.to_string(),
            weight: defaults::weight(),
        }],
        direct_response: None,
        redirect: None,
        request_headers: Default::default(),
        response_headers: Default::default(),
        rewrite: None,
        timeout: None,
        idle_timeout: None,
        retry: None,
        rate_limit: None,
        fault: None,
        authorization: None,
        edge: None,
    }
}

fn backend(s: &Service) -> Backend {
    Backend {
        name: s.name.clone(),
        endpoints: s.endpoints.iter().map(|e| e.to_endpoint()).collect(),
        balancer: s.balancer.clone(),
        protocol: s.protocol,
        tls: None,
        connect_timeout: s.connect_timeout,
        pool: s.pool.clone(),
        retry_budget: s.retry_budget.clone(),
        outlier_detection: s.outlier_detection.clone(),
        circuit_breaker: s.circuit_breaker.clone(),
        health_check: s.health_check.clone(),
    }
}

mod parts;
#[cfg(test)]
mod tests;

pub use parts::{compile_parts, workload_snapshot, Parts, ServicePart, Shared, WorkloadSnapshot};

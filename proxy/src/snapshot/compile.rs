//! Config → [`Snapshot`]. [`super::load_materials`] does the I/O
//! (certificates);
//! [`compile`] is pure apart from reusing endpoint state from the previous
//! snapshot: an endpoint that remains (same backend, address and transport
//! settings) keeps its latency estimate, in-flight count and pooled
//! connections; a backend whose settings and files are unchanged is kept
//! whole (the same `Arc`).

use super::materials::{problem, Materials};
use super::{version, EndpointIndex, InboundTable, ListenerTable, Snapshot};
use crate::balance::{Backend, Endpoint};
use crate::http::client::{EndpointClient, Transport, UpstreamTls};
use crate::http::retry::RetryBudget;
use crate::http::router::Router;
use crate::identity::tls::MeshRoots;
use crate::metrics::Metrics;
use crate::policy::authz::Authz;
use crate::policy::ratelimit::RateLimiter;
use remora_api::{Config, Problem};
use std::collections::HashMap;
use std::sync::Arc;

/// Client TLS for endpoints with an identity: one per identity, shared by
/// its endpoints, built only for the backends a compile builds (a backend
/// kept whole from the previous snapshot needs none).
struct MeshClients<'a> {
    roots: Option<&'a Arc<MeshRoots>>,
    clients: HashMap<&'a str, UpstreamTls>,
}

impl<'a> MeshClients<'a> {
    fn new(roots: Option<&'a Arc<MeshRoots>>) -> Self {
        MeshClients {
            roots,
            clients: HashMap::new(),
        }
    }

    /// Builds the clients for the identities of `b` (`backends[i]`): every
    /// one, even for endpoints that keep their state, so that a backend
    /// compiled again is checked again.
    fn prepare(&mut self, i: usize, b: &'a remora_api::Backend, problems: &mut Vec<Problem>) {
        for (k, e) in b.endpoints.iter().enumerate() {
            let Some(id) = e.identity.as_deref() else {
                continue;
            };
            if self.clients.contains_key(id) {
                continue;
            }
            let at = format!("backends[{i}].endpoints[{k}].identity");
            let Some(roots) = self.roots else {
                problems.push(problem((at, "needs the proxy's own `identity`".into())));
                continue;
            };
            match crate::identity::tls::client_tls(crate::identity::global(), roots, id) {
                Ok(tls) => {
                    self.clients.insert(id, tls);
                }
                Err(e) => problems.push(problem((at, e))),
            }
        }
    }
}

/// The previous config's backends, found by name: at the same position
/// while the order is unchanged (the usual case), else through an index
/// built once (a scan per backend would make 10k backends quadratic).
struct PrevConfigs<'a> {
    list: &'a [remora_api::Backend],
    by_name: std::cell::OnceCell<HashMap<&'a str, &'a remora_api::Backend>>,
}

impl<'a> PrevConfigs<'a> {
    fn new(list: &'a [remora_api::Backend]) -> Self {
        PrevConfigs {
            list,
            by_name: std::cell::OnceCell::new(),
        }
    }

    /// The backend called `name`; `i` is where the new config has it.
    fn get(&self, i: usize, name: &str) -> Option<&'a remora_api::Backend> {
        if let Some(b) = self.list.get(i).filter(|b| b.name == name) {
            return Some(b);
        }
        let by_name = self
            .by_name
            .get_or_init(|| self.list.iter().map(|b| (b.name.as_str(), b)).collect());
        by_name.get(name).copied()
    }
}

/// Compiles a validated config. `prev` lends the state of endpoints that remain.
pub fn compile(
    config: Config,
    materials: Materials,
    prev: Option<&Snapshot>,
    metrics: &Arc<Metrics>,
) -> Result<Snapshot, Vec<Problem>> {
    let version = version(&config, materials.digest);
    compile_as(config, materials, version, prev, metrics)
}

/// [`compile`] with the config's [`version`] already computed (it
/// serializes the whole config: worth doing once for a large snapshot).
pub fn compile_as(
    config: Config,
    materials: Materials,
    version: String,
    prev: Option<&Snapshot>,
    metrics: &Arc<Metrics>,
) -> Result<Snapshot, Vec<Problem>> {
    let mut mesh = MeshClients::new(materials.mesh.as_ref());
    let roots_digest = materials.mesh.as_ref().map_or(0, |m| m.digest);
    let mut backends: HashMap<Arc<str>, Arc<Backend>> =
        HashMap::with_capacity(config.backends.len());
    let prev_configs = PrevConfigs::new(prev.map_or(&[], |p| &p.config.backends[..]));
    let mut problems = Vec::new();
    let tls_and_digest = materials
        .backend_tls
        .into_iter()
        .zip(materials.backend_digest);
    for (i, (b, (tls, digest))) in config.backends.iter().zip(tls_and_digest).enumerate() {
        // New roots: endpoints reached with mesh TLS get new connections.
        let meshed = b.endpoints.iter().any(|e| e.identity.is_some());
        let files = digest ^ if meshed { roots_digest } else { 0 };
        let before = prev.and_then(|p| p.backends.get(b.name.as_str()));
        let prev_config = prev_configs.get(i, &b.name);
        // The same settings reached the same way: compiling it again would
        // give the same endpoints (all kept), breaker, budget, checks (not
        // reset) and metric handles, so the backend is kept whole.
        let same = before.filter(|o| {
            o.transport_files == files
                && prev_config == Some(b)
                && (!meshed || mesh.roots.is_some())
        });
        if let Some(same) = same {
            backends.insert(same.name.clone(), same.clone());
            continue;
        }
        mesh.prepare(i, b, &mut problems);
        let backend = build_backend(b, tls, files, before, prev_config, &mesh, metrics);
        backends.insert(backend.name.clone(), Arc::new(backend));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let index = config
        .listeners
        .iter()
        .any(|l| l.original_destination)
        .then(|| Arc::new(endpoint_index(&config, &backends)));
    let mut listeners = Vec::new();
    for (i, (l, tls)) in config
        .listeners
        .iter()
        .zip(materials.listener_tls)
        .enumerate()
    {
        let before = prev
            .and_then(|p| p.listeners.get(i))
            .filter(|pl| *pl.name == *l.name);
        let rate_limit = l.rate_limit.as_ref().map(|rl| {
            let kept = before
                .and_then(|b| b.rate_limit.as_ref())
                .filter(|(cfg, _)| cfg == rl)
                .map(|(_, limiter)| limiter.clone());
            (
                rl.clone(),
                kept.unwrap_or_else(|| Arc::new(RateLimiter::new(rl))),
            )
        });
        let routes = Router::compile_after(
            &l.routes,
            |name| backends.get(name).cloned(),
            before.map(|b| &b.router),
        )
        .map(|mut router| {
            // A request that names no port came in at its scheme's.
            router.set_default_port(if l.tls.is_some() { 443 } else { 80 });
            router
        });
        let tcp_backend = l.tcp_backend.as_deref().map(|b| backends.get(b).cloned());
        if let Some(None) = tcp_backend {
            problems.push(Problem {
                path: format!("listeners[{i}].tcp_backend"),
                message: "no backend has this name".into(),
                line: None,
            });
        }
        let inbound = match (&l.inbound, &materials.mesh) {
            (None, _) => None,
            (Some(inbound), Some(roots)) => {
                // An opaque listener (as `Plan::new` decides) offers no
                // ALPN: a peer must not frame its bytes as HTTP/2.
                let opaque = l.protocol == remora_api::ListenerProtocol::Tcp
                    || (l.original_destination && l.routes.is_empty());
                let alpn: &[&[u8]] = if opaque { &[] } else { &[b"h2", b"http/1.1"] };
                match crate::identity::tls::server_config(crate::identity::global(), roots, alpn) {
                    Ok(tls) => Some(Arc::new(InboundTable {
                        tls,
                        strict: inbound.mode == remora_api::InboundMode::Strict,
                        authz: Authz::new(&inbound.authorization),
                    })),
                    Err(message) => {
                        problems.push(Problem {
                            path: format!("listeners[{i}].inbound"),
                            message,
                            line: None,
                        });
                        None
                    }
                }
            }
            (Some(_), None) => {
                problems.push(Problem {
                    path: format!("listeners[{i}].inbound"),
                    message: "needs the proxy's own `identity` (mutual TLS)".into(),
                    line: None,
                });
                None
            }
        };
        match routes {
            Ok(router) => listeners.push(ListenerTable {
                tcp_destinations: l
                    .original_destination
                    .then(|| router.tcp_destinations())
                    .filter(|d| !d.is_empty())
                    .map(Arc::new),
                name: l.name.as_str().into(),
                router,
                limits: l.limits.clone(),
                access_log: l.access_log,
                rate_limit,
                tls,
                protocol: l.protocol,
                detect_timeout: l.detect_timeout.get(),
                tcp_backend: tcp_backend.flatten(),
                inbound,
                original_destination: index.clone().filter(|_| l.original_destination),
                edge: crate::http::edge::EdgeTable::for_listener(l),
            }),
            Err(message) => problems.push(Problem {
                path: format!("listeners[{i}].routes"),
                message,
                line: None,
            }),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if let Some(c) = materials.credential {
        // The snapshot is good: its certificate serves the next handshakes.
        crate::identity::global().set(c);
    }
    let tracer = crate::telemetry::otel::Tracer::carry(
        config.tracing.as_deref(),
        prev.and_then(|p| p.tracer.as_ref()),
        metrics,
    );
    Ok(Snapshot {
        version,
        config: Arc::new(config),
        listeners,
        backends,
        tracer,
    })
}

/// A backend compiled from `b`, keeping what `before` (the previous
/// snapshot's backend of that name, configured as `prev_config`) may lend:
/// endpoints reached the same way, the breaker, an unchanged retry budget.
/// `files` is the digest of the TLS files (and mesh roots) it uses.
fn build_backend(
    b: &remora_api::Backend,
    tls: Option<UpstreamTls>,
    files: u64,
    before: Option<&Arc<Backend>>,
    prev_config: Option<&remora_api::Backend>,
    mesh: &MeshClients,
    metrics: &Arc<Metrics>,
) -> Backend {
    let key = transport_key(b, files);
    let transport = Transport {
        tls,
        identity: None,
        connect_timeout: b.connect_timeout.get(),
        idle_timeout: b.pool.idle_timeout.get(),
        max_idle: b.pool.max_idle_per_endpoint,
    };
    // Endpoints keep their state only if they are reached the same way.
    let old = before.filter(|o| o.transport_key == key);
    let endpoints = b
        .endpoints
        .iter()
        .map(|e| {
            let identity = e.identity.as_deref();
            let ep = old
                .and_then(|o| {
                    o.endpoints.iter().find(|oe| {
                        oe.addr == e.address
                            && oe.client.transport().identity.as_deref() == identity
                    })
                })
                .cloned()
                .unwrap_or_else(|| {
                    let mut transport = transport.clone();
                    if let Some(id) = identity {
                        transport.tls = mesh.clients.get(id).cloned();
                        if !b.pool.mesh_http2 {
                            if let Some(tls) = &mut transport.tls {
                                tls.mesh = None;
                            }
                        }
                        transport.identity = Some(id.into());
                    }
                    let client =
                        EndpointClient::new(e.address, transport, metrics.upstream(&b.name));
                    Arc::new(Endpoint::new(e.address, client))
                });
            (ep, e.weight)
        })
        .collect();
    let mut backend = Backend::new(b.name.as_str().into(), endpoints, &b.balancer, b.protocol);
    backend.transport_key = key;
    backend.transport_files = files;
    backend.tls = b.tls.is_some();
    backend.outlier_detection = b.outlier_detection.clone();
    backend.health_check = b.health_check.clone();
    let checks_before = prev_config.and_then(|pb| pb.health_check.as_ref());
    if checks_before != b.health_check.as_ref() {
        // Removed or changed checks: earlier verdicts must not linger.
        backend.endpoints.iter().for_each(|e| e.health.reset());
    }
    backend.limits = b.circuit_breaker.clone();
    backend.metrics = metrics.backend(&b.name);
    // Circuit-breaker counts and the retry budget outlive a swap.
    if let Some(before) = before {
        backend.breaker = before.breaker.clone();
    }
    let same_budget = prev_config.is_some_and(|pb| pb.retry_budget == b.retry_budget);
    backend.budget = match before {
        Some(before) if same_budget => before.budget.clone(),
        _ => Arc::new(RetryBudget::new(&b.retry_budget)),
    };
    backend
}

/// Every endpoint address of the config with its backend and endpoint; the
/// first backend listing an address wins.
fn endpoint_index(config: &Config, backends: &HashMap<Arc<str>, Arc<Backend>>) -> EndpointIndex {
    let mut index = EndpointIndex::new();
    for b in &config.backends {
        let Some(backend) = backends.get(b.name.as_str()) else {
            continue;
        };
        for ep in &backend.endpoints {
            index
                .entry(ep.addr)
                .or_insert_with(|| (backend.clone(), ep.clone()));
        }
    }
    index
}

/// Identifies how a backend's endpoints are reached: TLS settings and file
/// contents, connect timeout, pool settings.
fn transport_key(b: &remora_api::Backend, tls_digest: u64) -> u64 {
    let settings = serde_json::to_vec(&(&b.tls, b.connect_timeout, &b.pool)).unwrap_or_default();
    crate::balance::content_hash(&[settings, tls_digest.to_le_bytes().to_vec()].concat())
}

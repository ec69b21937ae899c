//! Config → [`Snapshot`]. [`load_materials`] does the I/O (certificates);
//! [`compile`] is pure apart from reusing endpoint state from the previous
//! snapshot: an endpoint that remains (same backend, address and transport
//! settings) keeps its latency estimate, in-flight count and pooled
//! connections.

use super::{version, ListenerTable, Snapshot};
use crate::balance::{Backend, Endpoint};
use crate::http::client::{EndpointClient, Transport, UpstreamTls};
use crate::http::retry::RetryBudget;
use crate::http::router::Router;
use crate::metrics::Metrics;
use crate::policy::ratelimit::RateLimiter;
use remora_api::{Config, Problem};
use std::collections::HashMap;
use std::sync::Arc;

/// Loaded TLS configs, by listener and backend index, with a digest of the
/// files' contents: a certificate replaced on disk changes the version.
pub struct Materials {
    listener_tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    backend_tls: Vec<Option<UpstreamTls>>,
    backend_digest: Vec<u64>,
    digest: u64,
}

impl Materials {
    /// A hash of every file the config names, by content.
    pub fn digest(&self) -> u64 {
        self.digest
    }
}

/// Hash of the contents of `paths` (a missing file hashes as empty: the TLS
/// loader reports it).
fn file_digest<'a>(paths: impl Iterator<Item = &'a std::path::Path>) -> u64 {
    let mut all = Vec::new();
    for p in paths {
        all.extend_from_slice(p.as_os_str().as_encoded_bytes());
        all.extend_from_slice(&std::fs::read(p).unwrap_or_default());
    }
    crate::balance::content_hash(&all)
}

fn problem((path, message): (String, String)) -> Problem {
    Problem {
        path,
        message,
        line: None,
    }
}

/// Reads every certificate and key the config names.
pub fn load_materials(config: &Config) -> Result<Materials, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut listener_tls = Vec::new();
    let mut digests = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        if let Some(tls) = &l.tls {
            let files = tls
                .certificates
                .iter()
                .flat_map(|c| [c.cert.as_path(), c.key.as_path()]);
            digests.push(file_digest(files.chain(tls.client_ca.as_deref())));
        }
        listener_tls.push(l.tls.as_ref().and_then(|tls| {
            crate::tls::server_config(tls, &format!("listeners[{i}].tls"))
                .map_err(|e| problems.push(problem(e)))
                .ok()
        }));
    }
    let mut backend_tls = Vec::new();
    let mut backend_digest = Vec::new();
    for (i, b) in config.backends.iter().enumerate() {
        backend_digest.push(b.tls.as_ref().map_or(0, |tls| {
            let files = [
                Some(tls.ca.as_path()),
                tls.client_cert.as_deref(),
                tls.client_key.as_deref(),
            ];
            file_digest(files.into_iter().flatten())
        }));
        backend_tls.push(b.tls.as_ref().and_then(|tls| {
            let at = format!("backends[{i}].tls");
            let configs = crate::tls::client_configs(tls, &at)
                .map_err(|e| problems.push(problem(e)))
                .ok()?;
            let name = rustls_pki_types::ServerName::try_from(tls.server_name.clone())
                .map_err(|e| problems.push(problem((format!("{at}.server_name"), e.to_string()))))
                .ok()?;
            Some(UpstreamTls {
                h1: configs.0,
                h2: configs.1,
                server_name: name,
            })
        }));
    }
    if problems.is_empty() {
        digests.extend_from_slice(&backend_digest);
        let bytes: Vec<u8> = digests.iter().flat_map(|d| d.to_le_bytes()).collect();
        Ok(Materials {
            listener_tls,
            backend_tls,
            backend_digest,
            digest: crate::balance::content_hash(&bytes),
        })
    } else {
        Err(problems)
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
    let mut backends: HashMap<Arc<str>, Arc<Backend>> = HashMap::new();
    let tls_and_digest = materials
        .backend_tls
        .into_iter()
        .zip(materials.backend_digest);
    for (b, (tls, digest)) in config.backends.iter().zip(tls_and_digest) {
        let name: Arc<str> = b.name.as_str().into();
        let key = transport_key(b, digest);
        let transport = Transport {
            tls,
            connect_timeout: b.connect_timeout.get(),
            idle_timeout: b.pool.idle_timeout.get(),
            max_idle: b.pool.max_idle_per_endpoint,
        };
        // Endpoints keep their state only if they are reached the same way.
        let old = prev
            .and_then(|p| p.backends.get(&name))
            .filter(|o| o.transport_key == key);
        let endpoints = b
            .endpoints
            .iter()
            .map(|e| {
                let ep = old
                    .and_then(|o| o.endpoints.iter().find(|oe| oe.addr == e.address))
                    .cloned()
                    .unwrap_or_else(|| {
                        let client = EndpointClient::new(
                            e.address,
                            transport.clone(),
                            metrics.upstream(&b.name),
                        );
                        Arc::new(Endpoint::new(e.address, client))
                    });
                (ep, e.weight)
            })
            .collect();
        let mut backend = Backend::new(name.clone(), endpoints, &b.balancer, b.protocol);
        backend.transport_key = key;
        backend.tls = b.tls.is_some();
        backend.outlier_detection = b.outlier_detection.clone();
        backend.health_check = b.health_check.clone();
        let checks_before = prev
            .and_then(|p| p.config.backends.iter().find(|pb| pb.name == b.name))
            .and_then(|pb| pb.health_check.as_ref());
        if checks_before != b.health_check.as_ref() {
            // Removed or changed checks: earlier verdicts must not linger.
            backend.endpoints.iter().for_each(|e| e.health.reset());
        }
        backend.limits = b.circuit_breaker.clone();
        backend.metrics = metrics.backend(&b.name);
        // Circuit-breaker counts and the retry budget outlive a swap.
        let before = prev.and_then(|p| p.backends.get(&name));
        if let Some(before) = before {
            backend.breaker = before.breaker.clone();
        }
        let same_budget = prev
            .and_then(|p| p.config.backends.iter().find(|pb| pb.name == b.name))
            .is_some_and(|pb| pb.retry_budget == b.retry_budget);
        backend.budget = match before {
            Some(before) if same_budget => before.budget.clone(),
            _ => Arc::new(RetryBudget::new(&b.retry_budget)),
        };
        backends.insert(name, Arc::new(backend));
    }
    let mut listeners = Vec::new();
    let mut problems = Vec::new();
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
        );
        match routes {
            Ok(router) => listeners.push(ListenerTable {
                name: l.name.as_str().into(),
                router,
                limits: l.limits.clone(),
                access_log: l.access_log,
                rate_limit,
                tls,
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
    Ok(Snapshot {
        version,
        config: Arc::new(config),
        listeners,
        backends,
    })
}

/// Identifies how a backend's endpoints are reached: TLS settings and file
/// contents, connect timeout, pool settings.
fn transport_key(b: &remora_api::Backend, tls_digest: u64) -> u64 {
    let settings = serde_json::to_vec(&(&b.tls, b.connect_timeout, &b.pool)).unwrap_or_default();
    crate::balance::content_hash(&[settings, tls_digest.to_le_bytes().to_vec()].concat())
}

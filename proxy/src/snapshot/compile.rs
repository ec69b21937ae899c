//! Config → [`Snapshot`]. [`load_materials`] does the I/O (certificates);
//! [`compile`] is pure apart from reusing endpoint state from the previous
//! snapshot: an endpoint that remains (same backend, address and transport
//! settings) keeps its latency estimate, in-flight count and pooled
//! connections.

use super::{version, ListenerTable, Snapshot};
use crate::balance::{Backend, Endpoint};
use crate::http::client::{EndpointClient, Transport, UpstreamTls};
use crate::http::router::Router;
use crate::metrics::Metrics;
use remora_api::{Config, Problem};
use std::collections::HashMap;
use std::sync::Arc;

/// Loaded TLS configs, by listener and backend index.
pub struct Materials {
    listener_tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    backend_tls: Vec<Option<UpstreamTls>>,
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
    for (i, l) in config.listeners.iter().enumerate() {
        listener_tls.push(l.tls.as_ref().and_then(|tls| {
            crate::tls::server_config(tls, &format!("listeners[{i}].tls"))
                .map_err(|e| problems.push(problem(e)))
                .ok()
        }));
    }
    let mut backend_tls = Vec::new();
    for (i, b) in config.backends.iter().enumerate() {
        backend_tls.push(b.tls.as_ref().and_then(|tls| {
            let at = format!("backends[{i}].tls");
            let configs = crate::tls::client_configs(tls, &at).map_err(|e| problems.push(problem(e))).ok()?;
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
        Ok(Materials {
            listener_tls,
            backend_tls,
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
    let mut backends: HashMap<Arc<str>, Arc<Backend>> = HashMap::new();
    for (b, tls) in config.backends.iter().zip(materials.backend_tls) {
        let name: Arc<str> = b.name.as_str().into();
        let transport = Transport {
            tls,
            connect_timeout: b.connect_timeout.get(),
            idle_timeout: b.pool.idle_timeout.get(),
            max_idle: b.pool.max_idle_per_endpoint,
        };
        let same_transport = prev
            .and_then(|p| p.config.backends.iter().find(|pb| pb.name == b.name))
            .is_some_and(|pb| pb.tls == b.tls && pb.connect_timeout == b.connect_timeout && pb.pool == b.pool);
        let old = prev.and_then(|p| p.backends.get(&name)).filter(|_| same_transport);
        let endpoints = b
            .endpoints
            .iter()
            .map(|e| {
                let ep = old
                    .and_then(|o| o.endpoints.iter().find(|oe| oe.addr == e.address))
                    .cloned()
                    .unwrap_or_else(|| {
                        let client = EndpointClient::new(e.address, transport.clone(), metrics.upstream(&b.name));
                        Arc::new(Endpoint::new(e.address, client))
                    });
                (ep, e.weight)
            })
            .collect();
        let backend = Backend::new(name.clone(), endpoints, &b.balancer, b.protocol);
        backends.insert(name, Arc::new(backend));
    }
    let mut listeners = Vec::new();
    let mut problems = Vec::new();
    for (i, (l, tls)) in config.listeners.iter().zip(materials.listener_tls).enumerate() {
        match Router::compile(&l.routes, |name| backends.get(name).cloned()) {
            Ok(router) => listeners.push(ListenerTable {
                name: l.name.as_str().into(),
                router,
                limits: l.limits.clone(),
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
        version: version(&config),
        config: Arc::new(config),
        listeners,
        backends,
    })
}

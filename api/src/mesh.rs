//! The mesh model the control plane reads (the YAML mesh file), and the wire
//! messages of the snapshot stream between control plane and proxies.
//!
//! A mesh has services (with endpoints, routes and policies) and workloads
//! (each runs one proxy). The control plane compiles, for each workload, a
//! proxy [`Config`](crate::Config): the snapshot that proxy serves.
//!
//! Every workload has a mesh identity, the SPIFFE ID
//! `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`
//! ([`Mesh::spiffe_id`]), which the control plane's CA puts in the
//! certificates it issues ([`CertifyRequest`], [`CertifyResponse`]).

use crate::policy::{CircuitBreaker, HealthCheck, OutlierDetection, RetryBudget};
use crate::{Endpoint, Route, UpstreamProtocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mesh {
    /// The trust domain of every workload identity (`spiffe://<trust_domain>/...`).
    #[serde(default = "defaults::trust_domain")]
    pub trust_domain: String,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// Spans from every workload's proxy to a collector (each workload's
    /// own `tracing` replaces it); `service_name` left at its default
    /// becomes the workload's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<crate::Tracing>,
}

impl Default for Mesh {
    fn default() -> Self {
        Mesh {
            trust_domain: defaults::trust_domain(),
            services: Vec::new(),
            workloads: Vec::new(),
            tracing: None,
        }
    }
}

impl Mesh {
    /// The SPIFFE ID of workload `w`:
    /// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
    pub fn spiffe_id(&self, w: &Workload) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain,
            w.namespace,
            w.service_account()
        )
    }
}

pub mod defaults {
    //! Defaults of the mesh model.
    pub fn trust_domain() -> String {
        "cluster.local".to_string()
    }
    pub fn namespace() -> String {
        "default".to_string()
    }
}

/// The protocol of a mesh hop unless told otherwise: `auto`, the caller's
/// own. Between two apps a mesh only carries what the caller sent: an
/// HTTP/1.1 request stays HTTP/1.1 (over the HTTP/2 hop between proxies,
/// then HTTP/1.1 again), an HTTP/2 one (gRPC) stays HTTP/2 to the app. A
/// caller that speaks HTTP/2 to an app that does not would fail without
/// the mesh too. (A proxy config's backends default to `http1`: at the
/// edge, clients speak HTTP/2 to servers that often do not.)
pub fn mesh_protocol() -> UpstreamProtocol {
    UpstreamProtocol::Auto
}

/// A service other workloads call by name (`http://<name>/...`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique; also the host callers use, and the backend name in snapshots.
    pub name: String,
    /// Further host names callers may use (e.g. `api.prod.svc.cluster.local`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Addresses callers may dial the service at that are none of its
    /// endpoints (a Kubernetes Service's ClusterIP and port): a caller's
    /// transparent proxy routes a request it took from a connection to one
    /// of them as a call to this service, whatever its host (a short name,
    /// the IP itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<std::net::SocketAddr>,
    /// How callers' proxies speak HTTP to the endpoints; default `auto`:
    /// as the caller spoke (see [`mesh_protocol`]).
    #[serde(default = "mesh_protocol")]
    pub protocol: UpstreamProtocol,
    /// How callers spread requests over the endpoints.
    #[serde(default)]
    pub balancer: crate::Balancer,
    /// How long a caller's proxy waits for a connection to an endpoint.
    #[serde(default = "crate::model::defaults::connect_timeout")]
    pub connect_timeout: crate::Duration,
    /// Callers' pooled connections to each endpoint.
    #[serde(default)]
    pub pool: crate::Pool,
    #[serde(default)]
    pub endpoints: Vec<ServiceEndpoint>,
    /// Routes for calls to this service, in order; each route's backends
    /// name services. Empty: everything goes to this service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub retry_budget: RetryBudget,
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEndpoint {
    pub address: SocketAddr,
    #[serde(default = "crate::model::defaults::weight")]
    pub weight: u32,
    /// The workload identity expected at this endpoint (used with mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The workload whose proxy's inbound side this endpoint is: its
    /// identity is expected here (instead of writing `identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl ServiceEndpoint {
    pub fn to_endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.address,
            weight: self.weight,
            identity: self.identity.clone(),
        }
    }
}

/// A workload runs one proxy; its snapshot holds the services it may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Unique; proxies subscribe by this name.
    pub name: String,
    /// With `service_account`, the workload's identity:
    /// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
    #[serde(default = "defaults::namespace")]
    pub namespace: String,
    /// Default: the workload's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Where the proxy accepts the workload's outbound calls.
    pub outbound: SocketAddr,
    /// The proxy's admin address.
    #[serde(default = "crate::model::defaults::admin_address")]
    pub admin: SocketAddr,
    /// Services this workload may call; empty: every service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<String>,
    #[serde(default)]
    pub access_log: bool,
    /// The proxy's inbound side: calls from other proxies, over mutual TLS,
    /// to the workload's app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<WorkloadInbound>,
    /// The workload's traffic is redirected to its proxy by iptables
    /// (`remora-proxy init`): both listeners read the original destination
    /// (`SO_ORIGINAL_DST`); HTTP still routes by host.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transparent: bool,
    /// This workload's proxy's spans: replaces the mesh's `tracing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<crate::Tracing>,
}

/// Where a workload's proxy takes calls from other proxies, and where it
/// sends them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadInbound {
    /// The inbound listener (4143 in a pod): what other proxies connect to,
    /// so what the workload's service endpoints are.
    pub address: SocketAddr,
    /// The workload's app.
    pub app: SocketAddr,
    /// How the proxy speaks HTTP to the app; default `auto`: as the caller
    /// spoke (see [`mesh_protocol`]).
    #[serde(default = "mesh_protocol")]
    pub app_protocol: UpstreamProtocol,
    /// `strict`: mutual TLS only; `permissive` (default): plaintext too.
    #[serde(default)]
    pub mode: crate::InboundMode,
    /// Who may call the workload.
    #[serde(default)]
    pub authorization: crate::Authorization,
}

impl Workload {
    /// The service account: the one set, or the workload's name.
    pub fn service_account(&self) -> &str {
        self.service_account.as_deref().unwrap_or(&self.name)
    }
}

/// The first message a proxy sends on its subscription.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub workload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The version the proxy serves now (from its cache), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Control plane → proxy: one snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotMsg {
    pub version: String,
    pub config: crate::Config,
}

/// Control plane → proxy: the changes that turn the snapshot the proxy
/// serves, version `base`, into version `version` (see [`crate::delta`]). A
/// proxy that does not serve `base` NACKs it; the control plane then sends
/// the whole snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaMsg {
    pub version: String,
    pub base: String,
    pub delta: crate::Delta,
}

/// A line of the snapshot stream as the proxy reads it: a whole snapshot
/// (`config`) or a delta (`base` and `delta`). One pass over the line, no
/// buffering (an untagged enum would copy a 10 MB snapshot first).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMsg {
    pub version: String,
    #[serde(default)]
    pub config: Option<crate::Config>,
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub delta: Option<crate::Delta>,
}

/// What a [`StreamMsg`] carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    Snapshot(crate::Config),
    Delta { base: String, delta: crate::Delta },
}

impl StreamMsg {
    /// The version, and what it carries; `Err` for a line that is neither a
    /// snapshot nor a delta.
    pub fn into_update(self) -> (String, Result<Update, String>) {
        let update = match (self.config, self.base, self.delta) {
            (Some(c), None, None) => Ok(Update::Snapshot(c)),
            (None, Some(base), Some(delta)) => Ok(Update::Delta { base, delta }),
            _ => Err("a message has either `config`, or `base` and `delta`".to_string()),
        };
        (self.version, update)
    }
}

/// Proxy → control plane: the verdict on one snapshot version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Ack {
    Ack {
        version: String,
    },
    Nack {
        version: String,
        errors: Vec<String>,
    },
}

/// Proxy → control plane, `POST /v1/certify` (with `authorization: Bearer
/// <token>`): a certificate signing request for a workload's identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifyRequest {
    pub workload: String,
    /// A PKCS#10 CSR, PEM. Only its public key is used: the certificate
    /// carries the workload's SPIFFE ID whatever names the CSR asks for.
    pub csr: String,
}

/// Control plane → proxy: the issued certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifyResponse {
    /// PEM: the leaf, then the CA's intermediates (no root).
    pub certificate_chain: String,
    /// The roots the chain leads to, PEM, one per entry (several during a
    /// CA rotation). The same as the snapshots' `identity.trust_roots`.
    pub trust_roots: Vec<String>,
    /// The leaf's `notAfter`, RFC 3339 (`2025-01-02T03:04:05Z`).
    pub expires_at: String,
}

//! The mesh model the control plane reads (the YAML mesh file), and the wire
//! messages of the snapshot stream between control plane and proxies.
//!
//! A mesh has services (with endpoints, routes and policies) and workloads
//! (each runs one proxy). The control plane compiles, for each workload, a
//! proxy [`Config`](crate::Config): the snapshot that proxy serves.

use crate::policy::{CircuitBreaker, HealthCheck, OutlierDetection, RetryBudget};
use crate::{Endpoint, Route, UpstreamProtocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Mesh {
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub workloads: Vec<Workload>,
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
    #[serde(default)]
    pub protocol: UpstreamProtocol,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
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

//! The pure core of the Kubernetes source: the cluster's objects in, a
//! [`Mesh`] out (the same model the mesh file gives, so everything
//! downstream is shared), with every object the model cannot express
//! reported as an [`ObjectProblem`] naming it.
//!
//! - A meshed pod (annotation `remora.io/injected`) makes its (namespace,
//!   ServiceAccount) a workload `<sa>.<ns>`: outbound 127.0.0.1:4140, admin
//!   0.0.0.0:4191, transparent, inbound 0.0.0.0:4143 to the app on
//!   127.0.0.1:<first container port, else 80> (with a CA; see [`Options`]).
//! - A Service's first TCP port is the service `<name>.<ns>`, aliases
//!   `<name>.<ns>.svc` and `<name>.<ns>.svc.<cluster domain>`; each other
//!   TCP port the service `<name>.<ns>.<port>`, reached by the ClusterIP at
//!   that port and by those names at that port (`<name>.<ns>:<port>`, for
//!   headless Services). Each one's endpoints are the ready addresses of the
//!   Service's EndpointSlices at that port's target port, with the zone,
//!   and the identity of the pod's workload when the pod is meshed; its
//!   `addresses` the ClusterIPs at that port.
//! - HTTPRoutes and GRPCRoutes whose parent is a Service ([`routes`]) are
//!   its routes; ServicePolicies and AuthorizationPolicies ([`policy`]) set
//!   its policies and the workloads' inbound authorization.
//!
//! The output is deterministic: objects are read sorted by namespace and
//! name, the mesh is built from sorted maps, and nothing volatile (resource
//! versions, UIDs, pod names) is in it. The same cluster state gives the
//! same mesh, byte for byte, on every replica. Finally [`prune`] drops what
//! the mesh validation rejects, object by object, rather than the whole mesh.

pub mod grpc;
pub mod http;
pub mod policy;
pub mod prune;
pub mod routes;
pub mod services;

pub use services::{ServiceDraft, Services};

use super::crd::{AuthorizationPolicy, ServicePolicy};
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{Pod, Service as KService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use remora_api::mesh::{Mesh, Workload, WorkloadInbound};
use remora_api::Problem;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// The annotation the injector puts on the pods it gave a proxy.
pub const INJECTED: &str = "remora.io/injected";
/// Ports of a workload's proxy in a pod.
pub const OUTBOUND_PORT: u16 = 4140;
pub const INBOUND_PORT: u16 = 4143;
pub const ADMIN_PORT: u16 = 4191;
/// The proxy's container, skipped when looking for the app's port.
pub const PROXY_CONTAINER: &str = "remora-proxy";

/// The objects of the cluster the mesh is made of (any order).
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub services: Vec<Arc<KService>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub pods: Vec<Arc<Pod>>,
    pub http_routes: Vec<Arc<HttpRoute>>,
    pub grpc_routes: Vec<Arc<GrpcRoute>>,
    pub service_policies: Vec<Arc<ServicePolicy>>,
    pub authorization_policies: Vec<Arc<AuthorizationPolicy>>,
}

/// How the cluster is read.
#[derive(Clone, Debug)]
pub struct Options {
    /// The cluster's DNS domain (`cluster.local`): the services' long aliases.
    pub cluster_domain: String,
    /// The mesh's trust domain (the SPIFFE IDs).
    pub trust_domain: String,
    /// The control plane has a CA: workloads get an inbound side and
    /// endpoints of meshed pods an identity (mutual TLS). Without one, the
    /// mesh is plaintext and only routes calls out.
    pub mtls: bool,
    /// The mesh's `tracing` (`run --tracing-collector`): the cluster's
    /// objects do not carry one.
    pub tracing: Option<remora_api::Tracing>,
}

/// What was made of the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Translation {
    pub mesh: Mesh,
    /// What the mesh could not express, sorted; each object named.
    pub problems: Vec<ObjectProblem>,
    /// Problems no object can be blamed for (the trust domain): the mesh
    /// must be rejected whole.
    pub fatal: Vec<Problem>,
}

/// An object the mesh could not take (whole or in part), and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectProblem {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub message: String,
}

impl fmt::Display for ObjectProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}: {}",
            self.kind, self.namespace, self.name, self.message
        )
    }
}

/// An object, by kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl ObjRef {
    pub fn of<K: kube::Resource>(kind: &'static str, obj: &K) -> ObjRef {
        let m = obj.meta();
        ObjRef {
            kind,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        }
    }

    pub fn problem(&self, message: impl Into<String>) -> ObjectProblem {
        ObjectProblem {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            message: message.into(),
        }
    }
}

/// The mesh as translated so far, with the object behind each part.
#[derive(Debug)]
pub struct Draft {
    pub mesh: Mesh,
    /// The object behind each service, by index.
    pub services: Vec<ObjRef>,
    /// The object behind each route, by service and route index.
    pub routes: Vec<Vec<ObjRef>>,
    /// The object behind each workload (its ServiceAccount), by index.
    pub workloads: Vec<ObjRef>,
    pub problems: Vec<ObjectProblem>,
}

/// Translates `cluster` into a mesh; `check` (the control plane's
/// [`crate::source::MeshSource::check`]) finds what the mesh validation
/// rejects, which is dropped object by object (see [`prune`]).
pub fn translate(
    cluster: &Cluster,
    opts: &Options,
    check: impl Fn(&Mesh) -> Vec<Problem>,
) -> Translation {
    let draft = draft(cluster, opts);
    prune::prune(draft, check)
}

/// The mesh before validation.
pub fn draft(cluster: &Cluster, opts: &Options) -> Draft {
    let mut problems = Vec::new();
    let pods = sorted(&cluster.pods);
    let meshed: BTreeMap<(&str, &str), &Pod> = pods
        .iter()
        .filter(|(_, p)| is_meshed(p))
        .map(|((ns, name), p)| ((*ns, *name), *p))
        .collect();
    let authz = policy::authorizations(&cluster.authorization_policies, &mut problems);
    let workloads = workloads(&meshed, opts, &authz, &mut problems);
    // Without a CA there is no mutual TLS: endpoints get no identity.
    let ids: BTreeMap<(&str, &str), String> = meshed
        .iter()
        .filter(|_| opts.mtls)
        .map(|(key, pod)| {
            let sa = service_account(pod);
            let id = format!("spiffe://{}/ns/{}/sa/{sa}", opts.trust_domain, key.0);
            (*key, id)
        })
        .collect();
    let mut services = services::services(cluster, opts, &ids, &mut problems);
    let policies = policy::service_policies(&cluster.service_policies, &mut problems);
    routes::attach(cluster, &mut services, &mut problems);
    let mut mesh = Mesh {
        trust_domain: opts.trust_domain.clone(),
        services: Vec::new(),
        workloads: Vec::new(),
        tracing: opts.tracing.clone(),
    };
    let mut service_refs = Vec::new();
    let mut route_refs = Vec::new();
    for (name, mut s) in services {
        if let Some(p) = policies.get(&(s.obj.namespace.clone(), s.obj.name.clone())) {
            p.apply(&mut s.service, &mut s.route_objs, &s.obj);
        }
        debug_assert_eq!(name, s.service.name);
        mesh.services.push(s.service);
        service_refs.push(s.obj);
        route_refs.push(s.route_objs);
    }
    for (name, obj) in &policies_without_service(&policies, &service_refs) {
        problems.push(obj.problem(format!(
            "no Service `{name}` with a TCP port in its namespace"
        )));
    }
    let mut workload_refs = Vec::new();
    for (w, obj) in workloads {
        mesh.workloads.push(w);
        workload_refs.push(obj);
    }
    Draft {
        mesh,
        services: service_refs,
        routes: route_refs,
        workloads: workload_refs,
        problems,
    }
}

/// ServicePolicies whose target is no service of the mesh.
fn policies_without_service(
    policies: &BTreeMap<(String, String), policy::Applied>,
    services: &[ObjRef],
) -> Vec<(String, ObjRef)> {
    policies
        .iter()
        .filter(|((ns, name), _)| {
            !services
                .iter()
                .any(|s| &s.namespace == ns && &s.name == name)
        })
        .map(|((_, name), p)| (name.clone(), p.obj.clone()))
        .collect()
}

/// Objects by (namespace, name): the one order everything is read in.
pub fn sorted<K: kube::Resource>(objs: &[Arc<K>]) -> BTreeMap<(&str, &str), &K> {
    objs.iter()
        .map(|o| {
            let m = o.meta();
            let key = (
                m.namespace.as_deref().unwrap_or(""),
                m.name.as_deref().unwrap_or(""),
            );
            (key, &**o)
        })
        .collect()
}

fn is_meshed(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED));
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    annotated && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn service_account(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// The port the app listens on: the first port of the first container that
/// is not the proxy; 80 without one.
fn app_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter(|c| c.name != PROXY_CONTAINER)
        .flat_map(|c| c.ports.iter().flatten())
        .find_map(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(80)
}

/// One workload per (namespace, ServiceAccount) with meshed pods. The app
/// port is the smallest of its pods' (stable while pods come and go).
fn workloads(
    meshed: &BTreeMap<(&str, &str), &Pod>,
    opts: &Options,
    authz: &policy::Authorizations,
    problems: &mut Vec<ObjectProblem>,
) -> Vec<(Workload, ObjRef)> {
    let mut by_sa: BTreeMap<(&str, &str), u16> = BTreeMap::new();
    for ((ns, _), pod) in meshed {
        let port = app_port(pod);
        by_sa
            .entry((ns, service_account(pod)))
            .and_modify(|p| *p = (*p).min(port))
            .or_insert(port);
    }
    let mut out = Vec::new();
    for ((ns, sa), port) in by_sa {
        let obj = ObjRef {
            kind: "ServiceAccount",
            namespace: ns.to_string(),
            name: sa.to_string(),
        };
        let name = format!("{sa}.{ns}");
        if name.len() > 63 {
            problems.push(obj.problem(format!(
                "the workload name `{name}` is longer than 63 characters: its pods get no snapshot"
            )));
            continue;
        }
        let inbound = opts.mtls.then(|| {
            let (mode, authorization) = authz.for_workload(ns, sa);
            WorkloadInbound {
                address: SocketAddr::from(([0, 0, 0, 0], INBOUND_PORT)),
                app: SocketAddr::from(([127, 0, 0, 1], port)),
                app_protocol: remora_api::mesh::mesh_protocol(),
                mode,
                authorization,
            }
        });
        out.push((
            Workload {
                name,
                namespace: ns.to_string(),
                service_account: Some(sa.to_string()),
                outbound: SocketAddr::from(([127, 0, 0, 1], OUTBOUND_PORT)),
                admin: SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT)),
                calls: Vec::new(),
                access_log: false,
                inbound,
                transparent: true,
                tracing: None,
            },
            obj,
        ));
    }
    out
}

#[cfg(test)]
mod tests;

//! Services and their endpoints: a Service's first TCP port is the mesh
//! service `<name>.<ns>` (see [`super`]), each other TCP port the service
//! `<name>.<ns>.<port>`, called by the Service's names with that port
//! (`<name>.<ns>:<port>`); the endpoints of each are the ready addresses of
//! the Service's EndpointSlices at that port's target port (or, when none
//! is ready, those still serving while they terminate, as kube-proxy
//! does), its `addresses` the ClusterIPs at that port.

use super::{sorted, Cluster, ObjRef, ObjectProblem, Options};
use k8s_openapi::api::core::v1::ServiceSpec;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use remora_api::mesh::{Service, ServiceEndpoint};
use remora_api::UpstreamProtocol;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// A service being built: the mesh service, the Kubernetes Service (and
/// port) it came from, and the object behind each of its routes.
#[derive(Debug)]
pub struct ServiceDraft {
    pub service: Service,
    pub obj: ObjRef,
    /// The Service port this service is.
    pub port: i32,
    /// It is the Service's first TCP port (`<name>.<ns>`, with its DNS
    /// names); the others are `<name>.<ns>.<port>`.
    pub first: bool,
    pub route_objs: Vec<ObjRef>,
}

/// Services by mesh name (`<name>.<ns>`).
pub type Services = BTreeMap<String, ServiceDraft>;

pub(super) fn services(
    cluster: &Cluster,
    opts: &Options,
    ids: &BTreeMap<(&str, &str), String>,
    problems: &mut Vec<ObjectProblem>,
) -> Services {
    let mut slices: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for ((ns, _), slice) in sorted(&cluster.endpoint_slices) {
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"));
        if let Some(svc) = owner {
            slices.entry((ns, svc.as_str())).or_default().push(slice);
        }
    }
    let mut out = Services::new();
    for ((ns, name), svc) in sorted(&cluster.services) {
        let obj = ObjRef::of("Service", svc);
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            problems.push(obj.problem("ExternalName Services are not part of the mesh"));
            continue;
        }
        let tcp_ports = spec
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP");
        for (i, port) in tcp_ports.enumerate() {
            // The first TCP port is the service `<name>.<ns>`, reached by
            // the Service's DNS names; each other one `<name>.<ns>.<port>`,
            // reached by its ClusterIP at that port (whatever the name) and
            // by the DNS names with that port (a headless Service has no
            // ClusterIP: its callers dial a pod at that port).
            let mesh_name = match i {
                0 => format!("{name}.{ns}"),
                _ => format!("{name}.{ns}.{}", port.port),
            };
            if mesh_name.len() > 63 {
                problems.push(obj.problem(format!(
                    "the mesh name `{mesh_name}` is longer than 63 characters"
                )));
                continue;
            }
            if out.contains_key(&mesh_name) {
                continue; // the same port number listed twice: Kubernetes refuses it
            }
            let protocol = match port.app_protocol.as_deref() {
                Some("kubernetes.io/h2c" | "h2c" | "grpc") => UpstreamProtocol::Http2,
                _ => remora_api::mesh::mesh_protocol(),
            };
            let port_name = port.name.as_deref().unwrap_or("");
            let mut found = Found::default();
            for slice in slices.get(&(ns, name)).into_iter().flatten() {
                slice_endpoints(slice, port_name, ids, &obj, &mut found, problems);
            }
            // No pod ready (a rollout that replaces the last one, a scale
            // down): the terminating ones that still serve take the calls
            // until they go, rather than none (kube-proxy does the same).
            let endpoints = if found.ready.is_empty() {
                found.terminating
            } else {
                found.ready
            };
            let dns = [
                format!("{name}.{ns}"),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}.svc.{}", opts.cluster_domain),
            ];
            let aliases = match i {
                0 => dns[1..].to_vec(),
                _ => dns.iter().map(|d| format!("{d}:{}", port.port)).collect(),
            };
            let service = Service {
                aliases,
                addresses: cluster_ips(spec, port.port),
                protocol,
                balancer: Default::default(),
                connect_timeout: remora_api::defaults::connect_timeout(),
                pool: Default::default(),
                endpoints: endpoints.into_values().collect(),
                routes: Vec::new(),
                retry_budget: Default::default(),
                outlier_detection: Default::default(),
                circuit_breaker: Default::default(),
                health_check: None,
                name: mesh_name.clone(),
            };
            let draft = ServiceDraft {
                service,
                obj: obj.clone(),
                port: port.port,
                first: i == 0,
                route_objs: Vec::new(),
            };
            out.insert(mesh_name, draft);
        }
    }
    out
}

/// The Service's ClusterIPs (both families of a dual-stack one) at `port`:
/// where its callers connect when they call it by a short name or by IP.
/// None for a headless Service (`clusterIP: None`: its name resolves to the
/// pods, which are endpoints already).
fn cluster_ips(spec: &ServiceSpec, port: i32) -> Vec<SocketAddr> {
    let Ok(port) = u16::try_from(port) else {
        return Vec::new();
    };
    let ips = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect::<Vec<_>>(),
        _ => spec.cluster_ip.iter().collect(),
    };
    let mut out: Vec<SocketAddr> = ips
        .into_iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A Service port's endpoints by condition.
#[derive(Default)]
struct Found {
    ready: BTreeMap<SocketAddr, ServiceEndpoint>,
    /// Terminating, but still serving: used only when none is ready.
    terminating: BTreeMap<SocketAddr, ServiceEndpoint>,
}

/// The endpoints of one slice at the port named `port_name`, ready or
/// terminating but serving, by address (a pod listed in two slices counts
/// once).
fn slice_endpoints(
    slice: &EndpointSlice,
    port_name: &str,
    ids: &BTreeMap<(&str, &str), String>,
    svc: &ObjRef,
    found: &mut Found,
    problems: &mut Vec<ObjectProblem>,
) {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        let slice_ref = ObjRef::of("EndpointSlice", slice);
        problems.push(slice_ref.problem(format!(
            "addressType {} is not supported (Service {}/{})",
            slice.address_type, svc.namespace, svc.name
        )));
        return;
    }
    let Some(port) = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref().unwrap_or("") == port_name)
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
    else {
        return;
    };
    for e in &slice.endpoints {
        // Unset conditions: `ready` true, `serving` as `ready`,
        // `terminating` false (the EndpointSlice API's reading).
        let c = e.conditions.as_ref();
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let serving = c.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        let out = match (ready, serving && terminating) {
            (true, _) => &mut found.ready,
            (false, true) => &mut found.terminating,
            (false, false) => continue,
        };
        let Some(ip) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        let address = SocketAddr::new(ip, port);
        let identity = e
            .target_ref
            .as_ref()
            .filter(|t| t.kind.as_deref() == Some("Pod"))
            .and_then(|t| {
                let ns = t.namespace.as_deref().unwrap_or(&svc.namespace);
                ids.get(&(ns, t.name.as_deref()?)).cloned()
            });
        out.insert(
            address,
            ServiceEndpoint {
                address,
                weight: remora_api::defaults::weight(),
                identity,
                workload: None,
                zone: e.zone.clone(),
                labels: BTreeMap::new(),
            },
        );
    }
}

/// The mesh services of Service `name` in `ns`: the one at `port`, or all
/// of its ports when `port` is `None`. By key (`<name>.<ns>`, then the
/// `<name>.<ns>.<port>` that sort after it), not by a walk of every service.
pub fn of_service<'a>(
    services: &'a Services,
    ns: &str,
    name: &str,
    port: Option<i32>,
) -> impl Iterator<Item = &'a ServiceDraft> + 'a {
    let first = format!("{name}.{ns}");
    let others = format!("{first}.");
    let rest = services
        .range(others.clone()..)
        .take_while(move |(k, _)| k.starts_with(&others))
        .map(|(_, s)| s);
    services
        .get(&first)
        .into_iter()
        .chain(rest)
        .filter(move |s| port.is_none_or(|p| p == s.port))
}

//! Remora's CRDs in the mesh: a [`ServicePolicy`] sets a service's
//! policies (and the retry and timeout of each of its routes), an
//! [`AuthorizationPolicy`] a workload's inbound mode and authorization.
//!
//! Each policy is converted and validated on its own (in a one-service or
//! one-workload probe mesh) before it is applied: a bad value is reported
//! with the policy's name and the policy is left out, so it never takes its
//! Service or workload out of the mesh with it. When several policies
//! target the same object, the oldest (creation time, then name) applies
//! and the others are reported.

use super::{ObjRef, ObjectProblem};
use crate::k8s::crd::{self, AuthorizationPolicy, ServicePolicy};
use remora_api::mesh::{Mesh, Service, Workload, WorkloadInbound};
use remora_api::{
    AllowRule, Authorization, Balancer, CircuitBreaker, DefaultPolicy, Duration, InboundMode,
    OutlierDetection, RetryBudget, RetryOn, RetryPolicy, RingHash, Route, WeightedBackend,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A ServicePolicy, converted.
#[derive(Clone, Debug)]
pub struct Applied {
    pub obj: ObjRef,
    retry: Option<RetryPolicy>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    balancer: Option<Balancer>,
    retry_budget: Option<RetryBudget>,
    outlier_detection: Option<OutlierDetection>,
    circuit_breaker: Option<CircuitBreaker>,
}

impl Applied {
    /// Sets the policies of `s`; the retry and timeout go on every route
    /// (one route to the service itself, `default`, when it has none). A
    /// route's own timeout (an HTTPRoute's `timeouts.request`) wins.
    pub fn apply(&self, s: &mut Service, route_objs: &mut Vec<ObjRef>, svc: &ObjRef) {
        if let Some(t) = self.connect_timeout {
            s.connect_timeout = t;
        }
        if let Some(b) = &self.balancer {
            s.balancer = b.clone();
        }
        if let Some(b) = &self.retry_budget {
            s.retry_budget = b.clone();
        }
        if let Some(o) = &self.outlier_detection {
            s.outlier_detection = o.clone();
        }
        if let Some(c) = &self.circuit_breaker {
            s.circuit_breaker = c.clone();
        }
        if self.retry.is_none() && self.timeout.is_none() {
            return;
        }
        if s.routes.is_empty() {
            s.routes.push(default_route(&s.name));
            route_objs.push(svc.clone());
        }
        for r in &mut s.routes {
            if r.backends.is_empty() {
                continue;
            }
            if r.retry.is_none() {
                r.retry = self.retry.clone();
            }
            if r.timeout.is_none() {
                r.timeout = self.timeout;
            }
        }
    }
}

fn default_route(service: &str) -> Route {
    Route {
        name: "default".into(),
        backends: vec![WeightedBackend {
            name: service.to_string(),
            weight: 1,
        }],
        ..super::routes::route(Default::default())
    }
}

/// Oldest first: creation time, then namespace and name.
fn by_age<K: kube::Resource>(objs: &[Arc<K>]) -> Vec<&K> {
    let mut v: Vec<&K> = objs.iter().map(|o| &**o).collect();
    v.sort_by_key(|o| {
        let m = o.meta();
        (
            m.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            m.namespace.clone(),
            m.name.clone(),
        )
    });
    v
}

/// Every valid ServicePolicy by its target (namespace, Service name).
pub fn service_policies(
    policies: &[Arc<ServicePolicy>],
    problems: &mut Vec<ObjectProblem>,
) -> BTreeMap<(String, String), Applied> {
    let mut out: BTreeMap<(String, String), Applied> = BTreeMap::new();
    for p in by_age(policies) {
        let obj = ObjRef::of("ServicePolicy", p);
        if p.spec.target_ref.kind != "Service" {
            problems.push(obj.problem(format!(
                "targetRef.kind must be Service, not `{}`",
                p.spec.target_ref.kind
            )));
            continue;
        }
        let key = (obj.namespace.clone(), p.spec.target_ref.name.clone());
        if let Some(first) = out.get(&key) {
            problems.push(obj.problem(format!(
                "ServicePolicy {} applies to Service {} already (the oldest wins)",
                first.obj.name, key.1
            )));
            continue;
        }
        match convert_service_policy(&p.spec, obj.clone()) {
            Ok(applied) => {
                out.insert(key, applied);
            }
            Err(e) => problems.push(obj.problem(format!("not applied: {e}"))),
        }
    }
    out
}

fn duration(field: &str, v: &Option<String>) -> Result<Option<Duration>, String> {
    v.as_deref()
        .map(|s| s.parse().map_err(|e| format!("{field}: {e}")))
        .transpose()
}

fn convert_service_policy(spec: &crd::ServicePolicySpec, obj: ObjRef) -> Result<Applied, String> {
    let retry = spec.retry.as_ref().map(convert_retry).transpose()?;
    let balancer = spec.balancer.as_ref().map(convert_balancer).transpose()?;
    let retry_budget = match &spec.retry_budget {
        None => None,
        Some(b) => {
            let mut out = RetryBudget::default();
            if let Some(r) = &b.ratio {
                out.ratio = r
                    .parse()
                    .map_err(|_| format!("retryBudget.ratio: `{r}` is not a number"))?;
            }
            out.min_per_second = b.min_per_second.unwrap_or(out.min_per_second);
            out.window = duration("retryBudget.window", &b.window)?.unwrap_or(out.window);
            Some(out)
        }
    };
    let outlier_detection = match &spec.outlier_detection {
        None => None,
        Some(o) => {
            let mut out = OutlierDetection::default();
            out.consecutive_failures = o.consecutive_failures.unwrap_or(out.consecutive_failures);
            out.base_ejection_time =
                duration("outlierDetection.baseEjectionTime", &o.base_ejection_time)?
                    .unwrap_or(out.base_ejection_time);
            out.max_ejection_time =
                duration("outlierDetection.maxEjectionTime", &o.max_ejection_time)?
                    .unwrap_or(out.max_ejection_time);
            out.max_ejected_percent = o.max_ejected_percent.unwrap_or(out.max_ejected_percent);
            Some(out)
        }
    };
    let circuit_breaker = spec.circuit_breaker.as_ref().map(|c| {
        let d = CircuitBreaker::default();
        CircuitBreaker {
            max_connections: c.max_connections.unwrap_or(d.max_connections),
            max_pending_requests: c.max_pending_requests.unwrap_or(d.max_pending_requests),
            max_requests: c.max_requests.unwrap_or(d.max_requests),
        }
    });
    let applied = Applied {
        obj,
        retry,
        timeout: duration("timeout", &spec.timeout)?,
        connect_timeout: duration("connectTimeout", &spec.connect_timeout)?,
        balancer,
        retry_budget,
        outlier_detection,
        circuit_breaker,
    };
    // Validated as the mesh would be, in a mesh of one service.
    let mut probe = Service {
        name: "probe".into(),
        ..serde_json::from_value(serde_json::json!({ "name": "probe" }))
            .map_err(|e| e.to_string())?
    };
    let mut objs = Vec::new();
    applied.apply(&mut probe, &mut objs, &applied.obj);
    let mesh = Mesh {
        services: vec![probe],
        ..Mesh::default()
    };
    let problems = crate::mesh::validate(&mesh);
    if let Some(p) = problems.first() {
        let field = p
            .path
            .trim_start_matches("services[0]")
            .trim_start_matches(".routes[0]")
            .trim_start_matches('.');
        return Err(format!("{field}: {}", p.message));
    }
    Ok(applied)
}

fn convert_retry(r: &crd::Retry) -> Result<RetryPolicy, String> {
    let defaults: RetryPolicy =
        serde_json::from_value(serde_json::json!({})).map_err(|e| e.to_string())?;
    let on = match &r.on {
        None => defaults.on.clone(),
        Some(list) => list
            .iter()
            .map(|c| {
                serde_json::from_value::<RetryOn>(serde_json::Value::String(c.clone()))
                    .map_err(|_| format!("retry.on: `{c}` is not a retry condition"))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut backoff = defaults.backoff.clone();
    backoff.base = duration("retry.backoffBase", &r.backoff_base)?.unwrap_or(backoff.base);
    backoff.max = duration("retry.backoffMax", &r.backoff_max)?.unwrap_or(backoff.max);
    Ok(RetryPolicy {
        attempts: r.attempts.unwrap_or(defaults.attempts),
        on,
        status_codes: r.status_codes.clone().unwrap_or_default(),
        per_try_timeout: duration("retry.perTryTimeout", &r.per_try_timeout)?,
        backoff,
        buffer_bytes: match r.buffer_bytes {
            Some(b) => usize::try_from(b).map_err(|_| "retry.bufferBytes: too large")?,
            None => defaults.buffer_bytes,
        },
    })
}

fn convert_balancer(b: &crd::Balancer) -> Result<Balancer, String> {
    Ok(match b.kind.as_str() {
        "peakEwma" => Balancer::PeakEwma,
        "roundRobin" => Balancer::RoundRobin,
        "leastRequest" => Balancer::LeastRequest,
        "ringHash" => Balancer::RingHash(RingHash {
            header: b.header.clone(),
            cookie: b.cookie.clone(),
        }),
        other => {
            return Err(format!(
                "balancer.kind: `{other}` is not peakEwma, roundRobin, leastRequest or ringHash"
            ))
        }
    })
}

/// AuthorizationPolicies by target: ServiceAccount first, then namespace.
#[derive(Debug, Default)]
pub struct Authorizations {
    by_sa: BTreeMap<(String, String), (InboundMode, Authorization)>,
    by_ns: BTreeMap<String, (InboundMode, Authorization)>,
}

impl Authorizations {
    /// The mode and authorization of the workload of `sa` in `ns`: its
    /// ServiceAccount's policy, else its namespace's, else the defaults
    /// (permissive, anyone).
    pub fn for_workload(&self, ns: &str, sa: &str) -> (InboundMode, Authorization) {
        self.by_sa
            .get(&(ns.to_string(), sa.to_string()))
            .or_else(|| self.by_ns.get(ns))
            .cloned()
            .unwrap_or_default()
    }
}

/// Every valid AuthorizationPolicy, by target.
pub fn authorizations(
    policies: &[Arc<AuthorizationPolicy>],
    problems: &mut Vec<ObjectProblem>,
) -> Authorizations {
    let mut out = Authorizations::default();
    for p in by_age(policies) {
        let obj = ObjRef::of("AuthorizationPolicy", p);
        let converted = match convert_authorization(&p.spec) {
            Ok(c) => c,
            Err(e) => {
                problems.push(obj.problem(format!("not applied: {e}")));
                continue;
            }
        };
        let taken = match &p.spec.target_ref {
            Some(t) if t.kind != "ServiceAccount" => {
                problems.push(obj.problem(format!(
                    "targetRef.kind must be ServiceAccount, not `{}`",
                    t.kind
                )));
                continue;
            }
            Some(t) => {
                let key = (obj.namespace.clone(), t.name.clone());
                !insert_new(&mut out.by_sa, key, converted)
            }
            None => !insert_new(&mut out.by_ns, obj.namespace.clone(), converted),
        };
        if taken {
            problems.push(
                obj.problem("an older AuthorizationPolicy has the same target and applies instead"),
            );
        }
    }
    out
}

fn insert_new<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: V) -> bool {
    match map.entry(key) {
        std::collections::btree_map::Entry::Occupied(_) => false,
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(value);
            true
        }
    }
}

fn convert_authorization(
    spec: &crd::AuthorizationPolicySpec,
) -> Result<(InboundMode, Authorization), String> {
    let mode = match spec.mode.as_deref() {
        None | Some("permissive") => InboundMode::Permissive,
        Some("strict") => InboundMode::Strict,
        Some(other) => return Err(format!("mode: `{other}` is not strict or permissive")),
    };
    let default = match spec.default.as_deref() {
        None | Some("all-unauthenticated") => DefaultPolicy::AllUnauthenticated,
        Some("all-authenticated") => DefaultPolicy::AllAuthenticated,
        Some("deny") => DefaultPolicy::Deny,
        Some(other) => {
            return Err(format!(
                "default: `{other}` is not all-unauthenticated, all-authenticated or deny"
            ))
        }
    };
    let rule = AllowRule {
        identities: spec.identities.clone(),
        namespaces: spec.namespaces.clone(),
        authenticated: spec.authenticated,
        networks: spec.networks.clone(),
    };
    let any = rule.authenticated
        || !(rule.identities.is_empty() && rule.namespaces.is_empty() && rule.networks.is_empty());
    let authorization = Authorization {
        default,
        allow: if any { vec![rule] } else { Vec::new() },
    };
    // Validated as the mesh would be, on a one-workload probe.
    let probe = Workload {
        name: "probe".into(),
        namespace: "probe".into(),
        service_account: None,
        outbound: SocketAddr::from(([127, 0, 0, 1], 4140)),
        admin: remora_api::defaults::admin_address(),
        calls: Vec::new(),
        access_log: false,
        inbound: Some(WorkloadInbound {
            address: SocketAddr::from(([0, 0, 0, 0], 4143)),
            app: SocketAddr::from(([127, 0, 0, 1], 80)),
            app_protocol: remora_api::mesh::mesh_protocol(),
            mode,
            authorization: authorization.clone(),
        }),
        transparent: true,
        tracing: None,
    };
    let mesh = Mesh {
        workloads: vec![probe],
        ..Mesh::default()
    };
    if let Some(p) = crate::mesh::validate(&mesh).first() {
        return Err(p.message.clone());
    }
    Ok((mode, authorization))
}

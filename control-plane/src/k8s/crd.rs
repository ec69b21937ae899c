//! Remora's own custom resources, group `policy.remora.io`, version
//! `v1alpha1`, for what Gateway API does not say: [`ServicePolicy`] (retries,
//! timeouts, budgets, outlier ejection, circuit breaking, balancing of one
//! Service) and [`AuthorizationPolicy`] (who may call the pods of one
//! ServiceAccount, or of a whole namespace).
//!
//! Fields are camelCase, mirror the mesh file's (snake_case there), and are
//! all optional. Durations and other values the API server cannot check are
//! plain strings here and are checked when the cluster is translated (a bad
//! one is reported with the object's name, and the policy is not applied),
//! so one malformed object can never stop the watch of its kind.
//! `remora-control-plane crds` prints the CustomResourceDefinitions
//! ([`crds_yaml`]); `charts/remora/crds/` holds them.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Policies of one Service: how its callers retry, time out, spread and
/// protect their calls to it.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.remora.io",
    version = "v1alpha1",
    kind = "ServicePolicy",
    plural = "servicepolicies",
    shortname = "svcpol",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct ServicePolicySpec {
    /// The Service (in this namespace) the policy applies to.
    pub target_ref: TargetRef,
    /// Retries of every route of the Service (a route of an HTTPRoute
    /// included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Whole-request timeout of every route of the Service (`10s`,
    /// `500ms`); an HTTPRoute rule's `timeouts.request` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How long a caller waits for a connection to an endpoint (`1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// How callers spread requests over the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<Balancer>,
    /// Caps retries to the Service, across all its callers' routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Ejects endpoints that fail in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Per-caller limits; overflow fails fast with 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
}

/// What a policy applies to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// `Service` (ServicePolicy) or `ServiceAccount` (AuthorizationPolicy).
    pub kind: String,
    /// The object's name, in the policy's namespace.
    pub name: String,
}

/// When and how often a request is retried.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Attempts in all, the first included (2 = one retry); 1-10. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Conditions that make a failure retryable: `5xx`, `gateway-error`,
    /// `reset`, `connect-failure`, `refused-stream`, `unavailable`,
    /// `resource-exhausted`, `deadline-exceeded`, `cancelled`. Default:
    /// gateway-error, reset, connect-failure, refused-stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
    /// Further response statuses that are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_codes: Option<Vec<u16>>,
    /// Timeout of each attempt (`1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// First backoff (`25ms` by default); attempt n waits up to base*2^(n-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base: Option<String>,
    /// Longest backoff (`250ms` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<String>,
    /// Request bodies up to this size are kept for replay (64 KiB by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_bytes: Option<u64>,
}

/// A balancer: `peakEwma` (default), `roundRobin`, `leastRequest` or
/// `ringHash` (with `header` or `cookie`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Balancer {
    /// `peakEwma`, `roundRobin`, `leastRequest` or `ringHash`.
    pub kind: String,
    /// ringHash: the header whose value is hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// ringHash: the cookie whose value is hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// At most `ratio` retries per request over `window`, plus `minPerSecond`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries per request, e.g. `0.2` (a string: the API has no floats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<String>,
    /// Retries always allowed per second (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_per_second: Option<u32>,
    /// The window the ratio is taken over (`10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// Ejection of endpoints after consecutive failures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// 5xx responses and connection failures in a row that eject (default
    /// 5; 0 turns ejection off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// First ejection time (`10s`); the n-th in a row lasts n times this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// Longest ejection (`300s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<String>,
    /// At most this share of the endpoints is ejected at once (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejected_percent: Option<u32>,
}

/// Per-caller limits to the Service's endpoints (each default 1024).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Open connections to all the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests waiting for a new connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}

/// Who may call the meshed pods of one ServiceAccount (or, without
/// `targetRef`, of every ServiceAccount of the namespace that has no policy
/// of its own).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.remora.io",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    plural = "authorizationpolicies",
    shortname = "authzpol",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// `{kind: ServiceAccount, name}`; absent: the whole namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// `strict` (mutual TLS only) or `permissive` (plaintext too; the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Without any allow field below: `all-unauthenticated` (anyone; the
    /// default), `all-authenticated` (any mesh identity) or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Callers allowed by SPIFFE ID (`spiffe://<trust domain>/ns/<ns>/sa/<sa>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Callers allowed by namespace (any mesh identity in them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Callers allowed by address (`10.0.0.0/8`), with or without mutual TLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Any caller with a mesh identity is allowed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub authenticated: bool,
}

/// Both CustomResourceDefinitions as multi-document YAML (what
/// `remora-control-plane crds` prints and `charts/remora/crds/` holds).
pub fn crds_yaml() -> String {
    use kube::CustomResourceExt;
    let mut out = String::from(
        "# Remora's CustomResourceDefinitions. Generated: remora-control-plane crds > charts/remora/crds/remora.yaml\n",
    );
    for crd in [ServicePolicy::crd(), AuthorizationPolicy::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_chart_has_the_crds_of_this_code() {
        let committed = include_str!("../../../charts/remora/crds/remora.yaml");
        assert!(
            committed == super::crds_yaml(),
            "charts/remora/crds/remora.yaml is stale: regenerate it with\n  \
             cargo run -p remora-control-plane -- crds > charts/remora/crds/remora.yaml"
        );
    }
}

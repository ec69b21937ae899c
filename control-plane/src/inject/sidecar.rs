//! What injection adds to a pod template: the `remora-init` init container
//! (`remora-proxy init`: iptables redirect, only NET_ADMIN and NET_RAW), the
//! proxy (a native sidecar — an init container with `restartPolicy: Always`
//! right after `remora-init` — or the first regular container), its two
//! volumes (the control plane's trust roots, a projected ServiceAccount
//! token with audience `remora`) and the `remora.io/injected` annotation.

use super::annotations::{Overrides, INJECTED};
use super::{InjectConfig, SidecarMode, TrustRoots, INIT_CONTAINER, PROXY_CONTAINER};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec, Volume};
use serde_json::{json, Value};

/// The proxy's ports (K8S-DESIGN): outbound, inbound, admin.
pub const OUTBOUND_PORT: u16 = 4140;
pub const INBOUND_PORT: u16 = 4143;
pub const ADMIN_PORT: u16 = 4191;
/// The proxy's UID and GID; `remora-init` skips its traffic.
pub const PROXY_UID: i64 = 2102;
pub const PROXY_BIN: &str = "/usr/local/bin/remora-proxy";

const TRUST_VOLUME: &str = "remora-trust-roots";
const TRUST_DIR: &str = "/var/run/remora/trust";
const TOKEN_VOLUME: &str = "remora-token";
const TOKEN_DIR: &str = "/var/run/secrets/remora/tokens";
/// Audience of the projected token, as the control plane's TokenReview asks.
pub const TOKEN_AUDIENCE: &str = "remora";

/// Adds the proxy to `template` (which [`super::decide`] said to inject).
pub fn add(template: &mut PodTemplateSpec, o: &Overrides, config: &InjectConfig) {
    let meta = template.metadata.get_or_insert_with(Default::default);
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert(INJECTED.into(), env!("CARGO_PKG_VERSION").into());
    let spec = template.spec.get_or_insert_with(Default::default);
    if o.mode == SidecarMode::Container {
        // `kubectl logs` and `exec` keep picking the app, not the proxy.
        if let Some(app) = spec.containers.first() {
            annotations
                .entry("kubectl.kubernetes.io/default-container".into())
                .or_insert_with(|| app.name.clone());
        }
    }
    let mut proxy = proxy_container(o, config);
    let inits = spec.init_containers.get_or_insert_with(Vec::new);
    match o.mode {
        SidecarMode::Native => {
            proxy.restart_policy = Some("Always".into());
            inits.splice(0..0, [init_container(o, config), proxy]);
        }
        SidecarMode::Container => {
            inits.insert(0, init_container(o, config));
            spec.containers.insert(0, proxy);
        }
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.extend(self::volumes(config));
}

/// Deserializes a literal built below; the shapes are fixed (tested), only
/// string values come from the config and the pod.
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("the injector's literal matches the Kubernetes type")
}

fn resources(o: &Overrides) -> Value {
    let r = &o.resources;
    let pair = |cpu: &Option<String>, memory: &Option<String>| {
        let mut m = serde_json::Map::new();
        if let Some(c) = cpu {
            m.insert("cpu".into(), json!(c));
        }
        if let Some(mem) = memory {
            m.insert("memory".into(), json!(mem));
        }
        m
    };
    let mut out = serde_json::Map::new();
    let requests = pair(&r.cpu_request, &r.memory_request);
    let limits = pair(&r.cpu_limit, &r.memory_limit);
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Value::Object(out)
}

fn probe(path: &str, period: i32, failures: i32) -> Value {
    json!({
        "httpGet": { "path": path, "port": ADMIN_PORT },
        "periodSeconds": period,
        "failureThreshold": failures,
    })
}

/// The proxy: sidecar mode on the control plane, identity from the
/// projected token, workload `<serviceaccount>.<namespace>`.
pub fn proxy_container(o: &Overrides, config: &InjectConfig) -> Container {
    let mut proxy = json!({
        "name": PROXY_CONTAINER,
        "image": config.proxy_image,
        "command": [PROXY_BIN],
        "args": [
            "run",
            "--control-plane", config.control_plane,
            "--workload", "$(REMORA_POD_SERVICE_ACCOUNT).$(REMORA_POD_NAMESPACE)",
            "--identity-token", format!("{TOKEN_DIR}/remora-token"),
            "--admin", format!("0.0.0.0:{ADMIN_PORT}"),
            "--log-format", "json",
        ],
        "env": [
            { "name": "REMORA_POD_NAMESPACE",
              "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
            { "name": "REMORA_POD_SERVICE_ACCOUNT",
              "valueFrom": { "fieldRef": { "fieldPath": "spec.serviceAccountName" } } },
            { "name": "REMORA_POD_NAME",
              "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
            { "name": "RUST_LOG", "value": o.log_level },
        ],
        "ports": [
            { "name": "remora-inbound", "containerPort": INBOUND_PORT, "protocol": "TCP" },
            { "name": "remora-admin", "containerPort": ADMIN_PORT, "protocol": "TCP" },
        ],
        "resources": resources(o),
        // Native sidecar: later containers start once this succeeds, so the
        // app starts with its proxy ready (first snapshot and certificate).
        "startupProbe": probe("/ready", 1, 120),
        "readinessProbe": probe("/ready", 5, 3),
        "livenessProbe": probe("/live", 10, 3),
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "volumeMounts": [
            { "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true },
        ],
    });
    match &config.trust_roots {
        TrustRoots::ConfigMap(_) => {
            proxy["args"].as_array_mut().expect("args").splice(
                3..3,
                [
                    json!("--control-plane-ca"),
                    json!(format!("{TRUST_DIR}/ca.crt")),
                ],
            );
            proxy["volumeMounts"]
                .as_array_mut()
                .expect("mounts")
                .insert(
                    0,
                    json!({ "name": TRUST_VOLUME, "mountPath": TRUST_DIR, "readOnly": true }),
                );
        }
        TrustRoots::Pem(pem) => proxy["env"]
            .as_array_mut()
            .expect("env")
            .push(json!({ "name": "REMORA_CONTROL_PLANE_CA_PEM", "value": pem })),
    }
    typed(proxy)
}

/// `remora-proxy init`: root for iptables, but only NET_ADMIN and NET_RAW,
/// not privileged.
pub fn init_container(o: &Overrides, config: &InjectConfig) -> Container {
    let mut args = vec![
        "init".to_string(),
        "--proxy-uid".into(),
        PROXY_UID.to_string(),
        "--inbound-port".into(),
        INBOUND_PORT.to_string(),
        "--outbound-port".into(),
        OUTBOUND_PORT.to_string(),
        "--admin-port".into(),
        ADMIN_PORT.to_string(),
    ];
    if let Some(p) = &o.skip_inbound_ports {
        args.extend(["--skip-inbound-ports".into(), p.clone()]);
    }
    if let Some(p) = &o.skip_outbound_ports {
        args.extend(["--skip-outbound-ports".into(), p.clone()]);
    }
    typed(json!({
        "name": INIT_CONTAINER,
        "image": config.proxy_image,
        "command": [PROXY_BIN],
        "args": args,
        "resources": {
            "requests": { "cpu": "10m", "memory": "16Mi" },
            "limits": { "memory": "64Mi" },
        },
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
    }))
}

/// The trust roots (ConfigMap key `ca.crt`) and the projected token.
pub fn volumes(config: &InjectConfig) -> Vec<Volume> {
    let trust = match &config.trust_roots {
        TrustRoots::ConfigMap(name) => Some(typed(json!({
            "name": TRUST_VOLUME,
            "configMap": {
                "name": name,
                "items": [{ "key": "ca.crt", "path": "ca.crt" }],
            },
        }))),
        TrustRoots::Pem(_) => None,
    };
    trust
        .into_iter()
        .chain([typed(json!({
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [{
                    "serviceAccountToken": {
                        "audience": TOKEN_AUDIENCE,
                        "expirationSeconds": 3600,
                        "path": "remora-token",
                    },
                }],
            },
        }))])
        .collect()
}

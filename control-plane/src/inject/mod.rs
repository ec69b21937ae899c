//! The sidecar injector's core: given a pod template (a Pod's, or a
//! workload's), the labels of its namespace and an [`InjectConfig`], decide
//! whether the pod joins the mesh ([`decide`]) and, if so, add the proxy and
//! its `remora-init` step ([`sidecar`]). Pure: no I/O, table-tested, shared
//! by the admission webhook ([`webhook`]) and the offline `inject` command
//! ([`manifest`]), so both make exactly the same change.
//!
//! The names (annotations, ports, paths, UID 2102) are the ones of
//! `K8S-DESIGN`; the user guide is `docs/injection.md`.

pub mod annotations;
pub mod cli;
pub mod manifest;
pub mod sidecar;
pub mod tls;
pub mod webhook;

#[cfg(test)]
mod tests;

use annotations::{Overrides, INJECT, INJECTED};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use std::collections::BTreeMap;

/// Name of the proxy container (native sidecar or regular container).
pub const PROXY_CONTAINER: &str = "remora-proxy";
/// Name of the init container that runs `remora-proxy init`.
pub const INIT_CONTAINER: &str = "remora-init";

/// How the proxy is added to the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes >= 1.29):
    /// it starts before the app, stops after it, and does not keep a Job's
    /// pod running.
    Native,
    /// The first regular container (older clusters). Jobs must call the
    /// proxy's `POST /shutdown` when done.
    Container,
}

impl SidecarMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SidecarMode::Native => "native",
            SidecarMode::Container => "container",
        }
    }
}

/// CPU and memory requests and limits of the proxy container (Kubernetes
/// quantities such as `100m`, `64Mi`); `None` leaves one unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

/// How an injected proxy gets the control plane's trust roots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustRoots {
    /// A ConfigMap in the pod's namespace (key `ca.crt`), mounted: it must
    /// exist in every meshed namespace.
    ConfigMap(String),
    /// The PEM itself, in the proxy's environment
    /// (`REMORA_CONTROL_PLANE_CA_PEM`): nothing is needed per namespace.
    Pem(String),
}

/// Everything the injector needs that is not in the pod.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    /// Image of the proxy and of `remora-init`.
    pub proxy_image: String,
    /// `host:port` of the control plane's snapshot stream, as the proxy dials it.
    pub control_plane: String,
    /// Where the injected proxy finds the roots the control plane's
    /// certificate chains to.
    pub trust_roots: TrustRoots,
    /// The proxy's resources unless a pod annotation overrides one.
    pub resources: Resources,
    /// The proxy's log filter (`RUST_LOG` syntax) unless `remora.io/log-level`.
    pub log_level: String,
    /// Unless `remora.io/sidecar-mode`.
    pub mode: SidecarMode,
    /// Inject pods that did not opt in (offline `inject --force`); an
    /// opt-out still wins.
    pub force: bool,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            proxy_image: format!("remora-proxy:{}", env!("CARGO_PKG_VERSION")),
            control_plane: "remora-control-plane.remora-system.svc:8086".into(),
            trust_roots: TrustRoots::ConfigMap("remora-trust-roots".into()),
            resources: Resources {
                cpu_request: Some("100m".into()),
                memory_request: Some("64Mi".into()),
                cpu_limit: None,
                memory_limit: Some("256Mi".into()),
            },
            log_level: "info".into(),
            mode: SidecarMode::Native,
            force: false,
        }
    }
}

/// Why a pod was left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `remora.io/inject: disabled` on the pod.
    OptedOut,
    /// It has `remora.io/injected` (or a `remora-proxy` container) already.
    AlreadyInjected,
    /// `hostNetwork: true`: redirecting the node's traffic is not ours to do.
    HostNetwork,
    /// Neither the pod nor its namespace says `remora.io/inject: enabled`.
    NotOptedIn,
}

impl Skip {
    /// The reason as a metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::OptedOut => "opted_out",
            Skip::AlreadyInjected => "already_injected",
            Skip::HostNetwork => "host_network",
            Skip::NotOptedIn => "not_opted_in",
        }
    }
}

/// What injection did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The template with the proxy added.
    Injected(Box<PodTemplateSpec>),
    Skipped(Skip),
}

/// A pod the injector refuses: an annotation it cannot read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("annotation {name}: {message}")]
    Annotation { name: &'static str, message: String },
}

/// Whether the pod joins the mesh; `Ok(None)` means inject.
pub fn decide(
    template: &PodTemplateSpec,
    namespace_labels: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> Result<Option<Skip>, Error> {
    let meta = template.metadata.as_ref();
    let annotations = meta.and_then(|m| m.annotations.as_ref());
    let labels = meta.and_then(|m| m.labels.as_ref());
    let spec = template.spec.as_ref();
    let has_proxy = spec.is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == PROXY_CONTAINER)
    });
    if annotations.is_some_and(|a| a.contains_key(INJECTED)) || has_proxy {
        return Ok(Some(Skip::AlreadyInjected));
    }
    // The annotation wins over the label when both are set.
    let pod_says = match annotations.and_then(|a| a.get(INJECT)) {
        Some(v) => Some(annotations::inject_value(v)?),
        None => match labels.and_then(|l| l.get(INJECT)) {
            Some(v) => Some(annotations::inject_value(v)?),
            None => None,
        },
    };
    let namespace_says = namespace_labels.get(INJECT).map(String::as_str) == Some("enabled");
    match pod_says {
        Some(false) => return Ok(Some(Skip::OptedOut)),
        Some(true) => {}
        None if namespace_says || config.force => {}
        None => return Ok(Some(Skip::NotOptedIn)),
    }
    if spec.and_then(|s| s.host_network) == Some(true) {
        return Ok(Some(Skip::HostNetwork));
    }
    Ok(None)
}

/// Injects the proxy into a pod template, or says why not.
pub fn inject_template(
    template: &PodTemplateSpec,
    namespace_labels: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> Result<Outcome, Error> {
    if let Some(skip) = decide(template, namespace_labels, config)? {
        return Ok(Outcome::Skipped(skip));
    }
    let empty = BTreeMap::new();
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .unwrap_or(&empty);
    let overrides = Overrides::parse(annotations, config)?;
    let mut out = template.clone();
    sidecar::add(&mut out, &overrides, config);
    Ok(Outcome::Injected(Box::new(out)))
}

/// [`inject_template`] for a Pod (the webhook's object): its metadata and
/// spec as a template, put back into the Pod.
pub fn inject_pod(
    pod: &Pod,
    namespace_labels: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> Result<Result<Pod, Skip>, Error> {
    let template = PodTemplateSpec {
        metadata: Some(pod.metadata.clone()),
        spec: pod.spec.clone(),
    };
    Ok(
        match inject_template(&template, namespace_labels, config)? {
            Outcome::Injected(t) => {
                let mut pod = pod.clone();
                pod.metadata = t.metadata.unwrap_or_default();
                pod.spec = t.spec;
                Ok(pod)
            }
            Outcome::Skipped(skip) => Err(skip),
        },
    )
}

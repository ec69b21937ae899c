//! The injector's command-line flags, shared by `run` (the webhook) and the
//! offline `inject` command, and `inject` itself: read a manifest from a
//! file or stdin, print the injected manifest, a line per pod template on
//! stderr.

use super::manifest::inject_manifest;
use super::webhook::WebhookSettings;
use super::{InjectConfig, Resources, SidecarMode, TrustRoots};
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// What the injector adds (flags of `run` and `inject`).
#[derive(clap::Args, Clone, Debug)]
pub struct InjectArgs {
    /// The image of the injected proxy and of its `remora-init` step.
    #[arg(long, env = "REMORA_PROXY_IMAGE", default_value = concat!("remora-proxy:", env!("CARGO_PKG_VERSION")))]
    pub proxy_image: String,
    /// The control plane as injected proxies dial it (`host:port`).
    #[arg(
        long,
        env = "REMORA_PROXY_CONTROL_PLANE",
        default_value = "remora-control-plane.remora-system.svc:8086"
    )]
    pub proxy_control_plane: String,
    /// The ConfigMap (key `ca.crt`, in the pod's namespace) with the roots
    /// of the control plane's certificate.
    #[arg(
        long,
        env = "REMORA_TRUST_ROOTS_CONFIGMAP",
        default_value = "remora-trust-roots"
    )]
    pub trust_roots_configmap: String,
    /// The roots of the control plane's certificate (PEM file), put into
    /// each injected proxy's environment instead of mounting
    /// --trust-roots-configmap: then no ConfigMap is needed per namespace.
    #[arg(long, env = "REMORA_PROXY_CONTROL_PLANE_CA")]
    pub proxy_control_plane_ca: Option<PathBuf>,
    /// The proxy's log filter (`remora.io/log-level` overrides it).
    #[arg(long, env = "REMORA_PROXY_LOG_LEVEL", default_value = "info")]
    pub proxy_log_level: String,
    /// The proxy's CPU request (empty: none); `remora.io/proxy-cpu-request` overrides it.
    #[arg(long, env = "REMORA_PROXY_CPU_REQUEST", default_value = "100m")]
    pub proxy_cpu_request: String,
    /// The proxy's memory request (empty: none).
    #[arg(long, env = "REMORA_PROXY_MEMORY_REQUEST", default_value = "64Mi")]
    pub proxy_memory_request: String,
    /// The proxy's CPU limit (empty: none).
    #[arg(long, env = "REMORA_PROXY_CPU_LIMIT", default_value = "")]
    pub proxy_cpu_limit: String,
    /// The proxy's memory limit (empty: none).
    #[arg(long, env = "REMORA_PROXY_MEMORY_LIMIT", default_value = "256Mi")]
    pub proxy_memory_limit: String,
    /// Native sidecar (Kubernetes >= 1.29) or a regular container;
    /// `remora.io/sidecar-mode` overrides it.
    #[arg(
        long,
        value_enum,
        env = "REMORA_SIDECAR_MODE",
        default_value = "native"
    )]
    pub sidecar_mode: SidecarMode,
}

impl InjectArgs {
    /// The injection config; fails if --proxy-control-plane-ca cannot be
    /// read or holds no certificate.
    pub fn config(&self, force: bool) -> Result<InjectConfig, String> {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        let trust_roots = match &self.proxy_control_plane_ca {
            None => TrustRoots::ConfigMap(self.trust_roots_configmap.clone()),
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| format!("--proxy-control-plane-ca {}: {e}", path.display()))?;
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(format!(
                        "--proxy-control-plane-ca {}: no PEM certificate in the file",
                        path.display()
                    ));
                }
                TrustRoots::Pem(pem)
            }
        };
        Ok(InjectConfig {
            proxy_image: self.proxy_image.clone(),
            control_plane: self.proxy_control_plane.clone(),
            trust_roots,
            resources: Resources {
                cpu_request: opt(&self.proxy_cpu_request),
                memory_request: opt(&self.proxy_memory_request),
                cpu_limit: opt(&self.proxy_cpu_limit),
                memory_limit: opt(&self.proxy_memory_limit),
            },
            log_level: self.proxy_log_level.clone(),
            mode: self.sidecar_mode,
            force,
        })
    }
}

/// The webhook's flags of `run`; without `--webhook-listen` it is off.
#[derive(clap::Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Serve the injector webhook (HTTPS, `POST /inject`) here, e.g. 0.0.0.0:9443.
    #[arg(long, env = "REMORA_WEBHOOK_LISTEN", requires_all = ["webhook_cert", "webhook_key"])]
    pub webhook_listen: Option<SocketAddr>,
    /// The webhook's certificate (PEM, leaf first), re-read when it changes.
    #[arg(long, env = "REMORA_WEBHOOK_CERT", requires = "webhook_listen")]
    pub webhook_cert: Option<PathBuf>,
    /// The webhook's private key (PEM).
    #[arg(long, env = "REMORA_WEBHOOK_KEY", requires = "webhook_listen")]
    pub webhook_key: Option<PathBuf>,
    /// Do not read namespace labels from the Kubernetes API: inject only
    /// the pods that opt in themselves.
    #[arg(
        long,
        env = "REMORA_WEBHOOK_IGNORE_NAMESPACES",
        requires = "webhook_listen"
    )]
    pub webhook_ignore_namespaces: bool,
    #[command(flatten)]
    pub inject: InjectArgs,
}

impl WebhookArgs {
    /// `None` without --webhook-listen; an error if the injection config
    /// cannot be read.
    pub fn settings(self) -> Result<Option<WebhookSettings>, String> {
        let (Some(listen), Some(cert), Some(key)) =
            (self.webhook_listen, self.webhook_cert, self.webhook_key)
        else {
            return Ok(None);
        };
        Ok(Some(WebhookSettings {
            listen,
            cert,
            key,
            namespace_labels: !self.webhook_ignore_namespaces,
            config: self.inject.config(false)?,
        }))
    }
}

/// `remora-control-plane inject -f FILE|-`.
pub fn inject(file: &str, force: bool, args: &InjectArgs) -> ExitCode {
    let input = if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        std::fs::read_to_string(file)
    };
    let input = match input {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match args.config(force) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match inject_manifest(&input, &config) {
        Ok((yaml, reports)) => {
            print!("{yaml}");
            for r in reports {
                let what = match r.outcome {
                    Ok(()) => "injected".to_string(),
                    Err(skip) => format!("skipped ({})", skip.as_str()),
                };
                eprintln!("{} {}/{}: {what}", r.index, r.kind, r.name);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {file}: {e}");
            ExitCode::FAILURE
        }
    }
}

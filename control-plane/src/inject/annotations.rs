//! The pod annotations the injector reads, checked: each bad value is an
//! error naming the annotation, so a typo is never silently ignored.

use super::{Error, InjectConfig, Resources, SidecarMode};
use std::collections::BTreeMap;

/// Opt in (`enabled`) or out (`disabled`): pod annotation or label, or
/// namespace label.
pub const INJECT: &str = "remora.io/inject";
/// Set by the injector on an injected pod: the injector's version.
pub const INJECTED: &str = "remora.io/injected";
pub const SKIP_INBOUND_PORTS: &str = "remora.io/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "remora.io/skip-outbound-ports";
/// Read by the control plane (ports whose traffic is opaque TCP); the
/// injector only checks it.
pub const OPAQUE_PORTS: &str = "remora.io/opaque-ports";
pub const LOG_LEVEL: &str = "remora.io/log-level";
pub const CPU_REQUEST: &str = "remora.io/proxy-cpu-request";
pub const MEMORY_REQUEST: &str = "remora.io/proxy-memory-request";
pub const CPU_LIMIT: &str = "remora.io/proxy-cpu-limit";
pub const MEMORY_LIMIT: &str = "remora.io/proxy-memory-limit";
pub const SIDECAR_MODE: &str = "remora.io/sidecar-mode";

/// The settings of one pod: the config, with its annotations applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overrides {
    /// Normalized port lists (`8080,9000-9100`), `None` when absent.
    pub skip_inbound_ports: Option<String>,
    pub skip_outbound_ports: Option<String>,
    pub log_level: String,
    pub resources: Resources,
    pub mode: SidecarMode,
}

impl Overrides {
    pub fn parse(
        annotations: &BTreeMap<String, String>,
        config: &InjectConfig,
    ) -> Result<Overrides, Error> {
        let get = |name: &str| annotations.get(name).map(|v| v.trim());
        let ports = |name: &'static str| -> Result<Option<String>, Error> {
            get(name).map(|v| port_list(name, v)).transpose()
        };
        if let Some(v) = get(OPAQUE_PORTS) {
            port_list(OPAQUE_PORTS, v)?;
        }
        let quantity = |name: &'static str, default: &Option<String>| match get(name) {
            Some(v) => check_quantity(name, v).map(Some),
            None => Ok(default.clone()),
        };
        let r = &config.resources;
        let resources = Resources {
            cpu_request: quantity(CPU_REQUEST, &r.cpu_request)?,
            memory_request: quantity(MEMORY_REQUEST, &r.memory_request)?,
            cpu_limit: quantity(CPU_LIMIT, &r.cpu_limit)?,
            memory_limit: quantity(MEMORY_LIMIT, &r.memory_limit)?,
        };
        let mode = match get(SIDECAR_MODE) {
            None => config.mode,
            Some("native") => SidecarMode::Native,
            Some("container") => SidecarMode::Container,
            Some(other) => {
                return Err(bad(
                    SIDECAR_MODE,
                    format!("`{other}`: expected native or container"),
                ))
            }
        };
        let log_level = match get(LOG_LEVEL) {
            None => config.log_level.clone(),
            Some(v) => check_log_level(v)?,
        };
        Ok(Overrides {
            skip_inbound_ports: ports(SKIP_INBOUND_PORTS)?,
            skip_outbound_ports: ports(SKIP_OUTBOUND_PORTS)?,
            log_level,
            resources,
            mode,
        })
    }
}

fn bad(name: &'static str, message: String) -> Error {
    Error::Annotation { name, message }
}

/// `enabled` → true, `disabled` → false.
pub fn inject_value(v: &str) -> Result<bool, Error> {
    match v.trim() {
        "enabled" => Ok(true),
        "disabled" => Ok(false),
        other => Err(bad(
            INJECT,
            format!("`{other}`: expected enabled or disabled"),
        )),
    }
}

/// Comma-separated ports or ranges (`8080, 9000-9100`), each 1..=65535,
/// normalized to no spaces.
pub fn port_list(name: &'static str, v: &str) -> Result<String, Error> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim) {
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad(
                name,
                format!("`{item}` is not a port (1-65535) or a range like 9000-9100"),
            )),
        };
        match item.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(bad(name, format!("range `{item}` ends before it starts")));
                }
                out.push(format!("{lo}-{hi}"));
            }
            None => out.push(port(item)?.to_string()),
        }
    }
    Ok(out.join(","))
}

/// A Kubernetes quantity: a decimal number and an optional suffix.
fn check_quantity(name: &'static str, v: &str) -> Result<String, Error> {
    const SUFFIXES: &[&str] = &[
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let digits = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, suffix) = v.split_at(digits);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number != "."
        && !number.starts_with('.');
    if number_ok && SUFFIXES.contains(&suffix) {
        Ok(v.to_string())
    } else {
        Err(bad(
            name,
            format!("`{v}` is not a quantity like 100m, 0.5, 64Mi or 1Gi"),
        ))
    }
}

/// A tracing filter directive list: checked by the same parser the proxy uses.
fn check_log_level(v: &str) -> Result<String, Error> {
    tracing_subscriber::EnvFilter::builder()
        .parse(v)
        .map(|_| v.to_string())
        .map_err(|e| bad(LOG_LEVEL, format!("`{v}`: {e}")))
}

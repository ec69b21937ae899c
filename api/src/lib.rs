//! Remora's config model, shared by the proxy and (later) the control plane.
//!
//! This crate owns the serde types of a proxy config ([`Config`]), the pure
//! validation that reports every problem with its field path ([`validate`]),
//! and the loader that turns a YAML text into a config or into located
//! problems ([`parse_yaml`]). It does no I/O: reading files and loading
//! certificates belong to the proxy.

pub mod delta;
mod duration;
pub mod edge;
pub mod identity;
mod locate;
pub mod mesh;
mod model;
pub mod policy;
pub mod stats;
mod time;
pub mod tracing;
mod validate;

pub use delta::{Delta, RoutesDelta};
pub use duration::Duration;
pub use identity::{
    AllowRule, Authorization, DefaultPolicy, IdentityConfig, IdentityFiles, Inbound, InboundMode,
    ListenerProtocol,
};
pub use model::*;
pub use policy::{
    Backoff, CircuitBreaker, Fault, FaultAbort, FaultDelay, HealthCheck, OutlierDetection,
    RateLimit, RetryBudget, RetryOn, RetryPolicy,
};
pub use time::rfc3339;
pub use tracing::{OtlpProtocol, Tracing};
pub use validate::{dialable, route_host, validate, Problem};

/// Parses a YAML config and validates it.
///
/// On failure returns every problem found, each with its field path and, when
/// it can be found in `text`, its 1-based line.
pub fn parse_yaml(text: &str) -> Result<Config, Vec<Problem>> {
    // Enums are written as `{prefix: /api}` or `round_robin`, not YAML tags.
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let config: Config = match serde_yaml_ng::with::singleton_map_recursive::deserialize(de) {
        Ok(c) => c,
        Err(e) => {
            let line = e.location().map(|l| l.line()).or_else(|| error_line(text));
            // serde_yaml_ng prefixes the message with the path it was at.
            let msg = e.to_string();
            let (path, message) = split_serde_message(&msg);
            return Err(vec![Problem {
                path,
                message,
                line,
            }]);
        }
    };
    let mut problems = validate(&config);
    if problems.is_empty() {
        return Ok(config);
    }
    let lines = locate::Locator::new(text);
    for p in &mut problems {
        p.line = lines.line_of(&p.path);
    }
    Err(problems)
}

/// The 1-based line of `text` (YAML) where the field `path` (such as
/// `services[1].routes[0].name`), or its nearest written ancestor, is written.
/// For a tool that validates its own YAML model (the control plane's mesh).
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    locate::Locator::new(text).line_of(path)
}

/// For a YAML parse error reported without a location: the 1-based line
/// where `text` stops being one document (a syntax error, or a second
/// document's start), so that every problem can be found in the file.
pub fn error_line(text: &str) -> Option<usize> {
    locate::Locator::break_line(text)
}

/// serde_yaml_ng formats errors as `path: message at line L column C`.
fn split_serde_message(msg: &str) -> (String, String) {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_string(), rest.to_string()),
        _ => (String::new(), msg.to_string()),
    }
}

#[cfg(test)]
mod tests;

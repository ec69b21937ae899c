//! Pure validation of a [`Config`]: every problem, each with its field path.

use crate::model::*;
use std::collections::HashSet;
use std::fmt;

mod backend;
mod route;

use backend::check_backend;
use route::check_route;
pub use route::route_host;

/// One thing wrong with a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `listeners[0].routes[2].backends[0].weight`.
    pub path: String,
    pub message: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn extend(&mut self, found: crate::policy::Found) {
        for (path, message) in found {
            self.add(path, message);
        }
    }

    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
            line: None,
        });
    }
}

/// Returns every problem in `config`; empty means valid.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut p = Problems::default();
    if config.drain_timeout.get().is_zero() {
        p.add("drain_timeout", "must be > 0");
    }
    let backends: HashSet<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        check_name(&mut p, || format!("{at}.name"), &l.name);
        if !names.insert(&l.name) {
            p.add(format!("{at}.name"), format!("`{}` is used twice", l.name));
        }
        // Port 0 asks the OS for a free port: never a clash.
        if l.address.port() != 0 && !addrs.insert(l.address) {
            p.add(
                format!("{at}.address"),
                format!("{} is used twice", l.address),
            );
        }
        if l.address.port() != 0 && l.address == config.admin.address {
            p.add(format!("{at}.address"), "is the admin address");
        }
        if let Some(tls) = &l.tls {
            if tls.certificates.is_empty() {
                p.add(
                    format!("{at}.tls.certificates"),
                    "needs at least one certificate",
                );
            }
            if tls.require_client_certificate && tls.client_ca.is_none() {
                p.add(
                    format!("{at}.tls.require_client_certificate"),
                    "needs tls.client_ca",
                );
            }
            for (j, c) in tls.certificates.iter().enumerate() {
                for (k, n) in c.server_names.iter().enumerate() {
                    let at = format!("{at}.tls.certificates[{j}].server_names[{k}]");
                    if n == "*" {
                        p.add(
                            at,
                            "`*` is not a server name: the first certificate is the default",
                        );
                    } else {
                        check_host(&mut p, || at.clone(), n);
                    }
                }
            }
        }
        check_limits(&mut p, &format!("{at}.limits"), &l.limits);
        if let Some(rl) = &l.rate_limit {
            let mut found = Vec::new();
            rl.check(&format!("{at}.rate_limit"), &mut found);
            p.extend(found);
        }
        check_listener_mesh(&mut p, &at, l, config, &backends);
        if let Some(edge) = &l.edge {
            let mut found = Vec::new();
            edge.check(&format!("{at}.edge"), l.access_log, &mut found);
            p.extend(found);
        }
        let mut route_names = HashSet::new();
        for (j, r) in l.routes.iter().enumerate() {
            let at = format!("{at}.routes[{j}]");
            check_name(&mut p, || format!("{at}.name"), &r.name);
            if !route_names.insert(&r.name) {
                p.add(
                    format!("{at}.name"),
                    format!("`{}` is used twice in this listener", r.name),
                );
            }
            check_route(&mut p, &at, r, &backends);
            if let Some(edge) = &r.edge {
                let mut found = Vec::new();
                edge.check(&format!("{at}.edge"), &mut found);
                p.extend(found);
            }
        }
    }
    let mut seen = HashSet::with_capacity(config.backends.len());
    for (i, b) in config.backends.iter().enumerate() {
        let at = format!("backends[{i}]");
        check_name(&mut p, || format!("{at}.name"), &b.name);
        if !seen.insert(&b.name) {
            p.add(format!("{at}.name"), format!("`{}` is used twice", b.name));
        }
        check_backend(&mut p, &at, b);
        for (k, e) in b.endpoints.iter().enumerate() {
            let Some(id) = &e.identity else { continue };
            let spiffe = crate::identity::parse_spiffe(id).is_some();
            if spiffe && config.identity.is_some() && b.tls.is_none() {
                continue;
            }
            let at = format!("{at}.endpoints[{k}].identity");
            if !spiffe {
                p.add(&at, "must be a SPIFFE ID: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>");
            }
            if config.identity.is_none() {
                p.add(&at, "needs the proxy's own `identity` (mutual TLS)");
            }
            if b.tls.is_some() {
                p.add(
                    &at,
                    "a backend uses either `tls` or mesh identities, not both",
                );
            }
        }
    }
    if let Some(t) = &config.tracing {
        let mut found = Vec::new();
        crate::tracing::check(t, &mut found);
        p.extend(found);
    }
    if let Some(id) = &config.identity {
        if id.trust_roots.is_empty() == id.trust_roots_file.is_none() {
            p.add(
                "identity",
                "needs exactly one of `trust_roots` and `trust_roots_file`",
            );
        }
    }
    p.0
}

/// The listener's protocol, opaque TCP backend, original destination and
/// inbound (mesh) settings.
fn check_listener_mesh(
    p: &mut Problems,
    at: &str,
    l: &Listener,
    config: &Config,
    backends: &HashSet<&str>,
) {
    use crate::identity::ListenerProtocol;
    let opaque = matches!(l.protocol, ListenerProtocol::Tcp | ListenerProtocol::Detect);
    match (&l.tcp_backend, opaque) {
        // Transparent: opaque connections go to their original destination.
        (None, true) if l.original_destination => {}
        (None, true) => p.add(
            format!("{at}.tcp_backend"),
            "`protocol: tcp` and `protocol: detect` need a backend for opaque TCP",
        ),
        (Some(_), false) => p.add(
            format!("{at}.tcp_backend"),
            "only used with `protocol: tcp` or `protocol: detect`",
        ),
        (Some(b), true) if !backends.contains(b.as_str()) => p.add(
            format!("{at}.tcp_backend"),
            format!("no backend is named `{b}`"),
        ),
        _ => {}
    }
    if l.protocol == ListenerProtocol::Tcp && !l.routes.is_empty() {
        p.add(
            format!("{at}.routes"),
            "a `protocol: tcp` listener has no HTTP routes",
        );
    }
    if l.original_destination {
        if l.protocol == ListenerProtocol::Http {
            p.add(
                format!("{at}.original_destination"),
                "needs `protocol: tcp` or `protocol: detect`: with `http` every connection goes through the routes",
            );
        }
        if l.tls.is_some() {
            p.add(
                format!("{at}.original_destination"),
                "a transparent listener passes the app's own TLS through: leave `tls` out",
            );
        }
    }
    if l.detect_timeout.get().is_zero() {
        p.add(format!("{at}.detect_timeout"), "must be > 0");
    }
    if let Some(inbound) = &l.inbound {
        if config.identity.is_none() {
            p.add(
                format!("{at}.inbound"),
                "needs the proxy's own `identity` (mutual TLS)",
            );
        }
        if l.tls.is_some() {
            p.add(
                format!("{at}.inbound"),
                "an inbound listener does mutual TLS with the mesh identity: leave `tls` out",
            );
        }
        let mut found = Vec::new();
        crate::identity::check_authorization(
            &format!("{at}.inbound.authorization"),
            &inbound.authorization,
            &mut found,
        );
        p.extend(found);
    }
    for (j, r) in l.routes.iter().enumerate() {
        let Some(a) = &r.authorization else { continue };
        let at = format!("{at}.routes[{j}].authorization");
        if l.inbound.is_none() {
            p.add(&at, "only applies on an `inbound` listener");
        }
        let mut found = Vec::new();
        crate::identity::check_authorization(&at, a, &mut found);
        p.extend(found);
    }
}

/// `at` builds the field path, only when there is a problem: these run for
/// every route, backend and endpoint of a 10k-service snapshot.
fn check_name(p: &mut Problems, at: impl FnOnce() -> String, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if !ok {
        p.add(
            at(),
            "must be 1-63 characters of a-z, A-Z, 0-9, '-', '_' or '.'",
        );
    }
}

fn check_host(p: &mut Problems, at: impl FnOnce() -> String, host: &str) {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = host == "*"
        || (!name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            }));
    if !ok {
        p.add(
            at(),
            format!("`{host}` is not a lowercase host name or `*.suffix`"),
        );
    }
}

fn check_limits(p: &mut Problems, at: &str, l: &Limits) {
    if l.max_request_header_bytes < 1024 {
        p.add(format!("{at}.max_request_header_bytes"), "must be >= 1024");
    }
    if l.header_read_timeout.get().is_zero() {
        p.add(format!("{at}.header_read_timeout"), "must be > 0");
    }
    if l.max_connections == 0 {
        p.add(format!("{at}.max_connections"), "must be > 0");
    }
}

/// An address a client can connect to (`match.destinations`, a mesh
/// service's `addresses`): not `0.0.0.0`/`::`, not port 0.
pub fn dialable(a: &std::net::SocketAddr) -> bool {
    !a.ip().is_unspecified() && a.port() != 0
}

#[cfg(test)]
mod tests;

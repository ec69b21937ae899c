//! The mesh file: parsing (unknown fields are errors; enums are written as
//! `{prefix: /api}` like in proxy configs) and validation, every problem with
//! its mesh path (`services[1].routes[0].backends[1].name`) and line.
//!
//! Validation has two layers. The mesh's own rules: unique, well-formed
//! service and workload names, no host claimed by two services, `calls` and
//! route backends that name services, identities (trust domain, namespace,
//! service account) that make a well-formed SPIFFE ID. Then the proxy's own
//! validation runs on one config that calls every service, and on each
//! workload's own part (listeners, app backend); each problem found there is
//! reported at the mesh path it came from. A workload's whole config is its
//! own part plus services already checked, so it has no problem of its own
//! beyond those.

use crate::compile::{self, Origins, Services};
use remora_api::mesh::{Mesh, Workload};
use remora_api::Problem;
use std::collections::{BTreeMap, BTreeSet};

/// Parses and validates a mesh, as for a control plane with a CA; on
/// failure, every problem with its line.
pub fn parse(text: &str) -> Result<Mesh, Vec<Problem>> {
    parse_for(text, true)
}

/// Parses and validates a mesh for a control plane with or without a CA
/// (`with_ca`): without one, an endpoint `identity` is a problem, since
/// mutual TLS needs the proxies' certificates and trust roots.
pub fn parse_for(text: &str, with_ca: bool) -> Result<Mesh, Vec<Problem>> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let mesh: Mesh = match serde_yaml_ng::with::singleton_map_recursive::deserialize(de) {
        Ok(m) => m,
        Err(e) => {
            let line = e
                .location()
                .map(|l| l.line())
                .or_else(|| remora_api::error_line(text));
            let (path, message) = split_serde_message(&e.to_string());
            return Err(vec![Problem {
                path,
                message,
                line,
            }]);
        }
    };
    let mut problems = problems_for(&mesh, with_ca);
    if problems.is_empty() {
        return Ok(mesh);
    }
    for p in &mut problems {
        p.line = remora_api::line_of(text, &p.path);
    }
    // Read top to bottom, like the file (the sort is stable).
    problems.sort_by_key(|p| p.line);
    Err(problems)
}

/// serde_yaml_ng formats errors as `path: message at line L column C`.
pub(crate) fn split_serde_message(msg: &str) -> (String, String) {
    let msg = msg.rfind(" at line ").map_or(msg, |i| &msg[..i]);
    match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_string(), rest.to_string()),
        _ => (String::new(), msg.to_string()),
    }
}

/// Every problem of `mesh` (lines unset) for a control plane with or
/// without a CA (see [`parse_for`]); empty means valid.
pub fn problems_for(mesh: &Mesh, with_ca: bool) -> Vec<Problem> {
    let mut problems = validate(mesh);
    if !with_ca {
        problems.extend(identities_without_ca(mesh));
    }
    problems
}

/// Every problem of `mesh` (lines unset); empty means valid.
pub fn validate(mesh: &Mesh) -> Vec<Problem> {
    let services = compile::index(mesh);
    let mut found = Found::default();
    if !dns_subdomain(&mesh.trust_domain) {
        found.add(
            "trust_domain".to_string(),
            "must be a lowercase DNS name (a-z, 0-9, '-', '.'), such as `cluster.local`",
        );
    }
    if let Some(t) = &mesh.tracing {
        let mut problems = Vec::new();
        remora_api::tracing::check(t, &mut problems);
        for (path, message) in problems {
            found.add(path, message);
        }
    }
    check_services(&mut found, mesh, &services);
    check_workloads(&mut found, mesh, &services);
    // The mesh rules above explain a problem better than the compiled
    // config would: a path they flagged gets nothing more.
    found.flagged = found.problems.iter().map(|p| p.path.clone()).collect();
    let everything = Workload {
        name: String::new(),
        namespace: remora_api::mesh::defaults::namespace(),
        service_account: None,
        outbound: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        admin: remora_api::defaults::admin_address(),
        calls: Vec::new(),
        access_log: false,
        inbound: None,
        transparent: false,
        tracing: None,
    };
    // Compiled as the control plane compiles: endpoint `workload`s resolved.
    let resolved = compile::resolve(mesh);
    let services = compile::index(&resolved);
    check_compiled(&mut found, &services, &everything, None);
    // A workload's config is its own part and some of the services the
    // probe above has already checked: only the own part is left to check
    // (with 10k services and 100 workloads, checking 100 whole configs took
    // seconds).
    let none = Services::new();
    for (wi, w) in mesh.workloads.iter().enumerate() {
        check_compiled(&mut found, &none, w, Some(wi));
    }
    found.problems
}

#[derive(Default)]
struct Found {
    problems: Vec<Problem>,
    seen: BTreeSet<(String, String)>,
    flagged: BTreeSet<String>,
}

impl Found {
    fn add(&mut self, path: String, message: impl Into<String>) {
        let message = message.into();
        if self.flagged.contains(&path) || !self.seen.insert((path.clone(), message.clone())) {
            return;
        }
        self.problems.push(Problem {
            path,
            message,
            line: None,
        });
    }
}

fn check_services(found: &mut Found, mesh: &Mesh, services: &Services<'_>) {
    let mut hosts: BTreeMap<&str, &str> = BTreeMap::new();
    let mut addresses: BTreeMap<std::net::SocketAddr, &str> = BTreeMap::new();
    for (i, s) in mesh.services.iter().enumerate() {
        let at = format!("services[{i}]");
        if !dns_name(&s.name) {
            found.add(
                format!("{at}.name"),
                "must be a lowercase DNS name (a-z, 0-9, '-', '.'), at most 63 characters",
            );
        }
        if services.get(s.name.as_str()).map(|(first, _)| *first) != Some(i) {
            found.add(format!("{at}.name"), format!("`{}` is used twice", s.name));
            continue;
        }
        let names = std::iter::once((format!("{at}.name"), &s.name));
        let aliases = s
            .aliases
            .iter()
            .enumerate()
            .map(|(j, a)| (format!("{at}.aliases[{j}]"), a));
        for (path, host) in names.chain(aliases) {
            match hosts.insert(host, &s.name) {
                Some(other) if other == s.name => {
                    found.add(path, format!("`{host}` is listed twice"))
                }
                Some(other) => found.add(
                    path,
                    format!("`{host}` is already a host of service `{other}`"),
                ),
                None => {}
            }
        }
        for (j, a) in s.addresses.iter().enumerate() {
            let path = format!("{at}.addresses[{j}]");
            if !remora_api::dialable(a) {
                found.add(path, format!("`{a}` is not an address a caller dials"));
                continue;
            }
            match addresses.insert(*a, &s.name) {
                Some(other) if other == s.name => found.add(path, format!("`{a}` is listed twice")),
                Some(other) => found.add(
                    path,
                    format!("`{a}` is already an address of service `{other}`"),
                ),
                None => {}
            }
        }
        for (j, e) in s.endpoints.iter().enumerate() {
            let Some(name) = &e.workload else { continue };
            let at = format!("{at}.endpoints[{j}].workload");
            if e.identity.is_some() {
                found.add(at.clone(), "give `workload` or `identity`, not both");
            }
            match mesh.workloads.iter().find(|w| &w.name == name) {
                None => found.add(at, format!("no workload is named `{name}`")),
                Some(w) => match &w.inbound {
                    None => found.add(at, format!("workload `{name}` has no `inbound`")),
                    Some(inbound) if inbound.address != e.address => found.add(
                        at,
                        format!(
                            "workload `{name}` takes calls at {}, not {}",
                            inbound.address, e.address
                        ),
                    ),
                    Some(_) => {}
                },
            }
        }
        for (j, r) in s.routes.iter().enumerate() {
            let at = format!("{at}.routes[{j}]");
            if !r.matches.hosts.is_empty() {
                found.add(
                    format!("{at}.match.hosts"),
                    "a service's routes match its name and aliases: leave `hosts` out",
                );
            }
            if !r.matches.destinations.is_empty() {
                found.add(
                    format!("{at}.match.destinations"),
                    "a service's routes match its `addresses`: leave `destinations` out",
                );
            }
            for (k, b) in r.backends.iter().enumerate() {
                if !services.contains_key(b.name.as_str()) {
                    found.add(
                        format!("{at}.backends[{k}].name"),
                        format!("no service is named `{}`", b.name),
                    );
                }
            }
        }
    }
}

fn check_workloads(found: &mut Found, mesh: &Mesh, services: &Services<'_>) {
    let mut names = BTreeSet::new();
    for (i, w) in mesh.workloads.iter().enumerate() {
        let at = format!("workloads[{i}]");
        let ok = !w.name.is_empty()
            && w.name.len() <= 63
            && w.name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
        if !ok {
            found.add(
                format!("{at}.name"),
                "must be 1-63 characters of a-z, A-Z, 0-9, '-', '_' or '.'",
            );
        }
        if !names.insert(&w.name) {
            found.add(format!("{at}.name"), format!("`{}` is used twice", w.name));
        }
        check_identity(found, &at, w);
        for (j, c) in w.calls.iter().enumerate() {
            if !services.contains_key(c.as_str()) {
                found.add(
                    format!("{at}.calls[{j}]"),
                    format!("no service is named `{c}`"),
                );
            }
        }
    }
}

/// Every endpoint `identity`, as a problem for a control plane without a CA.
fn identities_without_ca(mesh: &Mesh) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, s) in mesh.services.iter().enumerate() {
        for (j, e) in s.endpoints.iter().enumerate() {
            let field = match (&e.identity, &e.workload) {
                (Some(_), _) => "identity",
                (None, Some(_)) => "workload",
                (None, None) => continue,
            };
            {
                problems.push(Problem {
                    path: format!("services[{i}].endpoints[{j}].{field}"),
                    message:
                        "mutual TLS needs a CA: start the control plane with --ca-cert and --ca-key"
                            .into(),
                    line: None,
                });
            }
        }
    }
    for (i, w) in mesh.workloads.iter().enumerate() {
        if w.inbound.is_some() {
            problems.push(Problem {
                path: format!("workloads[{i}].inbound"),
                message:
                    "mutual TLS needs a CA: start the control plane with --ca-cert and --ca-key"
                        .into(),
                line: None,
            });
        }
    }
    problems
}

/// The workload's namespace and service account, the last two parts of
/// its SPIFFE ID, are Kubernetes names.
fn check_identity(found: &mut Found, at: &str, w: &Workload) {
    if !dns_label(&w.namespace) {
        found.add(
            format!("{at}.namespace"),
            "must be a DNS label: 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
        );
    }
    match &w.service_account {
        Some(sa) if !dns_subdomain(sa) => found.add(
            format!("{at}.service_account"),
            "must be a lowercase DNS name (a-z, 0-9, '-', '.')",
        ),
        None if !w.name.is_empty() && !dns_subdomain(&w.name) => found.add(
            format!("{at}.name"),
            "is not a valid service account (lowercase a-z, 0-9, '-', '.'): set `service_account`",
        ),
        _ => {}
    }
}

/// A DNS label (RFC 1123): 1-63 of a-z, 0-9, '-', not at either end.
pub fn dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS labels joined by dots, at most 253 characters.
pub fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

fn dns_name(name: &str) -> bool {
    name.len() <= 63
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}

/// Runs the proxy's validation on the config compiled for `w` (the workload
/// at index `wi`, or `None` for the probe that calls every service).
fn check_compiled(found: &mut Found, services: &Services<'_>, w: &Workload, wi: Option<usize>) {
    let mut origins = Origins::default();
    let mut config = compile::workload_config(services, w, &mut origins);
    // As sent with a CA, whose roots are not the mesh's: endpoint identities
    // need the proxy's own (`parse_for` says when there is no CA).
    config.identity = Some(remora_api::IdentityConfig {
        trust_roots: vec![String::new()],
        ..Default::default()
    });
    for p in remora_api::validate(&config) {
        match (mesh_path(&origins, &p.path), wi) {
            (Some(path), _) => found.add(path, p.message),
            (None, Some(wi)) => found.add(workload_path(wi, &p.path), p.message),
            (None, None) => {}
        }
    }
}

/// The mesh path of a problem in a compiled config, when it lies in a
/// service (a route or a backend); `None` when it is the workload's.
fn mesh_path(origins: &Origins, path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix("backends[") {
        let (index, suffix) = index_and_rest(rest)?;
        let si = origins.backends.get(index)?;
        // Backend fields copied from the service have the same names.
        return Some(format!("services[{si}]{suffix}"));
    }
    let rest = path.strip_prefix("listeners[0].routes[")?;
    let (index, suffix) = index_and_rest(rest)?;
    let (si, ri) = *origins.routes.get(index)?;
    let service = format!("services[{si}]");
    if let Some(host) = suffix.strip_prefix(".match.hosts[") {
        return Some(match index_and_rest(host)? {
            (0, _) => format!("{service}.name"),
            (h, _) => format!("{service}.aliases[{}]", h - 1),
        });
    }
    Some(match ri {
        Some(ri) => format!("{service}.routes[{ri}]{suffix}"),
        None if suffix == ".name" => format!("{service}.name"),
        None => service,
    })
}

/// The mesh path of a problem in a workload's own settings.
fn workload_path(wi: usize, path: &str) -> String {
    let field = match path {
        p if p.starts_with("admin") => ".admin",
        "listeners[0].address" => ".outbound",
        "listeners[0].access_log" => ".access_log",
        p if p.starts_with("listeners[1]") => ".inbound",
        p if p.starts_with("tracing.") => return format!("workloads[{wi}].{p}"),
        _ => "",
    };
    format!("workloads[{wi}]{field}")
}

/// `3].rest` → `(3, ".rest")`.
fn index_and_rest(s: &str) -> Option<(usize, &str)> {
    let (index, rest) = s.split_once(']')?;
    Some((index.parse().ok()?, rest))
}

#[cfg(test)]
mod tests;

//! Gateway API routes in the mesh (GAMMA): an HTTPRoute or GRPCRoute whose
//! `parentRefs` names a Service of its own namespace gives that service its
//! routes. Each match of each rule is one mesh route named
//! `<route>-<rule>[-<match>]` (`grpc-` in front for a GRPCRoute), ordered
//! by Gateway API precedence (exact path, regex, longest prefix; a method;
//! more headers; then the oldest route, then namespace/name, then rule and
//! match order), since the proxy takes the first route that matches.
//!
//! What the model says: path exact/prefix/regex, headers exact/regex, the
//! method; weighted Service backends; request and response header
//! modifiers, redirects (with a full path), URL rewrites of the host and a
//! path prefix; `timeouts.request` (and `backendRequest`, taken as the
//! route's timeout when shorter). What it does not is reported with the
//! route's name: a match on query parameters (that match is left out), a
//! `ReplaceFullPath` rewrite or a `ReplacePrefixMatch` redirect (the rule
//! is left out), mirrors, CORS and backend filters (the filter is left
//! out), parents in other namespaces or on a port the Service does not have
//! (the parent is left out; a parent without a port is each of its TCP
//! ports), backends in other namespaces or outside the mesh (the backend is
//! left out; a rule with none left answers 500, as Gateway API says).
//! Parents that are not Services (Gateways) are another controller's.
//! [`http`] and [`grpc`] translate the rules of each kind.

use super::services::of_service;
use super::{sorted, ObjRef, ObjectProblem, Services};
use remora_api::{
    DirectResponse, Duration, HeaderMatch, HeaderOps, Route, RouteMatch, WeightedBackend,
};
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// Sorts routes by Gateway API precedence (smaller first).
pub(super) type Key = (
    u8,
    Reverse<usize>,
    u8,
    Reverse<usize>,
    String,
    String,
    String,
    usize,
    usize,
);

/// A route's parentRefs as (group, kind, name, namespace, port): HTTPRoute
/// and GRPCRoute each have their own generated type of the same shape.
macro_rules! parent_refs {
    ($route:expr) => {
        $route.spec.parent_refs.iter().flatten().map(|p| {
            (
                p.group.as_deref(),
                p.kind.as_deref(),
                &p.name,
                p.namespace.as_deref(),
                p.port,
            )
        })
    };
}

/// A header match: exact, or a regular expression.
pub(super) fn header_match(name: &str, value: &str, regex: bool) -> HeaderMatch {
    HeaderMatch {
        name: name.to_ascii_lowercase(),
        exact: (!regex).then(|| value.to_string()),
        regex: regex.then(|| value.to_string()),
        present: None,
    }
}

/// Gives every service of `services` the routes of the HTTPRoutes and
/// GRPCRoutes attached to it.
pub fn attach(
    cluster: &super::Cluster,
    services: &mut Services,
    problems: &mut Vec<ObjectProblem>,
) {
    let mut found: BTreeMap<String, Vec<(Key, Route, ObjRef)>> = BTreeMap::new();
    for (_, route) in sorted(&cluster.http_routes) {
        let obj = ObjRef::of("HTTPRoute", route);
        let created = created(route);
        let parents = parent_refs!(route);
        for target in parents_in_mesh(parents, &obj, services, problems) {
            for (i, rule) in route.spec.rules.iter().flatten().enumerate() {
                for (j, key, r) in super::http::rule(rule, &obj, services, problems) {
                    let key = ordered(key, &created, &obj, i, j);
                    let r = named(
                        r,
                        &target,
                        &obj.name,
                        "",
                        i,
                        j,
                        super::http::rule_matches(rule),
                    );
                    found
                        .entry(target.clone())
                        .or_default()
                        .push((key, r, obj.clone()));
                }
            }
        }
    }
    for (_, route) in sorted(&cluster.grpc_routes) {
        let obj = ObjRef::of("GRPCRoute", route);
        let created = created(route);
        let parents = parent_refs!(route);
        for target in parents_in_mesh(parents, &obj, services, problems) {
            for (i, rule) in route.spec.rules.iter().flatten().enumerate() {
                let n = rule.matches.as_ref().map_or(1, Vec::len);
                for (j, key, r) in super::grpc::rule(rule, &obj, services, problems) {
                    let key = ordered(key, &created, &obj, i, j);
                    let r = named(r, &target, &obj.name, "grpc-", i, j, n);
                    found
                        .entry(target.clone())
                        .or_default()
                        .push((key, r, obj.clone()));
                }
            }
        }
    }
    for (target, mut routes) in found {
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(s) = services.get_mut(&target) {
            for (_, r, obj) in routes {
                s.service.routes.push(r);
                s.route_objs.push(obj);
            }
        }
    }
}

fn created<K: kube::Resource>(obj: &K) -> String {
    obj.meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

fn ordered(key: (u8, usize, u8, usize), created: &str, obj: &ObjRef, i: usize, j: usize) -> Key {
    (
        key.0,
        Reverse(key.1),
        key.2,
        Reverse(key.3),
        created.to_string(),
        obj.namespace.clone(),
        obj.name.clone(),
        i,
        j,
    )
}

/// `<route>-<rule>[-<match>]`, short enough for the proxy's route names
/// (`<service>.<name>`, 63 characters), else a hash of it.
fn named(
    mut r: Route,
    service: &str,
    route: &str,
    prefix: &str,
    i: usize,
    j: usize,
    n: usize,
) -> Route {
    let mut name = format!("{prefix}{route}-{i}");
    if n > 1 {
        name = format!("{name}-{j}");
    }
    if service.len() + 1 + name.len() > 63 {
        name = format!("r-{}", &crate::compile::version_of(&name)[..12]);
    }
    r.name = name;
    r
}

pub(super) type Parent<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    &'a String,
    Option<&'a str>,
    Option<i32>,
);

/// The mesh names of the Services a route attaches to.
fn parents_in_mesh<'a>(
    parents: impl Iterator<Item = Parent<'a>>,
    obj: &ObjRef,
    services: &Services,
    problems: &mut Vec<ObjectProblem>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (group, kind, name, ns, port) in parents {
        let core = matches!(group, None | Some("" | "core"));
        if !(core && kind == Some("Service")) {
            continue; // a Gateway's route: not the mesh's
        }
        if ns.is_some_and(|ns| ns != obj.namespace) {
            problems.push(obj.problem(format!(
                "parent Service {}/{name}: routes for a Service of another namespace are not supported",
                ns.unwrap_or_default()
            )));
            continue;
        }
        // No port: every TCP port of the Service (as Gateway API says).
        let mut found = of_service(services, &obj.namespace, name, port).peekable();
        if found.peek().is_none() {
            let message = match (
                port,
                of_service(services, &obj.namespace, name, None).next(),
            ) {
                (_, None) => format!(
                    "parent Service {name} is not in the mesh (no such Service with a TCP port)"
                ),
                (p, Some(_)) => format!(
                    "parent Service {name} port {}: the Service has no such TCP port",
                    p.unwrap_or_default()
                ),
            };
            problems.push(obj.problem(message));
            continue;
        }
        for s in found {
            if !out.contains(&s.service.name) {
                out.push(s.service.name.clone());
            }
        }
    }
    out
}

/// A Service backend as a mesh backend, or why it cannot be one.
fn backend(
    (group, kind, name, ns, port, weight, _): BackendRef<'_>,
    obj: &ObjRef,
    services: &Services,
) -> Result<Option<WeightedBackend>, String> {
    if !matches!(group, None | Some("" | "core")) || !matches!(kind, None | Some("Service")) {
        return Err(format!(
            "backend {name}: only Service backends are supported"
        ));
    }
    if ns.is_some_and(|ns| ns != obj.namespace) {
        return Err(format!(
            "backend {}/{name}: backends in another namespace are not supported",
            ns.unwrap_or_default()
        ));
    }
    // No port (Gateway API requires one for a Service): its first.
    let Some(s) = of_service(services, &obj.namespace, name, None).find(|s| match port {
        Some(p) => s.port == p,
        None => s.first,
    }) else {
        return Err(match port {
            Some(p)
                if of_service(services, &obj.namespace, name, None)
                    .next()
                    .is_some() =>
            {
                format!("backend {name} port {p}: the Service has no such TCP port")
            }
            _ => format!("backend {name}: no Service with a TCP port in the mesh"),
        });
    };
    match weight.unwrap_or(1) {
        0 => Ok(None),
        w if w < 0 => Err(format!("backend {name}: weight {w} is negative")),
        w => Ok(Some(WeightedBackend {
            name: s.service.name.clone(),
            weight: u32::try_from(w).unwrap_or(1),
        })),
    }
}

/// Weights above the proxy's 10000 scaled down together.
pub(super) fn scale(backends: &mut [WeightedBackend]) {
    let max = backends.iter().map(|b| b.weight).max().unwrap_or(1);
    if max > 10_000 {
        let div = max.div_ceil(10_000);
        for b in backends {
            b.weight = (b.weight / div).max(1);
        }
    }
}

/// A Gateway API duration (`1h30m`, `500ms`); `0s` (no timeout) is `None`.
pub fn gateway_duration(s: &str) -> Result<Option<Duration>, String> {
    let bad = || format!("`{s}` is not a duration like 10s, 500ms or 1h30m");
    let mut total = std::time::Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (std::time::Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (std::time::Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (std::time::Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (std::time::Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        total += unit * u32::try_from(n).map_err(|_| bad())?;
        rest = &rest[len..];
    }
    Ok((!total.is_zero()).then_some(Duration(total)))
}

/// A Gateway API header modifier as [`HeaderOps`]: HTTPRoute and GRPCRoute
/// filters each have their own generated type of the same shape.
macro_rules! modifier_ops {
    ($m:expr) => {
        $crate::k8s::translate::routes::header_ops(
            $m.add
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str())),
            $m.set
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str())),
            $m.remove.as_deref().unwrap_or_default(),
        )
    };
}
pub(super) use modifier_ops;

pub(super) fn header_ops<'a>(
    add: impl Iterator<Item = (&'a str, &'a str)>,
    set: impl Iterator<Item = (&'a str, &'a str)>,
    remove: &[String],
) -> HeaderOps {
    let lower = |(n, v): (&str, &str)| (n.to_ascii_lowercase(), v.to_string());
    HeaderOps {
        add: add.map(lower).collect(),
        set: set.map(lower).collect(),
        remove: remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    }
}

pub(super) fn route(matches: RouteMatch) -> Route {
    Route {
        name: String::new(),
        matches,
        backends: Vec::new(),
        direct_response: None,
        redirect: None,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        rewrite: None,
        timeout: None,
        idle_timeout: None,
        retry: None,
        rate_limit: None,
        fault: None,
        authorization: None,
        edge: None,
    }
}

pub(super) fn fail(status: u16, body: &str) -> DirectResponse {
    DirectResponse {
        status,
        body: body.to_string(),
        content_type: "text/plain".into(),
    }
}

/// A precedence key without the tie-breakers, and the match.
/// The routes of a rule: (match index, precedence key, route).
pub(super) type Ranked = Vec<(usize, (u8, usize, u8, usize), Route)>;

pub(super) type Matched = ((u8, usize, u8, usize), RouteMatch);

/// Redirect, or backends, or a 500 when no backend is left.
pub(super) fn finish(r: &mut Route) {
    if r.redirect.is_some() {
        r.backends.clear();
    } else if r.backends.is_empty() && r.direct_response.is_none() {
        r.direct_response = Some(fail(500, "no valid backend for this route\n"));
    }
    scale(&mut r.backends);
}

/// The routes of a rule's matches, each with its match's index.
pub(super) fn collect(
    matches: Vec<Result<Matched, String>>,
    base: Route,
    obj: &ObjRef,
    problems: &mut Vec<ObjectProblem>,
) -> Ranked {
    let mut out = Vec::new();
    for (j, m) in matches.into_iter().enumerate() {
        match m {
            Ok((key, matches)) => out.push((
                j,
                key,
                Route {
                    matches,
                    ..base.clone()
                },
            )),
            Err(e) => problems.push(obj.problem(e)),
        }
    }
    out
}

/// A backendRef's fields: group, kind, name, namespace, port, weight, and
/// whether it has filters.
pub(super) type BackendRef<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
    Option<&'a str>,
    Option<i32>,
    Option<i32>,
    bool,
);

/// Adds the backends of `refs` that the mesh has to `r`, reporting the others.
pub(super) fn add_backends<'a>(
    refs: impl Iterator<Item = BackendRef<'a>>,
    r: &mut Route,
    obj: &ObjRef,
    services: &Services,
    problems: &mut Vec<ObjectProblem>,
) {
    for b in refs {
        let (name, filters) = (b.2, b.6);
        if filters {
            problems.push(obj.problem(format!(
                "backend {name}: backend filters are not supported and are left out"
            )));
        }
        match backend(b, obj, services) {
            Ok(Some(w)) => r.backends.push(w),
            Ok(None) => {}
            Err(e) => problems.push(obj.problem(e)),
        }
    }
}

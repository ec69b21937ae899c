//! GRPCRoute rules as mesh routes (see [`super::routes`]): a method match
//! is a path match, `/<service>/<method>`.

use super::routes::{
    add_backends, collect, fail, finish, header_match, modifier_ops, route, Matched, Ranked,
};
use super::{ObjRef, ObjectProblem, Services};
use gateway_api::apis::standard::grpcroutes::{
    GrpcRouteRules, GrpcRouteRulesMatchesHeadersType, GrpcRouteRulesMatchesMethodType,
};
use remora_api::{HeaderMatch, PathMatch, RouteMatch};

/// The mesh routes of one GRPCRoute rule: a method match is a path match
/// (`/<service>/<method>`).
pub(super) fn rule(
    rule: &GrpcRouteRules,
    obj: &ObjRef,
    services: &Services,
    problems: &mut Vec<ObjectProblem>,
) -> Ranked {
    let mut base = route(RouteMatch::default());
    for f in rule.filters.iter().flatten() {
        if let Some(m) = &f.request_header_modifier {
            base.request_headers = modifier_ops!(m);
        } else if let Some(m) = &f.response_header_modifier {
            base.response_headers = modifier_ops!(m);
        } else if f.extension_ref.is_some() {
            base.direct_response = Some(fail(500, "this route's filter is not supported\n"));
            problems
                .push(obj.problem("ExtensionRef filters are not supported: the rule answers 500"));
        } else {
            problems.push(obj.problem("RequestMirror filters are not supported and are left out"));
        }
    }
    let refs = rule.backend_refs.iter().flatten().map(|b| {
        let filters = b.filters.as_ref().is_some_and(|f| !f.is_empty());
        let (ns, kind, group) = (
            b.namespace.as_deref(),
            b.kind.as_deref(),
            b.group.as_deref(),
        );
        (group, kind, b.name.as_str(), ns, b.port, b.weight, filters)
    });
    add_backends(refs, &mut base, obj, services, problems);
    finish(&mut base);
    let any = "[^/]+";
    let matches: Vec<Result<Matched, String>> = match rule.matches.as_deref() {
        None | Some([]) => vec![Ok((
            (2, 1, 1, 0),
            RouteMatch {
                path: Some(PathMatch::Prefix("/".into())),
                ..Default::default()
            },
        ))],
        Some(ms) => ms
            .iter()
            .map(|m| {
                let method = m.method.clone().unwrap_or_default();
                let regex = matches!(
                    method.r#type,
                    Some(GrpcRouteRulesMatchesMethodType::RegularExpression)
                );
                let (rank, path) =
                    match (regex, method.service.as_deref(), method.method.as_deref()) {
                        (false, Some(s), Some(m)) => (0, PathMatch::Exact(format!("/{s}/{m}"))),
                        (false, Some(s), None) => (2, PathMatch::Prefix(format!("/{s}"))),
                        (false, None, None) => (2, PathMatch::Prefix("/".into())),
                        (false, None, Some(m)) => {
                            (1, PathMatch::Regex(format!("/{any}/{}", regex_escape(m))))
                        }
                        (true, s, m) => (
                            1,
                            PathMatch::Regex(format!("/{}/{}", s.unwrap_or(any), m.unwrap_or(any))),
                        ),
                    };
                let len = match &path {
                    PathMatch::Exact(p) | PathMatch::Prefix(p) | PathMatch::Regex(p) => p.len(),
                };
                let headers: Vec<HeaderMatch> = m
                    .headers
                    .iter()
                    .flatten()
                    .map(|h| {
                        let regex = matches!(
                            h.r#type,
                            Some(GrpcRouteRulesMatchesHeadersType::RegularExpression)
                        );
                        header_match(&h.name, &h.value, regex)
                    })
                    .collect();
                Ok((
                    (rank, len, 1, headers.len()),
                    RouteMatch {
                        hosts: Vec::new(),
                        path: Some(path),
                        methods: Vec::new(),
                        headers,
                        destinations: Vec::new(),
                    },
                ))
            })
            .collect(),
    };
    collect(matches, base, obj, problems)
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

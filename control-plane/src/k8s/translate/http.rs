//! HTTPRoute rules as mesh routes (see [`super::routes`]).

use super::routes::{
    add_backends, collect, fail, finish, gateway_duration, header_match, modifier_ops, route,
    Matched, Ranked,
};
use super::{ObjRef, ObjectProblem, Services};
use gateway_api::apis::standard::httproutes::{
    HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersRequestRedirectPathType,
    HttpRouteRulesFiltersUrlRewritePathType, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType,
};
use remora_api::{HeaderMatch, PathMatch, Redirect, Rewrite, Route, RouteMatch};

pub(super) fn rule_matches(rule: &HttpRouteRules) -> usize {
    rule.matches.as_ref().map_or(1, |m| m.len().max(1))
}

fn matched(m: &HttpRouteRulesMatches) -> Result<Matched, String> {
    if m.query_params.as_ref().is_some_and(|q| !q.is_empty()) {
        return Err("a match on query parameters is not supported: that match is left out".into());
    }
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".into());
    let kind = m.path.as_ref().and_then(|p| p.r#type.clone());
    let (rank, path) = match kind {
        Some(HttpRouteRulesMatchesPathType::Exact) => (0, PathMatch::Exact(value.clone())),
        Some(HttpRouteRulesMatchesPathType::RegularExpression) => {
            (1, PathMatch::Regex(value.clone()))
        }
        _ => (2, PathMatch::Prefix(value.clone())),
    };
    let headers: Vec<HeaderMatch> = m
        .headers
        .iter()
        .flatten()
        .map(|h| {
            let regex = matches!(
                h.r#type,
                Some(HttpRouteRulesMatchesHeadersType::RegularExpression)
            );
            header_match(&h.name, &h.value, regex)
        })
        .collect();
    let methods: Vec<String> = m
        .method
        .iter()
        .filter_map(|x| serde_json::to_value(x).ok()?.as_str().map(str::to_string))
        .collect();
    let key = (
        rank,
        value.len(),
        u8::from(methods.is_empty()),
        headers.len(),
    );
    Ok((
        key,
        RouteMatch {
            hosts: Vec::new(),
            path: Some(path),
            methods,
            headers,
            destinations: Vec::new(),
        },
    ))
}

/// The mesh routes of one HTTPRoute rule, one per match.
pub(super) fn rule(
    rule: &HttpRouteRules,
    obj: &ObjRef,
    services: &Services,
    problems: &mut Vec<ObjectProblem>,
) -> Ranked {
    let mut base = route(RouteMatch::default());
    let mut broken = false;
    for f in rule.filters.iter().flatten() {
        if let Err((why, rule_out)) = filter(f, &mut base) {
            problems.push(obj.problem(why));
            broken |= rule_out;
        }
    }
    if let Some(t) = &rule.timeouts {
        let parsed = [&t.request, &t.backend_request]
            .into_iter()
            .flatten()
            .map(|d| gateway_duration(d));
        for d in parsed {
            match d {
                Ok(Some(d)) => base.timeout = Some(base.timeout.map_or(d, |t| t.min(d))),
                Ok(None) => {}
                Err(e) => problems.push(obj.problem(format!("timeouts: {e}"))),
            }
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
    if broken {
        return Vec::new();
    }
    finish(&mut base);
    let matches = match rule.matches.as_deref() {
        None | Some([]) => vec![Ok((
            (2, 1, 1, 0),
            RouteMatch {
                path: Some(PathMatch::Prefix("/".into())),
                ..Default::default()
            },
        ))],
        Some(ms) => ms.iter().map(matched).collect(),
    };
    collect(matches, base, obj, problems)
}

/// Applies one filter; `Err((why, the rule is left out))`.
fn filter(f: &HttpRouteRulesFilters, r: &mut Route) -> Result<(), (String, bool)> {
    if let Some(m) = &f.request_header_modifier {
        r.request_headers = modifier_ops!(m);
    } else if let Some(m) = &f.response_header_modifier {
        r.response_headers = modifier_ops!(m);
    } else if let Some(rd) = &f.request_redirect {
        let path = match &rd.path {
            None => None,
            Some(p)
                if p.r#type == HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath =>
            {
                p.replace_full_path.clone()
            }
            Some(_) => {
                return Err((
                    "a redirect with ReplacePrefixMatch is not supported: the rule is left out"
                        .into(),
                    true,
                ))
            }
        };
        let scheme = rd
            .scheme
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok()?.as_str().map(str::to_string));
        r.redirect = Some(Redirect {
            status: rd
                .status_code
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(302),
            scheme,
            host: rd.hostname.clone(),
            port: rd.port.and_then(|p| u16::try_from(p).ok()),
            path,
        });
    } else if let Some(rw) = &f.url_rewrite {
        let path_prefix = match &rw.path {
            None => None,
            Some(p) if p.r#type == HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch => {
                p.replace_prefix_match.clone()
            }
            Some(_) => {
                return Err((
                    "a URL rewrite with ReplaceFullPath is not supported: the rule is left out"
                        .into(),
                    true,
                ))
            }
        };
        r.rewrite = Some(Rewrite {
            host: rw.hostname.clone(),
            path_prefix,
        });
    } else if f.extension_ref.is_some() {
        r.direct_response = Some(fail(500, "this route's filter is not supported\n"));
        return Err((
            "ExtensionRef filters are not supported: the rule answers 500".into(),
            false,
        ));
    } else if f.request_mirror.is_some() {
        return Err((
            "RequestMirror filters are not supported and are left out".into(),
            false,
        ));
    } else if f.cors.is_some() {
        return Err((
            "CORS filters are not supported and are left out".into(),
            false,
        ));
    }
    Ok(())
}

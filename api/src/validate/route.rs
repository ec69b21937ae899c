//! A route's checks: its match (hosts, with an optional port; path;
//! methods; headers; destinations), its action and its policies.

use super::{check_host, dialable, Problems};
use crate::model::*;
use std::collections::HashSet;

/// A `match.hosts` entry split into its host (`api.example.com`,
/// `*.example.com`, `*`) and its port, if it names one (`api.example.com:9090`
/// matches that host only at port 9090). `Err` for a port that is not a
/// number from 1 to 65535, or a port on `*`.
pub fn route_host(entry: &str) -> Result<(&str, Option<u16>), String> {
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Ok((entry, None));
    };
    if host == "*" {
        return Err("`*` (any host) takes no port".into());
    }
    match port.parse::<u16>() {
        Ok(n) if n > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((host, Some(n))),
        _ => Err(format!("`{port}` is not a port (1 to 65535)")),
    }
}

const STANDARD_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

pub(super) fn check_route(p: &mut Problems, at: &str, r: &Route, backends: &HashSet<&str>) {
    let m = &r.matches;
    for (k, h) in m.hosts.iter().enumerate() {
        let at = || format!("{at}.match.hosts[{k}]");
        match route_host(h) {
            Ok((host, _)) => check_host(p, at, host),
            Err(e) => p.add(at(), format!("`{h}`: {e}")),
        }
    }
    for (k, d) in m.destinations.iter().enumerate() {
        if !dialable(d) {
            p.add(
                format!("{at}.match.destinations[{k}]"),
                format!("`{d}` is not an address a client dials"),
            );
        }
    }
    match &m.path {
        Some(PathMatch::Exact(s)) | Some(PathMatch::Prefix(s)) if !s.starts_with('/') => {
            p.add(format!("{at}.match.path"), "must start with '/'");
        }
        Some(PathMatch::Regex(re)) => check_regex(p, &format!("{at}.match.path.regex"), re),
        _ => {}
    }
    for (k, meth) in m.methods.iter().enumerate() {
        let upper = meth.to_ascii_uppercase();
        if http::Method::from_bytes(meth.as_bytes()).is_err() || meth.is_empty() {
            p.add(
                format!("{at}.match.methods[{k}]"),
                format!("`{meth}` is not a method"),
            );
        } else if upper != *meth && STANDARD_METHODS.contains(&upper.as_str()) {
            p.add(
                format!("{at}.match.methods[{k}]"),
                format!("methods are case-sensitive: write `{upper}`"),
            );
        }
    }
    for (k, h) in m.headers.iter().enumerate() {
        let at = format!("{at}.match.headers[{k}]");
        check_header_name(p, &format!("{at}.name"), &h.name);
        let set = [h.exact.is_some(), h.regex.is_some(), h.present.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            p.add(&at, "needs exactly one of `exact`, `regex` and `present`");
        }
        if let Some(re) = &h.regex {
            check_regex(p, &format!("{at}.regex"), re);
        }
    }
    let actions = [
        !r.backends.is_empty(),
        r.direct_response.is_some(),
        r.redirect.is_some(),
    ];
    if actions.iter().filter(|a| **a).count() != 1 {
        p.add(
            at,
            "needs exactly one of `backends`, `direct_response` and `redirect`",
        );
    }
    for (k, b) in r.backends.iter().enumerate() {
        if !backends.contains(b.name.as_str()) {
            p.add(
                format!("{at}.backends[{k}].name"),
                format!("no backend is named `{}`", b.name),
            );
        }
        check_weight(p, || format!("{at}.backends[{k}].weight"), b.weight);
    }
    if let Some(d) = &r.direct_response {
        if !(200..=599).contains(&d.status) {
            p.add(format!("{at}.direct_response.status"), "must be 200-599");
        }
        if http::HeaderValue::from_str(&d.content_type).is_err() {
            p.add(
                format!("{at}.direct_response.content_type"),
                "is not a valid header value",
            );
        }
    }
    if let Some(rd) = &r.redirect {
        if ![301, 302, 303, 307, 308].contains(&rd.status) {
            p.add(
                format!("{at}.redirect.status"),
                "must be 301, 302, 303, 307 or 308",
            );
        }
        if let Some(s) = &rd.scheme {
            if s != "http" && s != "https" {
                p.add(format!("{at}.redirect.scheme"), "must be http or https");
            }
        }
        if let Some(h) = &rd.host {
            if h.contains('*') {
                p.add(
                    format!("{at}.redirect.host"),
                    "must be a host name, not a pattern",
                );
            } else {
                check_host(p, || format!("{at}.redirect.host"), h);
            }
        }
        if let Some(path) = &rd.path {
            if !path.starts_with('/') {
                p.add(format!("{at}.redirect.path"), "must start with '/'");
            }
        }
    }
    check_header_ops(p, &format!("{at}.request_headers"), &r.request_headers);
    check_header_ops(p, &format!("{at}.response_headers"), &r.response_headers);
    if let Some(rw) = &r.rewrite {
        if let Some(h) = &rw.host {
            if http::uri::Authority::try_from(h.as_str()).is_err() {
                p.add(format!("{at}.rewrite.host"), format!("`{h}` is not a host"));
            }
        }
        if let Some(prefix) = &rw.path_prefix {
            if !matches!(m.path, Some(PathMatch::Prefix(_))) {
                p.add(
                    format!("{at}.rewrite.path_prefix"),
                    "needs a `prefix` path match",
                );
            }
            if !prefix.starts_with('/') {
                p.add(format!("{at}.rewrite.path_prefix"), "must start with '/'");
            }
        }
    }
    if let Some(t) = r.timeout {
        if t.get().is_zero() {
            p.add(format!("{at}.timeout"), "must be > 0");
        }
    }
    if let Some(t) = r.idle_timeout {
        if t.get().is_zero() {
            p.add(format!("{at}.idle_timeout"), "must be > 0");
        }
    }
    let mut found = Vec::new();
    if let Some(retry) = &r.retry {
        retry.check(&format!("{at}.retry"), &mut found);
        if r.backends.is_empty() {
            found.push((
                format!("{at}.retry"),
                "needs `backends`: only forwarded requests are retried".into(),
            ));
        }
    }
    if let Some(rl) = &r.rate_limit {
        rl.check(&format!("{at}.rate_limit"), &mut found);
    }
    if let Some(f) = &r.fault {
        f.check(&format!("{at}.fault"), &mut found);
    }
    p.extend(found);
}

const MAX_WEIGHT: u32 = 10_000;

pub(super) fn check_weight(p: &mut Problems, at: impl FnOnce() -> String, w: u32) {
    if w == 0 {
        p.add(at(), "must be > 0");
    } else if w > MAX_WEIGHT {
        p.add(at(), format!("must be <= {MAX_WEIGHT}"));
    }
}

fn check_regex(p: &mut Problems, at: &str, re: &str) {
    if let Err(e) = regex::Regex::new(re) {
        let first = e.to_string();
        let last = first.lines().last().unwrap_or_default().trim().to_string();
        p.add(at, format!("invalid regex: {last}"));
    }
}

pub(super) fn check_header_name(p: &mut Problems, at: &str, name: &str) {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        p.add(at, format!("`{name}` is not a header name"));
    }
}

fn check_header_ops(p: &mut Problems, at: &str, ops: &HeaderOps) {
    for (kind, map) in [("add", &ops.add), ("set", &ops.set)] {
        for (name, value) in map {
            check_header_name(p, &format!("{at}.{kind}.{name}"), name);
            if http::HeaderValue::from_str(value).is_err() {
                p.add(format!("{at}.{kind}.{name}"), "is not a valid header value");
            }
        }
    }
    for (k, name) in ops.remove.iter().enumerate() {
        check_header_name(p, &format!("{at}.remove[{k}]"), name);
    }
}

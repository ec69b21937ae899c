//! `router`: route selection (`remora_proxy::http::router::Router`) over a
//! small fuzzed set of routes and a fuzzed request (host, method, path,
//! headers), both built with `arbitrary` from few names so they meet.
//!
//! Invariants: no panic; routes that `validate` accepts compile; `find`
//! picks the route the documented order picks (checked against a plain
//! model here): the exact host's routes, else those of the longest
//! matching `*.suffix`, else those without hosts (which join every list),
//! the first in file order whose path, methods and headers all match.

use arbitrary::{Arbitrary, Unstructured};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use remora_api::{Config, Listener, PathMatch, Route};
use remora_proxy::http::router::Router;
use serde_json::json;

const HOSTS: &[&str] = &[
    "a.example.com",
    "b.a.example.com",
    "example.com",
    "x.y",
    "*",
];
const SUFFIXES: &[&str] = &["*.example.com", "*.a.example.com", "*.y", "*.com"];
const PATHS: &[&str] = &["/", "/api", "/api/", "/api/v1", "/apix", "//", "/a/b", ""];
const METHODS: &[&str] = &["GET", "POST", "HEAD", "PURGE", "get"];
const HEADERS: &[&str] = &["x-a", "x-b", "X-A"];
const VALUES: &[&str] = &["1", "one", "", "a b", "é"];
const REGEXES: &[&str] = &["/api/.*", "[0-9]+", "(a|b)", ".*", "x{2,3}"];

#[derive(Debug, Arbitrary)]
enum Text {
    Known(u8),
    Raw(String),
}

impl Text {
    fn get(&self, known: &[&str]) -> String {
        match self {
            Text::Known(i) => known[*i as usize % known.len()].to_string(),
            Text::Raw(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum FHost {
    Exact(Text),
    Suffix(Text),
}

#[derive(Debug, Arbitrary)]
enum FPath {
    Exact(Text),
    Prefix(Text),
    Regex(Text),
}

#[derive(Debug, Arbitrary)]
enum FValue {
    Exact(Text),
    Regex(Text),
    Present(bool),
}

#[derive(Debug, Arbitrary)]
struct FRoute {
    hosts: Vec<FHost>,
    path: Option<FPath>,
    methods: Vec<Text>,
    headers: Vec<(Text, FValue)>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    routes: Vec<FRoute>,
    host: Text,
    upper: bool,
    method: Text,
    path: Text,
    headers: Vec<(Text, Text)>,
}

pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let Some(routes) = valid_routes(&input.routes) else {
        return;
    };
    let router = Router::compile(&routes, |_| None)
        .unwrap_or_else(|e| panic!("valid routes do not compile: {e}"));
    let mut host = input.host.get(HOSTS);
    if input.upper {
        host = host.to_uppercase();
    }
    let Ok(method) = Method::from_bytes(input.method.get(METHODS).as_bytes()) else {
        return;
    };
    let path = input.path.get(PATHS);
    let mut headers = HeaderMap::new();
    for (n, v) in &input.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.get(HEADERS).as_bytes()),
            HeaderValue::from_str(&v.get(VALUES)),
        ) {
            headers.append(n, v);
        }
    }
    let got = router
        .find(&host, &method, &path, &headers)
        .map(|r| r.name.to_string());
    let want = model_find(&routes, &host, &method, &path, &headers).map(|r| r.name.clone());
    assert_eq!(got, want, "host {host:?} {method} {path:?} {headers:?}");
}

/// The fuzzed routes as a listener's, each a direct response, if `validate`
/// takes them.
fn valid_routes(routes: &[FRoute]) -> Option<Vec<Route>> {
    let mut out = Vec::new();
    for (i, r) in routes.iter().take(8).enumerate() {
        let mut m = serde_json::Map::new();
        let hosts: Vec<String> = r
            .hosts
            .iter()
            .map(|h| match h {
                FHost::Exact(t) => t.get(HOSTS),
                FHost::Suffix(t) => t.get(SUFFIXES),
            })
            .collect();
        m.insert("hosts".into(), json!(hosts));
        if let Some(p) = &r.path {
            let p = match p {
                FPath::Exact(t) => json!({ "exact": t.get(PATHS) }),
                FPath::Prefix(t) => json!({ "prefix": t.get(PATHS) }),
                FPath::Regex(t) => json!({ "regex": t.get(REGEXES) }),
            };
            m.insert("path".into(), p);
        }
        let methods: Vec<String> = r.methods.iter().map(|t| t.get(METHODS)).collect();
        m.insert("methods".into(), json!(methods));
        let headers: Vec<_> = r
            .headers
            .iter()
            .map(|(n, v)| {
                let name = n.get(HEADERS);
                match v {
                    FValue::Exact(t) => json!({ "name": name, "exact": t.get(VALUES) }),
                    FValue::Regex(t) => json!({ "name": name, "regex": t.get(REGEXES) }),
                    FValue::Present(p) => json!({ "name": name, "present": p }),
                }
            })
            .collect();
        m.insert("headers".into(), json!(headers));
        let route = json!({
            "name": format!("r{i}"),
            "match": m,
            "direct_response": { "status": 200 },
        });
        out.push(serde_json::from_value::<Route>(route).ok()?);
    }
    let config = Config {
        listeners: vec![serde_json::from_value::<Listener>(
            json!({ "name": "l", "address": "127.0.0.1:1" }),
        )
        .expect("a listener")],
        ..Config::default()
    };
    let mut config = config;
    config.listeners[0].routes = out;
    remora_api::validate(&config)
        .is_empty()
        .then(|| config.listeners.remove(0).routes)
}

/// The documented order, plainly.
fn model_find<'a>(
    routes: &'a [Route],
    host: &str,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<&'a Route> {
    let host = host.to_ascii_lowercase();
    let hostless =
        |r: &Route| r.matches.hosts.is_empty() || r.matches.hosts.iter().any(|h| h == "*");
    let exact: Vec<&Route> = routes
        .iter()
        .filter(|r| hostless(r) || r.matches.hosts.contains(&host))
        .collect();
    let candidates = if routes.iter().any(|r| r.matches.hosts.contains(&host)) {
        exact
    } else {
        // The longest `*.suffix` that the host ends with (after a dot).
        let best = routes
            .iter()
            .flat_map(|r| &r.matches.hosts)
            .filter_map(|h| h.strip_prefix('*'))
            .filter(|s| s.starts_with('.') && host.ends_with(s))
            .max_by_key(|s| s.len());
        routes
            .iter()
            .filter(|r| {
                hostless(r)
                    || best.is_some_and(|b| {
                        r.matches
                            .hosts
                            .iter()
                            .any(|h| h[..].strip_prefix('*') == Some(b))
                    })
            })
            .collect()
    };
    candidates
        .into_iter()
        .find(|r| matches(r, method, path, headers))
}

fn matches(r: &Route, method: &Method, path: &str, headers: &HeaderMap) -> bool {
    let m = &r.matches;
    if !m.methods.is_empty() && !m.methods.iter().any(|x| x == method.as_str()) {
        return false;
    }
    let path_ok = match &m.path {
        None => true,
        Some(PathMatch::Exact(p)) => path == p,
        Some(PathMatch::Prefix(p)) => {
            let p = if p.len() > 1 {
                p.trim_end_matches('/')
            } else {
                p
            };
            p == "/" || path == p || path.starts_with(&format!("{p}/"))
        }
        Some(PathMatch::Regex(re)) => full_match(re, path),
    };
    path_ok
        && m.headers.iter().all(|h| {
            let values: Vec<&HeaderValue> = headers
                .iter()
                .filter(|(n, _)| n.as_str().eq_ignore_ascii_case(&h.name))
                .map(|(_, v)| v)
                .collect();
            if let Some(v) = &h.exact {
                values.iter().any(|x| x.as_bytes() == v.as_bytes())
            } else if let Some(re) = &h.regex {
                values
                    .iter()
                    .any(|x| x.to_str().is_ok_and(|s| full_match(re, s)))
            } else {
                values.is_empty() != h.present.unwrap_or(true)
            }
        })
}

fn full_match(re: &str, s: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$"))
        .expect("a validated regex")
        .is_match(s)
}

//! `router`: route selection (`remora_proxy::http::router::Router`) over a
//! small fuzzed set of routes and a fuzzed request (host, method, path,
//! headers), both built with `arbitrary` from few names so they meet.
//!
//! Invariants: no panic; routes that `validate` accepts compile; `find`
//! picks the route the documented order picks (checked against a plain
//! model here): the exact host's routes, else those of the longest
//! matching `*.suffix`, else those without hosts (which join every list),
//! the first in file order whose path, methods and headers all match; a
//! host or suffix named at the request's port (80 if it names none) before
//! the same one named without a port, and one named only at other ports
//! not at all.

use arbitrary::{Arbitrary, Unstructured};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use remora_api::{Config, PathMatch, Route};
use remora_proxy::http::router::{Port, Router};
use serde_json::json;

const HOSTS: &[&str] = &[
    "a.example.com",
    "b.a.example.com",
    "example.com",
    "x.y",
    "*",
    "a.example.com:8080",
    "x.y:80",
];
const SUFFIXES: &[&str] = &[
    "*.example.com",
    "*.a.example.com",
    "*.y",
    "*.com",
    "*.example.com:8080",
    "*.y:9090",
];
/// The request's port, if it names one.
const PORTS: &[u16] = &[80, 8080, 9090];
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
    port: Option<u8>,
    upper: bool,
    method: Text,
    path: Text,
    headers: Vec<(Text, Text)>,
}

pub fn run(data: &[u8]) {
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        check(&input);
    }
}

/// Checks that `find` agrees with the model on `input` (a panic if not);
/// `false` when there was nothing to check (routes that do not validate,
/// a method that is none).
fn check(input: &Input) -> bool {
    let Some(routes) = valid_routes(&input.routes) else {
        return false;
    };
    let router = Router::compile(&routes, |_| None)
        .unwrap_or_else(|e| panic!("valid routes do not compile: {e}"));
    let mut host = input.host.get(HOSTS);
    // A request's host has no port here: that is `port`.
    if let Some(i) = host.rfind(':') {
        host.truncate(i);
    }
    let port = input.port.map(|i| PORTS[i as usize % PORTS.len()]);
    let port_text = port.map(|p| p.to_string()).unwrap_or_default();
    if input.upper {
        host = host.to_uppercase();
    }
    let Ok(method) = Method::from_bytes(input.method.get(METHODS).as_bytes()) else {
        return false;
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
        .find(&host, Port::named(&port_text), &method, &path, &headers)
        .map(|r| r.name.to_string());
    let at = port.unwrap_or(80);
    let want = model_find(&routes, &host, at, &method, &path, &headers).map(|r| r.name.clone());
    assert_eq!(
        got, want,
        "host {host:?}:{at} {method} {path:?} {headers:?}"
    );
    true
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
    // As a config file has it: with serde's defaults (`Config::default()`
    // has a drain timeout of 0, which validation refuses).
    let mut config = serde_json::from_value::<Config>(json!({
        "listeners": [{ "name": "l", "address": "127.0.0.1:1" }],
    }))
    .expect("a config");
    config.listeners[0].routes = out;
    remora_api::validate(&config)
        .is_empty()
        .then(|| config.listeners.remove(0).routes)
}

/// The documented order, plainly.
fn model_find<'a>(
    routes: &'a [Route],
    host: &str,
    port: u16,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<&'a Route> {
    let host = host.to_ascii_lowercase();
    let hostless =
        |r: &Route| r.matches.hosts.is_empty() || r.matches.hosts.iter().any(|h| h == "*");
    // Whether a route lists `name` (a host or `*.suffix`) with exactly
    // this port (`None`: without one).
    let lists = |r: &Route, name: &str, p: Option<u16>| {
        r.matches.hosts.iter().any(|h| match h.rsplit_once(':') {
            Some((n, q)) => n == name && p.map(|p| p.to_string()).as_deref() == Some(q),
            None => h == name && p.is_none(),
        })
    };
    // The entry for `name` at the request's port: with the port, else
    // without; `None` when no route lists it either way.
    let entry = |name: &str| {
        [Some(port), None]
            .into_iter()
            .find(|p| routes.iter().any(|r| lists(r, name, *p)))
    };
    let named = |name: String, p: Option<u16>| -> Vec<&Route> {
        routes
            .iter()
            .filter(|r| hostless(r) || lists(r, &name, p))
            .collect()
    };
    let candidates = if let Some(p) = entry(&host) {
        named(host.clone(), p)
    } else {
        // The longest `*.suffix` that the host ends with (after a dot) and
        // that is listed at the request's port or without one.
        let best = routes
            .iter()
            .flat_map(|r| &r.matches.hosts)
            .map(|h| h.rsplit_once(':').map_or(&h[..], |(n, _)| n))
            .filter_map(|h| h.strip_prefix('*'))
            .filter(|s| s.starts_with('.') && host.ends_with(s))
            .filter(|s| entry(&format!("*{s}")).is_some())
            .max_by_key(|s| s.len());
        match best {
            Some(b) => {
                let name = format!("*{b}");
                let p = entry(&name).expect("listed");
                named(name, p)
            }
            None => routes.iter().filter(|r| hostless(r)).collect(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: a seeded sequence, the same on every run.
    struct Seq(u64);

    impl Seq {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn known(&mut self) -> Text {
            Text::Known(self.below(256) as u8)
        }
    }

    /// Beyond the corpus, on stable: structured inputs of known names only
    /// (so that most validate), hosts and suffixes with and without ports,
    /// requests at each port; the router and the model agree on each.
    #[test]
    fn a_seeded_sweep_agrees_with_the_model() {
        let mut seq = Seq(0x9e37_79b9_7f4a_7c15);
        let (mut checked, n) = (0, 20_000);
        for _ in 0..n {
            let routes = (0..1 + seq.below(5))
                .map(|_| FRoute {
                    hosts: (0..seq.below(4))
                        .map(|_| match seq.below(2) {
                            0 => FHost::Exact(seq.known()),
                            _ => FHost::Suffix(seq.known()),
                        })
                        .collect(),
                    path: (seq.below(3) == 0).then_some(FPath::Prefix(Text::Known(1))),
                    methods: Vec::new(),
                    headers: Vec::new(),
                })
                .collect();
            let input = Input {
                routes,
                host: seq.known(),
                port: (seq.below(3) != 0).then(|| seq.below(256) as u8),
                upper: seq.below(4) == 0,
                method: Text::Known(0),
                path: Text::Known(seq.below(2) as u8 * 2),
                headers: Vec::new(),
            };
            checked += u32::from(check(&input));
        }
        assert!(checked > n / 2, "only {checked} of {n} inputs validated");
    }
}

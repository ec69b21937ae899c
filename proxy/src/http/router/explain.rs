//! Why [`Router::find`] chooses the route it does, step by step, for
//! `/explain` on the admin port. Read-only and off the request path: it
//! walks the same candidate list with the same matchers, and says for each
//! route why it did or did not match.

use super::hosts::{Hosts, Named, Port};
use super::{Matcher, PathMatcher, Router, ValueMatcher};
use http::{HeaderMap, Method};
use serde::Serialize;

/// Which routes were tried for a request, in order, and which one won.
#[derive(Debug, Serialize)]
pub struct RouteTrace {
    /// How the candidate list was chosen by host.
    pub hosts: String,
    pub steps: Vec<RouteStep>,
    /// Index of the chosen route in [`Router::routes`].
    #[serde(skip)]
    pub chosen: Option<usize>,
}

/// One route tried.
#[derive(Debug, Serialize)]
pub struct RouteStep {
    pub route: String,
    pub matched: bool,
    /// Why it matched, or the first condition it failed.
    pub reason: String,
}

impl Router {
    /// Like [`Router::find`], with the reasons; stops at the first match.
    pub fn explain(
        &self,
        host: &str,
        port: Port<'_>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> RouteTrace {
        let host = host.to_ascii_lowercase();
        let (hosts, candidates) = self.hosts.explain(&host, port);
        let mut trace = RouteTrace {
            hosts,
            steps: Vec::new(),
            chosen: None,
        };
        for &i in candidates {
            let route = &self.routes[i as usize];
            let failed = route.matcher.mismatch(method, path, headers);
            trace.steps.push(RouteStep {
                route: route.name.to_string(),
                matched: failed.is_none(),
                reason: failed.unwrap_or_else(|| route.matcher.describe()),
            });
            if trace.steps.last().is_some_and(|s| s.matched) {
                trace.chosen = Some(i as usize);
                break;
            }
        }
        trace
    }

    /// Like [`Router::find_index_at`], with the reasons: the routes naming
    /// `destination` tried after the host found none (a transparent
    /// listener's request on a connection dialed there), added to `trace`.
    pub fn explain_at(
        &self,
        trace: &mut RouteTrace,
        destination: std::net::SocketAddr,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) {
        let candidates = self.destinations.get(&destination).map_or(&[][..], |c| c);
        trace.hosts = format!(
            "{}; then routes for destination {destination} ({} of them)",
            trace.hosts,
            candidates.len()
        );
        for &i in candidates {
            let route = &self.routes[i as usize];
            let failed = route.matcher.mismatch(method, path, headers);
            let matched = failed.is_none();
            trace.steps.push(RouteStep {
                route: route.name.to_string(),
                matched,
                reason: failed.unwrap_or_else(|| {
                    format!("destination {destination}, {}", route.matcher.describe())
                }),
            });
            if matched {
                trace.chosen = Some(i as usize);
                return;
            }
        }
    }
}

impl Hosts {
    /// The candidates of [`Hosts::candidates`], and how the host chose them.
    fn explain(&self, host: &str, port: Port<'_>) -> (String, &[u32]) {
        let list = self.candidates(host, port);
        let at_port = |n: &Named| n.at(port, self.default_port).is_some();
        // `:9090` when the entry that chose names the port.
        let number = port.number(self.default_port);
        let at = |n: &Named| match n.ports.iter().find(|(p, _)| Some(*p) == number) {
            Some((p, _)) => format!(":{p}"),
            None => String::new(),
        };
        let wildcard = || {
            host.match_indices('.')
                .map(|(i, _)| &host[i..])
                .find_map(|s| self.suffix.get(s).filter(|n| at_port(n)).map(|n| (s, n)))
        };
        let how = if let Some(n) = self.exact.get(host).filter(|n| at_port(n)) {
            format!(
                "routes for host {host}{} (exact), with routes without hosts",
                at(n)
            )
        } else if let Some((s, n)) = wildcard() {
            format!(
                "routes for *{s}{} (longest matching wildcard), with routes without hosts",
                at(n)
            )
        } else if self.exact.contains_key(host) {
            let port = number.map_or_else(|| "?".into(), |p| p.to_string());
            format!("no route names host {host} at port {port}: routes without hosts only")
        } else {
            format!("no route names host {host}: routes without hosts only")
        };
        (how, list)
    }
}

impl Matcher {
    /// The first condition the request fails, in the order `matches` checks
    /// them; `None` when it matches.
    fn mismatch(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<String> {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            let want: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
            return Some(format!("method {method} is not one of {}", want.join(", ")));
        }
        if !self.path.matches(path) {
            return Some(format!(
                "path {path} does not match {}",
                self.path.describe()
            ));
        }
        for (name, m) in &self.headers {
            let mut values = headers.get_all(name).iter();
            let ok = match m {
                ValueMatcher::Present(want) => values.next().is_some() == *want,
                ValueMatcher::Exact(v) => values.any(|x| x == v),
                ValueMatcher::Regex(re) => values.any(|x| x.to_str().is_ok_and(|s| re.is_match(s))),
            };
            if !ok {
                return Some(format!("header {name}: {}", m.describe_failure()));
            }
        }
        None
    }

    /// What a matching request satisfied.
    fn describe(&self) -> String {
        let mut parts = vec![format!("path {}", self.path.describe())];
        if !self.methods.is_empty() {
            let m: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
            parts.push(format!("method in {}", m.join(", ")));
        }
        for (name, m) in &self.headers {
            parts.push(format!("header {name} {}", m.describe()));
        }
        format!("matched: {}", parts.join("; "))
    }
}

impl PathMatcher {
    fn describe(&self) -> String {
        match self {
            PathMatcher::Any => "any".into(),
            PathMatcher::Exact(p) => format!("exactly {p}"),
            PathMatcher::Prefix(p) => format!("prefix {p}"),
            PathMatcher::Regex(re) => format!("regex {}", re.as_str()),
        }
    }
}

impl ValueMatcher {
    fn describe(&self) -> String {
        match self {
            ValueMatcher::Present(true) => "present".into(),
            ValueMatcher::Present(false) => "absent".into(),
            ValueMatcher::Exact(v) => format!("= {}", String::from_utf8_lossy(v.as_bytes())),
            ValueMatcher::Regex(re) => format!("~ {}", re.as_str()),
        }
    }

    fn describe_failure(&self) -> String {
        match self {
            ValueMatcher::Present(true) => "required, not sent".into(),
            ValueMatcher::Present(false) => "must be absent, was sent".into(),
            ValueMatcher::Exact(v) => {
                format!("no value is {}", String::from_utf8_lossy(v.as_bytes()))
            }
            ValueMatcher::Regex(re) => format!("no value matches {}", re.as_str()),
        }
    }
}

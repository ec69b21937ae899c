//! Pure validation of a [`Config`]: every problem, each with its field path.

use crate::model::*;
use std::collections::HashSet;
use std::fmt;

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

const STANDARD_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

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

fn check_route(p: &mut Problems, at: &str, r: &Route, backends: &HashSet<&str>) {
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

fn check_weight(p: &mut Problems, at: impl FnOnce() -> String, w: u32) {
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

fn check_header_name(p: &mut Problems, at: &str, name: &str) {
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

fn check_backend(p: &mut Problems, at: &str, b: &Backend) {
    let mut addrs = HashSet::with_capacity(b.endpoints.len());
    for (k, e) in b.endpoints.iter().enumerate() {
        check_weight(p, || format!("{at}.endpoints[{k}].weight"), e.weight);
        if !addrs.insert(e.address) {
            p.add(
                format!("{at}.endpoints[{k}].address"),
                format!("{} is listed twice", e.address),
            );
        }
    }
    if let Balancer::RingHash(rh) = &b.balancer {
        if rh.header.is_some() == rh.cookie.is_some() {
            p.add(
                format!("{at}.balancer.ring_hash"),
                "needs exactly one of `header` and `cookie`",
            );
        }
        if let Some(h) = &rh.header {
            check_header_name(p, &format!("{at}.balancer.ring_hash.header"), h);
        }
    }
    if let Some(tls) = &b.tls {
        if rustls_name_ok(&tls.server_name).is_err() {
            p.add(
                format!("{at}.tls.server_name"),
                "is not a DNS name or IP address",
            );
        }
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            p.add(
                format!("{at}.tls"),
                "`client_cert` and `client_key` go together",
            );
        }
    }
    if b.connect_timeout.get().is_zero() {
        p.add(format!("{at}.connect_timeout"), "must be > 0");
    }
    let mut found = Vec::new();
    b.retry_budget
        .check(&format!("{at}.retry_budget"), &mut found);
    b.outlier_detection
        .check(&format!("{at}.outlier_detection"), &mut found);
    b.circuit_breaker
        .check(&format!("{at}.circuit_breaker"), &mut found);
    if let Some(hc) = &b.health_check {
        hc.check(&format!("{at}.health_check"), &mut found);
        if b.tls.is_some() {
            found.push((
                format!("{at}.health_check"),
                "health checks over TLS are not supported yet".into(),
            ));
        }
        if b.protocol == UpstreamProtocol::Http2 {
            found.push((
                format!("{at}.health_check"),
                "health checks probe with HTTP/1.1: not supported for `protocol: http2` yet".into(),
            ));
        }
    }
    p.extend(found);
    if b.pool.idle_timeout.get().is_zero() {
        p.add(format!("{at}.pool.idle_timeout"), "must be > 0");
    }
}

fn rustls_name_ok(name: &str) -> Result<(), ()> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

#[cfg(test)]
mod tests {
    /// The problems of a config with one listener whose fields are `fields`.
    fn problems(fields: &str) -> Vec<String> {
        let yaml = format!(
            "listeners:\n  - name: out\n    address: 127.0.0.1:4140\n{fields}backends:\n  - name: db\n    endpoints: [{{ address: 10.0.0.2:5432 }}]\n"
        );
        match crate::parse_yaml(&yaml) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn original_destination_needs_an_opaque_protocol_not_a_tcp_backend() {
        for ok in [
            "    protocol: tcp\n    original_destination: true\n",
            "    protocol: detect\n    original_destination: true\n",
            "    protocol: detect\n    original_destination: true\n    tcp_backend: db\n",
        ] {
            assert_eq!(problems(ok), Vec::<String>::new(), "{ok}");
        }
        let cases = [
            (
                "    original_destination: true\n",
                "listeners[0].original_destination: needs `protocol: tcp` or `protocol: detect`",
            ),
            (
                "    protocol: tcp\n",
                "listeners[0].tcp_backend: `protocol: tcp` and `protocol: detect` need",
            ),
            (
                "    protocol: tcp\n    original_destination: true\n    tls: { certificates: [{ cert: c.pem, key: k.pem }] }\n",
                "listeners[0].original_destination: a transparent listener passes the app's own TLS through",
            ),
        ];
        for (fields, want) in cases {
            let found = problems(fields);
            assert!(
                found.iter().any(|p| p.contains(want)),
                "{want:?} in {found:?}"
            );
        }
    }

    #[test]
    fn a_route_destination_must_be_one_a_client_dials() {
        let route = |d: &str| {
            format!(
                "    protocol: detect\n    original_destination: true\n    routes:\n      - name: api\n        match: {{ destinations: [\"{d}\"] }}\n        backends: [{{ name: db }}]\n"
            )
        };
        assert_eq!(problems(&route("10.96.0.12:8080")), Vec::<String>::new());
        assert_eq!(problems(&route("[fd00::12]:80")), Vec::<String>::new());
        for bad in ["0.0.0.0:8080", "10.96.0.12:0"] {
            let found = problems(&route(bad));
            let want = "listeners[0].routes[0].match.destinations[0]: ";
            assert!(found.iter().any(|p| p.contains(want)), "{bad}: {found:?}");
        }
    }

    #[test]
    fn original_destination_is_left_out_of_the_json_when_off() {
        let yaml = "listeners:\n  - name: out\n    address: 127.0.0.1:4140\n";
        let config = crate::parse_yaml(yaml).unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert!(!json.contains("original_destination"), "{json}");
    }
}

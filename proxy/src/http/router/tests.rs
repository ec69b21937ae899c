use super::*;
use crate::balance::{Backend, Endpoint};
use crate::http::client::{EndpointClient, Transport};
use crate::metrics::Metrics;
use std::time::Duration;

fn backend(name: &str) -> Arc<Backend> {
    let transport = Transport {
        tls: None,
        identity: None,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(90),
        max_idle: 1,
    };
    let addr = "127.0.0.1:1".parse().unwrap();
    let client = EndpointClient::new(addr, transport, Metrics::new().upstream(name));
    Arc::new(Backend::new(
        name.into(),
        vec![(Arc::new(Endpoint::new(addr, client)), 1)],
        &api::Balancer::RoundRobin,
        api::UpstreamProtocol::Auto,
    ))
}

fn router(yaml: &str) -> Router {
    let routes: Vec<api::Route> = {
        let de = serde_yaml_ng::Deserializer::from_str(yaml);
        serde_yaml_ng::with::singleton_map_recursive::deserialize(de).unwrap()
    };
    Router::compile(&routes, |n| Some(backend(n))).unwrap()
}

fn find<'a>(
    r: &'a Router,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<&'a str> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (host, port) = crate::http::layers::route::split_authority(host);
    r.find(host, port, &method.parse().unwrap(), path, &h)
        .map(|r| &*r.name)
}

const ROUTES: &str = r#"
- name: exact-host
  match: { hosts: [api.example.com], path: { prefix: /v1 } }
  backends: [{ name: a }]
- name: wildcard
  match: { hosts: ["*.example.com"] }
  backends: [{ name: a }]
- name: deeper-wildcard
  match: { hosts: ["*.eu.example.com"] }
  backends: [{ name: a }]
- name: exact-path
  match: { path: { exact: /healthz } }
  direct_response: { status: 200 }
- name: regex
  match: { path: { regex: "/users/[0-9]+" } }
  backends: [{ name: a }]
- name: post-only
  match: { path: { prefix: /submit }, methods: [POST, PUT] }
  backends: [{ name: a }]
- name: canary
  match: { path: { prefix: /app }, headers: [{ name: x-canary, exact: "yes" }] }
  backends: [{ name: b }]
- name: has-debug
  match: { path: { prefix: /app }, headers: [{ name: x-debug, present: true }] }
  backends: [{ name: b }]
- name: version-regex
  match: { path: { prefix: /app }, headers: [{ name: x-version, regex: "v[23]" }] }
  backends: [{ name: b }]
- name: app
  match: { path: { prefix: /app } }
  backends: [{ name: a }]
"#;

#[test]
fn route_match_table() {
    let r = router(ROUTES);
    let cases: &[Case] = &[
        // host: exact beats wildcard; host-less routes still apply to every host
        ("api.example.com", "GET", "/v1/x", &[], Some("exact-host")),
        ("API.Example.COM", "GET", "/v1", &[], Some("exact-host")),
        (
            "api.example.com",
            "GET",
            "/healthz",
            &[],
            Some("exact-path"),
        ),
        ("api.example.com", "GET", "/v2", &[], None),
        ("www.example.com", "GET", "/anything", &[], Some("wildcard")),
        ("x.eu.example.com", "GET", "/", &[], Some("deeper-wildcard")),
        ("example.com", "GET", "/healthz", &[], Some("exact-path")),
        // paths
        ("other", "GET", "/healthz", &[], Some("exact-path")),
        ("other", "GET", "/healthz/", &[], None),
        ("other", "GET", "/users/42", &[], Some("regex")),
        ("other", "GET", "/users/42/x", &[], None),
        ("other", "GET", "/submitted", &[], None),
        // methods
        ("other", "POST", "/submit", &[], Some("post-only")),
        ("other", "GET", "/submit", &[], None),
        // headers, first match in order
        (
            "other",
            "GET",
            "/app/x",
            &[("x-canary", "yes")],
            Some("canary"),
        ),
        ("other", "GET", "/app/x", &[("x-canary", "no")], Some("app")),
        (
            "other",
            "GET",
            "/app",
            &[("x-debug", "")],
            Some("has-debug"),
        ),
        (
            "other",
            "GET",
            "/app",
            &[("x-version", "v3")],
            Some("version-regex"),
        ),
        ("other", "GET", "/app", &[("x-version", "v33")], Some("app")),
        ("other", "GET", "/apps", &[], None),
    ];
    for (host, method, path, headers, want) in cases {
        assert_eq!(
            find(&r, host, method, path, headers),
            *want,
            "{method} {host}{path} {headers:?}"
        );
    }
}

#[test]
fn a_host_named_with_a_port_takes_requests_at_that_port_first() {
    let r = router(
        r#"
- name: api
  match: { hosts: [api.shop, api.shop.svc] }
  backends: [{ name: a }]
- name: api.admin
  match: { hosts: ["api.shop:9090", "api.shop.svc:9090"] }
  backends: [{ name: b }]
- name: only-ported
  match: { hosts: ["db.shop:5432"] }
  backends: [{ name: b }]
- name: any-shop
  match: { hosts: ["*.shop"] }
  backends: [{ name: a }]
- name: any-shop-8443
  match: { hosts: ["*.shop:8443"] }
  backends: [{ name: a }]
- name: healthz
  match: { path: { exact: /healthz } }
  direct_response: { status: 200 }
"#,
    );
    let cases: &[(&str, Option<&str>)] = &[
        ("api.shop", Some("api")),
        ("api.shop:8080", Some("api")),
        ("api.shop:9090", Some("api.admin")),
        ("API.Shop.SVC:9090", Some("api.admin")),
        // No port: the listener's scheme's (80 here).
        ("api.shop:80", Some("api")),
        // A host named only at another port falls through to the wildcard.
        ("db.shop:5432", Some("only-ported")),
        ("db.shop", Some("any-shop")),
        ("db.shop:8443", Some("any-shop-8443")),
        ("x.shop:8443", Some("any-shop-8443")),
        ("x.shop:8444", Some("any-shop")),
        ("other:9090", None),
    ];
    for (host, want) in cases {
        assert_eq!(find(&r, host, "GET", "/", &[]), *want, "{host}");
    }
    // Host-less routes join every list, ported ones too.
    assert_eq!(
        find(&r, "api.shop:9090", "GET", "/healthz", &[]),
        Some("api.admin")
    );
    assert_eq!(
        find(&r, "db.shop:5432", "GET", "/healthz", &[]),
        Some("only-ported")
    );

    // On a TLS listener a request that names no port is at 443.
    let mut tls = router(
        "- name: secure
  match: { hosts: [\"web.shop:443\"] }
  backends: [{ name: a }]
",
    );
    assert_eq!(find(&tls, "web.shop", "GET", "/", &[]), None);
    tls.set_default_port(443);
    assert_eq!(find(&tls, "web.shop", "GET", "/", &[]), Some("secure"));

    // /explain says which entry chose the list.
    assert_eq!(
        how_of(&r, "api.shop", "9090"),
        "routes for host api.shop:9090 (exact), with routes without hosts"
    );
    assert_eq!(
        how_of(&r, "api.shop", ""),
        "routes for host api.shop (exact), with routes without hosts"
    );
    assert_eq!(
        how_of(&r, "x.shop", "8443"),
        "routes for *.shop:8443 (longest matching wildcard), with routes without hosts"
    );
    assert_eq!(
        how_of(&r, "other", "5432"),
        "no route names host other: routes without hosts only"
    );
    let r = router("- name: db\n  match: { hosts: [\"db:5432\"] }\n  backends: [{ name: a }]\n");
    assert_eq!(
        how_of(&r, "db", ""),
        "no route names host db at port 80: routes without hosts only"
    );
}

fn how_of(r: &Router, host: &str, port: &str) -> String {
    r.explain(
        host,
        Port::named(port),
        &Method::GET,
        "/",
        &HeaderMap::new(),
    )
    .hosts
}

#[test]
fn a_host_with_a_bad_port_is_refused() {
    let routes: Vec<api::Route> = serde_yaml_ng::from_str(
        "- name: x\n  match: { hosts: [\"a:0\"] }\n  backends: [{ name: a }]\n",
    )
    .unwrap();
    let err = Router::compile(&routes, |n| Some(backend(n)))
        .err()
        .unwrap();
    assert!(err.contains("host `a:0`"), "{err}");
}

#[test]
fn prefix_is_segment_aware() {
    assert!(prefix_match("/api", "/api"));
    assert!(prefix_match("/api", "/api/"));
    assert!(prefix_match("/api", "/api/v1"));
    assert!(!prefix_match("/api", "/apiv1"));
    assert!(prefix_match("/", "/anything"));
}

#[test]
fn prefix_rewrite_keeps_the_rest_and_the_query() {
    assert_eq!(rewrite_prefix("/admin/metrics", "/admin", "/"), "/metrics");
    assert_eq!(rewrite_prefix("/admin", "/admin", "/"), "/");
    assert_eq!(
        rewrite_prefix("/api/v1?q=1", "/api", "/backend"),
        "/backend/v1?q=1"
    );
    assert_eq!(
        rewrite_prefix("/api?q=1", "/api", "/backend"),
        "/backend?q=1"
    );
    assert_eq!(rewrite_prefix("/x/y", "/", "/z"), "/z/x/y");
}

#[test]
fn split_follows_weights() {
    let r = router("- name: s\n  backends: [{ name: a, weight: 90 }, { name: b, weight: 10 }]\n");
    let Action::Forward(split) = &r.routes()[0].action else {
        panic!()
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let n = 100_000;
    let a = (0..n)
        .filter(|_| &*split.pick(&mut rng).name == "a")
        .count();
    let share = a as f64 / n as f64;
    assert!((share - 0.9).abs() < 0.01, "share of a: {share}");
}

/// method, host, path, headers, expected route or upstream (None: 404).
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
);

#[test]
fn a_destination_finds_the_routes_that_name_it_in_order() {
    let r = router(
        r#"
- name: api.v2
  match: { hosts: [api.shop], path: { prefix: /v2 }, destinations: ["10.96.0.12:8080"] }
  backends: [{ name: a }]
- name: api
  match: { hosts: [api.shop], destinations: ["10.96.0.12:8080", "[fd00::12]:8080"] }
  backends: [{ name: b }]
- name: web
  match: { hosts: [web.shop], destinations: ["10.96.0.13:80"] }
  backends: [{ name: b }]
"#,
    );
    let at = |dst: &str, path: &str| {
        let i = r.find_index_at(dst.parse().unwrap(), &Method::GET, path, &HeaderMap::new())?;
        Some(&*r.routes()[i as usize].name)
    };
    assert_eq!(at("10.96.0.12:8080", "/v2/x"), Some("api.v2"));
    assert_eq!(at("10.96.0.12:8080", "/v1"), Some("api"));
    assert_eq!(at("[fd00::12]:8080", "/"), Some("api"));
    assert_eq!(at("10.96.0.13:80", "/"), Some("web"));
    // Another port of the same IP, or an address no route names.
    assert_eq!(at("10.96.0.12:9090", "/"), None);
    assert_eq!(at("10.96.0.99:8080", "/"), None);
    // The host still decides first: a destination is not a host.
    assert_eq!(find(&r, "10.96.0.12", "GET", "/", &[]), None);
}

#[test]
fn opaque_tcp_to_a_destination_takes_the_backends_of_its_route_for_any_request() {
    let r = router(
        r#"
- name: api.v2
  match: { hosts: [api.shop], path: { prefix: /v2 }, destinations: ["10.96.0.12:80"] }
  backends: [{ name: v2 }]
- name: api
  match: { hosts: [api.shop], destinations: ["10.96.0.12:80"] }
  backends: [{ name: stable, weight: 90 }, { name: canary, weight: 10 }]
- name: web.get
  match: { hosts: [web.shop], methods: [GET], destinations: ["10.96.0.13:80"] }
  backends: [{ name: web }]
- name: moved
  match: { hosts: [old.shop], destinations: ["10.96.0.14:80"] }
  redirect: { host: new.shop }
"#,
    );
    let tcp = r.tcp_destinations();
    let dst = &tcp[&"10.96.0.12:80".parse().unwrap()];
    assert_eq!(r.routes()[dst.route as usize].name.as_ref(), "api");
    let api: Vec<(&str, u32)> = dst.split.weights().map(|(b, w)| (&*b.name, w)).collect();
    // Not the route that needs a path: the one that takes any request.
    assert_eq!(api, [("stable", 90), ("canary", 10)]);
    // Only HTTP routes that need a method, or do not forward: none.
    assert_eq!(tcp.len(), 1, "{:?}", tcp.keys().collect::<Vec<_>>());
}

#[test]
fn a_route_is_not_for_another_port_of_its_destinations() {
    let r = router(
        r#"
- name: api
  match: { hosts: [api.shop], destinations: ["10.96.0.12:80", "[fd00::12]:80"] }
  backends: [{ name: a }]
- name: web
  match: { hosts: [web.shop] }
  backends: [{ name: a }]
"#,
    );
    let (api, web) = (&r.routes()[0], &r.routes()[1]);
    let at = |a: &str| a.parse::<SocketAddr>().unwrap();
    assert!(!api.names_another_port(at("10.96.0.12:80")));
    assert!(!api.names_another_port(at("[fd00::12]:80")));
    assert!(api.names_another_port(at("10.96.0.12:9090")));
    assert!(api.names_another_port(at("[fd00::12]:9090")));
    // Another address altogether (an endpoint, an outside host): the host
    // decides, as without destinations.
    assert!(!api.names_another_port(at("10.244.0.7:8080")));
    assert!(!web.names_another_port(at("10.96.0.12:9090")));
}

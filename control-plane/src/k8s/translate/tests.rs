//! Table tests of the translation: cluster objects (in the API's JSON
//! shape) in, the mesh (and snapshots) out, in the style of Linkerd's
//! policy-controller index tests.

use super::*;
use serde_json::{json, Value};

fn obj<K: serde::de::DeserializeOwned>(v: Value) -> Arc<K> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn service(ns: &str, name: &str, ports: Value) -> Arc<KService> {
    obj(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"ports": ports, "selector": {"app": name}}}))
}

/// A Service with `clusterIPs` (`["None"]`: headless).
fn service_at(ns: &str, name: &str, ports: Value, ips: &[&str]) -> Arc<KService> {
    obj(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"ports": ports, "selector": {"app": name},
            "clusterIP": ips[0], "clusterIPs": ips}}))
}

/// A slice of Service `svc` with one port `http` = `port` and endpoints
/// (ip, pod, ready, zone).
fn slice(ns: &str, svc: &str, port: u16, eps: &[(&str, &str, bool, &str)]) -> Arc<EndpointSlice> {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, pod, ready, zone)| {
            json!({"addresses": [ip], "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}, "zone": zone})
        })
        .collect();
    slice_of(ns, svc, port, endpoints)
}

/// An EndpointSlice of `svc` with `endpoints`, at port `http`.
fn slice_of(ns: &str, svc: &str, port: u16, endpoints: Vec<Value>) -> Arc<EndpointSlice> {
    obj(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": format!("{svc}-abcde"),
            "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}),
    )
}

fn pod(ns: &str, name: &str, sa: &str, meshed: bool, port: u16) -> Arc<Pod> {
    let annotations = if meshed {
        json!({INJECTED: "0.1.0"})
    } else {
        json!({})
    };
    obj(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "annotations": annotations},
        "spec": {"serviceAccountName": sa, "containers": [
            {"name": "app", "image": "app", "ports": [{"containerPort": port}]}]},
        "status": {"phase": "Running"}}))
}

fn opts(mtls: bool) -> Options {
    Options {
        cluster_domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
        mtls,
        tracing: None,
    }
}

fn run(cluster: &Cluster) -> Translation {
    translate(cluster, &opts(true), |m| crate::mesh::problems_for(m, true))
}

/// The shop: `web` (meshed, sa web) calls `api` (meshed pods of sa api, one
/// not ready, and one unmeshed pod).
fn shop() -> Cluster {
    Cluster {
        services: vec![
            service_at(
                "shop",
                "api",
                json!([{"name": "http", "port": 80, "targetPort": 8080}]),
                &["10.96.0.10"],
            ),
            service_at(
                "shop",
                "web",
                json!([{"name": "http", "port": 80, "targetPort": 8080}]),
                &["10.96.0.11", "fd00:96::11"],
            ),
            service(
                "kube-system",
                "kube-dns",
                json!([{"name": "dns", "port": 53, "protocol": "UDP"}]),
            ),
        ],
        endpoint_slices: vec![
            slice(
                "shop",
                "api",
                8080,
                &[
                    ("10.0.0.2", "api-1", true, "zone-a"),
                    ("10.0.0.3", "api-2", false, "zone-a"),
                    ("10.0.0.4", "legacy-1", true, "zone-b"),
                ],
            ),
            slice(
                "shop",
                "web",
                8080,
                &[("10.0.1.2", "web-1", true, "zone-b")],
            ),
        ],
        pods: vec![
            pod("shop", "api-1", "api", true, 8080),
            pod("shop", "api-2", "api", true, 8080),
            pod("shop", "legacy-1", "default", false, 8080),
            pod("shop", "web-1", "web", true, 3000),
        ],
        ..Cluster::default()
    }
}

const SHOP: &str = r#"
trust_domain: cluster.local
services:
  - name: api.shop
    aliases: [api.shop.svc, api.shop.svc.cluster.local]
    addresses: ["10.96.0.10:80"]
    endpoints:
      - { address: 10.0.0.2:8080, identity: spiffe://cluster.local/ns/shop/sa/api, zone: zone-a }
      - { address: 10.0.0.4:8080, zone: zone-b }
  - name: web.shop
    aliases: [web.shop.svc, web.shop.svc.cluster.local]
    addresses: ["10.96.0.11:80", "[fd00:96::11]:80"]
    endpoints:
      - { address: 10.0.1.2:8080, identity: spiffe://cluster.local/ns/shop/sa/web, zone: zone-b }
workloads:
  - name: api.shop
    namespace: shop
    service_account: api
    outbound: 127.0.0.1:4140
    admin: 0.0.0.0:4191
    transparent: true
    inbound: { address: 0.0.0.0:4143, app: 127.0.0.1:8080 }
  - name: web.shop
    namespace: shop
    service_account: web
    outbound: 127.0.0.1:4140
    admin: 0.0.0.0:4191
    transparent: true
    inbound: { address: 0.0.0.0:4143, app: 127.0.0.1:3000 }
"#;

fn mesh(yaml: &str) -> Mesh {
    crate::mesh::parse(yaml).unwrap_or_else(|p| panic!("{p:?}"))
}

#[test]
fn services_endpoints_and_meshed_workloads() {
    let t = run(&shop());
    assert_eq!(t.mesh, mesh(SHOP));
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert!(t.fatal.is_empty());
}

#[test]
fn the_same_cluster_in_any_order_gives_the_same_mesh_and_version() {
    let a = shop();
    let mut b = shop();
    b.services.reverse();
    b.pods.reverse();
    b.endpoint_slices.reverse();
    let (ta, tb) = (run(&a), run(&b));
    assert_eq!(ta, tb);
    assert_eq!(
        crate::compile::version_of(&ta.mesh),
        crate::compile::version_of(&tb.mesh)
    );
}

#[test]
fn without_a_ca_the_mesh_is_plaintext() {
    let t = translate(&shop(), &opts(false), |m| {
        crate::mesh::problems_for(m, false)
    });
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert!(t.mesh.workloads.iter().all(|w| w.inbound.is_none()));
    let endpoints = t.mesh.services.iter().flat_map(|s| &s.endpoints);
    assert!(endpoints.clone().all(|e| e.identity.is_none()));
    assert_eq!(endpoints.count(), 3);
}

#[test]
fn the_snapshot_of_a_workload_routes_to_the_services_with_mutual_tls() {
    let t = run(&shop());
    let snaps = crate::compile::compile_with_roots(&t.mesh, &["ROOT".to_string()]);
    let web = &snaps["web.shop"].config;
    assert_eq!(web.listeners[0].name, "outbound");
    assert_eq!(web.listeners[0].address.port(), 4140);
    assert!(web.listeners[0].original_destination);
    assert_eq!(web.listeners[1].address.port(), 4143);
    let api = &web.listeners[0].routes[0];
    assert_eq!(
        api.matches.hosts,
        ["api.shop", "api.shop.svc", "api.shop.svc.cluster.local"]
    );
    let backend = web.backends.iter().find(|b| b.name == "api.shop").unwrap();
    assert_eq!(
        backend.endpoints[0].identity.as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/api")
    );
    assert_eq!(backend.endpoints[1].identity, None, "the unmeshed pod");
}

fn http_route(ns: &str, name: &str, created: &str, spec: Value) -> Arc<HttpRoute> {
    obj(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"namespace": ns, "name": name, "creationTimestamp": created},
        "spec": spec}),
    )
}

fn parent(name: &str) -> Value {
    json!([{"group": "", "kind": "Service", "name": name, "port": 80}])
}

#[test]
fn http_routes_become_the_service_routes_in_precedence_order() {
    let mut cluster = shop();
    cluster.services.push(service(
        "shop",
        "api-canary",
        json!([{"name": "http", "port": 80}]),
    ));
    cluster.http_routes = vec![
        http_route(
            "shop",
            "split",
            "2024-01-01T00:00:00Z",
            json!({
                "parentRefs": parent("api"),
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}},
                                {"path": {"type": "PathPrefix", "value": "/v1/long"}, "method": "GET"}],
                    "backendRefs": [{"name": "api", "port": 80, "weight": 90},
                                    {"name": "api-canary", "port": 80, "weight": 10}],
                    "filters": [{"type": "RequestHeaderModifier",
                                 "requestHeaderModifier": {"set": [{"name": "X-Via", "value": "mesh"}], "remove": ["x-debug"]}},
                                {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
                    "timeouts": {"request": "1m30s"}
                }]
            }),
        ),
        http_route(
            "shop",
            "exact",
            "2024-02-01T00:00:00Z",
            json!({
                "parentRefs": parent("api"),
                "rules": [{"matches": [{"path": {"type": "Exact", "value": "/health"},
                                        "headers": [{"name": "X-Probe", "value": "1"}]}],
                           "filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 301,
                                "path": {"type": "ReplaceFullPath", "replaceFullPath": "/healthz"}}}]}]
            }),
        ),
        // A Gateway's route: not the mesh's, and not a problem.
        http_route(
            "shop",
            "ingress",
            "2024-01-01T00:00:00Z",
            json!({
                "parentRefs": [{"name": "public-gateway"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]
            }),
        ),
    ];
    let t = run(&cluster);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let api = t
        .mesh
        .services
        .iter()
        .find(|s| s.name == "api.shop")
        .unwrap();
    let names: Vec<&str> = api.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["exact-0", "split-0-1", "split-0-0"]);
    let exact = &api.routes[0];
    assert_eq!(exact.matches.path, Some(PathMatch::Exact("/health".into())));
    assert_eq!(exact.matches.headers[0].name, "x-probe");
    let redirect = exact.redirect.as_ref().unwrap();
    assert_eq!(
        (redirect.status, redirect.path.as_deref()),
        (301, Some("/healthz"))
    );
    assert!(exact.backends.is_empty());
    let long = &api.routes[1];
    assert_eq!(long.matches.methods, ["GET"]);
    let weights: Vec<(&str, u32)> = long
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.weight))
        .collect();
    assert_eq!(weights, [("api.shop", 90), ("api-canary.shop", 10)]);
    assert_eq!(long.request_headers.set["x-via"], "mesh");
    assert_eq!(long.request_headers.remove, ["x-debug"]);
    assert_eq!(
        long.rewrite.as_ref().unwrap().path_prefix.as_deref(),
        Some("/")
    );
    assert_eq!(long.timeout, Some(Duration::from_secs(90)));
    let web = t
        .mesh
        .services
        .iter()
        .find(|s| s.name == "web.shop")
        .unwrap();
    assert!(web.routes.is_empty());
}

use remora_api::{Duration, PathMatch};

#[test]
fn what_the_model_cannot_say_is_reported_with_the_object() {
    let mut cluster = shop();
    cluster
        .services
        .push(obj(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "shop", "name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "example.com"}})));
    cluster.http_routes = vec![
        http_route(
            "shop",
            "query",
            "2024-01-01T00:00:00Z",
            json!({
                "parentRefs": parent("api"),
                "rules": [{"matches": [{"queryParams": [{"name": "v", "value": "2"}]},
                                       {"path": {"type": "Exact", "value": "/ok"}}],
                           "backendRefs": [{"name": "api", "port": 80}]},
                          {"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/x"}}}],
                           "backendRefs": [{"name": "api", "port": 80}]},
                          {"matches": [{"path": {"type": "Exact", "value": "/gone"}}],
                           "backendRefs": [{"name": "nowhere", "port": 80}]}]
            }),
        ),
        http_route(
            "other",
            "cross",
            "2024-01-01T00:00:00Z",
            json!({
                "parentRefs": [{"kind": "Service", "namespace": "shop", "name": "api"}], "rules": []
            }),
        ),
    ];
    let t = run(&cluster);
    let said: Vec<String> = t.problems.iter().map(ToString::to_string).collect();
    for want in [
        "HTTPRoute other/cross: parent Service shop/api: routes for a Service of another namespace",
        "HTTPRoute shop/query: a match on query parameters is not supported",
        "HTTPRoute shop/query: a URL rewrite with ReplaceFullPath is not supported",
        "HTTPRoute shop/query: backend nowhere: no Service with a TCP port in the mesh",
        "Service shop/ext: ExternalName Services are not part of the mesh",
    ] {
        assert!(
            said.iter().any(|p| p.starts_with(want)),
            "{want} not in {said:#?}"
        );
    }
    let api = t
        .mesh
        .services
        .iter()
        .find(|s| s.name == "api.shop")
        .unwrap();
    let names: Vec<&str> = api.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["query-2", "query-0-1"]);
    assert_eq!(api.routes[0].direct_response.as_ref().unwrap().status, 500);
}

#[test]
fn an_invalid_route_is_left_out_and_named_the_rest_stays() {
    let mut cluster = shop();
    cluster.http_routes = vec![http_route(
        "shop",
        "bad-regex",
        "2024-01-01T00:00:00Z",
        json!({
            "parentRefs": parent("api"),
            "rules": [{"matches": [{"path": {"type": "RegularExpression", "value": "/(unclosed"}}],
                       "backendRefs": [{"name": "api", "port": 80}]},
                      {"backendRefs": [{"name": "web", "port": 80}]}]
        }),
    )];
    let t = run(&cluster);
    assert!(t.fatal.is_empty());
    assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
    let p = &t.problems[0];
    assert_eq!(
        (p.kind, p.namespace.as_str(), p.name.as_str()),
        ("HTTPRoute", "shop", "bad-regex")
    );
    assert!(p.message.contains("match.path"), "{p}");
    let api = t
        .mesh
        .services
        .iter()
        .find(|s| s.name == "api.shop")
        .unwrap();
    assert_eq!(api.routes.len(), 1);
    assert_eq!(api.routes[0].backends[0].name, "web.shop");
    assert_eq!(t.mesh.services.len(), 2, "every service stays");
}

fn service_policy(name: &str, created: &str, spec: Value) -> Arc<ServicePolicy> {
    obj(
        json!({"apiVersion": "policy.remora.io/v1alpha1", "kind": "ServicePolicy",
        "metadata": {"namespace": "shop", "name": name, "creationTimestamp": created}, "spec": spec}),
    )
}

#[test]
fn service_policies_set_the_service_and_its_routes_the_oldest_wins() {
    let mut cluster = shop();
    cluster.service_policies = vec![
        service_policy(
            "api-newer",
            "2024-03-01T00:00:00Z",
            json!({
            "targetRef": {"kind": "Service", "name": "api"}, "timeout": "9s"}),
        ),
        service_policy(
            "api",
            "2024-01-01T00:00:00Z",
            json!({
            "targetRef": {"kind": "Service", "name": "api"},
            "retry": {"attempts": 3, "on": ["5xx", "reset"], "perTryTimeout": "1s"},
            "timeout": "5s", "connectTimeout": "250ms",
            "balancer": {"kind": "ringHash", "header": "x-user"},
            "retryBudget": {"ratio": "0.5", "minPerSecond": 3, "window": "30s"},
            "outlierDetection": {"consecutiveFailures": 7, "baseEjectionTime": "5s"},
            "circuitBreaker": {"maxRequests": 100}}),
        ),
        service_policy(
            "bad",
            "2024-01-01T00:00:00Z",
            json!({
            "targetRef": {"kind": "Service", "name": "web"}, "retry": {"attempts": 50}}),
        ),
        service_policy(
            "typo",
            "2024-01-01T00:00:00Z",
            json!({
            "targetRef": {"kind": "Service", "name": "web"}, "timeout": "5 seconds"}),
        ),
        service_policy(
            "orphan",
            "2024-01-01T00:00:00Z",
            json!({
            "targetRef": {"kind": "Service", "name": "gone"}}),
        ),
    ];
    let t = run(&cluster);
    let said: Vec<String> = t.problems.iter().map(ToString::to_string).collect();
    assert_eq!(said, [
        "ServicePolicy shop/api-newer: ServicePolicy api applies to Service api already (the oldest wins)",
        "ServicePolicy shop/bad: not applied: retry.attempts: must be 1-10",
        "ServicePolicy shop/orphan: no Service `gone` with a TCP port in its namespace",
        "ServicePolicy shop/typo: not applied: timeout: \"5 seconds\": unknown unit `seconds`; use ms, s, m or h",
    ]);
    let api = &t.mesh.services[0];
    assert_eq!(api.connect_timeout, Duration::from_millis(250));
    assert!(
        matches!(&api.balancer, remora_api::Balancer::RingHash(h) if h.header.as_deref() == Some("x-user"))
    );
    assert_eq!(
        (api.retry_budget.ratio, api.retry_budget.min_per_second),
        (0.5, 3)
    );
    assert_eq!(api.outlier_detection.consecutive_failures, 7);
    assert_eq!(
        api.outlier_detection.base_ejection_time,
        Duration::from_secs(5)
    );
    assert_eq!(api.circuit_breaker.max_requests, 100);
    assert_eq!(api.circuit_breaker.max_connections, 1024);
    let route = &api.routes[0];
    assert_eq!(route.name, "default");
    assert_eq!(route.backends[0].name, "api.shop");
    assert_eq!(route.timeout, Some(Duration::from_secs(5)));
    let retry = route.retry.as_ref().unwrap();
    assert_eq!(
        (retry.attempts, retry.per_try_timeout),
        (3, Some(Duration::from_secs(1)))
    );
    let web = &t.mesh.services[1];
    assert!(web.routes.is_empty(), "the bad policies were not applied");
}

fn authz(name: &str, spec: Value) -> Arc<AuthorizationPolicy> {
    obj(
        json!({"apiVersion": "policy.remora.io/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"namespace": "shop", "name": name, "creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": spec}),
    )
}

#[test]
fn authorization_policies_set_the_workload_inbound_service_account_first() {
    use remora_api::{DefaultPolicy, InboundMode};
    let mut cluster = shop();
    cluster.authorization_policies = vec![
        authz(
            "namespace",
            json!({"mode": "strict", "default": "all-authenticated"}),
        ),
        authz(
            "api",
            json!({"targetRef": {"kind": "ServiceAccount", "name": "api"},
            "identities": ["spiffe://cluster.local/ns/shop/sa/web"], "networks": ["10.1.0.0/16"]}),
        ),
        authz(
            "broken",
            json!({"targetRef": {"kind": "ServiceAccount", "name": "web"},
            "networks": ["not-a-network"]}),
        ),
        authz("loose", json!({"mode": "lenient"})),
    ];
    let t = run(&cluster);
    let said: Vec<String> = t.problems.iter().map(ToString::to_string).collect();
    assert_eq!(said.len(), 2, "{said:#?}");
    assert!(
        said[0].starts_with("AuthorizationPolicy shop/broken: not applied: "),
        "{said:?}"
    );
    assert!(said[0].contains("CIDR"), "{said:?}");
    assert_eq!(
        said[1],
        "AuthorizationPolicy shop/loose: not applied: mode: `lenient` is not strict or permissive"
    );
    let api = t.mesh.workloads[0].inbound.as_ref().unwrap();
    assert_eq!(api.mode, InboundMode::Permissive);
    assert_eq!(
        api.authorization.allow[0].identities,
        ["spiffe://cluster.local/ns/shop/sa/web"]
    );
    assert_eq!(api.authorization.allow[0].networks, ["10.1.0.0/16"]);
    let web = t.mesh.workloads[1].inbound.as_ref().unwrap();
    assert_eq!(web.mode, InboundMode::Strict, "the namespace's policy");
    assert_eq!(web.authorization.default, DefaultPolicy::AllAuthenticated);
    assert!(web.authorization.allow.is_empty());
}

#[test]
fn grpc_routes_match_service_and_method_as_paths() {
    let mut cluster = shop();
    cluster.grpc_routes = vec![obj(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"namespace": "shop", "name": "rpc"},
        "spec": {"parentRefs": parent("api"), "rules": [
            {"matches": [{"method": {"service": "shop.Api", "method": "Get"}},
                         {"method": {"service": "shop.Api"}}],
             "backendRefs": [{"name": "api", "port": 80}]}]}}),
    )];
    let t = run(&cluster);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let paths: Vec<_> = t.mesh.services[0]
        .routes
        .iter()
        .map(|r| (r.name.clone(), r.matches.path.clone().unwrap()))
        .collect();
    assert_eq!(
        paths,
        [
            (
                "grpc-rpc-0-0".to_string(),
                PathMatch::Exact("/shop.Api/Get".into())
            ),
            (
                "grpc-rpc-0-1".to_string(),
                PathMatch::Prefix("/shop.Api".into())
            ),
        ]
    );
}

#[test]
fn gateway_durations() {
    for (s, want) in [
        ("10s", Ok(Some(10_000))),
        ("500ms", Ok(Some(500))),
        ("1h30m", Ok(Some(5_400_000))),
        ("1m0s500ms", Ok(Some(60_500))),
        ("0s", Ok(None)),
        ("", Err(())),
        ("10", Err(())),
        ("5 s", Err(())),
        ("1d", Err(())),
    ] {
        let got = routes::gateway_duration(s)
            .map(|d| d.map(|d| d.get().as_millis() as u64))
            .map_err(|_| ());
        assert_eq!(got, want, "{s}");
    }
}

#[test]
fn crds_are_structural_with_descriptions() {
    let yaml = crate::k8s::crd::crds_yaml();
    assert!(yaml.contains("name: servicepolicies.policy.remora.io"));
    assert!(yaml.contains("name: authorizationpolicies.policy.remora.io"));
    assert!(yaml.contains("targetRef:"));
    assert!(yaml.contains("description: The Service (in this namespace) the policy applies to."));
}

#[test]
fn the_example_policies_translate_without_a_problem() {
    let text = include_str!("../../../../examples/k8s/policy.yaml");
    let mut cluster = shop();
    cluster.services.push(service(
        "shop",
        "api-canary",
        json!([{"name": "http", "port": 80}]),
    ));
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        match v["kind"].as_str().unwrap() {
            "ServicePolicy" => cluster.service_policies.push(obj(v)),
            "AuthorizationPolicy" => cluster.authorization_policies.push(obj(v)),
            "HTTPRoute" => cluster.http_routes.push(obj(v)),
            other => panic!("unexpected kind {other}"),
        }
    }
    let t = run(&cluster);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let api = t
        .mesh
        .services
        .iter()
        .find(|s| s.name == "api.shop")
        .unwrap();
    assert_eq!(api.routes.len(), 2);
    assert_eq!(
        api.routes[0].timeout,
        Some(Duration::from_secs(3)),
        "the route's own"
    );
    assert_eq!(
        api.routes[1].timeout,
        Some(Duration::from_secs(5)),
        "the policy's"
    );
    assert_eq!(api.routes[1].retry.as_ref().unwrap().attempts, 3);
    let inbound = t.mesh.workloads[0].inbound.as_ref().unwrap();
    assert_eq!(inbound.mode, remora_api::InboundMode::Strict);
}

/// A slice of Service `svc` in `ns` with ports (name, port) and one ready
/// endpoint of pod `pod` at `ip`.
fn slice_ports(
    ns: &str,
    svc: &str,
    ports: &[(&str, u16)],
    ip: &str,
    pod: &str,
) -> Arc<EndpointSlice> {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, port)| json!({"name": name, "port": port, "protocol": "TCP"}))
        .collect();
    obj(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": format!("{svc}-xyz"),
            "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}}],
        "ports": ports}),
    )
}

#[test]
fn each_tcp_port_of_a_service_is_a_service_reached_at_its_cluster_ip() {
    let mut cluster = shop();
    cluster.services.push(service_at(
        "shop",
        "users",
        json!([{"name": "http", "port": 80, "targetPort": 8080},
               {"name": "dns", "port": 53, "protocol": "UDP"},
               {"name": "grpc", "port": 9090, "targetPort": 9091, "appProtocol": "grpc"}]),
        &["10.96.0.20"],
    ));
    cluster.endpoint_slices.push(slice_ports(
        "shop",
        "users",
        &[("http", 8080), ("grpc", 9091), ("dns", 53)],
        "10.0.2.2",
        "users-1",
    ));
    // A route on the second port, one on every port, a backend on it.
    cluster.http_routes = vec![
        http_route(
            "shop",
            "users-grpc",
            "2024-01-01T00:00:00Z",
            json!({"parentRefs": [{"kind": "Service", "name": "users", "port": 9090}],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                           "backendRefs": [{"name": "users", "port": 9090}]}]}),
        ),
        http_route(
            "shop",
            "users-all",
            "2024-01-02T00:00:00Z",
            json!({"parentRefs": [{"kind": "Service", "name": "users"}],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/health"}}],
                           "backendRefs": [{"name": "users", "port": 80}]}]}),
        ),
        http_route(
            "shop",
            "users-bad",
            "2024-01-03T00:00:00Z",
            json!({"parentRefs": [{"kind": "Service", "name": "users", "port": 7000}],
                "rules": [{"backendRefs": [{"name": "users", "port": 80}]}]}),
        ),
    ];
    let t = run(&cluster);
    let by_name = |n: &str| t.mesh.services.iter().find(|s| s.name == n).unwrap();
    let http = by_name("users.shop");
    assert_eq!(
        http.aliases,
        ["users.shop.svc", "users.shop.svc.cluster.local"]
    );
    assert_eq!(
        http.addresses,
        ["10.96.0.20:80".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(http.endpoints[0].address.to_string(), "10.0.2.2:8080");
    let grpc = by_name("users.shop.9090");
    // Its callers name the Service with the port (a headless Service's
    // callers dial a pod: the host is all that tells the port's service).
    assert_eq!(
        grpc.aliases,
        [
            "users.shop:9090",
            "users.shop.svc:9090",
            "users.shop.svc.cluster.local:9090"
        ]
    );
    assert_eq!(
        grpc.addresses,
        ["10.96.0.20:9090".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(grpc.endpoints[0].address.to_string(), "10.0.2.2:9091");
    // A caller's routes to it take those hosts, and the proxy takes them.
    let snaps = crate::compile::compile_with_roots(&t.mesh, &["ROOT".to_string()]);
    let web = &snaps["web.shop"].config;
    assert!(
        remora_api::validate(web).is_empty(),
        "{:?}",
        remora_api::validate(web)
    );
    let to_grpc = web.listeners[0]
        .routes
        .iter()
        .find(|r| r.backends.iter().any(|b| b.name == "users.shop.9090"))
        .unwrap();
    assert!(
        to_grpc
            .matches
            .hosts
            .contains(&"users.shop.svc.cluster.local:9090".into()),
        "{:?}",
        to_grpc.matches.hosts
    );
    assert_eq!(grpc.protocol, remora_api::UpstreamProtocol::Http2);
    // Without an appProtocol: as the caller speaks (gRPC without the
    // annotation stays HTTP/2), and so does each workload's inbound side.
    assert_eq!(http.protocol, remora_api::UpstreamProtocol::Auto);
    for w in &t.mesh.workloads {
        let inbound = w.inbound.as_ref().unwrap();
        assert_eq!(inbound.app_protocol, remora_api::UpstreamProtocol::Auto);
    }
    // UDP ports are not services.
    assert!(t.mesh.services.iter().all(|s| !s.name.ends_with(".53")));
    let names = |s: &remora_api::mesh::Service| -> Vec<String> {
        s.routes.iter().map(|r| r.name.clone()).collect()
    };
    // By precedence: the longer prefix first.
    assert_eq!(names(grpc), ["users-all-0", "users-grpc-0"]);
    assert_eq!(names(http), ["users-all-0"]);
    assert_eq!(grpc.routes[0].backends[0].name, "users.shop");
    assert_eq!(grpc.routes[1].backends[0].name, "users.shop.9090");
    let bad = t.problems.iter().find(|p| p.name == "users-bad").unwrap();
    assert!(
        bad.message
            .contains("port 7000: the Service has no such TCP port"),
        "{bad}"
    );
}

/// A slice of `svc` at 8080 whose endpoints have the conditions given as
/// (ip, pod, conditions).
fn slice_with(ns: &str, svc: &str, eps: &[(&str, &str, Value)]) -> Arc<EndpointSlice> {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, pod, conditions)| {
            json!({"addresses": [ip], "conditions": conditions,
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}})
        })
        .collect();
    slice_of(ns, svc, 8080, endpoints)
}

#[test]
fn terminating_pods_that_still_serve_take_calls_only_while_none_is_ready() {
    let serving = json!({"ready": false, "serving": true, "terminating": true});
    let gone = json!({"ready": false, "serving": false, "terminating": true});
    let ready = json!({"ready": true, "serving": true, "terminating": false});
    let addresses = |cluster: &Cluster| -> Vec<String> {
        let t = run(cluster);
        let web = t
            .mesh
            .services
            .iter()
            .find(|s| s.name == "web.shop")
            .unwrap();
        web.endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect()
    };
    let with = |eps: &[(&str, &str, Value)]| {
        let mut cluster = shop();
        cluster
            .endpoint_slices
            .retain(|s| s.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"] != "web");
        cluster.endpoint_slices.push(slice_with("shop", "web", eps));
        cluster
    };
    // A rollout's middle: the new pod is ready, the old one still serves.
    let both = with(&[
        ("10.0.1.2", "web-1", serving.clone()),
        ("10.0.1.3", "web-2", ready),
    ]);
    assert_eq!(addresses(&both), ["10.0.1.3:8080"]);
    // The new pod not ready yet: the old one takes the calls until it goes.
    let only_old = with(&[
        ("10.0.1.2", "web-1", serving),
        ("10.0.1.4", "web-3", json!({"ready": false})),
        ("10.0.1.5", "web-4", gone),
    ]);
    assert_eq!(addresses(&only_old), ["10.0.1.2:8080"]);
}

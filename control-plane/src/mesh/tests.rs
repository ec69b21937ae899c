use super::*;

const MESH: &str = include_str!("../../../examples/mesh.yaml");

#[test]
fn the_example_mesh_is_valid() {
    let mesh = parse(MESH).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!((mesh.services.len(), mesh.workloads.len()), (4, 2));
}

#[test]
fn table_of_invalid_meshes() {
    // (what, mesh, expected problem path, message fragment)
    let w = "workloads: [{name: w, outbound: 127.0.0.1:1}]";
    let cases: &[(&str, String, &str, &str)] = &[
        (
            "duplicate service",
            format!("services: [{{name: a}}, {{name: a}}]\n{w}"),
            "services[1].name",
            "`a` is used twice",
        ),
        (
            "service name is not a host name",
            format!("services: [{{name: Api}}]\n{w}"),
            "services[0].name",
            "lowercase DNS name",
        ),
        (
            "alias claimed by two services",
            format!("services: [{{name: a, aliases: [x.y]}}, {{name: b, aliases: [x.y]}}]\n{w}"),
            "services[1].aliases[0]",
            "already a host of service `a`",
        ),
        (
            "address claimed by two services",
            format!("services: [{{name: a, addresses: [\"10.96.0.1:80\"]}}, {{name: b, addresses: [\"10.96.0.1:80\"]}}]\n{w}"),
            "services[1].addresses[0]",
            "already an address of service `a`",
        ),
        (
            "address no caller dials",
            format!("services: [{{name: a, addresses: [\"0.0.0.0:80\"]}}]\n{w}"),
            "services[0].addresses[0]",
            "not an address a caller dials",
        ),
        (
            "route that sets destinations",
            format!("services: [{{name: a, routes: [{{name: r, match: {{destinations: [\"10.96.0.1:80\"]}}, backends: [{{name: a}}]}}]}}]\n{w}"),
            "services[0].routes[0].match.destinations",
            "leave `destinations` out",
        ),
        (
            "alias that is not a host name",
            format!("services: [{{name: a, aliases: [\"A_B\"]}}]\n{w}"),
            "services[0].aliases[0]",
            "not a lowercase host name",
        ),
        (
            "duplicate workload",
            "workloads: [{name: w, outbound: 127.0.0.1:1}, {name: w, outbound: 127.0.0.1:2}]".into(),
            "workloads[1].name",
            "`w` is used twice",
        ),
        (
            "call to an unknown service",
            "services: [{name: a}]\nworkloads: [{name: w, outbound: 127.0.0.1:1, calls: [a, nope]}]".into(),
            "workloads[0].calls[1]",
            "no service is named `nope`",
        ),
        (
            "route backend that is not a service",
            format!("services: [{{name: a, routes: [{{name: r, backends: [{{name: a}}, {{name: b}}]}}]}}]\n{w}"),
            "services[0].routes[0].backends[1].name",
            "no service is named `b`",
        ),
        (
            "route that sets hosts",
            format!("services: [{{name: a, routes: [{{name: r, match: {{hosts: [x]}}, backends: [{{name: a}}]}}]}}]\n{w}"),
            "services[0].routes[0].match.hosts",
            "leave `hosts` out",
        ),
        (
            "a proxy problem inside a route (no workload calls it)",
            "services: [{name: a}, {name: b, routes: [{name: r, backends: [{name: a, weight: 0}]}]}]\nworkloads: [{name: w, outbound: 127.0.0.1:1, calls: [a]}]".into(),
            "services[1].routes[0].backends[0].weight",
            "must be > 0",
        ),
        (
            "a proxy problem in a backend",
            format!("services: [{{name: a, circuit_breaker: {{max_requests: 0}}}}]\n{w}"),
            "services[0].circuit_breaker.max_requests",
            "must be > 0",
        ),
        (
            "a balancer the proxy refuses",
            format!("services: [{{name: a, balancer: {{ring_hash: {{}}}}}}]\n{w}"),
            "services[0].balancer.ring_hash",
            "header",
        ),
        (
            "a proxy problem in an endpoint",
            format!("services: [{{name: a, endpoints: [{{address: 127.0.0.1:1}}, {{address: 127.0.0.1:1}}]}}]\n{w}"),
            "services[0].endpoints[1].address",
            "listed twice",
        ),
        (
            "a workload whose outbound is its admin address",
            "workloads: [{name: w, outbound: 127.0.0.1:4191, admin: 127.0.0.1:4191}]".into(),
            "workloads[0].outbound",
            "is the admin address",
        ),
        (
            "route without an action",
            format!("services: [{{name: a, routes: [{{name: r}}]}}]\n{w}"),
            "services[0].routes[0]",
            "needs exactly one of",
        ),
        (
            "trust domain that is not a DNS name",
            format!("trust_domain: Example_Org\n{w}"),
            "trust_domain",
            "lowercase DNS name",
        ),
        (
            "namespace that is not a DNS label",
            "workloads: [{name: w, namespace: shop.prod, outbound: 127.0.0.1:1}]".into(),
            "workloads[0].namespace",
            "must be a DNS label",
        ),
        (
            "service account that is not a DNS name",
            "workloads: [{name: w, service_account: Web_SA, outbound: 127.0.0.1:1}]".into(),
            "workloads[0].service_account",
            "lowercase DNS name",
        ),
        (
            "a workload name that cannot be its service account",
            "workloads: [{name: Web_1, outbound: 127.0.0.1:1}]".into(),
            "workloads[0].name",
            "set `service_account`",
        ),
        (
            "the old free-form identity",
            "workloads: [{name: w, identity: spiffe://x/ns/a/sa/b, outbound: 127.0.0.1:1}]".into(),
            "workloads[0]",
            "unknown field `identity`",
        ),
        (
            "unknown field",
            "services: [{name: a, colour: red}]".into(),
            "services[0]",
            "unknown field `colour`",
        ),
        (
            "enum as a singleton map",
            "services: [{name: a, routes: [{name: r, match: {path: {suffix: /x}}, backends: [{name: a}]}]}]".into(),
            "services[0].routes[0].match.path",
            "unknown variant `suffix`",
        ),
    ];
    for (what, text, path, fragment) in cases {
        let problems = parse(text).expect_err(what);
        let hit = problems
            .iter()
            .find(|p| p.path == *path && p.message.contains(fragment));
        assert!(
            hit.is_some(),
            "{what}: want {path}: {fragment}; got {problems:#?}"
        );
        assert!(
            hit.unwrap().line.is_some(),
            "{what}: no line in {problems:#?}"
        );
    }
}

#[test]
fn endpoint_identities_need_a_ca() {
    let text = "services:\n  - name: api\n    endpoints:\n      - address: 127.0.0.1:9\n        identity: spiffe://cluster.local/ns/default/sa/api\n\
                workloads: [{name: web, outbound: 127.0.0.1:1}]";
    parse_for(text, true).unwrap_or_else(|p| panic!("{p:?}"));
    let problems = parse_for(text, false).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].path, "services[0].endpoints[0].identity");
    assert!(problems[0].message.contains("--ca-cert"), "{problems:?}");
    assert_eq!(problems[0].line, Some(5));
    let bad = text.replace("spiffe://cluster.local/ns/default/sa/api", "api");
    let problems = parse(&bad).unwrap_err();
    assert!(
        problems[0].message.contains("must be a SPIFFE ID"),
        "{problems:?}"
    );
}

#[test]
fn workload_identities() {
    let mesh = parse(
        "trust_domain: example.org\n\
         workloads:\n\
         - {name: web, outbound: 127.0.0.1:1}\n\
         - {name: Batch_1, namespace: jobs, service_account: batch, outbound: 127.0.0.1:2}",
    )
    .unwrap_or_else(|p| panic!("{p:?}"));
    let ids: Vec<String> = mesh.workloads.iter().map(|w| mesh.spiffe_id(w)).collect();
    assert_eq!(
        ids,
        [
            "spiffe://example.org/ns/default/sa/web",
            "spiffe://example.org/ns/jobs/sa/batch"
        ]
    );
    for id in &ids {
        assert!(remora_api::identity::parse_spiffe(id).is_some(), "{id}");
    }
    let default = parse("workloads: [{name: w, outbound: 127.0.0.1:1}]").unwrap();
    assert_eq!(
        default.spiffe_id(&default.workloads[0]),
        "spiffe://cluster.local/ns/default/sa/w"
    );
}

#[test]
fn a_problem_is_reported_once_even_when_many_workloads_share_it() {
    let text = "services: [{name: a, retry_budget: {ratio: -1}}]\n\
                workloads: [{name: w1, outbound: 127.0.0.1:1}, {name: w2, outbound: 127.0.0.1:2}]";
    let problems = parse(text).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].path, "services[0].retry_budget.ratio");
}

#[test]
fn problems_point_at_their_lines() {
    let text = "services:\n  - name: a\n  - name: b\n    routes:\n      - name: r\n        backends:\n          - name: a\n          - name: zz\nworkloads: []\n";
    let problems = parse(text).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].path, "services[1].routes[0].backends[1].name");
    assert_eq!(problems[0].line, Some(8));
}

#[test]
fn endpoint_workloads_must_name_an_inbound_workload_at_that_address() {
    let base = "workloads:\n  - { name: web, outbound: 127.0.0.1:4140 }\n  - { name: api, outbound: 127.0.0.1:4240, admin: 127.0.0.1:4291, inbound: { address: 127.0.0.1:4143, app: 127.0.0.1:8080 } }\n";
    let cases = [
        (
            "127.0.0.1:4143, workload: nope",
            "no workload is named `nope`",
        ),
        (
            "127.0.0.1:4143, workload: web",
            "workload `web` has no `inbound`",
        ),
        (
            "127.0.0.1:9999, workload: api",
            "takes calls at 127.0.0.1:4143, not 127.0.0.1:9999",
        ),
        (
            "127.0.0.1:4143, workload: api, identity: \"spiffe://a/ns/b/sa/c\"",
            "not both",
        ),
    ];
    for (endpoint, message) in cases {
        let mesh =
            format!("services:\n  - name: api\n    endpoints: [{{ address: {endpoint} }}]\n{base}");
        let problems = parse(&mesh).expect_err(endpoint);
        assert!(
            problems
                .iter()
                .any(|p| p.path == "services[0].endpoints[0].workload"
                    && p.message.contains(message)),
            "{endpoint}: {problems:?}"
        );
    }
    let good = format!("services:\n  - name: api\n    endpoints: [{{ address: 127.0.0.1:4143, workload: api }}]\n{base}");
    parse(&good).unwrap_or_else(|p| panic!("{p:?}"));
    let without_ca = parse_for(&good, false).expect_err("needs a CA");
    let paths: Vec<&str> = without_ca.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["services[0].endpoints[0].workload", "workloads[1].inbound"],
        "{without_ca:?}"
    );
}

/// Found by the `mesh` fuzz target: "more than one document" came without
/// a line (serde_yaml_ng has no location for it).
#[test]
fn a_second_document_is_a_problem_with_its_line() {
    let problems = parse("trust_domain: a.org\n---\ntrust_domain: b.org\n").unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, Some(2), "{problems:?}");
}

#[test]
fn the_mesh_tracing_reaches_every_proxy_named_after_its_workload() {
    let text = "tracing: { collector: 'otel:4317', protocol: grpc, sampling: 0.25 }\nworkloads:\n  - { name: web, outbound: 127.0.0.1:4140, admin: 127.0.0.1:4191 }\n  - name: api\n    outbound: 127.0.0.1:4150\n    admin: 127.0.0.1:4192\n    tracing: { collector: 'other:4318', service_name: api-v2 }\n";
    let mesh = parse(text).unwrap();
    let out = crate::compile::compile(&mesh);
    let web = out["web"].config.tracing.as_ref().expect("web traces");
    assert_eq!(
        (
            web.collector.as_str(),
            web.service_name.as_str(),
            web.sampling
        ),
        ("otel:4317", "web", 0.25)
    );
    assert_eq!(web.protocol, remora_api::OtlpProtocol::Grpc);
    let api = out["api"].config.tracing.as_ref().expect("api traces");
    assert_eq!(
        (api.collector.as_str(), api.service_name.as_str()),
        ("other:4318", "api-v2"),
        "a workload's own tracing wins"
    );
    let none = parse("workloads:\n  - { name: web, outbound: 127.0.0.1:4140 }\n").unwrap();
    assert!(crate::compile::compile(&none)["web"]
        .config
        .tracing
        .is_none());
}

#[test]
fn a_bad_tracing_section_is_named() {
    let text = "tracing: { collector: 'otel', sampling: 2 }\nworkloads:\n  - name: web\n    outbound: 127.0.0.1:4140\n    tracing: { collector: 'c:1', batch_size: 0 }\n";
    let paths: Vec<String> = parse(text)
        .unwrap_err()
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        [
            "tracing.collector",
            "tracing.sampling",
            "workloads[0].tracing.batch_size"
        ]
    );
}

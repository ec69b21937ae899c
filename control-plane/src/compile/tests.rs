use super::*;
use crate::mesh;
use remora_api::mesh::Mesh;
use remora_api::Delta;
use std::sync::Arc;

const MESH: &str = include_str!("../../../examples/mesh.yaml");

fn parse(text: &str) -> Mesh {
    mesh::parse(text).unwrap_or_else(|p| panic!("invalid mesh: {p:?}"))
}

fn route_names(msg: &SnapshotMsg) -> Vec<&str> {
    msg.config.listeners[0]
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect()
}

fn backend_names(msg: &SnapshotMsg) -> Vec<&str> {
    msg.config
        .backends
        .iter()
        .map(|b| b.name.as_str())
        .collect()
}

#[test]
fn each_workload_gets_the_services_it_calls() {
    let out = compile(&parse(MESH));
    assert_eq!(out.keys().collect::<Vec<_>>(), ["api", "web"]);
    let web = &out["web"];
    assert_eq!(route_names(web), ["api.canary"]);
    assert_eq!(backend_names(web), ["api", "api-canary"]);
    let l = &web.config.listeners[0];
    assert_eq!(
        (l.name.as_str(), l.address.port(), l.access_log),
        ("outbound", 4140, true)
    );
    assert_eq!(web.config.admin.address.port(), 4191);
    assert_eq!(l.routes[0].matches.hosts, ["api", "api.local"]);
    assert_eq!(l.routes[0].timeout.map(|t| t.get().as_secs()), Some(5));
    let api = &web.config.backends[0];
    assert_eq!(api.endpoints.len(), 2);
    assert_eq!(api.outlier_detection.consecutive_failures, 3);

    let users = &out["api"];
    assert_eq!(route_names(users), ["users"]);
    assert_eq!(backend_names(users), ["users"]);
    assert_eq!(users.config.listeners[0].routes[0].matches.hosts, ["users"]);
    assert!(users.config.backends[0].health_check.is_some());
    for msg in out.values() {
        assert!(remora_api::validate(&msg.config).is_empty());
        assert_eq!(msg.version.len(), 16);
    }
}

/// (what, mesh, workload, expected route names, expected backend names)
type Case<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], &'a [&'a str]);

#[test]
fn table_of_meshes() {
    let cases: &[Case] = &[
        (
            "no calls: every service, sorted by name",
            "services: [{name: b}, {name: a}]\nworkloads: [{name: w, outbound: 127.0.0.1:1}]",
            "w",
            &["a", "b"],
            &["a", "b"],
        ),
        (
            "calls listed twice count once",
            "services: [{name: a}, {name: b}]\nworkloads: [{name: w, outbound: 127.0.0.1:1, calls: [b, b]}]",
            "w",
            &["b"],
            &["b"],
        ),
        (
            "a split reaches a service the workload does not call",
            "services: [{name: a, routes: [{name: r, backends: [{name: a}, {name: c}]}]}, {name: c}]\n\
             workloads: [{name: w, outbound: 127.0.0.1:1, calls: [a]}]",
            "w",
            &["a.r"],
            &["a", "c"],
        ),
        (
            "routes keep their order and their more specific matches",
            "services:\n  - name: a\n    routes:\n      - {name: v2, match: {path: {prefix: /v2}, methods: [GET]}, backends: [{name: a}]}\n      - {name: all, backends: [{name: a}]}\n\
             workloads: [{name: w, outbound: 127.0.0.1:1}]",
            "w",
            &["a.v2", "a.all"],
            &["a"],
        ),
        (
            "a direct response reaches no backend",
            "services: [{name: a, routes: [{name: r, direct_response: {status: 503}}]}]\n\
             workloads: [{name: w, outbound: 127.0.0.1:1}]",
            "w",
            &["a.r"],
            &[],
        ),
    ];
    for (what, text, workload, routes, backends) in cases {
        let out = compile(&parse(text));
        let msg = &out[*workload];
        assert_eq!(route_names(msg), *routes, "{what}: routes");
        assert_eq!(backend_names(msg), *backends, "{what}: backends");
        assert!(
            remora_api::validate(&msg.config).is_empty(),
            "{what}: valid"
        );
    }
    let out = compile(&parse(cases[3].1));
    let m = &out["w"].config.listeners[0].routes[0].matches;
    assert_eq!(m.hosts, ["a"]);
    assert_eq!(m.methods, ["GET"]);
    assert_eq!(m.path, Some(remora_api::PathMatch::Prefix("/v2".into())));
}

#[test]
fn compile_is_deterministic() {
    let mesh = parse(MESH);
    let first = compile(&mesh);
    for _ in 0..3 {
        assert_eq!(compile(&mesh), first);
        assert_eq!(compile(&parse(MESH)), first);
    }
    // Listing services in another order changes nothing.
    let mut shuffled = mesh.clone();
    shuffled.services.reverse();
    assert_eq!(compile(&shuffled), first);
    // Different workloads, different content, different versions.
    assert_ne!(first["web"].version, first["api"].version);
}

#[test]
fn only_the_workloads_that_see_a_change_get_a_new_version() {
    let before = compile(&parse(MESH));
    // `users` is called by `api` only: `web` keeps its version.
    let changed = MESH.replace("127.0.0.1:7005", "127.0.0.1:7015");
    let after = compile(&parse(&changed));
    assert_eq!(after["web"].version, before["web"].version);
    assert_ne!(after["api"].version, before["api"].version);
    // A new service nobody calls changes nobody.
    let added = MESH.replace(
        "workloads:",
        "  - name: audit\n    endpoints: [{address: 127.0.0.1:7009}]\nworkloads:",
    );
    let after = compile(&parse(&added));
    assert_eq!(after["web"].version, before["web"].version);
    assert_eq!(after["api"].version, before["api"].version);
    // A split target's endpoints are part of the caller's snapshot.
    let canary = MESH.replace("127.0.0.1:7004", "127.0.0.1:7014");
    let after = compile(&parse(&canary));
    assert_ne!(after["web"].version, before["web"].version);
    assert_eq!(after["api"].version, before["api"].version);
}

#[test]
fn version_is_fnv1a_of_the_content() {
    // The published FNV-1a 64 test vectors.
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    let mesh = parse(MESH);
    let resolved = resolve(&mesh);
    let parts = compile_parts(&resolved, None);
    let web = &mesh.workloads.iter().find(|w| w.name == "web").unwrap();
    let snap = workload_snapshot(&parts, web, &[], &mut Shared::default());
    // The own part's hash, then the outbound side's: each part's routes
    // hash, the number of route parts, each backend part's hash.
    let mut outbound = Vec::new();
    for p in &snap.outbound.routes {
        outbound.extend_from_slice(&fnv1a64(&serde_json::to_vec(&p.routes).unwrap()).to_le_bytes());
    }
    outbound.extend_from_slice(&(snap.outbound.routes.len() as u64).to_le_bytes());
    for p in &snap.outbound.backends {
        outbound
            .extend_from_slice(&fnv1a64(&serde_json::to_vec(&p.backend).unwrap()).to_le_bytes());
    }
    // The own part: its JSON without backends, then the app's backend's.
    let mut own = own_config(web);
    let app = std::mem::take(&mut own.backends);
    let mut own_bytes = serde_json::to_vec(&own).unwrap();
    if let Some(app) = app.first() {
        own_bytes.extend_from_slice(&serde_json::to_vec(app).unwrap());
    }
    let bytes = [
        fnv1a64(&own_bytes).to_le_bytes(),
        fnv1a64(&outbound).to_le_bytes(),
    ]
    .concat();
    assert_eq!(snap.version, format!("{:016x}", fnv1a64(&bytes)));
}

#[test]
fn the_whole_line_is_the_encoded_snapshot_byte_for_byte() {
    let transparent = MTLS_MESH.replace(
        "    admin: 127.0.0.1:4291\n",
        "    admin: 127.0.0.1:4291\n    transparent: true\n",
    );
    let meshes = [
        parse(MESH),
        parse(MTLS_MESH),
        parse(&transparent),
        big_mesh(30, |i, s| {
            if i == 3 {
                s.push_str("    routes:\n      - name: a\n        match: {path: {prefix: /a}}\n        backends: [{name: svc-4}]\n      - name: b\n        backends: [{name: svc-3}]\n");
            }
        }),
    ];
    for mesh in &meshes {
        let parts = compile_parts(&resolve(mesh), None);
        for roots in [&[][..], &["ROOT A".to_string(), "ROOT B".to_string()][..]] {
            let mut shared = Shared::default();
            for w in &mesh.workloads {
                let snap = workload_snapshot(&parts, w, roots, &mut shared);
                let msg = SnapshotMsg {
                    version: snap.version.clone(),
                    config: snap.config(),
                };
                let mut expected = serde_json::to_vec(&msg).unwrap();
                expected.push(b'\n');
                assert_eq!(
                    String::from_utf8(snap.line()).unwrap(),
                    String::from_utf8(expected).unwrap(),
                    "workload {}",
                    w.name
                );
            }
        }
    }
}

/// A mesh of `n` services (`svc-<i>`, two endpoints each) and two workloads:
/// `all` calls every service, `few` calls svc-0 and svc-1.
fn big_mesh(n: usize, edit: impl Fn(usize, &mut String)) -> Mesh {
    let mut text = String::from("services:\n");
    for i in 0..n {
        let mut s = format!(
            "  - name: svc-{i}\n    endpoints: [{{address: 127.0.0.{}:80}}, {{address: 127.0.0.{}:81}}]\n",
            i % 200 + 1,
            i % 200 + 1
        );
        edit(i, &mut s);
        text.push_str(&s);
    }
    text.push_str("workloads:\n  - name: all\n    outbound: 127.0.0.1:4140\n  - name: few\n    outbound: 127.0.0.1:4141\n    admin: 127.0.0.1:4192\n    calls: [svc-0, svc-1]\n");
    parse(&text)
}

/// The same routing: equal backends and routes by name, and the routes for
/// each set of hosts in the same order.
fn same_routing(a: &Config, b: &Config) {
    let by_name = |c: &Config| -> BTreeMap<String, Backend> {
        c.backends
            .iter()
            .map(|b| (b.name.clone(), b.clone()))
            .collect()
    };
    assert_eq!(by_name(a), by_name(b));
    let routes = |c: &Config| -> BTreeMap<Vec<String>, Vec<Route>> {
        let mut m: BTreeMap<Vec<String>, Vec<Route>> = BTreeMap::new();
        for r in &c.listeners[0].routes {
            m.entry(r.matches.hosts.clone())
                .or_default()
                .push(r.clone());
        }
        m
    };
    assert_eq!(routes(a), routes(b));
    assert_eq!(a.listeners.len(), b.listeners.len());
}

#[test]
fn a_delta_turns_the_old_snapshot_into_the_new_one() {
    let canary = "    routes:\n      - name: main\n        backends: [{name: svc-3, weight: 90}, {name: svc-4, weight: 10}]\n";
    let two_routes = "    routes:\n      - name: a\n        match: {path: {prefix: /a}}\n        backends: [{name: svc-3}]\n      - name: b\n        backends: [{name: svc-3}]\n";
    let before = big_mesh(50, |i, s| {
        if i == 3 {
            s.push_str(two_routes)
        }
    });
    let changes: Vec<(&str, Mesh)> = vec![
        (
            "an endpoint moves",
            big_mesh(50, |i, s| {
                if i == 3 {
                    s.push_str(two_routes)
                }
                if i == 7 {
                    *s = s.replace(":81}", ":82}");
                }
            }),
        ),
        (
            "a route is added and one reordered",
            big_mesh(50, |i, s| {
                if i == 3 {
                    s.push_str("    routes:\n      - name: b\n        backends: [{name: svc-3}]\n      - name: z\n        match: {path: {prefix: /z}}\n        backends: [{name: svc-3}]\n      - name: a\n        match: {path: {prefix: /a}}\n        backends: [{name: svc-3}]\n");
                }
            }),
        ),
        (
            "a route is added after the first",
            big_mesh(50, |i, s| {
                if i == 3 {
                    s.push_str("    routes:\n      - name: a\n        match: {path: {prefix: /a}}\n        backends: [{name: svc-3}]\n      - name: new\n        match: {path: {prefix: /n}}\n        backends: [{name: svc-3}]\n      - name: b\n        backends: [{name: svc-3}]\n");
                }
            }),
        ),
        (
            "a split to another service",
            big_mesh(50, |i, s| {
                if i == 0 {
                    s.push_str(canary)
                }
                if i == 3 {
                    s.push_str(two_routes)
                }
            }),
        ),
        (
            "services come and go",
            big_mesh(52, |i, s| {
                if i == 3 {
                    s.push_str(two_routes)
                }
                if i == 5 {
                    *s = s
                        .replace("svc-5", "gone-5")
                        .replace("name: gone-5", "name: renamed-5");
                }
            }),
        ),
    ];
    let prev = compile_parts(&before, None);
    for (what, after) in &changes {
        let parts = compile_parts(after, Some(&prev));
        for w in ["all", "few"] {
            let wl = |m: &Mesh| m.workloads.iter().find(|x| x.name == w).unwrap().clone();
            let old = workload_snapshot(&prev, &wl(&before), &[], &mut Shared::default());
            let new = workload_snapshot(&parts, &wl(after), &[], &mut Shared::default());
            if old.version == new.version {
                assert!(new.delta_from(&old).unwrap().is_empty(), "{what}: {w}");
                continue;
            }
            let delta = new
                .delta_from(&old)
                .unwrap_or_else(|| panic!("{what}: {w}: no delta"));
            assert!(!delta.is_empty(), "{what}: {w}");
            let mut patched = old.config();
            // Through the wire form, as a proxy gets it.
            let delta: Delta =
                serde_json::from_slice(&serde_json::to_vec(&delta).unwrap()).unwrap();
            delta
                .apply(&mut patched)
                .unwrap_or_else(|e| panic!("{what}: {w}: {e:?}"));
            same_routing(&patched, &new.config());
            assert!(remora_api::validate(&patched).is_empty(), "{what}: {w}");
        }
    }
    // Unchanged services keep their compiled part.
    let parts = compile_parts(&changes[0].1, Some(&prev));
    assert!(Arc::ptr_eq(&parts["svc-0"], &prev["svc-0"]));
    assert!(!Arc::ptr_eq(&parts["svc-7"], &prev["svc-7"]));
}

#[test]
fn a_change_to_the_workload_itself_is_sent_whole() {
    let before = big_mesh(20, |_, _| {});
    let parts = compile_parts(&before, None);
    let all = before.workloads[0].clone();
    let old = workload_snapshot(&parts, &all, &[], &mut Shared::default());
    let mut logged = all.clone();
    logged.access_log = true;
    let new = workload_snapshot(&parts, &logged, &[], &mut Shared::default());
    assert!(new.delta_from(&old).is_none(), "own part changed");
    let roots = workload_snapshot(&parts, &all, &["ROOT".into()], &mut Shared::default());
    assert!(roots.delta_from(&old).is_none(), "trust roots changed");
}

#[test]
fn trust_roots_reach_every_config_and_change_its_version() {
    let mesh = parse(MESH);
    let without = compile(&mesh);
    assert!(without.values().all(|m| m.config.identity.is_none()));
    let roots = ["ROOT A".to_string(), "ROOT B".to_string()];
    let with = compile_with_roots(&mesh, &roots);
    assert_eq!(with, compile_with_roots(&mesh, &roots), "deterministic");
    for (workload, msg) in &with {
        let id = msg.config.identity.as_ref().unwrap();
        assert_eq!(id.trust_roots, roots);
        assert_eq!((&id.trust_roots_file, &id.certificate), (&None, &None));
        assert_ne!(msg.version, without[workload].version);
    }
}

/// `web` calls `api`; `api`'s proxy takes calls on 127.0.0.1:4143.
const MTLS_MESH: &str = "
trust_domain: example.org
services:
  - name: api
    endpoints: [{ address: 127.0.0.1:4143, workload: api }]
workloads:
  - name: web
    namespace: shop
    outbound: 127.0.0.1:4140
    calls: [api]
  - name: api
    namespace: shop
    outbound: 127.0.0.1:4240
    admin: 127.0.0.1:4291
    inbound:
      address: 127.0.0.1:4143
      app: 127.0.0.1:8080
      mode: strict
      authorization: { allow: [{ identities: [\"spiffe://example.org/ns/shop/sa/web\"] }] }
";

#[test]
fn an_inbound_workload_gets_an_inbound_listener_and_callers_expect_its_identity() {
    let out = compile_with_roots(&parse(MTLS_MESH), &["ROOT".to_string()]);
    let web = &out["web"].config;
    let ep = &web.backends[0].endpoints[0];
    assert_eq!(
        ep.identity.as_deref(),
        Some("spiffe://example.org/ns/shop/sa/api")
    );
    assert_eq!(web.listeners.len(), 1, "web has no inbound side");
    assert_eq!(web.identity.as_ref().unwrap().trust_roots, ["ROOT"]);

    let api = &out["api"].config;
    let inbound = &api.listeners[1];
    assert_eq!(
        (inbound.name.as_str(), inbound.address.port()),
        (INBOUND, 4143)
    );
    assert_eq!(inbound.protocol, ListenerProtocol::Detect);
    assert_eq!(inbound.tcp_backend.as_deref(), Some(APP));
    let policy = inbound.inbound.as_ref().unwrap();
    assert_eq!(policy.mode, remora_api::InboundMode::Strict);
    assert_eq!(policy.authorization.allow.len(), 1);
    assert_eq!(inbound.routes[0].backends[0].name, APP);
    let app = api.backends.iter().find(|b| b.name == APP).unwrap();
    assert_eq!(app.endpoints[0].address.port(), 8080);
    assert!(
        remora_api::validate(api).is_empty(),
        "{:?}",
        remora_api::validate(api)
    );
}

#[test]
fn a_transparent_workload_reads_original_destinations_on_both_sides() {
    let mesh = MTLS_MESH.replace(
        "    admin: 127.0.0.1:4291\n",
        "    admin: 127.0.0.1:4291\n    transparent: true\n",
    );
    let out = compile_with_roots(&parse(&mesh), &["ROOT".to_string()]);
    let api = &out["api"].config;
    let (outbound, inbound) = (&api.listeners[0], &api.listeners[1]);
    assert!(outbound.original_destination && inbound.original_destination);
    assert_eq!(outbound.protocol, ListenerProtocol::Detect);
    assert!(
        remora_api::validate(api).is_empty(),
        "{:?}",
        remora_api::validate(api)
    );
    // Not transparent: unchanged.
    let web = &out["web"].config;
    assert!(!web.listeners[0].original_destination);
    assert_eq!(web.listeners[0].protocol, ListenerProtocol::Http);
}

#[test]
fn a_service_address_is_a_destination_of_each_of_its_routes() {
    let mesh = parse(
        "services:
  - name: api
    addresses: [\"10.96.0.10:80\", \"[fd00:96::10]:80\"]
    routes:
      - { name: v2, match: { path: { prefix: /v2 } }, backends: [{ name: api }] }
      - { name: rest, backends: [{ name: api }] }
  - name: web
    addresses: [\"10.96.0.11:80\"]
workloads:
  - { name: web, outbound: 127.0.0.1:4140, transparent: true, calls: [api] }
  - { name: api, outbound: 127.0.0.1:4140, transparent: true, calls: [web] }
",
    );
    let out = compile(&mesh);
    let want: Vec<std::net::SocketAddr> = vec![
        "10.96.0.10:80".parse().unwrap(),
        "[fd00:96::10]:80".parse().unwrap(),
    ];
    let web = &out["web"].config;
    let routes = &web.listeners[0].routes;
    assert_eq!(route_names(&out["web"]), ["api.v2", "api.rest"]);
    for r in routes {
        assert_eq!(r.matches.destinations, want, "{}", r.name);
    }
    // A service without routes: its one route.
    let api = &out["api"].config;
    assert_eq!(
        api.listeners[0].routes[0].matches.destinations,
        ["10.96.0.11:80".parse::<std::net::SocketAddr>().unwrap()]
    );
    for c in [web, api] {
        assert!(
            remora_api::validate(c).is_empty(),
            "{:?}",
            remora_api::validate(c)
        );
    }
}

#[test]
fn a_service_sets_how_callers_balance_connect_and_pool() {
    let mesh = parse(
        "services:
  - name: api
    balancer: round_robin
    connect_timeout: 3s
    pool: { idle_timeout: 30s, max_idle_per_endpoint: 8 }
    endpoints: [{ address: 127.0.0.1:7002 }]
  - name: users
    balancer: { ring_hash: { header: x-user } }
    endpoints: [{ address: 127.0.0.1:7005 }]
workloads:
  - name: web
    outbound: 127.0.0.1:4140
",
    );
    let web = &compile(&mesh)["web"].config;
    let (api, users) = (&web.backends[0], &web.backends[1]);
    assert_eq!(api.balancer, remora_api::Balancer::RoundRobin);
    assert_eq!(api.connect_timeout.to_string(), "3s");
    assert_eq!(
        (
            api.pool.idle_timeout.to_string(),
            api.pool.max_idle_per_endpoint
        ),
        ("30s".to_string(), 8)
    );
    assert!(matches!(users.balancer, remora_api::Balancer::RingHash(_)));
    // Unset: the proxy's defaults.
    assert_eq!(users.connect_timeout, defaults::connect_timeout());
    assert_eq!(users.pool, remora_api::Pool::default());
}

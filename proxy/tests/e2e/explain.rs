//! `/explain` end to end: a real proxy with several routes, a traffic split
//! and an ejected endpoint, asked with curl where requests would go.

use crate::start;
use remora_test_support::tools::require;
use remora_test_support::{ProxyProcess, Upstream};
use serde_json::Value;
use std::process::Command;

/// Runs curl with `args`; returns the status and the body.
pub async fn curl(args: Vec<String>) -> (u16, String) {
    require("curl");
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(&args)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.parse().unwrap_or(0), body.to_string())
    })
    .await
    .expect("curl task")
}

pub async fn explain(admin: std::net::SocketAddr, query: &str) -> Value {
    let (status, body) = curl(vec![format!("http://{admin}/explain?{query}")]).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

fn config(live: &Upstream, dead: std::net::SocketAddr, canary: &Upstream) -> String {
    format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: users-canary
        match: {{ hosts: [api.example.com], path: {{ prefix: /users }}, headers: [{{ name: x-canary, exact: "1" }}] }}
        backends: [{{ name: canary }}]
      - name: users
        match: {{ hosts: [api.example.com], path: {{ prefix: /users }} }}
        backends: [{{ name: stable, weight: 90 }}, {{ name: canary, weight: 10 }}]
        timeout: 2s
        retry: {{ attempts: 2, on: [connect-failure] }}
        rate_limit: {{ requests_per_second: 100 }}
      - name: orders
        match: {{ hosts: [api.example.com], path: {{ prefix: /orders }}, methods: [GET] }}
        backends: [{{ name: stable }}]
      - name: health
        match: {{ path: {{ exact: /healthz }} }}
        direct_response: {{ status: 200, body: ok }}
      - name: users-admin
        match: {{ hosts: ["api.example.com:9090"] }}
        backends: [{{ name: canary }}]
backends:
  - name: stable
    balancer: round_robin
    endpoints: [{{ address: {} }}, {{ address: {dead} }}]
    outlier_detection: {{ consecutive_failures: 1, base_ejection_time: 300s, max_ejected_percent: 50 }}
  - name: canary
    endpoints: [{{ address: {} }}]
"#,
        live.addr(),
        canary.addr()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_route_backend_and_endpoint_with_reasons() {
    let live = Upstream::start("live").await;
    let dead = Upstream::start("dead").await.kill().await;
    let canary = Upstream::start("canary").await;
    let proxy = start(&config(&live, dead, &canary)).await;
    let admin = proxy.admin();

    // A header picks the first route.
    let e = explain(
        admin,
        "host=api.example.com&path=/users/7&header=x-canary:1",
    )
    .await;
    assert_eq!(e["chosen_route"], "users-canary", "{e:#}");
    assert_eq!(e["chosen_backend"], "canary");
    assert_eq!(e["chosen_endpoint"], canary.addr().to_string());
    assert_eq!(e["listener"]["name"], "edge");

    // Without it, the first route is skipped with its reason; the second
    // route's split and policies show.
    let e = explain(admin, "method=GET&host=API.example.com:8080&path=/users/7").await;
    let steps = e["route"]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["route"], "users-canary");
    assert_eq!(steps[0]["matched"], false);
    let why = steps[0]["reason"].as_str().unwrap();
    assert!(why.contains("header x-canary"), "{why}");
    assert_eq!(steps[1]["matched"], true);
    assert_eq!(e["chosen_route"], "users");
    let split: Vec<(&str, f64)> = e["split"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["backend"].as_str().unwrap(),
                s["percent"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(split, [("stable", 90.0), ("canary", 10.0)]);
    assert_eq!(e["policies"]["timeout"], "2s");
    assert_eq!(e["policies"]["retry"]["attempts"], 2);
    assert_eq!(
        e["policies"]["route_rate_limit"]["requests_per_second"],
        100
    );

    // A method the route does not take: the reason says so, and the
    // host-less route is not reached for this path either: 404.
    // The host with another port: the routes that name it at that port.
    let e = explain(admin, "host=api.example.com:9090&path=/users/7").await;
    assert_eq!(e["chosen_route"], "users-admin", "{e:#}");
    let hosts = e["route"]["hosts"].as_str().unwrap();
    assert!(
        hosts.contains("host api.example.com:9090 (exact)"),
        "{hosts}"
    );

    let e = explain(admin, "method=DELETE&host=api.example.com&path=/orders/1").await;
    let orders = &e["route"]["steps"].as_array().unwrap()[2];
    assert!(
        orders["reason"].as_str().unwrap().contains("method DELETE"),
        "{e:#}"
    );
    assert_eq!(e["chosen_route"], Value::Null);
    assert!(e["outcome"].as_str().unwrap().contains("404"));

    // Real requests eject the dead endpoint; explain then skips it.
    for _ in 0..4 {
        let url = format!("http://{}/orders/1", proxy.listener("edge"));
        curl(vec!["-H".into(), "host: api.example.com".into(), url]).await;
    }
    let e = explain(admin, "host=api.example.com&path=/orders/1").await;
    let stable = &e["backends"][0];
    let eps = stable["endpoints"].as_array().unwrap();
    let dead_state = eps
        .iter()
        .find(|s| s["address"] == dead.to_string())
        .unwrap();
    assert_eq!(dead_state["available"], false, "{e:#}");
    assert!(dead_state["ejected_for_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(e["chosen_endpoint"], live.addr().to_string());
    assert!(
        stable["reason"].as_str().unwrap().contains("skipped"),
        "{stable}"
    );

    // The same for a person, and as a JSON body.
    let (status, text) = curl(vec![format!(
        "http://{admin}/explain?host=api.example.com&path=/healthz&format=text"
    )])
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("✗ users-canary"), "{text}");
    assert!(
        text.contains("outcome   answered by the proxy: 200 OK"),
        "{text}"
    );
    let body =
        r#"{"method":"POST","host":"api.example.com","path":"/users","headers":{"x-canary":"1"}}"#;
    let (status, json) = curl(vec![
        "-X".into(),
        "POST".into(),
        "--data".into(),
        body.into(),
        format!("http://{admin}/explain"),
    ])
    .await;
    assert_eq!(status, 200, "{json}");
    assert!(
        json.contains("\"chosen_route\": \"users-canary\""),
        "{json}"
    );
}

/// A transparent listener `outbound` whose routes `api.v2` (path /v2) and
/// `api` name the ClusterIP 10.96.0.12:80, both to backend `api` at
/// `api`; and a `protocol: tcp` listener `db` to backend `db` at `db`.
async fn transparent(api: std::net::SocketAddr, db: std::net::SocketAddr) -> ProxyProcess {
    start(&format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: outbound
    address: 127.0.0.1:0
    protocol: detect
    original_destination: true
    routes:
      - name: api.v2
        match: {{ hosts: [api.shop], path: {{ prefix: /v2 }}, destinations: ["10.96.0.12:80"] }}
        backends: [{{ name: api }}]
      - name: api
        match: {{ hosts: [api.shop], destinations: ["10.96.0.12:80"] }}
        backends: [{{ name: api }}]
  - name: db
    address: 127.0.0.1:0
    protocol: tcp
    tcp_backend: db
backends:
  - name: api
    endpoints: [{{ address: {api} }}]
  - name: db
    endpoints: [{{ address: {db} }}]
"#
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_transparent_listener_the_address_dialed_finds_its_route() {
    let up = Upstream::start("up").await;
    let proxy = transparent(up.addr(), up.addr()).await;
    let admin = proxy.admin();
    // Called by a short name: no route names host `api`; the address it
    // dialed (the ClusterIP) does.
    let e = explain(admin, "host=api:80&path=/v1/x&destination=10.96.0.12:80").await;
    assert_eq!(e["chosen_route"], "api", "{e:#}");
    assert_eq!(e["chosen_backend"], "api");
    let how = e["route"]["hosts"].as_str().unwrap();
    assert!(how.contains("no route names host api"), "{how}");
    assert!(
        how.contains("destination 10.96.0.12:80 (2 of them)"),
        "{how}"
    );
    let steps = e["route"]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["route"], "api.v2");
    assert!(steps[0]["reason"].as_str().unwrap().contains("path /v1/x"));
    // Another address: on to where the client was headed.
    let e = explain(admin, "host=api&destination=10.96.0.99:80").await;
    assert_eq!(e["chosen_route"], Value::Null);
    assert_eq!(
        e["outcome"],
        "no route matches: on to the original destination 10.96.0.99:80"
    );
    // The route's host, but another port of its address: not the route's.
    let e = explain(admin, "host=api.shop&destination=10.96.0.12:9090").await;
    assert_eq!(e["chosen_route"], Value::Null, "{e:#}");
    let how = e["route"]["hosts"].as_str().unwrap();
    assert!(how.contains("another port"), "{how}");
    assert_eq!(
        e["outcome"],
        "no route matches: on to the original destination 10.96.0.12:9090"
    );
    // Not redirected (no destination): 404, as the proxy answers.
    let e = explain(admin, "host=api").await;
    assert!(e["outcome"].as_str().unwrap().contains("404"), "{e:#}");
    let (status, body) = curl(vec![format!(
        "http://{admin}/explain?host=api&destination=api:80"
    )])
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("destination `api:80` is not an address"),
        "{body}"
    );
}

/// `protocol=tcp`: where an opaque connection goes, as the proxy chooses
/// it: by the address dialed on a transparent listener (a route's
/// destination, the snapshot's endpoint, or passthrough), else
/// `tcp_backend`; a `protocol: tcp` listener explains connections unasked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_connections_are_explained() {
    let up = Upstream::start("up").await;
    let db = Upstream::start("db").await;
    let proxy = transparent(up.addr(), db.addr()).await;
    let admin = proxy.admin();
    let tcp = |q: &str| format!("protocol=tcp&listener=outbound&{q}");
    // A ClusterIP: the route that has it in match.destinations.
    let e = explain(admin, &tcp("destination=10.96.0.12:80")).await;
    assert_eq!(e["protocol"], "tcp", "{e:#}");
    assert_eq!(e["chosen_route"], "api");
    assert_eq!(e["chosen_backend"], "api");
    assert_eq!(e["chosen_endpoint"], up.addr().to_string());
    assert_eq!(
        e["outcome"],
        format!("to backend api of route api, endpoint {}", up.addr())
    );
    // The address of an endpoint of the snapshot: that endpoint.
    let e = explain(admin, &tcp(&format!("destination={}", up.addr()))).await;
    assert_eq!(
        e["outcome"],
        format!(
            "to endpoint {} of backend api (the address dialed)",
            up.addr()
        )
    );
    // An address nobody knows: straight there.
    let e = explain(admin, &tcp("destination=10.96.0.99:80")).await;
    let outcome = e["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("to the original destination 10.96.0.99:80 directly"),
        "{outcome}"
    );
    // Not redirected, no tcp_backend: refused, as the proxy does.
    let e = explain(admin, "protocol=tcp&listener=outbound").await;
    assert!(
        e["outcome"]
            .as_str()
            .unwrap()
            .starts_with("closed: not redirected"),
        "{e:#}"
    );
    // A `protocol: tcp` listener: a connection, without asking.
    let e = explain(admin, "listener=db").await;
    assert_eq!(e["protocol"], "tcp");
    assert_eq!(
        e["outcome"],
        format!("to backend db (tcp_backend), endpoint {}", db.addr())
    );
    let (status, text) = curl(vec![format!(
        "http://{admin}/explain?listener=db&format=text"
    )])
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("opaque    opaque TCP\n"), "{text}");
    assert!(
        text.contains(&format!("→ {} weight 1", db.addr())),
        "{text}"
    );
    // Asked for HTTP there: a clear 400.
    let (status, body) = curl(vec![format!(
        "http://{admin}/explain?listener=db&host=a&protocol=http"
    )])
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("forwards opaque TCP only"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_explain_queries_are_a_clear_400() {
    let up = Upstream::start("up").await;
    let proxy = start(&crate::config(
        "      - name: r\n        backends: [{ name: b }]",
        &format!("  - name: b\n    endpoints: [{{ address: {} }}]", up.addr()),
    ))
    .await;
    let admin = proxy.admin();
    for (query, says) in [
        ("host=a&path=users", "path `users` must start with /"),
        ("path=/", "host is required"),
        (
            "host=a&listener=nope",
            "no listener is named `nope`; listeners: edge",
        ),
        ("host=a&header=x-user", "name:value"),
        ("host=a&colour=red", "unknown parameter `colour`"),
        ("host=a&format=xml", "format `xml`"),
    ] {
        let (status, body) = curl(vec![format!("http://{admin}/explain?{query}")]).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    let (status, body) = curl(vec![
        "--data".into(),
        "{not json".into(),
        format!("http://{admin}/explain"),
    ])
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid JSON body"), "{body}");
}

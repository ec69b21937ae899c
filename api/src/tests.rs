use super::*;

const GOOD: &str = r#"
listeners:
  - name: edge
    address: 127.0.0.1:8080
    routes:
      - name: api
        match:
          hosts: ["api.example.com", "*.example.org"]
          path: { prefix: /api }
          methods: [GET, POST]
          headers: [{ name: x-canary, exact: "1" }]
        backends: [{ name: api, weight: 90 }, { name: api-v2, weight: 10 }]
        rewrite: { path_prefix: / }
        timeout: 5s
      - name: gone
        match: { path: { regex: "^/old/.*" } }
        direct_response: { status: 410, body: "gone\n" }
backends:
  - name: api
    endpoints: [{ address: 127.0.0.1:9000 }, { address: 127.0.0.1:9001, weight: 3 }]
  - name: api-v2
    balancer: { ring_hash: { header: x-user } }
    endpoints: [{ address: 127.0.0.1:9002 }]
"#;

#[test]
fn good_config_parses() {
    let c = parse_yaml(GOOD).unwrap();
    assert_eq!(c.listeners[0].routes.len(), 2);
    assert_eq!(
        c.backends[1].balancer,
        Balancer::RingHash(RingHash {
            header: Some("x-user".into()),
            cookie: None
        })
    );
    assert_eq!(
        c.listeners[0].routes[0].timeout,
        Some(Duration::from_secs(5))
    );
    assert_eq!(c.admin.address.port(), 4191);
}

#[test]
fn a_route_host_may_name_a_port() {
    let ported = GOOD.replace(
        "\"*.example.org\"",
        "\"*.example.org:8443\", api.example.com:9090",
    );
    let c = parse_yaml(&ported).unwrap();
    let hosts = &c.listeners[0].routes[0].matches.hosts;
    assert_eq!(hosts[1], "*.example.org:8443");
    assert_eq!(
        crate::route_host(&hosts[2]),
        Ok(("api.example.com", Some(9090)))
    );
    assert_eq!(
        crate::route_host("api.example.com"),
        Ok(("api.example.com", None))
    );
    assert!(crate::route_host("api.example.com:0").is_err());
    assert!(crate::route_host("api.example.com:+80").is_err());
}

#[test]
fn every_problem_has_a_path_and_line() {
    let bad = GOOD
        .replace("weight: 10", "weight: 0")
        .replace("name: api-v2, weight", "name: nope, weight")
        .replace("status: 410", "status: 99");
    let problems = parse_yaml(&bad).unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(
        text.contains(
            &"line 12: listeners[0].routes[0].backends[1].weight: must be > 0".to_string()
        ),
        "{text:?}"
    );
    assert!(
        text.contains(
            &"line 12: listeners[0].routes[0].backends[1].name: no backend is named `nope`"
                .to_string()
        ),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("line 17: listeners[0].routes[1].direct_response.status")),
        "{text:?}"
    );
    assert_eq!(problems.len(), 3, "{text:?}");
}

#[test]
fn unknown_field_is_an_error_with_a_line() {
    let bad = GOOD.replace("timeout: 5s", "timout: 5s");
    let p = parse_yaml(&bad).unwrap_err();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, Some(14));
    assert!(p[0].message.contains("unknown field `timout`"), "{}", p[0]);
}

#[test]
fn table_of_invalid_configs() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "path: { prefix: /api }",
            "path: { prefix: api }",
            "listeners[0].routes[0].match.path: must start with '/'",
        ),
        (
            "path: { regex: \"^/old/.*\" }",
            "path: { regex: \"(\" }",
            "listeners[0].routes[1].match.path.regex: invalid regex",
        ),
        (
            "methods: [GET, POST]",
            "methods: [\"GE T\"]",
            "listeners[0].routes[0].match.methods[0]: `GE T` is not a method",
        ),
        (
            "{ name: x-canary, exact: \"1\" }",
            "{ name: x-canary }",
            "listeners[0].routes[0].match.headers[0]: needs exactly one",
        ),
        (
            "\"*.example.org\"",
            "\"Bad_Host\"",
            "listeners[0].routes[0].match.hosts[1]: `Bad_Host`",
        ),
        (
            "\"*.example.org\"",
            "\"*.example.org:http\"",
            "listeners[0].routes[0].match.hosts[1]: `*.example.org:http`: `http` is not a port",
        ),
        (
            "\"*.example.org\"",
            "\"*:8080\"",
            "listeners[0].routes[0].match.hosts[1]: `*:8080`: `*` (any host) takes no port",
        ),
        (
            "\"*.example.org\"",
            "\"Api.example.org:8080\"",
            "listeners[0].routes[0].match.hosts[1]: `Api.example.org`",
        ),
        (
            "{ header: x-user }",
            "{}",
            "backends[1].balancer.ring_hash: needs exactly one of `header` and `cookie`",
        ),
        (
            "name: gone",
            "name: api",
            "listeners[0].routes[1].name: `api` is used twice",
        ),
        (
            "timeout: 5s",
            "timeout: 5 parsecs",
            "listeners[0].routes[0].timeout: \"5 parsecs\": unknown unit `parsecs`",
        ),
        (
            "address: 127.0.0.1:9001, weight: 3",
            "address: 127.0.0.1:9000, weight: 3",
            "backends[0].endpoints[1].address: 127.0.0.1:9000 is listed twice",
        ),
        (
            "rewrite: { path_prefix: / }\n",
            "rewrite: { path_prefix: / }\n        redirect: { status: 200 }\n",
            "listeners[0].routes[0]: needs exactly one of",
        ),
    ];
    for (from, to, want) in cases {
        assert!(GOOD.contains(from), "{from}");
        let bad = GOOD.replacen(from, to, 1);
        let p = parse_yaml(&bad).expect_err(want);
        let text: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        assert!(
            text.iter().any(|t| t.contains(want)),
            "want {want:?} in {text:?}"
        );
    }
}

#[test]
fn durations_round_trip() {
    for (s, d) in [
        ("250ms", 250),
        ("10s", 10_000),
        ("2m", 120_000),
        ("1h", 3_600_000),
    ] {
        let parsed: Duration = s.parse().unwrap();
        assert_eq!(parsed.get().as_millis(), d);
    }
    assert!("10".parse::<Duration>().is_err());
    assert!("10d".parse::<Duration>().is_err());
}

#[test]
fn config_serializes_to_json_and_back() {
    let c = parse_yaml(GOOD).unwrap();
    let json = serde_json::to_string(&c).unwrap();
    let back: Config = serde_json::from_str(&json).unwrap();
    assert_eq!(c, back);
}

#[test]
fn resilience_policies_parse_and_validate() {
    let yaml = GOOD
        .replace(
            "        timeout: 5s\n",
            "        timeout: 5s\n        retry: { attempts: 3, on: [5xx, unavailable], per_try_timeout: 1s, backoff: { base: 10ms, max: 100ms } }\n        rate_limit: { requests_per_second: 100, key_header: x-api-key }\n        fault: { abort: { status: 503, percent: 1.5 } }\n",
        )
        .replace(
            "  - name: api-v2\n",
            "  - name: api-v2\n    outlier_detection: { consecutive_failures: 3 }\n    circuit_breaker: { max_requests: 10 }\n    health_check: { path: /healthz, interval: 1s }\n",
        );
    let c = parse_yaml(&yaml).unwrap();
    let r = c.listeners[0].routes[0].retry.as_ref().unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(r.on, vec![RetryOn::ServerError, RetryOn::Unavailable]);
    assert_eq!(r.buffer_bytes, 65536);
    assert_eq!(c.backends[0].retry_budget, RetryBudget::default());
    assert_eq!(c.backends[1].outlier_detection.consecutive_failures, 3);
    assert_eq!(c.backends[1].outlier_detection.max_ejected_percent, 50);

    let bad = yaml
        .replace("attempts: 3", "attempts: 0")
        .replace("percent: 1.5", "percent: 150")
        .replace("max_requests: 10", "max_requests: 0")
        .replace("path: /healthz", "path: healthz");
    let text: Vec<String> = parse_yaml(&bad)
        .unwrap_err()
        .iter()
        .map(|p| p.to_string())
        .collect();
    for want in [
        "listeners[0].routes[0].retry.attempts: must be 1-10",
        "listeners[0].routes[0].fault.abort.percent: must be between 0 and 100",
        "backends[1].circuit_breaker.max_requests: must be > 0",
        "backends[1].health_check.path: must start with '/'",
    ] {
        assert!(
            text.iter().any(|t| t.contains(want)),
            "want {want:?} in {text:?}"
        );
    }
}

/// A bad duration is reported at its own field's path and line, whatever
/// kind of bad it is and however deep the field sits.
#[test]
fn a_bad_duration_names_its_own_field_and_line() {
    let yaml = |drain: &str, timeout: &str, per_try: &str, connect: &str, ejection: &str| {
        format!(
            "drain_timeout: {drain}
listeners:
  - name: edge
    address: 127.0.0.1:8080
    routes:
      - name: r
        backends: [{{ name: b }}]
        timeout: {timeout}
        retry:
          per_try_timeout: {per_try}
backends:
  - name: b
    endpoints: [{{ address: 127.0.0.1:9000 }}]
    connect_timeout: {connect}
    outlier_detection:
      base_ejection_time: {ejection}
"
        )
    };
    assert!(parse_yaml(&yaml("1s", "1s", "1s", "1s", "1s")).is_ok());
    let bad_values = [
        ("1.5s", r#""1.5s": fractions are not allowed; write 1500ms"#),
        ("10x", r#""10x": unknown unit `x`; use ms, s, m or h"#),
        ("-1s", r#""-1s": must not be negative"#),
        (
            "\"\"",
            r#""": empty; write a number and a unit, like 250ms or 10s"#,
        ),
        (
            "99999999999999999999s",
            r#""99999999999999999999s": too large"#,
        ),
        ("10", r#""10": no unit; write 10ms, 10s, 10m or 10h"#),
        ("1.5", r#""1.5": no unit; write a whole number"#),
    ];
    let fields = [
        (0, "drain_timeout", 1),
        (1, "listeners[0].routes[0].timeout", 8),
        (2, "listeners[0].routes[0].retry.per_try_timeout", 10),
        (3, "backends[0].connect_timeout", 14),
        (4, "backends[0].outlier_detection.base_ejection_time", 16),
    ];
    for (bad, message) in bad_values {
        for (slot, path, line) in fields {
            let mut v = ["1s"; 5];
            v[slot] = bad;
            let problems = parse_yaml(&yaml(v[0], v[1], v[2], v[3], v[4])).expect_err(bad);
            assert_eq!(problems.len(), 1, "{bad} at {path}: {problems:?}");
            let p = &problems[0];
            assert_eq!(p.path, path, "{bad}: {p:?}");
            assert_eq!(p.line, Some(line), "{bad} at {path}: {p:?}");
            assert!(p.message.starts_with(message), "{bad} at {path}: {p:?}");
        }
    }
}

/// Found by the `config` fuzz target: serde_yaml_ng reports "more than one
/// document" without a location, so the problem had neither path nor line.
#[test]
fn a_second_document_is_a_problem_with_its_line() {
    let problems = parse_yaml("listeners: []\n---\nlisteners: []\n").unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.contains("more than one document"));
    assert_eq!(problems[0].line, Some(2), "{problems:?}");
    // Not written with `---`: an indented mapping, then one at column 0.
    let problems = parse_yaml("# c\n    drain_timeout: 1s\nlisteners: []\n").unwrap_err();
    assert!(problems[0].line.is_some(), "{problems:?}");
}

#[test]
fn mesh_http2_is_on_unless_a_backend_turns_it_off() {
    let c = parse_yaml(GOOD).unwrap();
    assert!(c.backends.iter().all(|b| b.pool.mesh_http2));
    let off = GOOD.replacen(
        "  - name: api-v2\n",
        "  - name: api-v2\n    pool: { mesh_http2: false }\n",
        1,
    );
    let c = parse_yaml(&off).unwrap();
    assert!(c.backends[0].pool.mesh_http2 && !c.backends[1].pool.mesh_http2);
    let bad = off.replacen("mesh_http2: false", "mesh_http2: sometimes", 1);
    let p = parse_yaml(&bad).expect_err("not a bool");
    let text: Vec<String> = p.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("mesh_http2") || t.contains("boolean")),
        "{text:?}"
    );
}

use crate::parse_yaml;

fn problems(edge: &str, route_edge: &str) -> Vec<String> {
    let text = format!(
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    access_log: true\n    edge: {edge}\n    routes:\n      - name: r\n        direct_response: {{ status: 200 }}\n        edge: {route_edge}\n"
    );
    match parse_yaml(&text) {
        Ok(_) => vec![],
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn a_full_edge_config_is_valid() {
    let edge = r#"{ compression: { algorithms: [zstd, br, gzip], min_size: 100, content_types: [text/, application/json] },
      decompression: {}, cors: { allowed_origins: ["https://app.example.com", "http://localhost:3000"],
      allowed_methods: [GET, PUT], allowed_headers: [content-type], expose_headers: [x-request-id],
      allow_credentials: true, max_age: 10m }, request_id: {}, log_headers: [user-agent, authorization],
      sensitive_headers: [x-api-key] }"#;
    let route = "{ compression: { enabled: false }, cors: { allowed_origins: ['*'] } }";
    assert_eq!(problems(edge, route), Vec::<String>::new());
}

#[test]
fn each_mistake_is_named_at_its_field() {
    let cases = [
        ("{ compression: { algorithms: [] } }", "listeners[0].edge.compression.algorithms: lists no algorithm"),
        ("{ compression: { content_types: [html] } }", "listeners[0].edge.compression.content_types[0]: `html` is not a media type"),
        ("{ cors: { allowed_origins: [app.example.com] } }", "listeners[0].edge.cors.allowed_origins[0]: `app.example.com` is not an origin"),
        ("{ cors: { allowed_origins: ['https://a.example/x'] } }", "listeners[0].edge.cors.allowed_origins[0]: `https://a.example/x` has a path"),
        ("{ cors: { allowed_origins: ['*', 'https://a.example'] } }", "listeners[0].edge.cors.allowed_origins[0]: `*` is alone"),
        ("{ cors: { allowed_origins: [] } }", "listeners[0].edge.cors.allowed_origins: lists no origin"),
        ("{ cors: { allowed_origins: ['*'], allow_credentials: true } }", "listeners[0].edge.cors.allowed_origins: `*` is not allowed with `allow_credentials: true`"),
        ("{ cors: { allowed_origins: ['*'], allowed_methods: ['GE T'] } }", "listeners[0].edge.cors.allowed_methods[0]: `GE T` is not a method"),
        ("{ cors: { allowed_origins: ['*'], expose_headers: ['x y'] } }", "listeners[0].edge.cors.expose_headers[0]: `x y` is not a header name"),
        ("{ request_id: { header: 'x id' } }", "listeners[0].edge.request_id.header: `x id` is not a header name"),
        ("{ sensitive_headers: ['a:b'] }", "listeners[0].edge.sensitive_headers[0]: `a:b` is not a header name"),
    ];
    for (edge, want) in cases {
        let got = problems(edge, "{}");
        assert!(got.iter().any(|p| p.contains(want)), "{edge}: {got:?}");
    }
    let got = problems("{}", "{ cors: { allowed_origins: [x] } }");
    assert!(
        got.iter()
            .any(|p| p.contains("listeners[0].routes[0].edge.cors.allowed_origins[0]")),
        "{got:?}"
    );
}

#[test]
fn an_unknown_algorithm_is_named() {
    let got = problems("{ compression: { algorithms: [deflate] } }", "{}");
    assert!(
        got.iter()
            .any(|p| p.contains("unknown variant `deflate`") && p.contains("gzip")),
        "{got:?}"
    );
}

#[test]
fn logged_headers_need_the_access_log() {
    let text = "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    edge: { log_headers: [user-agent] }\n";
    let got: Vec<String> = parse_yaml(text)
        .unwrap_err()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert!(
        got.iter().any(|p| p
            .contains("listeners[0].edge.log_headers: needs the listener's `access_log: true`")),
        "{got:?}"
    );
}

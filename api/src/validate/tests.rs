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

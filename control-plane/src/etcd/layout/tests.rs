use super::*;

const MESH: &str = include_str!("../../../../examples/mesh.yaml");
const P: &str = "/remora/";

fn keys(entries: &[(&str, &str)]) -> Keys {
    entries
        .iter()
        .map(|(k, v)| (format!("{P}{k}"), Bytes::from(v.to_string())))
        .collect()
}

fn check(mesh: &Mesh) -> Vec<Problem> {
    crate::mesh::problems_for(mesh, true)
}

#[test]
fn a_mesh_written_reads_back_sorted_by_name() {
    let mesh = crate::mesh::parse(MESH).unwrap();
    let written = write(P, &mesh).unwrap();
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        [
            "/remora/services/api",
            "/remora/services/api-canary",
            "/remora/services/users",
            "/remora/services/web",
            "/remora/trust_domain",
            "/remora/workloads/api",
            "/remora/workloads/web",
        ]
    );
    let keys: Keys = written
        .into_iter()
        .map(|(k, v)| (k, Bytes::from(v)))
        .collect();
    let read = read(P, &keys, check).unwrap();
    let mut sorted = mesh.clone();
    sorted.services.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.workloads.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(read, sorted);
    // Keys of another prefix are not this mesh's.
    let mut more = keys.clone();
    more.insert("/other/services/x".into(), Bytes::from("{}"));
    assert_eq!(super::read(P, &more, check).unwrap(), sorted);
}

#[test]
fn the_mesh_tracing_is_a_key_of_its_own_and_survives_the_round_trip() {
    let text =
        format!("{MESH}tracing: {{ collector: \"otel:4317\", protocol: grpc, sampling: 0.5 }}\n");
    let mesh = crate::mesh::parse(&text).unwrap();
    assert!(mesh.tracing.is_some());
    let written = write(P, &mesh).unwrap();
    assert!(
        written["/remora/tracing"].contains("collector: otel:4317"),
        "{written:?}"
    );
    let keys: Keys = written
        .into_iter()
        .map(|(k, v)| (k, Bytes::from(v)))
        .collect();
    let read = read(P, &keys, check).unwrap();
    assert_eq!(read.tracing, mesh.tracing);
}

#[test]
fn the_name_comes_from_the_key_and_json_is_yaml() {
    let k = keys(&[
        ("trust_domain", "example.org\n"),
        (
            "services/api",
            r#"{"endpoints": [{"address": "127.0.0.1:1"}]}"#,
        ),
        (
            "workloads/web",
            "name: web\noutbound: 127.0.0.1:2\ncalls: [api]\n",
        ),
    ]);
    let mesh = read(P, &k, check).unwrap();
    assert_eq!(mesh.trust_domain, "example.org");
    assert_eq!(mesh.services[0].name, "api");
    assert_eq!(mesh.workloads[0].calls, ["api"]);
}

#[test]
fn every_problem_names_its_key() {
    let web = "outbound: 127.0.0.1:2\ncalls: [api]\n";
    // (what, keys, expected problem path, message fragment, line)
    let cases: &[(&str, Keys, &str, &str, Option<usize>)] = &[
        (
            "a bad duration, at its line",
            keys(&[
                ("services/api", "endpoints: [{address: 127.0.0.1:1}]\nroutes:\n  - name: r\n    timeout: 5 parsecs\n"),
                ("workloads/web", web),
            ]),
            // The field's own path and line, as for the mesh file.
            "etcd /remora/services/api: routes[0].timeout",
            "unknown unit `parsecs`",
            Some(4),
        ),
        (
            "a mesh rule: a call to no service",
            keys(&[("workloads/web", web)]),
            "etcd /remora/workloads/web: calls[0]",
            "no service is named `api`",
            Some(2),
        ),
        (
            "the name written differs from the key",
            keys(&[("services/api", "name: apx\n"), ("workloads/web", web)]),
            "etcd /remora/services/api: name",
            "is `apx` but the key says `api`",
            Some(1),
        ),
        (
            "a name the key cannot make valid",
            keys(&[("services/Api", "{}"), ("workloads/web", "outbound: 127.0.0.1:2\n")]),
            "etcd /remora/services/Api: name",
            "lowercase DNS name",
            None,
        ),
        (
            "a tracing rule, at the tracing key",
            keys(&[
                ("tracing", "collector: otel:4318\nsampling: 3\n"),
                ("workloads/web", "outbound: 127.0.0.1:2\n"),
            ]),
            "etcd /remora/tracing: sampling",
            "must be a ratio from 0 to 1",
            Some(2),
        ),
        (
            "a tracing field of the wrong type",
            keys(&[("tracing", "collector: otel:4318\nqueue: many\n")]),
            "etcd /remora/tracing: queue",
            "invalid type",
            Some(2),
        ),
        (
            "not a mapping",
            keys(&[("services/api", "- a list\n")]),
            "etcd /remora/services/api",
            "must be a mapping",
            None,
        ),
        (
            "not YAML",
            keys(&[("services/api", "a: [\n")]),
            "etcd /remora/services/api",
            "",
            None,
        ),
        (
            "a key of nothing",
            keys(&[("service/api", "{}")]),
            "etcd /remora/service/api",
            "not a mesh key",
            None,
        ),
        (
            "no key at all",
            keys(&[]),
            "etcd /remora/",
            "no mesh keys",
            None,
        ),
        (
            "a bad trust domain",
            keys(&[("trust_domain", "Not A Domain")]),
            "etcd /remora/trust_domain",
            "lowercase DNS name",
            None,
        ),
    ];
    for (what, k, path, fragment, line) in cases {
        let problems = read(P, k, check).expect_err(what);
        let p = problems
            .iter()
            .find(|p| p.path == *path)
            .unwrap_or_else(|| panic!("{what}: no problem at {path}: {problems:?}"));
        assert!(p.message.contains(fragment), "{what}: {p:?}");
        if line.is_some() {
            assert_eq!(p.line, *line, "{what}: {p:?}");
        }
    }
}

#[test]
fn the_same_keys_make_the_same_mesh_version() {
    let a = keys(&[
        ("services/b", "{}"),
        ("services/a", "{}"),
        ("workloads/w", "outbound: 127.0.0.1:2\n"),
    ]);
    // The same entries inserted in another order: a BTreeMap sorts them.
    let mut b = Keys::new();
    for (k, v) in a.iter().rev() {
        b.insert(k.clone(), v.clone());
    }
    let (ma, mb) = (read(P, &a, check).unwrap(), read(P, &b, check).unwrap());
    assert_eq!(
        crate::compile::version_of(&ma),
        crate::compile::version_of(&mb)
    );
    assert_eq!(ma.services[0].name, "a");
}

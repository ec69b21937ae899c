//! `remora-control-plane check FILE`: `ok` with counts for a good mesh;
//! `FILE:LINE: path: message` per problem and exit 1 for a broken one.

use super::*;

fn check(path: &Path) -> (i32, String) {
    let out = std::process::Command::new(bin())
        .arg("check")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_example_mesh_is_ok() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mesh.yaml");
    let (code, out) = check(&path);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        format!("{}: ok (4 services, 2 workloads)\n", path.display())
    );
}

#[test]
fn a_broken_mesh_lists_every_problem_with_its_line() {
    let dir = tempdir();
    let path = dir.path().join("mesh.yaml");
    let yaml = "\
services:
  - name: api
    endpoints:
      - address: 127.0.0.1:7002
    routes:
      - name: split
        backends:
          - { name: api, weight: 90 }
          - { name: nope, weight: 10 }
        retry: { attempts: 20 }
workloads:
  - name: web
    outbound: 127.0.0.1:4191
    calls: [api, users]
";
    std::fs::write(&path, yaml).unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 1, "{out}");
    let f = path.display();
    let want = [
        format!("{f}:9: services[0].routes[0].backends[1].name: no service is named `nope`"),
        format!("{f}:10: services[0].routes[0].retry.attempts: must be 1-10"),
        format!("{f}:13: workloads[0].outbound: is the admin address"),
        format!("{f}:14: workloads[0].calls[1]: no service is named `users`"),
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), want, "{out}");
}

#[test]
fn a_typo_is_an_error_with_its_line() {
    let dir = tempdir();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, "services:\n  - name: a\n    endpoint: []\n").unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "{}:3: services[0]: unknown field `endpoint`",
            path.display()
        )),
        "{out}"
    );
}

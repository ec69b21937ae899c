//! `remora-proxy check`: every problem, with file, line and field path, and a
//! non-zero exit; `--version`.

use crate::bin;
use std::process::Command;

#[test]
fn check_reports_every_problem_with_its_line() {
    let dir = remora_test_support::proxy::tempdir();
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        r#"listeners:
  - name: edge
    address: 127.0.0.1:8080
    routes:
      - name: api
        match: { path: { prefix: api } }
        backends: [{ name: nowhere, weight: 0 }]
backends:
  - name: b
    balancer: { ring_hash: {} }
    endpoints: [{ address: 127.0.0.1:9000 }]
"#,
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let p = path.display();
    for want in [
        format!("{p}:6: listeners[0].routes[0].match.path: must start with '/'"),
        format!("{p}:7: listeners[0].routes[0].backends[0].name: no backend is named `nowhere`"),
        format!("{p}:7: listeners[0].routes[0].backends[0].weight: must be > 0"),
        format!(
            "{p}:10: backends[0].balancer.ring_hash: needs exactly one of `header` and `cookie`"
        ),
    ] {
        assert!(
            stdout.lines().any(|l| l == want),
            "missing {want:?} in:\n{stdout}"
        );
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 problem(s)"));
}

#[test]
fn check_accepts_the_examples_and_reports_syntax_errors() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/edge.yaml");
    let out = Command::new(bin())
        .arg("check")
        .arg(example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": ok (1 listeners, 3 routes, 1 backends")
    );

    let dir = remora_test_support::proxy::tempdir();
    let path = dir.path().join("typo.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - name: edge\n    adress: 127.0.0.1:1\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(":3: listeners[0]: unknown field `adress`"),
        "{stdout}"
    );

    let missing = Command::new(bin())
        .args(["check", "/nonexistent/remora.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stdout).contains("cannot read /nonexistent/remora.yaml")
    );
}

#[test]
fn version_flag() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("remora-proxy {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_names_a_bad_durations_own_field_and_line() {
    let dir = remora_test_support::proxy::tempdir();
    let path = dir.path().join("duration.yaml");
    std::fs::write(
        &path,
        "listeners:
  - name: edge
    address: 127.0.0.1:8080
    routes:
      - name: r
        timeout: 1.5s
        direct_response: { status: 200 }
",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "{}:6: listeners[0].routes[0].timeout: \"1.5s\": fractions are not allowed; write 1500ms",
        path.display()
    );
    assert!(
        stdout.lines().any(|l| l == want),
        "missing {want:?} in:\n{stdout}"
    );
}

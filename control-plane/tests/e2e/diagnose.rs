//! `remora-control-plane diagnose` on files and addresses that are wrong:
//! an expired CA and a broken mesh fail (exit 1), a CA about to expire
//! warns (exit 2), an admin address nobody serves fails. (A healthy demo
//! passes: `graph.rs`, on the demo it starts.)

use super::*;
use std::time::SystemTime;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Runs `diagnose ARGS`: its exit code and what it printed.
async fn diagnose(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .arg("diagnose")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// A development root CA made at `made` (valid ten years from then).
fn ca_file(dir: &Path, name: &str, made: SystemTime) -> String {
    let (cert, _, _) = remora_control_plane::ca::dev_root("test.local", made).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, cert).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn an_expired_ca_fails_and_one_about_to_expire_warns() {
    let dir = tempdir();
    let now = SystemTime::now();
    let expired = ca_file(dir.path(), "expired.crt", now - 11 * YEAR);
    let (code, out) = diagnose(&["--ca-cert", &expired]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("✖ CA certificate {expired}: expired at ")),
        "{out}"
    );
    assert!(out.contains("→ rotate the CA"), "{out}");

    let soon = ca_file(dir.path(), "soon.crt", now - 10 * YEAR + 2 * DAY);
    let (code, out) = diagnose(&["--ca-cert", &soon]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!("⚠ CA certificate {soon}: expires in ")),
        "{out}"
    );
    assert!(out.contains("all checks passed, 1 warning(s)"), "{out}");

    let fresh = ca_file(dir.path(), "fresh.crt", now);
    let (code, out) = diagnose(&["--ca-cert", &fresh]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("✔ CA certificate"), "{out}");
}

#[tokio::test]
async fn a_broken_mesh_file_fails_naming_the_problem() {
    let dir = tempdir();
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        "services: [{ name: api, endpoints: [] }]\nworkloads: [{ name: web, outbound: '127.0.0.1:4140', calls: [nope] }]\n",
    )
    .unwrap();
    let (code, out) = diagnose(&["--mesh", mesh.to_str().unwrap()]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("✖ mesh file {}: ", mesh.display())),
        "{out}"
    );
    assert!(out.contains("nope"), "{out}");
    assert!(out.contains("→ fix the file"), "{out}");
}

#[tokio::test]
async fn a_control_plane_that_does_not_answer_fails() {
    // A port just bound and released: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (code, out) = diagnose(&["--admin", &addr]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("✖ control plane at {addr}: ")),
        "{out}"
    );
    assert!(out.contains("→ is it running?"), "{out}");
}

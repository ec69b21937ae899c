//! The Helm chart (`charts/remora`): runs `tests/helm/run.sh`, which lints
//! and renders the chart with a real helm, validates the output against the
//! Kubernetes 1.33 schemas, checks the rendered certificates with openssl
//! and runs this crate's binary on the rendered CA. Its tools come from
//! `scripts/install-test-deps.sh`; a missing tool fails the test, naming it.

use std::path::Path;
use std::process::Command;

#[test]
fn helm_chart_renders_validates_and_its_ca_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("tests/helm/run.sh"))
        .env(
            "REMORA_CONTROL_PLANE_BIN",
            env!("CARGO_BIN_EXE_remora-control-plane"),
        )
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/helm/run.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("helm tests: all passed"), "{stdout}");
}

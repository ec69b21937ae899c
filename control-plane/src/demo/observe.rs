//! What the demo prints for watching the mesh: the service graph's URL
//! and the `diagnose` command for this demo.

use crate::App;
use std::path::Path;

pub(super) fn print(cp: &App, dir: &Path) {
    println!(
        "  graph:   http://{}/graph (live: requests/s, success rate and p99 of every call)",
        cp.admin_addr
    );
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "remora-control-plane".into());
    println!(
        "  diagnose: {exe} diagnose --admin {} --mesh {} --ca-cert {}",
        cp.admin_addr,
        dir.join("mesh.yaml").display(),
        dir.join("ca").join("ca.crt").display()
    );
}

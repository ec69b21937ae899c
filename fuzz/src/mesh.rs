//! `mesh`: a control-plane mesh file (YAML) through `mesh::parse_for`, with
//! and without a CA, and a valid mesh through `compile`.
//!
//! Invariants: no panic; every problem is locatable (path or line); a mesh
//! that parses compiles, and every workload's snapshot is a config the proxy
//! accepts off the wire (JSON round trip, `validate` clean) — the control
//! plane promises a valid mesh never makes a snapshot a proxy NACKs.

use remora_control_plane::{compile, compile_with_roots, mesh};

/// A trust root for the with-CA compile (the snapshot only carries it).
const ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

pub fn run(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    for with_ca in [false, true] {
        match mesh::parse_for(text, with_ca) {
            Ok(m) => {
                let snapshots = if with_ca {
                    compile_with_roots(&m, &[ROOT.to_string()])
                } else {
                    compile(&m)
                };
                for snap in snapshots.values() {
                    crate::config::check_valid(&snap.config);
                }
            }
            Err(problems) => crate::config::check_problems(&problems),
        }
    }
}

//! End-to-end tests: the real `remora-proxy` binary on loopback, real
//! upstream servers (remora-test-support) and real clients (hyper, curl,
//! promtool, a Python gRPC client). One test binary, many modules, so the
//! suite links once.

mod admin;
mod admin_remote;
mod balance;
mod check;
mod edge;
mod explain;
mod grpc;
mod init;
mod limits;
mod mesh_h2;
mod mesh_tls;
mod messages;
mod otel;
mod policies;
mod reload;
mod resilience;
mod retry_elsewhere;
mod routing;
mod shutdown;
mod streaming;
mod tap;
mod tcp;
mod tls;
mod transparent;
mod websocket;

use remora_test_support::ProxyProcess;
use std::path::Path;

/// The proxy binary built for this test run.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_remora-proxy"))
}

/// Starts the proxy on `yaml`, failing the test with its logs if it cannot.
pub async fn start(yaml: &str) -> ProxyProcess {
    ProxyProcess::start(bin(), yaml)
        .await
        .expect("proxy starts")
}

/// A config with one plaintext listener on port 0, the admin server on port
/// 0, and the given routes and backends (YAML lists, indented by 4 and 2).
pub fn config(routes: &str, backends: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    routes:\n{routes}\nbackends:\n{backends}\n"
    )
}

pub use remora_test_support::tools::require;

/// A sample's value in Prometheus text: the first line starting with
/// `prefix` (name and labels), 0 when there is none.
pub fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

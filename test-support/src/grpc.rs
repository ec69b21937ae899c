//! The gRPC test programs (`tests/grpc/`: a grpcio echo server and client,
//! generic calls on raw bytes, no codegen) for end-to-end tests: a real
//! gRPC client and server on either side of the proxies.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/grpc/echo_server.py");
pub const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/grpc/echo_client.py");

/// Fails the test unless python3 with grpcio is installed.
pub fn require_grpcio() {
    crate::tools::require("python3");
    let ok = std::process::Command::new("python3")
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 cannot `import grpc`: run scripts/install-test-deps.sh"
    );
}

/// The Python echo server; killed (by its PID) when dropped.
pub struct EchoServer {
    child: Child,
    pub port: u16,
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        let mut child = Command::new("python3")
            .arg(SERVER)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn echo_server.py");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("echo_server.py prints its port within 30 s")
            .expect("read echo_server.py stdout");
        let line = first.expect("echo_server.py exited before printing its port");
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from echo_server.py: {line:?}"));
        EchoServer { child, port }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Runs `echo_client.py --authority AUTHORITY ADDR ARGS...`; returns success
/// and the combined output.
pub async fn client(addr: &str, authority: &str, args: &[&str]) -> (bool, String) {
    let run = Command::new("python3")
        .arg(CLIENT)
        .args(["--timeout", "20", "--authority", authority, addr])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("echo_client.py finishes within 60 s")
        .expect("run echo_client.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `status CODE details` lines of `echo_client.py ... status TEXT`.
pub async fn statuses(addr: &str, authority: &str, repeat: usize) -> Vec<String> {
    let repeat = repeat.to_string();
    let (ok, out) = client(addr, authority, &["--repeat", &repeat, "status", "hi"]).await;
    assert!(ok, "{out}");
    out.lines()
        .filter_map(|l| l.strip_prefix("status "))
        .map(str::to_string)
        .collect()
}

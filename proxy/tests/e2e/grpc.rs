//! gRPC through the proxy: a real grpcio server and client (the Python
//! scripts in `tests/grpc/`) talking h2c via the proxy, unary, server
//! streaming and a failing call whose status travels in trailers.

use crate::{config, require, start};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/grpc/echo_server.py");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/grpc/echo_client.py");

/// Fails the test unless python3 with grpcio is installed.
fn require_grpcio() {
    require("python3");
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
struct EchoServer {
    child: Child,
    port: u16,
}

impl EchoServer {
    async fn start() -> EchoServer {
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
async fn client(addr: &str, authority: &str, args: &[&str]) -> (bool, String) {
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

/// The sum of `remora_responses_total` samples whose labels include all of
/// `labels` (each written `name="value"`).
fn responses(metrics: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("remora_responses_total{"))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_stream_and_fail_through_the_proxy() {
    require_grpcio();
    let server = EchoServer::start().await;
    // The same server behind both upstream protocol settings, chosen by
    // authority: `auto` follows the client (h2c in, h2c out).
    let routes = "      - name: grpc-auto\n        match: { hosts: [auto.test] }\n        backends: [{ name: echo-auto }]\n      - name: grpc-h2\n        match: { hosts: [h2.test] }\n        backends: [{ name: echo-h2 }]";
    let backends = format!(
        "  - name: echo-auto\n    protocol: auto\n    endpoints: [{{ address: 127.0.0.1:{0} }}]\n  - name: echo-h2\n    protocol: http2\n    endpoints: [{{ address: 127.0.0.1:{0} }}]",
        server.port
    );
    let proxy = start(&config(routes, &backends)).await;
    let addr = proxy.listener("edge").to_string();

    for authority in ["auto.test", "h2.test"] {
        let (ok, out) = client(&addr, authority, &["unary", "hello gRPC"]).await;
        assert!(ok, "{authority} unary: {out}");
        assert!(out.contains("echo:hello gRPC"), "{authority}: {out}");

        let (ok, out) = client(&addr, authority, &["stream", "100"]).await;
        assert!(ok, "{authority} stream: {out}");
        assert_eq!(
            out.lines().filter(|l| l.starts_with("msg-")).count(),
            100,
            "{out}"
        );

        let (ok, out) = client(&addr, authority, &["fail"]).await;
        assert!(ok, "{authority} fail must end UNAVAILABLE: {out}");
        assert!(out.contains("status UNAVAILABLE try again"), "{out}");
    }

    // gRPC statuses ride in trailers: all three calls are HTTP 200 answered
    // by the upstream, counted under their route.
    let metrics = proxy.metrics().await;
    for (route, backend) in [("grpc-auto", "echo-auto"), ("grpc-h2", "echo-h2")] {
        let route_label = format!("route=\"{route}\"");
        let backend_label = format!("backend=\"{backend}\"");
        let ok = [
            route_label.as_str(),
            backend_label.as_str(),
            "status_code=\"200\"",
            "error=\"\"",
        ];
        assert_eq!(responses(&metrics, &ok), 3.0, "{route}:\n{metrics}");
        assert_eq!(
            responses(&metrics, &[&route_label]),
            3.0,
            "{route}:\n{metrics}"
        );
    }
    drop(server);
}

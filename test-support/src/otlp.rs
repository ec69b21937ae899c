//! A loopback OTLP trace receiver: `tests/otlp/receiver.py`, built on the
//! real OpenTelemetry protobuf package (and grpcio for OTLP/gRPC), run as a
//! child process. It decodes each `ExportTraceServiceRequest` the proxy
//! sends and prints its spans as JSON lines, which [`OtlpReceiver`] collects.

use serde_json::Value;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/otlp/receiver.py");

/// The receiver process; killed (by its PID) when dropped.
pub struct OtlpReceiver {
    child: Child,
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl OtlpReceiver {
    /// Starts the receiver for `protocol`: `"http"` (OTLP/HTTP protobuf) or
    /// `"grpc"`. Fails the test unless python3 has the packages
    /// `scripts/install-test-deps.sh` installs.
    pub async fn start(protocol: &str) -> OtlpReceiver {
        crate::tools::require("python3");
        let mut child = Command::new("python3")
            .args([SCRIPT, "--protocol", protocol])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tests/otlp/receiver.py");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("receiver.py prints its port within 30 s")
            .expect("read receiver.py stdout")
            .unwrap_or_else(|| {
                panic!("receiver.py exited: run scripts/install-test-deps.sh (opentelemetry-proto, grpcio)")
            });
        let port: u16 = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from receiver.py: {first:?}"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().expect("spans lock").push(v);
                }
            }
        });
        OtlpReceiver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            spans,
        }
    }

    /// Where the proxy's `tracing.collector` should point.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().expect("spans lock").clone()
    }

    /// The spans of trace `trace_id` (hex), once there are at least `n` of
    /// them; panics with what arrived after `timeout`.
    pub async fn wait_for_trace(&self, trace_id: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            if found.len() >= n {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} of {n} spans of trace {trace_id} after {timeout:?}; received: {:#?}",
                    found.len(),
                    self.spans()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

//! End-to-end tests of the real `remora-control-plane` binary on loopback:
//! [`ControlPlane`] runs it on a mesh file in a temporary directory (ports 0,
//! JSON logs, addresses read from its `"control plane bound"` and
//! `"admin bound"` lines) and [`Subscriber`] is a small HTTP/2 client that
//! speaks the snapshot stream like a proxy. One test binary, many modules.

mod check;
mod demo;
mod diagnose;
mod etcd;
mod fake_kube;
mod graph;
mod identity;
mod inject;
mod k8s;
mod mesh;
mod reconnect;
mod stream;
mod token_review;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use remora_api::mesh::{Ack, Hello, StreamMsg};
use remora_control_plane::ndjson::{line, Lines};
use remora_test_support::client::Request;
use remora_test_support::proxy::{tempdir, TempDir};
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The example mesh: services web, api, api-canary, users; workloads web, api.
pub const MESH: &str = include_str!("../../../examples/mesh.yaml");

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_remora-control-plane"))
}

/// The proxy binary, built beside the control plane's by `cargo test
/// --workspace` (integration tests of both crates need their binaries).
pub fn proxy_bin() -> PathBuf {
    let path = bin().with_file_name("remora-proxy");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p remora-proxy` first)",
        path.display()
    );
    path
}

/// How long anything the tests wait for may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running control plane; killed (by its own child handle) when dropped.
pub struct ControlPlane {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    mesh: PathBuf,
    _dir: TempDir,
}

impl ControlPlane {
    pub async fn start(mesh: &str) -> ControlPlane {
        Self::start_at(mesh, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts with the snapshot stream on `listen` (e.g. the address of a
    /// control plane that was killed, which its proxies keep dialling).
    pub async fn start_at(mesh: &str, listen: SocketAddr) -> ControlPlane {
        Self::start_with(mesh, listen, &[]).await
    }

    /// Starts with more arguments to `run` (such as `--ca-cert FILE`).
    pub async fn start_with(
        mesh: &str,
        listen: SocketAddr,
        extra: &[&std::ffi::OsStr],
    ) -> ControlPlane {
        Self::start_with_env(mesh, listen, extra, &[]).await
    }

    /// Starts with more arguments to `run` and more environment variables
    /// (such as `KUBECONFIG`).
    pub async fn start_with_env(
        mesh: &str,
        listen: SocketAddr,
        extra: &[&std::ffi::OsStr],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> ControlPlane {
        let dir = tempdir();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, mesh).unwrap();
        let mut args: Vec<&std::ffi::OsStr> = extra.to_vec();
        args.extend(["--mesh".as_ref(), path.as_os_str()]);
        Self::launch(listen, &args, env, path.clone(), dir).await
    }

    /// Starts on the mesh in etcd (`--etcd URLS` and more in `args`).
    pub async fn start_etcd(args: &[&str]) -> ControlPlane {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let dir = tempdir();
        let none = dir.path().join("no-mesh-file");
        Self::launch("127.0.0.1:0".parse().unwrap(), &args, &[], none, dir).await
    }

    async fn launch(
        listen: SocketAddr,
        extra: &[&std::ffi::OsStr],
        env: &[(&str, &std::ffi::OsStr)],
        path: PathBuf,
        dir: TempDir,
    ) -> ControlPlane {
        let mut child = Command::new(bin())
            .args(["run", "--listen", &listen.to_string()])
            .args(extra)
            .envs(env.iter().copied())
            .args(["--admin", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    logs.lock().unwrap().push(l);
                }
            });
        }
        let bound = |logs: &[String], message: &str| {
            logs.iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["message"] == message).then(|| v["address"].as_str()?.parse().ok())?
            })
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let found = {
                let l = logs.lock().unwrap();
                (bound(&l, "control plane bound"), bound(&l, "admin bound"))
            };
            if let (Some(listen), Some(admin)) = found {
                return ControlPlane {
                    child,
                    logs,
                    listen,
                    admin,
                    mesh: path,
                    _dir: dir,
                };
            }
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                panic!(
                    "control plane did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replaces the mesh file atomically (write, rename).
    pub fn write_mesh(&self, yaml: &str) {
        let tmp = self.mesh.with_extension("tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.mesh).unwrap();
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Kills the process (SIGKILL, by its own child handle) and waits for it.
    pub async fn kill(mut self) -> SocketAddr {
        self.child.kill().await.unwrap();
        self.listen
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let rsp = Request::new("GET", &format!("http://{}{path}", self.admin))
            .send()
            .await;
        (rsp.status, rsp.text())
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls `/status` until `pred` holds; panics with the logs if it never does.
    pub async fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, body) = self.get("/status").await;
            let status: Value = serde_json::from_str(&body).unwrap();
            if pred(&status) {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "/status never showed {what}: {status:#}\nlogs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- control plane logs ---\n{}", self.logs());
        }
        let _ = self.child.start_kill();
    }
}

type ReqBody = UnsyncBoxBody<Bytes, Infallible>;

/// One subscription, spoken like a proxy: Hello, then ACKs and NACKs out,
/// snapshots in.
pub struct Subscriber {
    tx: mpsc::Sender<Bytes>,
    lines: Lines<Incoming>,
    _send: hyper::client::conn::http2::SendRequest<ReqBody>,
}

impl Subscriber {
    /// Subscribes; `Err((status, body))` if the control plane refuses.
    pub async fn connect(addr: SocketAddr, hello: &Hello) -> Result<Subscriber, (u16, String)> {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(line)), rx))
        });
        let req = http::Request::post("http://control-plane/v1/subscribe")
            .body(StreamBody::new(frames).boxed_unsync())
            .unwrap();
        // The response headers wait for the Hello.
        tx.send(line(hello)).await.unwrap();
        let rsp = tokio::time::timeout(WAIT, send.send_request(req))
            .await
            .unwrap()
            .unwrap();
        if rsp.status() != 200 {
            let status = rsp.status().as_u16();
            let body = rsp.into_body().collect().await.unwrap().to_bytes();
            return Err((status, String::from_utf8_lossy(&body).into_owned()));
        }
        Ok(Subscriber {
            tx,
            lines: Lines::new(rsp.into_body()),
            _send: send,
        })
    }

    /// The next snapshot or delta, or `None` if none comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<StreamMsg> {
        let line = tokio::time::timeout(wait, self.lines.next()).await.ok()?;
        let line = line.unwrap().expect("the stream ended");
        Some(serde_json::from_slice(&line).unwrap())
    }

    pub async fn answer(&self, verdict: &Ack) {
        self.tx.send(line(verdict)).await.unwrap();
    }
}

pub fn hello(workload: &str, version: Option<&str>) -> Hello {
    Hello {
        workload: workload.to_string(),
        identity: Some(format!("spiffe://test/{workload}")),
        version: version.map(str::to_string),
    }
}

pub use remora_test_support::tools::require;

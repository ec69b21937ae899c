//! `remora-control-plane demo`: a local mesh in one command, on loopback.
//!
//! It writes a development CA, join tokens and a mesh file into a fresh
//! directory, starts this control plane (in process) with that CA, two small
//! apps (`web` calls `api`) and a `remora-proxy` sidecar process for each
//! workload (`client`, `web`, `api`), each getting its certificate from the
//! CA. A light traffic generator then calls `web` through `client`'s
//! sidecar: client → mTLS → web → mTLS → api, every hop authorized by
//! SPIFFE identity. It prints where to look, a traffic line every few
//! seconds, and on Ctrl-C (or after `--duration`) stops the sidecars it
//! started (by PID), the apps and the control plane, and removes the
//! directory.

use crate::app::ServingTls;
use crate::ca::CaSettings;
use crate::{App, Settings};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

mod observe;
mod operate;

/// How `demo` runs.
#[derive(Clone, Debug)]
pub struct DemoArgs {
    /// Stop by itself after this long (default: run until Ctrl-C).
    pub duration: Option<Duration>,
    /// Requests per second from the traffic generator.
    pub rate: u32,
    /// The `remora-proxy` binary; default: beside this executable.
    pub proxy_bin: Option<PathBuf>,
    /// Keep the directory (CA, mesh file, logs) after stopping.
    pub keep: bool,
    /// Send every sidecar's spans to this OTLP collector (`host:port`),
    /// over this protocol.
    pub otlp: Option<(String, remora_api::OtlpProtocol)>,
    /// How often sidecars report their stats (the service graph's).
    pub stats_interval: Duration,
}

const TRUST_DOMAIN: &str = "demo.local";
const NAMESPACE: &str = "demo";
/// Bound on waiting for the sidecars to be ready.
const READY_WAIT: Duration = Duration::from_secs(30);
/// How often a traffic line is printed.
const REPORT_EVERY: Duration = Duration::from_secs(5);

fn spiffe(workload: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{workload}")
}

/// The addresses of one demo workload.
struct Ports {
    name: &'static str,
    outbound: SocketAddr,
    admin: SocketAddr,
    /// Inbound listener and app, for workloads that take calls.
    inbound: Option<(SocketAddr, SocketAddr)>,
}

/// A free loopback port for a sidecar to bind later. Not one from
/// `bind(…:0)`: the kernel hands those out again to any program that asks
/// for a port, and one did take a demo's port between its choice and the
/// sidecar's bind (a test run, demos side by side with other tests). So a
/// port below the kernel's ephemeral range, in a block of the range picked
/// by the demo's PID (demos running at once pick apart), bound once to see
/// it is free; `bind(…:0)` only if that block is used up.
fn free_port() -> anyhow::Result<SocketAddr> {
    use std::sync::atomic::{AtomicU16, Ordering};
    const BLOCK: u16 = 24;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Ports the kernel never picks for `bind(…:0)`: from 10000 up to its
    // ephemeral range (32768 by default).
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let blocks = ephemeral.saturating_sub(10_000) / BLOCK;
    if blocks > 0 {
        let block = (std::process::id() % u32::from(blocks)) as u16;
        let base = 10_000 + block * BLOCK;
        while let Ok(n) = NEXT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < BLOCK).then_some(n + 1)
        }) {
            let addr = SocketAddr::from(([127, 0, 0, 1], base + n));
            if std::net::TcpListener::bind(addr).is_ok() {
                return Ok(addr);
            }
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(l.local_addr()?)
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn mesh_yaml(workloads: &[Ports]) -> String {
    let (client, web, api) = (&workloads[0], &workloads[1], &workloads[2]);
    let inbound = |p: &Ports, caller: &str| {
        let (address, app) = p.inbound.expect("web and api take calls");
        format!(
            "    inbound:\n      address: {address}\n      app: {app}\n      mode: strict\n      authorization:\n        allow: [{{ identities: [\"{}\"] }}]\n",
            spiffe(caller)
        )
    };
    let workload = |p: &Ports, calls: &str| {
        format!(
            "  - name: {}\n    namespace: {NAMESPACE}\n    outbound: {}\n    admin: {}\n    calls: [{calls}]\n",
            p.name, p.outbound, p.admin
        )
    };
    format!(
        "# The Remora demo mesh: client calls web, web calls api; every hop is\n\
         # mutual TLS, and each app admits only its caller's identity.\n\
         # Edit it while the demo runs: the control plane pushes the change.\n\
         trust_domain: {TRUST_DOMAIN}\n\
         services:\n\
         \x20 - name: web\n\
         \x20   endpoints: [{{ address: {web_in}, workload: web }}]\n\
         \x20 - name: api\n\
         \x20   endpoints: [{{ address: {api_in}, workload: api }}]\n\
         \x20   routes:\n\
         \x20     - name: main\n\
         \x20       backends: [{{ name: api }}]\n\
         \x20       timeout: 2s\n\
         \x20       retry: {{ attempts: 2 }}\n\
         workloads:\n{}{}{}{}{}",
        workload(client, "web"),
        workload(web, "api"),
        inbound(web, "client"),
        workload(api, "web"),
        inbound(api, "web"),
        web_in = web.inbound.expect("web takes calls").0,
        api_in = api.inbound.expect("api takes calls").0,
    )
}

/// A sidecar process this demo started.
struct Sidecar {
    name: &'static str,
    child: Child,
    pid: u32,
    admin: SocketAddr,
    log: PathBuf,
}

impl Sidecar {
    /// SIGTERM, then up to 5 s to drain and exit, then SIGKILL.
    async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let proxy_bin = match &args.proxy_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("remora-proxy"),
    };
    if !proxy_bin.exists() {
        bail!(
            "{} not found: build it first (`cargo build --release`), or give --proxy-bin",
            proxy_bin.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("remora-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("create {}", dir.display()))?;
    let result = run_in(&args, &proxy_bin, &dir).await;
    if args.keep {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(args: &DemoArgs, proxy_bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut workloads = Vec::new();
    for (name, takes_calls) in [("client", false), ("web", true), ("api", true)] {
        workloads.push(Ports {
            name,
            outbound: free_port()?,
            admin: free_port()?,
            inbound: if takes_calls {
                Some((free_port()?, free_port()?))
            } else {
                None
            },
        });
    }
    // The control plane, with a fresh CA and a join token per workload.
    let (ca_cert, ca_key, _) = crate::ca::init(&dir.join("ca"), TRUST_DOMAIN)?;
    let mut tokens = String::from("tokens:\n");
    for w in &workloads {
        let token = random_token()?;
        std::fs::write(dir.join(format!("{}.token", w.name)), &token)?;
        let _ = writeln!(tokens, "  - {{ token: {token}, workload: {} }}", w.name);
    }
    std::fs::write(dir.join("tokens.yaml"), tokens)?;
    let mesh_path = dir.join("mesh.yaml");
    let mesh = mesh_yaml(&workloads) + &tracing_yaml(args.otlp.as_ref());
    std::fs::write(&mesh_path, mesh)?;
    let ca = CaSettings {
        cert: ca_cert.clone(),
        key: ca_key,
        trust_roots: None,
        credentials: crate::auth::Credentials::JoinTokens(dir.join("tokens.yaml")),
        lifetime: Duration::from_secs(3600),
    };
    // The control plane's port serves TLS with a certificate from the same
    // CA: sidecars verify it, so their join tokens never travel in clear.
    let (chain, key) = crate::ca::Ca::from_files(&ca)?
        .serving_certificate(&["127.0.0.1".to_string()], std::time::SystemTime::now())?;
    let tls = ServingTls {
        cert: dir.join("control-plane.crt"),
        key: dir.join("control-plane.key"),
    };
    std::fs::write(&tls.cert, chain)?;
    std::fs::write(&tls.key, key)?;
    let cp = App::start(Settings {
        mesh: crate::app::MeshFrom::File(mesh_path.clone()),
        listen: "127.0.0.1:0".parse()?,
        admin: "127.0.0.1:0".parse()?,
        ca: Some(ca),
        tls: Some(tls),
        // Each sidecar subscribes with its own certificate, for its workload.
        require_proxy_identity: true,
        webhook: None,
        stats_interval: Some(args.stats_interval),
    })
    .await
    .context("start the control plane")?;

    // The apps: api answers, web calls api through its sidecar.
    let (web, api) = (&workloads[1], &workloads[2]);
    let api_app = api.inbound.expect("api takes calls").1;
    let web_app = web.inbound.expect("web takes calls").1;
    let apps = [
        tokio::spawn(serve_app(TcpListener::bind(api_app).await?, DemoApp::Api)),
        tokio::spawn(serve_app(
            TcpListener::bind(web_app).await?,
            DemoApp::Web {
                api_via: web.outbound,
            },
        )),
    ];

    let mut sidecars = Vec::new();
    let started = start_sidecars(
        &workloads,
        proxy_bin,
        dir,
        (cp.listen_addr, &ca_cert),
        &mut sidecars,
    )
    .await;
    let outcome = match started {
        Ok(()) => {
            print_intro(&workloads, &sidecars, &cp, dir);
            if let Some((collector, _)) = &args.otlp {
                println!(
                    "Spans (OTLP) go to {collector}: one trace per call, client -> web -> api."
                );
            }
            traffic(args, workloads[0].outbound, &sidecars).await
        }
        Err(e) => Err(e),
    };
    println!("stopping: sidecars, apps, control plane");
    for s in sidecars {
        s.stop().await;
    }
    for a in apps {
        a.abort();
    }
    cp.shutdown(Duration::from_secs(2)).await;
    outcome
}

async fn start_sidecars(
    workloads: &[Ports],
    proxy_bin: &Path,
    dir: &Path,
    (cp, cp_ca): (SocketAddr, &Path),
    sidecars: &mut Vec<Sidecar>,
) -> anyhow::Result<()> {
    for w in workloads {
        let log = dir.join("logs").join(format!("{}.log", w.name));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(proxy_bin)
            .args(["run", "--control-plane", &cp.to_string()])
            .arg("--control-plane-ca")
            .arg(cp_ca)
            .args(["--workload", w.name, "--admin", &w.admin.to_string()])
            .arg("--identity-token")
            .arg(dir.join(format!("{}.token", w.name)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", proxy_bin.display()))?;
        let pid = child.id().context("sidecar has no pid")?;
        sidecars.push(Sidecar {
            name: w.name,
            child,
            pid,
            admin: w.admin,
            log,
        });
    }
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    for s in sidecars.iter_mut() {
        loop {
            if let Some(status) = s.child.try_wait()? {
                bail!(
                    "the {} sidecar exited ({status}); its log:\n{}",
                    s.name,
                    tail(&s.log)
                );
            }
            if matches!(get(s.admin, "localhost", "/ready").await, Ok((200, _))) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the {} sidecar is not ready after {READY_WAIT:?}; its log:\n{}",
                    s.name,
                    tail(&s.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn print_intro(workloads: &[Ports], sidecars: &[Sidecar], cp: &App, dir: &Path) {
    println!("Remora demo: a local mesh on loopback (trust domain {TRUST_DOMAIN})");
    println!("  client -> web -> api, every hop over mutual TLS; each app admits only its caller");
    println!();
    println!(
        "  control plane   snapshots https://{} (TLS; each sidecar subscribes with its own certificate)",
        cp.listen_addr
    );
    println!(
        "                  status    http://{}/status",
        cp.admin_addr
    );
    println!(
        "                  metrics   http://{}/metrics",
        cp.admin_addr
    );
    println!();
    println!(
        "  {:<7} {:<7} {:<38} {:<16} {:<16} sidecar admin",
        "sidecar", "pid", "identity", "outbound", "inbound"
    );
    for (w, s) in workloads.iter().zip(sidecars) {
        let inbound = w.inbound.map_or("-".to_string(), |(a, _)| a.to_string());
        println!(
            "  {:<7} {:<7} {:<38} {:<16} {:<16} http://{}/metrics",
            w.name,
            s.pid,
            spiffe(w.name),
            w.outbound.to_string(),
            inbound,
            w.admin
        );
    }
    println!();
    println!(
        "  try:   curl -H 'host: web' http://{}/",
        workloads[0].outbound
    );
    operate::print_explain_and_tap(workloads);
    observe::print(cp, dir);
    println!(
        "  files: {}/mesh.yaml (edit it: the change is pushed), logs in {}/logs",
        dir.display(),
        dir.display()
    );
    println!();
    println!("Ctrl-C stops everything.");
}

/// Calls web through client's sidecar at `rate` until Ctrl-C, SIGTERM or
/// the duration; reports every few seconds; fails if any request failed.
async fn traffic(args: &DemoArgs, via: SocketAddr, sidecars: &[Sidecar]) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop_at = args.duration.map(|d| tokio::time::Instant::now() + d);
    let until = async move {
        match stop_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / args.rate.max(1));
    let mut report = tokio::time::interval(REPORT_EVERY);
    report.tick().await;
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = &mut until => break,
            _ = report.tick() => println!("traffic: {ok} ok, {failed} failed; last answer: {last}"),
            _ = tick.tick() => match get(via, "web", "/").await {
                Ok((200, body)) => {
                    ok += 1;
                    last = body.trim().to_string();
                }
                Ok((status, body)) => {
                    failed += 1;
                    last = format!("{status} {}", body.trim());
                }
                Err(e) => {
                    failed += 1;
                    last = format!("error: {e:#}");
                }
            },
        }
    }
    println!("traffic: {ok} ok, {failed} failed; last answer: {last}");
    for s in sidecars.iter().filter(|s| s.name != "client") {
        let callers = inbound_callers(s.admin).await;
        println!(
            "{}'s sidecar accepted mutual TLS from: {}",
            s.name,
            if callers.is_empty() {
                "nobody".to_string()
            } else {
                callers.join(", ")
            }
        );
    }
    if failed > 0 || ok == 0 {
        bail!("{failed} of {} requests failed", ok + failed);
    }
    Ok(())
}

/// The client identities a sidecar's inbound side counted.
async fn inbound_callers(admin: SocketAddr) -> Vec<String> {
    let Ok((200, metrics)) = get(admin, "localhost", "/metrics").await else {
        return Vec::new();
    };
    metrics
        .lines()
        .filter(|l| l.starts_with("remora_inbound_connections_total{"))
        .filter_map(|l| {
            let rest = l.split("client_id=\"").nth(1)?;
            let id = &rest[..rest.find('"')?];
            (id != "-").then(|| id.to_string())
        })
        .collect()
}

/// `GET path` with `host`, on a new HTTP/1.1 connection; status and body.
pub(crate) async fn get(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
    get_traced(addr, host, path, None).await
}

/// Like [`get`], passing on the W3C `traceparent` of the request being
/// served (as an app in a traced mesh must: the sidecars cannot).
async fn get_traced(
    addr: SocketAddr,
    host: &str,
    path: &str,
    traceparent: Option<http::HeaderValue>,
) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let mut req = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(Empty::<Bytes>::new())?;
        if let Some(t) = traceparent {
            req.headers_mut().insert("traceparent", t);
        }
        let rsp = tx.send_request(req).await?;
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("no answer within 5s")?
}

/// The demo's two apps.
#[derive(Clone, Copy)]
enum DemoApp {
    Api,
    Web { api_via: SocketAddr },
}

async fn serve_app(listener: TcpListener, app: DemoApp) {
    let served = Arc::new(AtomicU64::new(0));
    while let Ok((tcp, _)) = listener.accept().await {
        let served = served.clone();
        let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let n = served.fetch_add(1, Relaxed) + 1;
            async move {
                let (status, body) = match app {
                    DemoApp::Api => (200, format!("api: hello (answer {n})\n")),
                    DemoApp::Web { api_via } => match get_traced(
                        api_via,
                        "api",
                        req.uri().path(),
                        req.headers().get("traceparent").cloned(),
                    )
                    .await
                    {
                        Ok((200, body)) => (200, format!("web -> {}", body)),
                        Ok((status, body)) => (502, format!("web: api answered {status}: {body}")),
                        Err(e) => (502, format!("web: cannot reach api: {e:#}\n")),
                    },
                };
                let mut rsp = http::Response::new(Full::new(Bytes::from(body)));
                *rsp.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
                Ok::<_, Infallible>(rsp)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// The mesh's `tracing:` section for `--otlp` (empty without it): every
/// sidecar's spans to that collector, each named after its workload.
fn tracing_yaml(otlp: Option<&(String, remora_api::OtlpProtocol)>) -> String {
    let Some((collector, protocol)) = otlp else {
        return String::new();
    };
    let protocol = match protocol {
        remora_api::OtlpProtocol::HttpProtobuf => "http/protobuf",
        remora_api::OtlpProtocol::Grpc => "grpc",
    };
    format!(
        "# Spans from every sidecar (`--otlp`), named after its workload.\n\
         tracing: {{ collector: '{collector}', protocol: {protocol}, sampling: 1.0 }}\n"
    )
}

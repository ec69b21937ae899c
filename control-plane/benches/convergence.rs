//! Convergence: from a mesh change to every one of 100 subscribed proxies
//! having applied it, through the real control plane.
//!
//! Run: `cargo bench -p remora-control-plane --bench convergence`
//! (one scenario: `-- --services 10000 --calls 0 --rounds 2`; `--calls 0`
//! means every workload calls every service).
//!
//! The control plane runs in this process ([`App`] on `127.0.0.1:0`, on the
//! mesh file in a temporary directory). 100 workloads `w-0`..`w-99` each
//! get one subscriber: an HTTP/2 client speaking the real protocol (Hello,
//! snapshot lines in, ACK lines out) that reads each snapshot's version and
//! skips over its config without building it (what a proxy then does is the
//! proxy's apply bench). Every workload calls `svc-0`, and each round
//! changes `svc-0`'s traffic split, so every workload gets a new snapshot.
//!
//! Two triggers, each `--rounds` times:
//!
//! * `file`: the mesh file is replaced (write, rename). The control plane
//!   polls every 100 ms, then waits 100 ms for the writes to settle. Rounds
//!   start at random points of the poll cycle.
//! * `sighup`: the file is replaced and SIGHUP sent to this process at once:
//!   no poll wait, the 100 ms settle wait remains.
//!
//! Times per round, from the trigger: `first snapshot` (detection, settle
//! wait, parse, validate and compile: the new generation is published),
//! `all ACKed` (the control plane has counted the 100th ACK, as
//! `remora_cp_acks_total`), and their difference, `push+ACK` (sending 100
//! snapshots and getting 100 ACKs back). The control plane's own
//! `remora_cp_convergence_seconds` (from when it noticed the change to each
//! ACK) is read from its `/metrics`.

mod common;

use bytes::{Bytes, BytesMut};
use common::{mesh_yaml, WorkloadSpec};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use remora_api::mesh::{Ack, Hello};
use remora_control_plane::ndjson::line;
use remora_control_plane::{App, Settings};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

const WORKLOADS: usize = 100;
/// No round may take longer.
const ROUND_LIMIT: Duration = Duration::from_secs(120);

struct Scenario {
    services: usize,
    /// Services each workload calls (`svc-0` among them); 0: all.
    calls: usize,
    rounds: usize,
}

fn scenarios() -> Vec<Scenario> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1)?.parse::<usize>().ok()
    };
    match (arg("--services"), arg("--calls"), arg("--rounds")) {
        (Some(services), calls, rounds) => vec![Scenario {
            services,
            calls: calls.unwrap_or(10),
            rounds: rounds.unwrap_or(10),
        }],
        _ => vec![
            Scenario {
                services: 1_000,
                calls: 10,
                rounds: 20,
            },
            Scenario {
                services: 10_000,
                calls: 10,
                rounds: 10,
            },
            Scenario {
                services: 1_000,
                calls: 0,
                rounds: 10,
            },
        ],
    }
}

fn workloads(s: &Scenario) -> Vec<WorkloadSpec> {
    (0..WORKLOADS)
        .map(|j| {
            let calls = match s.calls {
                0 => Vec::new(),
                n => {
                    let others = (0..n - 1).map(|k| 1 + (j * 37 + k * 101) % (s.services - 1));
                    let set: BTreeSet<usize> = std::iter::once(0).chain(others).collect();
                    set.into_iter().collect()
                }
            };
            WorkloadSpec {
                name: format!("w-{j}"),
                calls,
            }
        })
        .collect()
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for s in scenarios() {
            run(&s).await;
        }
    });
}

/// A snapshot a subscriber received and ACKed: which subscriber, when the
/// whole line had arrived, and the line's size.
struct Received {
    subscriber: usize,
    at: Instant,
    bytes: usize,
}

async fn run(s: &Scenario) {
    let dir = remora_test_support::proxy::tempdir();
    let path = dir.path().join("mesh.yaml");
    let specs = workloads(s);
    let mut split = 90;
    std::fs::write(&path, mesh_yaml(s.services, &specs, split)).unwrap();
    let app = App::start(Settings {
        mesh: remora_control_plane::MeshFrom::File(path.clone()),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        ca: None,
        tls: None,
        require_proxy_identity: false,
        webhook: None,
        stats_interval: None,
    })
    .await
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (i, w) in specs.iter().enumerate() {
        subscribe(app.listen_addr, i, &w.name, tx.clone()).await;
    }
    let mut sizes = Vec::new();
    for _ in 0..WORKLOADS {
        sizes.push(rx.recv().await.unwrap().bytes);
    }
    wait_acks(&app, WORKLOADS as u64).await;
    sizes.sort();
    let calls = match s.calls {
        0 => "all".to_string(),
        n => n.to_string(),
    };
    println!(
        "\n{} services, {WORKLOADS} workloads calling {calls} each; snapshot lines {}..{} bytes, {} MB per change in all",
        s.services,
        sizes[0],
        sizes[sizes.len() - 1],
        sizes.iter().sum::<usize>() / 1_000_000,
    );
    println!("\n| trigger | rounds | bytes pushed per change (p50) | first snapshot p50 / p90 / max ms | all ACKed p50 / p90 / max ms | push+ACK p50 / p90 / max ms | CP convergence mean ms, p50 / p90 bucket |");
    println!("|---|---:|---:|---|---|---|---|");
    for trigger in ["file", "sighup"] {
        let before = convergence(&app).await;
        let mut rounds = Vec::new();
        for _ in 0..s.rounds {
            // Start anywhere in the 100 ms poll cycle.
            tokio::time::sleep(Duration::from_millis(300 + fastrand_ms(100))).await;
            split = if split == 90 { 60 } else { split + 1 };
            let yaml = mesh_yaml(s.services, &specs, split);
            let acks = app.metrics.acks.get();
            let start = Instant::now();
            replace(&path, &yaml);
            if trigger == "sighup" {
                sighup();
            }
            let round = tokio::time::timeout(ROUND_LIMIT, async {
                let mut first = None;
                let mut updated = BTreeSet::new();
                let mut bytes = 0;
                while updated.len() < WORKLOADS {
                    let r = rx.recv().await.unwrap();
                    first.get_or_insert(r.at);
                    updated.insert(r.subscriber);
                    bytes += r.bytes;
                }
                wait_acks(&app, acks + WORKLOADS as u64).await;
                (first.unwrap() - start, start.elapsed(), bytes)
            })
            .await
            .expect("a round took too long");
            rounds.push(round);
        }
        let after = convergence(&app).await;
        report(trigger, &rounds, &before, &after);
    }
    println!();
    app.shutdown(Duration::from_secs(2)).await;
}

fn fastrand_ms(below: u64) -> u64 {
    // The clock's nanoseconds are random enough to spread rounds over the cycle.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    nanos % below
}

/// Replaces the mesh file like an editor or ConfigMap would: write, rename.
fn replace(path: &Path, yaml: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// SIGHUP to this process, which the control plane's watcher listens for.
fn sighup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_acks(app: &App, count: u64) {
    while app.metrics.acks.get() < count {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn report(
    trigger: &str,
    rounds: &[(Duration, Duration, usize)],
    before: &Histogram,
    after: &Histogram,
) {
    let stats = |mut v: Vec<Duration>| {
        v.sort();
        let at = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
        format!("{:.0} / {:.0} / {:.0}", at(0.5), at(0.9), at(1.0))
    };
    let first: Vec<Duration> = rounds.iter().map(|r| r.0).collect();
    let all: Vec<Duration> = rounds.iter().map(|r| r.1).collect();
    let push: Vec<Duration> = rounds.iter().map(|r| r.1 - r.0).collect();
    let mut bytes: Vec<usize> = rounds.iter().map(|r| r.2).collect();
    bytes.sort();
    let count = after.count - before.count;
    let mean = (after.sum - before.sum) / count.max(1) as f64 * 1000.0;
    let buckets: Vec<(f64, u64)> = after
        .buckets
        .iter()
        .zip(&before.buckets)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    let bucket = |q: f64| {
        let want = (count as f64 * q).ceil() as u64;
        let le = buckets.iter().find(|(_, n)| *n >= want).map(|(le, _)| *le);
        le.map_or("+Inf".into(), |le| format!("≤{}", le * 1000.0))
    };
    println!(
        "| {trigger} | {} | {} | {} | {} | {} | {mean:.0}, {} / {} ({count} ACKs) |",
        rounds.len(),
        bytes[bytes.len() / 2],
        stats(first),
        stats(all),
        stats(push),
        bucket(0.5),
        bucket(0.9),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `remora_cp_convergence_seconds` as the control plane's `/metrics` shows it.
#[derive(Default)]
struct Histogram {
    /// `(le, cumulative count)`, without `+Inf`.
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

async fn convergence(app: &App) -> Histogram {
    let url = format!("http://{}/metrics", app.admin_addr);
    let text = remora_test_support::client::Request::new("GET", &url)
        .send()
        .await
        .text();
    let mut h = Histogram::default();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("remora_cp_convergence_seconds") else {
            continue;
        };
        let value = rest.rsplit(' ').next().unwrap_or("0");
        if let Some(le) = rest.strip_prefix("_bucket{le=\"") {
            let le = le.split('"').next().unwrap_or("");
            if let Ok(le) = le.parse::<f64>() {
                h.buckets.push((le, value.parse().unwrap_or(0)));
            }
        } else if rest.starts_with("_sum") {
            h.sum = value.parse().unwrap_or(0.0);
        } else if rest.starts_with("_count") {
            h.count = value.parse().unwrap_or(0);
        }
    }
    h
}

/// The part of a line a subscriber reads: the version; the config (a whole
/// snapshot) or the delta is checked to be JSON and skipped.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Head {
    version: String,
    #[serde(default)]
    config: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    delta: Option<serde::de::IgnoredAny>,
}

/// Subscribes as `workload`; every snapshot received is ACKed and reported
/// on `seen`.
async fn subscribe(
    addr: SocketAddr,
    subscriber: usize,
    workload: &str,
    seen: mpsc::UnboundedSender<Received>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = tcp.set_nodelay(true);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        Some((Ok::<_, Infallible>(Frame::data(rx.recv().await?)), rx))
    });
    let req = http::Request::post("http://control-plane/v1/subscribe")
        .body(StreamBody::new(frames).boxed_unsync())
        .unwrap();
    let hello = Hello {
        workload: workload.to_string(),
        identity: None,
        version: None,
    };
    tx.send(line(&hello)).await.unwrap();
    let rsp = send.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200, "subscribe as {workload}");
    let mut body = rsp.into_body();
    tokio::spawn(async move {
        let _send = send;
        let mut buf = BytesMut::new();
        let mut searched = 0;
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = buf[searched..].iter().position(|b| *b == b'\n') {
                let msg = buf.split_to(searched + end + 1);
                searched = 0;
                let at = Instant::now();
                let head: Head = serde_json::from_slice(&msg[..msg.len() - 1]).unwrap();
                let ack = Ack::Ack {
                    version: head.version,
                };
                if tx.send(line(&ack)).await.is_err() {
                    return;
                }
                let bytes = msg.len();
                let _ = seen.send(Received {
                    subscriber,
                    at,
                    bytes,
                });
            }
            searched = buf.len();
        }
    });
}

//! The traffic part of the apply bench: the real proxy (`App` in sidecar
//! mode, 2 runtime workers, a snapshot cache file) subscribed to a stand-in
//! control plane that pushes 10k-service snapshots, while 4 clients send
//! requests through it to `svc-0` (one real upstream), each one per 2 ms on
//! a kept-alive HTTP/1.1 connection. A task on the proxy's runtime wakes
//! every 1 ms and records how late it woke: a worker thread stuck in a long
//! synchronous apply shows up as lateness, and as slow requests.
//!
//! The upstream, the clients and the stand-in control plane run on a
//! runtime of their own (one worker). All share the machine's 2 CPUs with
//! the proxy, so an apply's CPU slows requests even when no thread blocks.
//! To tell the two apart, after each push the same work (decode, swap into
//! a store of its own, write a cache file) runs on a thread outside the
//! proxy: what that does to requests is CPU contention alone.

use super::{config, line, serving, SERVICES};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use remora_api::mesh::Ack;
use remora_proxy::app::{App, Source};
use remora_proxy::metrics::Metrics;
use remora_proxy::snapshot::control::decode;
use remora_proxy::snapshot::control::Settings;
use remora_proxy::snapshot::{swap_in_versioned, Store};
use remora_proxy::telemetry::LogLevel;
use remora_test_support::{Http1Conn, Upstream};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::runtime::{Builder, Runtime};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

const PUSHES: usize = 10;
const CLIENTS: usize = 4;
/// Traffic with no apply in progress, before the first push.
const BASELINE: Duration = Duration::from_secs(2);
/// Between an ACK and the next push.
const GAP: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(1);
/// Each client sends one request per `PACE` (2,000 requests/s in all): the
/// CPUs keep some room, so lateness shows blocking more than a saturated
/// machine's scheduling.
const PACE: Duration = Duration::from_millis(2);

/// One request: when it started, how long it took, whether it got a 200.
type Sample = (Instant, Duration, bool);

fn runtime(name: &str, workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

pub fn run() {
    let side = runtime("side", 1);
    let proxy_rt = runtime("proxy", 2);
    let upstream = side.block_on(Upstream::start("svc-0"));
    let real = Some(upstream.addr());
    let lines = [5, 4].map(|timeout| Bytes::from(line(config(SERVICES, timeout, real))));
    let mut cp = side.block_on(FakeCp::start(lines[0].clone()));
    let dir = remora_test_support::proxy::tempdir();
    let source = Source::ControlPlane {
        settings: Settings {
            control_plane: remora_proxy::control_plane::Dial::plain(cp.addr),
            workload: "all".into(),
            identity: None,
            cache: Some(dir.path().join("snapshot.json")),
            await_identity: false,
            admin_allow_remote_changes: false,
        },
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let app = proxy_rt
        .block_on(App::start(source, LogLevel::detached()))
        .unwrap();
    let proxy = app.listener("outbound").unwrap();
    side.block_on(cp.acks.recv()).expect("the first ACK");
    // The control: the same work on a store of its own, outside the proxy.
    let metrics = Metrics::new();
    let store = serving(config(SERVICES, 5, real), &metrics);
    let cache = dir.path().join("outside.json");

    let (stop, stopped) = watch::channel(false);
    let ticks = proxy_rt.spawn(ticker(stopped.clone()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| side.spawn(client(proxy, stopped.clone())))
        .collect();
    let (inside, outside) = side.block_on(async {
        tokio::time::sleep(BASELINE).await;
        let (mut inside, mut outside) = (Vec::new(), Vec::new());
        for k in 0..PUSHES {
            let next = lines[(k + 1) % 2].clone();
            let sent = Instant::now();
            cp.push.send(next.clone()).await.unwrap();
            let (_, acked) = cp.acks.recv().await.expect("an ACK");
            inside.push((sent, acked));
            tokio::time::sleep(GAP).await;
            let (store, metrics, cache) = (store.clone(), metrics.clone(), cache.clone());
            let began = Instant::now();
            tokio::task::spawn_blocking(move || apply_outside(&store, &metrics, &next, &cache))
                .await
                .unwrap();
            outside.push((began, Instant::now()));
            tokio::time::sleep(GAP).await;
        }
        (inside, outside)
    });
    let _ = stop.send(true);
    let ticks = proxy_rt.block_on(ticks).unwrap();
    let samples: Vec<Sample> = clients
        .into_iter()
        .flat_map(|c| side.block_on(c).unwrap())
        .collect();
    report(&lines[0], [&inside, &outside], &samples, &ticks);
    proxy_rt.block_on(app.shutdown(Duration::from_secs(1)));
    drop(upstream);
}

/// What the proxy does with a snapshot line, CPU-wise, done on a thread
/// that is not the proxy's: decode, swap into `store`, encode and write
/// the cache file.
fn apply_outside(store: &Store, metrics: &Arc<Metrics>, line: &[u8], cache: &Path) {
    let decoded = decode(&line[..line.len() - 1]).unwrap();
    let version = Some(decoded.version.as_str());
    swap_in_versioned(store, metrics, decoded.config.unwrap(), version).unwrap();
    let json = serde_json::to_vec(&*store.load_full().config).unwrap();
    std::fs::write(cache, json).unwrap();
}

/// `windows[0]`: applies in the proxy; `windows[1]`: the same work outside.
fn report(
    line: &[u8],
    windows: [&[(Instant, Instant)]; 2],
    samples: &[Sample],
    ticks: &[(Instant, Duration)],
) {
    // 0: in an apply, 1: in the outside run, 2: neither.
    let class = |from: Instant, to: Instant| {
        let hit = |w: &[(Instant, Instant)]| w.iter().any(|(s, e)| from <= *e && to >= *s);
        windows.iter().position(|w| hit(w)).unwrap_or(2)
    };
    let took = |w: &[(Instant, Instant)]| {
        let mut d: Vec<Duration> = w.iter().map(|(s, e)| *e - *s).collect();
        d.sort();
        format!(
            "median {:.0} ms, max {:.0} ms",
            ms(d[d.len() / 2]),
            ms(d[d.len() - 1])
        )
    };
    println!(
        "\ntraffic: {PUSHES} pushes of a {} MB snapshot to a real proxy, {CLIENTS} clients at one request per {} ms each\n  line sent -> ACK: {}\n  the same work outside the proxy: {}\n",
        line.len() / 1_000_000,
        PACE.as_millis(),
        took(windows[0]),
        took(windows[1]),
    );
    println!("| while | requests | non-200 | p50 ms | p99 ms | max ms | ticker: ticks | ticker: max lateness ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let labels = [
        "an apply in the proxy",
        "the same work outside the proxy",
        "neither",
    ];
    for (want, label) in labels.iter().enumerate().rev() {
        let mine: Vec<&Sample> = samples
            .iter()
            .filter(|(at, took, _)| class(*at, *at + *took) == want)
            .collect();
        let mut lat: Vec<Duration> = mine.iter().map(|(_, took, _)| *took).collect();
        lat.sort();
        let errors = mine.iter().filter(|(_, _, ok)| !ok).count();
        let late: Vec<Duration> = ticks
            .iter()
            .filter(|(at, late)| class(*at, *at + TICK + *late) == want)
            .map(|(_, late)| *late)
            .collect();
        let pick =
            |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)));
        let show = |d: Option<&Duration>| d.map_or("-".into(), |d| format!("{:.2}", ms(*d)));
        println!(
            "| {label} | {} | {errors} | {} | {} | {} | {} | {} |",
            lat.len(),
            show(pick(0.5)),
            show(pick(0.99)),
            show(lat.last()),
            late.len(),
            show(late.iter().max()),
        );
    }
    println!();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Wakes every [`TICK`]; returns when each sleep began and how late it woke.
async fn ticker(mut stop: watch::Receiver<bool>) -> Vec<(Instant, Duration)> {
    let mut out = Vec::new();
    while !*stop.borrow_and_update() {
        let at = Instant::now();
        tokio::time::sleep(TICK).await;
        out.push((at, at.elapsed().saturating_sub(TICK)));
    }
    out
}

/// Requests `GET /` for `svc-0`, one per [`PACE`], until `stop`.
async fn client(proxy: SocketAddr, stop: watch::Receiver<bool>) -> Vec<Sample> {
    let mut conn = Http1Conn::connect(proxy).await;
    let mut out = Vec::new();
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        pace.tick().await;
        let at = Instant::now();
        let rsp = conn
            .try_send("GET", "/", &[("host", "svc-0")], Bytes::new())
            .await;
        let ok = rsp.is_ok_and(|r| r.status == 200);
        out.push((at, at.elapsed(), ok));
        if conn.is_closed() {
            conn = Http1Conn::connect(proxy).await;
        }
    }
    out
}

/// A control plane that takes one subscription, sends `first`, then every
/// line pushed, and reports each ACK with when it arrived.
struct FakeCp {
    addr: SocketAddr,
    push: mpsc::Sender<Bytes>,
    acks: mpsc::Receiver<(String, Instant)>,
}

impl FakeCp {
    async fn start(first: Bytes) -> FakeCp {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let (push, pushed) = mpsc::channel::<Bytes>(1);
        let (ack_tx, acks) = mpsc::channel(16);
        let once = Arc::new(Mutex::new(Some((first, pushed))));
        tokio::spawn(async move {
            let (conn, _) = tcp.accept().await.unwrap();
            let _ = conn.set_nodelay(true);
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let (first, pushed) = once.lock().unwrap().take().expect("one subscription");
                tokio::spawn(read_acks(req.into_body(), ack_tx.clone()));
                let rest = futures_util::stream::unfold(pushed, |mut rx| async move {
                    Some((rx.recv().await?, rx))
                });
                let frames = futures_util::stream::once(async { first })
                    .chain(rest)
                    .map(|l| Ok::<_, Infallible>(Frame::data(l)));
                async move { Ok::<_, Infallible>(http::Response::new(StreamBody::new(frames))) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(conn), svc)
                .await;
        });
        FakeCp { addr, push, acks }
    }
}

/// Reads the subscriber's Hello, then reports each ACK.
async fn read_acks(mut body: Incoming, acks: mpsc::Sender<(String, Instant)>) {
    let mut buf = BytesMut::new();
    let mut hello = true;
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let msg = buf.split_to(end + 1);
            if std::mem::take(&mut hello) {
                continue;
            }
            match serde_json::from_slice(&msg[..end]) {
                Ok(Ack::Ack { version }) => {
                    let _ = acks.send((version, Instant::now())).await;
                }
                other => panic!("the proxy did not apply the snapshot: {other:?}"),
            }
        }
    }
}

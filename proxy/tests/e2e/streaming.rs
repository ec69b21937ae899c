//! Bodies and headers on their way through: 1 GiB each way in bounded
//! memory, chunked encoding, `Expect: 100-continue`, HEAD, trailers, and
//! hop-by-hop versus forwarding headers.

use crate::tls::curl;
use crate::{config, start};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Body, Frame};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use remora_test_support::client::{request, Request};
use remora_test_support::upstream::pattern_byte;
use remora_test_support::{Http2Conn, HttpVersion, ProxyProcess, Upstream};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;
/// Sample the proxy's RSS every this many bytes moved.
const SAMPLE_EVERY: u64 = 16 << 20;
/// Bound on one 1 GiB transfer (a debug build on two cores is slow).
const TRANSFER_BOUND: Duration = Duration::from_secs(120);

/// A proxy sending everything to `up`, speaking `protocol` to it.
async fn proxy_to(up: &Upstream, protocol: &str) -> ProxyProcess {
    let routes = "      - name: all\n        backends: [{ name: up }]";
    let endpoint = format!("[{{ address: {} }}]", up.addr());
    let backends = format!("  - name: up\n    protocol: {protocol}\n    endpoints: {endpoint}");
    start(&config(routes, &backends)).await
}

/// The highest RSS seen above a baseline, sampled from `/proc/<pid>/status`.
struct RssPeak {
    proxy: Arc<ProxyProcess>,
    base: u64,
    peak: AtomicU64,
}

impl RssPeak {
    fn new(proxy: Arc<ProxyProcess>) -> Arc<RssPeak> {
        let base = proxy.rss_kib();
        Arc::new(RssPeak {
            proxy,
            base,
            peak: AtomicU64::new(base),
        })
    }

    fn sample(&self) {
        self.peak.fetch_max(self.proxy.rss_kib(), Ordering::Relaxed);
    }

    /// Runs `transfer` within [`TRANSFER_BOUND`], then prints the peak RSS
    /// growth and asserts it stayed under 32 MiB.
    async fn bound<T>(&self, what: &str, transfer: impl std::future::Future<Output = T>) -> T {
        let out = tokio::time::timeout(TRANSFER_BOUND, transfer)
            .await
            .unwrap_or_else(|_| panic!("{what} did not finish within {TRANSFER_BOUND:?}"));
        self.sample();
        let growth = self.peak.load(Ordering::Relaxed).saturating_sub(self.base);
        println!("{what}: proxy RSS {} KiB + peak {growth} KiB", self.base);
        assert!(growth < 32 * 1024, "{what}: proxy RSS grew by {growth} KiB");
        out
    }
}

/// A fresh HTTP/1.1 connection whose request body type is `B`.
async fn h1<B>(addr: SocketAddr) -> http1::SendRequest<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    tx
}

/// `frames` frames produced lazily by `make(i)`: never all in memory.
fn generated(
    frames: u64,
    make: impl FnMut(u64) -> Bytes + Send + 'static,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static>
{
    let mut make = make;
    StreamBody::new(futures_util::stream::iter(
        (0..frames).map(move |i| Ok(Frame::data(make(i)))),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_download_streams_in_bounded_memory() {
    let up = Upstream::start("up").await;
    let proxy = Arc::new(proxy_to(&up, "auto").await);
    let addr = proxy.listener("edge");
    let warm = Request::new("GET", &format!("http://{addr}/bytes/1048576"))
        .send()
        .await;
    assert_eq!(warm.body.len(), 1 << 20);
    let rss = RssPeak::new(proxy.clone());

    let transfer = async {
        let mut tx = h1::<Empty<Bytes>>(addr).await;
        let req = http::Request::get(format!("/bytes/{GIB}"))
            .header("host", "stream.test")
            .body(Empty::new())
            .unwrap();
        let rsp = tx.send_request(req).await.expect("response head");
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["content-length"], GIB.to_string().as_str());
        let mut body = rsp.into_body();
        let (mut total, mut next_sample) = (0u64, 0u64);
        while let Some(frame) = body.frame().await {
            let data = frame.expect("body frame").into_data().unwrap_or_default();
            // Spot checks: first, middle and last byte of every frame.
            for i in [0, data.len() / 2, data.len().saturating_sub(1)] {
                let at = total + i as u64;
                assert_eq!(data.get(i).copied(), Some(pattern_byte(at)), "byte {at}");
            }
            total += data.len() as u64;
            if total >= next_sample {
                rss.sample();
                next_sample += SAMPLE_EVERY;
            }
        }
        total
    };
    assert_eq!(rss.bound("1 GiB download", transfer).await, GIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_in_bounded_memory() {
    let up = Upstream::start("up").await;
    let proxy = Arc::new(proxy_to(&up, "auto").await);
    let addr = proxy.listener("edge");
    let warm = Request::new("POST", &format!("http://{addr}/sink"))
        .body(vec![1u8; 1 << 20])
        .send()
        .await;
    assert_eq!(warm.text(), (1 << 20).to_string());
    let rss = RssPeak::new(proxy.clone());

    let chunk = Bytes::from((0..CHUNK as u64).map(pattern_byte).collect::<Vec<u8>>());
    let sampler = rss.clone();
    let body = generated(GIB / CHUNK as u64, move |i| {
        if (i * CHUNK as u64).is_multiple_of(SAMPLE_EVERY) {
            sampler.sample();
        }
        chunk.clone()
    });
    let transfer = async {
        let mut tx = h1(addr).await;
        let req = http::Request::post("/sink")
            .header("host", "stream.test")
            .header("content-length", GIB.to_string())
            .body(body)
            .unwrap();
        let rsp = tx.send_request(req).await.expect("response head");
        let status = rsp.status();
        let text = rsp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&text).into_owned())
    };
    let (status, counted) = rss.bound("1 GiB upload", transfer).await;
    assert_eq!(status, 200, "{counted}");
    assert_eq!(counted, GIB.to_string(), "bytes the upstream counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_pass_through_http1() {
    let up = Upstream::start("up").await;
    let proxy = proxy_to(&up, "auto").await;
    let addr = proxy.listener("edge");
    let chunk = |i: u64| Bytes::from(vec![i as u8; 10_000 + i as usize]);

    // No length known up front, so the request goes upstream chunked, and
    // /echo streams it back with no length: chunked again on the way out.
    // (Had the proxy sent a content-length, /echo would have echoed it.)
    let req = http::Request::post("/echo")
        .header("host", "chunked.test")
        .body(generated(100, chunk))
        .unwrap();
    let rsp = h1(addr).await.send_request(req).await.expect("response");
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["transfer-encoding"], "chunked");
    assert!(rsp.headers().get("content-length").is_none());
    let echoed = rsp.into_body().collect().await.expect("body").to_bytes();
    let sent: Vec<u8> = (0..100).flat_map(|i| chunk(i).to_vec()).collect();
    assert_eq!(echoed.len(), sent.len());
    assert!(echoed == sent, "echoed bytes differ from the sent ones");
}

/// A file of `len` pattern bytes in the proxy's directory.
fn pattern_file(proxy: &ProxyProcess, len: u64) -> String {
    let path = proxy.dir().join("upload.bin");
    let block: Vec<u8> = (0..CHUNK as u64).map(pattern_byte).collect();
    let mut data = Vec::with_capacity(len as usize);
    while (data.len() as u64) < len {
        data.extend_from_slice(&block[..block.len().min((len - data.len() as u64) as usize)]);
    }
    std::fs::write(&path, data).expect("write upload file");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_arrive_whole_with_and_without_expect_continue() {
    let up = Upstream::start("up").await;
    let proxy = proxy_to(&up, "auto").await;
    let url = format!("http://{}/sink", proxy.listener("edge"));
    let len: u64 = 64 << 20;
    let file = pattern_file(&proxy, len);

    let put = curl(&["-T", &file, "-w", "\n%{http_code}", &url]).await;
    assert!(put.ok, "{}", put.stderr);
    assert_eq!(put.stdout, format!("{len}\n200"));

    // curl holds the body back until the 100 arrives (or 30 s pass).
    let data = format!("@{file}");
    let mut args = vec![
        "-v",
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "30",
    ];
    args.extend(["--data-binary", &data, "-w", "\n%{http_code}", &url]);
    let post = curl(&args).await;
    assert!(post.ok, "{}", post.stderr);
    let continued = post.stderr.contains("< HTTP/1.1 100 Continue");
    assert!(continued, "{}", post.stderr);
    assert_eq!(post.stdout, format!("{len}\n200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gets_the_headers_and_no_body() {
    let up = Upstream::start("up").await;
    // An HTTP/1.1 upstream: over HTTP/2 the test upstream sends its body
    // even to HEAD (hyper's h2 server does not drop it) and h2 rejects that.
    let proxy = proxy_to(&up, "http1").await;
    let addr = proxy.listener("edge");
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let url = format!("http://{addr}/bytes/1000");
        let rsp = request("HEAD", &url, &[], Bytes::new(), version).await;
        assert_eq!(
            (rsp.status, rsp.upstream()),
            (200, Some("up")),
            "{version:?}"
        );
        assert!(rsp.body.is_empty(), "{version:?}: {:?}", rsp.body);
        assert_eq!(rsp.header("content-length"), Some("1000"), "{version:?}");
    }
    // The kept-alive connection is in sync after the bodiless response.
    let mut conn = remora_test_support::Http1Conn::connect(addr).await;
    let head = conn.send("HEAD", "/bytes/5000", &[], Bytes::new()).await;
    assert!(head.body.is_empty());
    assert_eq!(conn.get("/bytes/10").await.body.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_reach_the_client() {
    let up = Upstream::start("up").await;
    let proxy = proxy_to(&up, "auto").await;
    let addr = proxy.listener("edge");
    let want = Some(&b"yes"[..]);

    let rsp = Http2Conn::connect(addr).await.get("/trailers").await;
    assert_eq!((rsp.status, rsp.text().as_str()), (200, "ok"));
    let trailers = rsp.trailers.expect("trailers over HTTP/2");
    assert_eq!(trailers.get("x-trailer").map(|v| v.as_bytes()), want);

    // HTTP/1.1 carries them too (chunked), to a client that accepts them.
    let url = format!("http://{addr}/trailers");
    let rsp = Request::new("GET", &url)
        .header("te", "trailers")
        .send()
        .await;
    assert_eq!((rsp.status, rsp.text().as_str()), (200, "ok"));
    let trailers = rsp
        .trailers
        .expect("trailers over HTTP/1.1 with te: trailers");
    assert_eq!(trailers.get("x-trailer").map(|v| v.as_bytes()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_and_forwarding_headers_grow() {
    let up = Upstream::start("up").await;
    let proxy = proxy_to(&up, "auto").await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
    let rsp = Request::new("GET", &format!("http://{}/headers", proxy.listener("edge")))
        .header("connection", "x-private")
        .header("x-private", "1")
        .header("keep-alive", "timeout=5")
        .header("traceparent", traceparent)
        .header("b3", b3)
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await;
    assert_eq!(rsp.status, 200);
    let h = &rsp.json()["headers"];
    for gone in ["x-private", "keep-alive", "connection"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    assert_eq!(h["traceparent"], serde_json::json!([traceparent]));
    assert_eq!(h["b3"], serde_json::json!([b3]));
    let xff = serde_json::json!(["10.1.2.3, 127.0.0.1"]);
    assert_eq!(h["x-forwarded-for"], xff);
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
}

/// An upstream that answers each request as soon as its head arrives,
/// before reading any body (a server refusing an upload early); body bytes
/// are read and dropped (they hold no `\r\n\r\n`). Counts connections.
async fn early_answering_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly";
                        if tcp.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    // Body bytes: keep only a tail that could start a head.
                    let keep = seen.len().saturating_sub(3);
                    seen.drain(..keep);
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_before_the_upload_ends_does_not_hold_up_others() {
    let (up, connections) = early_answering_upstream().await;
    let routes = "      - name: all\n        backends: [{ name: up }]";
    let backends = format!("  - name: up\n    endpoints: [{{ address: {up} }}]");
    let proxy = start(&config(routes, &backends)).await;
    let addr = proxy.listener("edge");

    // An upload that is still going when its answer has come.
    let (chunks, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    }));
    let mut upload = h1(addr).await;
    let req = hyper::Request::post("http://up/upload")
        .header("host", "up")
        .body(body)
        .unwrap();
    chunks.send(Bytes::from(vec![b'x'; CHUNK])).await.unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(10), upload.send_request(req))
        .await
        .expect("the early answer")
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let answer = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&answer[..], b"early");

    // Meanwhile another client: its request gets through (on a connection
    // of its own: the upload's is still busy sending).
    for _ in 0..3 {
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            Request::new("GET", &format!("http://{addr}/next"))
                .header("host", "up")
                .send(),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "held up; upstream connections {}; proxy logs:\n{}",
                connections.load(Ordering::Relaxed),
                proxy.logs().join("\n")
            )
        });
        assert_eq!((got.status, got.text()), (200, "early".to_string()));
    }
    chunks.send(Bytes::from(vec![b'y'; CHUNK])).await.unwrap();
    drop(chunks);
    assert!(connections.load(Ordering::Relaxed) >= 2);
}

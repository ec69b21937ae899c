//! Opaque TCP end to end: `protocol: tcp` listeners copying both ways with
//! half-close, balancing per connection, skipping a refused endpoint, the
//! circuit breaker's connection cap, mutual TLS to a mesh endpoint, drain.
//! Protocol detection is in [`detect`]. The TCP test servers say who they
//! are, so each test asserts which one answered.

mod detect;

use crate::mesh_tls::{identity_section, API, WEB};
use crate::{bin, start};
use remora_test_support::proxy::tempdir;
use remora_test_support::{ProxyProcess, TestCa, Upstream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Bound on every wait in this file.
const WAIT: Duration = Duration::from_secs(10);

/// A TCP server that says who it is. It echoes every byte; once the client
/// has finished writing it sends `bye from <name>\n` and closes. With a
/// banner it speaks first: `220 <name> ready\r\n` on accept.
struct TcpServer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        // Dropping the accept task's JoinSet ends every connection too.
        self.accept.abort();
    }
}

fn banner(name: &str) -> String {
    format!("220 {name} ready\r\n")
}

fn bye(name: &str) -> String {
    format!("bye from {name}\n")
}

impl TcpServer {
    async fn start(name: &str, speaks_first: bool) -> TcpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name = name.to_string();
        let accept = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                conns.spawn(echo(tcp, name.clone(), speaks_first));
            }
        });
        TcpServer { addr, accept }
    }
}

async fn echo(mut tcp: TcpStream, name: String, speaks_first: bool) {
    if speaks_first && tcp.write_all(banner(&name).as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if tcp.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    // The client's write side is closed; ours still works.
    let _ = tcp.write_all(bye(&name).as_bytes()).await;
    let _ = tcp.shutdown().await;
}

/// Connects to `addr`, writes `data` while reading, closes the write side,
/// and reads until the server closes. Everything bounded by [`WAIT`].
async fn exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let run = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = tcp.into_split();
        let write = async {
            wr.write_all(data).await.unwrap();
            wr.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let read = rd.read_to_end(&mut got);
        let ((), read) = tokio::join!(write, read);
        read.unwrap();
        got
    };
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("exchange with {addr} did not end within {WAIT:?}"))
}

/// Like [`exchange`], for a connection the proxy may reset: returns what
/// was read before the end or the error.
async fn try_exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let run = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let _ = tcp.write_all(data).await;
        let _ = tcp.shutdown().await;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = tcp.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
        got
    };
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("exchange with {addr} did not end within {WAIT:?}"))
}

/// Reads exactly `n` bytes, within [`WAIT`].
async fn read_n(tcp: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut got))
        .await
        .expect("bytes arrive in time")
        .expect("read");
    got
}

/// The value of the sample `series` (name and labels exactly as printed,
/// labels in alphabetical order), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

/// Asserts that each series has its value, polling `/metrics` (counters
/// may lag the client by a moment) up to [`WAIT`].
async fn assert_metrics(proxy: &ProxyProcess, want: &[(&str, f64)]) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = proxy.metrics().await;
        let wrong: Vec<_> = want
            .iter()
            .filter(|(s, v)| sample(&metrics, s) != Some(*v))
            .map(|(s, v)| format!("{s} = {:?}, want {v}", sample(&metrics, s)))
            .collect();
        if wrong.is_empty() {
            return metrics;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{}\n{metrics}", wrong.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A listener block (indented for `listeners:`).
fn listener(name: &str, addr: &str, extra: &str) -> String {
    format!("  - name: {name}\n    address: {addr}\n{extra}")
}

fn backend(name: &str, endpoints: &[SocketAddr]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address: {a} }}"))
        .collect();
    format!(
        "  - name: {name}\n    balancer: round_robin\n    endpoints: [{}]\n",
        eps.join(", ")
    )
}

fn yaml(listeners: &[String], backends: &[String]) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n{}backends:\n{}",
        listeners.concat(),
        backends.concat()
    )
}

fn tcp_to(backend: &str) -> String {
    format!("    protocol: tcp\n    tcp_backend: {backend}\n")
}

/// `n` pattern bytes.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_copies_both_ways_and_keeps_a_half_closed_side_open() {
    let e0 = TcpServer::start("e0", false).await;
    let proxy = start(&yaml(
        &[listener("edge", "127.0.0.1:0", &tcp_to("echo"))],
        &[backend("echo", &[e0.addr])],
    ))
    .await;
    let data = pattern(256 * 1024);
    let got = exchange(proxy.listener("edge"), &data).await;
    // The echo, then what the server wrote after our half-close, then EOF.
    assert_eq!(got.len(), data.len() + bye("e0").len());
    assert!(got[..data.len()] == data[..], "echo differs");
    assert_eq!(&got[data.len()..], bye("e0").as_bytes());

    let labels = "backend=\"echo\",listener=\"edge\"";
    assert_metrics(
        &proxy,
        &[
            (&format!("remora_tcp_connections_total{{{labels}}}"), 1.0),
            (&format!("remora_tcp_open_connections{{{labels}}}"), 0.0),
            (
                "remora_tcp_bytes_total{backend=\"echo\",direction=\"to_upstream\",listener=\"edge\"}",
                data.len() as f64,
            ),
            (
                "remora_tcp_bytes_total{backend=\"echo\",direction=\"to_client\",listener=\"edge\"}",
                got.len() as f64,
            ),
            (
                "remora_protocol_detections_total{listener=\"edge\",protocol=\"opaque\",reason=\"configured\"}",
                1.0,
            ),
            ("remora_open_connections{listener=\"edge\"}", 0.0),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_balances_per_connection_and_skips_a_refused_endpoint() {
    let e0 = TcpServer::start("e0", false).await;
    let e1 = TcpServer::start("e1", false).await;
    // A port nothing listens on: connections are refused.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start(&yaml(
        &[
            listener("edge", "127.0.0.1:0", &tcp_to("pair")),
            listener("flaky", "127.0.0.1:0", &tcp_to("flaky")),
        ],
        &[
            backend("pair", &[e0.addr, e1.addr]),
            backend("flaky", &[dead, e1.addr]),
        ],
    ))
    .await;
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        let got = exchange(proxy.listener("edge"), b"hi").await;
        let got = String::from_utf8(got).unwrap();
        let who = got.strip_prefix("hi").expect("echoed").to_string();
        *served.entry(who).or_default() += 1;
    }
    let want = HashMap::from([(bye("e0"), 5), (bye("e1"), 5)]);
    assert_eq!(served, want, "round robin per connection");

    for _ in 0..4 {
        let got = exchange(proxy.listener("flaky"), b"hi").await;
        assert_eq!(got, [b"hi", bye("e1").as_bytes()].concat());
    }
    let metrics = proxy.metrics().await;
    let refused = sample(
        &metrics,
        "remora_tcp_connect_errors_total{backend=\"flaky\",cause=\"connect-failed\"}",
    );
    assert!(refused >= Some(1.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "remora_tcp_connections_total{backend=\"flaky\",listener=\"flaky\"}"
        ),
        Some(4.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_uses_mutual_tls_to_a_mesh_endpoint() {
    let ca = TestCa::new("mesh root");
    let api = ca.issue_spiffe(API);
    let up = Upstream::start_mtls("api", &api.cert_pem, &api.key_pem, &ca.ca_pem()).await;
    let config = |dir: &std::path::Path, expect: &str| {
        format!(
            "{}{}",
            yaml(
                &[listener("edge", "127.0.0.1:0", &tcp_to("api"))],
                &[format!(
                    "  - name: api\n    endpoints: [{{ address: {}, identity: \"{expect}\" }}]\n",
                    up.addr()
                )],
            ),
            identity_section(dir, &ca, &ca.issue_spiffe(WEB))
        )
    };
    // Plain HTTP/1.1 from the client, carried opaquely over mutual TLS.
    let request = b"GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n";
    let dir = tempdir();
    let yaml = config(dir.path(), API);
    let proxy = ProxyProcess::start_in(dir, bin(), &yaml).await.unwrap();
    // No half-close: the HTTP server behind would take it for an abort.
    let mut tcp = TcpStream::connect(proxy.listener("edge")).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut got))
        .await
        .expect("the upstream answers and closes")
        .unwrap();
    let got = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(got.starts_with("http/1.1 200"), "{got}");
    assert!(got.contains("x-upstream: api"), "{got}");

    // Another identity expected at that address: no bytes reach the client.
    let dir = tempdir();
    let yaml = config(dir.path(), "spiffe://cluster.local/ns/shop/sa/payments");
    let proxy = ProxyProcess::start_in(dir, bin(), &yaml).await.unwrap();
    assert!(try_exchange(proxy.listener("edge"), request)
        .await
        .is_empty());
    let metrics = proxy.metrics().await;
    let failed = sample(
        &metrics,
        "remora_tcp_connect_errors_total{backend=\"api\",cause=\"upstream-tls\"}",
    );
    assert_eq!(failed, Some(1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_keeps_tcp_streams_until_its_deadline() {
    let e0 = TcpServer::start("e0", false).await;
    let config = yaml(
        &[listener("edge", "127.0.0.1:0", &tcp_to("echo"))],
        &[backend("echo", &[e0.addr])],
    )
    .replace("listeners:", "drain_timeout: 1s\nlisteners:");
    let mut proxy = start(&config).await;
    let addr = proxy.listener("edge");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"a").await.unwrap();
    assert_eq!(read_n(&mut tcp, 1).await, b"a");

    proxy.signal("TERM").unwrap();
    proxy.wait_for_log("draining", WAIT).await.unwrap();
    // Open streams keep working while the drain waits...
    tcp.write_all(b"b").await.unwrap();
    assert_eq!(read_n(&mut tcp, 1).await, b"b");
    // ...new connections are not accepted...
    let refused = match TcpStream::connect(addr).await {
        Err(_) => true,
        Ok(mut c) => {
            let mut buf = [0u8; 1];
            let _ = c.write_all(b"x").await;
            matches!(
                tokio::time::timeout(WAIT, c.read(&mut buf)).await,
                Ok(Ok(0) | Err(_))
            )
        }
    };
    assert!(refused, "a connection was accepted during the drain");
    // ...and at the deadline the proxy exits, closing the stream.
    let status = proxy
        .wait_exit(WAIT)
        .await
        .expect("exits after the deadline");
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    let end = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "the stream is closed when the proxy exits");
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_caps_tcp_connections() {
    let e0 = TcpServer::start("e0", false).await;
    let limited = format!(
        "{}    circuit_breaker: {{ max_connections: 1 }}\n",
        backend("echo", &[e0.addr])
    );
    let proxy = start(&yaml(
        &[listener("edge", "127.0.0.1:0", &tcp_to("echo"))],
        &[limited],
    ))
    .await;
    let addr = proxy.listener("edge");
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(b"a").await.unwrap();
    assert_eq!(read_n(&mut first, 1).await, b"a");
    // The one connection is taken: the next client is closed at once.
    assert!(try_exchange(addr, b"b").await.is_empty());
    let open = "remora_tcp_open_connections{backend=\"echo\",listener=\"edge\"}";
    assert_metrics(
        &proxy,
        &[
            (
                "remora_tcp_connect_errors_total{backend=\"echo\",cause=\"overloaded\"}",
                1.0,
            ),
            (
                "remora_circuit_breaker_overflows_total{backend=\"echo\",reason=\"max_connections\"}",
                1.0,
            ),
            (open, 1.0),
        ],
    )
    .await;
    // Once the first connection is gone, its slot is free again.
    drop(first);
    assert_metrics(&proxy, &[(open, 0.0)]).await;
    let got = exchange(addr, b"c").await;
    assert_eq!(got, [b"c", bye("e0").as_bytes()].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_between_two_proxies_is_authorized_by_identity() {
    let ca = TestCa::new("mesh root");
    let app = TcpServer::start("app", false).await;
    // The inbound proxy (identity API) lets only WEB in.
    let dir = tempdir();
    let inbound = format!(
        "{}{}",
        yaml(
            &[listener(
                "inbound",
                "127.0.0.1:0",
                &format!(
                    "{}    inbound: {{ mode: strict, authorization: {{ allow: [{{ identities: [\"{WEB}\"] }}] }} }}\n",
                    tcp_to("app")
                )
            )],
            &[backend("app", &[app.addr])],
        ),
        identity_section(dir.path(), &ca, &ca.issue_spiffe(API))
    );
    let inbound = ProxyProcess::start_in(dir, bin(), &inbound).await.unwrap();
    let outbound = |me: &'static str| {
        let dir = tempdir();
        let yaml = format!(
            "{}{}",
            yaml(
                &[listener("edge", "127.0.0.1:0", &tcp_to("api"))],
                &[format!(
                    "  - name: api\n    endpoints: [{{ address: {}, identity: \"{API}\" }}]\n",
                    inbound.listener("inbound")
                )],
            ),
            identity_section(dir.path(), &ca, &ca.issue_spiffe(me))
        );
        async move { ProxyProcess::start_in(dir, bin(), &yaml).await.unwrap() }
    };
    let web = outbound(WEB).await;
    let data = pattern(64 * 1024);
    let got = exchange(web.listener("edge"), &data).await;
    assert_eq!(got.len(), data.len() + bye("app").len());
    assert!(got.ends_with(bye("app").as_bytes()));

    let payments = outbound("spiffe://cluster.local/ns/shop/sa/payments").await;
    assert!(try_exchange(payments.listener("edge"), b"hello")
        .await
        .is_empty());
    let m = assert_metrics(
        &inbound,
        &[
            (
                "remora_authorization_denials_total{listener=\"inbound\",route=\"-\"}",
                1.0,
            ),
            (
                "remora_inbound_refused_total{listener=\"inbound\",reason=\"denied\"}",
                1.0,
            ),
        ],
    )
    .await;
    assert!(
        m.contains(&format!(
            "remora_inbound_connections_total{{client_id=\"{WEB}\",listener=\"inbound\"}} 1"
        )),
        "{m}"
    );
    inbound
        .wait_for_log("connection denied by the authorization policy", WAIT)
        .await
        .unwrap();
}

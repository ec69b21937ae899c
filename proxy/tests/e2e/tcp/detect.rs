//! Protocol detection end to end: a `detect` listener sends HTTP/1.1 and
//! HTTP/2 through its routes and TLS it does not terminate, other bytes and
//! silent clients (server-speaks-first protocols) to its `tcp_backend`; on a
//! listener with `tls` it looks at the decrypted stream; a connection to a
//! server-speaks-first port skips detection.

use super::{
    assert_metrics, backend, banner, bye, exchange, listener, read_n, yaml, TcpServer, WAIT,
};
use crate::tls::curl;
use crate::{bin, require, start};
use remora_test_support::client::Request;
use remora_test_support::proxy::tempdir;
use remora_test_support::tls::rustls_client_config;
use remora_test_support::tools::promtool_accepts;
use remora_test_support::{HttpVersion, ProxyProcess, TestCa, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `detect` listener: routes to `web`, opaque TCP to `backend`.
fn detect_to(backend: &str, timeout: &str) -> String {
    format!(
        "    protocol: detect\n    detect_timeout: {timeout}\n    tcp_backend: {backend}\n    routes:\n      - name: web\n        backends: [{{ name: web }}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_sends_http_to_routes_and_the_rest_to_the_tcp_backend() {
    require("promtool");
    let web = Upstream::start("web").await;
    let raw = TcpServer::start("raw", true).await;
    let ca = TestCa::new("test ca");
    let cert = ca.issue_server(&["secure.test"]);
    let secure = Upstream::start_tls("secure", &cert.cert_pem, &cert.key_pem).await;
    let proxy = start(&yaml(
        &[
            listener("detect", "127.0.0.1:0", &detect_to("raw", "300ms")),
            listener("pass", "127.0.0.1:0", &detect_to("secure", "300ms")),
        ],
        &[
            backend("web", &[web.addr()]),
            backend("raw", &[raw.addr]),
            backend("secure", &[secure.addr()]),
        ],
    ))
    .await;
    let addr = proxy.listener("detect");

    // HTTP/1.1 and HTTP/2 (prior knowledge) go through the route to `web`.
    let url = format!("http://{addr}/");
    for (args, version) in [(vec![], "1.1"), (vec!["--http2-prior-knowledge"], "2")] {
        let mut args: Vec<&str> = args;
        args.extend(["-i", "-w", "\n%{http_version}", &url]);
        let out = curl(&args).await;
        assert!(out.ok, "{}", out.stderr);
        assert_eq!(out.written_out(), version, "{}", out.stdout);
        assert!(
            out.stdout.to_ascii_lowercase().contains("x-upstream: web"),
            "{}",
            out.stdout
        );
    }

    // Bytes that are not HTTP go to `raw`, which greets, echoes, says bye.
    let got = exchange(addr, b"hello opaque\n").await;
    let want = [banner("raw"), "hello opaque\n".into(), bye("raw")].concat();
    assert_eq!(String::from_utf8_lossy(&got), want);

    // A client that waits for the server to speak first gets the banner
    // once detection gives up on it (detect_timeout).
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        read_n(&mut tcp, banner("raw").len()).await,
        banner("raw").as_bytes()
    );
    tcp.write_all(b"quit\n").await.unwrap();
    assert_eq!(read_n(&mut tcp, 5).await, b"quit\n");
    drop(tcp);

    // A TLS ClientHello on a listener without `tls` passes through: the
    // handshake is with the TLS upstream behind it.
    let tls = rustls_client_config(&ca.ca_pem(), &[b"h2", b"http/1.1"]);
    let rsp = Request::new("GET", &format!("https://{}/", proxy.listener("pass")))
        .tls(tls)
        .server_name("secure.test")
        .timeout(WAIT)
        .send()
        .await;
    assert_eq!((rsp.status, rsp.upstream()), (200, Some("secure")));

    let d = |l: &str, p: &str, r: &str| {
        format!(
            "remora_protocol_detections_total{{listener=\"{l}\",protocol=\"{p}\",reason=\"{r}\"}}"
        )
    };
    let metrics = assert_metrics(
        &proxy,
        &[
            (&d("detect", "http1", "detected"), 1.0),
            (&d("detect", "http2", "detected"), 1.0),
            (&d("detect", "opaque", "detected"), 1.0),
            (&d("detect", "opaque", "timeout"), 1.0),
            (&d("pass", "tls", "detected"), 1.0),
            (
                "remora_protocol_detection_seconds_count{listener=\"detect\"}",
                4.0,
            ),
            (
                "remora_tcp_connections_total{backend=\"raw\",listener=\"detect\"}",
                2.0,
            ),
            (
                "remora_tcp_connections_total{backend=\"secure\",listener=\"pass\"}",
                1.0,
            ),
        ],
    )
    .await;
    promtool_accepts(&metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_speaks_first_port_skips_detection() {
    let raw = TcpServer::start("db", true).await;
    // A detection timeout far beyond the wait below: the banner can only
    // arrive in time if detection was skipped.
    let extra = "    protocol: detect\n    detect_timeout: 60s\n    tcp_backend: db\n".to_string();
    let backends = [backend("db", &[raw.addr])];
    let proxy =
        start_on_server_speaks_first_port(|addr| yaml(&[listener("db", addr, &extra)], &backends))
            .await;
    let mut tcp = TcpStream::connect(proxy.listener("db")).await.unwrap();
    assert_eq!(
        read_n(&mut tcp, banner("db").len()).await,
        banner("db").as_bytes()
    );
    drop(tcp);
    assert_metrics(
        &proxy,
        &[(
            "remora_protocol_detections_total{listener=\"db\",protocol=\"opaque\",reason=\"server-speaks-first\"}",
            1.0,
        )],
    )
    .await;
}

/// Starts a proxy whose config (from `yaml(address)`) binds a port of the
/// default server-speaks-first list on 127.0.0.1, trying the free ones in
/// a random order (another test run may hold one).
async fn start_on_server_speaks_first_port(yaml: impl Fn(&str) -> String) -> ProxyProcess {
    let mut ports = remora_api::identity::SERVER_SPEAKS_FIRST_PORTS.to_vec();
    fastrand::shuffle(&mut ports);
    let mut errors = Vec::new();
    for port in ports {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            errors.push(format!("{port}: in use or not allowed"));
            continue;
        }
        match ProxyProcess::start(bin(), &yaml(&format!("127.0.0.1:{port}"))).await {
            Ok(proxy) => return proxy,
            Err(e) => errors.push(format!("{port}: {e:#}")),
        }
    }
    panic!(
        "no server-speaks-first port could be bound:\n{}",
        errors.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_on_a_tls_listener_looks_at_the_decrypted_stream() {
    let web = Upstream::start("web").await;
    let raw = TcpServer::start("raw", true).await;
    let ca = TestCa::new("test ca");
    let dir = tempdir();
    let (cert, key) = ca.issue_server(&["edge.test"]).write_to(dir.path(), "edge");
    let tls = format!(
        "    tls:\n      certificates: [{{ cert: \"{}\", key: \"{}\" }}]\n",
        cert.display(),
        key.display()
    );
    let yaml = yaml(
        &[listener(
            "secure",
            "127.0.0.1:0",
            &(tls + &detect_to("raw", "300ms")),
        )],
        &[backend("web", &[web.addr()]), backend("raw", &[raw.addr])],
    );
    let proxy = ProxyProcess::start_in(dir, bin(), &yaml).await.unwrap();
    let addr = proxy.listener("secure");

    // ALPN says HTTP: the routes, without reading ahead.
    for (version, alpn) in [
        (HttpVersion::Http1, b"http/1.1".as_slice()),
        (HttpVersion::Http2, b"h2".as_slice()),
    ] {
        let rsp = Request::new("GET", &format!("https://{addr}/"))
            .tls(rustls_client_config(&ca.ca_pem(), &[alpn]))
            .server_name("edge.test")
            .version(version)
            .timeout(WAIT)
            .send()
            .await;
        assert_eq!((rsp.status, rsp.upstream()), (200, Some("web")));
    }

    // No ALPN: the first decrypted bytes decide.
    let no_alpn = rustls_client_config(&ca.ca_pem(), &[]);
    let connect = || async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("edge.test").unwrap();
        tokio_rustls::TlsConnector::from(no_alpn.clone())
            .connect(name, tcp)
            .await
            .expect("handshake")
    };
    let mut http = connect().await;
    http.write_all(b"GET / HTTP/1.1\r\nhost: edge.test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, http.read_to_end(&mut got))
        .await
        .expect("a response within the wait");
    let got = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(got.contains("x-upstream: web"), "{got}");

    // Silence inside TLS: opaque after detect_timeout, decrypted to `raw`.
    let mut silent = connect().await;
    let mut greeting = vec![0u8; banner("raw").len()];
    tokio::time::timeout(WAIT, silent.read_exact(&mut greeting))
        .await
        .expect("the banner arrives")
        .unwrap();
    assert_eq!(greeting, banner("raw").as_bytes());
    silent.write_all(b"quit\n").await.unwrap();
    let mut echo = [0u8; 5];
    tokio::time::timeout(WAIT, silent.read_exact(&mut echo))
        .await
        .expect("the echo arrives")
        .unwrap();
    assert_eq!(&echo, b"quit\n");

    let d = |p: &str, r: &str| {
        format!("remora_protocol_detections_total{{listener=\"secure\",protocol=\"{p}\",reason=\"{r}\"}}")
    };
    assert_metrics(
        &proxy,
        &[
            (&d("http1", "detected"), 2.0),
            (&d("http2", "detected"), 1.0),
            (&d("opaque", "timeout"), 1.0),
        ],
    )
    .await;
}

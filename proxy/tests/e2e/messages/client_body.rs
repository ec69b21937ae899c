//! A client that sends a broken request body (a bad chunk size, a body cut
//! short) gets a 400 with its own cause; the endpoint is not blamed for it:
//! no retry, no outlier ejection, a clean upstream afterwards.

use super::{metric, send_raw};
use crate::start;
use remora_test_support::client::Request;
use remora_test_support::Upstream;

fn yaml(up: &Upstream, retry: &str) -> String {
    yaml_with(up, retry, "http1")
}

fn yaml_with(up: &Upstream, retry: &str, protocol: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: r
        backends: [{{ name: b }}]
{retry}
backends:
  - name: b
    endpoints: [{{ address: {} }}]
    protocol: {protocol}
    outlier_detection: {{ consecutive_failures: 1 }}
",
        up.addr()
    )
}

/// A chunked body whose second chunk size is not hex.
const BAD_CHUNK: &[u8] =
    b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nnope\r\n0\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_is_the_clients_fault() {
    let up = Upstream::start("up").await;
    // Streamed (no retry) over HTTP/1.1 and HTTP/2 upstream, and buffered
    // for replay (retry on every condition): the same answer.
    let retry_all = "        retry: { attempts: 3, on: [reset, connect-failure, gateway-error] }";
    for (retry, protocol) in [("", "http1"), ("", "http2"), (retry_all, "http1")] {
        let proxy = start(&yaml_with(&up, retry, protocol)).await;
        let addr = proxy.listener("edge");
        for _ in 0..3 {
            let head = send_raw(addr, BAD_CHUNK).await;
            assert_eq!(
                head.status, 400,
                "{protocol} retry={retry:?}: {}",
                head.text
            );
            assert_eq!(
                head.header("remora-error"),
                Some("client-body"),
                "{}",
                head.text
            );
        }
        // One failure ejects with this config: the endpoint must not be out.
        let rsp = Request::new("GET", &format!("http://{addr}/")).send().await;
        assert_eq!(rsp.status, 200, "retry={retry:?}");
        let m = proxy.metrics().await;
        assert_eq!(
            metric(&m, "remora_outlier_ejections_total{backend=\"b\"}"),
            0.0,
            "{m}"
        );
        assert_eq!(metric(&m, "remora_retries_total{"), 0.0, "{m}");
        let counted = m.lines().find(|l| {
            l.starts_with("remora_responses_total{")
                && l.contains("error=\"client-body\"")
                && l.contains("status_code=\"400\"")
        });
        assert!(counted.is_some_and(|l| l.ends_with(" 3")), "{m}");
        let warned = proxy
            .logs()
            .iter()
            .any(|l| l.contains("request failed") && l.contains("client-body"));
        assert!(!warned, "a client's fault is not logged as a failure");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_is_the_clients_fault() {
    let up = Upstream::start("up").await;
    let proxy = start(&yaml(&up, "")).await;
    let addr = proxy.listener("edge");
    // Content-Length 100, 5 bytes, then the client half-closes.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhello")
        .await
        .unwrap();
    tcp.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut out),
    )
    .await;
    // The client may or may not still read an answer; the proxy must not
    // blame the endpoint either way.
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("upstream-failed"), "{text}");
    let rsp = Request::new("GET", &format!("http://{addr}/")).send().await;
    assert_eq!(rsp.status, 200);
    let m = proxy.metrics().await;
    assert_eq!(
        metric(&m, "remora_outlier_ejections_total{backend=\"b\"}"),
        0.0,
        "{m}"
    );
    assert!(!m.contains("error=\"upstream-failed\""), "{m}");
}

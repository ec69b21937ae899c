//! Rules about what is forwarded: hop-by-hop fields named in `Connection`,
//! `Expect: 100-continue`, `Max-Forwards`, `TE: trailers` across HTTP/2,
//! and HTTP/2's `:authority` against a `host` field.

use super::send_raw;
use crate::start;
use remora_test_support::Upstream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn yaml(up: &Upstream, protocol: &str) -> String {
    crate::config(
        "      - name: all\n        backends: [{ name: up }]",
        &format!(
            "  - name: up\n    protocol: {protocol}\n    endpoints: [{{ address: {} }}]",
            up.addr()
        ),
    )
}

/// The upstream's `/headers` JSON of a raw request, from a closing connection.
async fn upstream_view(addr: std::net::SocketAddr, req: &[u8]) -> serde_json::Value {
    let rsp = remora_test_support::client::raw(addr, req, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&rsp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_named_in_connection_are_not_forwarded() {
    let up = Upstream::start("up").await;
    let proxy = start(&yaml(&up, "http1")).await;
    let seen = upstream_view(
        proxy.listener("edge"),
        b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: x-secret, close\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Kept: 1\r\n\r\n",
    )
    .await;
    let h = &seen["headers"];
    assert!(h.get("x-secret").is_none(), "{seen}");
    assert!(h.get("keep-alive").is_none(), "{seen}");
    assert_eq!(h["x-kept"][0], "1", "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_trailers_is_all_that_crosses_to_http2() {
    let up = Upstream::start("up").await;
    let proxy = start(&yaml(&up, "http2")).await;
    let seen = upstream_view(
        proxy.listener("edge"),
        b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close, te\r\nTE: trailers, deflate\r\n\r\n",
    )
    .await;
    assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
    assert_eq!(seen["headers"]["te"][0], "trailers", "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_by_the_proxy() {
    let up = Upstream::start("up").await;
    let proxy = start(&yaml(&up, "http1")).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.listener("edge"))
        .await
        .unwrap();
    tcp.write_all(
        b"POST /headers HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("an interim response before the body")
        .unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]);
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    tcp.write_all(b"hello").await.unwrap();
    let mut all = buf[..n].to_vec();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut all)).await;
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("HTTP/1.1 200"), "{text}");
    assert!(
        !text.contains("\"expect\""),
        "the upstream saw Expect: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_forwards_is_decremented_or_answered() {
    let up = Upstream::start("up").await;
    let proxy = start(&yaml(&up, "http1")).await;
    let addr = proxy.listener("edge");
    let seen = upstream_view(
        addr,
        b"OPTIONS /headers HTTP/1.1\r\nHost: x\r\nMax-Forwards: 3\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(seen["headers"]["max-forwards"][0], "2", "{seen}");
    let before = up.requests();
    let head = send_raw(
        addr,
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n\r\n",
    )
    .await;
    assert_eq!(head.status, 200, "{}", head.text);
    assert!(head.header("allow").is_some(), "{}", head.text);
    let head = send_raw(
        addr,
        b"TRACE / HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n\r\n",
    )
    .await;
    assert_eq!(head.status, 501, "{}", head.text);
    assert_eq!(up.requests(), before, "Max-Forwards: 0 went upstream");
    // Other methods ignore it.
    let head = send_raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n\r\n",
    )
    .await;
    assert_eq!(head.status, 200, "{}", head.text);
}

/// RFC 9113 §8.3.1: a `host` field that names another authority than
/// `:authority` makes the request malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_and_host_must_agree() {
    let up = Upstream::start("up").await;
    let proxy = start(&yaml(&up, "http1")).await;
    let tcp = tokio::net::TcpStream::connect(proxy.listener("edge"))
        .await
        .unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    for (host, status, cause) in [
        (Some("x"), 200, None),
        (Some("X:80"), 200, None),
        (None, 200, None),
        (Some("y"), 400, Some("bad-request")),
    ] {
        let mut req = http::Request::get("http://x/");
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let (rsp, _) = client.send_request(req.body(()).unwrap(), true).unwrap();
        let rsp = tokio::time::timeout(Duration::from_secs(10), rsp)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rsp.status(), status, "host {host:?}");
        let got = rsp
            .headers()
            .get("remora-error")
            .map(|v| v.to_str().unwrap());
        assert_eq!(got, cause, "host {host:?}");
    }
    assert_eq!(up.requests(), 3);
    conn.abort();
}

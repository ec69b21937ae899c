//! The test upstream's paths over HTTP/1.1 and HTTP/2, its counters, its
//! WebSocket echo, and that stopping it closes the port.

use std::time::Duration;

use bytes::Bytes;
use remora_test_support::client::{self, HttpVersion, Request};
use remora_test_support::upstream::{accept_key, pattern_byte};
use remora_test_support::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn default_path_names_the_upstream_on_h1_and_h2() {
    let up = Upstream::start("alpha").await;
    let h1 = client::get(&up.url("/anything")).await;
    assert_eq!((h1.status, h1.text().as_str()), (200, "alpha\n"));
    assert_eq!(h1.upstream(), Some("alpha"));
    assert_eq!(h1.version, http::Version::HTTP_11);

    let h2 = Request::new("GET", &up.url("/")).http2().send().await;
    assert_eq!((h2.status, h2.text().as_str()), (200, "alpha\n"));
    assert_eq!(h2.version, http::Version::HTTP_2);
    assert_eq!((up.connections(), up.requests()), (2, 2));
}

#[tokio::test]
async fn headers_reports_what_arrived() {
    let up = Upstream::start("h").await;
    for (version, expected) in [
        (HttpVersion::Http1, "HTTP/1.1"),
        (HttpVersion::Http2, "HTTP/2.0"),
    ] {
        let resp = client::request(
            "PUT",
            &up.url("/headers?x=1"),
            &[("x-one", "a"), ("x-one", "b")],
            Bytes::new(),
            version,
        )
        .await;
        let doc = resp.json();
        assert_eq!(doc["method"], "PUT");
        assert_eq!(doc["version"], expected);
        assert!(
            doc["uri"].as_str().unwrap().ends_with("/headers?x=1"),
            "{doc}"
        );
        assert_eq!(doc["headers"]["x-one"], serde_json::json!(["a", "b"]));
    }
    // On HTTP/2 a `host` header becomes the :authority.
    let h2 = Request::new("GET", &up.url("/headers"))
        .header("host", "api.test")
        .http2()
        .send()
        .await;
    assert_eq!(h2.json()["uri"], "http://api.test/headers");
    assert!(h2.json()["headers"].get("host").is_none());
}

#[tokio::test]
async fn echo_sink_bytes_status_slow() {
    let up = Upstream::start("e").await;
    let big: Bytes = (0..300_000u32)
        .map(|i| (i % 7) as u8)
        .collect::<Vec<_>>()
        .into();
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let echo = client::request("POST", &up.url("/echo"), &[], big.clone(), version).await;
        assert_eq!(echo.body, big);
        let sink = client::request("POST", &up.url("/sink"), &[], big.clone(), version).await;
        assert_eq!(sink.text(), "300000");
        let bytes =
            client::request("GET", &up.url("/bytes/200001"), &[], Bytes::new(), version).await;
        assert_eq!(bytes.body.len(), 200_001);
        assert!(bytes
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern_byte(i as u64)));
    }
    let status = client::get(&up.url("/status/503")).await;
    assert_eq!((status.status, status.text().as_str()), (503, "e\n"));
    assert_eq!(client::get(&up.url("/status/204")).await.status, 204);

    let started = tokio::time::Instant::now();
    let slow = client::get(&up.url("/slow/150")).await;
    assert_eq!(slow.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn trailers_on_h2_and_on_h1_with_te() {
    let up = Upstream::start("t").await;
    let h2 = Request::new("GET", &up.url("/trailers"))
        .http2()
        .send()
        .await;
    assert_eq!(h2.text(), "ok");
    assert_eq!(h2.trailers.unwrap()["x-trailer"], "yes");

    let h1 = Request::new("GET", &up.url("/trailers"))
        .header("te", "trailers")
        .send()
        .await;
    assert_eq!(h1.text(), "ok");
    assert_eq!(h1.header("transfer-encoding"), Some("chunked"));
    assert_eq!(h1.trailers.unwrap()["x-trailer"], "yes");
}

#[tokio::test]
async fn websocket_upgrade_echoes_raw_bytes() {
    let up = Upstream::start("ws").await;
    let (head, mut io) = client::upgrade(up.addr(), "/chat", &[]).await.unwrap();
    assert_eq!(head.status, 101);
    assert_eq!(head.upstream(), Some("ws"));
    assert_eq!(
        head.header("sec-websocket-accept"),
        Some(accept_key("dGhlIHNhbXBsZSBub25jZQ==").as_str())
    );
    // A masked text frame "Hello" (RFC 6455 §5.7), then plain bytes.
    let frame = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    for msg in [&frame[..], b"plain bytes"] {
        io.write_all(msg).await.unwrap();
        let mut back = vec![0; msg.len()];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
    // Dropping the upstream ends the upgraded connection too.
    drop(up);
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut rest)).await;
    assert!(eof.is_ok(), "upgraded connection still open after drop");
}

#[tokio::test]
async fn stop_closes_the_port() {
    let up = Upstream::start("gone").await;
    let addr = up.addr();
    up.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

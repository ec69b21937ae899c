//! The client helpers: kept-alive HTTP/1.1 and HTTP/2 connections and raw
//! bytes.

use std::time::Duration;

use bytes::Bytes;
use remora_test_support::client::{self, Http1Conn, Http2Conn};
use remora_test_support::Upstream;

#[tokio::test]
async fn http1_conn_reuses_one_connection() {
    let up = Upstream::start("pool").await;
    let mut conn = Http1Conn::connect(up.addr()).await;
    for i in 0..3 {
        let resp = conn
            .send(
                "POST",
                "/sink",
                &[("x-i", &i.to_string())],
                Bytes::from("abc"),
            )
            .await;
        assert_eq!(resp.text(), "3");
    }
    assert_eq!(conn.get("/").await.upstream(), Some("pool"));
    assert_eq!((up.connections(), up.requests()), (1, 4));
}

#[tokio::test]
async fn http2_conn_multiplexes() {
    let up = Upstream::start("mux").await;
    let conn = Http2Conn::connect(up.addr()).await;
    let (a, b) = tokio::join!(conn.get("/slow/100"), conn.get("/headers"));
    assert_eq!(a.text(), "mux\n");
    assert_eq!(b.json()["version"], "HTTP/2.0");
    assert_eq!((up.connections(), up.requests()), (1, 2));
}

#[tokio::test]
async fn raw_reads_until_close_or_timeout() {
    let up = Upstream::start("raw").await;
    let reply = client::raw(
        up.addr(),
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("raw\n"), "{reply}");

    // An incomplete request: nothing comes back before the timeout.
    let partial = client::raw(
        up.addr(),
        b"GET / HTTP/1.1\r\nhost:",
        Duration::from_millis(200),
    )
    .await;
    assert!(partial.is_empty());
}

#[tokio::test]
async fn transport_errors_are_returned_by_try_request() {
    let up = Upstream::start("x").await;
    let url = up.url("/");
    up.stop().await;
    let err = client::try_request("GET", &url, &[], Bytes::new(), Default::default()).await;
    assert!(err.is_err());
}

//! One row per message rule: raw bytes to the real proxy, the status (and
//! `remora-error`, when the proxy's own check refused it rather than
//! hyper's codec) read back, and whether the upstream saw the request.

use super::send_raw;
use crate::start;
use remora_test_support::Upstream;

/// Bytes sent; expected status; expected `remora-error` (None: hyper's
/// codec answered, or the upstream did); whether the upstream is reached.
type Row = (&'static [u8], u16, Option<&'static str>, bool);

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // Host (RFC 9112 §3.2)
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, Some("bad-request"), false),
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", 400, Some("bad-request"), false),
    (b"GET / HTTP/1.1\r\n\r\n", 400, Some("bad-request"), false),
    (b"GET / HTTP/1.1\r\nHost: x@evil\r\n\r\n", 400, Some("bad-request"), false),
    // HTTP/1.0 may omit Host; with no host to send upstream it is not forwarded.
    (b"GET / HTTP/1.0\r\n\r\n", 400, Some("malformed-request"), false),
    (b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", 200, None, true),
    // absolute-form against Host (RFC 9112 §3.2.2)
    (b"GET http://y/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, Some("bad-request"), false),
    (b"GET http://x:80/ HTTP/1.1\r\nHost: X\r\n\r\n", 200, None, true),
    // Framing (RFC 9112 §6): hyper's codec (a length beside chunked: see
    // `a_length_beside_chunked_is_dropped`)
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, None, false),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabcd", 400, None, false),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, Some("not-implemented"), false),
    (b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, None, false),
    // Field syntax (RFC 9112 §5): hyper's codec
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n", 400, None, false),
    (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: a\r\n\r\n", 400, None, false),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n", 400, None, false),
    // CONNECT (RFC 9110 §9.3.6)
    (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 501, Some("not-implemented"), false),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_end_to_end() {
    let up = Upstream::start("up").await;
    let proxy = start(&crate::config(
        "      - name: all\n        backends: [{ name: up }]",
        &format!(
            "  - name: up\n    endpoints: [{{ address: {} }}]",
            up.addr()
        ),
    ))
    .await;
    let addr = proxy.listener("edge");
    for (i, (bytes, status, cause, reaches)) in ROWS.iter().enumerate() {
        let before = up.requests();
        let head = send_raw(addr, bytes).await;
        let what = String::from_utf8_lossy(bytes);
        assert_eq!(head.status, *status, "row {i}: {what:?} -> {}", head.text);
        assert_eq!(
            head.header("remora-error"),
            *cause,
            "row {i}: {what:?} -> {}",
            head.text
        );
        assert_eq!(
            up.requests() > before,
            *reaches,
            "row {i}: {what:?} reached the upstream?"
        );
    }
}

/// RFC 9112 §6.3: with both, chunked wins; an intermediary that forwards
/// must drop the length, and the connection closes after the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_beside_chunked_is_dropped() {
    let up = Upstream::start("up").await;
    let proxy = start(&crate::config(
        "      - name: all\n        backends: [{ name: up }]",
        &format!(
            "  - name: up\n    endpoints: [{{ address: {} }}]",
            up.addr()
        ),
    ))
    .await;
    let rsp = remora_test_support::client::raw(
        proxy.listener("edge"),
        b"POST /headers HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        std::time::Duration::from_secs(10),
    )
    .await;
    let text = String::from_utf8_lossy(&rsp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains("\"content-length\":[\"3\"]"), "{text}");
    // hyper announces the close after a message with both.
    assert!(text.contains("connection: close"), "{text}");
}

//! WebSocket through the proxy: the HTTP/1.1 upgrade handshake reaches the
//! upstream and its 101 comes back, then the upgraded connection carries
//! bytes both ways until it is closed, and the listener keeps serving.

use crate::{config, start};
use remora_test_support::client::{self, upgrade};
use remora_test_support::upstream::accept_key;
use remora_test_support::Upstream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client-to-server text frame (FIN, opcode 1) masked with `mask`, as RFC
/// 6455 §5.3 requires of clients.
fn masked_text_frame(text: &str, mask: [u8; 4]) -> Vec<u8> {
    let payload = text.as_bytes();
    let mut frame = vec![0x81];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_carries_bytes_both_ways() {
    let up = Upstream::start("ws").await;
    let routes = "      - name: chat\n        match: { path: { prefix: /chat } }\n        backends: [{ name: ws }]";
    let backends = format!(
        "  - name: ws\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    let proxy = start(&config(routes, &backends)).await;
    let addr = proxy.listener("edge");

    let key = "x3JJHMbDL1EzLkh9GBhXDw==";
    let headers = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", key),
        ("sec-websocket-version", "13"),
    ];
    let (head, mut ws) = upgrade(addr, "/chat", &headers)
        .await
        .expect("the proxy passes the upgrade through");
    assert_eq!(head.status, 101);
    assert_eq!(head.upstream(), Some("ws"));
    assert_eq!(
        head.header("upgrade")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket")
    );
    // RFC 6455 §1.3's example key and accept value, and the upstream's helper.
    assert_eq!(
        head.header("sec-websocket-accept"),
        Some("HSmrc0sMlYUkAGmm5OPpG2HaGWk=")
    );
    assert_eq!(
        head.header("sec-websocket-accept"),
        Some(accept_key(key).as_str())
    );

    let big = "x".repeat(200_000);
    let messages = [
        "hello",
        "a little longer message, still one frame",
        &big,
        "bye",
    ];
    for (i, text) in messages.iter().enumerate() {
        let frame = masked_text_frame(text, [i as u8, 0x37, 0xfa, 0x21]);
        ws.write_all(&frame).await.expect("write frame");
        ws.flush().await.expect("flush");
        let mut back = vec![0u8; frame.len()];
        tokio::time::timeout(Duration::from_secs(20), ws.read_exact(&mut back))
            .await
            .unwrap_or_else(|_| panic!("message {i} not echoed within 20 s"))
            .expect("read echo");
        assert!(back == frame, "message {i} came back different");
    }

    // Closing our side ends the tunnel: the upstream's echo closes too.
    ws.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), ws.read_to_end(&mut rest))
        .await
        .expect("the tunnel closes within 20 s")
        .expect("read to EOF");
    assert!(rest.is_empty(), "unexpected bytes after close: {rest:?}");
    drop(ws);

    let rsp = client::get(&format!("http://{addr}/chat/after")).await;
    assert_eq!((rsp.status, rsp.upstream()), (200, Some("ws")));
    assert_eq!(rsp.text(), "ws\n");
    assert_eq!(up.requests(), 2, "the upgrade and the plain request");
}

//! HTTP message rules the proxy enforces itself (RFC 9110/9112/9113), end
//! to end: raw bytes written to the real proxy binary, the status line (and
//! `remora-error`) read back, and whether anything reached the upstream.

mod client_body;
mod forwarding;
mod rules;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The head of a response: the status line and the headers, lower-cased.
pub struct Head {
    pub status: u16,
    pub text: String,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Writes `bytes` on a new connection to `addr` and reads until the end of
/// the response head (or EOF, or 10 s). `status` is 0 when no head came.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Head {
    let mut tcp = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // The proxy may answer and close before taking every byte.
    let _ = tokio::time::timeout_at(deadline, tcp.write_all(bytes)).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n @ 1..)) => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Head { status, text }
}

/// The value of the first sample line starting with `prefix`, or 0.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

//! Protocol detection: what a client speaks, from its first bytes. A TLS
//! ClientHello, the HTTP/2 preface, an HTTP/1 request line, or else opaque
//! bytes. A client that sends nothing within the timeout is opaque too: it
//! waits for a server that speaks first. Connections to a port where the
//! server speaks first ([`SERVER_SPEAKS_FIRST_PORTS`]) skip the wait.
//!
//! [`classify`] and [`guess`] are pure and tested on byte slices. On a plain
//! socket, [`peek`] looks without consuming anything, so whoever serves the
//! connection reads it from the start. On a decrypted stream (a listener
//! with `tls`), [`read`] consumes the first bytes and [`Rewind`] gives them
//! back.

use bytes::{Buf, Bytes, BytesMut};
use remora_api::identity::SERVER_SPEAKS_FIRST_PORTS;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// At most this many first bytes are looked at. A request line longer than
/// this (a very long URL) is judged on its start.
pub const MAX_BYTES: usize = 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Tls,
    Opaque,
}

impl Protocol {
    /// The `protocol` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Tls => "tls",
            Protocol::Opaque => "opaque",
        }
    }

    /// Whether the HTTP server takes it (TLS without termination does not).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http1 | Protocol::Http2)
    }
}

/// Why a connection was given its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Read from the first bytes (or, on TLS, from ALPN).
    Detected,
    /// Not enough bytes before the timeout: silence is opaque, a partial
    /// request line is judged by [`guess`].
    Timeout,
    /// The destination port is one where the server speaks first.
    ServerSpeaksFirst,
    /// The listener says so (`protocol: tcp`).
    Configured,
}

impl Reason {
    /// The `reason` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Detected => "detected",
            Reason::Timeout => "timeout",
            Reason::ServerSpeaksFirst => "server-speaks-first",
            Reason::Configured => "configured",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detection {
    pub protocol: Protocol,
    pub reason: Reason,
    /// How long detection waited; `None` when it did not look.
    pub took: Option<Duration>,
}

impl Detection {
    /// Opaque without looking, for `reason`.
    pub fn opaque(reason: Reason) -> Self {
        Detection {
            protocol: Protocol::Opaque,
            reason,
            took: None,
        }
    }
}

/// Whether connections to `port` skip detection: the server speaks first.
pub fn server_speaks_first(port: u16) -> bool {
    SERVER_SPEAKS_FIRST_PORTS.contains(&port)
}

/// The protocol of a connection that began with `buf`, or `None` if more
/// bytes are needed to tell.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    match buf {
        [] | [0x16] => None,
        [0x16, 0x03, ..] => Some(Protocol::Tls),
        _ if buf.starts_with(H2_PREFACE) => Some(Protocol::Http2),
        _ if H2_PREFACE.starts_with(buf) => None,
        _ => match request_line(buf) {
            Line::Complete => Some(Protocol::Http1),
            Line::Prefix { .. } => None,
            Line::Invalid => Some(Protocol::Opaque),
        },
    }
}

/// The protocol of a connection that began with `buf` when no more bytes
/// will be looked at (timeout, end of stream, [`MAX_BYTES`] reached): a
/// partial request line with a known method and the start of a target is
/// HTTP/1, a partial HTTP/2 preface of at least `PRI ` is HTTP/2,
/// anything undecided else is opaque.
pub fn guess(buf: &[u8]) -> Protocol {
    if let Some(p) = classify(buf) {
        return p;
    }
    if buf.len() >= 4 && H2_PREFACE.starts_with(buf) {
        return Protocol::Http2;
    }
    match request_line(buf) {
        Line::Prefix {
            known_method: true,
            has_target: true,
        } => Protocol::Http1,
        _ => Protocol::Opaque,
    }
}

enum Line {
    /// `METHOD SP target SP HTTP/1.x` and a line end.
    Complete,
    /// Everything so far could start a request line.
    Prefix {
        known_method: bool,
        has_target: bool,
    },
    Invalid,
}

const METHODS: &[&[u8]] = &[
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

/// Longest method token accepted (WebDAV's `VERSION-CONTROL` is 15).
const MAX_METHOD: usize = 24;

/// Checks `buf` against `token SP target SP HTTP/1.DIGIT (CR) LF`.
fn request_line(buf: &[u8]) -> Line {
    let method_len = buf.iter().take_while(|b| is_tchar(**b)).count();
    if method_len > MAX_METHOD {
        return Line::Invalid;
    }
    let prefix = |has_target| Line::Prefix {
        known_method: METHODS.contains(&&buf[..method_len]),
        has_target,
    };
    let rest = &buf[method_len..];
    match rest.first() {
        None => return prefix(false),
        Some(b' ') if method_len > 0 => {}
        Some(_) => return Line::Invalid,
    }
    let rest = &rest[1..];
    // Visible ASCII, and raw UTF-8 that lenient servers take.
    let target_len = rest
        .iter()
        .take_while(|b| b.is_ascii_graphic() || **b >= 0x80)
        .count();
    let rest = &rest[target_len..];
    match rest.first() {
        None => return prefix(target_len > 0),
        Some(b' ') if target_len > 0 => {}
        Some(_) => return Line::Invalid,
    }
    let version = &rest[1..];
    const HTTP1: &[u8] = b"HTTP/1.";
    let n = version.len().min(HTTP1.len());
    if version[..n] != HTTP1[..n] {
        return Line::Invalid;
    }
    match &version[n..] {
        [] => prefix(true),
        [d, ..] if !d.is_ascii_digit() => Line::Invalid,
        [_] | [_, b'\r'] => prefix(true),
        [_, b'\n', ..] | [_, b'\r', b'\n', ..] => Line::Complete,
        _ => Line::Invalid,
    }
}

/// RFC 9110 `tchar`: the characters of a method token.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Detects the protocol of a plain TCP connection to `dst_port` by peeking
/// (nothing is consumed), waiting at most `timeout` for enough bytes.
pub async fn peek(tcp: &TcpStream, dst_port: u16, timeout: Duration) -> Detection {
    if server_speaks_first(dst_port) {
        return Detection::opaque(Reason::ServerSpeaksFirst);
    }
    let started = Instant::now();
    let deadline = started + timeout;
    let mut buf = [0u8; MAX_BYTES];
    // Peeking again returns at once while any bytes are queued, so waiting
    // for the rest of a split first packet polls, with a growing pause.
    let mut pause = Duration::from_millis(1);
    let mut seen = 0;
    let (protocol, reason) = loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Err(_) => break (guess(&buf[..seen]), Reason::Timeout),
            // A reset or an end before any byte: nothing to tell.
            Ok(Err(_) | Ok(0)) => break (guess(&buf[..seen]), Reason::Detected),
            Ok(Ok(n)) => n,
        };
        seen = n;
        if let Some(p) = classify(&buf[..n]) {
            break (p, Reason::Detected);
        }
        if n == buf.len() {
            break (guess(&buf), Reason::Detected);
        }
        // Undecided bytes and the client waits: peeking again would return
        // at once, so the deadline must end the loop here.
        let now = Instant::now();
        if now >= deadline {
            break (guess(&buf[..seen]), Reason::Timeout);
        }
        if now + pause >= deadline {
            tokio::time::sleep_until(deadline).await;
        } else {
            tokio::time::sleep(pause).await;
        }
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    Detection {
        protocol,
        reason,
        took: Some(started.elapsed()),
    }
}

/// Detects the protocol of a stream (a decrypted TLS stream) by reading its
/// first bytes, waiting at most `timeout`; returns them for [`Rewind`].
/// Connections to a server-speaks-first `dst_port` are not read from.
pub async fn read<S: AsyncRead + Unpin>(
    io: &mut S,
    dst_port: u16,
    timeout: Duration,
) -> io::Result<(Detection, Bytes)> {
    if server_speaks_first(dst_port) {
        return Ok((Detection::opaque(Reason::ServerSpeaksFirst), Bytes::new()));
    }
    let started = Instant::now();
    let deadline = started + timeout;
    let mut buf = BytesMut::with_capacity(MAX_BYTES);
    let (protocol, reason) = loop {
        let mut limited = (&mut *io).take((MAX_BYTES - buf.len()) as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(&mut buf)).await {
            Err(_) => break (guess(&buf), Reason::Timeout),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => break (guess(&buf), Reason::Detected),
            Ok(Ok(_)) => {}
        }
        if let Some(p) = classify(&buf) {
            break (p, Reason::Detected);
        }
        if buf.len() >= MAX_BYTES {
            break (guess(&buf), Reason::Detected);
        }
    };
    let detection = Detection {
        protocol,
        reason,
        took: Some(started.elapsed()),
    };
    Ok((detection, buf.freeze()))
}

/// A stream whose first bytes were already read: they are read again first.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;

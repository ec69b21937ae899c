//! Clients that hold a connection open: [`Http1Conn`] sends requests one
//! after another on one kept-alive HTTP/1.1 connection (to assert pooling and
//! reuse), [`Http2Conn`] multiplexes on one HTTP/2 connection, [`upgrade`]
//! returns the raw upgraded stream after a `101`, and [`raw`] writes bytes
//! that need not be HTTP at all and reads whatever comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::{build, collect, HttpVersion, Response, Target};

/// The stream [`upgrade`] hands back: read and write raw bytes on it.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

async fn tcp(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

fn target(scheme: &'static str, addr: SocketAddr, path: &str) -> Target {
    Target {
        scheme,
        authority: addr.to_string(),
        path: path.to_owned(),
    }
}

/// One HTTP/1.1 connection, kept alive across requests sent in sequence.
pub struct Http1Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    scheme: &'static str,
}

impl Http1Conn {
    /// Connects over clear text; panics if that fails.
    pub async fn connect(addr: SocketAddr) -> Http1Conn {
        Self::try_connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub async fn try_connect(addr: SocketAddr) -> anyhow::Result<Http1Conn> {
        let (sender, conn) = http1::handshake(TokioIo::new(tcp(addr).await?)).await?;
        tokio::spawn(conn);
        Ok(Http1Conn {
            sender,
            addr,
            scheme: "http",
        })
    }

    /// Connects over TLS, verifying `server_name` (also sent as SNI).
    pub async fn connect_tls(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        server_name: &str,
    ) -> anyhow::Result<Http1Conn> {
        let sni = ServerName::try_from(server_name.to_owned())?;
        let tls = TlsConnector::from(config)
            .connect(sni, tcp(addr).await?)
            .await?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Http1Conn {
            sender,
            addr,
            scheme: "https",
        })
    }

    /// `GET path`; panics on transport errors.
    pub async fn get(&mut self, path: &str) -> Response {
        self.send("GET", path, &[], Bytes::new()).await
    }

    /// Sends one request and reads the whole response; panics on errors.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Response {
        self.try_send(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on kept-alive connection: {e:#}"))
    }

    pub async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Response> {
        let req = build(
            method,
            &target(self.scheme, self.addr, path),
            headers,
            body,
            HttpVersion::Http1,
        )?;
        self.sender.ready().await.context("connection closed")?;
        collect(self.sender.send_request(req).await?).await
    }

    /// Whether the peer has closed the connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Whether the connection is seen closed within `within`: the
    /// connection's task learns of the peer's FIN a moment after it comes.
    pub async fn closes_within(&self, within: std::time::Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        while !self.is_closed() {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }
}

/// One HTTP/2 (prior knowledge) connection; requests may run concurrently.
#[derive(Clone)]
pub struct Http2Conn {
    sender: http2::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Http2Conn {
    /// Connects over clear text; panics if that fails.
    pub async fn connect(addr: SocketAddr) -> Http2Conn {
        Self::try_connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub async fn try_connect(addr: SocketAddr) -> anyhow::Result<Http2Conn> {
        let (sender, conn) =
            http2::handshake(TokioExecutor::new(), TokioIo::new(tcp(addr).await?)).await?;
        tokio::spawn(conn);
        Ok(Http2Conn { sender, addr })
    }

    /// `GET path`; panics on transport errors.
    pub async fn get(&self, path: &str) -> Response {
        self.send("GET", path, &[], Bytes::new()).await
    }

    /// Sends one request as a new stream; panics on errors.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Response {
        self.try_send(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on HTTP/2 connection: {e:#}"))
    }

    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Response> {
        let req = build(
            method,
            &target("http", self.addr, path),
            headers,
            body,
            HttpVersion::Http2,
        )?;
        let mut sender = self.sender.clone();
        sender.ready().await.context("connection closed")?;
        collect(sender.send_request(req).await?).await
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// Sends `GET path` over HTTP/1.1 with `connection: upgrade`,
/// `upgrade: websocket` and a WebSocket key and version (unless `headers`
/// sets them), expects `101`, and returns that response with the upgraded
/// stream. Any other status is an error carrying status and body.
pub async fn upgrade(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(Response, Upgraded)> {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    let defaults = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    for (name, value) in defaults {
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            all.push((name, value));
        }
    }
    let req = build(
        "GET",
        &target("http", addr, path),
        &all,
        Bytes::new(),
        HttpVersion::Http1,
    )?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(tcp(addr).await?)).await?;
    tokio::spawn(conn.with_upgrades());
    let mut resp = sender.send_request(req).await?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let resp = collect(resp).await?;
        bail!("upgrade refused: {} {:?}", resp.status, resp.text());
    }
    let upgraded = hyper::upgrade::on(&mut resp).await.context("upgrade")?;
    let (parts, _) = resp.into_parts();
    let head = Response {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body: Bytes::new(),
        trailers: None,
    };
    Ok((head, TokioIo::new(upgraded)))
}

/// Opens a TCP connection to `addr`, writes `bytes` (without closing the
/// write side, so a partial request stays pending), and reads until EOF,
/// a reset, or `timeout` after the call started. Returns what was read.
/// Panics only if the connection cannot be opened.
pub async fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => panic!("raw connect {addr}: {e}"),
        Err(_) => panic!("raw connect {addr}: timed out"),
    };
    // A server may answer and close before taking all of it; read anyway.
    let _ = tokio::time::timeout_at(deadline, tcp.write_all(bytes)).await;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
        out.extend_from_slice(&buf[..n]);
    }
    out
}

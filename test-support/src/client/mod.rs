//! Small HTTP clients for tests, built on `hyper::client::conn` with no pool:
//! [`get`], [`request`] and the [`Request`] builder open one fresh connection
//! per call, so what a test sends is exactly what arrives. For several
//! requests on one kept-alive connection use [`Http1Conn`] or [`Http2Conn`];
//! for an upgraded connection, [`upgrade`]; for bytes that are not valid
//! HTTP, [`raw`].

mod conn;

pub use conn::{raw, upgrade, Http1Conn, Http2Conn, Upgraded};

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Default bound on one whole request/response exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which HTTP version to speak. Over TLS, the ALPN protocol the server picks
/// wins over this.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpVersion {
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge on clear text.
    Http2,
}

/// A fully read response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Response {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body if it isn't.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// The first value of header `name`, if present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `x-upstream` header the test upstreams stamp on responses.
    pub fn upstream(&self) -> Option<&str> {
        self.header("x-upstream")
    }
}

/// `GET url` over a fresh HTTP/1.1 connection; panics on transport errors.
pub async fn get(url: &str) -> Response {
    Request::new("GET", url).send().await
}

/// One request over a fresh connection; panics on transport errors.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    version: HttpVersion,
) -> Response {
    try_request(method, url, headers, body, version)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:#}"))
}

/// Like [`request`], returning transport errors (refused, reset, TLS).
pub async fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    version: HttpVersion,
) -> anyhow::Result<Response> {
    let mut req = Request::new(method, url).body(body).version(version);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    req.try_send().await
}

/// A one-shot request builder, for when the free functions don't fit (TLS,
/// a custom SNI name, a different timeout).
#[derive(Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    version: HttpVersion,
    tls: Option<Arc<ClientConfig>>,
    server_name: Option<String>,
    timeout: Duration,
}

impl Request {
    /// `url` is `http://…` or `https://…` (the latter needs [`Request::tls`]).
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
            version: HttpVersion::Http1,
            tls: None,
            server_name: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Appends a header. On HTTP/2 a `host` header becomes `:authority`.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = body.into();
        self
    }

    pub fn version(mut self, version: HttpVersion) -> Request {
        self.version = version;
        self
    }

    /// Shorthand for `.version(HttpVersion::Http2)`.
    pub fn http2(self) -> Request {
        self.version(HttpVersion::Http2)
    }

    /// The rustls config for `https` URLs, e.g. from
    /// [`rustls_client_config`](crate::tls::rustls_client_config).
    pub fn tls(mut self, config: Arc<ClientConfig>) -> Request {
        self.tls = Some(config);
        self
    }

    /// SNI and verified name; defaults to the URL's host.
    pub fn server_name(mut self, name: &str) -> Request {
        self.server_name = Some(name.to_owned());
        self
    }

    /// Bounds connect, handshake, request and reading the whole body.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// Sends it; panics on transport errors.
    pub async fn send(self) -> Response {
        let what = format!("{} {}", self.method, self.url);
        self.try_send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"))
    }

    /// Sends it, returning transport errors.
    pub async fn try_send(self) -> anyhow::Result<Response> {
        let what = format!("{} {}", self.method, self.url);
        tokio::time::timeout(self.timeout, self.exchange())
            .await
            .map_err(|_| anyhow!("{what}: timed out after {:?}", self.timeout))?
    }

    async fn exchange(&self) -> anyhow::Result<Response> {
        let uri: Uri = self
            .url
            .parse()
            .with_context(|| format!("bad URL {:?}", self.url))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            other => bail!("unsupported scheme {other:?} in {:?}", self.url),
        };
        let host = uri
            .host()
            .context("URL has no host")?
            .trim_matches(['[', ']']);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let target = Target {
            scheme: if https { "https" } else { "http" },
            authority: uri.authority().context("URL has no authority")?.to_string(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        };
        let tcp = TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connect {host}:{port}"))?;
        tcp.set_nodelay(true)?;
        if !https {
            return self.exchange_on(tcp, self.version, &target).await;
        }
        let config = self
            .tls
            .clone()
            .context("https URL needs Request::tls(config)")?;
        let name = self.server_name.as_deref().unwrap_or(host);
        let sni = ServerName::try_from(name.to_owned())
            .with_context(|| format!("bad server name {name:?}"))?;
        let tls = TlsConnector::from(config)
            .connect(sni, tcp)
            .await
            .context("TLS handshake")?;
        let version = match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => HttpVersion::Http2,
            Some(b"http/1.1") => HttpVersion::Http1,
            _ => self.version,
        };
        self.exchange_on(tls, version, &target).await
    }

    async fn exchange_on<IO>(
        &self,
        io: IO,
        version: HttpVersion,
        target: &Target,
    ) -> anyhow::Result<Response>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let req = build(&self.method, target, &headers, self.body.clone(), version)?;
        let resp = match version {
            HttpVersion::Http1 => {
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
                tokio::spawn(conn);
                send.send_request(req).await?
            }
            HttpVersion::Http2 => {
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                        .await?;
                tokio::spawn(conn);
                send.send_request(req).await?
            }
        };
        collect(resp).await
    }
}

/// Where a request goes, as it appears on the wire.
pub(crate) struct Target {
    pub(crate) scheme: &'static str,
    pub(crate) authority: String,
    pub(crate) path: String,
}

/// Builds the request: origin-form URI plus `Host` on HTTP/1.1, absolute URI
/// (so `:scheme` and `:authority`) on HTTP/2, where a `host` header given by
/// the test replaces the authority instead of being sent.
pub(crate) fn build(
    method: &str,
    target: &Target,
    headers: &[(&str, &str)],
    body: Bytes,
    version: HttpVersion,
) -> anyhow::Result<http::Request<Full<Bytes>>> {
    let user_host = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| *v);
    let mut builder = http::Request::builder().method(method);
    match version {
        HttpVersion::Http1 => {
            builder = builder.uri(&target.path).version(http::Version::HTTP_11);
            if user_host.is_none() {
                builder = builder.header(HOST, &target.authority);
            }
        }
        HttpVersion::Http2 => {
            let authority = user_host.unwrap_or(&target.authority);
            let uri = format!("{}://{}{}", target.scheme, authority, target.path);
            builder = builder.uri(uri).version(http::Version::HTTP_2);
        }
    }
    for (name, value) in headers {
        if version == HttpVersion::Http2 && name.eq_ignore_ascii_case("host") {
            continue;
        }
        builder = builder.header(*name, *value);
    }
    Ok(builder.body(Full::new(body))?)
}

/// Reads the whole body and any trailers.
pub(crate) async fn collect(resp: http::Response<Incoming>) -> anyhow::Result<Response> {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.context("read response body")?;
    let trailers = collected.trailers().cloned();
    Ok(Response {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

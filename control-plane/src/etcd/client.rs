//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/kv/range`,
//! `/v3/kv/txn`, `/v3/watch`; keys and values base64, 64-bit numbers as
//! strings), on the hyper and rustls the control plane already has: no
//! gRPC stack, no code generation.
//!
//! Several endpoints (members of one cluster) may be given: a request goes
//! to the one that answered last, and on a transport error, a timeout or an
//! `Unavailable` answer moves on to the next, each tried once per request.
//! `https://` endpoints use TLS, verified with `--etcd-ca`, with a client
//! certificate if one is given.

use super::wire::{self, Kv, RangeResponse, TxnRequest, TxnResponse, WatchResponse};
use super::EtcdTls;
use crate::ndjson::Lines;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long one request to one endpoint may take (a watch: until its
/// response headers).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// gRPC's `Unavailable`: this member cannot serve (no leader, stopping).
const UNAVAILABLE: i64 = 14;

const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(30))
    .with_interval(Duration::from_secs(10))
    .with_retries(3);

/// The longest watch response line: one transaction's events, base64
/// (etcd takes requests up to 1.5 MiB by default; bigger if configured).
pub const MAX_WATCH_LINE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd endpoint `{0}`: {1}")]
    Endpoint(String, String),
    #[error("etcd TLS: {0}")]
    Tls(String),
    #[error("etcd {endpoint}: {message}")]
    Transport { endpoint: String, message: String },
    #[error("etcd {endpoint} refused the request: {message} (code {code})")]
    Server {
        endpoint: String,
        code: i64,
        message: String,
    },
    #[error("no etcd endpoint answered: {}", .0.join("; "))]
    Unreachable(Vec<String>),
}

impl EtcdError {
    /// Whether another member might answer where this one did not.
    fn try_next(&self) -> bool {
        match self {
            EtcdError::Transport { .. } => true,
            EtcdError::Server { code, .. } => *code == UNAVAILABLE,
            _ => false,
        }
    }
}

#[derive(Debug)]
struct Endpoint {
    /// As given, for messages.
    url: String,
    /// `host:port`, for the `Host` header.
    authority: String,
    host: String,
    port: u16,
    tls: bool,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, EtcdError> {
        let bad = |why: &str| EtcdError::Endpoint(url.to_string(), why.to_string());
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("must start with http:// or https://")),
        };
        if !matches!(uri.path(), "" | "/") {
            return Err(bad("give host:port only, no path"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        Ok(Endpoint {
            url: url.to_string(),
            authority: uri.authority().map_or_else(String::new, |a| a.to_string()),
            host: host.trim_matches(['[', ']']).to_string(),
            port: uri.port_u16().unwrap_or(2379),
            tls,
        })
    }
}

pub struct Client {
    endpoints: Vec<Endpoint>,
    tls: Option<tokio_rustls::TlsConnector>,
    /// The endpoint that answered last: the first one tried.
    current: AtomicUsize,
}

/// A watch: one response line at a time.
pub struct Watch {
    lines: Lines<Incoming>,
    pub endpoint: String,
}

impl Client {
    /// A client of the members at `urls` (`http://host:port` or
    /// `https://host:port`); nothing is dialled yet.
    pub fn new(urls: &[String], tls: &EtcdTls) -> Result<Client, EtcdError> {
        let endpoints = urls
            .iter()
            .map(|u| Endpoint::parse(u.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(EtcdError::Endpoint(String::new(), "none given".into()));
        }
        let tls = if endpoints.iter().any(|e| e.tls) {
            Some(tokio_rustls::TlsConnector::from(tls.client_config()?))
        } else {
            None
        };
        Ok(Client {
            endpoints,
            tls,
            current: AtomicUsize::new(0),
        })
    }

    /// Every endpoint, comma-separated (for logs and `/status`).
    pub fn urls(&self) -> String {
        let urls: Vec<&str> = self.endpoints.iter().map(|e| e.url.as_str()).collect();
        urls.join(",")
    }

    /// Every key under `prefix`, and the store's revision they were read at.
    pub async fn range(&self, prefix: &str) -> Result<(i64, Vec<Kv>), EtcdError> {
        let req = serde_json::json!({
            "key": wire::b64(prefix),
            "range_end": wire::b64(wire::prefix_end(prefix)),
        });
        let rsp: RangeResponse = self.unary("/v3/kv/range", &req).await?;
        Ok((rsp.header.revision.0, rsp.kvs))
    }

    pub async fn txn(&self, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.unary("/v3/kv/txn", req).await
    }

    /// Watches the keys under `prefix` from `revision` on.
    pub async fn watch(&self, prefix: &str, revision: i64) -> Result<Watch, EtcdError> {
        let req = serde_json::json!({ "create_request": {
            "key": wire::b64(prefix),
            "range_end": wire::b64(wire::prefix_end(prefix)),
            "start_revision": revision.to_string(),
        }});
        let body = Bytes::from(serde_json::to_vec(&req).unwrap_or_default());
        self.failover(|ep| {
            let body = body.clone();
            async move {
                let rsp = self.post(ep, "/v3/watch", body).await?;
                let status = rsp.status();
                if status != StatusCode::OK {
                    let body = read_body(ep, rsp).await?;
                    return Err(server_error(ep, status, &body));
                }
                Ok(Watch {
                    lines: Lines::with_max(rsp.into_body(), MAX_WATCH_LINE),
                    endpoint: ep.url.clone(),
                })
            }
        })
        .await
    }

    /// A request whose answer is one JSON document.
    async fn unary<T: DeserializeOwned>(
        &self,
        path: &str,
        req: &impl Serialize,
    ) -> Result<T, EtcdError> {
        let body = Bytes::from(serde_json::to_vec(req).unwrap_or_default());
        self.failover(|ep| {
            let body = body.clone();
            async move {
                let call = async {
                    let rsp = self.post(ep, path, body).await?;
                    let status = rsp.status();
                    let bytes = read_body(ep, rsp).await?;
                    if status != StatusCode::OK {
                        return Err(server_error(ep, status, &bytes));
                    }
                    serde_json::from_slice(&bytes)
                        .map_err(|e| transport(ep, format!("bad answer: {e}")))
                };
                tokio::time::timeout(REQUEST_TIMEOUT, call)
                    .await
                    .map_err(|_| transport(ep, format!("no answer within {REQUEST_TIMEOUT:?}")))?
            }
        })
        .await
    }

    /// Tries `call` on each endpoint once, from the one that answered last.
    async fn failover<'a, T, F, Fut>(&'a self, call: F) -> Result<T, EtcdError>
    where
        F: Fn(&'a Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T, EtcdError>>,
    {
        let first = self.current.load(Ordering::Relaxed);
        let n = self.endpoints.len();
        let mut errors = Vec::new();
        for i in 0..n {
            let at = (first + i) % n;
            match call(&self.endpoints[at]).await {
                Ok(v) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if e.try_next() => {
                    tracing::debug!(error = %e, "etcd endpoint failed; trying the next");
                    errors.push(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        // Start with the next one next time.
        self.current.store((first + 1) % n, Ordering::Relaxed);
        Err(EtcdError::Unreachable(errors))
    }

    /// Sends one `POST` on a new connection to `ep`; the response's body
    /// streams from it.
    async fn post(
        &self,
        ep: &Endpoint,
        path: &str,
        body: Bytes,
    ) -> Result<http::Response<Incoming>, EtcdError> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
                .await
                .map_err(|e| transport(ep, format!("cannot connect: {e}")))?;
            let _ = tcp.set_nodelay(true);
            // A watch is quiet while nothing changes: keepalive probes notice
            // a peer gone without a word (a network break) in about a minute.
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&KEEPALIVE);
            let req = Request::post(path)
                .header(header::HOST, &ep.authority)
                // A member cut off from the cluster's leader cancels the
                // watch ("no leader") instead of holding it silently: the
                // gateway passes this on as gRPC metadata (etcd's
                // `WithRequireLeader`).
                .header("grpc-metadata-hasleader", "true")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .map_err(|e| transport(ep, e.to_string()))?;
            match (&self.tls, ep.tls) {
                (Some(tls), true) => {
                    let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
                        .map_err(|e| transport(ep, format!("bad TLS name: {e}")))?;
                    let stream = tls
                        .connect(name, tcp)
                        .await
                        .map_err(|e| transport(ep, format!("TLS: {e}")))?;
                    send(ep, TokioIo::new(stream), req).await
                }
                _ => send(ep, TokioIo::new(tcp), req).await,
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .map_err(|_| transport(ep, format!("no answer within {REQUEST_TIMEOUT:?}")))?
    }
}

impl Watch {
    /// The next response, or `None` when etcd closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchResponse>, EtcdError> {
        let err = |message: String| EtcdError::Transport {
            endpoint: self.endpoint.clone(),
            message,
        };
        let Some(line) = self.lines.next().await.map_err(|e| err(e.to_string()))? else {
            return Ok(None);
        };
        let msg: wire::WatchLine =
            serde_json::from_slice(&line).map_err(|e| err(format!("bad watch answer: {e}")))?;
        match (msg.result, msg.error) {
            (Some(r), _) => Ok(Some(r)),
            (None, Some(e)) => Err(err(format!("watch failed: {}", e.message))),
            (None, None) => Err(err("empty watch answer".into())),
        }
    }
}

async fn send<I>(
    ep: &Endpoint,
    io: I,
    req: Request<Full<Bytes>>,
) -> Result<http::Response<Incoming>, EtcdError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| transport(ep, e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| transport(ep, e.to_string()))
}

async fn read_body(ep: &Endpoint, rsp: http::Response<Incoming>) -> Result<Bytes, EtcdError> {
    Ok(rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| transport(ep, e.to_string()))?
        .to_bytes())
}

fn transport(ep: &Endpoint, message: String) -> EtcdError {
    EtcdError::Transport {
        endpoint: ep.url.clone(),
        message,
    }
}

/// An error answer: `{"error": ..., "code": N}`, or whatever else came.
fn server_error(ep: &Endpoint, status: StatusCode, body: &[u8]) -> EtcdError {
    match serde_json::from_slice::<wire::ErrorBody>(body) {
        Ok(e) => EtcdError::Server {
            endpoint: ep.url.clone(),
            code: e.code,
            message: e.message,
        },
        Err(_) if status.is_server_error() => transport(ep, format!("HTTP {status}")),
        Err(_) => EtcdError::Server {
            endpoint: ep.url.clone(),
            code: 0,
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(body)),
        },
    }
}

impl EtcdTls {
    /// The client TLS config: roots from `ca`, and the client certificate
    /// if both `cert` and `key` are given.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, EtcdError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let tls = |m: String| EtcdError::Tls(m);
        let ca = self.ca.as_ref().ok_or_else(|| {
            tls("https:// endpoints need --etcd-ca (the CA of etcd's certificate)".into())
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_file_iter(ca)
            .map_err(|e| tls(format!("--etcd-ca {}: {e}", ca.display())))?
        {
            let der = der.map_err(|e| tls(format!("--etcd-ca {}: {e}", ca.display())))?;
            roots
                .add(der)
                .map_err(|e| tls(format!("--etcd-ca {}: {e}", ca.display())))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| tls(format!("--etcd-cert {}: {e}", cert.display())))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls(format!("--etcd-key {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls(format!("--etcd-cert/--etcd-key: {e}")))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

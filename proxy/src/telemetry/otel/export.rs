//! The exporter task: takes finished spans from the queue, batches them (up
//! to `batch_size`, or what came within `batch_interval` of the first), and
//! sends each batch to the collector as an OTLP `ExportTraceServiceRequest`
//! (protobuf): OTLP/HTTP (`POST /v1/traces` over HTTP/1.1) or OTLP/gRPC
//! (`TraceService/Export` over HTTP/2, gRPC-framed). One connection, kept
//! and reopened after a failure. A batch that fails is dropped and counted:
//! spans are worth less than the memory to keep them.

use super::span::{string, SpanRecord};
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HOST, TE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prometheus::IntCounter;
use prost::Message;
use remora_api::{OtlpProtocol, Tracing};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const HTTP_PATH: &str = "/v1/traces";
pub const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub struct Counters {
    pub exported: IntCounter,
    pub failed: IntCounter,
}

/// A request to send everything queued now; answered, once it is done,
/// with whether the collector took all of it.
pub type Flush = tokio::sync::oneshot::Sender<bool>;

/// Starts the exporter on the current runtime; without one (a compile in a
/// plain unit test) there is none, and every span is counted as dropped.
pub fn spawn(
    config: &Tracing,
    rx: mpsc::Receiver<SpanRecord>,
    flushes: mpsc::Receiver<Flush>,
    counters: Counters,
) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let exporter = Exporter {
            config: config.clone(),
            conn: None,
            failing: false,
            counters,
        };
        rt.spawn(exporter.run(rx, flushes));
    }
}

struct Exporter {
    config: Tracing,
    conn: Option<Conn>,
    failing: bool,
    counters: Counters,
}

impl Exporter {
    /// Runs until every sender (every tracer handle) is gone and the queue
    /// is empty. A flush request cuts the batch being gathered short, and
    /// sends whatever else is queued before it is answered.
    async fn run(mut self, mut rx: mpsc::Receiver<SpanRecord>, mut flushes: mpsc::Receiver<Flush>) {
        let size = self.config.batch_size;
        let mut batch = Vec::with_capacity(size);
        loop {
            let mut flush = None;
            tokio::select! {
                Some(f) = flushes.recv() => flush = Some(f),
                first = rx.recv() => {
                    let Some(first) = first else { return };
                    batch.push(first);
                    let flush_at = Instant::now() + self.config.batch_interval.get();
                    while batch.len() < size && flush.is_none() {
                        let want = size - batch.len();
                        tokio::select! {
                            Some(f) = flushes.recv() => flush = Some(f),
                            got = tokio::time::timeout_at(flush_at, rx.recv_many(&mut batch, want)) => {
                                if matches!(got, Ok(0) | Err(_)) {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            let Some(done) = flush else {
                self.export(&mut batch).await;
                continue;
            };
            // Everything queued when the flush came, in full batches.
            let mut all_sent = true;
            loop {
                while batch.len() < size {
                    match rx.try_recv() {
                        Ok(span) => batch.push(span),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    break;
                }
                all_sent &= self.export(&mut batch).await;
            }
            let _ = done.send(all_sent);
        }
    }

    /// Sends `batch` (emptied) to the collector; counts the outcome and
    /// returns whether the collector took it.
    async fn export(&mut self, batch: &mut Vec<SpanRecord>) -> bool {
        let config = &self.config;
        let n = batch.len() as u64;
        let body = encode(config, batch.drain(..));
        let sent = tokio::time::timeout(
            config.export_timeout.get(),
            send(config, &mut self.conn, body),
        )
        .await
        .unwrap_or_else(|_| Err("the export timed out".into()));
        match sent {
            Ok(()) => {
                self.counters.exported.inc_by(n);
                if self.failing {
                    tracing::info!(collector = %config.collector, "exporting spans again");
                }
                self.failing = false;
                true
            }
            Err(error) => {
                self.counters.failed.inc_by(n);
                self.conn = None;
                if !self.failing {
                    tracing::warn!(collector = %config.collector, %error, spans = n, "span export failed; dropping the batch");
                } else {
                    tracing::debug!(collector = %config.collector, %error, spans = n, "span export failed");
                }
                self.failing = true;
                false
            }
        }
    }
}

/// One OTLP request holding `spans`, under the proxy's resource and scope.
pub fn encode(config: &Tracing, spans: impl Iterator<Item = SpanRecord>) -> Vec<u8> {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", &config.service_name),
                    string("telemetry.sdk.name", "remora"),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "remora-proxy".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                spans: spans.map(|s| s.to_proto()).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    request.encode_to_vec()
}

enum Conn {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

async fn connect(config: &Tracing) -> Result<Conn, String> {
    let tcp = tokio::net::TcpStream::connect(&config.collector)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(tcp);
    let handshake = |e: hyper::Error| format!("handshake: {e}");
    Ok(match config.protocol {
        OtlpProtocol::HttpProtobuf => {
            let (send, conn) = http1::handshake(io).await.map_err(handshake)?;
            tokio::spawn(conn);
            Conn::Http1(send)
        }
        OtlpProtocol::Grpc => {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(handshake)?;
            tokio::spawn(conn);
            Conn::Http2(send)
        }
    })
}

/// Sends one encoded request on the kept connection (opened if needed) and
/// reads the collector's answer.
async fn send(config: &Tracing, conn: &mut Option<Conn>, body: Vec<u8>) -> Result<(), String> {
    let open = match conn {
        Some(Conn::Http1(s)) => !s.is_closed(),
        Some(Conn::Http2(s)) => !s.is_closed(),
        None => false,
    };
    if !open {
        *conn = Some(connect(config).await?);
    }
    let failed = |e: hyper::Error| format!("request: {e}");
    let rsp = match conn {
        Some(Conn::Http1(s)) => {
            s.ready().await.map_err(failed)?;
            let req = Request::post(HTTP_PATH)
                .header(HOST, &config.collector)
                .header(CONTENT_TYPE, "application/x-protobuf")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            s.send_request(req).await.map_err(failed)?
        }
        Some(Conn::Http2(s)) => {
            s.ready().await.map_err(failed)?;
            let req = Request::post(format!("http://{}{GRPC_PATH}", config.collector))
                .header(CONTENT_TYPE, "application/grpc")
                .header(TE, "trailers")
                .body(Full::new(grpc_frame(&body)))
                .map_err(|e| e.to_string())?;
            s.send_request(req).await.map_err(failed)?
        }
        None => return Err("no connection".into()),
    };
    let status = rsp.status();
    let grpc_in_head = grpc_status(rsp.headers());
    let collected = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("response: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("the collector answered {status}"));
    }
    if config.protocol == OtlpProtocol::Grpc {
        let trailers = collected.trailers().and_then(grpc_status);
        match trailers.or(grpc_in_head) {
            Some((0, _)) => {}
            Some((code, message)) => return Err(format!("grpc-status {code}: {message}")),
            None => return Err("the collector's answer has no grpc-status".into()),
        }
    }
    Ok(())
}

/// A gRPC message: uncompressed flag, big-endian length, the message.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}

fn grpc_status(h: &http::HeaderMap) -> Option<(u32, String)> {
    let code = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((code, message))
}

//! Body types of the request path: what goes upstream and what comes back.
//!
//! Both stream frame by frame (data and trailers) with backpressure; nothing
//! here buffers a whole body.

use super::error::ProxyError;
use super::ReqBody;
use crate::balance::InFlight;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

pin_project! {
    /// A response body: the upstream's, streamed through, or one the proxy made.
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        Upstream {
            #[pin] body: Incoming,
            in_flight: Option<InFlight>,
            idle: Option<Idle>,
            // A gRPC call's: counted with the grpc-status of its trailers.
            grpc: Option<Box<super::grpc::Tally>>,
        },
        Full { data: Option<Bytes> },
    }
}

impl ResponseBody {
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ResponseBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    pub fn empty() -> Self {
        ResponseBody::Full { data: None }
    }

    /// The endpoint an upstream body comes from, until the body is read
    /// (read-only, for tap).
    pub fn endpoint(&self) -> Option<std::net::SocketAddr> {
        match self {
            ResponseBody::Upstream { in_flight, .. } => in_flight.as_ref().map(InFlight::endpoint),
            ResponseBody::Full { .. } => None,
        }
    }

    /// Streams an upstream body; `in_flight` is held until the body ends.
    /// With `idle_timeout`, the body fails when no frame comes for that long.
    pub fn upstream(
        body: Incoming,
        in_flight: Option<InFlight>,
        idle_timeout: Option<Duration>,
    ) -> Self {
        let idle = idle_timeout.map(|after| Idle {
            after,
            timer: None,
            fresh: false,
        });
        ResponseBody::Upstream {
            body,
            in_flight,
            idle,
            grpc: None,
        }
    }

    /// Counts the gRPC call when the body ends: with its trailers'
    /// `grpc-status`, `none` when it ends without one. `Err` gives the tally
    /// back for a body the proxy made.
    pub fn count_grpc(&mut self, tally: super::grpc::Tally) -> Result<(), super::grpc::Tally> {
        match self {
            ResponseBody::Upstream { grpc, .. } => {
                *grpc = Some(Box::new(tally));
                Ok(())
            }
            ResponseBody::Full { .. } => Err(tally),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ResponseBodyProj::Upstream {
                body,
                in_flight,
                idle,
                grpc,
            } => {
                let mut body = body;
                let frame = match body.as_mut().poll_frame(cx) {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        if let Some(idle) = idle {
                            if idle.waiting(cx).is_ready() {
                                in_flight.take();
                                return Poll::Ready(Some(Err(idle.error())));
                            }
                        }
                        return Poll::Pending;
                    }
                };
                if let Some(idle) = idle {
                    idle.fresh = true;
                }
                if let (Some(tally), Some(Ok(f))) = (grpc.as_mut(), &frame) {
                    if let Some(trailers) = f.trailers_ref() {
                        tally.end(trailers);
                    }
                }
                if frame.is_none() {
                    in_flight.take().as_mut().map(InFlight::body_done);
                } else if matches!(frame, Some(Ok(_))) && body.is_end_stream() {
                    // The last frame: the upstream connection goes back to
                    // the pool before the client has it, so the client's
                    // next request finds it there.
                    if let Some(f) = in_flight.as_mut() {
                        f.body_done();
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            ResponseBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// The response body idle timeout of a route. The timer is armed only when
/// the body has to wait for the upstream, and re-armed only at the next wait
/// after a frame came: a body that arrives without waiting costs no timer and
/// no clock read, and a fast stream costs one reset per wait, not per frame.
pub struct Idle {
    after: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the timer was (re)armed.
    fresh: bool,
}

/// No piece of a response body came within the route's idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("response body idle for {0:?}")]
pub struct IdleTimeout(pub Duration);

impl Idle {
    /// Polls the timer at a wait, (re)arming it first if needed.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let timer = match &mut self.timer {
            None => {
                self.fresh = false;
                self.timer.insert(Box::pin(tokio::time::sleep(self.after)))
            }
            Some(t) => {
                if std::mem::take(&mut self.fresh) {
                    t.as_mut().reset(Instant::now() + self.after);
                }
                t
            }
        };
        timer.as_mut().poll(cx)
    }

    /// The body ends with an error, which the server turns into an aborted
    /// response (HTTP/2 reset, HTTP/1 connection closed).
    fn error(&self) -> BoxError {
        tracing::debug!(after = ?self.after, "response body idle timeout");
        Box::new(IdleTimeout(self.after))
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body was larger than the listener allows.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// How a streamed upload is going, shared by the body (which writes it) and
/// the request's attempt (which reads it).
#[derive(Debug, Default)]
pub struct Upload(AtomicU8);

impl Upload {
    const SENT: u8 = 1;
    const CLIENT_FAILED: u8 = 2;

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Release);
    }

    /// All of the body was handed on to the upstream connection.
    pub fn is_sent(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::SENT
    }

    /// The client's side of the body failed: it was malformed or cut short.
    pub fn client_failed(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::CLIENT_FAILED
    }
}

pin_project! {
    /// A client's request body on its way upstream.
    #[project = RequestBodyProj]
    pub enum RequestBody {
        /// Streamed as it arrives, after any chunks already read (`prefix`);
        /// cut off, with an error the upstream client reports, past `limit`.
        /// Can be sent once.
        Stream {
            prefix: VecDeque<Bytes>,
            #[pin]
            body: ReqBody,
            limit: u64,
            seen: u64,
            // How the upload is going (see `track_sent`).
            sent: Option<Arc<Upload>>,
        },
        /// Read whole and kept, so it can be sent again for a retry.
        Replay {
            data: Option<Bytes>,
            trailers: Option<HeaderMap>,
        },
    }
}

/// How long a body of unknown length may take to end and still be kept
/// for retries.
const UNKNOWN_LENGTH_WAIT: Duration = Duration::from_millis(100);

/// A request body made ready for sending: kept whole when small enough to
/// replay, or streamed.
pub enum Prepared {
    Replayable {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    Streaming(RequestBody),
    /// A streaming body already sent.
    Spent,
}

impl Prepared {
    /// The body for one attempt. A streaming body can be taken only once.
    pub fn attempt(&mut self) -> Option<RequestBody> {
        match self {
            Prepared::Replayable { data, trailers } => Some(RequestBody::Replay {
                data: (!data.is_empty()).then(|| data.clone()),
                trailers: trailers.clone(),
            }),
            _ => match std::mem::replace(self, Prepared::Spent) {
                Prepared::Streaming(b) => Some(b),
                _ => None,
            },
        }
    }

    pub fn replayable(&self) -> bool {
        matches!(self, Prepared::Replayable { .. })
    }
}

impl RequestBody {
    /// No body (what is left where a body was taken out).
    pub fn empty() -> Self {
        RequestBody::Replay {
            data: None,
            trailers: None,
        }
    }

    pub fn stream(body: ReqBody, limit: Option<u64>) -> Self {
        RequestBody::Stream {
            prefix: VecDeque::new(),
            body,
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
            sent: None,
        }
    }

    /// Reads up to `keep` bytes: a body that ends within them becomes
    /// replayable; a longer one streams on (what was read goes first).
    /// A body already in memory (a layer above may have put one there)
    /// stays replayable whatever its size; a stream already read from is
    /// sent as it is, once.
    pub async fn prepare(self, keep: usize) -> Result<Prepared, ProxyError> {
        let (mut body, max) = match self {
            RequestBody::Stream {
                prefix,
                body,
                limit,
                seen: 0,
                sent: None,
            } if prefix.is_empty() => (body, limit),
            RequestBody::Replay { data, trailers } => {
                let data = data.unwrap_or_default();
                return Ok(Prepared::Replayable { data, trailers });
            }
            other => return Ok(Prepared::Streaming(other)),
        };
        if body.size_hint().lower() > keep as u64 {
            return Ok(Prepared::Streaming(RequestBody::stream(body, Some(max))));
        }
        let mut chunks = VecDeque::new();
        let mut seen = 0u64;
        let mut trailers = None;
        // A body of unknown length may be a stream that stays open (gRPC
        // client streaming): wait for its end only briefly, then send what
        // came and stream the rest (and do not retry it).
        if body.is_end_stream() {
            // No body (a GET): nothing to read or wait for.
            return Ok(Prepared::Replayable {
                data: Bytes::new(),
                trailers: None,
            });
        }
        let known = body.size_hint().exact().is_some();
        let deadline = tokio::time::Instant::now() + UNKNOWN_LENGTH_WAIT;
        loop {
            let next = if known {
                body.frame().await
            } else {
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(next) => next,
                    Err(_) => {
                        return Ok(Prepared::Streaming(RequestBody::Stream {
                            prefix: chunks,
                            body,
                            limit: max,
                            seen,
                            sent: None,
                        }))
                    }
                }
            };
            let Some(frame) = next else { break };
            let frame = frame.map_err(ProxyError::ClientBody)?;
            match frame.into_data() {
                Ok(d) => {
                    seen += d.len() as u64;
                    if seen > max {
                        return Err(ProxyError::BodyTooLarge { limit: max });
                    }
                    chunks.push_back(d);
                    if seen > keep as u64 {
                        return Ok(Prepared::Streaming(RequestBody::Stream {
                            prefix: chunks,
                            body,
                            limit: max,
                            seen,
                            sent: None,
                        }));
                    }
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        let data = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop_front().unwrap_or_default(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(seen as usize);
                chunks.iter().for_each(|c| all.extend_from_slice(c));
                all.freeze()
            }
        };
        Ok(Prepared::Replayable { data, trailers })
    }
}

impl RequestBody {
    /// For a body still streaming in from the client: how its upload goes.
    /// An upstream may answer before all of it was handed on (refusing an
    /// upload); its connection must not take another request until the
    /// upload is through, so it is not pooled then. And when the client's
    /// body fails (a bad chunk, a connection cut short), the attempt's error
    /// is the client's, not the endpoint's. `None` for a body that is in
    /// memory or empty (one allocation only for streamed uploads).
    pub fn track_sent(&mut self) -> Option<Arc<Upload>> {
        if self.is_end_stream() {
            return None;
        }
        match self {
            RequestBody::Stream { sent, .. } => Some(sent.insert(Arc::default()).clone()),
            RequestBody::Replay { .. } => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            RequestBodyProj::Replay { data, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            RequestBodyProj::Stream {
                prefix,
                mut body,
                limit,
                seen,
                sent,
            } => {
                if let Some(d) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                let frame = ready!(body.as_mut().poll_frame(cx));
                if let Some(upload) = sent {
                    if matches!(frame, Some(Err(_))) {
                        upload.set(Upload::CLIENT_FAILED);
                    } else if frame.is_none() || (prefix.is_empty() && body.is_end_stream()) {
                        upload.set(Upload::SENT);
                    }
                }
                match frame {
                    Some(Ok(frame)) => {
                        if let Some(d) = frame.data_ref() {
                            *seen += d.len() as u64;
                            if *seen > *limit {
                                return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*limit)))));
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(e))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Replay { data, trailers } => data.is_none() && trailers.is_none(),
            RequestBody::Stream { prefix, body, .. } => prefix.is_empty() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Replay { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Stream { prefix, body, .. } => {
                let pre: u64 = prefix.iter().map(|c| c.len() as u64).sum();
                let mut h = body.size_hint();
                h.set_lower(h.lower() + pre);
                if let Some(u) = h.upper() {
                    h.set_upper(u + pre);
                }
                h
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_in_memory_is_sent_again_for_each_attempt() {
        let body = RequestBody::Replay {
            data: Some(Bytes::from_static(b"hello")),
            trailers: None,
        };
        // Larger than what a retrying route would read into memory.
        let mut prepared = body.prepare(1).await.expect("prepared");
        for attempt in 1..=2 {
            let body = prepared.attempt().expect("a body for each attempt");
            let sent = body.collect().await.expect("read").to_bytes();
            assert_eq!(sent, "hello", "attempt {attempt}");
        }
    }
}

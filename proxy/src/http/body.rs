//! Body types of the request path: what goes upstream and what comes back.
//!
//! Both stream frame by frame (data and trailers) with backpressure; nothing
//! here buffers a whole body.

use crate::balance::InFlight;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

pin_project! {
    /// A response body: the upstream's, streamed through, or one the proxy made.
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        Upstream { #[pin] body: Incoming, in_flight: Option<InFlight> },
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

    /// Streams an upstream body; `in_flight` is held until the body ends.
    pub fn upstream(body: Incoming, in_flight: Option<InFlight>) -> Self {
        ResponseBody::Upstream { body, in_flight }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            ResponseBodyProj::Upstream { body, in_flight } => {
                let frame = ready!(body.poll_frame(cx));
                if frame.is_none() {
                    in_flight.take();
                }
                Poll::Ready(frame)
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

/// The request body was larger than the listener allows.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

pin_project! {
    /// A client's request body on its way upstream, cut off (with an error the
    /// upstream client reports) when it passes the listener's size limit.
    pub struct RequestBody {
        #[pin]
        body: Incoming,
        limit: u64,
        seen: u64,
    }
}

impl RequestBody {
    pub fn new(body: Incoming, limit: Option<u64>) -> Self {
        RequestBody {
            body,
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match ready!(this.body.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    *this.seen += d.len() as u64;
                    if *this.seen > *this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*this.limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

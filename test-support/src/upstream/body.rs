//! Response bodies for the test upstream that are produced lazily: a
//! repeating byte pattern of any length that never sits whole in memory, and a
//! short body followed by trailers, sent with unknown length so HTTP/1.1 uses
//! chunked encoding (the only way trailers can travel there).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};

const CHUNK: usize = 64 * 1024;

/// Byte `i` of a `/bytes/N` response body: `(i % 256) as u8`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 256) as u8
}

/// `remaining` bytes of [`pattern_byte`], in 64 KiB frames.
pub(super) struct PatternBody {
    remaining: u64,
    chunk: Bytes,
}

impl PatternBody {
    pub(super) fn new(len: u64) -> Self {
        // CHUNK is a multiple of 256, so every frame starts at pattern offset 0.
        let chunk: Bytes = (0..CHUNK as u64)
            .map(pattern_byte)
            .collect::<Vec<u8>>()
            .into();
        PatternBody {
            remaining: len,
            chunk,
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK as u64);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// One data frame, then one trailers frame; length deliberately unknown.
pub(super) struct TrailersBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl TrailersBody {
    pub(super) fn new(data: Bytes, trailers: HeaderMap) -> Self {
        TrailersBody {
            data: Some(data),
            trailers: Some(trailers),
        }
    }
}

impl Body for TrailersBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

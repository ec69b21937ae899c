//! The body types at the edge: a client's request body as the proxy reads
//! it ([`InBody`]: as sent, or decompressed) and a response body as the
//! client gets it ([`OutBody`]: as made, compressed, or behind request
//! decompression's box). A listener without `edge:` only ever sees the
//! `Plain` variants.

use super::super::body::{BoxError, ResponseBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_http::body::UnsyncBoxBody;
use tower_http::compression::CompressionBody;
use tower_http::decompression::DecompressionBody;

pin_project! {
    /// A client's request body.
    #[project = InBodyProj]
    pub enum InBody {
        Plain { #[pin] body: Incoming },
        /// Sent with a `Content-Encoding` the listener decompresses. Boxed:
        /// decoder state would make every request body larger.
        Decoded { body: Pin<Box<DecompressionBody<Incoming>>> },
    }
}

impl InBody {
    pub fn plain(body: Incoming) -> Self {
        InBody::Plain { body }
    }

    pub fn decoded(body: DecompressionBody<Incoming>) -> Self {
        InBody::Decoded {
            body: Box::pin(body),
        }
    }
}

impl Body for InBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            InBodyProj::Plain { body } => body.poll_frame(cx).map_err(Into::into),
            InBodyProj::Decoded { body } => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            InBody::Plain { body } => body.is_end_stream(),
            InBody::Decoded { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            InBody::Plain { body } => body.size_hint(),
            // The decompressed length is not known from the compressed one.
            InBody::Decoded { .. } => SizeHint::default(),
        }
    }
}

pin_project! {
    /// A response body on its way to the client.
    #[project = OutBodyProj]
    pub enum OutBody {
        Plain { #[pin] body: ResponseBody },
        /// Through the compression layer (which may have left it as is).
        /// Boxed: encoder state (~6 KB) would make every response body larger.
        Compressed { body: Pin<Box<CompressionBody<ResponseBody>>> },
        /// Through request decompression, which boxes what it returns.
        Boxed { #[pin] body: UnsyncBoxBody<Bytes, BoxError> },
    }
}

impl OutBody {
    pub fn plain(body: ResponseBody) -> Self {
        OutBody::Plain { body }
    }
}

impl Default for OutBody {
    fn default() -> Self {
        OutBody::plain(ResponseBody::empty())
    }
}

impl From<CompressionBody<ResponseBody>> for OutBody {
    fn from(body: CompressionBody<ResponseBody>) -> Self {
        OutBody::Compressed {
            body: Box::pin(body),
        }
    }
}

impl From<UnsyncBoxBody<Bytes, BoxError>> for OutBody {
    fn from(body: UnsyncBoxBody<Bytes, BoxError>) -> Self {
        OutBody::Boxed { body }
    }
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            OutBodyProj::Plain { body } => body.poll_frame(cx),
            OutBodyProj::Compressed { body } => body.as_mut().poll_frame(cx),
            OutBodyProj::Boxed { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutBody::Plain { body } => body.is_end_stream(),
            OutBody::Compressed { body } => body.is_end_stream(),
            OutBody::Boxed { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutBody::Plain { body } => body.size_hint(),
            OutBody::Compressed { body } => body.size_hint(),
            OutBody::Boxed { body } => body.size_hint(),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// A listener without `edge:` pays no size for the edge variants: every
    /// request and response body is as large as before.
    #[test]
    fn edge_variants_add_no_size() {
        use std::mem::size_of;
        assert_eq!(size_of::<InBody>(), size_of::<Incoming>());
        assert_eq!(size_of::<OutBody>(), size_of::<ResponseBody>());
    }
}

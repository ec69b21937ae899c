//! Response compression, compiled: tower-http's `CompressionLayer` with the
//! codings a listener (or route) offers, and a predicate that compresses
//! only the media types it lists, from its minimum size up.

use http::header::CONTENT_TYPE;
use http::Response;
use http_body::Body;
use remora_api::edge::{Algorithm, Compression};
use std::sync::Arc;
use tower_http::compression::predicate::{And, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;

/// A compression layer ready to wrap a service; off when it offers no
/// coding (the body then passes through untouched).
#[derive(Clone)]
pub struct Compress {
    layer: CompressionLayer<And<SizeAbove, MediaTypes>>,
    /// At least one coding is offered.
    on: bool,
}

/// Compresses a response whose `Content-Type` starts with one of these
/// (compared without case).
#[derive(Clone)]
pub struct MediaTypes(Arc<[Box<str>]>);

impl Predicate for MediaTypes {
    fn should_compress<B: Body>(&self, rsp: &Response<B>) -> bool {
        let Some(ct) = rsp.headers().get(CONTENT_TYPE) else {
            return false;
        };
        let ct = ct.as_bytes();
        self.0.iter().any(|prefix| {
            ct.len() >= prefix.len() && ct[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        })
    }
}

impl Compress {
    pub fn compile(c: &Compression) -> Self {
        let on = |a| c.enabled && c.algorithms.contains(&a);
        let layer = CompressionLayer::new()
            .no_deflate()
            .gzip(on(Algorithm::Gzip))
            .br(on(Algorithm::Br))
            .zstd(on(Algorithm::Zstd));
        let types = c.content_types.iter().map(|t| t.as_str().into()).collect();
        Compress {
            layer: layer.compress_when(SizeAbove::new(c.min_size).and(MediaTypes(types))),
            on: Algorithm::ALL.into_iter().any(on),
        }
    }

    /// It offers at least one coding.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Compresses nothing.
    pub fn off() -> Self {
        Compress::compile(&Compression {
            enabled: false,
            ..Compression::default()
        })
    }

    pub fn layer(&self) -> &CompressionLayer<And<SizeAbove, MediaTypes>> {
        &self.layer
    }
}

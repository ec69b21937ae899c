//! Edge middleware from tower-http, per listener (`listeners[].edge`) with
//! per-route overrides (`routes[].edge`): response compression, request
//! decompression, CORS, request ids, and sensitive headers kept out of logs.
//!
//! [`EdgeLayer`] sits in the stack's edge slot, above observe
//! (`super::stack`). Its [`Edge`] service makes the request's one snapshot
//! load through the observe layer ([`Loads`]), reads the listener's compiled
//! [`EdgeTable`] from it, and hands the same snapshot down. A listener without `edge:`
//! pays one branch and passes the request on; so does a request on a
//! listener whose `edge:` leaves nothing to tower-http but the sensitive
//! marks (made in place). Otherwise the tower-http stack is built around
//! the inner service for this one request (the layers are `Arc`-backed and
//! clone cheaply), so a new snapshot takes effect on the next request.
//! Outermost first:
//!
//! ```text
//! SetSensitiveRequestHeaders -> SetRequestId -> PropagateRequestId -> Cors
//!   -> RequestDecompression (only for a body with Content-Encoding)
//!   -> Compression (only where a coding is on) -> inner
//! ```
//!
//! Request bodies reach the inner service as [`InBody`] (decompressed or
//! not); responses leave as [`OutBody`].

mod answered;
mod body;
mod compress;
mod cors;
mod log;
mod table;

use answered::{answerable, Watch};
pub use answered::{Answered, EdgeHead};
pub use body::{InBody, OutBody};
pub use log::logged_headers;
pub use table::{EdgeTable, RouteEdge};

use super::body::{BoxError, ResponseBody};
use crate::snapshot::{ListenerTable, Snapshot};
use bytes::Bytes;
use http::header::{ACCESS_CONTROL_REQUEST_METHOD, CONTENT_ENCODING};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::body::UnsyncBoxBody;
use tower_http::compression::CompressionBody;
use tower_http::decompression::DecompressionBody;
use tower_http::decompression::RequestDecompression;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

/// The service the edge layer wraps: it makes the request's one snapshot
/// load, and takes a request with that load already made. The edge layer
/// loads through it, so a request still loads the snapshot once.
pub trait Loads: Service<Request<InBody>> {
    /// The snapshot, and this listener's index in it.
    fn load(&self) -> (Arc<Snapshot>, usize);

    /// Serves `req` on `snapshot` (from [`Loads::load`]) instead of loading.
    fn call_loaded(&mut self, snapshot: Arc<Snapshot>, req: Request<InBody>) -> Self::Future;

    /// Counts and logs a request the edge middleware answered itself (a
    /// CORS preflight, a body in a coding the listener does not decode),
    /// as the requests that went down are.
    fn answered(&self, answer: Answered<'_>);

    /// What a tap shows of a request the edge middleware may answer itself
    /// (`None` while nobody taps).
    fn see(&self, req: &Request<Incoming>) -> Option<crate::tap::Seen>;
}

/// Wraps a service in the edge middleware of its listener, read from the
/// request's snapshot.
#[derive(Clone, Copy, Debug, Default)]
pub struct EdgeLayer;

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
}

impl<S> Service<Request<Incoming>> for Edge<S>
where
    S: Loads<Response = Response<ResponseBody>, Error = Infallible>,
    S: Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<OutBody>;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (snapshot, index) = self.inner.load();
        let mut req = req;
        match &snapshot.listeners[index].edge {
            None => {
                return EdgeFuture::Plain {
                    f: self.inner.call_loaded(snapshot, req.map(InBody::plain)),
                }
            }
            // Nothing of tower-http's acts on this request but the
            // sensitive marks: made here, without the stack (perf: the
            // stack built and its future boxed cost ~2,700 instructions).
            Some(edge) if edge.bare(&req) => {
                edge.mark_sensitive(req.headers_mut());
                return EdgeFuture::Plain {
                    f: self.inner.call_loaded(snapshot, req.map(InBody::plain)),
                };
            }
            Some(_) => {}
        }
        // A request the middleware may answer itself (an OPTIONS under
        // CORS, an encoded body under decompression) is watched, to be
        // counted and logged if it does.
        let watch = answerable(&snapshot.listeners[index], &req).then(|| Watched {
            seen: self.inner.see(&req),
            observe: self.inner.clone(),
            watch: Arc::new(Watch::default()),
            started: tokio::time::Instant::now(),
        });
        let inner = Preloaded {
            snapshot: Some(snapshot.clone()),
            inner: self.inner.clone(),
            reached: watch.as_ref().map(|w| w.watch.clone()),
        };
        EdgeFuture::Edge {
            f: Box::pin(run(snapshot, index, inner, req, watch)),
        }
    }
}

/// A request the edge middleware may answer itself, watched: what counts
/// and logs it if it does ([`Loads::answered`]).
struct Watched<S> {
    observe: S,
    watch: Arc<Watch>,
    started: tokio::time::Instant,
    /// For a tap, when one is open.
    seen: Option<crate::tap::Seen>,
}

/// The inner service, handed the snapshot the edge layer loaded.
#[derive(Clone)]
struct Preloaded<S> {
    snapshot: Option<Arc<Snapshot>>,
    inner: S,
    /// Told when a watched request goes further down.
    reached: Option<Arc<Watch>>,
}

impl<S: Loads> Service<Request<InBody>> for Preloaded<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<InBody>) -> S::Future {
        if let Some(w) = &self.reached {
            w.reached.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        match self.snapshot.take() {
            Some(snapshot) => self.inner.call_loaded(snapshot, req),
            None => self.inner.call(req),
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Response<OutBody>> + Send>>;

pin_project! {
    #[project = EdgeFutureProj]
    pub enum EdgeFuture<F> {
        Plain { #[pin] f: F },
        Edge { f: BoxFuture },
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    type Output = Result<Response<OutBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EdgeFutureProj::Plain { f } => {
                let rsp = ready!(f.poll(cx))?;
                Poll::Ready(Ok(rsp.map(OutBody::plain)))
            }
            EdgeFutureProj::Edge { f } => f.as_mut().poll(cx).map(Ok),
        }
    }
}

/// One request of a listener with `edge:` through its middleware.
async fn run<S>(
    snapshot: Arc<Snapshot>,
    index: usize,
    inner: Preloaded<S>,
    req: Request<Incoming>,
    watched: Option<Watched<S>>,
) -> Response<OutBody>
where
    S: Loads<Response = Response<ResponseBody>, Error = Infallible>,
    S: Send + 'static,
    S::Future: Send,
{
    let Some(Watched {
        observe,
        watch,
        started,
        seen,
    }) = watched
    else {
        return through(&snapshot, index, inner, req, None).await;
    };
    let mut rsp = through(&snapshot, index, inner, req, Some(&watch)).await;
    if watch.reached.load(std::sync::atomic::Ordering::Relaxed) {
        return rsp;
    }
    if let Some(head) = watch.head.get() {
        // CORS answers 200; request decompression refuses with 415.
        let cause = if rsp.status() != http::StatusCode::UNSUPPORTED_MEDIA_TYPE {
            ""
        } else {
            // Named like the proxy's other refusals.
            let name = http::HeaderName::from_static(super::error::REMORA_ERROR);
            let value = http::HeaderValue::from_static("unsupported-encoding");
            rsp.headers_mut().insert(name, value);
            "unsupported-encoding"
        };
        observe.answered(Answered {
            snapshot: &snapshot,
            index,
            head,
            status: rsp.status(),
            cause,
            started,
            seen,
        });
    }
    rsp
}

pub(super) fn encoded<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_ENCODING)
        .is_some_and(|v| v != "identity")
}

/// The request through the listener's middleware and `inner`; a watched
/// one leaves its head in `watch` as it reaches CORS.
async fn through<S>(
    snapshot: &Arc<Snapshot>,
    index: usize,
    inner: Preloaded<S>,
    req: Request<Incoming>,
    watch: Option<&Arc<Watch>>,
) -> Response<OutBody>
where
    S: Loads<Response = Response<ResponseBody>, Error = Infallible>,
    S: Send + 'static,
    S::Future: Send,
{
    let listener = &snapshot.listeners[index];
    let Some(edge) = &listener.edge else {
        // Not reached: `call` passes such requests on without boxing.
        let Ok(rsp) = inner.oneshot(req.map(InBody::plain)).await;
        return rsp.map(OutBody::plain);
    };
    let route = edge
        .route_overrides
        .then(|| route_edge(listener, &req))
        .flatten();
    let compress = route
        .and_then(|r| r.compress.as_ref())
        .unwrap_or(&edge.compress);
    let compressing = compress.is_on();
    let compress = compress.layer().clone();
    let cors = route.and_then(|r| r.cors.as_ref()).unwrap_or(&edge.cors);
    let outer = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::from_shared(
            edge.sensitive.clone(),
        ))
        .option_layer(
            edge.request_id
                .as_ref()
                .filter(|r| r.generate)
                .map(|r| SetRequestIdLayer::new(r.header.clone(), MakeRequestUuid)),
        )
        .option_layer(
            edge.request_id
                .as_ref()
                .filter(|r| r.echo)
                .map(|r| PropagateRequestIdLayer::new(r.header.clone())),
        )
        .option_layer(watch.map(|w| {
            let (w, snapshot) = (w.clone(), snapshot.clone());
            tower::util::MapRequestLayer::new(move |req: Request<Incoming>| {
                let _ = w.head.set(EdgeHead::of(&snapshot, index, &req));
                req
            })
        }))
        .option_layer(cors.clone());
    let result = match edge.decompress {
        Some([gzip, br, zstd]) if encoded(&req) => {
            let core = compress.layer(inner).map_request(decoded as fn(_) -> _);
            let decode = RequestDecompression::new(core)
                .no_deflate()
                .gzip(gzip)
                .br(br)
                .zstd(zstd);
            let rsp = outer.service(decode).oneshot(req).await;
            rsp.map(unboxed)
        }
        _ if compressing => {
            let core = compress
                .layer(inner)
                .map_request(plain as fn(_) -> _)
                .map_response(compressed as fn(_) -> _);
            outer.service(core).oneshot(req).await
        }
        // No compression layer at all: with every coding off it would still
        // parse each request's Accept-Encoding (perf: ~1,400 instructions).
        _ => {
            let core = inner
                .map_request(plain as fn(_) -> _)
                .map_response(uncompressed as fn(_) -> _);
            outer.service(core).oneshot(req).await
        }
    };
    match result {
        Ok(rsp) => rsp,
        Err(never) => match never {},
    }
}

fn plain(r: Request<Incoming>) -> Request<InBody> {
    r.map(InBody::plain)
}

fn decoded(r: Request<DecompressionBody<Incoming>>) -> Request<InBody> {
    r.map(InBody::decoded)
}

fn uncompressed(r: Response<ResponseBody>) -> Response<OutBody> {
    r.map(OutBody::plain)
}

fn compressed(r: Response<CompressionBody<ResponseBody>>) -> Response<OutBody> {
    r.map(OutBody::from)
}

fn unboxed(r: Response<UnsyncBoxBody<Bytes, BoxError>>) -> Response<OutBody> {
    r.map(OutBody::from)
}

/// The overrides of the route a request goes to.
fn route_edge<'a>(listener: &'a ListenerTable, req: &Request<Incoming>) -> Option<&'a RouteEdge> {
    let i = route_index(listener, req)?;
    listener.router.routes()[i as usize].edge.as_ref()
}

/// The route a request goes to; a CORS preflight goes where the method it
/// asks about would.
pub(super) fn route_index(listener: &ListenerTable, req: &Request<Incoming>) -> Option<u32> {
    let preflight = (req.method() == Method::OPTIONS)
        .then(|| req.headers().get(ACCESS_CONTROL_REQUEST_METHOD))
        .flatten()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
    let method = preflight.as_ref().unwrap_or(req.method());
    let (host, port) = super::layers::route::request_authority(req).unwrap_or_default();
    listener
        .router
        .find_index(host, port, method, req.uri().path(), req.headers())
}

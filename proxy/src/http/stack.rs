//! The request path as one tower stack, read top to bottom: each line is a
//! layer (one module under [`super::layers`]) and a request passes them in
//! this order; its answer comes back up the same way. A [`Call`] (request
//! and per-request context) goes down, a [`Done`] comes back.
//!
//! | layer | what it does |
//! |---|---|
//! | *edge slot* | generic `Request -> Response` layers that need no snapshot: see [`build`] |
//! | orig proto | a peer's HTTP/1.1 request carried over HTTP/2 made HTTP/1.1 again ([`super::orig_proto`]) |
//! | edge | the listener's tower-http middleware: compression, decompression, CORS, request id, sensitive headers ([`super::edge`]); makes the snapshot load through observe |
//! | observe | loads the snapshot once; starts the request's trace span ([`crate::telemetry::otel`]); on the way back: error to response, metrics, logs, tap, span end |
//! | message | HTTP message checks, `Max-Forwards`, header and declared body limits |
//! | listener rate limit | the listener's `rate_limit` |
//! | route | the route, or a transparent listener's original destination, or `404` |
//! | route rate limit | the route's `rate_limit` |
//! | fault | the route's fault injection (delay, abort) |
//! | authz | an inbound listener's authorization policy (route's, else listener's) |
//! | *user slot* | the library user's layers ([`UserLayers`]) |
//! | action | direct response, redirect, or the backend picked by the route's split |
//! | route timeout | the route's deadline, which every wait below is bounded by |
//! | upstream | the request head for the upstream; the response head for the client |
//! | retry | body buffering, attempts, retry budget, backoff |
//! | breaker | the backend's request slot (`max_requests`) |
//! | balance | the endpoint, avoiding those already tried |
//! | endpoint | sends the attempt (with its trace span); per-try timeout; teaches balancer and outlier detection |

use super::call::{Call, Done, Downstream};
use super::edge::EdgeLayer;
use super::layers::action::Action;
use super::layers::authz::Authz;
use super::layers::balance::Balance;
use super::layers::breaker::Breaker;
use super::layers::endpoint::Endpoint;
use super::layers::fault::FaultLayer;
use super::layers::message::Message;
use super::layers::observe::ObserveLayer;
use super::layers::rate_limit::RateLimit;
use super::layers::retry::{Retry, RetryLayer};
use super::layers::route::Route;
use super::layers::timeout::RouteTimeout;
use super::layers::upstream::{Upstream, UpstreamLayer};
use super::layers::{StepLayer, Stepped};
use super::orig_proto;
use super::server::ListenerCtx;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use tower::util::{BoxCloneSyncService, BoxCloneSyncServiceLayer, Either};
use tower::{Layer, Service, ServiceBuilder};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The stack of one connection (its layers hold no per-request state and
/// clone cheaply: the server clones it for each request). It takes the
/// request as hyper gives it; a layer in the edge slot may change the
/// request body into the [`ReqBody`](super::ReqBody) the layers below
/// take, and the response body into any body hyper can send.
pub fn build(
    ctx: Arc<ListenerCtx>,
    down: Downstream,
) -> impl Service<
    Request<Incoming>,
    Response = Response<impl Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static {
    let user = ctx.user_layers.clone();
    ServiceBuilder::new()
        // EDGE SLOT: generic layers over the request and the response go
        // HERE, above observe (as the edge layer below does; tracing and tap
        // live in observe, which has the route and cause). They see every
        // request, including those the proxy refuses, and the response the
        // client gets; what they answer themselves is not in the proxy's
        // metrics or access log.
        // h2-peers: a peer's HTTP/1.1 request, carried over HTTP/2, is
        // HTTP/1.1 again before anything looks at it.
        .map_request(orig_proto::restore::<Incoming>)
        // edge: the listener's tower-http middleware (http/edge.rs): one
        // branch without `edge:`; it loads the snapshot through observe, once.
        .layer(EdgeLayer)
        .layer(ObserveLayer::new(ctx, down))
        .layer(StepLayer(Message))
        .layer(StepLayer(RateLimit::Listener))
        .layer(StepLayer(Route))
        .layer(StepLayer(RateLimit::Route))
        .layer(FaultLayer)
        .layer(StepLayer(Authz))
        // USER SLOT: the library user's layers (see `UserLayers`).
        .layer(user)
        .service(forward())
}

/// What the user's layers wrap: the route's action and forwarding.
pub type Forward = Stepped<
    Action,
    Stepped<RouteTimeout, Upstream<Retry<Stepped<Breaker, Stepped<Balance, Endpoint>>>>>,
>;

fn forward() -> Forward {
    ServiceBuilder::new()
        .layer(StepLayer(Action))
        .layer(StepLayer(RouteTimeout))
        .layer(UpstreamLayer)
        .layer(RetryLayer)
        .layer(StepLayer(Breaker))
        .layer(StepLayer(Balance))
        .service(Endpoint)
}

/// A user's layer, type-erased: its service is boxed, and so is the
/// service it wraps.
pub type UserService = BoxCloneSyncService<Call, Done, Infallible>;
type UserLayer = BoxCloneSyncServiceLayer<UserService, Call, Done, Infallible>;

/// The user slot: layers a library user added with
/// [`crate::builder::ProxyBuilder::layer`], between authorization and the
/// route's action. A request there is routed and authorized (`cx.view`
/// has its route) and has not been answered or forwarded yet. With no
/// user layers, the slot is one branch and no allocation; with some, each
/// costs a boxed future per request.
#[derive(Clone, Default)]
pub struct UserLayers(Arc<[UserLayer]>);

impl UserLayers {
    /// Adds `layer` below the ones already there (the first added is the
    /// outermost, as in `tower::ServiceBuilder`).
    pub fn push<L>(&mut self, layer: L)
    where
        L: Layer<UserService> + Send + Sync + 'static,
        L::Service:
            Service<Call, Response = Done, Error = Infallible> + Clone + Send + Sync + 'static,
        <L::Service as Service<Call>>::Future: Send + 'static,
    {
        let mut all = self.0.to_vec();
        all.push(BoxCloneSyncServiceLayer::new(layer));
        self.0 = all.into();
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for UserLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserLayers({})", self.0.len())
    }
}

impl Layer<Forward> for UserLayers {
    type Service = Either<Forward, UserService>;

    fn layer(&self, inner: Forward) -> Self::Service {
        if self.0.is_empty() {
            return Either::Left(inner);
        }
        let mut svc = UserService::new(inner);
        for l in self.0.iter().rev() {
            svc = l.layer(svc);
        }
        Either::Right(svc)
    }
}

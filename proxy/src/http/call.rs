//! What travels through the layer stack ([`super::stack`]): a [`Call`] (the
//! request and its per-request context [`Cx`]) goes down, a [`Done`] (the
//! answer and the same context) comes back up. Concrete types: a layer
//! reads what the layers above it picked (route, backend) from `cx.view`,
//! and leaves what the observe layer needs (delay, the backend chosen) there.

use super::body::{RequestBody, ResponseBody};
use super::client::Proto;
use super::error::ProxyError;
use super::passthrough::Passthrough;
use super::router::{Action, Route, RouteMetrics};
use crate::balance::{Backend, InFlight, Slot, Tried};
use crate::snapshot::{ListenerTable, Snapshot};
use http::{HeaderValue, Request, Response};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where a client connection came from.
#[derive(Clone, Debug)]
pub struct Downstream {
    pub client: SocketAddr,
    pub tls: bool,
    /// The client's mesh identity (SPIFFE ID), proved with mutual TLS on an
    /// inbound listener.
    pub client_id: Option<Arc<str>>,
    /// On a connection redirected to a transparent outbound listener: where
    /// requests that match no route go.
    pub passthrough: Option<Arc<Passthrough>>,
    /// `client`'s address as an `x-forwarded-for` value, formatted once
    /// per connection (perf, issue 12).
    pub(crate) forwarded_for: HeaderValue,
}

impl Downstream {
    pub fn new(client: SocketAddr, tls: bool) -> Self {
        Downstream {
            client,
            tls,
            client_id: None,
            passthrough: None,
            forwarded_for: super::headers::forwarded_value(client.ip()),
        }
    }
}

/// A request on its way down the stack. `B` is the body: the client's,
/// streamed within the listener's body limit, until the retry layer reads
/// it to send again (a [`RequestBody`] all the way down; one type, so no
/// layer has to take the request apart to change its body).
pub struct Call<B = RequestBody> {
    /// Boxed, as the context: a call moves through every layer by value,
    /// and boxed it is two pointers instead of ~600 bytes.
    pub req: Box<Request<B>>,
    /// Boxed: it also goes back up in the [`Done`].
    pub cx: Box<Cx>,
}

/// What the stack answers: the response, or the proxy's error (turned into a
/// response by the observe layer, the one place that does), with the
/// request's context for metrics and logs. The answer travels in the
/// context ([`Cx::answer`]): one box, already there, instead of its own
/// (perf, issue 12); read it with [`Done::result`].
pub struct Done {
    pub cx: Box<Cx>,
}

/// A response, or the proxy's error.
pub type Answer = Result<Response<ResponseBody>, ProxyError>;

/// What every service of the stack returns: it never fails as a service;
/// failures are in [`Done::result`].
pub type Ready = Result<Done, Infallible>;

/// The per-request context.
pub struct Cx {
    /// The config this request sees, and what was picked from it.
    pub view: View,
    /// The connection's: shared by its requests.
    pub down: Arc<Downstream>,
    /// When the observe layer took the request.
    pub started: Instant,
    pub rng: fastrand::Rng,
    /// A fault delay was injected.
    pub delayed: bool,
    /// A gRPC request: counted by its grpc-status, and its errors go out
    /// as gRPC errors to a client that is not a mesh peer
    /// ([`super::grpc`]).
    pub grpc: bool,
    /// When the route's timeout runs out; every wait below is bounded by it.
    pub deadline: Option<Deadline>,
    /// The client's side of an HTTP/1.1 upgrade, joined to the upstream's
    /// on a `101` response.
    pub on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The state of the current attempt (below the retry layer).
    pub attempt: AttemptCx,
    /// The answer, once there is one (a [`Done`] carries it up); until
    /// then, and once taken, [`Cx::no_answer`].
    pub answer: Answer,
}

/// When the route's timeout runs out.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub at: Instant,
    pub timeout: Duration,
}

/// What the layers below retry share for one attempt.
#[derive(Default)]
pub struct AttemptCx {
    /// HTTP version spoken to the endpoint.
    pub proto: Option<Proto>,
    /// The request is an HTTP/1.1 upgrade (never retried).
    pub upgrade: bool,
    pub per_try: Option<Duration>,
    /// Endpoints this request went to: a retry goes elsewhere if it can.
    pub tried: Tried,
    /// The endpoint chosen (balance layer): its index in the backend's.
    pub endpoint: usize,
    /// The backend's request slot (breaker layer), until the balancer
    /// moves it into `in_flight`.
    pub slot: Option<Slot>,
    /// The attempt in flight at the endpoint chosen (balance layer), until
    /// its response body ends.
    pub in_flight: Option<InFlight>,
}

/// The request's one snapshot (loaded once, at the top) and what the route
/// and action layers picked from it: indexes, so picking costs no
/// reference count.
pub struct View {
    pub snapshot: Arc<Snapshot>,
    pub listener: usize,
    route: Option<u32>,
    /// The split entry picked (action layer).
    backend: Option<u32>,
    /// Set when a transparent listener's request matched no route: the
    /// backend of its original destination.
    passthrough: Option<Arc<Backend>>,
}

/// The route of requests to an original destination.
static PASSTHROUGH: std::sync::LazyLock<Route> = std::sync::LazyLock::new(Route::passthrough);

impl View {
    pub fn new(snapshot: Arc<Snapshot>, listener: usize) -> Self {
        View {
            snapshot,
            listener,
            route: None,
            backend: None,
            passthrough: None,
        }
    }

    pub fn listener(&self) -> &ListenerTable {
        &self.snapshot.listeners[self.listener]
    }

    /// The configured route the request matched.
    pub fn route(&self) -> Option<&Route> {
        let i = self.route?;
        Some(&self.listener().router.routes()[i as usize])
    }

    /// The route a forwarded request goes by: its own, or the passthrough
    /// route (no timeout, no retries, no header operations).
    pub fn forward_route(&self) -> &Route {
        self.route().unwrap_or(&PASSTHROUGH)
    }

    /// The backend chosen: by the route's split, or the original
    /// destination's.
    pub fn backend(&self) -> Option<&Backend> {
        if let Some(b) = &self.passthrough {
            return Some(b);
        }
        Some(self.split_entry()?.0)
    }

    /// The route-and-backend's cached metric handles (not for passthrough).
    pub fn route_metrics(&self) -> Option<&RouteMetrics> {
        Some(self.split_entry()?.1)
    }

    fn split_entry(&self) -> Option<(&Arc<Backend>, &RouteMetrics)> {
        let i = self.backend?;
        match &self.route()?.action {
            Action::Forward(split) => Some(split.entry_at(i as usize)),
            _ => None,
        }
    }

    pub fn set_route(&mut self, index: u32) {
        self.route = Some(index);
    }

    pub fn set_backend(&mut self, index: u32) {
        self.backend = Some(index);
    }

    pub fn set_passthrough(&mut self, backend: Arc<Backend>) {
        self.passthrough = Some(backend);
    }
}

impl Cx {
    /// The context of a request that has not been routed yet, taken at
    /// `started`.
    pub fn new(view: View, down: Arc<Downstream>, started: Instant) -> Self {
        Cx {
            view,
            down,
            started,
            rng: fastrand::Rng::new(),
            delayed: false,
            grpc: false,
            deadline: None,
            on_upgrade: None,
            attempt: AttemptCx::default(),
            answer: Cx::no_answer(),
        }
    }

    /// What [`Cx::answer`] holds before the request is answered.
    pub fn no_answer() -> Answer {
        Err(ProxyError::Malformed("the request was not answered"))
    }
}

impl Done {
    pub fn new(result: Answer, mut cx: Box<Cx>) -> Self {
        cx.answer = result;
        Done { cx }
    }

    /// The response, or the proxy's error.
    pub fn result(&self) -> &Answer {
        &self.cx.answer
    }

    pub fn result_mut(&mut self) -> &mut Answer {
        &mut self.cx.answer
    }

    /// The answer, taken out of the context, and the context.
    pub fn into_parts(self) -> (Answer, Box<Cx>) {
        let mut cx = self.cx;
        let result = std::mem::replace(&mut cx.answer, Cx::no_answer());
        (result, cx)
    }
}

impl<B> Call<B> {
    /// Answers this call without going further down.
    pub fn answer(self, result: Answer) -> Done {
        Done::new(result, self.cx)
    }
}

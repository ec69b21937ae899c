//! The request as the upstream sees it, and its response as the client
//! sees it: the HTTP version spoken to the endpoint, hop-by-hop headers
//! out, forwarding headers in, the route's header operations and
//! rewrites; on the way back, the route's response headers, or a tunnel
//! joined when an upgrade was accepted (`101`).

use super::{answered, Answered};
use crate::balance::Backend;
use crate::http::body::{RequestBody, ResponseBody};
use crate::http::call::{Call, Done, Downstream, Ready};
use crate::http::client::Proto;
use crate::http::error::ProxyError;
use crate::http::headers::{add_forwarded, is_upgrade, remove_hop_by_hop};
use crate::http::router::{rewrite_prefix, Route};
use futures_util::future::{Either, FutureExt, Map};
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, StatusCode, Uri, Version};
use remora_api::UpstreamProtocol;
use std::convert::Infallible;
use std::task::{Context, Poll};
use tower::{Layer, Service};

#[derive(Clone, Copy, Debug, Default)]
pub struct UpstreamLayer;

impl<S> Layer<S> for UpstreamLayer {
    type Service = Upstream<S>;

    fn layer(&self, inner: S) -> Upstream<S> {
        Upstream { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Upstream<S> {
    inner: S,
}

type Finish = fn(Ready) -> Ready;

impl<S> Service<Call> for Upstream<S>
where
    S: Service<Call, Response = Done, Error = Infallible>,
{
    type Response = Done;
    type Error = Infallible;
    type Future = Answered<Map<S::Future, Finish>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> Self::Future {
        let (req, cx) = (&mut call.req, &mut call.cx);
        let Some(backend) = cx.view.backend() else {
            return answered(call.answer(Err(ProxyError::Malformed("no backend"))));
        };
        let upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
        if upgrade {
            cx.on_upgrade = Some(hyper::upgrade::on(&mut **req));
        }
        let proto = match backend.protocol {
            _ if upgrade => Proto::Http1,
            UpstreamProtocol::Http1 => Proto::Http1,
            UpstreamProtocol::Http2 => Proto::Http2,
            UpstreamProtocol::Auto if req.version() == Version::HTTP_2 => Proto::Http2,
            UpstreamProtocol::Auto => Proto::Http1,
        };
        let route = cx.view.forward_route();
        if let Err(e) = upstream_head(req, route, backend, proto, &cx.down, upgrade) {
            return answered(call.answer(Err(e)));
        }
        cx.attempt.proto = Some(proto);
        cx.attempt.upgrade = upgrade;
        Either::Right(self.inner.call(call).map(finish as Finish))
    }
}

/// The response on its way to the client.
fn finish(ready: Ready) -> Ready {
    let Ok(Done { mut cx }) = ready;
    if let Ok(rsp) = &mut cx.answer {
        if let (Some(client), StatusCode::SWITCHING_PROTOCOLS) =
            (cx.on_upgrade.take(), rsp.status())
        {
            crate::http::upgrade::tunnel(client, hyper::upgrade::on(&mut *rsp));
            // The connection is the tunnel's now: the client gets the head.
            *rsp.body_mut() = ResponseBody::empty();
        } else {
            remove_hop_by_hop(rsp.headers_mut(), false);
            cx.view
                .forward_route()
                .response_headers
                .apply(rsp.headers_mut());
        }
    }
    Ok(Done { cx })
}

/// Rewrites the request head for the upstream: hop-by-hop headers out,
/// forwarding headers in, the route's header operations, host and path
/// rewrites, and the URI form the upstream protocol needs.
fn upstream_head(
    req: &mut Request<RequestBody>,
    route: &Route,
    backend: &Backend,
    proto: Proto,
    down: &Downstream,
    upgrade: bool,
) -> Result<(), ProxyError> {
    let authority = match &route.rewrite_host {
        Some(h) => Some(h.clone()),
        None => match req.uri().authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => req.headers().get(header::HOST).cloned(),
        },
    };
    let path = match (&route.rewrite_prefix, req.uri().path_and_query()) {
        (Some((from, to)), Some(pq)) => {
            PathAndQuery::try_from(rewrite_prefix(pq.as_str(), from, to))
                .map_err(|_| ProxyError::Malformed("rewritten path is invalid"))?
        }
        (_, Some(pq)) => pq.clone(),
        (_, None) => PathAndQuery::from_static("/"),
    };
    let h = req.headers_mut();
    remove_hop_by_hop(h, upgrade);
    h.remove(header::EXPECT);
    add_forwarded(h, &down.forwarded_for, down.tls);
    route.request_headers.apply(h);
    match proto {
        Proto::Http1 => {
            match authority {
                Some(a) => h.insert(header::HOST, a),
                None => return Err(ProxyError::Malformed("no host")),
            };
            *req.version_mut() = Version::HTTP_11;
            *req.uri_mut() = Uri::from(path);
        }
        Proto::Http2 => {
            h.remove(header::HOST);
            let authority = authority
                .and_then(|a| Authority::try_from(a.as_bytes()).ok())
                .ok_or(ProxyError::Malformed("no valid authority"))?;
            let scheme = if backend.tls {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            };
            *req.version_mut() = Version::HTTP_2;
            *req.uri_mut() = Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(path)
                .build()
                .map_err(|_| ProxyError::Malformed("invalid request target"))?;
        }
    }
    Ok(())
}

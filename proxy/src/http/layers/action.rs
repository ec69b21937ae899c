//! The route's action: answer directly, redirect, or pick the backend a
//! forwarded request goes to (the route's weighted traffic split).

use super::route::request_host;
use super::Step;
use crate::http::body::ResponseBody;
use crate::http::call::{Answer, Call};
use crate::http::error::ProxyError;
use crate::http::router::{Action as RouteAction, Route};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

#[derive(Clone, Copy, Debug, Default)]
pub struct Action;

impl<B> Step<B> for Action {
    fn step(&self, call: &mut Call<B>) -> Option<Answer> {
        let cx = &mut call.cx;
        // A passthrough request has its backend already.
        let route = cx.view.route()?;
        match &route.action {
            RouteAction::Direct {
                status,
                body,
                content_type,
            } => {
                let mut rsp = Response::new(ResponseBody::full(body.clone()));
                *rsp.status_mut() = *status;
                rsp.headers_mut()
                    .insert(header::CONTENT_TYPE, content_type.clone());
                route.response_headers.apply(rsp.headers_mut());
                Some(Ok(rsp))
            }
            RouteAction::Redirect(rd) => Some(redirect(rd, &call.req, cx.down.tls, route)),
            RouteAction::Forward(split) => {
                let i = split.pick_index(&mut cx.rng);
                cx.view.set_backend(i as u32);
                None
            }
        }
    }
}

fn redirect<B>(rd: &remora_api::Redirect, req: &Request<B>, tls: bool, route: &Route) -> Answer {
    let scheme = rd
        .scheme
        .as_deref()
        .unwrap_or(if tls { "https" } else { "http" });
    let host = rd
        .host
        .as_deref()
        .or_else(|| request_host(req))
        .ok_or(ProxyError::Malformed("no host"))?;
    let port = rd.port.or_else(|| {
        // Keep an explicit port only if neither scheme nor host changes.
        if rd.scheme.is_some() || rd.host.is_some() {
            return None;
        }
        req.uri().port_u16().or_else(|| {
            req.headers()
                .get(header::HOST)?
                .to_str()
                .ok()?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()
        })
    });
    let path = rd.path.as_deref().unwrap_or(req.uri().path());
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port {
        location.push_str(&format!(":{p}"));
    }
    location.push_str(path);
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let mut rsp = Response::new(ResponseBody::empty());
    *rsp.status_mut() = StatusCode::from_u16(rd.status).unwrap_or(StatusCode::FOUND);
    let loc = HeaderValue::from_str(&location)
        .map_err(|_| ProxyError::Malformed("invalid redirect location"))?;
    rsp.headers_mut().insert(header::LOCATION, loc);
    route.response_headers.apply(rsp.headers_mut());
    Ok(rsp)
}

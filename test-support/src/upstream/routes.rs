//! The test upstream's request handler: `/healthz`, then the failure mode,
//! then one function per path, each small enough to read at a glance. The
//! table of paths lives on [`Upstream`](super::Upstream).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, TRAILER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::body::{PatternBody, TrailersBody};
use super::control::{failing, grpc_failure, Fault};
use super::server::{ConnAbort, Ctx};
use super::websocket;
use crate::BoxError;

pub(super) type RespBody = BoxBody<Bytes, BoxError>;

pub(super) async fn handle(
    req: Request<Incoming>,
    ctx: Ctx,
    abort: ConnAbort,
) -> Response<RespBody> {
    let mut resp = if req.uri().path() == "/healthz" {
        healthz(req, &ctx).await
    } else {
        match ctx.shared.admit() {
            None if websocket::is_upgrade(&req) => websocket::upgrade(req, &ctx),
            None => route(req, &ctx).await,
            Some(Fault::Status(status)) => failing(drain(req, &ctx).await, status),
            Some(Fault::Grpc(code)) => {
                drain(req, &ctx).await;
                grpc_failure(code)
            }
            Some(Fault::Reset) => {
                abort.abort().await;
                // The connection is gone: nobody reads this.
                text(StatusCode::INTERNAL_SERVER_ERROR, String::new())
            }
        }
    };
    resp.headers_mut().insert("x-upstream", ctx.header.clone());
    resp
}

async fn route(req: Request<Incoming>, ctx: &Ctx) -> Response<RespBody> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/headers" => {
            // Read the body before answering, so that the answer never races
            // a request body still in flight (a reset to the proxy).
            let rsp = headers_json(&req);
            drain(req, ctx).await;
            rsp
        }
        "/echo" => Response::new(req.into_body().map_err(BoxError::from).boxed()),
        "/sink" => sink(req).await,
        "/trailers" => trailers(),
        _ => {
            if let Some(code) = path.strip_prefix("/status/") {
                match code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
                    Some(status) => named(drain(req, ctx).await, status),
                    None => text(StatusCode::BAD_REQUEST, format!("bad status {code:?}\n")),
                }
            } else if let Some(ms) = path.strip_prefix("/slow/") {
                let Ok(ms) = ms.parse() else {
                    return text(StatusCode::BAD_REQUEST, format!("bad delay {ms:?}\n"));
                };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                named(drain(req, ctx).await, StatusCode::OK)
            } else if let Some(n) = path.strip_prefix("/bytes/") {
                match n.parse() {
                    Ok(n) => Response::new(PatternBody::new(n).map_err(BoxError::from).boxed()),
                    Err(_) => text(StatusCode::BAD_REQUEST, format!("bad length {n:?}\n")),
                }
            } else {
                named(drain(req, ctx).await, StatusCode::OK)
            }
        }
    }
}

/// 200 `<name> healthy` or 503 `<name> unhealthy`, per `set_health`.
async fn healthz(req: Request<Incoming>, ctx: &Ctx) -> Response<RespBody> {
    ctx.shared.health_checks.fetch_add(1, Ordering::SeqCst);
    let name = drain(req, ctx).await;
    if ctx.shared.healthy() {
        text(StatusCode::OK, format!("{name} healthy\n"))
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{name} unhealthy\n"),
        )
    }
}

/// Reads and discards the request body (so the connection stays reusable)
/// and hands back the upstream's name.
async fn drain(req: Request<Incoming>, ctx: &Ctx) -> &str {
    let _ = count_body(req.into_body()).await;
    &ctx.name
}

/// `status` with body `<name>\n` (empty where the status forbids a body).
pub(super) fn named(name: &str, status: StatusCode) -> Response<RespBody> {
    let bodyless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let body = if bodyless {
        String::new()
    } else {
        format!("{name}\n")
    };
    text(status, body)
}

fn text(status: StatusCode, body: String) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub(super) fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into()).map_err(BoxError::from).boxed()
}

fn headers_json(req: &Request<Incoming>) -> Response<RespBody> {
    let mut headers = serde_json::Map::new();
    for name in req.headers().keys() {
        let values = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>();
        headers.insert(name.as_str().to_owned(), values.into());
    }
    let doc = serde_json::json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    let mut resp = text(StatusCode::OK, format!("{doc}\n"));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn sink(req: Request<Incoming>) -> Response<RespBody> {
    match count_body(req.into_body()).await {
        Ok(n) => text(StatusCode::OK, n.to_string()),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("body error: {e}\n")),
    }
}

/// Reads a body frame by frame, keeping only the byte count.
async fn count_body(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

fn trailers() -> Response<RespBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", HeaderValue::from_static("yes"));
    let body = TrailersBody::new(Bytes::from_static(b"ok"), trailers);
    let mut resp = Response::new(body.map_err(BoxError::from).boxed());
    // hyper's HTTP/1 encoder only sends trailer fields the response announced.
    resp.headers_mut()
        .insert(TRAILER, HeaderValue::from_static("x-trailer"));
    resp
}

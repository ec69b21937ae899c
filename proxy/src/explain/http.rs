//! The admin endpoint: `GET /explain?…` or `POST /explain` with a JSON
//! body; JSON by default, text with `?format=text` or `Accept: text/plain`.
//! A query that cannot be explained is a 400 saying why.

use super::query::{pairs, Query};
use crate::admin::{json, text, Body};
use crate::snapshot::Store;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

/// Bodies larger than this are refused.
const MAX_BODY: usize = 64 * 1024;

pub async fn handle(store: &Store, req: Request<Incoming>) -> Response<Body> {
    let qs = req.uri().query().unwrap_or("").to_string();
    let as_text = match wants_text(&qs, req.headers()) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let query = match *req.method() {
        Method::GET => Query::from_query_string(&qs),
        Method::POST => match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => Query::from_json(&b.to_bytes()),
            Err(_) => Err(format!("the body is over {MAX_BODY} bytes")),
        },
        _ => return text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST\n"),
    };
    let snap = store.load_full();
    match query.and_then(|q| super::explain(&snap, &q)) {
        Ok(e) if as_text => text(StatusCode::OK, super::text::render(&e)),
        Ok(e) => json(StatusCode::OK, &e),
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            format!("cannot explain: {e}\nexample: /explain?method=GET&host=api.example.com&path=/v1/users&header=x-user:alice&format=text\n"),
        ),
    }
}

/// `format=text|json` wins over `Accept`.
fn wants_text(qs: &str, headers: &http::HeaderMap) -> Result<bool, String> {
    let format = pairs(qs)?.into_iter().find(|(k, _)| k == "format");
    match format.as_ref().map(|(_, v)| v.as_str()) {
        Some("text") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(format!("format `{other}`: use text or json")),
        None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("text/plain"))),
    }
}

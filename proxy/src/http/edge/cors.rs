//! CORS, compiled: tower-http's `CorsLayer` from a listener's (or route's)
//! `cors:` settings, already validated (no `*` with credentials, which
//! tower-http would refuse with a panic).

use http::{HeaderName, HeaderValue, Method};
use remora_api::edge::Cors;
use std::sync::Arc;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};

/// `None` when CORS is off (`enabled: false`).
pub fn compile(c: &Cors) -> Option<CorsLayer> {
    if !c.enabled {
        return None;
    }
    let any = |list: &[String]| list.iter().any(|s| s == "*");
    let origin = if any(&c.allowed_origins) {
        AllowOrigin::any()
    } else {
        // A shared list: cloning the layer per request stays a count bump.
        let list: Arc<[HeaderValue]> = c
            .allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        AllowOrigin::predicate(move |origin, _| list.iter().any(|o| o == origin))
    };
    let methods = if any(&c.allowed_methods) {
        AllowMethods::any()
    } else {
        AllowMethods::list(
            c.allowed_methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok()),
        )
    };
    let headers = if any(&c.allowed_headers) {
        AllowHeaders::any()
    } else {
        AllowHeaders::list(names(&c.allowed_headers))
    };
    let expose = if any(&c.expose_headers) {
        ExposeHeaders::any()
    } else {
        ExposeHeaders::list(names(&c.expose_headers))
    };
    let mut layer = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods(methods)
        .allow_headers(headers)
        .expose_headers(expose)
        .allow_credentials(c.allow_credentials);
    if let Some(age) = c.max_age {
        layer = layer.max_age(age.get());
    }
    Some(layer)
}

fn names(list: &[String]) -> Vec<HeaderName> {
    list.iter()
        .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .collect()
}

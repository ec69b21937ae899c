//! The `remora-orig-proto` header: an HTTP/1.1 request carried between two
//! proxies over HTTP/2 says so, and the receiving proxy makes it HTTP/1.1
//! again before routing it, so its app sees the request as its caller sent
//! it (version 1.1, `Host` from `:authority`). See `client/mesh.rs`.

use super::error::ProxyError;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};

/// Marks a request that was HTTP/1.1 before it crossed to the peer.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("remora-orig-proto");

/// The value of [`ORIG_PROTO`] for HTTP/1.1.
const HTTP_11: &str = "HTTP/1.1";

/// An HTTP/1.1 request head (origin form, `Host`) made an HTTP/2 one
/// (`:authority` from `Host`), marked as HTTP/1.1 by origin.
pub fn to_h2<B>(req: Request<B>) -> Result<Request<B>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let host = parts
        .headers
        .remove(header::HOST)
        .ok_or(ProxyError::Malformed("no host"))?;
    let authority = Authority::try_from(host.as_bytes())
        .map_err(|_| ProxyError::Malformed("no valid authority"))?;
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| ProxyError::Malformed("invalid request target"))?;
    parts.version = Version::HTTP_2;
    parts
        .headers
        .insert(ORIG_PROTO, HeaderValue::from_static(HTTP_11));
    Ok(Request::from_parts(parts, body))
}

/// An arriving request: an HTTP/2 one marked [`ORIG_PROTO`] loses the mark
/// and becomes HTTP/1.1 again, `Host` restored from `:authority`. Any
/// other request is left as it is (an HTTP/1.1 one at the cost of a
/// version compare).
pub fn restore<B>(mut req: Request<B>) -> Request<B> {
    if req.version() != Version::HTTP_2 {
        return req;
    }
    let Some(orig) = req.headers_mut().remove(ORIG_PROTO) else {
        return req;
    };
    if orig != HTTP_11 {
        // A version this proxy does not know: serve it as HTTP/2.
        return req;
    }
    *req.version_mut() = Version::HTTP_11;
    let host = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    if let Some(host) = host {
        req.headers_mut().insert(header::HOST, host);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1(host: &str, target: &str) -> Request<()> {
        Request::builder()
            .version(Version::HTTP_11)
            .uri(target)
            .header(header::HOST, host)
            .header("x-app", "1")
            .body(())
            .unwrap()
    }

    #[test]
    fn an_http1_request_crosses_as_http2_and_comes_back_as_it_was() {
        let sent = to_h2(h1("shop.local:8080", "/cart?id=7")).unwrap();
        assert_eq!(sent.version(), Version::HTTP_2);
        assert_eq!(sent.uri().to_string(), "http://shop.local:8080/cart?id=7");
        assert_eq!(sent.headers().get(header::HOST), None);
        assert_eq!(sent.headers()[&ORIG_PROTO], "HTTP/1.1");

        let got = restore(sent);
        assert_eq!(got.version(), Version::HTTP_11);
        assert_eq!(got.headers()[header::HOST], "shop.local:8080");
        assert_eq!(got.headers().get(&ORIG_PROTO), None);
        assert_eq!(got.headers()["x-app"], "1");
        assert_eq!(got.uri().path_and_query().unwrap(), "/cart?id=7");
    }

    #[test]
    fn requests_without_the_mark_are_left_alone() {
        let h2 = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://api/")
            .body(())
            .unwrap();
        let got = restore(h2);
        assert_eq!(
            (got.version(), got.headers().get(header::HOST)),
            (Version::HTTP_2, None)
        );
        // On HTTP/1.1 the header is the app's own business.
        let mut marked = h1("api", "/");
        marked
            .headers_mut()
            .insert(ORIG_PROTO, HeaderValue::from_static(HTTP_11));
        assert!(restore(marked).headers().contains_key(&ORIG_PROTO));
    }

    #[test]
    fn an_unknown_origin_protocol_is_dropped_and_served_as_http2() {
        let mut req = to_h2(h1("api", "/")).unwrap();
        req.headers_mut()
            .insert(ORIG_PROTO, HeaderValue::from_static("HTTP/3"));
        let got = restore(req);
        assert_eq!(got.version(), Version::HTTP_2);
        assert_eq!(got.headers().get(&ORIG_PROTO), None);
    }

    #[test]
    fn a_request_without_host_cannot_cross() {
        let req = Request::builder().uri("/").body(()).unwrap();
        assert!(matches!(to_h2(req), Err(ProxyError::Malformed(_))));
    }
}

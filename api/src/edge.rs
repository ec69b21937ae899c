//! Edge middleware settings of a listener (`listeners[].edge`) and a route's
//! overrides (`routes[].edge`): response compression, request
//! decompression, CORS, request ids and which request headers the access
//! log shows (sensitive ones redacted). Documented in `docs/edge.md`.

use crate::policy::Found;
use crate::Duration;
use serde::{Deserialize, Serialize};

/// A listener's edge middleware; each part is off when absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListenerEdge {
    /// Compress responses the client accepts compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Decompress request bodies sent with `Content-Encoding` before they go
    /// upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decompression: Option<Decompression>,
    /// Answer CORS preflights and add CORS headers to responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Give every request an id, sent upstream and echoed on the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// Request headers shown in the access log (`headers` field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_headers: Vec<String>,
    /// Request headers whose values are never shown in logs, on top of
    /// `authorization`, `proxy-authorization` and `cookie`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive_headers: Vec<String>,
}

/// A route's overrides of its listener's edge middleware.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteEdge {
    /// Replaces the listener's `compression` for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Replaces the listener's `cors` for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
}

/// A content coding the proxy can compress or decompress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Gzip,
    Br,
    Zstd,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [Algorithm::Gzip, Algorithm::Br, Algorithm::Zstd];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Gzip => "gzip",
            Algorithm::Br => "br",
            Algorithm::Zstd => "zstd",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// `false` turns compression off (a route's way to opt out).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Codings offered, in the proxy's order of preference when the client
    /// weighs them equally.
    #[serde(default = "defaults::algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Responses with a known length below this many bytes are sent as they
    /// are.
    #[serde(default = "defaults::min_size")]
    pub min_size: u16,
    /// Media types compressed, by prefix (`text/` covers `text/html`).
    #[serde(default = "defaults::content_types")]
    pub content_types: Vec<String>,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: true,
            algorithms: defaults::algorithms(),
            min_size: defaults::min_size(),
            content_types: defaults::content_types(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decompression {
    /// Codings accepted; a body in another one is refused with 415.
    #[serde(default = "defaults::algorithms")]
    pub algorithms: Vec<Algorithm>,
}

impl Default for Decompression {
    fn default() -> Self {
        Decompression {
            algorithms: defaults::algorithms(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// `false` turns CORS off (a route's way to opt out).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Origins allowed (`https://app.example.com`), or `["*"]` for any.
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may ask for, or `["*"]`.
    #[serde(default = "defaults::methods")]
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for, or `["*"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Response headers the browser shows to scripts, or `["*"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true`. Needs explicit origins,
    /// methods and headers (no `*`).
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestId {
    /// The header that carries the id.
    #[serde(default = "defaults::request_id_header")]
    pub header: String,
    /// Make an id (a random UUID) for a request that comes without one.
    #[serde(default = "defaults::yes")]
    pub generate: bool,
    /// Copy the id onto the response.
    #[serde(default = "defaults::yes")]
    pub echo: bool,
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId {
            header: defaults::request_id_header(),
            generate: true,
            echo: true,
        }
    }
}

pub mod defaults {
    use super::Algorithm;

    pub fn yes() -> bool {
        true
    }
    pub fn algorithms() -> Vec<Algorithm> {
        Algorithm::ALL.to_vec()
    }
    pub fn min_size() -> u16 {
        256
    }
    pub fn content_types() -> Vec<String> {
        [
            "text/",
            "application/json",
            "application/javascript",
            "application/xml",
            "image/svg+xml",
        ]
        .map(String::from)
        .to_vec()
    }
    pub fn methods() -> Vec<String> {
        ["GET", "HEAD", "POST"].map(String::from).to_vec()
    }
    pub fn request_id_header() -> String {
        "x-request-id".into()
    }
    /// Always redacted in logs.
    pub const SENSITIVE_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];
}

impl ListenerEdge {
    /// Problems, each at its field below `at` (`listeners[0].edge`).
    pub(crate) fn check(&self, at: &str, access_log: bool, found: &mut Found) {
        if let Some(c) = &self.compression {
            c.check(&format!("{at}.compression"), found);
        }
        if let Some(d) = &self.decompression {
            algorithms(
                found,
                format!("{at}.decompression.algorithms"),
                &d.algorithms,
            );
        }
        if let Some(c) = &self.cors {
            c.check(&format!("{at}.cors"), found);
        }
        if let Some(r) = &self.request_id {
            header_name(found, format!("{at}.request_id.header"), &r.header);
        }
        for (i, h) in self.log_headers.iter().enumerate() {
            header_name(found, format!("{at}.log_headers[{i}]"), h);
        }
        if !self.log_headers.is_empty() && !access_log {
            found.push((
                format!("{at}.log_headers"),
                "needs the listener's `access_log: true`".into(),
            ));
        }
        for (i, h) in self.sensitive_headers.iter().enumerate() {
            header_name(found, format!("{at}.sensitive_headers[{i}]"), h);
        }
    }
}

impl RouteEdge {
    pub(crate) fn check(&self, at: &str, found: &mut Found) {
        if let Some(c) = &self.compression {
            c.check(&format!("{at}.compression"), found);
        }
        if let Some(c) = &self.cors {
            c.check(&format!("{at}.cors"), found);
        }
    }
}

impl Compression {
    fn check(&self, at: &str, found: &mut Found) {
        if self.enabled {
            algorithms(found, format!("{at}.algorithms"), &self.algorithms);
        }
        for (i, t) in self.content_types.iter().enumerate() {
            let (kind, sub) = t.split_once('/').unwrap_or((t, ""));
            let token = |s: &str| {
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
            };
            if kind.is_empty() || !token(kind) || !token(sub) || !t.contains('/') {
                found.push((
                    format!("{at}.content_types[{i}]"),
                    format!("`{t}` is not a media type or a prefix of one (`text/`, `application/json`)"),
                ));
            }
        }
    }
}

impl Cors {
    fn check(&self, at: &str, found: &mut Found) {
        if !self.enabled {
            return;
        }
        if self.allowed_origins.is_empty() {
            found.push((
                format!("{at}.allowed_origins"),
                "lists no origin: write `[\"*\"]` for any".into(),
            ));
        }
        let any = |list: &[String]| list.iter().any(|s| s == "*");
        for (i, o) in self.allowed_origins.iter().enumerate() {
            if o == "*" && self.allowed_origins.len() > 1 {
                found.push((
                    format!("{at}.allowed_origins[{i}]"),
                    "`*` is alone or not at all".into(),
                ));
            } else if o != "*" {
                if let Err(why) = origin(o) {
                    found.push((format!("{at}.allowed_origins[{i}]"), format!("`{o}` {why}")));
                }
            }
        }
        for (i, m) in self.allowed_methods.iter().enumerate() {
            if m != "*" && http::Method::from_bytes(m.as_bytes()).is_err() {
                found.push((
                    format!("{at}.allowed_methods[{i}]"),
                    format!("`{m}` is not a method"),
                ));
            }
        }
        for (field, list) in [
            ("allowed_headers", &self.allowed_headers),
            ("expose_headers", &self.expose_headers),
        ] {
            for (i, h) in list.iter().enumerate() {
                if h != "*" {
                    header_name(found, format!("{at}.{field}[{i}]"), h);
                }
            }
        }
        if self.allow_credentials {
            for (field, list) in [
                ("allowed_origins", &self.allowed_origins),
                ("allowed_methods", &self.allowed_methods),
                ("allowed_headers", &self.allowed_headers),
                ("expose_headers", &self.expose_headers),
            ] {
                if any(list) {
                    found.push((
                        format!("{at}.{field}"),
                        "`*` is not allowed with `allow_credentials: true`: list them".into(),
                    ));
                }
            }
        }
    }
}

/// Checks an origin: `scheme://host[:port]`, nothing more.
fn origin(o: &str) -> Result<(), &'static str> {
    let uri: http::Uri = o.parse().map_err(|_| "is not an origin")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err("is not an origin: write `https://host[:port]`");
    }
    if o.ends_with('/') || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err("has a path: an origin is `https://host[:port]` only");
    }
    Ok(())
}

fn algorithms(found: &mut Found, at: String, list: &[crate::edge::Algorithm]) {
    if list.is_empty() {
        found.push((at, "lists no algorithm (gzip, br, zstd)".into()));
    }
}

fn header_name(found: &mut Found, at: String, name: &str) {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        found.push((at, format!("`{name}` is not a header name")));
    }
}

#[cfg(test)]
mod tests;

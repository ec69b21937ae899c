//! A finished span as the request path leaves it (plain fields, cheap to
//! fill), and its OTLP form, built off the request path by the exporter.
//! Attributes follow the OpenTelemetry HTTP semantic conventions, plus
//! `remora.*` for the proxy's own choices.

use super::context::{SpanId, TraceId};
use http::{HeaderValue, Method};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request as the proxy received it.
    Server,
    /// One attempt to an endpoint.
    Client,
}

/// One span, finished.
#[derive(Debug)]
pub struct SpanRecord {
    pub kind: Kind,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub trace_state: Option<HeaderValue>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub method: Method,
    /// The request target's path (server: as received; client: as sent).
    pub path: Option<http::uri::PathAndQuery>,
    /// Server: the `Host` the client asked for.
    pub host: Option<HeaderValue>,
    /// The response status; none when the proxy failed the request or
    /// attempt before one.
    pub status: Option<u16>,
    pub listener: Option<Arc<str>>,
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    pub endpoint: Option<SocketAddr>,
    /// Client: which attempt (1 = the first); server: how many were made.
    pub attempt: u32,
    /// The proxy's error cause (`remora-error`), empty when none.
    pub error: &'static str,
}

impl SpanRecord {
    pub fn to_proto(&self) -> Span {
        let mut attrs = Vec::with_capacity(12);
        attrs.push(string("http.request.method", self.method.as_str()));
        if let Some(p) = &self.path {
            attrs.push(string("url.path", p.path()));
            if let Some(q) = p.query() {
                attrs.push(string("url.query", q));
            }
        }
        if let Some(s) = self.status {
            attrs.push(int("http.response.status_code", i64::from(s)));
        }
        match self.kind {
            Kind::Server => {
                if let Some((host, port)) = self.host.as_ref().and_then(split_host) {
                    attrs.push(string("server.address", host));
                    if let Some(port) = port {
                        attrs.push(int("server.port", i64::from(port)));
                    }
                }
            }
            Kind::Client => {
                if let Some(ep) = self.endpoint {
                    attrs.push(string("server.address", &ep.ip().to_string()));
                    attrs.push(int("server.port", i64::from(ep.port())));
                    attrs.push(int(
                        "http.request.resend_count",
                        i64::from(self.attempt) - 1,
                    ));
                }
            }
        }
        let named = [
            ("remora.listener", &self.listener),
            ("remora.route", &self.route),
            ("remora.backend", &self.backend),
        ];
        for (key, value) in named {
            if let Some(v) = value {
                attrs.push(string(key, v));
            }
        }
        if let Some(ep) = self.endpoint {
            attrs.push(string("remora.endpoint", &ep.to_string()));
        }
        attrs.push(int("remora.attempts", i64::from(self.attempt)));
        let failed = !self.error.is_empty()
            || self.status.is_some_and(|s| match self.kind {
                Kind::Server => s >= 500,
                Kind::Client => s >= 400,
            });
        if !self.error.is_empty() {
            attrs.push(string("error.type", self.error));
        } else if let (true, Some(s)) = (failed, self.status) {
            attrs.push(string("error.type", &s.to_string()));
        }
        let name = match (self.kind, &self.route) {
            (Kind::Server, Some(r)) => format!("{} {r}", self.method),
            _ => self.method.to_string(),
        };
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: self
                .trace_state
                .as_ref()
                .and_then(|t| t.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            // Sampled; whether the parent is remote is known (0x100), and
            // it is for a server span with a parent (0x200).
            flags: match (self.kind, self.parent) {
                (Kind::Server, Some(_)) => 0x301,
                _ => 0x101,
            },
            name,
            kind: match self.kind {
                Kind::Server => SpanKind::Server,
                Kind::Client => SpanKind::Client,
            } as i32,
            start_time_unix_nano: self.start_ns,
            end_time_unix_nano: self.end_ns,
            attributes: attrs,
            status: failed.then(|| Status {
                message: self.error.to_string(),
                code: StatusCode::Error as i32,
            }),
            ..Span::default()
        }
    }
}

pub fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..KeyValue::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// `host[:port]` of a `Host` header, minding IPv6 literals.
fn split_host(h: &HeaderValue) -> Option<(&str, Option<u16>)> {
    let a: http::uri::Authority = h.to_str().ok()?.parse().ok()?;
    let host = h.to_str().ok()?;
    let host = &host[..a.host().len()];
    Some((
        host.trim_start_matches('[').trim_end_matches(']'),
        a.port_u16(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: Kind) -> SpanRecord {
        SpanRecord {
            kind,
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            trace_state: Some(HeaderValue::from_static("vendor=x")),
            start_ns: 10,
            end_ns: 20,
            method: Method::GET,
            path: Some("/api/items?x=1".parse().unwrap()),
            host: Some(HeaderValue::from_static("shop.example:8080")),
            status: Some(503),
            listener: Some("edge".into()),
            route: Some("api".into()),
            backend: Some("items".into()),
            endpoint: Some("127.0.0.1:9000".parse().unwrap()),
            attempt: 2,
            error: "",
        }
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_server_span_names_the_route_and_the_host() {
        let s = record(Kind::Server).to_proto();
        assert_eq!(s.name, "GET api");
        assert_eq!(s.kind, SpanKind::Server as i32);
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.trace_state, "vendor=x");
        let str_of = |k| match attr(&s, k) {
            Some(any_value::Value::StringValue(v)) => v.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(str_of("server.address"), "shop.example");
        assert_eq!(str_of("url.path"), "/api/items");
        assert_eq!(str_of("url.query"), "x=1");
        assert_eq!(str_of("remora.route"), "api");
        assert_eq!(str_of("error.type"), "503");
        assert_eq!(
            attr(&s, "http.response.status_code"),
            Some(&any_value::Value::IntValue(503))
        );
        assert_eq!(s.status.unwrap().code, StatusCode::Error as i32);
    }

    #[test]
    fn a_client_span_names_the_endpoint_and_the_retry() {
        let mut r = record(Kind::Client);
        r.status = None;
        r.error = "connect";
        let s = r.to_proto();
        assert_eq!(s.name, "GET");
        assert_eq!(
            attr(&s, "http.request.resend_count"),
            Some(&any_value::Value::IntValue(1))
        );
        assert_eq!(
            attr(&s, "error.type"),
            Some(&any_value::Value::StringValue("connect".into()))
        );
        assert_eq!(s.status.unwrap().message, "connect");
    }
}

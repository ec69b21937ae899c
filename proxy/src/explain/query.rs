//! The request to explain, from a query string (`?method=GET&host=..&
//! path=..&header=name:value`) or a JSON body, checked with a clear message
//! for each bad field. Also the query-string decoding `/tap` shares.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

/// A request as `/explain` takes it.
#[derive(Debug)]
pub struct Query {
    pub method: Method,
    /// Without port, lowercase; empty when none was given (an HTTP
    /// request needs one).
    pub host: String,
    /// The port the host named (`host=api.shop:9090`), empty if none.
    pub port: String,
    /// Without the query string.
    pub path: String,
    pub headers: HeaderMap,
    /// The listener by name; `None`: the first that serves HTTP (that
    /// forwards TCP, for `protocol=tcp`).
    pub listener: Option<String>,
    /// The caller's mesh identity (SPIFFE ID), for authorization.
    pub client_id: Option<String>,
    /// The caller's address, for authorization by network.
    pub client_addr: Option<IpAddr>,
    /// On a transparent listener: the address the client dialed (before
    /// iptables redirected it), for `match.destinations` and passthrough.
    pub destination: Option<SocketAddr>,
    /// `protocol=tcp`: explain an opaque TCP connection instead of an HTTP
    /// request; `None`: TCP on a listener that forwards only TCP, else HTTP.
    pub tcp: Option<bool>,
}

/// The JSON form: the same fields; `headers` an object of name → value.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    method: Option<String>,
    host: Option<String>,
    path: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    listener: Option<String>,
    client_id: Option<String>,
    client_addr: Option<String>,
    destination: Option<String>,
    protocol: Option<String>,
}

impl Query {
    /// From `?method=..&host=..&path=..&header=name:value&listener=..&
    /// client_id=..&client_addr=..&destination=..&protocol=http|tcp`
    /// (`format` is the caller's).
    pub fn from_query_string(qs: &str) -> Result<Query, String> {
        let mut raw = Raw::default();
        let mut headers = Vec::new();
        for (k, v) in pairs(qs)? {
            let slot = match k.as_str() {
                "method" => &mut raw.method,
                "host" => &mut raw.host,
                "path" => &mut raw.path,
                "listener" => &mut raw.listener,
                "client_id" => &mut raw.client_id,
                "client_addr" => &mut raw.client_addr,
                "destination" => &mut raw.destination,
                "protocol" => &mut raw.protocol,
                "header" => {
                    let (n, v) = v
                        .split_once(':')
                        .ok_or_else(|| format!("header `{v}`: write it as name:value"))?;
                    headers.push((n.trim().to_string(), v.trim().to_string()));
                    continue;
                }
                "format" => continue,
                other => {
                    return Err(format!(
                        "unknown parameter `{other}`; use method, host, path, header=name:value, \
                         listener, client_id, client_addr, destination, protocol, format"
                    ))
                }
            };
            *slot = Some(v);
        }
        raw.check(headers)
    }

    /// From a JSON body `{"method":..,"host":..,"path":..,"headers":{..},..}`.
    pub fn from_json(body: &[u8]) -> Result<Query, String> {
        let mut raw: Raw =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        let headers = std::mem::take(&mut raw.headers).into_iter().collect();
        raw.check(headers)
    }
}

impl Raw {
    fn check(self, header_list: Vec<(String, String)>) -> Result<Query, String> {
        let method = match self.method.as_deref() {
            None | Some("") => Method::GET,
            Some(m) => Method::from_bytes(m.as_bytes())
                .map_err(|_| format!("method `{m}` is not a valid HTTP method"))?,
        };
        let mut headers = HeaderMap::new();
        for (n, v) in header_list {
            let name = HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("header name `{n}` is not valid"))?;
            let value = HeaderValue::from_str(&v)
                .map_err(|_| format!("header `{n}`: value `{v}` is not valid"))?;
            headers.append(name, value);
        }
        let path = self.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            return Err(format!("path `{path}` must start with /"));
        }
        let path = path.split('?').next().unwrap_or("/").to_string();
        let tcp = match self.protocol.as_deref() {
            None => None,
            Some("http") => Some(false),
            Some("tcp") => Some(true),
            Some(p) => return Err(format!("protocol `{p}`: use http or tcp")),
        };
        // Required for HTTP: checked once the listener is known (an opaque
        // connection has none).
        let host = match self.host {
            Some(h) if h.is_empty() => return Err("host `` is not a valid host name".into()),
            Some(h) => h,
            None => match headers.get(http::header::HOST) {
                Some(h) => h.to_str().unwrap_or("").to_string(),
                None => String::new(),
            },
        };
        let (name, port) = crate::http::layers::route::split_authority(&host);
        if port.number(80).is_none() {
            let p = &host[name.len() + 1..];
            return Err(format!("host `{host}`: `{p}` is not a port (1 to 65535)"));
        }
        let port = host[name.len()..].trim_start_matches(':').to_string();
        let host = name.to_ascii_lowercase();
        if host.contains(['/', ' ', '?', '#']) {
            return Err(format!("host `{host}` is not a valid host name"));
        }
        let client_addr = match self.client_addr {
            Some(a) => Some(
                a.parse()
                    .map_err(|_| format!("client_addr `{a}` is not an IP address"))?,
            ),
            None => None,
        };
        if let Some(id) = &self.client_id {
            if !id.starts_with("spiffe://") {
                return Err(format!(
                    "client_id `{id}` is not a SPIFFE ID (spiffe://...)"
                ));
            }
        }
        let destination = match self.destination {
            Some(d) => Some(d.parse().map_err(|_| {
                format!("destination `{d}` is not an address (10.96.0.12:80, [fd00::12]:80)")
            })?),
            None => None,
        };
        Ok(Query {
            method,
            host,
            port,
            path,
            headers,
            listener: self.listener,
            client_id: self.client_id,
            client_addr,
            destination,
            tcp,
        })
    }
}

/// The `key=value` pairs of a query string, percent-decoded (`+` is a space).
pub fn pairs(qs: &str) -> Result<Vec<(String, String)>, String> {
    qs.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(s: &str) -> Result<String, String> {
    let bad = || format!("`{s}` is not valid percent-encoded UTF-8");
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                u8::from_str_radix(hex, 16).map_err(|_| bad())?
            }
            b => b,
        });
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_string_decodes_with_defaults() {
        let q = Query::from_query_string(
            "host=API.example.com:8080&path=%2Fv1%2Fx%3Fa%3D1&header=x-user:%20alice",
        )
        .unwrap();
        assert_eq!(q.method, Method::GET);
        assert_eq!(q.host, "api.example.com");
        assert_eq!(q.port, "8080");
        assert_eq!(q.path, "/v1/x");
        assert_eq!(q.headers["x-user"], "alice");
    }

    #[test]
    fn bad_fields_are_named() {
        let err = |qs| Query::from_query_string(qs).unwrap_err();
        assert!(err("host=a&path=x").contains("path `x`"));
        assert!(err("host=a&method=G%20T").contains("method"));
        assert!(err("host=a&header=novalue").contains("name:value"));
        assert!(err("host=a&colour=red").contains("unknown parameter `colour`"));
        assert!(err("host=a:http").contains("`http` is not a port"));
        assert!(err("host=a&protocol=udp").contains("protocol `udp`: use http or tcp"));
        assert!(err("host=a&client_addr=x").contains("client_addr"));
        assert!(err("host=a&x=%zz").contains("percent-encoded"));
    }

    #[test]
    fn json_takes_headers_as_an_object() {
        let q = Query::from_json(br#"{"host":"a","method":"POST","headers":{"x-a":"1"}}"#).unwrap();
        assert_eq!(
            (q.method, q.headers["x-a"].to_str().unwrap()),
            (Method::POST, "1")
        );
        assert!(Query::from_json(b"{\"hots\":1}")
            .unwrap_err()
            .contains("hots"));
    }
}

//! Header handling on the way through: hop-by-hop removal (RFC 9110 §7.6.1),
//! `x-forwarded-*`, and the route's configured header operations.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Header operations compiled from the config: names and values parsed once.
#[derive(Debug, Default, Clone)]
pub struct HeaderOps {
    add: Vec<(HeaderName, HeaderValue)>,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    /// Names and values were checked by validation; invalid ones are skipped.
    pub fn compile(ops: &remora_api::HeaderOps) -> Self {
        let pair = |(k, v): (&String, &String)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        };
        HeaderOps {
            add: ops.add.iter().filter_map(pair).collect(),
            set: ops.set.iter().filter_map(pair).collect(),
            remove: ops
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }

    /// Removes, then sets, then adds.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

static HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether this HTTP/1 request asks to switch protocols (e.g. WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| connection_tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")))
}

fn connection_tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    v.to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers. `TE: trailers` is kept (gRPC needs it); with
/// `upgrade`, `Connection: upgrade` and `Upgrade` are kept for the next hop.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let plain = |v: &HeaderValue| v.as_bytes() == b"keep-alive" || v.as_bytes() == b"close";
    if !headers.get_all(header::CONNECTION).iter().all(plain) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(connection_tokens)
            .filter(|t| !t.eq_ignore_ascii_case("upgrade") || !upgrade)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            if n != header::TE {
                headers.remove(n);
            }
        }
    }
    for name in &HOP_BY_HOP {
        if upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Some(te) = headers.get(header::TE) {
        let trailers = connection_tokens(te).any(|t| t.eq_ignore_ascii_case("trailers"));
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        } else {
            headers.remove(header::TE);
        }
    }
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Appends the client's address to `x-forwarded-for` and sets
/// `x-forwarded-proto` to the scheme the client used (a client's own value
/// is replaced: it cannot claim TLS it did not use).
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, tls: bool) {
    let mut value = String::with_capacity(48);
    if let Some(prev) = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        value.push_str(prev);
        value.push_str(", ");
    }
    use std::fmt::Write;
    let _ = write!(value, "{client}");
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    let proto = if tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, deflate"),
            ("traceparent", "00-abc-def-01"),
            ("b3", "abc-def-1"),
            ("transfer-encoding", "chunked"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert!(h.get("x-secret").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(h.get("traceparent").unwrap(), "00-abc-def-01");
        assert_eq!(h.get("b3").unwrap(), "abc-def-1");
    }

    #[test]
    fn upgrade_headers_survive_an_upgrade() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarded(&mut h, "127.0.0.1".parse().unwrap(), false);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(
            h.get("x-forwarded-proto").unwrap(),
            "http",
            "the client's claim is replaced"
        );
    }

    #[test]
    fn header_ops_remove_set_add() {
        let ops = remora_api::HeaderOps {
            add: [("x-a".to_string(), "2".to_string())].into(),
            set: [("x-b".to_string(), "new".to_string())].into(),
            remove: vec!["x-c".to_string()],
        };
        let mut h = map(&[("x-a", "1"), ("x-b", "old"), ("x-c", "gone")]);
        HeaderOps::compile(&ops).apply(&mut h);
        let a: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!(h.get("x-b").unwrap(), "new");
        assert!(h.get("x-c").is_none());
    }
}

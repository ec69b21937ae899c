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

/// Which of [`HOP_BY_HOP`] (bit `i` for entry `i`) and `TE` ([`TE_BIT`])
/// the message carries: one pass over its names.
fn hop_by_hop_present(headers: &HeaderMap) -> u8 {
    headers.keys().fold(0, |present, name| {
        // perf: most names are none of these, and their length says so
        // without comparing them to each (issue 12).
        if !hop_by_hop_length(name.as_str().len()) {
            return present;
        }
        if name == header::TE {
            return present | TE_BIT;
        }
        match HOP_BY_HOP.iter().position(|h| h == name) {
            Some(i) => present | 1 << i,
            None => present,
        }
    })
}

/// Whether a name this long may be one of [`HOP_BY_HOP`] or `TE`.
fn hop_by_hop_length(len: usize) -> bool {
    matches!(len, 2 | 7 | 10 | 16 | 17)
}

const TE_BIT: u8 = 1 << HOP_BY_HOP.len();
/// `Connection` is [`HOP_BY_HOP`]'s first entry.
const CONNECTION_BIT: u8 = 1;

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
    // perf: most messages carry none, and most of the rest only
    // `Connection: keep-alive`; one pass over the names finds which are
    // there, and only those are looked up again (issue 12).
    let present = hop_by_hop_present(headers);
    if !upgrade && present == 0 {
        return;
    }
    let plain = |v: &HeaderValue| v.as_bytes() == b"keep-alive" || v.as_bytes() == b"close";
    if present & CONNECTION_BIT != 0 && !headers.get_all(header::CONNECTION).iter().all(plain) {
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
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        let kept = upgrade && (name == header::CONNECTION || name == header::UPGRADE);
        if present & 1 << i != 0 && !kept {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if present & TE_BIT != 0 {
        if let Some(te) = headers.get(header::TE) {
            let trailers = connection_tokens(te).any(|t| t.eq_ignore_ascii_case("trailers"));
            if trailers {
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
            } else {
                headers.remove(header::TE);
            }
        }
    }
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// A client address as an `x-forwarded-for` value (for [`add_forwarded`]).
pub fn forwarded_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).expect("an IP address is a valid header value")
}

/// Appends the client's address (`client`, from [`forwarded_value`]) to
/// `x-forwarded-for` and sets `x-forwarded-proto` to the scheme the client
/// used (a client's own value is replaced: it cannot claim TLS it did not
/// use).
pub fn add_forwarded(headers: &mut HeaderMap, client: &HeaderValue, tls: bool) {
    use http::header::Entry;
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(e) => {
            e.insert(client.clone());
        }
        Entry::Occupied(mut e) => {
            // Every line of the chain, in order, then this client.
            let mut joined = Vec::with_capacity(64);
            let mut text = true;
            for v in e.iter() {
                text &= v.to_str().is_ok();
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(client.as_bytes());
            let value = match HeaderValue::from_bytes(&joined) {
                Ok(v) if text => v,
                _ => client.clone(), // a chain that is not text is not kept
            };
            e.insert(value);
        }
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
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = map(&[(name, "x"), ("accept", "*/*")]);
            remove_hop_by_hop(&mut h, false);
            assert!(h.get(name).is_none(), "{name} was kept");
            assert_eq!(h.len(), 1, "only {name} goes");
        }
        let mut h = map(&[("te", "gzip"), ("accept", "*/*")]);
        remove_hop_by_hop(&mut h, false);
        assert!(h.get("te").is_none(), "TE without trailers goes");
        let mut h = map(&[("accept", "*/*"), ("host", "a")]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "end-to-end headers stay");
    }

    #[test]
    fn connection_bit_names_connection() {
        assert_eq!(HOP_BY_HOP[0], header::CONNECTION, "CONNECTION_BIT is bit 0");
        for name in HOP_BY_HOP.iter().chain([&header::TE]) {
            assert!(
                hop_by_hop_length(name.as_str().len()),
                "{name}: its length is not listed"
            );
        }
    }

    #[test]
    fn a_keep_alive_response_keeps_everything_else() {
        let mut h = map(&[
            ("content-type", "text/plain"),
            ("connection", "keep-alive"),
            ("content-length", "2"),
            ("te", "trailers"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert!(h.get("connection").is_none());
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert_eq!(h.len(), 3);
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
        add_forwarded(
            &mut h,
            &forwarded_value("127.0.0.1".parse().unwrap()),
            false,
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(
            h.get("x-forwarded-proto").unwrap(),
            "http",
            "the client's claim is replaced"
        );
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, &forwarded_value("::1".parse().unwrap()), true);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "::1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        add_forwarded(&mut h, &forwarded_value("10.0.0.3".parse().unwrap()), false);
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["10.0.0.1, 10.0.0.2, 10.0.0.3"], "every line is kept");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        add_forwarded(&mut h, &forwarded_value("10.0.0.3".parse().unwrap()), false);
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["10.0.0.3"], "a chain that is not text is replaced");
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

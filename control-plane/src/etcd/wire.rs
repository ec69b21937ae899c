//! The JSON of etcd's gateway, as much of it as the etcd source uses: keys
//! and values are base64, 64-bit numbers are strings, fields at their
//! default value are left out.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

/// Bytes as base64, as the gateway takes keys and values.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The key just past every key that starts with `prefix` (etcd's
/// `range_end` for a prefix: its last byte below 0xff plus one); `[0]`
/// (every key) for an empty prefix or one of 0xff bytes only.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A 64-bit number, written as a string (or a number).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct I64(pub i64);

impl<'de> Deserialize<'de> for I64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<I64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(i64),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(I64(n)),
            Either::S(s) => s.parse().map(I64).map_err(serde::de::Error::custom),
        }
    }
}

/// Base64 bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct B64(pub Bytes);

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<B64, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(|v| B64(Bytes::from(v)))
            .map_err(serde::de::Error::custom)
    }
}

impl B64 {
    /// The key as text (etcd keys are bytes; ours are UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Header {
    #[serde(default)]
    pub revision: I64,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Kv {
    pub key: B64,
    #[serde(default)]
    pub value: B64,
    #[serde(default)]
    pub mod_revision: I64,
}

#[derive(Debug, Deserialize)]
pub struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<Kv>,
}

/// One line of a watch: a response, or the error that ended it.
#[derive(Debug, Deserialize)]
pub struct WatchLine {
    pub result: Option<WatchResponse>,
    pub error: Option<StreamError>,
}

#[derive(Debug, Deserialize)]
pub struct StreamError {
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct WatchResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    /// Set when the revision asked for is compacted away (the watch is
    /// then canceled).
    #[serde(default)]
    pub compact_revision: I64,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
pub struct Event {
    /// `PUT` (left out: the default) or `DELETE`.
    #[serde(default, rename = "type")]
    pub kind: String,
    pub kv: Kv,
}

impl Event {
    pub fn is_delete(&self) -> bool {
        self.kind == "DELETE"
    }
}

/// An error answer.
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// A transaction: if every compare holds, the `success` operations, all at
/// one revision.
#[derive(Debug, Default, Serialize)]
pub struct TxnRequest {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<serde_json::Value>,
    pub success: Vec<serde_json::Value>,
}

impl TxnRequest {
    /// Holds if no key under `prefix` was written after `revision` (a new
    /// key or a change; a deletion is not seen).
    pub fn unchanged_since(&mut self, prefix: &str, revision: i64) {
        self.compare.push(serde_json::json!({
            "result": "LESS", "target": "MOD", "key": b64(prefix), "range_end": b64(prefix_end(prefix)),
            "mod_revision": (revision + 1).to_string(),
        }));
    }

    pub fn put(&mut self, key: &str, value: &str) {
        self.success.push(serde_json::json!({
            "request_put": { "key": b64(key), "value": b64(value) }
        }));
    }

    pub fn delete(&mut self, key: &str) {
        self.success.push(serde_json::json!({
            "request_delete_range": { "key": b64(key) }
        }));
    }
}

#[derive(Debug, Deserialize)]
pub struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        let cases: [(&str, &[u8]); 4] = [
            ("/remora/", b"/remora0"),
            ("a", b"b"),
            ("", b"\0"),
            ("/\u{e9}", b"/\xc3\xaa"),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), end, "{prefix:?}");
        }
    }

    #[test]
    fn a_watch_line_decodes() {
        let line = r#"{"result":{"header":{"revision":"4"},"events":[
            {"kv":{"key":"L3IvYQ==","mod_revision":"3","value":"eA=="}},
            {"type":"DELETE","kv":{"key":"L3IvYg==","mod_revision":"4"}}]}}"#;
        let msg: WatchLine = serde_json::from_str(line).unwrap();
        let r = msg.result.unwrap();
        assert_eq!(r.header.revision, I64(4));
        assert_eq!(r.events[0].kv.key.text(), "/r/a");
        assert_eq!(&r.events[0].kv.value.0[..], b"x");
        assert!(!r.events[0].is_delete() && r.events[1].is_delete());
        let canceled = r#"{"result":{"header":{},"canceled":true,"compact_revision":"4"}}"#;
        let r = serde_json::from_str::<WatchLine>(canceled)
            .unwrap()
            .result
            .unwrap();
        assert!(r.canceled);
        assert_eq!(r.compact_revision, I64(4));
    }
}

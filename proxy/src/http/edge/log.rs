//! The request headers a listener shows in its access log: chosen by name
//! (`edge.log_headers`), a value marked sensitive (`edge.sensitive_headers`
//! and the defaults, marked by tower-http's `SetSensitiveRequestHeaders`)
//! shown as `[redacted]`.

use http::{HeaderMap, HeaderName};
use std::fmt::Write;

/// `name=value` pairs, space-separated, in `names` order; absent headers
/// are left out, repeated ones joined with `,`.
pub fn logged_headers(names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut out = String::new();
    for name in names {
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{name}=");
        for (i, v) in values.enumerate() {
            if i > 0 {
                out.push(',');
            }
            if v.is_sensitive() {
                out.push_str("[redacted]");
            } else {
                out.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn sensitive_values_are_redacted_and_absent_ones_left_out() {
        let mut h = HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_static("curl/8"));
        let mut secret = HeaderValue::from_static("Bearer s3cret");
        secret.set_sensitive(true);
        h.insert("authorization", secret);
        h.append("x-tag", HeaderValue::from_static("a"));
        h.append("x-tag", HeaderValue::from_static("b"));
        let names =
            ["user-agent", "authorization", "x-missing", "x-tag"].map(HeaderName::from_static);
        assert_eq!(
            logged_headers(&names, &h),
            "user-agent=curl/8 authorization=[redacted] x-tag=a,b"
        );
    }
}

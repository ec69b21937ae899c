//! W3C Trace Context (`traceparent`): parsing what a request brings and
//! writing what the proxy sends on. Pure, table-tested.
//!
//! `traceparent: 00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>`;
//! bit 0 of the flags is "sampled".

use http::HeaderValue;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// The parent a request names in its `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// Parses a `traceparent` value. `None` for anything the spec says to
/// ignore: a wrong length or shape, upper-case hex, version `ff`, an
/// all-zero trace or span id. A version above `00` is read as `00` (its
/// first 55 bytes), as the spec asks.
pub fn parse(value: &HeaderValue) -> Option<Parent> {
    let v = value.as_bytes();
    if v.len() < 55 {
        return None;
    }
    let version = hex_byte(&v[0..2])?;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
    }
    let mut span_id = [0u8; 8];
    for (i, b) in span_id.iter_mut().enumerate() {
        *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&v[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// The `traceparent` naming `span_id` of trace `trace_id` as the parent.
pub fn format(trace_id: &TraceId, span_id: &SpanId, sampled: bool) -> HeaderValue {
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    hex_into(trace_id, &mut out[3..35]);
    out[35] = b'-';
    hex_into(span_id, &mut out[36..52]);
    out[52] = b'-';
    out[53] = b'0';
    out[54] = if sampled { b'1' } else { b'0' };
    HeaderValue::from_bytes(&out).expect("hex and dashes are a valid header value")
}

/// Lower-case hex of `id`, for logs and tests.
pub fn hex(id: &[u8]) -> String {
    let mut out = vec![0u8; id.len() * 2];
    hex_into(id, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// A random, non-zero trace id.
pub fn new_trace_id(rng: &mut fastrand::Rng) -> TraceId {
    loop {
        let id = rng.u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

/// A random, non-zero span id.
pub fn new_span_id(rng: &mut fastrand::Rng) -> SpanId {
    rng.u64(1..).to_be_bytes()
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn p(s: &str) -> Option<Parent> {
        parse(&HeaderValue::from_str(s).unwrap())
    }

    #[test]
    fn reads_the_spec_example() {
        let parent = p(GOOD).unwrap();
        assert_eq!(hex(&parent.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&parent.span_id), "00f067aa0ba902b7");
        assert!(parent.sampled);
        assert!(!p(&GOOD.replace("-01", "-00")).unwrap().sampled);
        // Other flag bits do not matter.
        assert!(p(&GOOD.replace("-01", "-03")).unwrap().sampled);
    }

    #[test]
    fn ignores_what_the_spec_says_to_ignore() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_span = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        for bad in [
            "",
            "garbage",
            &GOOD[..54],
            &format!("{GOOD}-extra"),
            &GOOD.replace("4bf9", "4BF9"),
            &GOOD.replacen("00-", "ff-", 1),
            &GOOD.replace('-', "_"),
            zero_trace,
            zero_span,
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_as_version_00() {
        let v = format!("{}-more", GOOD.replacen("00-", "01-", 1));
        assert!(p(&v).is_some());
        assert_eq!(p(&GOOD.replacen("00-", "01-", 1)), p(GOOD));
    }

    #[test]
    fn format_round_trips() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (t, s) = (new_trace_id(&mut rng), new_span_id(&mut rng));
        for sampled in [true, false] {
            let v = format(&t, &s, sampled);
            assert_eq!(v.len(), 55);
            assert_eq!(
                parse(&v),
                Some(Parent {
                    trace_id: t,
                    span_id: s,
                    sampled
                })
            );
        }
    }
}

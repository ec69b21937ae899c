//! A human-written duration (`250ms`, `10s`, `5m`, `1h`) for config files.
//!
//! A bad value is reported at its own field, with a message that says what
//! is wrong and, where it can, what to write instead
//! (`"1.5s": fractions are not allowed; write 1500ms`). The value is read
//! through a serde visitor so that the YAML deserializer marks the error
//! with the field's path and line (an error raised after the value was
//! read would be marked at the enclosing mapping).

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A duration written in a config as a number and a unit: `ms`, `s`, `m` or `h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

/// Units, largest first, with their length in milliseconds.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse(s).map_err(|why| format!("{s:?}: {why}"))
    }
}

/// What is wrong with a duration, without the value (the caller quotes it).
fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty; write a number and a unit, like 250ms or 10s".into());
    }
    if t.starts_with('-') {
        return Err("must not be negative".into());
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim_start();
    if num.is_empty() {
        return Err("no number; write a number and a unit, like 250ms or 10s".into());
    }
    if unit.is_empty() && num.contains('.') {
        return Err("no unit; write a whole number and a unit, like 250ms or 10s".into());
    }
    if unit.is_empty() {
        return Err(format!("no unit; write {num}ms, {num}s, {num}m or {num}h"));
    }
    let Some(&(_, unit_ms)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!("unknown unit `{unit}`; use ms, s, m or h"));
    };
    if num.contains('.') {
        return Err(fraction(num, unit_ms));
    }
    let n: u64 = num.parse().map_err(|_| too_large())?;
    let ms = n.checked_mul(unit_ms).ok_or_else(too_large)?;
    Ok(Duration(std::time::Duration::from_millis(ms)))
}

fn too_large() -> String {
    "too large; the longest duration is about 584 million years, in ms".into()
}

/// The message for `1.5s`: fractions are refused, and the same duration in
/// a smaller unit is suggested when it is whole there.
fn fraction(num: &str, unit_ms: u64) -> String {
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = frac.len() as u32;
    let exact = (|| {
        if frac.contains('.') || digits > 9 {
            return None;
        }
        let scale = 10u64.pow(digits);
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let frac: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        // The value in ms, times `scale`.
        let scaled = whole
            .checked_mul(scale)?
            .checked_add(frac)?
            .checked_mul(unit_ms)?;
        // The largest smaller unit it is whole in.
        UNITS
            .iter()
            .filter(|(_, ms)| *ms < unit_ms)
            .find(|(_, ms)| scaled % (ms * scale) == 0)
            .map(|(u, ms)| format!("{}{u}", scaled / (ms * scale)))
    })();
    match exact {
        Some(d) => format!("fractions are not allowed; write {d}"),
        None => "fractions are not allowed; write a whole number of ms, s, m or h".into(),
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Visit)
    }
}

/// Reads the value where it is written, so its errors carry its position.
struct Visit;

impl de::Visitor<'_> for Visit {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration like 250ms, 10s, 5m or 1h")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        v.parse().map_err(E::custom)
    }

    // A YAML number (`timeout: 10`, `timeout: 1.5`): quoted back with the
    // same advice as the text would get.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        self.visit_str(&v.to_string())
    }
}

#[cfg(test)]
mod tests;

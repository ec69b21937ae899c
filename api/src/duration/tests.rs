use super::*;

#[test]
fn good_values() {
    for (text, ms) in [
        ("250ms", 250),
        ("10s", 10_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        (" 2s ", 2000),
        ("0s", 0),
    ] {
        let d: Duration = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(d.get().as_millis(), ms, "{text}");
    }
}

#[test]
fn every_kind_of_bad_value_says_what_to_write() {
    for (text, want) in [
        ("1.5s", r#""1.5s": fractions are not allowed; write 1500ms"#),
        ("0.5m", r#""0.5m": fractions are not allowed; write 30s"#),
        ("1.5h", r#""1.5h": fractions are not allowed; write 90m"#),
        (".25s", r#"".25s": fractions are not allowed; write 250ms"#),
        (
            "1.5ms",
            r#""1.5ms": fractions are not allowed; write a whole number of ms, s, m or h"#,
        ),
        (
            "1.0001s",
            r#""1.0001s": fractions are not allowed; write a whole number of ms, s, m or h"#,
        ),
        ("10x", r#""10x": unknown unit `x`; use ms, s, m or h"#),
        ("10sec", r#""10sec": unknown unit `sec`; use ms, s, m or h"#),
        ("10", r#""10": no unit; write 10ms, 10s, 10m or 10h"#),
        (
            "1.5",
            r#""1.5": no unit; write a whole number and a unit, like 250ms or 10s"#,
        ),
        (
            "",
            r#""": empty; write a number and a unit, like 250ms or 10s"#,
        ),
        (
            "s",
            r#""s": no number; write a number and a unit, like 250ms or 10s"#,
        ),
        ("-1s", r#""-1s": must not be negative"#),
        (
            "99999999999999999999s",
            r#""99999999999999999999s": too large; the longest duration is about 584 million years, in ms"#,
        ),
        (
            "9999999999999999h",
            r#""9999999999999999h": too large; the longest duration is about 584 million years, in ms"#,
        ),
    ] {
        let got = text.parse::<Duration>().expect_err(text);
        assert_eq!(got, want, "{text}");
    }
}

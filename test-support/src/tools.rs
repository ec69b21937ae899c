//! The real command-line tools tests drive (installed by
//! `scripts/install-test-deps.sh`).

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Fails the test unless `tool` is on PATH.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is not installed: run scripts/install-test-deps.sh"
    );
}

/// Asserts that `promtool check metrics` accepts `metrics` (Prometheus text).
pub fn promtool_accepts(metrics: &str) {
    require("promtool");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(metrics.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GETs `url` with `curl`, sending `accept` as the Accept header; returns
/// the response's Content-Type and body. Panics unless the status is 200.
pub fn curl_with_accept(url: &str, accept: &str) -> (String, String) {
    require("curl");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-D", "/dev/stderr"])
        .args(["-H", &format!("accept: {accept}"), url])
        .output()
        .expect("run curl");
    let head = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && head.starts_with("HTTP/1.1 200"),
        "curl {url}: {head}"
    );
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (
        content_type,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The content type a doc page gives for `/metrics`: the first backticked
/// `text/plain...` on the line of its `/metrics` row.
pub fn documented_metrics_content_type(doc: &str) -> String {
    doc.lines()
        .filter(|l| l.starts_with("| `/metrics`"))
        .find_map(|l| {
            let start = l.find("`text/plain")? + 1;
            let end = start + l[start..].find('`')?;
            Some(l[start..end].to_string())
        })
        .expect("the doc's /metrics row names a text/plain content type")
}

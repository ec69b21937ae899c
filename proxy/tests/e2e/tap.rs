//! Tap end to end: a real proxy and upstream; `/tap` opened with curl and
//! with `remora-proxy tap`, requests sent with curl, lines checked.

use crate::explain::curl;
use crate::{bin, start};
use remora_test_support::tools::require;
use remora_test_support::Upstream;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(10);

fn config(up: &Upstream, dead: std::net::SocketAddr) -> String {
    crate::config(
        "      - name: users\n        match: { path: { prefix: /users } }\n        backends: [{ name: app }]\n      - name: dead\n        match: { path: { prefix: /dead } }\n        backends: [{ name: gone }]",
        &format!(
            "  - name: app\n    endpoints: [{{ address: {} }}]\n  - name: gone\n    endpoints: [{{ address: {dead} }}]",
            up.addr()
        ),
    )
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .expect("read")
        .expect("not the end")
}

async fn get(listener: std::net::SocketAddr, path: &str) -> u16 {
    curl(vec![
        format!("http://{listener}{path}"),
        "-o".into(),
        "/dev/null".into(),
    ])
    .await
    .0
}

async fn exits(mut child: Child) -> bool {
    let status = tokio::time::timeout(WAIT, child.wait()).await;
    status.is_ok_and(|s| s.is_ok_and(|s| s.success()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_taps_requests_as_ndjson_and_the_stream_ends_at_its_limit() {
    require("curl");
    let up = Upstream::start("app").await;
    let dead = Upstream::start("gone").await.kill().await;
    let proxy = start(&config(&up, dead)).await;
    let url = format!("http://{}/tap?limit=3&seconds=30", proxy.admin());
    let mut child = Command::new("curl")
        .args(["-sN", "-i", "--max-time", "30", &url])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run curl");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Headers, then the opening line: from then on the stream is subscribed.
    while !next_line(&mut lines).await.trim().is_empty() {}
    let opening = next_line(&mut lines).await;
    assert_eq!(opening, r#"{"tapping":{"limit":3,"seconds":30}}"#);
    let edge = proxy.listener("edge");
    assert_eq!(get(edge, "/users/7?secret=1").await, 200);
    assert_eq!(get(edge, "/nowhere").await, 404);
    assert_eq!(get(edge, "/dead").await, 502);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let line = next_line(&mut lines).await;
        seen.push(serde_json::from_str::<Value>(&line).expect("a JSON line"));
    }
    let ok = &seen[0];
    assert_eq!(
        (&ok["listener"], &ok["route"], &ok["backend"]),
        (
            &Value::from("edge"),
            &Value::from("users"),
            &Value::from("app")
        )
    );
    assert_eq!(ok["endpoint"], up.addr().to_string());
    assert_eq!(
        (&ok["method"], &ok["path"]),
        (&Value::from("GET"), &Value::from("/users/7"))
    );
    assert_eq!(
        (ok["status"].as_u64(), ok["error"].as_str()),
        (Some(200), Some(""))
    );
    assert!(ok["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(seen[1]["error"], "no-route");
    assert_eq!(
        (seen[2]["status"].as_u64(), seen[2]["route"].as_str()),
        (Some(502), Some("dead"))
    );
    assert_eq!(seen[2]["error"], "connect-failed", "{}", seen[2]);
    assert!(exits(child).await, "the stream ends after 3 lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_only_what_its_filter_asks_for() {
    let up = Upstream::start("app").await;
    let dead = Upstream::start("gone").await.kill().await;
    let proxy = start(&config(&up, dead)).await;
    let admin = proxy.admin().to_string();
    let mut child = Command::new(bin())
        .args([
            "tap",
            "--admin",
            &admin,
            "--status",
            "5xx",
            "--limit",
            "1",
            "--seconds",
            "30",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run remora-proxy tap");
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = tokio::time::timeout(WAIT, err.next_line()).await;
    let started = started.expect("in time").expect("read").unwrap_or_default();
    assert!(started.starts_with("tapping"), "{started}");
    let edge = proxy.listener("edge");
    for _ in 0..3 {
        assert_eq!(get(edge, "/users/1").await, 200);
    }
    assert_eq!(get(edge, "/dead/x").await, 502);
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = next_line(&mut out).await;
    assert!(line.starts_with("edge dead/gone GET "), "{line}");
    assert!(line.contains("/dead/x -> 502"), "{line}");
    assert!(line.ends_with("error=connect-failed"), "{line}");
    assert!(exits(child).await, "the CLI ends after its one line");

    // A bad filter is the proxy's clear 400, and a failing exit.
    let out = Command::new(bin())
        .args(["tap", "--admin", &admin, "--status", "teapot"])
        .output()
        .await
        .expect("run remora-proxy tap");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("status `teapot`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_the_edge_answers_is_tapped_too() {
    require("curl");
    let up = Upstream::start("app").await;
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: web
    address: 127.0.0.1:0
    edge: {{ cors: {{ allowed_origins: ['*'] }} }}
    routes:
      - name: users
        backends: [{{ name: app }}]
backends:
  - name: app
    endpoints: [{{ address: {} }}]
",
        up.addr()
    );
    let proxy = start(&yaml).await;
    let url = format!("http://{}/tap?limit=1&seconds=30", proxy.admin());
    let mut child = Command::new("curl")
        .args(["-sN", "--max-time", "30", &url])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run curl");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let opening = next_line(&mut lines).await;
    assert!(opening.contains("tapping"), "{opening}");
    let (status, _) = curl(vec![
        "-X".into(),
        "OPTIONS".into(),
        "-H".into(),
        "origin: https://app.example.com".into(),
        "-H".into(),
        "access-control-request-method: GET".into(),
        format!("http://{}/users/7", proxy.listener("web")),
    ])
    .await;
    assert_eq!(status, 200);
    let line = next_line(&mut lines).await;
    let seen: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(
        (&seen["method"], &seen["route"], &seen["backend"]),
        (
            &Value::from("OPTIONS"),
            &Value::from("users"),
            &Value::from("")
        ),
        "{line}"
    );
    assert_eq!(seen["status"], 200, "{line}");
    assert_eq!(up.requests(), 0, "answered by the proxy");
    assert!(exits(child).await, "the stream ends after 1 line");
}

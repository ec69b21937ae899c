//! A stand-in for the `remora` binary with the same command line and log
//! shape, so test-support's own tests can exercise
//! [`ProxyProcess`](remora_test_support::ProxyProcess) without the real proxy:
//!
//! `fake-proxy run --config <path> --log-format json`
//!
//! It binds an admin server and one listener named `edge` (both test
//! upstreams, so `GET /ready` answers 200), logs them as JSON lines on stdout,
//! logs `config reloaded` on SIGHUP and exits 0 on SIGTERM. A config containing
//! `fail: true` makes it exit 2 before binding anything.

use anyhow::Context as _;
use remora_test_support::Upstream;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

fn log(message: &str, fields: serde_json::Value) {
    let mut line = json!({"timestamp": "1970-01-01T00:00:00Z", "level": "INFO", "message": message, "target": "fake_proxy"});
    if let (Some(line), Some(fields)) = (line.as_object_mut(), fields.as_object()) {
        line.extend(fields.clone());
    }
    println!("{line}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.get(1).map(String::as_str) == Some("run"),
        "usage: fake-proxy run --config PATH"
    );
    let config = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .context("--config PATH is required")?;
    let yaml = std::fs::read_to_string(config).with_context(|| format!("read {config}"))?;
    if yaml.contains("fail: true") {
        eprintln!("fake-proxy: refusing config {config}");
        std::process::exit(2);
    }
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;

    let edge = Upstream::start("edge").await;
    let admin = Upstream::start("admin").await;
    log(
        "listener bound",
        json!({"listener": "edge", "address": edge.addr().to_string()}),
    );
    log("admin bound", json!({"address": admin.addr().to_string()}));
    eprintln!(
        "fake-proxy: started, RUST_LOG={}",
        std::env::var("RUST_LOG").unwrap_or_default()
    );

    loop {
        tokio::select! {
            _ = hup.recv() => log("config reloaded", json!({"config": config})),
            _ = term.recv() => {
                log("draining", json!({}));
                return Ok(());
            }
        }
    }
}

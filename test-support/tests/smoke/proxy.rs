//! The proxy harness driven against `fake-proxy`: readiness, addresses from
//! JSON logs, stderr capture, signals, config rewrite, RSS, and start-up
//! failure carrying the logs.

use std::path::Path;
use std::time::Duration;

use remora_test_support::client;
use remora_test_support::proxy::{tempdir, ProxyProcess};

const FAKE: &str = env!("CARGO_BIN_EXE_fake-proxy");
const SECS: Duration = Duration::from_secs(5);

#[tokio::test]
async fn harness_drives_the_process_lifecycle() {
    let dir = tempdir();
    std::fs::write(dir.path().join("extra.pem"), "x").unwrap();
    let mut proxy = ProxyProcess::start_in(dir, Path::new(FAKE), "listeners: []\n")
        .await
        .unwrap();
    assert!(proxy.dir().join("extra.pem").exists());
    assert_eq!(proxy.admin_get("/ready").await.0, 200);
    assert!(!proxy.metrics().await.is_empty());
    let edge = client::get(&format!("http://{}/", proxy.listener("edge"))).await;
    assert_eq!(edge.upstream(), Some("edge"));
    assert!(proxy.try_listener("nope").is_none());

    proxy
        .wait_for_log("RUST_LOG=info,remora=debug", SECS)
        .await
        .unwrap();
    assert!(proxy
        .logs_json()
        .iter()
        .any(|l| l["message"] == "admin bound"));
    assert!(proxy.rss_kib() > 0);

    proxy.write_config("listeners: [edge]\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(proxy.config_path()).unwrap(),
        "listeners: [edge]\n"
    );
    for _ in 0..2 {
        let mark = proxy.log_mark();
        proxy.signal("HUP").unwrap();
        proxy
            .wait_for_log_where(mark, |l| l.contains("config reloaded"), SECS)
            .await
            .unwrap();
    }
    proxy.signal("SIGTERM").unwrap();
    let status = proxy.wait_exit(SECS).await.expect("exits on SIGTERM");
    assert!(status.success());
    assert!(proxy.signal("TERM").is_err());
}

#[tokio::test]
async fn failed_start_reports_the_logs() {
    let err = ProxyProcess::start(Path::new(FAKE), "fail: true\n")
        .await
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("refusing config"), "{msg}");
}

//! How a real sidecar retries its control plane: while nothing listens at
//! the address it keeps trying at most a second apart (so it is back within
//! about a second of the control plane's return); a control plane that
//! answers and refuses gets the longer backoff. Read from the proxy's
//! `subscription to the control plane failed` log lines (`unreachable`,
//! `retry_in_ms`: the wait it chose), not from the clock.

use super::*;
use remora_test_support::{ProxyProcess, Upstream};

const FAILED: &str = "subscription to the control plane failed; retrying";

/// Service `api` and the workloads listed, each calling `api`.
fn mesh(api: &Upstream, workloads: &[&str]) -> String {
    let mut yaml = format!(
        "services:\n  - name: api\n    endpoints: [{{ address: {} }}]\nworkloads:\n",
        api.addr()
    );
    for w in workloads {
        yaml.push_str(&format!(
            "  - name: {w}\n    outbound: 127.0.0.1:0\n    calls: [api]\n"
        ));
    }
    yaml
}

/// The proxy's failed-subscription lines so far.
fn failures(proxy: &ProxyProcess) -> Vec<Value> {
    proxy
        .logs_json()
        .into_iter()
        .filter(|l| l["message"] == FAILED)
        .collect()
}

/// Waits until `pred` holds for the failed-subscription lines.
async fn wait_failures(proxy: &ProxyProcess, what: &str, pred: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = failures(proxy);
        if pred(&lines) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_control_plane_is_retried_at_most_a_second_apart() {
    let api = Upstream::start("api").await;
    let cp = ControlPlane::start(&mesh(&api, &["web"])).await;
    let web = ProxyProcess::start_sidecar(&proxy_bin(), cp.listen, "web", &[])
        .await
        .unwrap();
    let listen = cp.kill().await;

    // The lost subscription may log a failure too (the stream broke), then
    // refused connects: the ceiling doubles from 200 ms and stops at 1 s
    // (4th refusal on); six of them take at most 3.4 s.
    let unreachable = |l: &Value| l["unreachable"] == true;
    wait_failures(&web, "six refused connects", |l| {
        l.iter().filter(|l| unreachable(l)).count() >= 6
    })
    .await;
    let lines = failures(&web);
    let refused: Vec<&Value> = lines.iter().filter(|l| unreachable(l)).collect();
    assert!(lines.len() - refused.len() <= 1, "{lines:#?}");
    for l in &refused {
        let wait = l["retry_in_ms"].as_u64().unwrap();
        assert!(wait < 1000, "a wait past the 1 s cap: {l}");
    }
    let sixth = refused[5]["retry_in_ms"].as_u64().unwrap();
    assert!(
        sixth >= 500,
        "the 6th wait is half to all of 1 s: {}",
        refused[5]
    );

    // Back, but without the workload: it answers 404. That is a refusal,
    // not an outage: the backoff goes on past 1 s (5-10 s after 6+ failures).
    let _cp = ControlPlane::start_at(&mesh(&api, &["batch"]), listen).await;
    let before = lines.len();
    wait_failures(&web, "a refused subscription", |l| {
        l[before..].iter().any(|l| l["unreachable"] == false)
    })
    .await;
    let answered = failures(&web)
        .into_iter()
        .skip(before)
        .find(|l| l["unreachable"] == false)
        .unwrap();
    let error = answered["error"].as_str().unwrap();
    assert!(error.contains("404"), "{answered}");
    let wait = answered["retry_in_ms"].as_u64().unwrap();
    assert!(
        wait >= 5000,
        "a refusal backs off past the 1 s cap: {answered}"
    );
}

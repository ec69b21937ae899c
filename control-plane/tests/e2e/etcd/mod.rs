//! The etcd source against a real etcd (Debian's `etcd-server`): each test
//! starts its own etcd on free loopback ports with its own data directory
//! (killed by its child handle), loads meshes with the real `etcd import`
//! command or `etcdctl`, and runs the real control plane (`run --etcd`)
//! with real `remora-proxy` sidecars where a proxy must apply a change.

mod harness;

use super::*;
use harness::{free_port, Etcd, Relay};
use remora_test_support::{Load, ProxyProcess, Upstream};

/// Service `api` routes to `target` (`api-v1` → upstream `a`, `api-v2` →
/// `b`); workload `web` calls `api`.
fn mesh(a: &Upstream, b: &Upstream, target: &str) -> String {
    format!(
        "services:
  - name: api
    routes:
      - name: main
        backends: [{{ name: {target} }}]
  - name: api-v1
    endpoints: [{{ address: {a} }}]
  - name: api-v2
    endpoints: [{{ address: {b} }}]
workloads:
  - name: web
    outbound: 127.0.0.1:0
    calls: [api]
",
        a = a.addr(),
        b = b.addr()
    )
}

async fn control_plane(etcd: &Etcd) -> ControlPlane {
    ControlPlane::start_etcd(&["--etcd", &etcd.url()]).await
}

fn version(status: &Value) -> String {
    status["mesh"]["version"].as_str().unwrap().to_string()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn applied(cp: &ControlPlane) -> f64 {
    metric(
        &cp.metrics().await,
        "remora_cp_mesh_reloads_total{result=\"applied\"}",
    )
}

/// Waits until the control plane has logged `needle`.
async fn wait_log(cp: &ControlPlane, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !cp.logs().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "never logged {needle:?}; logs:\n{}",
            cp.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn in_sync(status: &Value, n: usize) -> bool {
    let ps = status["proxies"].as_array().unwrap();
    ps.len() == n && ps.iter().all(|p| p["in_sync"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_mesh_is_served_and_a_change_reaches_the_proxy() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let etcd = Etcd::start().await;
    // Started on an empty store: no mesh yet, so not ready.
    let cp = control_plane(&etcd).await;
    let empty = cp
        .wait_status("the empty prefix", |s| s["mesh"]["rejected_at"].is_string())
        .await;
    assert!(
        empty["mesh"]["problems"]
            .to_string()
            .contains("etcd /remora/: no mesh keys"),
        "{empty:#}"
    );
    let (status, body) = cp.get("/ready").await;
    assert_eq!((status, body.as_str()), (503, "starting\n"));

    let out = etcd.import(&mesh(&a, &b, "api-v1"));
    assert!(out.contains("5 written, 0 deleted"), "{out}");
    let first = cp
        .wait_status("the imported mesh", |s| {
            s["services"].as_array().unwrap().len() == 3
        })
        .await;
    assert_eq!(
        first["services"],
        serde_json::json!(["api", "api-v1", "api-v2"])
    );
    assert_eq!(cp.get("/ready").await.0, 200);
    assert!(first["mesh"]["path"]
        .as_str()
        .unwrap()
        .starts_with("etcd http://127.0.0.1:"));

    let web = ProxyProcess::start_sidecar(&proxy_bin(), cp.listen, "web", &[])
        .await
        .unwrap();
    cp.wait_status("web in sync", |s| in_sync(s, 1)).await;
    let load = Load::start(web.listener("outbound"), Some("api"), 2);
    load.wait_for_upstream("a").await;

    // Importing again changes one key: a new version, applied by the proxy.
    let out = etcd.import(&mesh(&a, &b, "api-v2"));
    assert!(out.contains("1 written, 0 deleted, 4 unchanged"), "{out}");
    load.wait_for_upstream("b").await;
    let tally = load.finish().await;
    assert_eq!(tally.failures, 0, "{tally:?}");
    let second = cp
        .wait_status("the change applied", |s| {
            s["mesh"]["version"] != first["mesh"]["version"] && in_sync(s, 1)
        })
        .await;
    assert_ne!(version(&second), version(&first));
    let m = web.metrics().await;
    assert_eq!(
        metric(&m, "remora_config_reloads_total{result=\"applied\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(applied(&cp).await, 2.0);

    // `etcd export` prints the mesh back, which `check` accepts.
    let out = std::process::Command::new(bin())
        .args(["etcd", "export", "--etcd", &etcd.url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let exported = String::from_utf8(out.stdout).unwrap();
    let mesh = remora_control_plane::mesh::parse(&exported).unwrap();
    assert_eq!(mesh.services[0].routes[0].backends[0].name, "api-v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_is_rejected_at_its_name_and_the_last_good_mesh_stays() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let etcd = Etcd::start().await;
    etcd.import(&mesh(&a, &b, "api-v1"));
    let cp = control_plane(&etcd).await;
    let good = cp
        .wait_status("the mesh", |s| s["services"].as_array().unwrap().len() == 3)
        .await;

    // `etcd import` checks the file first: an invalid one writes nothing.
    let revision = etcd.revision();
    let (ok, out) = etcd.import_with("services: [{name: Bad}]\n", &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("services[0].name"), "{out}");
    assert_eq!(etcd.revision(), revision);

    etcd.ctl(&[
        "put",
        "/remora/services/api-v1",
        "endpoints: [{address: 127.0.0.1:1}]\nconnect_timeout: soon\n",
    ]);
    let rejected = cp
        .wait_status("the rejection", |s| s["mesh"]["rejected_at"].is_string())
        .await;
    let problems = rejected["mesh"]["problems"].to_string();
    // The key, then the field's own path, as for an entry in a file.
    assert!(
        problems.contains("etcd /remora/services/api-v1: connect_timeout: \\\"soon\\\": no number"),
        "{problems}"
    );
    assert_eq!(version(&rejected), version(&good));

    // A key deleted that another one needs: rejected too, at the key that
    // needs it.
    etcd.ctl(&[
        "put",
        "/remora/services/api-v1",
        "endpoints: [{address: 127.0.0.1:1}]",
    ]);
    etcd.ctl(&["del", "/remora/services/api"]);
    let rejected = cp
        .wait_status("the missing service", |s| {
            s["mesh"]["problems"]
                .to_string()
                .contains("workloads/web: calls[0]")
        })
        .await;
    assert_eq!(version(&rejected), version(&good));
    let m = cp.metrics().await;
    assert!(
        metric(&m, "remora_cp_mesh_reloads_total{result=\"rejected\"}") >= 2.0,
        "{m}"
    );
    assert_eq!(applied(&cp).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_watch_reads_again_without_a_spurious_version() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let etcd = Etcd::start().await;
    etcd.import(&mesh(&a, &b, "api-v1"));
    let relay = Relay::start(format!("127.0.0.1:{}", etcd.client_port).parse().unwrap()).await;
    let cp = ControlPlane::start_etcd(&["--etcd", &format!("http://{}", relay.addr)]).await;
    let first = cp
        .wait_status("the mesh", |s| s["services"].as_array().unwrap().len() == 3)
        .await;

    // Cut off, the key changes and changes back, and the history is
    // compacted: the control plane's watch cannot resume where it was.
    relay.set(false);
    wait_log(&cp, "etcd: watch lost").await;
    let key = "/remora/services/api-v1";
    let value = etcd.ctl(&["get", key, "--print-value-only"]);
    etcd.ctl(&["put", key, "endpoints: [{address: 127.0.0.1:9}]"]);
    etcd.ctl(&["put", key, value.trim_end()]);
    etcd.ctl(&["compact", &etcd.revision().to_string()]);
    relay.set(true);
    wait_log(&cp, "reading every key again").await;
    // Watching again, after the re-read.
    let deadline = Instant::now() + WAIT;
    let watching_after_reread = |logs: String| {
        let at = logs.rfind("reading every key again").unwrap();
        logs[at..].contains("etcd: watching")
    };
    while !watching_after_reread(cp.logs()) {
        assert!(
            Instant::now() < deadline,
            "no new watch; logs:\n{}",
            cp.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Read again and found as it was: nothing published.
    let after = cp
        .wait_status("etcd read again", |s| {
            s["mesh"]["problems"] == serde_json::json!([])
        })
        .await;
    assert_eq!(version(&after), version(&first));
    assert_eq!(applied(&cp).await, 1.0);

    // Cut off again, a real change and a compaction: it arrives by the
    // re-read.
    let lost = cp.logs().matches("etcd: watch lost").count();
    relay.set(false);
    let deadline = Instant::now() + WAIT;
    while cp.logs().matches("etcd: watch lost").count() == lost {
        assert!(
            Instant::now() < deadline,
            "the cut was not seen; logs:\n{}",
            cp.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    etcd.ctl(&["put", key, "endpoints: [{address: 127.0.0.1:9}]"]);
    etcd.ctl(&["compact", &etcd.revision().to_string()]);
    relay.set(true);
    let changed = cp
        .wait_status("the change", |s| {
            s["mesh"]["version"] != first["mesh"]["version"]
        })
        .await;
    assert_eq!(applied(&cp).await, 2.0);

    // And the watch goes on from there.
    etcd.ctl(&["put", key, value.trim_end()]);
    cp.wait_status("the next change", |s| {
        s["mesh"]["version"] != changed["mesh"]["version"]
    })
    .await;
    assert_eq!(applied(&cp).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_on_one_etcd_serve_the_same_versions() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let etcd = Etcd::start().await;
    etcd.import(&mesh(&a, &b, "api-v1"));
    let one = control_plane(&etcd).await;
    // The second is given a member that is down first: it moves on to the
    // next.
    let urls = format!("http://127.0.0.1:{},{}", free_port(), etcd.url());
    let two = ControlPlane::start_etcd(&["--etcd", &urls]).await;
    let same = |s1: &Value, s2: &Value| {
        s1["mesh"]["version"] == s2["mesh"]["version"] && s1["workloads"] == s2["workloads"]
    };
    let s1 = one
        .wait_status("the mesh", |s| s["services"].as_array().unwrap().len() == 3)
        .await;
    let s2 = two.wait_status("the same mesh", |s| same(s, &s1)).await;
    assert!(same(&s1, &s2));

    etcd.import(&mesh(&a, &b, "api-v2"));
    let s1 = one.wait_status("the change", |s| !same(s, &s1)).await;
    two.wait_status("the same change", |s| same(s, &s1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_etcd_is_down_the_last_mesh_serves_and_changes_resume_after() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let mut etcd = Etcd::start().await;
    etcd.import(&mesh(&a, &b, "api-v1"));
    let cp = control_plane(&etcd).await;
    let web = ProxyProcess::start_sidecar(&proxy_bin(), cp.listen, "web", &[])
        .await
        .unwrap();
    let first = cp.wait_status("web in sync", |s| in_sync(s, 1)).await;

    etcd.kill().await;
    wait_log(&cp, "etcd: watch lost").await;
    // Still ready, still the same mesh; a new proxy still gets it.
    assert_eq!(cp.get("/ready").await.0, 200);
    let _web2 = ProxyProcess::start_sidecar(&proxy_bin(), cp.listen, "web", &[])
        .await
        .unwrap();
    cp.wait_status("both in sync", |s| in_sync(s, 2)).await;
    let load = Load::start(web.listener("outbound"), Some("api"), 1);
    load.wait_for_upstream("a").await;
    let (_, body) = cp.get("/status").await;
    let down: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(version(&down), version(&first));

    // A control plane started now has no mesh: it starts, not ready.
    let late = control_plane(&etcd).await;
    wait_log(&late, "etcd: cannot read the mesh").await;
    assert_eq!(late.get("/ready").await, (503, "starting\n".to_string()));

    // Back on the same data: the watch resumes and the next change arrives.
    assert!(
        etcd.run().await,
        "etcd did not restart; log:\n{}",
        etcd.log()
    );
    late.wait_status("the mesh, late", |s| {
        s["mesh"]["version"] == first["mesh"]["version"]
    })
    .await;
    assert_eq!(late.get("/ready").await.0, 200);
    etcd.import(&mesh(&a, &b, "api-v2"));
    load.wait_for_upstream("b").await;
    let tally = load.finish().await;
    assert_eq!(tally.failures, 0, "{tally:?}");
    cp.wait_status("both in sync on the change", |s| {
        s["mesh"]["version"] != first["mesh"]["version"] && in_sync(s, 2)
    })
    .await;
    assert_eq!(applied(&cp).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let ca = remora_test_support::tls::TestCa::new("etcd test CA");
    let etcd = Etcd::start_tls(&ca).await;
    let dir = tempdir();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();
    let (cert, key) = ca.issue_client("remora").write_to(dir.path(), "remora");
    let (ca_file, cert, key) = (
        ca_file.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );

    // Without a client certificate etcd refuses; with one the import works.
    let (ok, out) = etcd.import_with(&mesh(&a, &b, "api-v1"), &["--etcd-ca", &ca_file]);
    assert!(!ok, "{out}");
    let tls = [
        "--etcd-ca",
        &ca_file,
        "--etcd-cert",
        &cert,
        "--etcd-key",
        &key,
    ];
    let (ok, out) = etcd.import_with(&mesh(&a, &b, "api-v1"), &tls);
    assert!(ok, "{out}");

    let url = etcd.url();
    let mut args = vec!["--etcd", &url];
    args.extend(tls);
    let cp = ControlPlane::start_etcd(&args).await;
    let first = cp
        .wait_status("the mesh over TLS", |s| {
            s["services"].as_array().unwrap().len() == 3
        })
        .await;
    etcd.ctl(&[
        "put",
        "/remora/services/api-v1",
        "endpoints: [{address: 127.0.0.1:9}]",
    ]);
    cp.wait_status("a change over TLS", |s| {
        s["mesh"]["version"] != first["mesh"]["version"]
    })
    .await;
}

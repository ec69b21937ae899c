//! The whole flow with real processes: the control plane, two or three
//! `remora-proxy` sidecars subscribed to it, and test upstreams, all on
//! loopback. Traffic goes through each proxy's `outbound` listener to the
//! service `api`, whose route sends it to `api-v1` (upstream `a`) or `api-v2`
//! (upstream `b`), so a test sees from `x-upstream` which snapshot served a
//! request.

use super::*;
use remora_test_support::load::Tally;
use remora_test_support::{Load, ProxyProcess, Upstream};
use std::ffi::OsStr;

/// Workloads `web` and `batch` both call `api`, whose one route goes to
/// the service `target`.
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
  - name: batch
    outbound: 127.0.0.1:0
    calls: [api]
",
        a = a.addr(),
        b = b.addr()
    )
}

async fn sidecar(cp: SocketAddr, workload: &str, extra: &[&OsStr]) -> ProxyProcess {
    ProxyProcess::start_sidecar(&proxy_bin(), cp, workload, extra)
        .await
        .unwrap()
}

/// Two clients through each proxy, calling `api`.
fn load_all(proxies: &[&ProxyProcess]) -> Vec<Load> {
    proxies
        .iter()
        .map(|p| Load::start(p.listener("outbound"), Some("api"), 2))
        .collect()
}

async fn wait_all(loads: &[Load], upstream: &str) {
    for l in loads {
        l.wait_for_upstream(upstream).await;
    }
}

async fn finish_all(loads: Vec<Load>) -> Vec<Tally> {
    let mut tallies = Vec::new();
    for l in loads {
        tallies.push(l.finish().await);
    }
    for t in &tallies {
        assert_eq!(t.failures, 0, "requests failed: {tallies:?}");
        assert!(t.total > 20, "too little traffic ran: {tallies:?}");
    }
    tallies
}

fn proxies(status: &Value) -> &Vec<Value> {
    status["proxies"].as_array().unwrap()
}

/// Every one of `n` proxies applied the snapshot it was last sent.
fn all_in_sync(status: &Value, n: usize) -> bool {
    let ps = proxies(status);
    ps.len() == n
        && ps
            .iter()
            .all(|p| p["in_sync"] == true && p["applied"] == p["sent"])
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_change_reaches_every_proxy_without_failing_a_request() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let cp = ControlPlane::start(&mesh(&a, &b, "api-v1")).await;
    // Two replicas of web and one batch: three proxies.
    let web1 = sidecar(cp.listen, "web", &[]).await;
    let web2 = sidecar(cp.listen, "web", &[]).await;
    let batch = sidecar(cp.listen, "batch", &[]).await;
    cp.wait_status("three proxies in sync", |s| all_in_sync(s, 3))
        .await;

    let loads = load_all(&[&web1, &web2, &batch]);
    wait_all(&loads, "a").await;
    cp.write_mesh(&mesh(&a, &b, "api-v2"));
    wait_all(&loads, "b").await;
    let status = cp
        .wait_status("the change applied everywhere", |s| all_in_sync(s, 3))
        .await;
    finish_all(loads).await;

    // Each proxy says which version it serves; the control plane agrees.
    for p in [&web1, &web2, &batch] {
        let m = p.metrics().await;
        assert_eq!(
            metric(&m, "remora_config_reloads_total{result=\"applied\"}"),
            2.0,
            "{m}"
        );
        assert_eq!(metric(&m, "remora_control_plane_connected"), 1.0, "{m}");
    }
    let web_versions: Vec<&Value> = proxies(&status)
        .iter()
        .filter(|p| p["workload"] == "web")
        .map(|p| &p["applied"])
        .collect();
    assert_eq!(web_versions.len(), 2);
    assert_eq!(web_versions[0], web_versions[1]);
    let m = cp.metrics().await;
    assert!(
        metric(&m, "remora_cp_convergence_seconds_count") >= 3.0,
        "{m}"
    );
    // The change travelled as deltas, which the proxies applied.
    assert_eq!(
        metric(
            &m,
            "remora_cp_pushes_total{kind=\"delta\",workload=\"web\"}"
        ),
        2.0,
        "{m}"
    );
    let logs = web1.logs();
    assert!(
        logs.iter().any(|l| l.contains("delta applied")),
        "{logs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_mesh_is_rejected_and_proxies_keep_their_config() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let good = mesh(&a, &b, "api-v1");
    let cp = ControlPlane::start(&good).await;
    let web = sidecar(cp.listen, "web", &[]).await;
    let before = cp.wait_status("web in sync", |s| all_in_sync(s, 1)).await;
    let load = Load::start(web.listener("outbound"), Some("api"), 2);
    load.wait_for_upstream("a").await;

    // Traffic moved to b, but in a mesh with a bad service name: none of it
    // is applied.
    let broken = good
        .replace("api-v1 }]", "api-v2 }]")
        .replace("workloads:", "  - name: Bad_Name\nworkloads:");
    cp.write_mesh(&broken);
    let status = cp
        .wait_status("the rejection", |s| s["mesh"]["rejected_at"].is_string())
        .await;
    let problems = status["mesh"]["problems"].to_string();
    assert!(
        problems.contains("services[3].name") && problems.contains("lowercase DNS name"),
        "{problems}"
    );
    load.wait_for_requests(200).await;
    assert_eq!(load.last_upstream(), "a");
    let tally = load.finish().await;
    assert_eq!(tally.failures, 0, "{tally:?}");
    let after = cp.wait_status("web in sync", |s| all_in_sync(s, 1)).await;
    assert_eq!(
        proxies(&after)[0]["applied"],
        proxies(&before)[0]["applied"]
    );
    let m = cp.metrics().await;
    assert_eq!(
        metric(&m, "remora_cp_mesh_reloads_total{result=\"rejected\"}"),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_proxy_cannot_apply_is_nacked_and_shown_on_status() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let good = mesh(&a, &b, "api-v1");
    let cp = ControlPlane::start(&good).await;
    let web = sidecar(cp.listen, "web", &[]).await;
    let before = cp.wait_status("web in sync", |s| all_in_sync(s, 1)).await;
    let applied = proxies(&before)[0]["applied"].clone();

    // Valid for the control plane, but a running proxy cannot move its
    // listener without a restart: it must say no, and keep serving.
    let moved = good.replacen("outbound: 127.0.0.1:0", "outbound: 127.0.0.1:1", 1);
    cp.write_mesh(&moved.replace("api-v1 }]", "api-v2 }]"));
    let status = cp
        .wait_status("the NACK", |s| proxies(s)[0]["rejected"].is_string())
        .await;
    let p = &proxies(&status)[0];
    assert_eq!(p["workload"], "web");
    assert_eq!(p["rejected"], p["sent"]);
    assert_eq!(p["applied"], applied);
    assert_eq!(p["in_sync"], false);
    let errors = p["errors"].to_string();
    assert!(errors.contains("needs a restart"), "{errors}");
    assert!(
        p["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("listeners")),
        "{p}"
    );

    // The proxy still serves its last good snapshot, and says it rejected one.
    let rsp = Request::new("GET", &format!("http://{}/", web.listener("outbound")))
        .header("host", "api")
        .send()
        .await;
    assert_eq!((rsp.status, rsp.upstream()), (200, Some("a")));
    let m = web.metrics().await;
    assert_eq!(
        metric(&m, "remora_config_reloads_total{result=\"rejected\"}"),
        1.0,
        "{m}"
    );
    let m = cp.metrics().await;
    assert_eq!(
        metric(&m, "remora_cp_nacks_total{workload=\"web\"}"),
        1.0,
        "{m}"
    );

    // Fixed in the mesh: the next snapshot is applied and clears the NACK.
    cp.write_mesh(&good.replace("api-v1 }]", "api-v2 }]"));
    let status = cp.wait_status("web in sync", |s| all_in_sync(s, 1)).await;
    assert_eq!(proxies(&status)[0]["rejected"], Value::Null);
    let rsp = Request::new("GET", &format!("http://{}/", web.listener("outbound")))
        .header("host", "api")
        .send()
        .await;
    assert_eq!((rsp.status, rsp.upstream()), (200, Some("b")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_ride_out_a_control_plane_restart_and_resync() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let cp = ControlPlane::start(&mesh(&a, &b, "api-v1")).await;
    let web = sidecar(cp.listen, "web", &[]).await;
    let batch = sidecar(cp.listen, "batch", &[]).await;
    cp.wait_status("two proxies in sync", |s| all_in_sync(s, 2))
        .await;
    let loads = load_all(&[&web, &batch]);
    wait_all(&loads, "a").await;

    let listen = cp.kill().await;
    for p in [&web, &batch] {
        p.wait_for_log_where(
            0,
            |l| {
                l.contains("subscription to the control plane failed")
                    || l.contains("closed the subscription")
            },
            WAIT,
        )
        .await
        .unwrap();
    }
    for l in &loads {
        l.wait_for_requests(200).await;
    }
    for p in [&web, &batch] {
        let m = p.metrics().await;
        assert_eq!(metric(&m, "remora_control_plane_connected"), 0.0, "{m}");
        let (ready, _) = p.admin_get("/ready").await;
        assert_eq!(ready, 200, "a proxy with a snapshot stays ready");
    }

    // Back, on the same address, with a changed mesh: both re-sync to it.
    let cp = ControlPlane::start_at(&mesh(&a, &b, "api-v2"), listen).await;
    wait_all(&loads, "b").await;
    cp.wait_status("two proxies in sync", |s| all_in_sync(s, 2))
        .await;
    finish_all(loads).await;
    for p in [&web, &batch] {
        let m = p.metrics().await;
        assert_eq!(metric(&m, "remora_control_plane_connected"), 1.0, "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_restarted_while_the_control_plane_is_down_serves_from_its_cache() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let cp = ControlPlane::start(&mesh(&a, &b, "api-v2")).await;
    let cache_dir = tempdir();
    let cache = cache_dir.path().join("web.snapshot.json");
    let args = [OsStr::new("--snapshot-cache"), cache.as_os_str()];
    let mut web = sidecar(cp.listen, "web", &args).await;
    cp.wait_status("web in sync", |s| all_in_sync(s, 1)).await;
    assert!(cache.exists(), "the applied snapshot is cached");

    let listen = cp.kill().await;
    web.signal("TERM").unwrap();
    assert!(web.wait_exit(WAIT).await.is_some_and(|s| s.success()));

    // The control plane is still down: the new proxy starts from the cache.
    let web = sidecar(listen, "web", &args).await;
    web.wait_for_log("serving the cached snapshot", WAIT)
        .await
        .unwrap();
    let load = Load::start(web.listener("outbound"), Some("api"), 2);
    load.wait_for_upstream("b").await;
    load.wait_for_requests(200).await;
    let tally = load.finish().await;
    assert_eq!(tally.failures, 0, "{tally:?}");
    let m = web.metrics().await;
    assert_eq!(metric(&m, "remora_control_plane_connected"), 0.0, "{m}");

    // Without a cache, a proxy that cannot reach its control plane is not ready.
    let err = ProxyProcess::start_sidecar(&proxy_bin(), listen, "web", &[])
        .await
        .err()
        .expect("no snapshot, so never ready");
    assert!(err.to_string().contains("not ready"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_prefers_the_control_plane_to_its_cache() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let cp = ControlPlane::start(&mesh(&a, &b, "api-v1")).await;
    let cache_dir = tempdir();
    let cache = cache_dir.path().join("web.snapshot.json");
    let args = [OsStr::new("--snapshot-cache"), cache.as_os_str()];
    let mut web = sidecar(cp.listen, "web", &args).await;
    cp.wait_status("web in sync", |s| all_in_sync(s, 1)).await;
    web.signal("TERM").unwrap();
    assert!(web.wait_exit(WAIT).await.is_some_and(|s| s.success()));

    // While it was down the route moved to b: the restarted proxy serves
    // the control plane's snapshot, not its cache's.
    cp.write_mesh(&mesh(&a, &b, "api-v2"));
    cp.wait_status("the new mesh", |s| s["mesh"]["rejected_at"].is_null())
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let web = sidecar(cp.listen, "web", &args).await;
    let rsp = Request::new("GET", &format!("http://{}/", web.listener("outbound")))
        .header("host", "api")
        .send()
        .await;
    assert_eq!((rsp.status, rsp.upstream()), (200, Some("b")));
    assert!(!web
        .logs()
        .iter()
        .any(|l| l.contains("serving the cached snapshot")));

    // The proxy serves its admin on --admin, whatever the mesh says, and a
    // changed `admin` field in the mesh is no reason to refuse a snapshot.
    let (_, config) = web.admin_get("/config").await;
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["config"]["admin"]["address"],
        web.admin().to_string().as_str(),
        "{config}"
    );
    let before = cp.wait_status("web in sync", |s| all_in_sync(s, 1)).await;
    let before = proxies(&before)[0]["applied"].clone();
    // Only `admin` changes (the first workload is web).
    cp.write_mesh(&mesh(&a, &b, "api-v2").replacen(
        "    outbound: 127.0.0.1:0\n",
        "    outbound: 127.0.0.1:0\n    admin: 127.0.0.1:1\n",
        1,
    ));
    let status = cp
        .wait_status("the admin change applied", |s| {
            all_in_sync(s, 1) && proxies(s)[0]["applied"] != before
        })
        .await;
    assert_eq!(proxies(&status)[0]["rejected"], Value::Null, "{status}");
}

/// The control plane's `/metrics` answers what docs/control-plane.md says,
/// also to a client that prefers OpenMetrics, and promtool accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_content_type_is_the_documented_one() {
    use remora_test_support::tools::{
        curl_with_accept, documented_metrics_content_type, promtool_accepts,
    };
    let documented =
        documented_metrics_content_type(include_str!("../../../docs/control-plane.md"));
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let cp = ControlPlane::start(&mesh(&a, &b, "api-v1")).await;
    let url = format!("http://{}/metrics", cp.admin);
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (content_type, body) = tokio::task::spawn_blocking(move || curl_with_accept(&url, accept))
        .await
        .unwrap();
    assert_eq!(content_type, documented);
    promtool_accepts(&body);
}

/// `--admin-allow-remote-changes` reaches the sidecar's running config (the
/// control plane never sets it); without the flag it stays off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_flag_allows_remote_admin_changes() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let cp = ControlPlane::start(&mesh(&a, &b, "api-v1")).await;
    let open = sidecar(
        cp.listen,
        "web",
        &[OsStr::new("--admin-allow-remote-changes")],
    )
    .await;
    let closed = sidecar(cp.listen, "batch", &[]).await;
    cp.wait_status("both in sync", |s| all_in_sync(s, 2)).await;
    for (proxy, want) in [(&open, true), (&closed, false)] {
        let (status, body) = proxy.admin_get("/config").await;
        assert_eq!(status, 200, "{body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        let got = json["config"]["admin"]["allow_remote_changes"].as_bool();
        assert_eq!(got.unwrap_or(false), want, "{body}");
        // From 127.0.0.1 a change is allowed either way.
        let url = format!("http://{}/log-level", proxy.admin());
        let rsp = Request::new("PUT", &url).body("info").send().await;
        assert_eq!(rsp.status, 200, "{}", rsp.text());
    }
}

//! The snapshot stream end to end: first snapshot, ACK, a mesh change pushed
//! and NACKed, all of it visible on `/status` and `/metrics`; replicas; an
//! unknown workload; a rejected mesh.

use super::*;
use remora_test_support::tools::promtool_accepts;

fn proxies(status: &Value) -> &Vec<Value> {
    status["proxies"].as_array().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_then_nack_shows_on_status_and_metrics() {
    let cp = ControlPlane::start(MESH).await;
    let mut web = Subscriber::connect(cp.listen, &hello("web", None))
        .await
        .unwrap();
    let v1 = web.next(WAIT).await.expect("a first snapshot at once");
    assert_eq!(v1.version.len(), 16);
    let config = v1.config.as_ref().expect("a whole snapshot first");
    let outbound = &config.listeners[0];
    assert_eq!(
        (outbound.name.as_str(), outbound.address.port()),
        ("outbound", 4140)
    );
    assert_eq!(outbound.routes[0].matches.hosts, ["api", "api.local"]);
    web.answer(&Ack::Ack {
        version: v1.version.clone(),
    })
    .await;
    cp.wait_status("the ACK", |s| {
        proxies(s)[0]["applied"] == v1.version.as_str()
    })
    .await;

    // api moves: web's snapshot changes and is pushed, as a delta from v1.
    cp.write_mesh(&MESH.replace("127.0.0.1:7002", "127.0.0.1:17002"));
    let v2 = web.next(WAIT).await.expect("the changed snapshot");
    assert_ne!(v2.version, v1.version);
    assert_eq!(v2.base.as_deref(), Some(v1.version.as_str()));
    let delta = v2.delta.as_ref().expect("a delta");
    assert_eq!(delta.backends.len(), 1, "{delta:?}");
    assert_eq!(delta.backends[0].name, "api");
    assert_eq!(delta.backends[0].endpoints[0].address.port(), 17002);
    assert!(delta.routes.is_empty() && delta.remove_backends.is_empty());
    let error = "backends[0]: the test says no";
    let nack = Ack::Nack {
        version: v2.version.clone(),
        errors: vec![error.into()],
    };
    web.answer(&nack).await;
    // A NACKed delta: the proxy may not hold its base, so v2 comes whole.
    let whole = web.next(WAIT).await.expect("v2 again, whole");
    assert_eq!(whole.version, v2.version);
    let config = whole.config.as_ref().expect("whole");
    assert_eq!(config.backends[0].endpoints[0].address.port(), 17002);
    // NACKed whole too: nothing more is sent.
    web.answer(&nack).await;
    assert!(web.next(Duration::from_millis(300)).await.is_none());

    let status = cp
        .wait_status("the NACK", |s| {
            proxies(s)[0]["rejected"] == v2.version.as_str()
        })
        .await;
    let p = &proxies(&status)[0];
    assert_eq!(p["workload"], "web");
    assert_eq!(p["identity"], "spiffe://test/web");
    assert_eq!(p["sent"], v2.version.as_str());
    assert_eq!(p["applied"], v1.version.as_str());
    assert_eq!(p["errors"], serde_json::json!([error]));
    assert_eq!(p["last_error"], error);
    assert_eq!(p["in_sync"], false);
    assert!(p["id"].as_u64().is_some());
    assert!(p["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{p}");
    assert!(p["connected_since"].as_str().unwrap().ends_with('Z'));
    assert_eq!(status["workloads"]["web"]["version"], v2.version.as_str());
    assert_eq!(status["workloads"]["web"]["proxies"], 1);
    assert_eq!(status["workloads"]["api"]["proxies"], 0);
    assert_eq!(
        status["services"],
        serde_json::json!(["web", "api", "api-canary", "users"])
    );
    assert_eq!(status["mesh"]["version"].as_str().unwrap().len(), 16);
    assert!(status["mesh"]["problems"].as_array().unwrap().is_empty());

    let metrics = cp.metrics().await;
    for family in [
        "remora_cp_connected_proxies 1",
        "remora_cp_pushes_total{kind=\"snapshot\",workload=\"web\"} 2",
        "remora_cp_pushes_total{kind=\"delta\",workload=\"web\"} 1",
        "remora_cp_acks_total 1",
        "remora_cp_nacks_total{workload=\"web\"} 2",
        "remora_cp_push_bytes_count 3",
        "remora_cp_convergence_seconds_count 1",
        "remora_cp_mesh_reloads_total{result=\"applied\"} 2",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    promtool_accepts(&metrics);

    drop(web);
    cp.wait_status("the proxy gone", |s| proxies(s).is_empty())
        .await;
    assert!(cp.metrics().await.contains("remora_cp_connected_proxies 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_has_the_version_waits_for_the_next_one() {
    let cp = ControlPlane::start(MESH).await;
    let mut a = Subscriber::connect(cp.listen, &hello("web", None))
        .await
        .unwrap();
    let v1 = a.next(WAIT).await.unwrap();
    let mut b = Subscriber::connect(cp.listen, &hello("web", Some(&v1.version)))
        .await
        .unwrap();
    assert!(
        b.next(Duration::from_millis(700)).await.is_none(),
        "b already has it"
    );
    let status = cp
        .wait_status("two replicas", |s| proxies(s).len() == 2)
        .await;
    let (pa, pb) = (&proxies(&status)[0], &proxies(&status)[1]);
    assert_ne!(pa["id"], pb["id"]);
    assert_eq!(pb["applied"], v1.version.as_str(), "from its Hello");
    assert_eq!(pb["sent"], Value::Null);
    assert_eq!(pb["in_sync"], true);
    assert_eq!(status["workloads"]["web"]["proxies"], 2);

    // A change that touches only `api`'s snapshot is not pushed to web.
    cp.write_mesh(&MESH.replace("127.0.0.1:7005", "127.0.0.1:17005"));
    cp.wait_status("the new mesh", |s| {
        s["mesh"]["version"] != status["mesh"]["version"]
    })
    .await;
    assert!(a.next(Duration::from_millis(300)).await.is_none());

    cp.write_mesh(&MESH.replace("127.0.0.1:7003", "127.0.0.1:17003"));
    let va = a.next(WAIT).await.unwrap();
    let vb = b.next(WAIT).await.unwrap();
    // Both get the same delta: b's Hello said it had v1.
    assert_eq!(va, vb);
    assert_ne!(va.version, v1.version);
    assert_eq!(va.base.as_deref(), Some(v1.version.as_str()));

    // An invalid mesh is rejected; nothing is pushed, the last good one stays.
    cp.write_mesh("services:\n  - name: Bad\n");
    let status = cp
        .wait_status("the rejection", |s| {
            !s["mesh"]["problems"].as_array().unwrap().is_empty()
        })
        .await;
    let problem = status["mesh"]["problems"][0].as_str().unwrap();
    assert!(problem.contains("services[0].name"), "{problem}");
    assert_eq!(status["workloads"]["web"]["version"], va.version.as_str());
    assert!(a.next(Duration::from_millis(300)).await.is_none());
    let metrics = cp.metrics().await;
    assert!(
        metrics.contains("remora_cp_mesh_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(cp.logs().contains("mesh rejected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_workload_is_refused_with_404() {
    let cp = ControlPlane::start(MESH).await;
    let Err((status, body)) = Subscriber::connect(cp.listen, &hello("nope", None)).await else {
        panic!("subscribed as an unknown workload");
    };
    assert_eq!(status, 404);
    assert!(body.contains("unknown workload `nope`"), "{body}");
    assert!(body.contains("api, web"), "{body}");
    let (status, _) = cp.get("/ready").await;
    assert_eq!(status, 200);
    assert!(proxies(&cp.wait_status("no proxy", |_| true).await).is_empty());
}

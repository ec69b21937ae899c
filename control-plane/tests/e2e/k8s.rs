//! The Kubernetes source against a fake API server on loopback
//! ([`super::fake_kube`]): the initial lists become a mesh, a watch event a
//! new version, an expired watch (an ERROR 410 event, or HTTP 410) a relist
//! that publishes nothing when nothing changed, and the change made while
//! expired once relisted; two replicas publish the same versions; the real
//! binary with `--kubernetes` and KUBECONFIG serves a subscriber.

use super::fake_kube::{
    fixture, Expiry, FakeKube, HTTPROUTES, PODS, SERVICES, SERVICE_POLICIES, SLICES,
};
use super::*;
use remora_api::mesh::Mesh;
use remora_control_plane::k8s::translate::Options;
use remora_control_plane::metrics::Metrics;
use remora_control_plane::source::{Generation, MeshSource};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

async fn cluster() -> FakeKube {
    FakeKube::start(&[
        (SERVICES, "services.json"),
        (SLICES, "endpointslices.json"),
        (PODS, "pods.json"),
        (HTTPROUTES, "httproutes.json"),
    ])
    .await
}

/// One control plane's Kubernetes source, in process.
struct Replica {
    source: Arc<MeshSource>,
    metrics: Arc<Metrics>,
    gens: watch::Receiver<Arc<Generation>>,
    ready: Arc<AtomicBool>,
    _stop: watch::Sender<bool>,
}

impl Replica {
    fn start(fake: &FakeKube) -> Replica {
        let metrics = Metrics::new();
        let roots = vec!["ROOT".to_string()];
        let source = Arc::new(MeshSource::new(
            "kubernetes".into(),
            &Mesh::default(),
            roots,
            metrics.clone(),
        ));
        let (stop, stop_rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let opts = Options {
            cluster_domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            mtls: true,
            tracing: None,
        };
        tokio::spawn(remora_control_plane::k8s::watch::run(
            fake.client(),
            opts,
            source.clone(),
            move || flag.store(true, Ordering::SeqCst),
            stop_rx,
        ));
        Replica {
            gens: source.subscribe(),
            source,
            metrics,
            ready,
            _stop: stop,
        }
    }

    fn applied(&self) -> u64 {
        self.reloads("applied")
    }

    fn reloads(&self, result: &str) -> u64 {
        self.metrics.mesh_reloads.with_label_values(&[result]).get()
    }

    /// Waits (bounded) for a generation that satisfies `pred`.
    async fn wait(&mut self, what: &str, pred: impl Fn(&Generation) -> bool) -> Arc<Generation> {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let g = self.gens.borrow_and_update().clone();
                if pred(&g) {
                    return g;
                }
                self.gens.changed().await.unwrap();
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("never published {what}"))
    }

    async fn synced(&mut self) -> Arc<Generation> {
        let g = self
            .wait("the synced mesh", |g| !g.services.is_empty())
            .await;
        let ready = self.ready.clone();
        until("ready after the first sync", || {
            ready.load(Ordering::SeqCst)
        })
        .await;
        g
    }
}

/// The endpoints of backend `name` in workload `w`'s snapshot.
fn endpoints(g: &Generation, w: &str, name: &str) -> Vec<(String, Option<String>)> {
    let config = g.snapshots[w].snapshot.config();
    let backend = config.backends.iter().find(|b| b.name == name).unwrap();
    backend
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.identity.clone()))
        .collect()
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_lists_give_services_endpoints_and_meshed_workloads() {
    let fake = cluster().await;
    let mut r = Replica::start(&fake);
    assert!(!r.ready.load(Ordering::SeqCst));
    let g = r.synced().await;
    assert_eq!(g.services, ["api.shop", "kubernetes.default", "web.shop"]);
    let workloads: Vec<&String> = g.snapshots.keys().collect();
    assert_eq!(workloads, ["api.shop", "web.shop"]);
    assert_eq!(
        g.identities["web.shop"],
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    // Only the ready pod, with its workload's identity.
    assert_eq!(
        endpoints(&g, "web.shop", "api.shop"),
        [(
            "10.244.1.17:8080".to_string(),
            Some("spiffe://cluster.local/ns/shop/sa/api".to_string())
        )]
    );
    let config = g.snapshots["web.shop"].snapshot.config();
    let outbound = &config.listeners[0];
    assert_eq!(outbound.address.to_string(), "127.0.0.1:4140");
    let route = outbound
        .routes
        .iter()
        .find(|r| r.name == "api.shop.api-v1-0")
        .expect("the HTTPRoute's route");
    assert_eq!(route.timeout, Some(remora_api::Duration::from_secs(2)));
    // Called by its ClusterIP (a short name resolves to it): the same route.
    let cluster_ip: std::net::SocketAddr = "10.96.12.40:80".parse().unwrap();
    assert_eq!(route.matches.destinations, [cluster_ip]);
    let inbound = &config.listeners[1];
    assert_eq!(inbound.address.to_string(), "0.0.0.0:4143");
    // The empty start, then the cluster: GRPCRoutes and the CRDs are not
    // installed (404) and read as empty.
    until("the applied count", || r.applied() == 2).await;
    assert!(r.source.status.load().left_out.is_empty());
    assert_eq!(fake.lists(SERVICES), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_event_publishes_a_new_version() {
    let fake = cluster().await;
    let mut r = Replica::start(&fake);
    let first = r.synced().await;
    fake.apply(SLICES, fixture("endpointslice-api-scaled.json"), false);
    let next = r
        .wait("the second api endpoint", |g| {
            g.mesh_version != first.mesh_version
        })
        .await;
    assert_eq!(endpoints(&next, "web.shop", "api.shop").len(), 2);
    assert_ne!(
        next.snapshots["web.shop"].version,
        first.snapshots["web.shop"].version
    );
    until("the applied count", || r.applied() == 3).await;
    assert_eq!(fake.lists(SLICES), 1, "followed by the watch, no relist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_no_pod_is_ready_the_terminating_ones_that_serve_take_the_calls() {
    let fake = cluster().await;
    let mut r = Replica::start(&fake);
    let first = r.synced().await;
    let addresses = |g: &Generation| -> Vec<String> {
        endpoints(g, "web.shop", "api.shop")
            .into_iter()
            .map(|(a, _)| a)
            .collect()
    };
    // Two ready pods.
    let mut slice = fixture("endpointslice-api-scaled.json");
    fake.apply(SLICES, slice.clone(), false);
    let two = r
        .wait("two endpoints", |g| g.mesh_version != first.mesh_version)
        .await;
    assert_eq!(addresses(&two), ["10.244.1.17:8080", "10.244.2.23:8080"]);
    // A rollout: both terminate, one still serving, and no new pod is ready
    // yet. Rather than no endpoint at all, the one that serves.
    slice["endpoints"][0]["conditions"] =
        json!({"ready": false, "serving": true, "terminating": true});
    slice["endpoints"][1]["conditions"] =
        json!({"ready": false, "serving": false, "terminating": true});
    fake.apply(SLICES, slice.clone(), false);
    let rolling = r
        .wait("the rollout's slice", |g| {
            g.mesh_version != two.mesh_version
        })
        .await;
    assert_eq!(addresses(&rolling), ["10.244.1.17:8080"]);
    // A pod ready again (the second address, reused): it alone.
    slice["endpoints"][1]["conditions"] =
        json!({"ready": true, "serving": true, "terminating": false});
    fake.apply(SLICES, slice, false);
    let done = r
        .wait("a ready pod", |g| g.mesh_version != rolling.mesh_version)
        .await;
    assert_eq!(addresses(&done), ["10.244.2.23:8080"]);
}

async fn expired_watch_relists_without_a_new_version(how: Expiry) {
    let fake = cluster().await;
    let mut r = Replica::start(&fake);
    let first = r.synced().await;
    until("the watch of EndpointSlices", || fake.watches(SLICES) >= 1).await;
    until("the applied count", || r.applied() == 2).await;
    let watches = fake.watches(SLICES);
    let unchanged = r.reloads("unchanged");
    fake.expire(SLICES, how);
    // The relist, then a watch from its version.
    until("the relist", || fake.lists(SLICES) == 2).await;
    // An ERROR event ends the watch: relist, watch. An HTTP 410 answers
    // the watch that resumes the ended one: then relist, watch.
    let after = match how {
        Expiry::ErrorEvent => watches + 1,
        Expiry::HttpGone => watches + 2,
    };
    until("the watch after the relist", || {
        fake.watches(SLICES) >= after
    })
    .await;
    // The mesh rebuilt from the relist is the one served.
    until("the rebuild after the relist", || {
        r.reloads("unchanged") > unchanged
    })
    .await;
    assert_eq!(r.gens.borrow().mesh_version, first.mesh_version);
    assert_eq!(r.applied(), 2);
    // A change after the relist is the next version: nothing came between.
    fake.apply(SLICES, fixture("endpointslice-api-scaled.json"), false);
    let next = r
        .wait("the change after the relist", |g| {
            g.mesh_version != first.mesh_version
        })
        .await;
    assert_eq!(endpoints(&next, "web.shop", "api.shop").len(), 2);
    until("the applied count", || r.applied() >= 3).await;
    assert_eq!(r.applied(), 3, "the relist published nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_error_event_relists_without_a_new_version() {
    expired_watch_relists_without_a_new_version(Expiry::ErrorEvent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_410_relists_without_a_new_version() {
    expired_watch_relists_without_a_new_version(Expiry::HttpGone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_expired_shows_after_the_relist() {
    let fake = cluster().await;
    let mut r = Replica::start(&fake);
    let first = r.synced().await;
    until("the watch of EndpointSlices", || fake.watches(SLICES) >= 1).await;
    fake.expire(SLICES, Expiry::HttpGone);
    // No watch sees this one: only the relist does.
    fake.apply(SLICES, fixture("endpointslice-api-scaled.json"), true);
    let next = r
        .wait("the change, relisted", |g| {
            g.mesh_version != first.mesh_version
        })
        .await;
    assert_eq!(endpoints(&next, "web.shop", "api.shop").len(), 2);
    assert_eq!(fake.lists(SLICES), 2);
    until("the applied count", || r.applied() == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_publish_the_same_versions() {
    let fake = cluster().await;
    let (mut a, mut b) = (Replica::start(&fake), Replica::start(&fake));
    let (ga, gb) = (a.synced().await, b.synced().await);
    assert_eq!(ga.mesh_version, gb.mesh_version);
    let versions = |g: &Generation| -> Vec<(String, String)> {
        g.snapshots
            .iter()
            .map(|(w, p)| (w.clone(), p.version.clone()))
            .collect()
    };
    assert_eq!(versions(&ga), versions(&gb));
    fake.apply(SLICES, fixture("endpointslice-api-scaled.json"), false);
    let changed = |g: &Generation| g.mesh_version != ga.mesh_version;
    let (na, nb) = (
        a.wait("a's change", changed).await,
        b.wait("b's change", changed).await,
    );
    assert_eq!(na.mesh_version, nb.mesh_version);
    assert_eq!(versions(&na), versions(&nb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_with_kubernetes_is_ready_after_the_sync_and_serves_a_subscriber() {
    let fake = cluster().await;
    // Pods cannot be listed at first: the control plane is not ready.
    fake.fail(PODS, true);
    let dir = tempdir();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let mut child = Command::new(bin())
        .args([
            "run",
            "--kubernetes",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--tracing-collector",
            "127.0.0.1:4317",
            "--tracing-protocol",
            "grpc",
            "--tracing-sampling",
            "0.25",
        ])
        .args(["--log-format", "json"])
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut listen, mut admin) = (None, None);
    tokio::time::timeout(WAIT, async {
        while let Ok(Some(l)) = lines.next_line().await {
            let v: Value = serde_json::from_str(&l).unwrap_or_default();
            let address = || {
                v["address"]
                    .as_str()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            };
            match v["message"].as_str() {
                Some("control plane bound") => listen = address(),
                Some("admin bound") => admin = address(),
                _ => {}
            }
            if listen.is_some() && admin.is_some() {
                return;
            }
        }
    })
    .await
    .expect("the control plane started");
    let (listen, admin) = (listen.unwrap(), admin.unwrap());
    let ready = || async move {
        let rsp = Request::new("GET", &format!("http://{admin}/ready"))
            .send()
            .await;
        (rsp.status, rsp.text())
    };
    until("a failed list of Pods", || fake.lists(PODS) >= 1).await;
    assert_eq!(ready().await, (503, "starting\n".to_string()));
    fake.fail(PODS, false);
    let deadline = Instant::now() + WAIT;
    while ready().await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut web = Subscriber::connect(listen, &hello("web.shop", None))
        .await
        .unwrap();
    let snapshot = web.next(WAIT).await.expect("a snapshot");
    let config = snapshot.config.expect("whole");
    // Without a CA: plaintext, no inbound side.
    assert_eq!(config.listeners.len(), 1);
    let api = config
        .backends
        .iter()
        .find(|b| b.name == "api.shop")
        .unwrap();
    assert_eq!(api.endpoints[0].address.to_string(), "10.244.1.17:8080");
    assert_eq!(api.endpoints[0].identity, None);
    // The flags' tracing, the spans named after the workload.
    let tracing = config.tracing.as_deref().expect("tracing from the flags");
    assert_eq!(tracing.collector, "127.0.0.1:4317");
    assert_eq!(tracing.protocol, remora_api::OtlpProtocol::Grpc);
    assert_eq!(tracing.sampling, 0.25);
    assert_eq!(tracing.service_name, "web.shop");
    let rsp = Request::new("GET", &format!("http://{admin}/status"))
        .send()
        .await;
    let status: Value = serde_json::from_str(&rsp.text()).unwrap();
    assert_eq!(status["mesh"]["path"], "kubernetes");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_published_and_not_ready_until_every_kind_is_listed() {
    let fake = cluster().await;
    fake.fail(PODS, true);
    let mut r = Replica::start(&fake);
    // Services and the rest are listed; Pods fail, and are retried.
    until("two failed lists of Pods", || fake.lists(PODS) >= 2).await;
    until("the list of Services", || fake.lists(SERVICES) >= 1).await;
    assert!(
        !r.ready.load(Ordering::SeqCst),
        "not ready without the Pods"
    );
    assert!(
        r.gens.borrow().services.is_empty(),
        "nothing but the empty start"
    );
    assert_eq!(r.applied(), 1);
    fake.fail(PODS, false);
    let g = r.synced().await;
    assert_eq!(g.snapshots.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remora_policies_from_the_cluster_apply_and_bad_ones_are_named() {
    let fake = FakeKube::start(&[
        (SERVICES, "services.json"),
        (SLICES, "endpointslices.json"),
        (PODS, "pods.json"),
        (SERVICE_POLICIES, "servicepolicies.json"),
    ])
    .await;
    let mut r = Replica::start(&fake);
    let g = r.synced().await;
    let config = g.snapshots["api.shop"].snapshot.config();
    let web = config.listeners[0]
        .routes
        .iter()
        .find(|r| r.name == "web.shop.default")
        .expect("the policy's route to web");
    assert_eq!(web.timeout, Some(remora_api::Duration::from_secs(4)));
    assert_eq!(web.retry.as_ref().unwrap().attempts, 3);
    let backend = config
        .backends
        .iter()
        .find(|b| b.name == "web.shop")
        .unwrap();
    assert_eq!(
        backend.connect_timeout,
        remora_api::Duration::from_millis(300)
    );
    assert_eq!(
        r.source.status.load().left_out,
        ["ServicePolicy shop/typo: not applied: timeout: \"4 seconds\": unknown unit `seconds`; use ms, s, m or h"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_flags_are_checked_before_anything_starts() {
    let dir = tempdir();
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, "services: []\n").unwrap();
    let mesh = mesh.to_str().unwrap();
    for (args, says) in [
        (
            vec!["--kubernetes", "--tracing-collector", "http://otel:4318"],
            "--tracing-collector must be host:port",
        ),
        (
            vec![
                "--kubernetes",
                "--tracing-collector",
                "otel:4318",
                "--tracing-sampling",
                "2",
            ],
            "--tracing-sampling must be a ratio from 0 to 1",
        ),
        (
            vec!["--mesh", mesh, "--tracing-collector", "otel:4318"],
            "--tracing-collector is for --kubernetes",
        ),
    ] {
        let out = Command::new(bin())
            .arg("run")
            .args(&args)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .env_remove("KUBECONFIG")
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

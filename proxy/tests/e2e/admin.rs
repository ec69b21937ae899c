//! The admin server: health, live config, log level, and metrics that
//! `promtool` accepts.

use crate::{config, require, start};
use remora_test_support::client::Request;
use remora_test_support::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_config_and_log_level() {
    let up = Upstream::start("up").await;
    let routes = "      - name: all\n        backends: [{ name: up }]";
    let backends = format!(
        "  - name: up\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    let proxy = start(&config(routes, &backends)).await;
    assert_eq!(proxy.admin_get("/live").await, (200, "live\n".to_string()));
    assert_eq!(
        proxy.admin_get("/ready").await,
        (200, "ready\n".to_string())
    );
    let (status, body) = proxy.admin_get("/config").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["version"].as_str().unwrap().len(), 16);
    assert_eq!(json["config"]["listeners"][0]["routes"][0]["name"], "all");
    assert_eq!(
        json["config"]["backends"][0]["endpoints"][0]["address"],
        up.addr().to_string()
    );

    let url = format!("http://{}/log-level", proxy.admin());
    let rsp = Request::new("PUT", &url)
        .body("debug,hyper=info")
        .send()
        .await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let level = proxy.admin_get("/log-level").await.1;
    let mut directives: Vec<&str> = level.trim().split(',').collect();
    directives.sort();
    assert_eq!(directives, ["debug", "hyper=info"]);
    let rsp = Request::new("PUT", &url).body("=[nonsense").send().await;
    assert_eq!(rsp.status, 400);
    assert_eq!(
        proxy.admin_get("/log-level").await.1,
        level,
        "a bad filter changes nothing"
    );
    assert_eq!(proxy.admin_get("/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_keep_labels_bounded() {
    require("promtool");
    let up = Upstream::start("up").await;
    let routes = "      - name: all\n        match: { path: { prefix: /ok } }\n        backends: [{ name: up }]";
    let backends = format!(
        "  - name: up\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    let proxy = start(&config(routes, &backends)).await;
    let base = format!("http://{}", proxy.listener("edge"));
    for i in 0..20 {
        Request::new("GET", &format!("{base}/ok/{i}")).send().await;
        Request::new("GET", &format!("{base}/missing/{i}"))
            .send()
            .await;
    }
    let metrics = proxy.metrics().await;
    for family in [
        "remora_requests_total{listener=\"edge\"} 40",
        "remora_responses_total{backend=\"up\",error=\"\",listener=\"edge\",route=\"all\",status_code=\"200\"} 20",
        "remora_responses_total{backend=\"\",error=\"no-route\",listener=\"edge\",route=\"\",status_code=\"404\"} 20",
        "remora_request_duration_seconds_bucket{backend=\"up\",listener=\"edge\",route=\"all\",le=\"+Inf\"} 20",
        "remora_upstream_connections_total{backend=\"up\",protocol=\"http1\"}",
        "remora_open_connections{listener=\"edge\"}",
        "remora_config_reloads_total{result=\"applied\"} 1",
        "remora_build_info{version=",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    assert!(!metrics.contains("/ok/"), "a raw path leaked into a label");
    assert!(
        !metrics.contains("127.0.0.1"),
        "an address leaked into a label"
    );

    remora_test_support::tools::promtool_accepts(&metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request() {
    let up = Upstream::start("up").await;
    let routes = "      - name: all\n        backends: [{ name: up }]";
    let backends = format!(
        "  - name: up\n    endpoints: [{{ address: {} }}]",
        up.addr()
    );
    let yaml =
        config(routes, &backends).replace("    routes:\n", "    access_log: true\n    routes:\n");
    let proxy = start(&yaml).await;
    let rsp = Request::new(
        "POST",
        &format!("http://{}/orders/7?x=1", proxy.listener("edge")),
    )
    .send()
    .await;
    assert_eq!(rsp.status, 200);
    let line = proxy
        .wait_for_log(
            "\"target\":\"remora_proxy::access\"",
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["method"], "POST");
    assert_eq!(entry["path"], "/orders/7");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["route"], "all");
    assert_eq!(entry["backend"], "up");
    assert_eq!(entry["listener"], "edge");
}

/// What docs/operations.md says `/metrics` answers is what it answers, to a
/// client that would prefer OpenMetrics (as Prometheus does) too; the body
/// is valid Prometheus text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_content_type_is_the_documented_one() {
    use remora_test_support::tools::{
        curl_with_accept, documented_metrics_content_type, promtool_accepts,
    };
    let doc = include_str!("../../../docs/operations.md");
    let documented = documented_metrics_content_type(doc);
    assert_eq!(documented, "text/plain; version=0.0.4; charset=utf-8");
    let routes = "      - name: all\n        direct_response: { status: 200 }";
    let proxy = start(&config(routes, "  []")).await;
    let url = format!("http://{}/metrics", proxy.admin());
    for accept in [
        "text/plain",
        "*/*",
        // What Prometheus 2.x sends.
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ] {
        let url = url.clone();
        let (content_type, body) =
            tokio::task::spawn_blocking(move || curl_with_accept(&url, accept))
                .await
                .unwrap();
        assert_eq!(content_type, documented, "accept: {accept}");
        promtool_accepts(&body);
    }
}

/// From 127.0.0.1 a change is allowed whatever `allow_remote_changes` says;
/// turning the setting on is a reload, shown in `/config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_loopback_and_the_remote_setting_reloads() {
    let routes = "      - name: all\n        direct_response: { status: 200 }";
    let yaml = config(routes, "  []");
    let proxy = start(&yaml).await;
    let url = format!("http://{}/log-level", proxy.admin());
    let put = || Request::new("PUT", &url).body("info").send();
    assert_eq!(put().await.status, 200);
    let remote = |body: &str| {
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        json["config"]["admin"]["allow_remote_changes"].as_bool()
    };
    assert_eq!(remote(&proxy.admin_get("/config").await.1), None);
    let mark = proxy.log_mark();
    proxy
        .write_config(&yaml.replace(
            "admin: { address: 127.0.0.1:0 }",
            "admin: { address: 127.0.0.1:0, allow_remote_changes: true }",
        ))
        .unwrap();
    proxy
        .wait_for_log_where(
            mark,
            |l| l.contains("config applied"),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(remote(&proxy.admin_get("/config").await.1), Some(true));
    assert_eq!(put().await.status, 200);
}

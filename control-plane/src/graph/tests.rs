use super::*;
use crate::metrics::Metrics;
use crate::proxies::Proxies;
use std::time::Duration;

fn series(listener: &str, backend: &str, ok: u64, failed: u64, fast: u64) -> Series {
    let n = ok + failed;
    Series {
        listener: listener.into(),
        route: backend.into(),
        backend: backend.into(),
        status: [0, ok, 0, 0, failed],
        errors: 0,
        grpc_failures: 0,
        count: n,
        // `fast` under 10 ms, everything under 100 ms.
        latency: vec![fast, n],
    }
}

fn report(series: Vec<Series>) -> StatsReport {
    StatsReport {
        buckets: vec![0.01, 0.1],
        certificate_expires_at: None,
        series,
    }
}

#[tokio::test(start_paused = true)]
async fn an_edge_is_the_difference_of_two_reports_over_their_interval() {
    let proxies = Proxies::new(Metrics::new());
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    let web = proxies.connect("web", None, None, None, peer);
    let client = proxies.connect("client", None, None, None, peer);
    // One report alone measures nothing.
    web.stats(report(vec![series(OUTBOUND, "api", 100, 0, 100)]));
    let g = graph(["client", "web", "api"], &proxies.list());
    assert_eq!((g.edges.len(), g.reporting), (0, 0));

    tokio::time::advance(Duration::from_secs(2)).await;
    // 20 more answers to api in 2 s, 10 of them 5xx (4 by the proxy, a
    // fault: no backend), 19 under 10 ms; the inbound side's series is no
    // edge.
    let mut faulted = series(OUTBOUND, "", 0, 4, 4);
    faulted.route = "api".into();
    web.stats(report(vec![
        series(OUTBOUND, "api", 110, 6, 115),
        faulted,
        series("inbound", "local_app", 5, 0, 5),
    ]));
    client.stats(report(vec![series(OUTBOUND, "web", 0, 0, 0)]));
    tokio::time::advance(Duration::from_secs(1)).await;
    client.stats(report(vec![series(OUTBOUND, "web", 0, 0, 0)]));

    let g = graph(["client", "web", "api"], &proxies.list());
    assert_eq!(g.reporting, 2);
    let names: Vec<(&str, usize)> = g
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.proxies))
        .collect();
    assert_eq!(names, [("api", 0), ("client", 1), ("web", 1)]);
    let api = &g.edges[1];
    assert_eq!((api.from.as_str(), api.to.as_str()), ("web", "api"));
    assert_eq!((api.requests, api.failures), (20, 10));
    assert_eq!(api.rps, 10.0);
    assert_eq!(api.success, Some(0.5));
    // p99 of 20: rank 19.8, 0.8 of the way into the 10-100 ms bucket.
    let p99 = api.p99_ms.unwrap();
    assert!((p99 - 82.0).abs() < 1e-6, "{p99}");
    // An edge without requests in the interval: no rate, no verdict.
    let quiet = &g.edges[0];
    assert_eq!((quiet.from.as_str(), quiet.to.as_str()), ("client", "web"));
    assert_eq!((quiet.rps, quiet.success, quiet.p99_ms), (0.0, None, None));
}

#[tokio::test(start_paused = true)]
async fn a_grpc_servers_failures_in_200_answers_count_as_failures() {
    let proxies = Proxies::new(Metrics::new());
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    let web = proxies.connect("web", None, None, None, peer);
    web.stats(report(vec![series(OUTBOUND, "api", 10, 0, 10)]));
    tokio::time::advance(Duration::from_secs(1)).await;
    // 10 more calls, all HTTP 200; 3 of them ended UNAVAILABLE.
    let mut s = series(OUTBOUND, "api", 20, 0, 20);
    s.grpc_failures = 3;
    web.stats(report(vec![s]));
    let g = graph(["web", "api"], &proxies.list());
    let api = &g.edges[0];
    assert_eq!((api.requests, api.failures), (10, 3));
    assert_eq!(api.success, Some(0.7));
}

#[test]
fn a_report_without_grpc_failures_reads_as_before() {
    // A proxy from before the field sends none; a proxy sends it only when
    // it is not 0.
    let line = r#"{"type":"stats","buckets":[0.01],"series":[{"listener":"outbound","route":"api","backend":"api","status":[0,1,0,0,0],"errors":0,"count":1,"latency":[1]}]}"#;
    let remora_api::stats::Report::Stats(r) = serde_json::from_str(line).unwrap();
    assert_eq!(r.series[0].grpc_failures, 0);
    let again = serde_json::to_string(&remora_api::stats::Report::Stats(r)).unwrap();
    assert!(!again.contains("grpc_failures"), "{again}");
}

#[test]
fn the_page_carries_the_graph_as_json_that_cannot_close_its_script() {
    let g = Graph {
        nodes: vec![Node {
            name: "</script>".into(),
            proxies: 0,
        }],
        edges: vec![],
        reporting: 0,
    };
    let page = page(&g);
    assert!(
        page.contains(r#"{"nodes":[{"name":"\u003c/script>""#),
        "{page}"
    );
    assert_eq!(page.matches("</script>").count(), 2, "{page}");
}

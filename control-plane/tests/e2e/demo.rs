//! `remora-control-plane demo`: the README's "run" command. It starts a
//! local mesh, serves traffic client → web → api over mutual TLS, and on
//! its own deadline stops everything it started and removes its files.

use super::*;

/// Runs `demo ARGS --proxy-bin ...` to its end (it has a `--duration`).
async fn demo(args: &[&str]) -> std::process::Output {
    let run = Command::new(bin())
        .arg("demo")
        .args(args)
        .arg("--proxy-bin")
        .arg(proxy_bin())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the demo stops by itself")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_traffic_over_mutual_tls_and_cleans_up() {
    let out = demo(&["--duration", "6s", "--rate", "10"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // Traffic flowed through all three sidecars, and none of it failed.
    let last = stdout
        .lines()
        .rfind(|l| l.starts_with("traffic: "))
        .unwrap_or_else(|| panic!("no traffic line:\n{stdout}"));
    assert!(last.contains(" ok, 0 failed"), "{last}");
    assert!(last.contains("web -> api: hello"), "{last}");
    let ok: u64 = last["traffic: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(ok >= 10, "{last}");
    // Each hop's inbound side saw its caller's identity over mutual TLS.
    for line in [
        "web's sidecar accepted mutual TLS from: spiffe://demo.local/ns/demo/sa/client",
        "api's sidecar accepted mutual TLS from: spiffe://demo.local/ns/demo/sa/web",
    ] {
        assert!(stdout.contains(line), "{line}\n{stdout}");
    }

    // It says how to explain a call and tap a sidecar.
    for line in [
        "  explain: curl 'http://",
        "/explain?listener=inbound&host=api",
        "  tap:     remora-proxy tap --admin ",
    ] {
        assert!(stdout.contains(line), "{line}\n{stdout}");
    }

    // Every sidecar it started is gone, and so are its files.
    let pids: Vec<u32> = stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            ["client", "web", "api"]
                .contains(&name)
                .then(|| words.next()?.parse().ok())?
        })
        .collect();
    assert_eq!(pids.len(), 3, "{stdout}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "sidecar {pid} still runs"
        );
    }
    let dir = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("files: "))
        .and_then(|l| l.split("/mesh.yaml").next())
        .unwrap_or_else(|| panic!("no files line:\n{stdout}"));
    assert!(!Path::new(dir).exists(), "{dir} was left behind");
}

/// `demo --otlp`: every sidecar exports its spans to the collector (here a
/// loopback OTLP/gRPC receiver on the real OpenTelemetry protobuf package),
/// and a call client → web → api is one trace across all three workloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_traces_each_call_across_its_sidecars() {
    let receiver = remora_test_support::OtlpReceiver::start("grpc").await;
    let otlp = receiver.addr().to_string();
    let out = demo(&[
        "--duration",
        "4s",
        "--rate",
        "5",
        "--otlp",
        &otlp,
        "--otlp-protocol",
        "grpc",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("Spans (OTLP) go to"), "{stdout}");
    // Some call's trace holds a server span from each of the workloads.
    let spans = receiver.spans();
    let traced_by_all = spans.iter().any(|s| {
        let trace = &s["trace_id"];
        ["client", "web", "api"].iter().all(|w| {
            spans
                .iter()
                .any(|o| o["trace_id"] == *trace && o["service"] == *w && o["kind"] == "server")
        })
    });
    assert!(
        traced_by_all,
        "no trace crosses client, web and api: {spans:#?}"
    );
}

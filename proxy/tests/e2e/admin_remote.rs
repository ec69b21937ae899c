//! The admin port bound where other hosts reach it (as a sidecar's is, for
//! probes and scrapes): `/tap`, which shows live requests, answers them only
//! with `admin.allow_remote_tap`; loopback always; other reads stay open.
//! Two network namespaces of this test joined by a veth: the remote client
//! at 10.254.0.1, the proxies at 10.254.0.2.

use crate::bin;
use crate::transparent::pods::{curl, root, wire, Netns};
use remora_test_support::proxy::tempdir;
use remora_test_support::ProxyProcess;

/// A proxy in `ns` whose admin server is configured by `admin` (YAML flow).
async fn proxy_in(ns: &Netns, admin: &str) -> ProxyProcess {
    let yaml = format!(
        "admin: {{ {admin} }}
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: ok
        direct_response: {{ status: 200, body: ok }}
"
    );
    ProxyProcess::start_in_netns(tempdir(), bin(), &yaml, &ns.name, &[])
        .await
        .expect("proxy starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_answers_remote_clients_only_when_allowed() {
    if !root("tap_answers_remote_clients_only_when_allowed") {
        return;
    }
    let client = Netns::new("tapc").await;
    let server = Netns::new("taps").await;
    wire(&client, &server).await;
    let closed = proxy_in(&server, "address: '0.0.0.0:0'").await;
    let open = proxy_in(&server, "address: '0.0.0.0:0', allow_remote_tap: true").await;
    let remote =
        |p: &ProxyProcess, path: &str| format!("http://10.254.0.2:{}{path}", p.admin().port());
    let local =
        |p: &ProxyProcess, path: &str| format!("http://127.0.0.1:{}{path}", p.admin().port());

    let refused = curl(&client, None, &remote(&closed, "/tap?seconds=1")).await;
    assert!(
        refused.contains("tap is allowed only from localhost"),
        "{refused}"
    );
    let ready = curl(&client, None, &remote(&closed, "/ready")).await;
    assert!(ready.contains("ready"), "{ready}");
    let tapped = curl(&server, None, &local(&closed, "/tap?seconds=1")).await;
    assert!(tapped.starts_with("{\"tapping\""), "{tapped}");
    let tapped = curl(&client, None, &remote(&open, "/tap?seconds=1")).await;
    assert!(tapped.starts_with("{\"tapping\""), "{tapped}");
}

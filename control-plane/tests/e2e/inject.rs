//! The injector against golden files (`control-plane/tests/inject/`): each
//! `<case>.in.yaml` through the real `remora-control-plane inject` must give
//! `<case>.out.yaml`, and each of its pod templates, sent as a real
//! AdmissionReview over HTTPS to the webhook of a running control plane,
//! must come back as a JSONPatch that turns the pod into the same golden
//! template. Injecting a golden again changes nothing. `REMORA_BLESS=1`
//! rewrites the goldens from the offline output (review the diff by eye).

use super::{bin, ControlPlane, MESH, WAIT};
use base64::Engine as _;
use remora_test_support::client::Request;
use remora_test_support::proxy::tempdir;
use remora_test_support::tls::{rustls_client_config, TestCa};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::time::Instant;

const FLAGS: &[&str] = &["--proxy-image", "remora-proxy:test"];

fn cases() -> Vec<(String, PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let case = name.strip_suffix(".in.yaml")?.to_string();
            Some((
                case.clone(),
                dir.join(&name),
                dir.join(format!("{case}.out.yaml")),
            ))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 7, "golden inputs missing in {}", dir.display());
    out
}

/// `remora-control-plane inject -f <file>` (`-`: `stdin` is piped in).
async fn offline(file: &str, stdin: &[u8], extra: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(bin())
        .args(["inject", "-f", file])
        .args(FLAGS)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin).await.unwrap();
    drop(pipe);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("inject timed out")
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde_json::to_value(serde_yaml_ng::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[tokio::test]
async fn offline_inject_matches_the_goldens_and_is_idempotent() {
    let bless = std::env::var_os("REMORA_BLESS").is_some();
    for (case, input, golden) in cases() {
        let (ok, out, err) = offline(input.to_str().unwrap(), b"", &[]).await;
        assert!(ok, "{case}: inject failed: {err}");
        if bless {
            std::fs::write(&golden, &out).unwrap();
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (REMORA_BLESS=1 writes it)", golden.display()));
        assert_eq!(
            out,
            want,
            "{case}: output differs from {}",
            golden.display()
        );
        // The golden through stdin again: nothing changes.
        let (ok, again, err) = offline("-", want.as_bytes(), &[]).await;
        assert!(ok, "{case}: second inject failed: {err}");
        assert_eq!(again, want, "{case}: injecting twice changed the output");
        assert!(!err.contains(": injected"), "{case}: {err}");
    }
    // Cases whose output is their input, as values.
    for case in ["opted-out", "already-injected"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject");
        let read = |f: &str| docs(&std::fs::read_to_string(dir.join(f)).unwrap());
        assert_eq!(
            read(&format!("{case}.in.yaml")),
            read(&format!("{case}.out.yaml"))
        );
    }
}

#[tokio::test]
async fn offline_inject_force_and_errors() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: a, image: a}]}\n";
    let (ok, out, err) = offline("-", pod.as_bytes(), &[]).await;
    assert!(ok, "{err}");
    assert!(
        !out.contains("remora-proxy"),
        "not opted in, yet injected:\n{out}"
    );
    assert!(err.contains("0 Pod/a: skipped (not_opted_in)"), "{err}");
    let (ok, out, err) = offline("-", pod.as_bytes(), &["--force"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("name: remora-proxy"), "{out}");
    let bad = format!(
        "{pod}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  template:\n    metadata:\n      annotations: {{remora.io/inject: enabled, remora.io/sidecar-mode: sidecar}}\n    spec: {{containers: [{{name: a}}]}}\n"
    );
    let (ok, _, err) = offline("-", bad.as_bytes(), &[]).await;
    assert!(!ok);
    assert!(
        err.contains("document 1 (Deployment): annotation remora.io/sidecar-mode: `sidecar`"),
        "{err}"
    );
    let (ok, _, err) = offline("-", b"kind: Job\nspec: 3\n", &[]).await;
    assert!(!ok);
    assert!(err.contains("document 0 (Job): no pod template"), "{err}");
}

/// A control plane with the webhook on; its address and a client config.
async fn webhook() -> (
    ControlPlane,
    SocketAddr,
    std::sync::Arc<rustls::ClientConfig>,
    remora_test_support::proxy::TempDir,
) {
    let dir = tempdir();
    let ca = TestCa::new("webhook test CA");
    let (cert, key) = ca
        .issue_server(&["remora-injector.remora-system.svc"])
        .write_to(dir.path(), "webhook");
    let args: Vec<std::ffi::OsString> = vec![
        "--webhook-listen".into(),
        "127.0.0.1:0".into(),
        "--webhook-cert".into(),
        cert.into(),
        "--webhook-key".into(),
        key.into(),
        // The goldens opt in per pod; no cluster is asked, even when the
        // tests run inside one.
        "--webhook-ignore-namespaces".into(),
        FLAGS[0].into(),
        FLAGS[1].into(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let cp = ControlPlane::start_with(MESH, "127.0.0.1:0".parse().unwrap(), &args).await;
    let deadline = Instant::now() + WAIT;
    let addr = loop {
        let found = cp.logs().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["message"] == "webhook bound").then(|| v["address"].as_str()?.parse().ok())?
        });
        if let Some(a) = found {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no `webhook bound`:\n{}",
            cp.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let tls = rustls_client_config(&ca.ca_pem(), &[b"h2", b"http/1.1"]);
    (cp, addr, tls, dir)
}

async fn post(
    addr: SocketAddr,
    tls: &std::sync::Arc<rustls::ClientConfig>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let rsp = Request::new("POST", &format!("https://{addr}/inject"))
        .tls(tls.clone())
        .server_name("remora-injector.remora-system.svc")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    (rsp.status, rsp.body.to_vec())
}

fn review(uid: &str, pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": false,
        }
    }))
    .unwrap()
}

/// The pod after the webhook's answer to it (and whether it had a patch).
async fn admit(
    addr: SocketAddr,
    tls: &std::sync::Arc<rustls::ClientConfig>,
    uid: &str,
    pod: &Value,
) -> (Value, bool) {
    let (status, body) = post(addr, tls, review(uid, pod)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer}");
    assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
    let rsp = &answer["response"];
    assert_eq!(rsp["uid"], uid, "{answer}");
    assert_eq!(rsp["allowed"], true, "{answer}");
    let Some(patch) = rsp["patch"].as_str() else {
        assert!(rsp.get("patch").is_none(), "{answer}");
        return (pod.clone(), false);
    };
    assert_eq!(rsp["patchType"], "JSONPatch", "{answer}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    (out, true)
}

#[tokio::test]
async fn webhook_patches_match_the_goldens() {
    let (cp, addr, tls, _dir) = webhook().await;
    let mut injected = 0;
    for (case, input, golden) in cases() {
        let inputs = docs(&std::fs::read_to_string(&input).unwrap());
        let goldens = docs(&std::fs::read_to_string(&golden).unwrap());
        assert_eq!(inputs.len(), goldens.len(), "{case}");
        for (i, (doc, want)) in inputs.iter().zip(&goldens).enumerate() {
            let kind = doc["kind"].as_str().unwrap();
            let pointer = match kind {
                "Pod" => "",
                "CronJob" => "/spec/jobTemplate/spec/template",
                "Service" => continue,
                _ => "/spec/template",
            };
            let template = |v: &Value| {
                let t = v.pointer(pointer).unwrap();
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": t["metadata"], "spec": t["spec"]})
            };
            let uid = format!("{case}-{i}");
            let (out, patched) = admit(addr, &tls, &uid, &template(doc)).await;
            assert_eq!(
                out,
                template(want),
                "{case} document {i}: webhook result differs from the golden"
            );
            injected += usize::from(patched);
            // Once more: already injected, no patch.
            let (again, patched) = admit(addr, &tls, &format!("{uid}-again"), &out).await;
            assert!(!patched, "{case} document {i}: a second injection patched");
            assert_eq!(again, out);
        }
    }
    assert!(injected >= 6, "only {injected} pods were injected");
    let metrics = cp.metrics().await;
    assert!(
        metrics.contains(&format!(
            "remora_cp_injections_total{{outcome=\"injected\"}} {injected}"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn webhook_refuses_malformed_requests_and_denies_bad_annotations() {
    let (_cp, addr, tls, _dir) = webhook().await;
    for (body, says) in [
        (&b"{not json"[..], "not an AdmissionReview"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "no `request`",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":1}}"#,
            "not an AdmissionReview",
        ),
    ] {
        let (status, rsp) = post(addr, &tls, body.to_vec()).await;
        let rsp = String::from_utf8_lossy(&rsp);
        assert_eq!(status, 400, "{rsp}");
        assert!(rsp.contains(says), "{rsp}");
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"remora.io/inject": "enabled", "remora.io/proxy-memory-limit": "lots"}},
        "spec": {"containers": [{"name": "a", "image": "a"}]}});
    let (status, body) = post(addr, &tls, review("bad-1", &pod)).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert_eq!(answer["response"]["uid"], "bad-1");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("remora.io/proxy-memory-limit"),
        "{message}"
    );
    let live = Request::new("GET", &format!("https://{addr}/live"))
        .tls(tls.clone())
        .server_name("remora-injector.remora-system.svc")
        .send()
        .await;
    assert_eq!(live.status, 200);
}

/// The example manifest injects: its Deployment, nothing else.
#[tokio::test]
async fn the_example_manifest_injects() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/k8s/app.yaml");
    let (ok, out, err) = offline(path.to_str().unwrap(), b"", &[]).await;
    assert!(ok, "{err}");
    assert_eq!(err.trim(), "2 Deployment/web: injected");
    let docs = docs(&out);
    let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["Namespace", "ServiceAccount", "Deployment", "Service"]
    );
    let inits = &docs[2]["spec"]["template"]["spec"]["initContainers"];
    assert_eq!(inits[1]["name"], "remora-proxy", "{out}");
    assert_eq!(inits[1]["restartPolicy"], "Always", "{out}");
}

/// A renewed certificate (the files replaced, as a Secret update does) is
/// served without a restart.
#[tokio::test]
async fn the_webhook_serves_a_replaced_certificate() {
    let (_cp, addr, _old, dir) = webhook().await;
    let ca = TestCa::new("renewed webhook CA");
    let pair = ca.issue_server(&["remora-injector.remora-system.svc"]);
    let staged = tempdir();
    let (cert, key) = pair.write_to(staged.path(), "webhook");
    std::fs::rename(&key, dir.path().join("webhook.key")).unwrap();
    std::fs::rename(&cert, dir.path().join("webhook.crt")).unwrap();
    let tls = rustls_client_config(&ca.ca_pem(), &[b"http/1.1"]);
    let deadline = Instant::now() + WAIT;
    loop {
        let rsp = Request::new("GET", &format!("https://{addr}/live"))
            .tls(tls.clone())
            .server_name("remora-injector.remora-system.svc")
            .try_send()
            .await;
        match rsp {
            Ok(rsp) => {
                assert_eq!(rsp.status, 200);
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "the new certificate was never served: {e:#}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

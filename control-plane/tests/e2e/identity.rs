//! Identity with real processes: `ca init` writes a development root, the
//! control plane signs with it (join tokens, a 6 s certificate lifetime),
//! a sidecar proxy with `--identity-token` gets its certificate, becomes
//! ready and renews; a request made here with its own CSR gets a
//! certificate that `openssl` reads as a SPIFFE SVID; issued certificates
//! carry mutual TLS between a sidecar and an endpoint with an identity,
//! across a renewal, without a failed request; bad credentials are refused,
//! and a proxy with a wrong token reports failures and stays not ready.

use super::*;
use remora_test_support::{Load, ProxyProcess, Upstream};
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WEB_TOKEN: &str = "e2e-web-token-0123456789abcdef";
const BATCH_TOKEN: &str = "e2e-batch-token-0123456789abcdef";
const API_TOKEN: &str = "e2e-api-token-0123456789abcdef";
const WEB_ID: &str = "spiffe://example.org/ns/shop/sa/web-sa";

const MESH_WITH_IDENTITIES: &str = "trust_domain: example.org
services:
  - name: api
    endpoints: [{ address: 127.0.0.1:9 }]
workloads:
  - { name: web, namespace: shop, service_account: web-sa, outbound: 127.0.0.1:0, calls: [api] }
  - { name: batch, namespace: jobs, outbound: 127.0.0.1:0 }
";

/// A directory with a CA from `ca init`, the join tokens, and a control
/// plane started with them.
struct Mesh {
    dir: TempDir,
    cp: ControlPlane,
}

impl Mesh {
    async fn start(lifetime: &str) -> Mesh {
        Self::start_with(lifetime, MESH_WITH_IDENTITIES).await
    }

    async fn start_with(lifetime: &str, mesh: &str) -> Mesh {
        let dir = tempdir();
        let ca_dir = dir.path().join("ca");
        let stdout = cli(&[
            "ca".as_ref(),
            "init".as_ref(),
            "--trust-domain".as_ref(),
            "example.org".as_ref(),
            "--dir".as_ref(),
            ca_dir.as_ref(),
        ]);
        assert!(
            stdout.contains("--ca-cert") && stdout.contains("mode 0600"),
            "{stdout}"
        );
        let tokens = dir.path().join("tokens.yaml");
        std::fs::write(
            &tokens,
            format!("tokens:\n  - {{ token: {WEB_TOKEN}, workload: web }}\n  - {{ token: {BATCH_TOKEN}, workload: batch }}\n  - {{ token: {API_TOKEN}, workload: api }}\n"),
        )
        .unwrap();
        let cp = Self::control_plane(dir.path(), mesh, lifetime).await;
        Mesh { dir, cp }
    }

    /// A control plane on the CA and tokens in `dir`.
    async fn control_plane(dir: &Path, mesh: &str, lifetime: &str) -> ControlPlane {
        let tokens = dir.join("tokens.yaml");
        let (cert, key) = (dir.join("ca/ca.crt"), dir.join("ca/ca.key"));
        let args: [&OsStr; 8] = [
            "--ca-cert".as_ref(),
            cert.as_ref(),
            "--ca-key".as_ref(),
            key.as_ref(),
            "--join-tokens".as_ref(),
            tokens.as_ref(),
            "--cert-lifetime".as_ref(),
            lifetime.as_ref(),
        ];
        let listen = "127.0.0.1:0".parse().unwrap();
        ControlPlane::start_with(mesh, listen, &args).await
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca/ca.crt")).unwrap()
    }

    /// A second control plane on the same CA and tokens whose port serves
    /// TLS with a certificate from `ca serving-cert` (its output checked),
    /// with more `run` arguments.
    async fn tls_control_plane(&self, extra: &[&OsStr]) -> ControlPlane {
        self.tls_control_plane_for("127.0.0.1", extra).await
    }

    /// [`Mesh::tls_control_plane`] with a certificate for `name` only.
    async fn tls_control_plane_for(&self, name: &str, extra: &[&OsStr]) -> ControlPlane {
        let dir = self.dir.path();
        let (ca_cert, ca_key) = (dir.join("ca/ca.crt"), dir.join("ca/ca.key"));
        let cp_dir = dir.join("cp");
        let stdout = cli(&[
            "ca".as_ref(),
            "serving-cert".as_ref(),
            "--name".as_ref(),
            name.as_ref(),
            "--ca-cert".as_ref(),
            ca_cert.as_ref(),
            "--ca-key".as_ref(),
            ca_key.as_ref(),
            "--dir".as_ref(),
            cp_dir.as_ref(),
        ]);
        assert!(
            stdout.contains("--tls-cert") && stdout.contains("--control-plane-ca"),
            "{stdout}"
        );
        let (cert, key) = (
            dir.join("cp/control-plane.crt"),
            dir.join("cp/control-plane.key"),
        );
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is private");
        let tokens = dir.join("tokens.yaml");
        let mut args: Vec<&OsStr> = vec![
            "--ca-cert".as_ref(),
            ca_cert.as_ref(),
            "--ca-key".as_ref(),
            ca_key.as_ref(),
            "--join-tokens".as_ref(),
            tokens.as_ref(),
            "--tls-cert".as_ref(),
            cert.as_ref(),
            "--tls-key".as_ref(),
            key.as_ref(),
        ];
        args.extend_from_slice(extra);
        let listen = "127.0.0.1:0".parse().unwrap();
        ControlPlane::start_with(MESH_WITH_IDENTITIES, listen, &args).await
    }

    /// `web`'s sidecar with its join token, verifying `cp`'s port against
    /// the CA; returns once it is ready.
    async fn tls_sidecar(&self, cp: &ControlPlane) -> ProxyProcess {
        let token = self.token_file("web.token", WEB_TOKEN);
        let ca_cert = self.dir.path().join("ca/ca.crt");
        let args: [&OsStr; 4] = [
            "--identity-token".as_ref(),
            token.as_ref(),
            "--control-plane-ca".as_ref(),
            ca_cert.as_ref(),
        ];
        ProxyProcess::start_sidecar(&proxy_bin(), cp.listen, "web", &args)
            .await
            .unwrap()
    }

    /// A file holding `token`, for `--identity-token`.
    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{token}\n")).unwrap();
        path
    }

    async fn certify(&self, auth: Option<&str>, body: &str) -> (u16, String) {
        let mut req = Request::new("POST", &format!("http://{}/v1/certify", self.cp.listen))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let rsp = req.send().await;
        (rsp.status, rsp.text())
    }
}

/// Runs `remora-control-plane <args>`; its stdout, or a panic with both
/// outputs if it fails.
fn cli(args: &[&OsStr]) -> String {
    let out = std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "remora-control-plane {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn csr_for(names: &[&str]) -> String {
    csr_and_key(names).0
}

/// A CSR and its private key, PEM.
fn csr_and_key(names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let params = rcgen::CertificateParams::new(names).unwrap();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (csr, key.serialize_pem())
}

fn request(workload: &str, csr: &str) -> String {
    serde_json::json!({ "workload": workload, "csr": csr }).to_string()
}

/// Runs `openssl` with `args`; its stdout, or a panic with its stderr.
fn openssl(args: &[&OsStr]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_gets_a_certificate_renews_it_and_trusts_the_ca() {
    let mesh = Mesh::start("6s").await;
    let token = mesh.token_file("web.token", WEB_TOKEN);
    let args: [&OsStr; 2] = ["--identity-token".as_ref(), token.as_ref()];
    // Returns once /ready answers 200: a snapshot and a certificate.
    let proxy = ProxyProcess::start_sidecar(&proxy_bin(), mesh.cp.listen, "web", &args)
        .await
        .unwrap();

    let issued = |from: usize| {
        proxy
            .logs_json()
            .into_iter()
            .skip(from)
            .filter(|v| v["message"] == "certificate issued")
            .collect::<Vec<_>>()
    };
    let first = issued(0);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["spiffe_id"], WEB_ID);
    let serial = first[0]["serial"].as_str().unwrap().to_string();
    assert_eq!(serial.len(), 32, "{serial}");
    let cp_logs = mesh.cp.logs();
    assert!(
        cp_logs.contains(&format!("\"serial\":\"{serial}\"")) && cp_logs.contains(WEB_ID),
        "the control plane logged another certificate:\n{cp_logs}"
    );
    assert!(!cp_logs.contains(WEB_TOKEN), "a token in the logs");

    let metrics = proxy.metrics().await;
    let expiry = metric(
        &metrics,
        "remora_identity_certificate_expiry_timestamp_seconds",
    );
    assert!(
        expiry > now_secs() && expiry < now_secs() + 7.0,
        "expiry {expiry}"
    );
    assert_eq!(metric(&metrics, "remora_identity_renewals_total"), 1.0);
    assert_eq!(
        metric(&metrics, "remora_identity_renewal_failures_total"),
        0.0
    );

    // The snapshot carries the CA as the trust root.
    let (_, config) = proxy.admin_get("/config").await;
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["config"]["identity"]["trust_roots"],
        serde_json::json!([mesh.ca_pem()])
    );

    // Renewal at ~70% of 6 s, with a new certificate.
    let deadline = Instant::now() + Duration::from_secs(15);
    let renewed = loop {
        let m = proxy.metrics().await;
        if metric(&m, "remora_identity_renewals_total") >= 2.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "no renewal; metrics:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let next = metric(
        &renewed,
        "remora_identity_certificate_expiry_timestamp_seconds",
    );
    assert!(next > expiry, "the expiry did not move: {expiry} -> {next}");
    assert_eq!(
        metric(&renewed, "remora_identity_renewal_failures_total"),
        0.0
    );
    let second = issued(0);
    assert!(second.len() >= 2, "{second:?}");
    assert_ne!(second[1]["serial"], first[0]["serial"]);
    assert_eq!(second[1]["spiffe_id"], WEB_ID);
    assert_eq!(proxy.admin_get("/ready").await.0, 200);

    let cp_metrics = mesh.cp.metrics().await;
    assert!(metric(&cp_metrics, "remora_cp_certificates_issued_total") >= 2.0);
    let (_, status) = mesh.cp.get("/status").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["workloads"]["web"]["identity"], WEB_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_certificate_is_a_spiffe_svid_and_bad_credentials_are_refused() {
    require("openssl");
    let mesh = Mesh::start("1h").await;
    let web = format!("Bearer {WEB_TOKEN}");
    // The CSR asks for a DNS name: the certificate has the SPIFFE ID only.
    let (status, body) = mesh
        .certify(Some(&web), &request("web", &csr_for(&["evil.example"])))
        .await;
    assert_eq!(status, 200, "{body}");
    let rsp: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rsp["trust_roots"], serde_json::json!([mesh.ca_pem()]));
    let leaf = mesh.dir.path().join("leaf.pem");
    std::fs::write(&leaf, rsp["certificate_chain"].as_str().unwrap()).unwrap();
    let text = openssl(&[
        "x509".as_ref(),
        "-noout".as_ref(),
        "-text".as_ref(),
        "-in".as_ref(),
        leaf.as_ref(),
    ]);
    for want in [
        &format!("URI:{WEB_ID}") as &str,
        "CA:FALSE",
        "Digital Signature",
        "TLS Web Server Authentication, TLS Web Client Authentication",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    assert!(!text.contains("evil.example"), "{text}");
    let ca = mesh.dir.path().join("ca/ca.crt");
    let verified = openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        ca.as_ref(),
        leaf.as_ref(),
    ]);
    assert!(verified.trim().ends_with("OK"), "{verified}");
    let expires = rsp["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.len() == 20, "{expires}");

    let batch = format!("Bearer {BATCH_TOKEN}");
    let cases = [
        (
            "no token",
            None,
            request("web", &csr_for(&[])),
            401,
            "Bearer <token>",
        ),
        (
            "an unknown token",
            Some("Bearer e2e-web-token-0123456789abcdeX"),
            request("web", &csr_for(&[])),
            401,
            "unknown token",
        ),
        (
            "another workload's token",
            Some(batch.as_str()),
            request("web", &csr_for(&[])),
            403,
            "does not allow workload `web`",
        ),
        (
            "not a CSR",
            Some(web.as_str()),
            request("web", "hello"),
            400,
            "bad CSR",
        ),
    ];
    for (what, auth, body, status, want) in cases {
        let (got, text) = mesh.certify(auth, &body).await;
        assert_eq!(got, status, "{what}: {text}");
        assert!(
            text.contains(want) && text.trim().lines().count() == 1,
            "{what}: {text}"
        );
    }
    let metrics = mesh.cp.metrics().await;
    let failures = |reason: &str| {
        metric(
            &metrics,
            &format!("remora_cp_certificate_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(failures("unauthenticated"), 2.0);
    assert_eq!(failures("forbidden"), 1.0);
    assert_eq!(failures("bad_csr"), 1.0);
    assert_eq!(metric(&metrics, "remora_cp_certificates_issued_total"), 1.0);

    // Without a CA: 503, and snapshots carry no trust roots.
    let plain = ControlPlane::start(MESH_WITH_IDENTITIES).await;
    let rsp = Request::new("POST", &format!("http://{}/v1/certify", plain.listen))
        .header("authorization", &web)
        .body(request("web", &csr_for(&[])))
        .send()
        .await;
    assert_eq!(rsp.status, 503, "{}", rsp.text());
    assert!(rsp.text().contains("no CA"), "{}", rsp.text());
    let mut sub = Subscriber::connect(plain.listen, &hello("web", None))
        .await
        .unwrap();
    let snap = sub.next(WAIT).await.unwrap();
    assert!(snap.config.unwrap().identity.is_none());
}

/// A sidecar that is not waited for: a wrong token keeps it from ever
/// being ready.
struct Unready {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Unready {
    fn start(cp: SocketAddr, workload: &str, token: &Path) -> Unready {
        Self::start_with(cp, workload, token, &[])
    }

    /// `cp` is `host:port` (an address or a name).
    fn start_with(
        cp: impl std::fmt::Display,
        workload: &str,
        token: &Path,
        extra: &[&OsStr],
    ) -> Unready {
        let mut child = Command::new(proxy_bin())
            .args([
                "run",
                "--control-plane",
                &cp.to_string(),
                "--workload",
                workload,
            ])
            .args([
                "--admin",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--identity-token",
            ])
            .arg(token)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    logs.lock().unwrap().push(l);
                }
            });
        }
        Unready { child, logs }
    }

    fn dump(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits for a JSON log line with `message`.
    async fn wait_log(&self, message: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.logs.lock().unwrap().iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["message"] == message).then_some(v)
            });
            if let Some(v) = found {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} line; logs:\n{}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn admin_get(&self, admin: SocketAddr, path: &str) -> (u16, String) {
        let rsp = Request::new("GET", &format!("http://{admin}{path}"))
            .send()
            .await;
        (rsp.status, rsp.text())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_with_a_wrong_token_reports_failures_and_is_not_ready() {
    let mesh = Mesh::start("1h").await;
    let token = mesh.token_file("wrong.token", "e2e-wrong-token-0123456789abcdef");
    let mut proxy = Unready::start(mesh.cp.listen, "web", &token);
    let admin: SocketAddr = proxy.wait_log("admin bound").await["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let failed = proxy.wait_log("certificate renewal failed").await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("401") && reason.contains("unknown token"),
        "{reason}"
    );
    // The snapshot arrives, but without a certificate the proxy is not ready.
    proxy.wait_log("snapshot applied").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, m) = proxy.admin_get(admin, "/metrics").await;
        if metric(&m, "remora_identity_renewal_failures_total") >= 2.0 {
            assert_eq!(metric(&m, "remora_identity_renewals_total"), 0.0);
            assert_eq!(
                metric(&m, "remora_identity_certificate_expiry_timestamp_seconds"),
                0.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retry; logs:\n{}",
            proxy.dump()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        proxy.admin_get(admin, "/ready").await,
        (503, "starting\n".to_string())
    );
    assert!(
        !proxy.dump().contains("e2e-wrong-token"),
        "the token was logged"
    );
    let cp_metrics = mesh.cp.metrics().await;
    assert!(
        metric(
            &cp_metrics,
            "remora_cp_certificate_failures_total{reason=\"unauthenticated\"}"
        ) >= 2.0
    );
    proxy.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_certificates_carry_mutual_tls_across_a_renewal_without_a_failed_request() {
    let api_id = "spiffe://example.org/ns/shop/sa/api";
    let mesh_with = |endpoint: &str| {
        format!(
            "trust_domain: example.org
services:
  - name: api
    endpoints: [{endpoint}]
workloads:
  - {{ name: web, namespace: shop, service_account: web-sa, outbound: 127.0.0.1:0, calls: [api] }}
  - {{ name: api, namespace: shop, outbound: 127.0.0.1:0 }}
"
        )
    };
    // The endpoint's certificate, long-lived, from a first control plane on the CA.
    let long = Mesh::start_with("1h", &mesh_with("")).await;
    let (csr, key) = csr_and_key(&[]);
    let bearer = format!("Bearer {API_TOKEN}");
    let (status, body) = long.certify(Some(&bearer), &request("api", &csr)).await;
    assert_eq!(status, 200, "{body}");
    let rsp: Value = serde_json::from_str(&body).unwrap();
    let chain = rsp["certificate_chain"].as_str().unwrap();
    // It demands a client certificate from the same CA.
    let up = Upstream::start_mtls("api", chain, &key, &long.ca_pem()).await;

    // The sidecar's, short-lived, from a second control plane on the same CA.
    let endpoint = format!("{{ address: {}, identity: \"{api_id}\" }}", up.addr());
    let cp = Mesh::control_plane(long.dir.path(), &mesh_with(&endpoint), "6s").await;
    let token = long.token_file("web.token", WEB_TOKEN);
    let args: [&OsStr; 2] = ["--identity-token".as_ref(), token.as_ref()];
    let proxy = ProxyProcess::start_sidecar(&proxy_bin(), cp.listen, "web", &args)
        .await
        .unwrap();
    let load = Load::start(proxy.listener("outbound"), Some("api"), 2);
    load.wait_for_upstream("api").await;
    // A long-lived client connection, opened before the renewal.
    let mut kept = remora_test_support::Http1Conn::connect(proxy.listener("outbound")).await;
    let before = kept
        .try_send("GET", "/", &[("host", "api")], bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(before.status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = proxy.metrics().await;
        if metric(&m, "remora_identity_renewals_total") >= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no renewal; metrics:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.wait_for_requests(20).await;
    let tally = load.finish().await;
    assert_eq!(
        tally.failures, 0,
        "requests failed across the renewal: {tally:?}"
    );
    assert!(tally.total > 20, "too little traffic ran: {tally:?}");
    assert_eq!(up.failures(), 0);
    // The same connection still works after the renewal.
    let after = kept
        .try_send("GET", "/", &[("host", "api")], bytes::Bytes::new())
        .await
        .expect("the renewal dropped a long-lived connection");
    assert_eq!(after.status, 200);
    assert!(!kept.is_closed());
    assert_eq!(
        metric(
            &proxy.metrics().await,
            "remora_identity_renewal_failures_total"
        ),
        0.0
    );
}

/// The control plane's port over TLS: `ca serving-cert` makes its
/// certificate from the mesh CA, a sidecar that verifies it gets its
/// certificate and snapshots over it, `openssl s_client` verifies it too,
/// plaintext is refused, and a sidecar trusting another CA never connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_port_serves_tls_that_sidecars_verify() {
    require("openssl");
    let mesh = Mesh::start("1h").await;
    let cp = mesh.tls_control_plane(&[]).await;
    let ca_cert = mesh.dir.path().join("ca/ca.crt");

    // A sidecar that verifies the port: certificate and snapshot over TLS.
    let proxy = mesh.tls_sidecar(&cp).await;
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "remora_identity_renewals_total"), 1.0);
    assert_eq!(metric(&metrics, "remora_control_plane_connected"), 1.0);
    assert!(cp.logs().contains("certificate issued"));

    // openssl checks the port's certificate against the CA.
    let address = cp.listen.to_string();
    // (-verify_return_error: a failed verification fails the command.)
    openssl(&[
        "s_client".as_ref(),
        "-connect".as_ref(),
        address.as_ref(),
        "-CAfile".as_ref(),
        ca_cert.as_ref(),
        "-verify_ip".as_ref(),
        "127.0.0.1".as_ref(),
        "-verify_return_error".as_ref(),
        "-brief".as_ref(),
    ]);

    // Plaintext gets no HTTP answer: the port speaks TLS only.
    let mut tcp = tokio::net::TcpStream::connect(cp.listen).await.unwrap();
    tcp.write_all(b"POST /v1/certify HTTP/1.1\r\nhost: cp\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "{answer:?}"
    );

    // Trusting another CA: the handshake fails, no token is sent.
    let other = tempdir();
    cli(&[
        "ca".as_ref(),
        "init".as_ref(),
        "--dir".as_ref(),
        other.path().as_ref(),
    ]);
    let wrong_ca = other.path().join("ca.crt");
    let batch = mesh.token_file("batch.token", BATCH_TOKEN);
    let unready = Unready::start_with(
        cp.listen,
        "batch",
        &batch,
        &["--control-plane-ca".as_ref(), wrong_ca.as_ref()],
    );
    let failed = unready.wait_log("certificate renewal failed").await;
    let reason = failed["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("certificate"), "{failed}");
    assert!(
        !cp.logs().contains("\"workload\":\"batch\""),
        "no request reached the control plane"
    );
}

/// `curl` over TLS to the control plane (verified against the mesh CA),
/// POSTing `body` to `path`, with a client certificate if given: the
/// status and the body.
fn curl_tls(
    mesh: &Mesh,
    cp: &ControlPlane,
    path: &str,
    body: &str,
    client: Option<(&Path, &Path)>,
    header: Option<&str>,
) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"])
        .arg(mesh.dir.path().join("ca/ca.crt"));
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .args(["--data-binary", body])
        .arg(format!("https://{}{path}", cp.listen))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// With `--require-proxy-identity`, a subscription must present the mesh
/// certificate of the workload it names: sidecars do (once they have one),
/// a client without one gets a 401, a certificate of another workload a 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_can_be_required_to_prove_their_workload() {
    require("curl");
    let mesh = Mesh::start("1h").await;
    let cp = mesh
        .tls_control_plane(&["--require-proxy-identity".as_ref()])
        .await;
    let web = mesh.tls_sidecar(&cp).await;
    // It waited for its certificate: its first subscription proved itself.
    let refused = web
        .logs()
        .into_iter()
        .filter(|l| l.contains("subscription to the control plane failed"))
        .collect::<Vec<_>>();
    assert!(refused.is_empty(), "{refused:#?}");
    assert!(
        cp.logs()
            .contains(&format!("\"verified_identity\":\"{WEB_ID}\"")),
        "{}",
        cp.logs()
    );

    // No client certificate.
    let hello = r#"{"workload":"web"}"#;
    let (status, body) = curl_tls(&mesh, &cp, "/v1/subscribe", hello, None, None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("a client certificate is required"), "{body}");

    // batch's certificate, from the certify API over TLS.
    let (csr, key) = csr_and_key(&["ignored.example"]);
    let auth = format!("authorization: Bearer {BATCH_TOKEN}");
    let (status, body) = curl_tls(
        &mesh,
        &cp,
        "/v1/certify",
        &request("batch", &csr),
        None,
        Some(&auth),
    );
    assert_eq!(status, 200, "{body}");
    let issued: Value = serde_json::from_str(&body).unwrap();
    let (cert_path, key_path) = (
        mesh.dir.path().join("batch.crt"),
        mesh.dir.path().join("batch.key"),
    );
    std::fs::write(&cert_path, issued["certificate_chain"].as_str().unwrap()).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let batch = Some((cert_path.as_path(), key_path.as_path()));

    // As web with batch's certificate: refused.
    let (status, body) = curl_tls(&mesh, &cp, "/v1/subscribe", hello, batch, None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not for workload `web`"), "{body}");
    // As batch: its snapshot (the body ends after the Hello: a one-shot dump).
    let (status, body) = curl_tls(
        &mesh,
        &cp,
        "/v1/subscribe",
        r#"{"workload":"batch"}"#,
        batch,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let snapshot: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert!(snapshot["config"]["listeners"].is_array(), "{snapshot}");
}

/// `--control-plane` by DNS name: the proxy resolves `localhost:<port>` at
/// each attempt and, by default, verifies the certificate for that name;
/// the same certificate does not pass for the IP address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_dials_the_control_plane_by_dns_name() {
    let mesh = Mesh::start("1h").await;
    let cp = mesh.tls_control_plane_for("localhost", &[]).await;
    let token = mesh.token_file("web.token", WEB_TOKEN);
    let ca_cert = mesh.dir.path().join("ca/ca.crt");
    let by_name = format!("localhost:{}", cp.listen.port());
    let args: Vec<std::ffi::OsString> = vec![
        "--control-plane".into(),
        by_name.into(),
        "--workload".into(),
        "web".into(),
        "--admin".into(),
        "127.0.0.1:0".into(),
        "--identity-token".into(),
        token.clone().into(),
        "--control-plane-ca".into(),
        ca_cert.clone().into(),
    ];
    let proxy = ProxyProcess::start_with(tempdir(), &proxy_bin(), args)
        .await
        .unwrap();
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "remora_identity_renewals_total"), 1.0);
    assert_eq!(metric(&metrics, "remora_control_plane_connected"), 1.0);

    // By IP address the name to verify is the IP: the certificate (for
    // localhost only) does not match, nothing is sent.
    let unready = Unready::start_with(
        cp.listen,
        "web",
        &token,
        &["--control-plane-ca".as_ref(), ca_cert.as_ref()],
    );
    let failed = unready.wait_log("certificate renewal failed").await;
    let reason = failed["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("certificate"), "{failed}");
}

/// The control plane's roots as PEM text (`--control-plane-ca-pem`, env
/// `REMORA_CONTROL_PLANE_CA_PEM`, as the injector sets it) instead of a
/// file: the same verified TLS; a value that is not PEM stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_takes_the_control_plane_roots_as_pem_text() {
    let mesh = Mesh::start("1h").await;
    let cp = mesh.tls_control_plane_for("localhost", &[]).await;
    let token = mesh.token_file("web.token", WEB_TOKEN);
    let pem = std::fs::read_to_string(mesh.dir.path().join("ca/ca.crt")).unwrap();
    let by_name = format!("localhost:{}", cp.listen.port());
    let args = |roots: &str| -> Vec<std::ffi::OsString> {
        vec![
            "--control-plane".into(),
            by_name.clone().into(),
            "--workload".into(),
            "web".into(),
            "--admin".into(),
            "127.0.0.1:0".into(),
            "--identity-token".into(),
            token.clone().into(),
            // One `--flag=value` word: the PEM starts with dashes.
            format!("--control-plane-ca-pem={roots}").into(),
        ]
    };
    let proxy = ProxyProcess::start_with(tempdir(), &proxy_bin(), args(&pem))
        .await
        .unwrap();
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "remora_identity_renewals_total"), 1.0);
    assert_eq!(metric(&metrics, "remora_control_plane_connected"), 1.0);

    let out = std::process::Command::new(proxy_bin())
        .arg("run")
        .args(args("not a certificate"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--control-plane-ca-pem"), "{stderr}");
}

/// gRPC across the mesh as the control plane compiles it, with no protocol
/// set anywhere: a grpcio client on `web`'s outbound listener, mutual TLS
/// to `api`'s inbound side, a grpcio server as `api`'s app. The mesh's
/// default (`auto`) keeps the caller's HTTP/2 end to end; `http1` on
/// either side made gRPC fail (`upstream-failed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_crosses_the_mesh_with_the_default_protocols() {
    use remora_test_support::grpc::{client, require_grpcio, statuses, EchoServer};
    require_grpcio();
    let server = EchoServer::start().await;
    let inbound = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mesh = format!(
        "trust_domain: example.org
services:
  - name: api
    endpoints: [{{ address: {inbound}, workload: api }}]
workloads:
  - {{ name: web, namespace: shop, service_account: web-sa, outbound: 127.0.0.1:0, calls: [api] }}
  - {{ name: api, namespace: shop, outbound: 127.0.0.1:0, inbound: {{ address: {inbound}, app: 127.0.0.1:{} }} }}
",
        server.port
    );
    let m = Mesh::start_with("1h", &mesh).await;
    let sidecar = |name: &'static str, token: &'static str| {
        let token = m.token_file(&format!("{name}.token"), token);
        let listen = m.cp.listen;
        async move {
            let args: [&OsStr; 2] = ["--identity-token".as_ref(), token.as_ref()];
            ProxyProcess::start_sidecar(&proxy_bin(), listen, name, &args)
                .await
                .unwrap()
        }
    };
    let _api = sidecar("api", API_TOKEN).await;
    let web = sidecar("web", WEB_TOKEN).await;
    let outbound = web.listener("outbound").to_string();

    assert_eq!(statuses(&outbound, "api", 1).await, ["OK echo:hi"]);
    let (ok, out) = client(&outbound, "api", &["stream", "50"]).await;
    assert!(ok, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("msg-")).count(), 50);
    let (ok, out) = client(&outbound, "api", &["fail"]).await;
    assert!(ok, "{out}");
    let metrics = web.metrics().await;
    let by = |code: &str| {
        let series = format!("remora_grpc_responses_total{{backend=\"api\",grpc_status=\"{code}\",listener=\"outbound\",route=\"api\"}}");
        metric(&metrics, &series)
    };
    assert_eq!((by("0"), by("14")), (2.0, 1.0), "{metrics}");
}

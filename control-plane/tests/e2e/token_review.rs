//! Kubernetes ServiceAccount tokens end to end: the real control plane
//! with `--token-review`, its kube client pointed by `KUBECONFIG` at a
//! small fake API server on loopback that answers TokenReviews from the
//! fixtures (`tests/fixtures/tokenreview/`). Requests with a real
//! CSR get a certificate for their ServiceAccount's SPIFFE ID (200), are
//! refused another workload (403), a bad token (401) and an API-server
//! failure (503); a sidecar whose projected token file is rotated renews
//! with the new token.

use super::*;
use http::{Request as HttpRequest, Response as HttpResponse};
use http_body_util::Full;
use remora_test_support::ProxyProcess;
use std::ffi::OsStr;

const WEB_V1: &str = "sa-web-token-v1.eyJhbGciOiJSUzI1NiJ9";
const WEB_V2: &str = "sa-web-token-v2.eyJhbGciOiJSUzI1NiJ9";
const API_TOKEN: &str = "sa-api-token.eyJhbGciOiJSUzI1NiJ9";
/// A token the fake API server fails on (500).
const FAILING: &str = "the-api-server-fails-on-this-one";
/// The control plane's own credential, from the kubeconfig.
const CP_TOKEN: &str = "control-plane-own-token";
const TOKENREVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

const MESH: &str = "trust_domain: example.org
workloads:
  - { name: web.shop, namespace: shop, service_account: web, outbound: 127.0.0.1:0 }
  - { name: api.shop, namespace: shop, service_account: api, outbound: 127.0.0.1:0 }
";

/// One request the fake API server got.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    authorization: String,
    body: Value,
}

/// A fake Kubernetes API server: TokenReviews only, answered from the
/// fixtures by token. Stopped (its task aborted) when dropped.
struct FakeApiServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    async fn start() -> FakeApiServer {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                let record = record.clone();
                let service = hyper::service::service_fn(move |req| {
                    let record = record.clone();
                    async move { Ok::<_, Infallible>(answer(req, &record).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        FakeApiServer { addr, seen, task }
    }

    /// A kubeconfig naming this server and the control plane's token.
    fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1
kind: Config
clusters:
  - name: fake
    cluster: {{ server: 'http://{}' }}
users:
  - name: remora-control-plane
    user: {{ token: {CP_TOKEN} }}
contexts:
  - name: fake
    context: {{ cluster: fake, user: remora-control-plane }}
current-context: fake
",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn tokens_seen(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| s.body["spec"]["token"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The API server's answer: the fixture for the token (the token echoed
/// in `spec.token`, as the API server does), or a 404 Status elsewhere.
async fn answer(
    req: HttpRequest<Incoming>,
    record: &Mutex<Vec<Seen>>,
) -> HttpResponse<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        authorization: parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        body: body.clone(),
    });
    let token = body["spec"]["token"].as_str().unwrap_or("");
    let for_us = body["spec"]["audiences"] == serde_json::json!(["remora"]);
    let (status, fixture) = if parts.method != "POST" || parts.uri.path() != TOKENREVIEWS {
        (404, None)
    } else {
        match token {
            WEB_V1 | WEB_V2 if for_us => (201, Some("authenticated-shop-web.json")),
            API_TOKEN if for_us => (201, Some("authenticated-shop-api.json")),
            FAILING => (500, Some("internal-error.json")),
            _ => (201, Some("unauthenticated.json")),
        }
    };
    let text = match fixture {
        Some(name) => {
            let path = format!(
                "{}/tests/fixtures/tokenreview/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::read_to_string(path).unwrap().replace("TOKEN", token)
        }
        None => r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
            .to_string(),
    };
    HttpResponse::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap()
}

/// A control plane with a fresh CA and `--token-review`, on `api`.
async fn control_plane(dir: &Path, api: &FakeApiServer, lifetime: &str) -> ControlPlane {
    let ca_dir = dir.join("ca");
    let out = std::process::Command::new(bin())
        .args(["ca", "init", "--trust-domain", "example.org", "--dir"])
        .arg(&ca_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (cert, key) = (ca_dir.join("ca.crt"), ca_dir.join("ca.key"));
    let args: [&OsStr; 7] = [
        "--ca-cert".as_ref(),
        cert.as_ref(),
        "--ca-key".as_ref(),
        key.as_ref(),
        "--token-review".as_ref(),
        "--cert-lifetime".as_ref(),
        lifetime.as_ref(),
    ];
    let kubeconfig = api.kubeconfig(dir);
    let env: [(&str, &OsStr); 1] = [("KUBECONFIG", kubeconfig.as_ref())];
    let cp = ControlPlane::start_with_env(MESH, "127.0.0.1:0".parse().unwrap(), &args, &env).await;
    assert!(
        cp.logs()
            .contains("ServiceAccount tokens checked with the TokenReview API"),
        "{}",
        cp.logs()
    );
    cp
}

async fn certify(cp: &ControlPlane, token: &str, workload: &str) -> (u16, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let body = serde_json::json!({ "workload": workload, "csr": csr }).to_string();
    let rsp = Request::new("POST", &format!("http://{}/v1/certify", cp.listen))
        .header("content-type", "application/json")
        .header("authorization", &format!("Bearer {token}"))
        .body(body)
        .send()
        .await;
    (rsp.status, rsp.text())
}

/// The URI SANs of the first certificate of a PEM chain.
fn uri_sans(chain: &str) -> Vec<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

fn failures(metrics: &str, reason: &str) -> f64 {
    let series = format!("remora_cp_certificate_failures_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_token_gets_its_own_workload_a_certificate() {
    let dir = tempdir();
    let api = FakeApiServer::start().await;
    let cp = control_plane(dir.path(), &api, "1h").await;

    for (token, workload, sa) in [(WEB_V1, "web.shop", "web"), (API_TOKEN, "api.shop", "api")] {
        let (status, body) = certify(&cp, token, workload).await;
        assert_eq!(status, 200, "{workload}: {body}");
        let rsp: Value = serde_json::from_str(&body).unwrap();
        let chain = rsp["certificate_chain"].as_str().unwrap();
        assert_eq!(
            uri_sans(chain),
            [format!("spiffe://example.org/ns/shop/sa/{sa}")],
            "{workload}"
        );
    }
    let asked = api.seen();
    assert_eq!(asked.len(), 2, "{asked:?}");
    for (seen, token) in asked.iter().zip([WEB_V1, API_TOKEN]) {
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, TOKENREVIEWS);
        assert_eq!(seen.authorization, format!("Bearer {CP_TOKEN}"));
        assert_eq!(seen.body["kind"], "TokenReview");
        assert_eq!(seen.body["spec"]["token"], token);
        assert_eq!(
            seen.body["spec"]["audiences"],
            serde_json::json!(["remora"])
        );
    }

    // (what, token, workload, status, message fragment)
    let cases = [
        (
            "another workload's",
            WEB_V1,
            "api.shop",
            403,
            "does not allow workload `api.shop`",
        ),
        (
            "a bad token",
            "not-a-service-account-token",
            "web.shop",
            401,
            "unknown token",
        ),
        (
            "the API server failing",
            FAILING,
            "web.shop",
            503,
            "500 InternalError",
        ),
    ];
    for (what, token, workload, status, fragment) in cases {
        let (got, text) = certify(&cp, token, workload).await;
        assert_eq!(got, status, "{what}: {text}");
        assert!(
            text.contains(fragment) && text.trim().lines().count() == 1,
            "{what}: {text}"
        );
    }
    // The web token's review was cached: the 403 needed no new one.
    assert_eq!(
        api.tokens_seen(),
        [WEB_V1, API_TOKEN, "not-a-service-account-token", FAILING]
    );
    let metrics = cp.metrics().await;
    assert_eq!(failures(&metrics, "forbidden"), 1.0, "{metrics}");
    assert_eq!(failures(&metrics, "unauthenticated"), 1.0);
    assert_eq!(failures(&metrics, "credential_unavailable"), 1.0);
    let logs = cp.logs();
    for token in [WEB_V1, API_TOKEN, "not-a-service-account-token", FAILING] {
        assert!(!logs.contains(token), "a token in the logs:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_renews_with_its_rotated_projected_token() {
    let dir = tempdir();
    let api = FakeApiServer::start().await;
    let cp = control_plane(dir.path(), &api, "6s").await;
    let token = dir.path().join("remora-token");
    std::fs::write(&token, WEB_V1).unwrap();
    let args: [&OsStr; 2] = ["--identity-token".as_ref(), token.as_ref()];
    // Returns once /ready answers 200: a snapshot and a certificate.
    let proxy = ProxyProcess::start_sidecar(&proxy_bin(), cp.listen, "web.shop", &args)
        .await
        .unwrap();
    assert_eq!(api.tokens_seen(), [WEB_V1]);

    // The kubelet replaces the token (atomically, by a symlink swap; a
    // rename here): the next renewal (at ~70% of 6 s) sends the new one.
    let next = dir.path().join("remora-token.new");
    std::fs::write(&next, WEB_V2).unwrap();
    std::fs::rename(&next, &token).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !api.tokens_seen().iter().any(|t| t == WEB_V2) {
        assert!(
            Instant::now() < deadline,
            "no review of the new token: {:?}",
            api.tokens_seen()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewed = loop {
        let m = proxy.metrics().await;
        let renewals = m
            .lines()
            .find_map(|l| {
                l.strip_prefix("remora_identity_renewals_total ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0);
        if renewals >= 2.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "no renewal; metrics:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        renewed.contains("remora_identity_renewal_failures_total 0"),
        "{renewed}"
    );
    let issued: Vec<Value> = proxy
        .logs_json()
        .into_iter()
        .filter(|v| v["message"] == "certificate issued")
        .collect();
    assert!(issued.len() >= 2, "{issued:?}");
    for v in &issued {
        assert_eq!(v["spiffe_id"], "spiffe://example.org/ns/shop/sa/web");
    }
    assert_eq!(proxy.admin_get("/ready").await.0, 200);
}

use super::*;
use crate::auth::JoinTokens;
use http::StatusCode;
use rcgen::{CertificateParams, KeyPair};
use std::time::Duration;
use tokio::time::Instant;

const WEB_TOKEN: &str = "web-0123456789abcdef";
const API_TOKEN: &str = "api-0123456789abcdef";
const MESH: &str = "trust_domain: example.org
workloads:
  - {name: web, namespace: shop, outbound: 127.0.0.1:1}
  - {name: api, namespace: shop, service_account: api-sa, outbound: 127.0.0.1:2}
";

struct Fixture {
    certifier: Certifier,
    _dir: remora_test_support::proxy::TempDir,
}

fn certifier(with_ca: bool) -> Fixture {
    let dir = remora_test_support::proxy::tempdir();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!("tokens:\n  - {{token: {WEB_TOKEN}, workload: web}}\n  - {{token: {API_TOKEN}, workload: api}}\n"),
    )
    .unwrap();
    let mesh = crate::mesh::parse(MESH).unwrap();
    let ca = with_ca.then(|| {
        let (cert, key, _) = crate::ca::dev_root("example.org", SystemTime::now()).unwrap();
        Arc::new(Ca::from_pem(&cert, &key, None, Duration::from_secs(600)).unwrap())
    });
    let roots = ca
        .as_ref()
        .map_or_else(Vec::new, |c| c.trust_roots().to_vec());
    let generation = Generation::build_with_roots(&mesh, &roots, None, Instant::now());
    let auth: Option<Arc<dyn Authenticator>> = Some(Arc::new(JoinTokens::load(&tokens).unwrap()));
    Fixture {
        certifier: Certifier {
            ca,
            auth,
            generations: watch::channel(Arc::new(generation)).1,
            metrics: Metrics::new(),
        },
        _dir: dir,
    }
}

fn csr() -> String {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["ignored.example".to_string()]).unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn headers(auth: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(a) = auth {
        h.insert(header::AUTHORIZATION, a.parse().unwrap());
    }
    h
}

fn body(workload: &str, csr: &str) -> Vec<u8> {
    serde_json::to_vec(&CertifyRequest {
        workload: workload.into(),
        csr: csr.into(),
    })
    .unwrap()
}

#[tokio::test]
async fn a_token_gets_its_workload_a_certificate() {
    let f = certifier(true);
    let now = SystemTime::now();
    let bearer = format!("Bearer {API_TOKEN}");
    let c = f
        .certifier
        .certify(&headers(Some(&bearer)), &body("api", &csr()), now)
        .await
        .unwrap();
    assert_eq!(c.workload, "api");
    assert_eq!(c.spiffe_id, "spiffe://example.org/ns/shop/sa/api-sa");
    assert_eq!(c.serial.len(), 32);
    let rsp = &c.response;
    assert_eq!(
        rsp.certificate_chain.matches("BEGIN CERTIFICATE").count(),
        1
    );
    assert_eq!(
        rsp.trust_roots,
        f.certifier.ca.as_ref().unwrap().trust_roots()
    );
    assert_eq!(rsp.expires_at, rfc3339(now + Duration::from_secs(600)));
    // The scheme is case-insensitive.
    let lower = format!("bearer {WEB_TOKEN}");
    let c = f
        .certifier
        .certify(&headers(Some(&lower)), &body("web", &csr()), now)
        .await
        .unwrap();
    assert_eq!(c.spiffe_id, "spiffe://example.org/ns/shop/sa/web");
}

/// (what, certifier, authorization, body, status, reason, message fragment)
type Case<'a> = (
    &'a str,
    &'a Certifier,
    Option<&'a str>,
    Vec<u8>,
    u16,
    &'a str,
    &'a str,
);

#[tokio::test]
async fn refusals_have_a_status_and_a_reason() {
    let f = certifier(true);
    let no_ca = certifier(false);
    let web = format!("Bearer {WEB_TOKEN}");
    let wrong = "Bearer web-0123456789abcdeX".to_string();
    let good = body("web", &csr());
    let cases: Vec<Case> = vec![
        (
            "no CA",
            &no_ca.certifier,
            Some(&web),
            good.clone(),
            503,
            "no_ca",
            "no CA",
        ),
        (
            "no token",
            &f.certifier,
            None,
            good.clone(),
            401,
            "unauthenticated",
            "Bearer",
        ),
        (
            "another scheme",
            &f.certifier,
            Some("Basic d2ViOng="),
            good.clone(),
            401,
            "unauthenticated",
            "Bearer",
        ),
        (
            "an unknown token",
            &f.certifier,
            Some(&wrong),
            good.clone(),
            401,
            "unauthenticated",
            "unknown token",
        ),
        (
            "another workload's token",
            &f.certifier,
            Some(&web),
            body("api", &csr()),
            403,
            "forbidden",
            "does not allow workload `api`",
        ),
        (
            "a workload not in the mesh",
            &f.certifier,
            Some(&web),
            body("nope", &csr()),
            404,
            "unknown_workload",
            "the mesh has: api, web",
        ),
        (
            "not JSON",
            &f.certifier,
            Some(&web),
            b"csr please".to_vec(),
            400,
            "bad_request",
            "bad request body",
        ),
        (
            "not a CSR",
            &f.certifier,
            Some(&web),
            body(
                "web",
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            ),
            400,
            "bad_csr",
            "bad CSR",
        ),
    ];
    for (what, c, auth, body, status, reason, fragment) in cases {
        let err = c
            .certify(&headers(auth), &body, SystemTime::now())
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: issued"));
        assert_eq!(
            err.status(),
            StatusCode::from_u16(status).unwrap(),
            "{what}: {err}"
        );
        assert_eq!(err.reason(), reason, "{what}");
        let msg = err.to_string();
        assert!(msg.contains(fragment), "{what}: {msg}");
        assert!(
            !msg.contains("0123456789abcdef"),
            "{what}: a token in {msg}"
        );
        assert!(!msg.contains('\n'), "{what}: one line");
    }
}

//! `certify`: `POST /v1/certify` without the HTTP around it
//! (`remora_control_plane::certify::Certifier::certify`): the request body
//! (JSON) and its CSR (PEM, then DER), arbitrary.
//!
//! Input: byte 0 picks what the rest is — 0: the whole body; 1: the DER of
//! the CSR of a well-formed body for workload `web`; 2: the CSR's PEM text
//! there; 3: the `authorization` header up to the first newline, then the
//! body. Invariants: no panic; anything the client sent wrong is refused
//! with a 4xx (never a 5xx: the fault is the client's); a certificate is
//! issued only for a CSR whose signature verifies, with the workload's
//! SPIFFE ID as its only name, whatever the CSR asked for.

use base64::Engine;
use http::{header, HeaderMap, HeaderValue};
use remora_control_plane::auth::{Authenticator, Denied};
use remora_control_plane::ca::{dev_root, Ca};
use remora_control_plane::certify::Certifier;
use remora_control_plane::metrics::Metrics;
use remora_control_plane::source::Generation;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const MESH: &str = "trust_domain: example.org
workloads:
  - {name: web, namespace: shop, outbound: 127.0.0.1:1}
";
const TOKEN: &str = "web-0123456789abcdef";
const SPIFFE_ID: &str = "spiffe://example.org/ns/shop/sa/web";

/// One token, for `web`.
struct OneToken;

impl Authenticator for OneToken {
    fn authorize<'a>(
        &'a self,
        token: &'a str,
        workload: &'a str,
        _: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), Denied>> + Send + 'a>> {
        let verdict = match (token == TOKEN, workload == "web") {
            (true, true) => Ok(()),
            (true, false) => Err(Denied::NotFor),
            (false, _) => Err(Denied::Unknown),
        };
        Box::pin(async move { verdict })
    }
}

fn certifier() -> &'static Certifier {
    static CERTIFIER: OnceLock<(watch::Sender<Arc<Generation>>, Certifier)> = OnceLock::new();
    &CERTIFIER
        .get_or_init(|| {
            let mesh = remora_control_plane::mesh::parse(MESH).expect("a valid mesh");
            let (cert, key, _) = dev_root("example.org", SystemTime::now()).expect("a root");
            let ca = Ca::from_pem(&cert, &key, None, Duration::from_secs(600)).expect("a CA");
            let generation = Generation::build_with_roots(
                &mesh,
                ca.trust_roots(),
                None,
                tokio::time::Instant::now(),
            );
            let (tx, rx) = watch::channel(Arc::new(generation));
            let certifier = Certifier {
                ca: Some(Arc::new(ca)),
                auth: Some(Arc::new(OneToken)),
                generations: rx,
                metrics: Metrics::new(),
            };
            (tx, certifier)
        })
        .1
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE REQUEST-----\n");
    s
}

fn body_with(csr: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "workload": "web", "csr": csr })).expect("JSON")
}

pub fn run(data: &[u8]) {
    let [mode, rest @ ..] = data else {
        return;
    };
    let mut headers = HeaderMap::new();
    let bearer = HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("a header value");
    headers.insert(header::AUTHORIZATION, bearer);
    let body = match mode % 4 {
        0 => rest.to_vec(),
        1 => body_with(&pem(rest)),
        2 => body_with(&String::from_utf8_lossy(rest)),
        _ => {
            let (h, body) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            match HeaderValue::from_bytes(h) {
                Ok(v) => headers.insert(header::AUTHORIZATION, v),
                Err(_) => headers.remove(header::AUTHORIZATION),
            };
            body.to_vec()
        }
    };
    let result = crate::block_on(certifier().certify(&headers, &body, SystemTime::now()));
    match result {
        Ok(c) => {
            assert_eq!(c.workload, "web");
            assert_eq!(c.spiffe_id, SPIFFE_ID);
            let leaf = c
                .response
                .certificate_chain
                .split("-----END CERTIFICATE-----")
                .next()
                .expect("a leaf");
            let b64: String = leaf
                .lines()
                .filter(|l| !l.starts_with("-----") && !l.is_empty())
                .collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("the leaf is base64");
            let (_, cert) = X509Certificate::from_der(&der).expect("the leaf parses");
            let names: Vec<String> = cert
                .subject_alternative_name()
                .expect("a SAN extension")
                .expect("a SAN extension")
                .value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(u) => u.to_string(),
                    other => format!("{other:?}"),
                })
                .collect();
            assert_eq!(names, [SPIFFE_ID], "the leaf names other things");
        }
        Err(e) => assert!(
            e.status().is_client_error(),
            "{} for a client's mistake: {e}",
            e.status()
        ),
    }
}

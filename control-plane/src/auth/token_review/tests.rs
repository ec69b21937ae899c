use super::*;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{json, Value};

const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.projected-token-of-web.sig";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/tokenreview/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn status(json: Value) -> TokenReviewStatus {
    serde_json::from_value(json).unwrap()
}

fn sa_status(username: &str, audiences: &[&str]) -> TokenReviewStatus {
    status(json!({
        "authenticated": true,
        "user": {"username": username, "groups": ["system:authenticated"]},
        "audiences": audiences,
    }))
}

/// (what, the API server's answer, workload, SPIFFE ID, verdict)
type Case<'a> = (
    &'a str,
    TokenReviewStatus,
    &'a str,
    &'a str,
    Result<(), Denied>,
);

#[test]
fn a_token_allows_its_own_service_account_only() {
    let web = "system:serviceaccount:shop:web";
    let cases: Vec<Case> = vec![
        (
            "its own workload",
            sa_status(web, &["remora"]),
            "web.shop",
            WEB_ID,
            Ok(()),
        ),
        (
            "any trust domain",
            sa_status(web, &["other", "remora"]),
            "web.shop",
            "spiffe://example.org/ns/shop/sa/web",
            Ok(()),
        ),
        (
            "a service account name with dots",
            sa_status("system:serviceaccount:shop:web.v2", &["remora"]),
            "web.v2.shop",
            "spiffe://cluster.local/ns/shop/sa/web.v2",
            Ok(()),
        ),
        (
            "another service account's workload",
            sa_status(web, &["remora"]),
            "api.shop",
            "spiffe://cluster.local/ns/shop/sa/api",
            Err(Denied::NotFor),
        ),
        (
            "the same name in another namespace",
            sa_status(web, &["remora"]),
            "web.jobs",
            "spiffe://cluster.local/ns/jobs/sa/web",
            Err(Denied::NotFor),
        ),
        (
            "a workload named right with another identity",
            sa_status(web, &["remora"]),
            "web.shop",
            "spiffe://cluster.local/ns/jobs/sa/web",
            Err(Denied::NotFor),
        ),
        (
            "an identity of another account",
            sa_status(web, &["remora"]),
            "web.shop",
            "spiffe://cluster.local/ns/shop/sa/web2",
            Err(Denied::NotFor),
        ),
        (
            "an identity with no trust domain",
            sa_status(web, &["remora"]),
            "web.shop",
            "spiffe:///ns/shop/sa/web",
            Err(Denied::NotFor),
        ),
        (
            "not a SPIFFE ID",
            sa_status(web, &["remora"]),
            "web.shop",
            "ns/shop/sa/web",
            Err(Denied::NotFor),
        ),
        (
            "a user, not a service account",
            sa_status("alice@example.com", &["remora"]),
            "web.shop",
            WEB_ID,
            Err(Denied::NotFor),
        ),
        (
            "a node",
            sa_status("system:node:worker-1", &["remora"]),
            "web.shop",
            WEB_ID,
            Err(Denied::NotFor),
        ),
        (
            "a malformed username: no name",
            sa_status("system:serviceaccount:shop", &["remora"]),
            "web.shop",
            WEB_ID,
            Err(Denied::NotFor),
        ),
        (
            "a malformed username: empty namespace",
            sa_status("system:serviceaccount::web", &["remora"]),
            "web.",
            WEB_ID,
            Err(Denied::NotFor),
        ),
        (
            "a malformed username: a colon too many",
            sa_status("system:serviceaccount:shop:web:x", &["remora"]),
            "web:x.shop",
            WEB_ID,
            Err(Denied::NotFor),
        ),
        (
            "no username",
            status(json!({"authenticated": true, "audiences": ["remora"]})),
            "web.shop",
            WEB_ID,
            Err(Denied::NotFor),
        ),
        (
            "another audience",
            sa_status(web, &["https://kubernetes.default.svc"]),
            "web.shop",
            WEB_ID,
            Err(Denied::Unknown),
        ),
        (
            "no audiences",
            status(json!({"authenticated": true, "user": {"username": web}})),
            "web.shop",
            WEB_ID,
            Err(Denied::Unknown),
        ),
        (
            "not authenticated",
            status(json!({"user": {}, "error": "[invalid bearer token]"})),
            "web.shop",
            WEB_ID,
            Err(Denied::Unknown),
        ),
        (
            "authenticated false, with a user",
            status(
                json!({"authenticated": false, "user": {"username": web}, "audiences": ["remora"]}),
            ),
            "web.shop",
            WEB_ID,
            Err(Denied::Unknown),
        ),
        (
            "an empty status",
            TokenReviewStatus::default(),
            "web.shop",
            WEB_ID,
            Err(Denied::Unknown),
        ),
    ];
    for (what, answer, workload, spiffe_id, want) in cases {
        let got = review(&answer, "remora")
            .and_then(|sa| allows(&sa, workload, spiffe_id))
            .map_err(|r| r.denied());
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn refusals_say_why() {
    let sa = ServiceAccount::from_username("system:serviceaccount:shop:web").unwrap();
    assert_eq!(sa.workload(), "web.shop");
    let other = allows(&sa, "api.shop", WEB_ID).unwrap_err().to_string();
    assert!(
        other.contains("shop/web may only get workload `web.shop`, not `api.shop`"),
        "{other}"
    );
    let audience = review(&sa_status("x", &["kube"]), "remora")
        .unwrap_err()
        .to_string();
    assert!(
        audience.contains(r#"["kube"] do not include `remora`"#),
        "{audience}"
    );
    let user = review(&sa_status("alice", &["remora"]), "remora")
        .unwrap_err()
        .to_string();
    assert!(user.contains("`alice` is not a ServiceAccount"), "{user}");
}

#[test]
fn scrub_keeps_one_short_line_without_the_token() {
    assert_eq!(
        scrub("bad\ntoken abc here", "abc"),
        "bad token <token> here"
    );
    let long = scrub(&"é".repeat(400), "x");
    assert!(
        long.len() <= 512 + '…'.len_utf8() && long.ends_with('…'),
        "{long}"
    );
}

#[test]
fn the_cache_keeps_a_review_for_a_minute_and_stays_bounded() {
    let t0 = Instant::now();
    let sa = ServiceAccount::from_username("system:serviceaccount:shop:web").unwrap();
    let mut cache = Cache::default();
    cache.insert((1, 1), sa.clone(), t0);
    assert_eq!(
        cache.get((1, 1), t0 + CACHE_TTL - Duration::from_secs(1)),
        Some(sa.clone())
    );
    assert_eq!(cache.get((1, 2), t0), None);
    assert_eq!(cache.get((1, 1), t0 + CACHE_TTL), None);
    assert_eq!(cache.len(), 0, "an expired entry is dropped when seen");

    // Full of fresh entries: it starts over.
    let mut cache = Cache::default();
    for i in 0..CACHE_MAX as u64 {
        cache.insert((i, 0), sa.clone(), t0);
    }
    cache.insert((u64::MAX, 0), sa.clone(), t0);
    assert_eq!(cache.len(), 1);
    // Full, half expired: the expired half goes.
    let mut cache = Cache::default();
    for i in 0..CACHE_MAX as u64 {
        let at = if i % 2 == 0 {
            t0
        } else {
            t0 + Duration::from_secs(30)
        };
        cache.insert((i, 0), sa.clone(), at);
    }
    cache.insert((u64::MAX, 0), sa.clone(), t0 + CACHE_TTL);
    assert_eq!(cache.len(), CACHE_MAX / 2 + 1);
    // Refreshing a known token in a full cache drops nothing.
    cache.insert((1, 0), sa, t0 + CACHE_TTL);
    assert_eq!(cache.len(), CACHE_MAX / 2 + 1);
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A reviewer whose API server is the test, through a mocked service.
fn reviewer(audience: &str) -> (TokenReviewer, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (TokenReviewer::new(client, audience), handle)
}

/// Answers the next request with `status` and the fixture `name` (its
/// `TOKEN` replaced by the token asked about); returns the request.
async fn answer(handle: &mut Handle, status: u16, name: &str) -> (http::request::Parts, Value) {
    let (req, respond) = handle
        .next_request()
        .await
        .expect("a request to the API server");
    let (parts, body) = req.into_parts();
    let body: Value = serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap();
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let text = fixture(name).replace("TOKEN", token);
    respond.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(Bytes::from(text)))
            .unwrap(),
    );
    (parts, body)
}

#[tokio::test]
async fn a_review_is_one_post_of_the_token_for_our_audience() {
    let (reviewer, mut handle) = reviewer("remora");
    let (verdict, (parts, body)) = tokio::join!(
        reviewer.authorize(TOKEN, "web.shop", WEB_ID),
        answer(&mut handle, 201, "authenticated-shop-web.json"),
    );
    assert_eq!(verdict, Ok(()));
    assert_eq!(parts.method, Method::POST);
    assert_eq!(
        parts.uri.path(),
        "/apis/authentication.k8s.io/v1/tokenreviews"
    );
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["spec"]["token"], TOKEN);
    assert_eq!(body["spec"]["audiences"], json!(["remora"]));

    // Cached: with the API server gone, the same token still gets its own
    // workload, and still not another...
    drop(handle);
    assert_eq!(reviewer.authorize(TOKEN, "web.shop", WEB_ID).await, Ok(()));
    assert_eq!(
        reviewer
            .authorize(TOKEN, "api.shop", "spiffe://cluster.local/ns/shop/sa/api")
            .await,
        Err(Denied::NotFor)
    );
    // ...while a new token needs the API server.
    let other = reviewer
        .authorize("another-token", "web.shop", WEB_ID)
        .await;
    assert!(matches!(other, Err(Denied::Unavailable(_))), "{other:?}");
}

#[tokio::test]
async fn another_service_account_is_forbidden_and_a_bad_token_unknown() {
    let (reviewer, mut handle) = reviewer("remora");
    let (verdict, _) = tokio::join!(
        reviewer.authorize(TOKEN, "web.shop", WEB_ID),
        answer(&mut handle, 201, "authenticated-shop-api.json"),
    );
    assert_eq!(verdict, Err(Denied::NotFor));
    // Refusals are not cached: each asks again.
    for _ in 0..2 {
        let (verdict, _) = tokio::join!(
            reviewer.authorize("revoked", "web.shop", WEB_ID),
            answer(&mut handle, 201, "unauthenticated.json"),
        );
        assert_eq!(verdict, Err(Denied::Unknown));
    }
}

#[tokio::test]
async fn the_audience_is_ours_both_ways() {
    let (reviewer, mut handle) = reviewer("mesh-ca");
    // The fixture's token is for `remora`, not `mesh-ca`.
    let (verdict, (_, body)) = tokio::join!(
        reviewer.authorize(TOKEN, "web.shop", WEB_ID),
        answer(&mut handle, 201, "authenticated-shop-web.json"),
    );
    assert_eq!(body["spec"]["audiences"], json!(["mesh-ca"]));
    assert_eq!(verdict, Err(Denied::Unknown));
}

#[tokio::test]
async fn api_server_failures_are_unavailable_and_say_why() {
    // (fixture or raw body, HTTP status, fragments of the reason)
    let cases: [(&str, u16, &[&str]); 4] = [
        (
            "unauthorized.json",
            401,
            &["401 Unauthorized", "the control plane's own credential"],
        ),
        (
            "forbidden.json",
            403,
            &[
                "403 Forbidden",
                "cannot create resource",
                "needs `create` on `tokenreviews`",
            ],
        ),
        (
            "internal-error.json",
            500,
            &["500 InternalError", "etcdserver: request timed out"],
        ),
        ("unauthenticated.json", 502, &["502", "<token>"]),
    ];
    for (name, code, fragments) in cases {
        let (reviewer, mut handle) = reviewer("remora");
        let (verdict, _) = tokio::join!(
            reviewer.authorize(TOKEN, "web.shop", WEB_ID),
            answer(&mut handle, code, name),
        );
        let Err(Denied::Unavailable(why)) = verdict else {
            panic!("{name}: {verdict:?}");
        };
        for f in fragments {
            assert!(why.contains(f), "{name}: {why}");
        }
        assert!(!why.contains(TOKEN) && !why.contains('\n'), "{name}: {why}");
        // Not cached either: the next request asks again.
        let (verdict, _) = tokio::join!(
            reviewer.authorize(TOKEN, "web.shop", WEB_ID),
            answer(&mut handle, 201, "authenticated-shop-web.json"),
        );
        assert_eq!(verdict, Ok(()), "{name}");
    }
}

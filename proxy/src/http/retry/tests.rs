use super::*;
use http::HeaderValue;

fn policy(on: &[RetryOn]) -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        on: on.to_vec(),
        status_codes: vec![409],
        per_try_timeout: None,
        backoff: Default::default(),
        buffer_bytes: 1024,
    }
}

#[test]
fn responses_are_classified() {
    let p = policy(&[RetryOn::GatewayError, RetryOn::Unavailable]);
    let none = HeaderMap::new();
    let s = |c| StatusCode::from_u16(c).unwrap();
    assert_eq!(reason_of_response(&p, s(503), &none), Some("gateway-error"));
    assert_eq!(
        reason_of_response(&p, s(500), &none),
        None,
        "500 is not a gateway error"
    );
    assert_eq!(reason_of_response(&p, s(409), &none), Some("status-code"));
    assert_eq!(reason_of_response(&p, s(200), &none), None);
    let mut grpc = HeaderMap::new();
    grpc.insert("grpc-status", HeaderValue::from_static("14"));
    assert_eq!(reason_of_response(&p, s(200), &grpc), Some("unavailable"));
    grpc.insert("grpc-status", HeaderValue::from_static("8"));
    assert_eq!(reason_of_response(&p, s(200), &grpc), None);
    let mut stop = HeaderMap::new();
    stop.insert(NO_RETRY, HeaderValue::from_static("1"));
    assert_eq!(
        reason_of_response(&p, s(503), &stop),
        None,
        "the upstream said no"
    );
    let p = policy(&[RetryOn::ServerError]);
    assert_eq!(reason_of_response(&p, s(500), &none), Some("5xx"));
}

#[test]
fn errors_are_classified() {
    let addr = "127.0.0.1:1".parse().unwrap();
    let refused = ProxyError::Connect {
        addr,
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    };
    assert_eq!(
        reason_of_error(&policy(&[RetryOn::ConnectFailure]), &refused),
        Some("connect-failure")
    );
    assert_eq!(
        reason_of_error(&policy(&[RetryOn::Unavailable]), &refused),
        None
    );
    let t = ProxyError::PerTryTimeout(Duration::from_millis(5));
    assert_eq!(
        reason_of_error(&policy(&[RetryOn::GatewayError]), &t),
        Some("per-try-timeout")
    );
    assert_eq!(reason_of_error(&policy(&[RetryOn::Unavailable]), &t), None);
    assert_eq!(
        reason_of_error(&policy(&[RetryOn::Reset]), &ProxyError::NoRoute),
        None
    );
}

#[test]
fn backoff_is_jittered_exponential_and_capped() {
    let p = policy(&[]);
    let mut rng = fastrand::Rng::with_seed(9);
    for retry in 1..8 {
        let ceiling =
            Duration::from_millis(25 * (1 << (retry - 1))).min(Duration::from_millis(250));
        let waits: Vec<_> = (0..200).map(|_| backoff(&p, retry, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w <= ceiling), "retry {retry}");
        assert!(
            waits.iter().any(|w| *w > ceiling / 2),
            "jitter spreads over the interval"
        );
    }
}

const MS: u64 = 1_000_000;

#[test]
fn budget_allows_the_reserve_plus_a_ratio() {
    let cfg = remora_api::RetryBudget {
        ratio: 0.2,
        min_per_second: 1,
        window: remora_api::Duration::from_secs(10),
    };
    let b = RetryBudget::new(&cfg);
    let now = 5_000 * MS;
    // Reserve: 1/s over 10 s = 10 retries with no traffic at all.
    for _ in 0..100 {
        b.deposit(now);
    }
    // 10 + 0.2 * 100 = 30 retries.
    let allowed = (0..100).filter(|_| b.withdraw(now)).count();
    assert_eq!(allowed, 30);
    // After the window has passed, the budget is fresh again.
    let later = now + 11_000 * MS;
    assert!(b.withdraw(later));
}

#[test]
fn budget_window_slides() {
    let cfg = remora_api::RetryBudget {
        ratio: 1.0,
        min_per_second: 0,
        window: remora_api::Duration::from_secs(10),
    };
    let b = RetryBudget::new(&cfg);
    for _ in 0..10 {
        b.deposit(0);
    }
    assert_eq!((0..20).filter(|_| b.withdraw(0)).count(), 10);
    // Nine seconds later the old requests still count (and so do the retries).
    assert!(!b.withdraw(9_000 * MS));
    // After the window they are gone.
    assert!(
        !b.withdraw(10_500 * MS),
        "no requests in the window: no budget"
    );
    b.deposit(10_500 * MS);
    assert!(b.withdraw(10_500 * MS));
}

#[test]
fn a_clients_broken_body_is_never_retried() {
    let all = [
        RetryOn::ConnectFailure,
        RetryOn::Reset,
        RetryOn::ServerError,
        RetryOn::GatewayError,
        RetryOn::RefusedStream,
    ];
    let e = ProxyError::ClientBody("invalid chunk size line".into());
    assert_eq!(reason_of_error(&policy(&all), &e), None);
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    assert_eq!(e.cause(), "client-body");
    assert_eq!(e.fault(), crate::http::error::Fault::Downstream);
}

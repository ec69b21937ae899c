use super::*;
use remora_test_support::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

fn check(healthy_threshold: u32, unhealthy_threshold: u32) -> api::HealthCheck {
    api::HealthCheck {
        path: "/healthz".into(),
        interval: api::Duration::from_secs(5),
        timeout: api::Duration::from_secs(1),
        healthy_threshold,
        unhealthy_threshold,
    }
}

/// Feeds `results` ('+' success, '-' failure) to a fresh state; returns the
/// transitions ('U' up, 'D' down, '.' none) and the final health.
fn run(cfg: &api::HealthCheck, results: &str) -> (String, bool) {
    let h = HealthState::new();
    let transitions = results
        .chars()
        .map(|c| match h.record(c == '+', cfg) {
            Some(true) => 'U',
            Some(false) => 'D',
            None => '.',
        })
        .collect();
    (transitions, h.is_healthy())
}

#[test]
fn thresholds_drive_transitions() {
    let table = [
        // (healthy_threshold, unhealthy_threshold, results, transitions, healthy at end)
        (2, 3, "", "", true),
        (2, 3, "++++", "....", true),
        (2, 3, "--", "..", true),
        (2, 3, "---", "..D", false),
        (2, 3, "--+--", ".....", true),
        (2, 3, "---+", "..D.", false),
        (2, 3, "---++", "..D.U", true),
        (2, 3, "---+-++", "..D...U", true),
        (2, 3, "---++---", "..D.U..D", false),
        (1, 1, "-+-+", "DUDU", true),
        (0, 0, "-+", "DU", true),
        (3, 2, "--+++-", ".D..U.", true),
    ];
    for (up, down, results, want, healthy) in table {
        let got = run(&check(up, down), results);
        assert_eq!(
            got,
            (want.to_string(), healthy),
            "thresholds {up}/{down}, results {results:?}"
        );
    }
}

#[test]
fn reset_forgets_everything() {
    let (h, cfg) = (HealthState::new(), check(2, 1));
    assert_eq!(h.record(false, &cfg), Some(false));
    assert!(h.due(10, Duration::from_nanos(100)));
    h.reset();
    assert!(h.is_healthy());
    assert!(
        h.due(11, Duration::from_nanos(100)),
        "due at once after a reset"
    );
}

#[test]
fn due_once_per_interval_without_drift() {
    let h = HealthState::new();
    let interval = Duration::from_nanos(1000);
    // A supervisor ticking every 300 ns from t = 50.
    let probed: Vec<u64> = (0..20)
        .map(|i| 50 + i * 300)
        .filter(|&t| h.due(t, interval))
        .collect();
    assert_eq!(
        probed,
        [50, 1250, 2150, 3050, 4250, 5150],
        "5 intervals in 5100 ns"
    );
}

#[test]
fn due_restarts_after_falling_behind_or_a_shorter_interval() {
    let h = HealthState::new();
    assert!(
        h.due(0, Duration::from_nanos(1000)),
        "a new endpoint is due at once"
    );
    assert!(!h.due(999, Duration::from_nanos(1000)));
    assert!(
        h.due(5000, Duration::from_nanos(1000)),
        "late by four intervals"
    );
    assert!(
        !h.due(5999, Duration::from_nanos(1000)),
        "rescheduled from 5000, no catch-up burst"
    );
    assert!(h.due(6000, Duration::from_nanos(1000)));
    assert!(
        !h.due(6001, Duration::from_secs(60)),
        "a longer interval waits for the next probe"
    );
    assert!(
        h.due(6002, Duration::from_nanos(100)),
        "a shorter interval takes effect at once"
    );
    assert!(!h.due(6050, Duration::from_nanos(100)));
}

#[test]
fn only_one_concurrent_caller_is_told_to_probe() {
    let h = HealthState::new();
    let told: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| s.spawn(|| usize::from(h.due(77, Duration::from_secs(1)))))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(told, 1);
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn probe_is_true_only_for_2xx() {
    let up = Upstream::start("u").await;
    for (path, want) in [
        ("/status/200", true),
        ("/status/204", true),
        ("/status/301", false),
    ] {
        assert_eq!(
            probe(up.addr(), "u.test", path, SECOND).await,
            want,
            "{path}"
        );
    }
    for path in ["/status/404", "/status/503"] {
        assert!(!probe(up.addr(), "u.test", path, SECOND).await, "{path}");
    }
}

#[tokio::test]
async fn probe_of_a_closed_port_fails() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(!probe(addr, "u.test", "/", SECOND).await);
}

#[tokio::test]
async fn probe_times_out_on_a_slow_endpoint() {
    let up = Upstream::start("u").await;
    let start = Instant::now();
    assert!(
        !probe(
            up.addr(),
            "u.test",
            "/slow/5000",
            Duration::from_millis(200)
        )
        .await
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn probe_of_invalid_input_fails_without_connecting() {
    let up = Upstream::start("u").await;
    assert!(!probe(up.addr(), "bad\nhost", "/", SECOND).await);
    assert!(!probe(up.addr(), "u.test", "not a path", SECOND).await);
    assert_eq!(up.connections(), 0);
}

/// A server that answers one request with `response`, then closes, handing
/// back the request head it read.
async fn one_shot(response: &'static str) -> (SocketAddr, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed early");
            head.extend_from_slice(&buf[..n]);
        }
        sock.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8(head).unwrap()
    });
    (addr, server)
}

#[tokio::test]
async fn probe_sends_get_with_host_and_user_agent() {
    let (addr, server) = one_shot("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    assert!(probe(addr, "svc.test:8080", "/healthz?full=1", SECOND).await);
    let head = server.await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("get /healthz?full=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nhost: svc.test:8080\r\n"), "{head}");
    assert!(
        head.contains("\r\nuser-agent: remora-health-check\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn probe_accepts_a_response_followed_by_close() {
    let (addr, _server) = one_shot("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nok").await;
    assert!(probe(addr, "svc.test", "/", SECOND).await);
}

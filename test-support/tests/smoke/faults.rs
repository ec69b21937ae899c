//! Scripted failures on the test upstream: each [`Mode`], the `/healthz`
//! switch and the counters, and killing an upstream then bringing it back on
//! the same address.

use std::time::Duration;

use bytes::Bytes;
use remora_test_support::client::{self, Http1Conn, Http2Conn, HttpVersion, Request};
use remora_test_support::upstream::Mode;
use remora_test_support::Upstream;

const BOTH: [HttpVersion; 2] = [HttpVersion::Http1, HttpVersion::Http2];

async fn try_get(url: &str, version: HttpVersion) -> anyhow::Result<client::Response> {
    Request::new("GET", url)
        .version(version)
        .timeout(Duration::from_secs(5))
        .try_send()
        .await
}

async fn status(up: &Upstream, path: &str, version: HttpVersion) -> u16 {
    try_get(&up.url(path), version).await.unwrap().status
}

#[tokio::test]
async fn fail_status_applies_to_every_path_until_normal() {
    let up = Upstream::start("f").await;
    up.set_mode(Mode::FailStatus { status: 503 });
    for version in BOTH {
        for path in ["/", "/headers", "/status/200", "/bytes/10"] {
            let resp = try_get(&up.url(path), version).await.unwrap();
            assert_eq!(resp.status, 503, "{path} {version:?}");
            assert_eq!(resp.text(), "f failing\n");
            assert_eq!(resp.upstream(), Some("f"));
        }
    }
    // The request body is read, so a kept-alive connection stays usable.
    let mut conn = Http1Conn::connect(up.addr()).await;
    for _ in 0..2 {
        let resp = conn.send("POST", "/echo", &[], Bytes::from("x")).await;
        assert_eq!(resp.status, 503);
    }
    up.set_mode(Mode::Normal);
    assert_eq!(conn.get("/").await.status, 200);
    assert_eq!((up.requests(), up.failures()), (11, 10));
    assert_eq!(up.connections(), 9);
}

#[tokio::test]
async fn fail_every_alternates_counting_all_requests() {
    let up = Upstream::start("e").await;
    up.set_mode(Mode::FailEvery { n: 2, status: 500 });
    let mut seen = Vec::new();
    for i in 0..6 {
        seen.push(status(&up, "/", BOTH[i % 2]).await);
    }
    assert_eq!(seen, [200, 500, 200, 500, 200, 500]);
    assert_eq!((up.requests(), up.failures()), (6, 3));

    // Requests 7, 8, 9: numbering goes on from before the mode was set.
    up.set_mode(Mode::FailEvery { n: 3, status: 502 });
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(status(&up, "/", HttpVersion::Http1).await);
    }
    assert_eq!(seen, [200, 200, 502]);
    assert_eq!((up.requests(), up.failures()), (9, 4));
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let up = Upstream::start("r").await;
    let mut h1 = Http1Conn::connect(up.addr()).await;
    let h2 = Http2Conn::connect(up.addr()).await;
    assert_eq!(h1.get("/").await.status, 200);
    assert_eq!(h2.get("/").await.status, 200);

    up.set_mode(Mode::Reset);
    for version in BOTH {
        let err = try_get(&up.url("/"), version).await;
        assert!(err.is_err(), "{version:?}: {err:?}");
    }
    let in_time = Duration::from_secs(5);
    let h1_err = tokio::time::timeout(in_time, h1.try_send("GET", "/", &[], Bytes::new())).await;
    assert!(h1_err.expect("h1 reset in time").is_err());
    let h2_err = tokio::time::timeout(in_time, h2.try_send("GET", "/", &[], Bytes::new())).await;
    assert!(h2_err.expect("h2 reset in time").is_err());
    assert_eq!((up.requests(), up.failures()), (6, 4));

    up.set_mode(Mode::Normal);
    assert_eq!(status(&up, "/", HttpVersion::Http2).await, 200);
}

#[tokio::test]
async fn grpc_status_is_trailers_only() {
    let up = Upstream::start("g").await;
    up.set_mode(Mode::GrpcStatus { code: 14 });
    for version in BOTH {
        let resp = Request::new("POST", &up.url("/pkg.Svc/Method"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Bytes::from_static(b"\0\0\0\0\0"))
            .version(version)
            .send()
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("application/grpc"));
        assert_eq!(resp.header("grpc-status"), Some("14"));
        assert_eq!(resp.header("grpc-message"), Some("failing"));
        assert_eq!(resp.upstream(), Some("g"));
        assert!(resp.body.is_empty());
        assert!(resp.trailers.is_none(), "{:?}", resp.trailers);
    }
    assert_eq!(up.failures(), 2);
}

#[tokio::test]
async fn healthz_follows_set_health_not_the_mode() {
    let up = Upstream::start("hc").await;
    up.set_mode(Mode::Reset);
    let ok = try_get(&up.url("/healthz"), HttpVersion::Http1)
        .await
        .unwrap();
    assert_eq!((ok.status, ok.text().as_str()), (200, "hc healthy\n"));
    assert_eq!(ok.upstream(), Some("hc"));

    up.set_health(false);
    for version in BOTH {
        let bad = try_get(&up.url("/healthz"), version).await.unwrap();
        assert_eq!((bad.status, bad.text().as_str()), (503, "hc unhealthy\n"));
    }
    up.set_mode(Mode::Normal);
    assert_eq!(status(&up, "/healthz", HttpVersion::Http1).await, 503);
    up.set_health(true);
    assert_eq!(status(&up, "/healthz", HttpVersion::Http2).await, 200);
    assert_eq!(status(&up, "/", HttpVersion::Http1).await, 200);

    assert_eq!(up.health_checks(), 5);
    assert_eq!((up.requests(), up.failures()), (1, 0));
}

#[tokio::test]
#[should_panic(expected = "n > 0")]
async fn fail_every_zero_panics_in_the_test() {
    let up = Upstream::start("z").await;
    up.set_mode(Mode::FailEvery { n: 0, status: 503 });
}

#[tokio::test]
async fn kill_then_start_on_the_same_address() {
    let up = Upstream::start("first").await;
    let url = up.url("/");
    let mut kept = Http1Conn::connect(up.addr()).await;
    assert_eq!(kept.get("/").await.upstream(), Some("first"));

    // An HTTP/2 stream still being served does not hold kill up.
    let h2 = Http2Conn::connect(up.addr()).await;
    let slow =
        tokio::spawn(async move { h2.try_send("GET", "/slow/10000", &[], Bytes::new()).await });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = tokio::time::Instant::now();
    let addr = up.kill().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(slow.await.unwrap().is_err());
    for version in BOTH {
        assert!(try_get(&url, version).await.is_err(), "{version:?}");
    }
    // The kept-alive connection was closed too.
    let stale = tokio::time::timeout(
        Duration::from_secs(5),
        kept.try_send("GET", "/", &[], Bytes::new()),
    )
    .await;
    assert!(stale.expect("stale connection fails in time").is_err());

    let back = Upstream::start_on("second", addr).await;
    assert_eq!(back.addr(), addr);
    for version in BOTH {
        let resp = try_get(&url, version).await.unwrap();
        assert_eq!((resp.status, resp.upstream()), (200, Some("second")));
    }
    assert_eq!(back.requests(), 2);

    // And again: kill/start_on can repeat.
    let addr = back.kill().await;
    let third = Upstream::start_on("third", addr).await;
    assert_eq!(client::get(&url).await.upstream(), Some("third"));
    drop(third);
}

//! Run: cargo run -p remora-proxy --example custom_auth -- examples/edge.yaml
//! Then: curl -i localhost:8080/                      (401: no API key)
//!       curl -i -H 'x-api-key: secret' localhost:8080/  (200)
//! Test: cargo test -p remora-proxy --example custom_auth
//!
//! Remora as a library with a custom auth layer: every HTTP request must
//! carry an `x-api-key` header, or the proxy answers `401` itself. The
//! layer sits in the request path after routing and the proxy's own
//! authorization, before the route's action (see docs/library.md), so its
//! answers are counted in the proxy's metrics like any other response.

use futures_util::future::{self, Either};
use http::{header, HeaderName, Response, StatusCode};
use remora_proxy::http::body::ResponseBody;
use remora_proxy::{Call, Done, Proxy};
use std::convert::Infallible;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Requires `header` on every request.
#[derive(Clone)]
struct RequireHeaderLayer {
    header: HeaderName,
}

impl<S> Layer<S> for RequireHeaderLayer {
    type Service = RequireHeader<S>;

    fn layer(&self, inner: S) -> RequireHeader<S> {
        RequireHeader {
            header: self.header.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
struct RequireHeader<S> {
    header: HeaderName,
    inner: S,
}

impl<S> Service<Call> for RequireHeader<S>
where
    S: Service<Call, Response = Done, Error = Infallible>,
{
    type Response = Done;
    type Error = Infallible;
    type Future = Either<future::Ready<Result<Done, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        if call.req.headers().contains_key(&self.header) {
            return Either::Right(self.inner.call(call));
        }
        let mut rsp = Response::new(ResponseBody::full(format!("missing {}\n", self.header)));
        *rsp.status_mut() = StatusCode::UNAUTHORIZED;
        rsp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "ApiKey".parse().unwrap());
        Either::Left(future::ready(Ok(call.answer(Ok(rsp)))))
    }
}

fn auth() -> RequireHeaderLayer {
    RequireHeaderLayer {
        header: HeaderName::from_static("x-api-key"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt::init();
    let Some(config) = std::env::args().nth(1) else {
        anyhow::bail!("usage: custom_auth <config.yaml>");
    };
    let app = Proxy::builder()
        .config_file(config)
        .layer(auth())
        .start()
        .await?;
    for (name, addr) in &app.listeners {
        println!("listener {name} on {addr}");
    }
    tokio::signal::ctrl_c().await?;
    let drain = app.drain_timeout();
    app.shutdown(drain).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora_test_support::upstream::Upstream;

    /// `curl -w %{http_code}` for `url` with `headers`.
    fn curl_status(url: &str, headers: &[&str]) -> String {
        let mut cmd = std::process::Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let out = cmd.arg(url).output().expect("run curl");
        assert!(out.status.success(), "curl {url}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_without_the_key_are_refused_and_others_forwarded() {
        let up = Upstream::start("app").await;
        let dir = remora_test_support::proxy::tempdir();
        let config = dir.path().join("remora.yaml");
        let yaml = format!(
            "admin:\n  address: 127.0.0.1:0\nlisteners:\n  - name: edge\n    address: 127.0.0.1:0\n    routes:\n      - name: all\n        backends: [{{ name: app }}]\nbackends:\n  - name: app\n    endpoints: [{{ address: {} }}]\n",
            up.addr()
        );
        std::fs::write(&config, yaml).unwrap();
        let app = Proxy::builder()
            .config_file(&config)
            .layer(auth())
            .start()
            .await
            .unwrap();
        let url = format!("http://{}/hello", app.listener("edge").unwrap());
        let (refused, allowed) = tokio::task::spawn_blocking(move || {
            (
                curl_status(&url, &[]),
                curl_status(&url, &["x-api-key: secret"]),
            )
        })
        .await
        .unwrap();
        assert_eq!(refused, "401");
        assert_eq!(allowed, "200");
        assert_eq!(up.requests(), 1, "only the request with a key is forwarded");
        assert!(app.shutdown(std::time::Duration::from_secs(5)).await);
        up.stop().await;
    }
}

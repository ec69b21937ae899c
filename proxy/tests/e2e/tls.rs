//! TLS end to end: SNI certificate selection and ALPN seen by curl, client
//! certificate verification, TLS towards upstreams, certificate reload from
//! disk, and garbage on a TLS port. Also home of [`curl`], shared with the
//! streaming tests.

use crate::{bin, require};
use remora_test_support::client::{self, Request};
use remora_test_support::proxy::{tempdir, TempDir};
use remora_test_support::{HttpVersion, ProxyProcess, TestCa, Upstream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What one curl run printed.
pub struct Curl {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Curl {
    /// The last stdout line: what `-w "\n..."` wrote after the body.
    pub fn written_out(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }

    /// Asserts curl succeeded and got the `up` upstream's body.
    fn assert_served_by_up(&self, what: &str) {
        let served = self.ok && self.stdout.starts_with("up\n");
        assert!(served, "{what}: {}\n{}", self.stdout, self.stderr);
    }
}

/// Runs `curl -sS --noproxy '*' --max-time 60 <args>` (bounded, no proxy
/// from the environment) and collects its output.
pub async fn curl(args: &[&str]) -> Curl {
    require("curl");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "60"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run curl");
    Curl {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn start_in(dir: TempDir, yaml: &str) -> ProxyProcess {
    ProxyProcess::start_in(dir, bin(), yaml)
        .await
        .expect("proxy starts")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

/// A config with one TLS listener `secure` (the given `tls:` body) routing
/// everything to `up`.
fn tls_config(tls: &str, up: &Upstream) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - name: secure\n    address: 127.0.0.1:0\n    limits: {{ header_read_timeout: 60s }}\n    tls:\n{tls}\n    routes:\n      - name: all\n        backends: [{{ name: up }}]\nbackends:\n  - name: up\n    endpoints: [{{ address: {} }}]\n",
        up.addr()
    )
}

/// `tls:` body for certificates (cert path, key path).
fn certificates(pairs: &[(PathBuf, PathBuf)]) -> String {
    let mut s = String::from("      certificates:\n");
    for (cert, key) in pairs {
        s += &format!(
            "        - {{ cert: \"{}\", key: \"{}\" }}\n",
            cert.display(),
            key.display()
        );
    }
    s.trim_end().to_owned()
}

/// `curl -v --cacert CA --resolve HOST:PORT:127.0.0.1 https://HOST:PORT/`
/// with `extra` arguments; stdout ends with `<code> <http version>`.
async fn curl_https(ca: &str, host: &str, port: u16, extra: &[&str]) -> Curl {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}/");
    let mut args = vec!["-v", "--cacert", ca, "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-w", "\n%{http_code} %{http_version}", &url]);
    curl(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_alpn_the_protocol() {
    let up = Upstream::start("up").await;
    let ca = TestCa::new("test-ca");
    let dir = tempdir();
    let ca_pem = write(dir.path(), "ca.pem", &ca.ca_pem());
    let a = ca.issue_server(&["a.test"]).write_to(dir.path(), "a");
    let b = ca.issue_server(&["*.b.test"]).write_to(dir.path(), "b");
    let yaml = tls_config(&certificates(&[a, b]), &up);
    let proxy = start_in(dir, &yaml).await;
    let port = proxy.listener("secure").port();

    for (host, subject) in [("a.test", "CN=a.test"), ("x.b.test", "CN=*.b.test")] {
        for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
            let out = curl_https(&ca_pem, host, port, &[flag]).await;
            out.assert_served_by_up(&format!("{host} {flag}"));
            assert_eq!(out.written_out(), format!("200 {version}"), "{host} {flag}");
            assert!(
                out.stderr.contains(&format!("subject: {subject}")),
                "{host} {flag}: {}",
                out.stderr
            );
        }
    }
    // A name no certificate covers gets the first (default) one, which curl
    // rejects because it does not match.
    let out = curl_https(&ca_pem, "other.test", port, &[]).await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("subject: CN=a.test"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_verified() {
    let up = Upstream::start("up").await;
    let (ca, clients) = (TestCa::new("server-ca"), TestCa::new("client-ca"));
    let dir = tempdir();
    let ca_pem = write(dir.path(), "ca.pem", &ca.ca_pem());
    let client_ca = write(dir.path(), "client-ca.pem", &clients.ca_pem());
    let server = ca
        .issue_server(&["mtls.test"])
        .write_to(dir.path(), "server");
    let alice = clients.issue_client("alice").write_to(dir.path(), "alice");
    let stranger = TestCa::new("stranger-ca").issue_client("mallory");
    let mallory = stranger.write_to(dir.path(), "mallory");
    let tls = format!(
        "{}\n      client_ca: \"{client_ca}\"\n      require_client_certificate: true",
        certificates(&[server])
    );
    let proxy = start_in(dir, &tls_config(&tls, &up)).await;
    let port = proxy.listener("secure").port();

    let none = curl_https(&ca_pem, "mtls.test", port, &[]).await;
    assert!(
        !none.ok && !none.stdout.contains("up\n"),
        "no client certificate must fail: {}",
        none.stdout
    );
    for ((cert, key), accepted) in [(mallory, false), (alice, true)] {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let out = curl_https(
            &ca_pem,
            "mtls.test",
            port,
            &["--cert", &cert, "--key", &key],
        )
        .await;
        if accepted {
            out.assert_served_by_up("a certificate from the client CA");
            assert!(out.written_out().starts_with("200 "), "{}", out.stdout);
        } else {
            let refused = !out.ok && !out.stdout.contains("up\n");
            assert!(
                refused,
                "a certificate from another CA must fail: {}",
                out.stdout
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_is_verified() {
    let ca = TestCa::new("upstream-ca");
    let other = TestCa::new("other-ca");
    let pair = ca.issue_server(&["up.test"]);
    let up = Upstream::start_tls("up", &pair.cert_pem, &pair.key_pem).await;
    let dir = tempdir();
    let good_ca = write(dir.path(), "ca.pem", &ca.ca_pem());
    let wrong_ca = write(dir.path(), "other.pem", &other.ca_pem());
    let routes = "      - name: wrong\n        match: { path: { prefix: /wrong } }\n        backends: [{ name: wrong }]\n      - name: good\n        backends: [{ name: good }]";
    let backends = format!(
        "  - name: good\n    protocol: auto\n    endpoints: [{{ address: {0} }}]\n    tls: {{ server_name: up.test, ca: \"{good_ca}\" }}\n  - name: wrong\n    endpoints: [{{ address: {0} }}]\n    tls: {{ server_name: up.test, ca: \"{wrong_ca}\" }}",
        up.addr()
    );
    let proxy = start_in(dir, &crate::config(routes, &backends)).await;
    let base = format!("http://{}", proxy.listener("edge"));

    // With `protocol: auto`, HTTP/1.1 in goes out over ALPN http/1.1 and
    // HTTP/2 in over ALPN h2.
    for (version, seen) in [
        (HttpVersion::Http1, "HTTP/1.1"),
        (HttpVersion::Http2, "HTTP/2.0"),
    ] {
        let rsp = Request::new("GET", &format!("{base}/headers"))
            .version(version)
            .send()
            .await;
        assert_eq!(rsp.status, 200, "{version:?}: {}", rsp.text());
        assert_eq!(rsp.upstream(), Some("up"), "{version:?}");
        assert_eq!(rsp.json()["version"], seen, "{version:?}");
    }
    let rsp = client::get(&format!("{base}/wrong")).await;
    assert_eq!(rsp.status, 502, "{}", rsp.text());
    assert_eq!(rsp.header("remora-error"), Some("upstream-tls"));
    assert_eq!(rsp.upstream(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_when_their_files_change() {
    let up = Upstream::start("up").await;
    let old_ca = TestCa::new("old-ca");
    let new_ca = TestCa::new("new-ca");
    let dir = tempdir();
    let old_pem = write(dir.path(), "old-ca.pem", &old_ca.ca_pem());
    let new_pem = write(dir.path(), "new-ca.pem", &new_ca.ca_pem());
    let files = old_ca
        .issue_server(&["reload.test"])
        .write_to(dir.path(), "server");
    let yaml = tls_config(&certificates(std::slice::from_ref(&files)), &up);
    let proxy = start_in(dir, &yaml).await;
    let port = proxy.listener("secure").port();

    let before = curl_https(&old_pem, "reload.test", port, &[]).await;
    assert!(before.ok, "{}", before.stderr);
    assert!(
        before.stderr.contains("issuer: CN=old-ca"),
        "{}",
        before.stderr
    );

    // Replace both files, each atomically (write aside, rename over).
    let mark = proxy.log_mark();
    let fresh = new_ca.issue_server(&["reload.test", "new.reload.test"]);
    let staged = fresh.write_to(proxy.dir(), "staged");
    std::fs::rename(&staged.1, &files.1).expect("rename key");
    std::fs::rename(&staged.0, &files.0).expect("rename cert");
    proxy
        .wait_for_log_where(
            mark,
            |l| l.contains("config applied"),
            Duration::from_secs(10),
        )
        .await
        .expect("the certificate change is applied");

    let after = curl_https(&new_pem, "reload.test", port, &[]).await;
    after.assert_served_by_up("after the reload");
    assert!(
        after.stderr.contains("issuer: CN=new-ca"),
        "{}",
        after.stderr
    );
    let stale = curl_https(&old_pem, "reload.test", port, &[]).await;
    assert!(
        !stale.ok,
        "the old CA must no longer verify: {}",
        stale.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_tls_port_is_dropped_and_counted() {
    let up = Upstream::start("up").await;
    let ca = TestCa::new("test-ca");
    let dir = tempdir();
    let ca_pem = write(dir.path(), "ca.pem", &ca.ca_pem());
    let files = ca.issue_server(&["g.test"]).write_to(dir.path(), "server");
    let proxy = start_in(dir, &tls_config(&certificates(&[files]), &up)).await;
    let addr = proxy.listener("secure");

    let mut rng = fastrand::Rng::with_seed(7);
    let mut noise: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    noise[0] = 0xff; // not a TLS record type
    let plain_http = b"GET / HTTP/1.1\r\nhost: g.test\r\n\r\n".to_vec();
    for garbage in [noise, plain_http] {
        let mark = proxy.log_mark();
        // Returns at EOF; only a hanging proxy runs into the 20 s bound, and
        // then the log line below is missing (the handshake timeout is 60 s).
        let answer = client::raw(addr, &garbage, Duration::from_secs(20)).await;
        assert!(
            !String::from_utf8_lossy(&answer).contains("HTTP/"),
            "{answer:?}"
        );
        let line = proxy
            .wait_for_log_where(
                mark,
                |l| l.contains("TLS handshake failed"),
                Duration::from_secs(5),
            )
            .await
            .expect("the failed handshake is logged");
        assert!(
            !line.contains("timed out"),
            "dropped for the garbage, not a timeout: {line}"
        );
    }

    // TCP health checks connect and close: no TLS failure, nothing logged.
    let mark = proxy.log_mark();
    for _ in 0..3 {
        drop(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let out = curl_https(&ca_pem, "g.test", addr.port(), &[]).await;
    out.assert_served_by_up("after the garbage");
    let metrics = proxy.metrics().await;
    let count: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("remora_tls_handshake_errors_total{listener=\"secure\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no handshake error count in:\n{metrics}"));
    assert_eq!(count, 2.0, "the two garbage clients, not the health checks");
    let logged = proxy.logs()[mark..]
        .iter()
        .filter(|l| l.contains("TLS handshake failed"))
        .count();
    assert_eq!(logged, 0, "{:#?}", &proxy.logs()[mark..]);
}

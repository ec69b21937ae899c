//! What the etcd tests run: [`Etcd`], a real single-member etcd on free
//! loopback ports (plain or TLS) with `etcdctl` and `etcd import` beside it,
//! and [`Relay`], a TCP relay a test can cut to take etcd away from a
//! control plane while etcd stays up.

use super::super::*;

/// A single-member etcd on loopback.
pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    /// The data directory (inside `dir`).
    data: PathBuf,
    /// With TLS: more flags for etcd, and for etcdctl.
    tls: Option<(Vec<String>, Vec<String>)>,
    dir: TempDir,
}

impl Etcd {
    /// Starts on free ports (etcd's gateway cannot use a client port 0: it
    /// dials its own listen address), trying other ports if one was taken.
    pub async fn start() -> Etcd {
        Self::start_with(tempdir(), None).await
    }

    /// Serving TLS (a certificate from `ca` for 127.0.0.1) and asking
    /// clients for a certificate from `ca` (`--client-cert-auth`).
    pub async fn start_tls(ca: &remora_test_support::tls::TestCa) -> Etcd {
        let dir = tempdir();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
        // etcd's gateway dials etcd itself with this certificate too.
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (cert, key) = ca.issue(params).write_to(dir.path(), "etcd");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.ca_pem()).unwrap();
        let (ctl_cert, ctl_key) = ca.issue_client("etcdctl").write_to(dir.path(), "etcdctl");
        let path = |p: &Path| p.display().to_string();
        let server = vec![
            format!("--cert-file={}", path(&cert)),
            format!("--key-file={}", path(&key)),
            format!("--trusted-ca-file={}", path(&ca_file)),
            "--client-cert-auth".to_string(),
        ];
        let ctl = vec![
            format!("--cacert={}", path(&ca_file)),
            format!("--cert={}", path(&ctl_cert)),
            format!("--key={}", path(&ctl_key)),
        ];
        Self::start_with(dir, Some((server, ctl))).await
    }

    async fn start_with(dir: TempDir, tls: Option<(Vec<String>, Vec<String>)>) -> Etcd {
        require("etcd");
        require("etcdctl");
        let mut etcd = Etcd {
            child: None,
            client_port: 0,
            peer_port: 0,
            data: PathBuf::new(),
            tls,
            dir,
        };
        for i in 0..5 {
            (etcd.client_port, etcd.peer_port) = (free_port(), free_port());
            etcd.data = etcd.dir.path().join(format!("data{i}"));
            if etcd.run().await {
                return etcd;
            }
        }
        panic!(
            "etcd did not start on 5 pairs of free ports; log:\n{}",
            etcd.log()
        );
    }

    /// Starts the process (again, on the same ports and data); whether it
    /// serves.
    pub async fn run(&mut self) -> bool {
        let p = self.peer_port;
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(&self.data)
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .args(self.tls.iter().flat_map(|(server, _)| server))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{p}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{p}"
            ))
            .arg(format!("--initial-cluster=test=http://127.0.0.1:{p}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            if self.ctl_status(&["endpoint", "health"]).0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd never became healthy; log:\n{}", self.log());
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Runs `etcdctl`; (success, stdout and stderr).
    fn ctl_status(&self, args: &[&str]) -> (bool, String) {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url(), "--command-timeout=3s"])
            .args(self.tls.iter().flat_map(|(_, ctl)| ctl))
            .args(args)
            .output()
            .expect("run etcdctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn ctl(&self, args: &[&str]) -> String {
        let (ok, out) = self.ctl_status(args);
        assert!(ok, "etcdctl {args:?} failed: {out}");
        out
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&["endpoint", "status", "-w", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0]["Status"]["header"]["revision"].as_i64().unwrap()
    }

    /// Kills the process (SIGKILL, by its handle); the data stays.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    /// Loads `mesh` (YAML) with the real `etcd import` command.
    pub fn import(&self, mesh: &str) -> String {
        let (ok, text) = self.import_with(mesh, &[]);
        assert!(ok, "etcd import failed: {text}");
        text
    }

    /// `etcd import` with more flags; (success, output).
    pub fn import_with(&self, mesh: &str, extra: &[&str]) -> (bool, String) {
        let file = self.dir.path().join("import.yaml");
        std::fs::write(&file, mesh).unwrap();
        let out = std::process::Command::new(bin())
            .args(["etcd", "import", "--etcd", &self.url()])
            .args(extra)
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- etcd log ---\n{}", self.log());
        }
    }
}

/// A port nothing listens on now (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP relay from a loopback port to `to` that can be cut (its
/// connections closed, new ones closed at once) and restored.
pub struct Relay {
    pub addr: SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    pub async fn start(to: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, open_rx) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut open = open_rx.clone();
                if !*open.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = open.wait_for(|o| !*o) => {}
                    }
                });
            }
        });
        Relay { addr, open }
    }

    pub fn set(&self, open: bool) {
        self.open.send_replace(open);
    }
}

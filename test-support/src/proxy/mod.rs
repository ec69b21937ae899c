//! A harness for the real proxy binary: [`ProxyProcess`] writes a config into
//! a fresh temporary directory, runs `<bin> run --config <dir>/config.yaml
//! --log-format json` (or, in sidecar mode, `run --control-plane ADDR
//! --workload NAME`), keeps every line of its stdout and stderr, learns the
//! admin and listener addresses from its `"admin bound"` / `"listener bound"`
//! log lines, and returns once `GET /ready` on the admin port answers 200.
//! It signals and kills only the process it started, by PID.
//!
//! [`ProxyProcess::start_in_netns`] runs the proxy inside a network
//! namespace (`ip netns exec`, which execs: the PID is the proxy's). Its
//! admin address is then only reachable from inside that namespace, so the
//! harness asks it with `ip netns exec <ns> curl`.

mod logs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::Instant;

pub use tempfile::TempDir;

use crate::client::Request;
use logs::LogStore;

/// How long [`ProxyProcess::start`] waits for the proxy to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh temporary directory, for writing cert files before
/// [`ProxyProcess::start_in`].
pub fn tempdir() -> TempDir {
    tempfile::tempdir().expect("create temporary directory")
}

/// A running proxy process. Dropping it kills the process (SIGKILL) if it is
/// still running, and if the test is panicking, prints the logs to stderr.
pub struct ProxyProcess {
    child: Child,
    pid: u32,
    logs: Arc<LogStore>,
    config_path: PathBuf,
    /// The network namespace the proxy runs in, if not the test's own.
    netns: Option<String>,
    // Last, so the files outlive the process that reads them.
    dir: TempDir,
}

impl ProxyProcess {
    /// Writes `config_yaml` to `config.yaml` in a new temporary directory and
    /// starts the proxy there; see [`ProxyProcess::start_in`].
    pub async fn start(bin: &Path, config_yaml: &str) -> anyhow::Result<ProxyProcess> {
        Self::start_in(tempfile::tempdir()?, bin, config_yaml).await
    }

    /// Writes `config_yaml` to `dir/config.yaml` (files already in `dir`, such
    /// as certificates, can be referenced from it), spawns the proxy with
    /// `RUST_LOG=info,remora=debug`, and waits up to [`READY_TIMEOUT`] for
    /// the admin address and a 200 from `GET /ready`. The error carries the
    /// collected logs.
    pub async fn start_in(
        dir: TempDir,
        bin: &Path,
        config_yaml: &str,
    ) -> anyhow::Result<ProxyProcess> {
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config_yaml).context("write config.yaml")?;
        let args = vec!["--config".into(), config_path.into_os_string()];
        Self::start_with(dir, bin, args).await
    }

    /// Starts the proxy in sidecar mode: `run --control-plane <addr>
    /// --workload <workload> --admin 127.0.0.1:0` plus `extra` (such as
    /// `--snapshot-cache FILE`), in a new temporary directory. Returns once
    /// `/ready` answers 200, that is once a first snapshot is served.
    pub async fn start_sidecar(
        bin: &Path,
        control_plane: SocketAddr,
        workload: &str,
        extra: &[&std::ffi::OsStr],
    ) -> anyhow::Result<ProxyProcess> {
        let mut args: Vec<std::ffi::OsString> = ["--control-plane", &control_plane.to_string()]
            .iter()
            .chain(&["--workload", workload, "--admin", "127.0.0.1:0"])
            .map(Into::into)
            .collect();
        args.extend(extra.iter().map(|a| a.to_os_string()));
        Self::start_with(tempfile::tempdir()?, bin, args).await
    }

    /// Like [`ProxyProcess::start_in`], inside the network namespace
    /// `netns`: `ip netns exec <netns> <wrapper...> <bin> run --config ...`.
    /// `wrapper` is a command that execs the rest, such as `setpriv --reuid
    /// 2102 ...` to run the proxy as another user (who must be able to read
    /// `dir`). The config's admin address must be reachable inside `netns`
    /// (`127.0.0.1:0` is); [`ProxyProcess::admin_get`] asks it from there.
    pub async fn start_in_netns(
        dir: TempDir,
        bin: &Path,
        config_yaml: &str,
        netns: &str,
        wrapper: &[&str],
    ) -> anyhow::Result<ProxyProcess> {
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config_yaml).context("write config.yaml")?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]).args(wrapper).arg(bin);
        let args = vec!["--config".into(), config_path.into_os_string()];
        Self::launch(cmd, dir, args, Some(netns.to_string())).await
    }

    /// Runs `<bin> run <args> --log-format json` in `dir` with
    /// `RUST_LOG=info,remora=debug` and waits up to [`READY_TIMEOUT`] for the
    /// admin address and a 200 from `GET /ready`. The error carries the
    /// collected logs.
    pub async fn start_with(
        dir: TempDir,
        bin: &Path,
        args: Vec<std::ffi::OsString>,
    ) -> anyhow::Result<ProxyProcess> {
        Self::launch(Command::new(bin), dir, args, None).await
    }

    /// Appends `run <args> --log-format json` to `cmd` (the proxy binary,
    /// or a command that execs it) and starts it as [`Self::start_with`] says.
    async fn launch(
        mut cmd: Command,
        dir: TempDir,
        args: Vec<std::ffi::OsString>,
        netns: Option<String>,
    ) -> anyhow::Result<ProxyProcess> {
        let config_path = dir.path().join("config.yaml");
        let program = format!("{:?}", cmd.as_std());
        let mut child = cmd
            .arg("run")
            .args(&args)
            .arg("--log-format")
            .arg("json")
            .env("RUST_LOG", "info,remora=debug")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {program}"))?;
        let pid = child.id().context("child has no pid")?;
        let logs = Arc::new(LogStore::new());
        let stdout = child.stdout.take().context("stdout piped")?;
        let stderr = child.stderr.take().context("stderr piped")?;
        let store = logs.clone();
        tokio::spawn(async move { logs::pump(stdout, &store).await });
        let store = logs.clone();
        tokio::spawn(async move { logs::pump(stderr, &store).await });

        let mut proxy = ProxyProcess {
            child,
            pid,
            logs,
            config_path,
            netns,
            dir,
        };
        proxy.wait_ready(READY_TIMEOUT).await?;
        Ok(proxy)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("admin address not logged yet");
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                // Give the pipes a moment to deliver the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!(
                    "proxy exited with {status} before it was ready; logs:\n{}",
                    self.logs.dump()
                );
            }
            if self.logs.with(|s| s.admin).is_some() {
                match self.try_admin_get("/ready", Duration::from_secs(1)).await {
                    Ok((200, _)) => return Ok(()),
                    Ok((status, body)) => last = format!("GET /ready answered {status}: {body}"),
                    Err(e) => last = format!("GET /ready failed: {e:#}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!(
            "proxy not ready after {timeout:?} ({last}); logs:\n{}",
            self.logs.dump()
        )
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The directory the proxy runs in, holding `config.yaml` in file mode;
    /// put other files here too.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The admin address from the `"admin bound"` log line.
    pub fn admin(&self) -> SocketAddr {
        self.logs
            .with(|s| s.admin)
            .expect("admin address is known once started")
    }

    /// The latest address logged for listener `name`; panics with the logs if
    /// none was (see [`ProxyProcess::wait_for_listener`] for late ones).
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.try_listener(name).unwrap_or_else(|| {
            panic!(
                "no \"listener bound\" line for {name:?}; logs:\n{}",
                self.logs.dump()
            )
        })
    }

    pub fn try_listener(&self, name: &str) -> Option<SocketAddr> {
        self.logs.with(|s| s.listeners.get(name).copied())
    }

    /// Waits for listener `name` to be announced (e.g. added by a reload).
    pub async fn wait_for_listener(
        &self,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<SocketAddr> {
        match self
            .logs
            .wait(timeout, |s| s.listeners.get(name).copied())
            .await
        {
            Some(addr) => Ok(addr),
            None => bail!(
                "listener {name:?} not bound within {timeout:?}; logs:\n{}",
                self.logs.dump()
            ),
        }
    }

    /// Every stdout and stderr line so far, in arrival order.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lines()
    }

    /// The lines so far that parse as JSON.
    pub fn logs_json(&self) -> Vec<Value> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How many lines have arrived; pass it to
    /// [`ProxyProcess::wait_for_log_where`] to look only at later lines.
    pub fn log_mark(&self) -> usize {
        self.logs.with(|s| s.lines.len())
    }

    /// Waits for any line (old or new) containing `needle`; returns it.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for_log_where(0, |line| line.contains(needle), timeout)
            .await
            .with_context(|| format!("waiting for a log line containing {needle:?}"))
    }

    /// Waits for a line at index `from` or later matching `pred`; returns it.
    pub async fn wait_for_log_where(
        &self,
        from: usize,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let found = self
            .logs
            .wait(timeout, |s| {
                s.lines.iter().skip(from).find(|l| pred(l)).cloned()
            })
            .await;
        match found {
            Some(line) => Ok(line),
            None => bail!(
                "no matching log line within {timeout:?}; logs:\n{}",
                self.logs.dump()
            ),
        }
    }

    /// Replaces `config.yaml` atomically (write a temporary file, rename).
    pub fn write_config(&self, yaml: &str) -> anyhow::Result<()> {
        let tmp = self.dir.path().join("config.yaml.tmp");
        std::fs::write(&tmp, yaml).context("write config.yaml.tmp")?;
        std::fs::rename(&tmp, &self.config_path).context("rename over config.yaml")?;
        Ok(())
    }

    /// Sends a signal (`"TERM"`, `"HUP"`, `"SIGINT"`, …) with `kill -SIG <pid>`.
    /// Refuses once the process has exited, so a reused PID is never hit.
    pub fn signal(&mut self, sig: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("proxy already exited with {status}");
        }
        let sig = sig.trim_start_matches("SIG");
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{sig} {} failed: {status}", self.pid);
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()?
            .ok()
    }

    /// Resident set size in KiB, from `/proc/<pid>/status` (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {path}"))
    }

    /// `GET <path>` on the admin port: status and body as text.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        self.try_admin_get(path, crate::client::DEFAULT_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("admin GET {path}: {e:#}; logs:\n{}", self.logs.dump()))
    }

    /// `GET <path>` on the admin port, from inside the proxy's network
    /// namespace when it has its own (with curl there).
    async fn try_admin_get(&self, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
        let url = format!("http://{}{}", self.admin(), path);
        let Some(netns) = &self.netns else {
            let resp = Request::new("GET", &url)
                .timeout(timeout)
                .try_send()
                .await?;
            return Ok((resp.status, resp.text()));
        };
        let max_time = format!("{}", timeout.as_secs_f64());
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "curl",
                "-sS",
                "--max-time",
                &max_time,
            ])
            .args(["-w", "\n%{http_code}", &url])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("run curl in the proxy's network namespace")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "curl {url} in {netns}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((status.trim().parse()?, body.to_string()))
    }

    /// The Prometheus text from `GET /metrics`; panics unless it is a 200.
    pub async fn metrics(&self) -> String {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- proxy (pid {}) logs ---\n{}",
                self.pid,
                self.logs.dump()
            );
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.start_kill();
        }
    }
}

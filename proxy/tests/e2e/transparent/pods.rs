//! Pods for the transparent tests: network namespaces of this test (deleted
//! on drop) joined by a veth, commands run inside them with a time bound,
//! and small Python servers and clients that say what they saw. Every
//! process is started here and stopped by its PID.

use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to start.
const WAIT: Duration = Duration::from_secs(10);

/// True when running as root; otherwise says why the test is skipped.
pub fn root(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    if euid == "0" {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: needs root to create network namespaces and program iptables \
         (effective uid {euid}); run the tests as root, as CI does"
    );
    false
}

/// Connects the client pod (10.254.0.1, fd00:254::1) and the server pod
/// (10.254.0.2, fd00:254::2) with a veth pair, and waits until each
/// address answers (before `init`: a closed port refuses). For about a
/// second after a veth comes up, the first IPv6 neighbor solicitation goes
/// unanswered and the kernel resends it after 1 s, which would cost the
/// first proxied connection its 1 s connect timeout.
pub async fn wire(client: &Netns, server: &Netns) {
    client
        .ok(&[
            "ip",
            "link",
            "add",
            "tp0",
            "type",
            "veth",
            "peer",
            "name",
            "tp1",
            "netns",
            &server.name,
        ])
        .await;
    for (ns, dev, v4, v6) in [
        (client, "tp0", "10.254.0.1/24", "fd00:254::1/64"),
        (server, "tp1", "10.254.0.2/24", "fd00:254::2/64"),
    ] {
        ns.ok(&["ip", "addr", "add", v4, "dev", dev]).await;
        ns.ok(&["ip", "addr", "add", v6, "dev", dev, "nodad"]).await;
        ns.ok(&["ip", "link", "set", dev, "up"]).await;
    }
    for url in ["http://10.254.0.2:1/", "http://[fd00:254::2]:1/"] {
        let out = client
            .run(&["curl", "-sS", "-g", "--connect-timeout", "5", url])
            .await;
        // curl's exit status 7: the connection was refused.
        assert_eq!(out.status.code(), Some(7), "{url}: {out:?}");
    }
}

/// `curl URL` inside `ns`, optionally as another UID: the body, or
/// `ERROR: ...`.
pub async fn curl(ns: &Netns, uid: Option<&str>, url: &str) -> String {
    let mut argv: Vec<&str> = Vec::new();
    if let Some(uid) = uid {
        argv.extend(["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]);
    }
    argv.extend(["curl", "-sS", "-g", "--max-time", "5", url]);
    let out = ns.run(&argv).await;
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        format!("ERROR: {}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

/// A network namespace of this test, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub async fn new(role: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("remora-tp-{role}-{}-{n}", std::process::id());
        let out = bounded(Command::new("ip").args(["netns", "add", &name])).await;
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"]).await;
        ns
    }

    /// Runs `argv` inside the namespace, for at most 30 s.
    pub async fn run(&self, argv: &[&str]) -> Output {
        bounded(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(argv),
        )
        .await
    }

    /// Runs `argv` inside the namespace; it must succeed. Its stdout.
    pub async fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv).await;
        assert!(
            out.status.success(),
            "in {}: {argv:?} failed ({}):\n{}\n{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its veth end, rules and routes.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a command to completion; killed (it, by its PID) after 30 s.
async fn bounded(cmd: &mut Command) -> Output {
    let what = format!("{:?}", cmd.as_std());
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(30), child).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("cannot run {what}: {e}")),
        Err(_) => panic!("{what} still running after 30 s: killed"),
    }
}

/// A server that says who answered and whom it saw: an HTTP request gets
/// `<name> saw <peer address>`; other bytes are echoed until the client
/// ends its writing, then `|bye from <name>`. IPv4 and IPv6 on one socket.
const SERVER: &str = r#"
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
def handle(conn, peer):
    conn.settimeout(5)
    try:
        data = conn.recv(4096)
        if data.startswith(b"GET "):
            body = ("%s saw %s" % (name, peer[0].removeprefix("::ffff:"))).encode()
            head = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            conn.sendall(head + body)
        else:
            while data:
                conn.sendall(data)
                data = conn.recv(4096)
            conn.sendall(("|bye from %s" % name).encode())
    except OSError:
        pass
    conn.close()
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", port))
s.listen(64)
print("ready", flush=True)
while True:
    conn, peer = s.accept()
    threading.Thread(target=handle, args=(conn, peer), daemon=True).start()
"#;

/// Sends `ping over the mesh`, ends its writing, prints all it gets back.
pub const CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"ping over the mesh")
s.shutdown(socket.SHUT_WR)
out = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    out += d
print(out.decode())
"#;

/// A [`SERVER`] inside a namespace, killed (by its PID) on drop.
pub struct Server {
    _child: Child,
}

impl Server {
    pub async fn start(ns: &Netns, name: &str, port: u16) -> Server {
        // `ip netns exec` execs the command: the child's PID is python's.
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", SERVER, name])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start python3");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        match tokio::time::timeout(WAIT, lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "ready" => Server { _child: child },
            other => panic!(
                "server {name} on {port} in {} did not start: {other:?}",
                ns.name
            ),
        }
    }
}

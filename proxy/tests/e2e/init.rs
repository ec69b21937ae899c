//! `remora-proxy init` in network namespaces the test makes: the rules it
//! writes (legacy and nft, IPv4 and IPv6), a dry run that prints exactly
//! what is applied, idempotence, cleanup, backend detection, and real
//! redirection. A "peer" namespace is wired to the "pod" namespace by a
//! veth; small servers answer with their own name, so each request shows
//! where the connection landed. All traffic stays inside the two
//! namespaces. Needs root (namespaces, iptables): skips with a message
//! otherwise.

use crate::transparent::pods::root;
use crate::{bin, require};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The proxy UID `init` skips by default.
const PROXY_UID: &str = "2102";

/// The flags every run here uses besides the mode.
const FLAGS: &[&str] = &[
    "--ipv6",
    "--skip-inbound-ports=9000",
    "--skip-outbound-ports=5555",
    "--skip-outbound-cidrs=10.255.0.3/32,fd00:255::3/128",
];

#[test]
fn init_nft_intercepts_and_cleans_up() {
    if !root("init_nft_intercepts_and_cleans_up") {
        return;
    }
    interception("nft");
}

#[test]
fn init_legacy_intercepts_and_cleans_up() {
    if !root("init_legacy_intercepts_and_cleans_up") {
        return;
    }
    interception("legacy");
}

#[test]
fn init_auto_mode_uses_the_backend_that_has_rules() {
    if !root("init_auto_mode_uses_the_backend_that_has_rules") {
        return;
    }
    require("iptables-nft-save");
    require("iptables-legacy");

    // Nothing anywhere: nft.
    let fresh = Netns::new("auto");
    let out = fresh.ok(&[bin_str(), "init"]);
    assert!(out.contains("using iptables-nft"), "{out}");
    assert!(fresh
        .nat("nft", "iptables")
        .contains(":REMORA_PROXY_OUTPUT"));

    // A legacy rule already there (as a legacy kube-proxy or CNI would
    // leave): legacy, and nft is left alone.
    let legacy = Netns::new("auto");
    if !legacy_works(&legacy) {
        return;
    }
    legacy.ok(&[
        "iptables-legacy",
        "-t",
        "filter",
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        "9",
        "-j",
        "ACCEPT",
    ]);
    let out = legacy.ok(&[bin_str(), "init"]);
    assert!(
        out.contains("using iptables-legacy (legacy has 1 rules, nft 0)"),
        "{out}"
    );
    assert!(legacy
        .nat("legacy", "iptables")
        .contains(":REMORA_PROXY_OUTPUT"));
    assert!(!legacy.nat("nft", "iptables").contains("REMORA"));
}

/// The whole story for one backend.
fn interception(mode: &str) {
    for tool in ["ip", "python3", "curl", "setpriv"] {
        require(tool);
    }
    require(&format!("iptables-{mode}-restore"));
    require(&format!("ip6tables-{mode}-restore"));
    let pod = Netns::new("pod");
    let peer = Netns::new("peer");
    if mode == "legacy" && !legacy_works(&pod) {
        return;
    }
    wire(&pod, &peer);
    let mode_flag = format!("--iptables-mode={mode}");
    let init = |extra: &[&str]| -> String {
        let mut argv = vec![bin_str(), "init", &mode_flag];
        argv.extend(FLAGS);
        argv.extend(extra);
        pod.ok(&argv)
    };

    // A dry run changes nothing and prints what a run applies.
    let dry = init(&["--dry-run"]);
    assert!(
        !pod.nat(mode, "iptables").contains("REMORA"),
        "the dry run changed the table"
    );
    let sections: Vec<&str> = dry.split("# IPv6: ").collect();
    assert_eq!(sections.len(), 2, "{dry}");
    assert!(
        sections[0].contains(&format!("iptables-{mode}-restore --noflush")),
        "{dry}"
    );

    // Install: our chains, one jump from each hook, each skip in its family.
    let out = init(&[]);
    assert!(
        out.contains(&format!("using iptables-{mode} (--iptables-mode)")),
        "{out}"
    );
    let v4 = ours(&pod.nat(mode, "iptables"));
    let v6 = ours(&pod.nat(mode, "ip6tables"));
    for (rules, family, cidr) in [
        (&v4, "IPv4", "10.255.0.3/32"),
        (&v6, "IPv6", "fd00:255::3/128"),
    ] {
        let has = |needle: &str| rules.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(has("-A PREROUTING "), 1, "{family}: {rules:#?}");
        assert_eq!(has("-A OUTPUT "), 1, "{family}: {rules:#?}");
        for needle in [
            "-A REMORA_PROXY_INBOUND -p tcp -m multiport --dports 4143,4191 ",
            "-A REMORA_PROXY_INBOUND -p tcp -m multiport --dports 9000 ",
            "-A REMORA_PROXY_INBOUND -p tcp -m comment --comment \"remora: redirect inbound to the proxy\" -j REDIRECT --to-ports 4143",
            "-A REMORA_PROXY_OUTPUT -m owner --uid-owner 2102 ",
            "-A REMORA_PROXY_OUTPUT -o lo ",
            "-A REMORA_PROXY_OUTPUT -p tcp -m multiport --dports 5555 ",
            &format!("-A REMORA_PROXY_OUTPUT -d {cidr} "),
            "-j REDIRECT --to-ports 4140",
        ] {
            assert_eq!(has(needle), 1, "{family}: {needle:?} in {rules:#?}");
        }
    }
    assert!(!v4.iter().any(|l| l.contains("fd00")) && !v6.iter().any(|l| l.contains("10.255")));
    // The dry run printed exactly the rules that were applied.
    assert_eq!(sorted_rules(sections[0]), sorted_rules(&v4.join("\n")));
    assert_eq!(sorted_rules(sections[1]), sorted_rules(&v6.join("\n")));

    // Again: the same rules, no second jump; and a dry run now adds no jump.
    init(&[]);
    assert_eq!(ours(&pod.nat(mode, "iptables")), v4);
    assert_eq!(ours(&pod.nat(mode, "ip6tables")), v6);
    let again = init(&["--dry-run"]);
    assert!(
        !again.contains("-A PREROUTING") && !again.contains("-A OUTPUT"),
        "{again}"
    );

    // Real traffic.
    let _peer = Server::start(&peer, "peer", &[80, 5555]);
    let _outbound = Server::start(&pod, "proxy-outbound", &[4140]);
    let _inbound = Server::start(&pod, "proxy-inbound", &[4143]);
    let _admin = Server::start(&pod, "proxy-admin", &[4191]);
    let _app = Server::start(&pod, "app", &[8080, 9000]);
    let cases: &[(&Netns, Option<&str>, &str, &str)] = &[
        (&pod, None, "http://10.255.0.1/", "proxy-outbound"),
        (&pod, None, "http://[fd00:255::1]/", "proxy-outbound"),
        (&pod, Some(PROXY_UID), "http://10.255.0.1/", "peer"),
        (&pod, Some(PROXY_UID), "http://[fd00:255::1]/", "peer"),
        (&pod, None, "http://10.255.0.1:5555/", "peer"),
        (&pod, None, "http://10.255.0.3/", "peer"),
        (&pod, None, "http://[fd00:255::3]/", "peer"),
        (&pod, None, "http://127.0.0.1:8080/", "app"),
        (&pod, None, "http://[::1]:8080/", "app"),
        // To its own address a pod goes through lo: not intercepted.
        (&pod, None, "http://10.255.0.2:8080/", "app"),
        (&peer, None, "http://10.255.0.2:8080/", "proxy-inbound"),
        (&peer, None, "http://[fd00:255::2]:8080/", "proxy-inbound"),
        (&peer, None, "http://10.255.0.2:9000/", "app"),
        (&peer, None, "http://10.255.0.2:4191/", "proxy-admin"),
        (&peer, None, "http://10.255.0.2:4143/", "proxy-inbound"),
    ];
    for &(ns, uid, url, want) in cases {
        assert_eq!(
            get(ns, uid, url),
            want,
            "{mode}: {url} from {} as {uid:?}",
            ns.role
        );
    }

    // Cleanup removes everything of ours, twice in a row is fine, and
    // traffic goes direct again.
    let out = init(&["--cleanup"]);
    assert!(
        out.contains("IPv4: removed 2 jump(s)") && out.contains("IPv6: removed 2 jump(s)"),
        "{out}"
    );
    assert!(!pod.nat(mode, "iptables").contains("REMORA"));
    assert!(!pod.nat(mode, "ip6tables").contains("REMORA"));
    let out = init(&["--cleanup"]);
    assert!(out.contains("IPv4: nothing to clean up"), "{out}");
    assert_eq!(get(&pod, None, "http://10.255.0.1/"), "peer");
    assert_eq!(get(&peer, None, "http://10.255.0.2:8080/"), "app");
}

/// Whether this kernel has legacy iptables (x_tables); says so if not.
fn legacy_works(ns: &Netns) -> bool {
    let out = ns.run(&["iptables-legacy", "-t", "nat", "-S"]);
    if !out.status.success() {
        eprintln!(
            "SKIPPED the legacy part: this kernel has no legacy iptables: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

fn bin_str() -> &'static str {
    bin().to_str().expect("a UTF-8 binary path")
}

/// The lines of a saved table that are ours.
fn ours(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| l.contains("REMORA_PROXY_"))
        .map(String::from)
        .collect()
}

/// The `-A` lines, sorted (the save groups rules by chain, a script need not).
fn sorted_rules(text: &str) -> Vec<String> {
    let mut rules: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("-A "))
        .map(String::from)
        .collect();
    rules.sort();
    rules
}

/// Connects the pod (10.255.0.2, fd00:255::2) and the peer (10.255.0.1 and
/// .3, fd00:255::1 and ::3) with a veth pair.
fn wire(pod: &Netns, peer: &Netns) {
    pod.ok(&[
        "ip", "link", "add", "rv0", "type", "veth", "peer", "name", "rv1", "netns", &peer.name,
    ]);
    pod.ok(&["ip", "addr", "add", "10.255.0.2/24", "dev", "rv0"]);
    pod.ok(&["ip", "addr", "add", "fd00:255::2/64", "dev", "rv0", "nodad"]);
    pod.ok(&["ip", "link", "set", "rv0", "up"]);
    for addr in ["10.255.0.1/24", "10.255.0.3/24"] {
        peer.ok(&["ip", "addr", "add", addr, "dev", "rv1"]);
    }
    for addr in ["fd00:255::1/64", "fd00:255::3/64"] {
        peer.ok(&["ip", "addr", "add", addr, "dev", "rv1", "nodad"]);
    }
    peer.ok(&["ip", "link", "set", "rv1", "up"]);
}

/// An HTTP GET from inside `ns`, optionally as another UID; the body, or
/// `ERROR: ...` so a failed assertion shows what happened.
fn get(ns: &Netns, uid: Option<&str>, url: &str) -> String {
    let mut argv: Vec<&str> = Vec::new();
    if let Some(uid) = uid {
        argv.extend(["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]);
    }
    argv.extend([
        "curl",
        "-sS",
        "-g",
        "--connect-timeout",
        "3",
        "--max-time",
        "5",
        url,
    ]);
    let out = ns.run(&argv);
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        format!("ERROR: {}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

/// A network namespace of this test process, deleted on drop.
struct Netns {
    name: String,
    role: &'static str,
}

impl Netns {
    fn new(role: &'static str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("remora-test-{}-{n}", std::process::id());
        let out = within(Command::new("ip").args(["netns", "add", &name]));
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name, role };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `argv` inside the namespace, bounded in time.
    fn run(&self, argv: &[&str]) -> Output {
        within(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(argv),
        )
    }

    /// Runs `argv` inside the namespace; it must succeed. Its stdout.
    fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
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

    /// The nat table as `<tool>-<mode>-save` prints it.
    fn nat(&self, mode: &str, tool: &str) -> String {
        self.ok(&[&format!("{tool}-{mode}-save"), "-t", "nat"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a command to completion, killing it after 30 s.
fn within(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if waited > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{cmd:?} still running after 30 s: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
        waited += Duration::from_millis(10);
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Answers every connection on its ports with an HTTP response whose body
/// is its name. IPv4 and IPv6 on one socket per port.
const SERVER: &str = r#"
import selectors, socket, sys
name = sys.argv[1].encode()
sel = selectors.DefaultSelector()
for port in sys.argv[2:]:
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", int(port)))
    s.listen(64)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.settimeout(2)
        try:
            conn.recv(4096)
            head = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(name)
            conn.sendall(head + name)
        except OSError:
            pass
        conn.close()
"#;

/// A server process inside a namespace, killed (by its PID) on drop.
struct Server {
    child: Child,
}

impl Server {
    fn start(ns: &Netns, name: &str, ports: &[u16]) -> Server {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        // `ip netns exec` execs the command: the child's PID is python's.
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", SERVER, name])
            .args(&ports)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = Server { child };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.trim() == "ready" => {}
            other => {
                let _ = server.child.kill();
                panic!(
                    "server {name} {ports:?} in {} did not start: {other:?}",
                    ns.name
                );
            }
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The service graph and `diagnose` on a real demo: the control plane,
//! three sidecar processes and the demo's apps on loopback, traffic from
//! the demo's generator and from curl. Headless Chromium loads `/graph`
//! and the test reads what it drew; then a fault rule in the mesh file
//! makes api answer 500s, and the page shows web → api failing.
//! Screenshots: target/tmp/service-graph/.

use super::*;
use remora_test_support::client::get;

/// A `demo` process: SIGTERM (by PID) when dropped, so it stops the
/// sidecars it started itself.
struct Demo {
    child: Child,
    pid: u32,
    /// What it printed up to its "Ctrl-C stops everything." line.
    intro: String,
    _tmp: TempDir,
}

impl Demo {
    async fn start() -> Demo {
        let tmp = tempdir();
        let mut child = Command::new(bin())
            .args(["demo", "--duration", "150s", "--rate", "10"])
            .args(["--stats-interval", "1s", "--proxy-bin"])
            .arg(proxy_bin())
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut intro = String::new();
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                intro.push_str(&line);
                intro.push('\n');
                if line.starts_with("Ctrl-C") {
                    return;
                }
            }
            panic!("the demo ended:\n{intro}");
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("the demo prints its intro within 60s");
        // The rest of its output is drained, so it never blocks on a pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Demo {
            child,
            pid,
            intro,
            _tmp: tmp,
        }
    }

    /// The text after `label` on the intro line that starts with it.
    fn printed(&self, label: &str) -> &str {
        self.intro
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no `{label}` line:\n{}", self.intro))
            .trim()
    }

    fn graph_url(&self) -> String {
        self.printed("graph:")
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    }

    /// SIGTERM, and the demo's exit within 30 s.
    async fn stop(mut self) {
        terminate(self.pid);
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the demo stops within 30s of SIGTERM")
            .unwrap();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            terminate(self.pid);
        }
    }
}

fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Polls `/graph.json` until the edge `from → to` satisfies `pred`.
async fn wait_edge(url: &str, from: &str, to: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let graph = get(&format!("{url}.json")).await.json();
        let edge = graph["edges"]
            .as_array()
            .and_then(|edges| edges.iter().find(|e| e["from"] == from && e["to"] == to));
        if let Some(e) = edge.filter(|e| pred(e)) {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "edge {from} → {to} never as expected: {graph}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Headless Chromium's DOM of `url` after its scripts ran, and a
/// screenshot of it at `png`.
async fn chromium(url: &str, png: &Path) -> String {
    let profile = tempdir();
    let run = |extra: Vec<String>| {
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1000,640",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
                .await
                .expect("chromium finishes within 60s")
                .expect("chromium runs: install it with scripts/install-test-deps.sh");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    run(vec![format!("--screenshot={}", png.display())]).await;
    assert!(png.exists(), "no screenshot at {}", png.display());
    run(vec!["--dump-dom".into()]).await
}

/// The cells of the edge table's row for `edge` ("client → web").
fn row(dom: &str, edge: &str) -> Vec<String> {
    let start = dom
        .find(&format!("<td>{edge}</td>"))
        .unwrap_or_else(|| panic!("no row for {edge} in:\n{dom}"));
    let end = start + dom[start..].find("</tr>").unwrap();
    dom[start..end]
        .split("<td")
        .skip(1)
        .map(|cell| {
            let text = &cell[cell.find('>').unwrap() + 1..];
            text.split('<').next().unwrap().to_string()
        })
        .collect()
}

fn percent(cell: &str) -> f64 {
    cell.trim_end_matches('%')
        .parse()
        .unwrap_or_else(|_| panic!("not a percentage: {cell}"))
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp/service-graph")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_page_shows_the_demo_calls_and_an_injected_failure() {
    let demo = Demo::start().await;
    let url = demo.graph_url();
    let outbound = demo.printed("try:").rsplit(' ').next().unwrap().to_string();
    // Bounded traffic from curl beside the demo's own.
    for _ in 0..20 {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"])
            .args(["-H", "host: web", &outbound])
            .output()
            .expect("curl runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    for (from, to) in [("client", "web"), ("web", "api")] {
        wait_edge(&url, from, to, |e| {
            e["rps"].as_f64() > Some(0.0) && e["success"] == 1.0
        })
        .await;
    }

    // The page draws both calls, all of them successful.
    let dom = chromium(&url, &screenshots().join("healthy.png")).await;
    for edge in ["client → web", "web → api"] {
        let cells = row(&dom, edge);
        assert_eq!(cells[2], "100%", "{edge}: {cells:?}");
        assert!(cells[1].parse::<f64>().unwrap() > 0.0, "{edge}: {cells:?}");
        assert!(cells[3].ends_with(" ms"), "{edge}: {cells:?}");
    }
    assert!(dom.contains(r#"data-node="api""#), "{dom}");
    assert!(dom.contains("100% success"), "{dom}");

    // diagnose, as the demo prints it, finds the healthy mesh healthy.
    let command: Vec<&str> = demo.printed("diagnose:").split(' ').collect();
    let out = Command::new(command[0])
        .args(&command[1..])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    for line in [
        "✔ mesh file ",
        "✔ CA certificate ",
        "✔ proxy web#",
        "mesh certificate valid until",
    ] {
        assert!(report.contains(line), "{line}\n{report}");
    }

    // A fault rule: every call to api answers 500.
    let mesh = demo
        .printed("files:")
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let yaml = std::fs::read_to_string(&mesh).unwrap();
    let retry = "        retry: { attempts: 2 }\n";
    assert!(yaml.contains(retry), "{yaml}");
    let fault = format!("{retry}        fault: {{ abort: {{ status: 500, percent: 100 }} }}\n");
    std::fs::write(&mesh, yaml.replace(retry, &fault)).unwrap();
    wait_edge(&url, "web", "api", |e| {
        e["success"].as_f64().is_some_and(|s| s < 0.5)
    })
    .await;

    let dom = chromium(&url, &screenshots().join("failing.png")).await;
    let cells = row(&dom, "web → api");
    assert!(percent(&cells[2]) < 50.0, "{cells:?}");
    assert!(dom.contains(r#"<td class="bad">"#), "{dom}");
    demo.stop().await;
}

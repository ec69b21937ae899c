//! What each step does (the invariants that concern one step, such as an
//! ACKed delta's base, are checked here; the rest in `invariants.rs`).

use super::*;
use remora_control_plane::mesh::problems_for;

impl World {
    pub(super) fn start_cp(&mut self) {
        if !self.file.1 {
            self.note("control plane cannot start: the mesh file is invalid");
            return;
        }
        let cp = ControlPlane::start(&self.file.0);
        self.cp = Some(cp);
        self.published();
        let v = self.cp.as_ref().map(|c| c.current().mesh_version.clone());
        self.note(format!(
            "control plane started, mesh {} (generation {})",
            v.unwrap_or_default(),
            self.seq
        ));
    }

    /// A new generation: counted, and every snapshot in it recorded (and
    /// checked valid by the proxy's rules).
    fn published(&mut self) {
        self.seq += 1;
        let Some(cp) = &self.cp else { return };
        let generation = cp.current();
        let mut bad = Vec::new();
        for (w, p) in &generation.snapshots {
            let key = (w.clone(), p.version.clone());
            if self.published.contains_key(&key) {
                continue;
            }
            let config = p.snapshot.config();
            let problems = remora_api::validate(&config);
            if !problems.is_empty() {
                bad.push(format!(
                    "the control plane published {w} {} that the proxy's rules reject: {problems:?}",
                    p.version
                ));
            }
            self.published.insert(key, config);
        }
        for b in bad {
            self.violation(b);
        }
    }

    pub(super) async fn apply(&mut self, ev: Ev) {
        match ev {
            Ev::Mesh => self.change_mesh(),
            Ev::CpWake(id) => self.cp_push(id, "woke").await,
            Ev::CpRecv(id) => {
                let c = self.conns.get_mut(&id).expect("a connection");
                let line = c.up.pop_front().expect("a line");
                if let Some(s) = c.session.as_mut() {
                    s.verdict(&line);
                }
                let text = String::from_utf8_lossy(&line)
                    .chars()
                    .take(120)
                    .collect::<String>();
                self.note(format!("cp conn {id} got {text}"));
                if self.cp.is_some() {
                    self.cp_push(id, "after the verdict").await;
                }
            }
            Ev::CpNotice(id) => {
                let c = self.conns.get_mut(&id).expect("a connection");
                c.session = None;
                self.conns.remove(&id);
                self.note(format!("cp notices conn {id} is gone"));
            }
            Ev::ProxyRecv(i) => self.proxy_recv(i).await,
            Ev::Connect(i) => self.connect(i),
            Ev::Grace(i) => {
                let p = &mut self.proxies[i];
                let tag = p.cache_tag.clone();
                let served = p.grace_expires();
                let name = p.name.clone();
                match served {
                    Some(version) => {
                        if tag.as_ref().map(|t| &t.0) != Some(&version) {
                            self.violation(format!(
                                "{name} serves cache {version}, but the cache holds {tag:?}"
                            ));
                        }
                        self.note(format!(
                            "{name}: cache grace over: serves the cache {version}"
                        ));
                        self.count("started from the cache");
                    }
                    None => self.note(format!("{name}: cache grace over: a snapshot raced in")),
                }
            }
            Ev::StartCp => {
                self.count("control-plane starts");
                self.start_cp()
            }
            Ev::Cut(i) => {
                self.count("connections cut");
                self.cut(i);
                let name = self.proxies[i].name.clone();
                self.note(format!("{name}: connection cut"));
            }
            Ev::Isolate(i) => {
                self.count("partitions");
                self.cut(i);
                let until = self.step + 5 + self.rng.u64(..40);
                self.proxies[i].isolated_until = until;
                let name = self.proxies[i].name.clone();
                self.note(format!("{name}: partitioned until step {until}"));
            }
            Ev::Restart(i) => {
                self.count("proxy restarts");
                self.cut(i);
                self.proxies[i].restart();
                let p = &self.proxies[i];
                let cache = match &p.app {
                    App::Waiting {
                        cache: Some((v, _)),
                        ..
                    } => v.clone(),
                    _ => "none".into(),
                };
                let name = p.name.clone();
                self.note(format!("{name}: restarted, cache {cache}"));
            }
            Ev::CrashCp => {
                self.count("control-plane crashes");
                self.cp = None;
                for (_, c) in std::mem::take(&mut self.conns) {
                    self.proxies[c.proxy].conn = None;
                }
                self.note("control plane crashed; every connection reset");
            }
            Ev::Reorder(id) => {
                // Two untampered deltas, next to each other among the
                // deltas in flight, swapped.
                let c = self.conns.get_mut(&id).expect("a connection");
                let at = fresh_deltas(&c.down);
                let k = self.rng.usize(..at.len() - 1);
                c.down.swap(at[k], at[k + 1]);
                c.down[at[k]].tampered = true;
                c.down[at[k + 1]].tampered = true;
                self.note(format!("adversary: conn {id}: two deltas swapped"));
                self.count("deltas reordered");
            }
            Ev::Duplicate(id) => {
                // Delivered twice in a row. (A copy delivered later can
                // re-apply an old change once versions recur: see
                // docs/simulation.md, "Limits".)
                let c = self.conns.get_mut(&id).expect("a connection");
                let at = fresh_deltas(&c.down);
                let k = at[self.rng.usize(..at.len())];
                c.down[k].tampered = true;
                let copy = Line {
                    bytes: c.down[k].bytes.clone(),
                    tag: c.down[k].tag,
                    tampered: true,
                };
                c.down.insert(k + 1, copy);
                self.note(format!("adversary: conn {id}: a delta duplicated"));
                self.count("deltas duplicated");
            }
            Ev::Corrupt(id) => {
                let c = self.conns.get_mut(&id).expect("a connection");
                let at = fresh_deltas(&c.down);
                let k = at[self.rng.usize(..at.len())];
                let line = &mut c.down[k];
                line.tampered = true;
                let how = if self.rng.bool() {
                    // Cut short: not a message at all.
                    line.bytes = line.bytes.slice(..line.bytes.len() / 2);
                    "truncated"
                } else {
                    // A well-formed delta the proxy's config cannot take.
                    let mut d: DeltaMsg = serde_json::from_slice(&line.bytes).expect("a delta");
                    d.delta.remove_backends.push("ghost".into());
                    line.bytes = Bytes::from(serde_json::to_vec(&d).expect("json"));
                    "made to remove a backend that is not there"
                };
                self.note(format!("adversary: conn {id}: a delta {how}"));
                self.count("deltas corrupted");
            }
        }
    }

    fn change_mesh(&mut self) {
        let last = self.history.last().cloned().expect("a first mesh");
        let (mesh, intent, what) = meshes::mutate(&mut self.rng, &last, &self.history);
        let problems = match &self.cp {
            Some(cp) => {
                let before = cp.current();
                let problems = cp.offer(&mesh);
                let after = cp.current();
                if !std::sync::Arc::ptr_eq(&before, &after) {
                    self.published();
                } else if problems.is_empty()
                    && before.mesh_version != remora_control_plane::compile::version_of(&mesh)
                {
                    self.violation(format!("a valid mesh ({what}) was not published"));
                }
                problems
            }
            None => problems_for(&mesh, false),
        };
        if intent == Intent::Invalid && problems.is_empty() {
            self.violation(format!(
                "the control plane accepted an invalid mesh: {what}"
            ));
        }
        let verdict = if problems.is_empty() {
            "applied".to_string()
        } else {
            format!("rejected ({} problems)", problems.len())
        };
        self.note(format!(
            "mesh change: {what}: {verdict}, generation {}",
            self.seq
        ));
        if problems.is_empty() {
            self.history.push(mesh.clone());
        } else {
            self.count("invalid meshes rejected");
        }
        self.file = (mesh, problems.is_empty());
    }

    /// The session looks at the generation served and pushes what it says.
    async fn cp_push(&mut self, id: u64, why: &str) {
        let Some(cp) = &self.cp else { return };
        let generation = cp.current();
        let seq = self.seq;
        let c = self.conns.get_mut(&id).expect("a connection");
        let Some(session) = c.session.as_mut() else {
            return;
        };
        c.seen = seq;
        let current = generation.snapshots.get(session.workload()).cloned();
        match session.next(current).await {
            Ok(Some(bytes)) => {
                let bytes = bytes.slice(..bytes.len() - 1);
                let (version, base) = heading(&bytes).unwrap_or_default();
                let kind = match base {
                    Some(b) => format!("delta {b} -> {version}"),
                    None => format!("snapshot {version}"),
                };
                if c.open_at_proxy {
                    c.down.push_back(Line {
                        bytes,
                        tag: seq,
                        tampered: false,
                    });
                }
                self.count(if kind.starts_with("delta") {
                    "deltas sent"
                } else {
                    "snapshots sent"
                });
                self.note(format!("cp conn {id} ({why}) sends {kind}"));
            }
            Ok(None) => {}
            Err(e) => self.violation(format!("session {id} ended: {e}")),
        }
    }

    fn connect(&mut self, i: usize) {
        let Some(cp) = &self.cp else { return };
        let hello = self.proxies[i].sub.hello();
        let has = hello.version.clone();
        let peer = SocketAddr::from(([127, 0, 0, 2], 40000 + i as u16));
        let name = self.proxies[i].name.clone();
        match cp.stream.open(hello, None, peer) {
            Ok(session) => {
                let id = self.next_conn;
                self.next_conn += 1;
                self.conns.insert(
                    id,
                    Conn {
                        proxy: i,
                        session: Some(session),
                        down: VecDeque::new(),
                        up: VecDeque::new(),
                        open_at_proxy: true,
                        seen: 0,
                    },
                );
                self.proxies[i].conn = Some(id);
                self.note(format!(
                    "{name}: subscribed as conn {id}, has {}",
                    has.unwrap_or_else(|| "nothing".into())
                ));
            }
            Err(e) => self.violation(format!("{name}: subscription refused: {e}")),
        }
    }

    /// The proxy's side of its connection breaks: what was in flight to it
    /// is lost; its verdicts already sent may still arrive.
    fn cut(&mut self, i: usize) {
        if let Some(id) = self.proxies[i].conn.take() {
            if let Some(c) = self.conns.get_mut(&id) {
                c.open_at_proxy = false;
                c.down.clear();
            }
        }
    }

    async fn proxy_recv(&mut self, i: usize) {
        let id = self.proxies[i].conn.expect("a connection");
        let line = self
            .conns
            .get_mut(&id)
            .and_then(|c| c.down.pop_front())
            .expect("a line");
        let head = heading(&line.bytes);
        let before = self.proxies[i].serving.clone();
        let result = self.proxies[i].receive(line.bytes.clone()).await;
        let p = &self.proxies[i];
        let (name, workload) = (p.name.clone(), p.workload.clone());
        let verdict = match result {
            Err(e) => {
                self.note(format!(
                    "{name}: unreadable line ({e}); the subscription ends"
                ));
                if !line.tampered {
                    self.violation(format!("{name} could not read an untampered line: {e}"));
                }
                self.cut(i);
                return;
            }
            Ok(v) => v,
        };
        self.note(format!("{name}: {}", verdict_text(&verdict)));
        match &verdict {
            Ack::Ack { version } => {
                let (sent, base) = head.unwrap_or_default();
                if *version != sent {
                    self.violation(format!(
                        "{name} ACKed {version} for a line of version {sent}"
                    ));
                }
                if let Some(base) = base {
                    let had = before.as_ref().map(|b| b.0.as_str());
                    if had != Some(base.as_str()) {
                        self.violation(format!(
                            "{name} applied a delta from {base} while serving {had:?}"
                        ));
                    }
                }
                if !self.published.contains_key(&(workload, version.clone())) {
                    self.violation(format!("{name} applied {version}, never published"));
                }
                if let Some((v, tag)) = &before {
                    if line.tag < *tag && v != version {
                        self.violation(format!("{name} went from {v} (generation {tag}) back to {version} (generation {})", line.tag));
                    }
                }
                self.count("ACKs");
                let now = (version.clone(), line.tag);
                self.proxies[i].serving = Some(now.clone());
                self.proxies[i].sub.remember(&verdict).await;
                self.proxies[i].cache_tag = Some(now);
            }
            Ack::Nack { version, errors } => {
                self.count("NACKs");
                let base_mismatch = errors
                    .iter()
                    .all(|e| e.starts_with("a delta from version") || e.starts_with("delta:"));
                if !(line.tampered || (self.adversarial && base_mismatch)) {
                    self.violation(format!(
                        "{name} rejected {version} that the control plane published: {}",
                        errors.join("; ")
                    ));
                }
            }
        }
        let ack = Bytes::from(serde_json::to_vec(&verdict).expect("json"));
        if let Some(c) = self.conns.get_mut(&id) {
            c.up.push_back(ack);
        }
    }
}

/// Where the untampered deltas in flight are.
fn fresh_deltas(down: &VecDeque<Line>) -> Vec<usize> {
    (0..down.len())
        .filter(|&k| !down[k].tampered && is_delta(&down[k].bytes))
        .collect()
}

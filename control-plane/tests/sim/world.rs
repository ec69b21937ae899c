//! The simulated world: one control plane, many proxies, the connections
//! between them, and a seeded scheduler that picks the next step among
//! those possible (deliver a line either way, wake a session on a new
//! generation, connect, change the mesh; faults: cut a connection, isolate
//! a proxy, restart a proxy or the control plane; with `adversarial`:
//! reorder, duplicate or corrupt deltas in flight). Every step runs to its
//! end before the next is picked, so a seed fixes the whole run.
//! Invariants are checked after every step ([`World::check`]); at the end
//! the faults heal and the world runs until nothing is left to do, and
//! every proxy must serve its workload's latest version ([`World::settle`]).

use crate::cp::ControlPlane;
use crate::meshes::{self, Intent};
use crate::proxy::{App, Proxy};
use bytes::Bytes;
use fastrand::Rng;
use remora_api::mesh::{Ack, DeltaMsg, Mesh};
use remora_api::Config;
use remora_control_plane::stream::Session;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

mod invariants;
mod steps;

/// A line in flight to a proxy, with the generation it was sent for.
struct Line {
    bytes: Bytes,
    tag: u64,
    /// Changed by the adversary: the proxy may NACK it or drop the stream.
    tampered: bool,
}

/// One subscription: the control plane's session and the lines in flight.
struct Conn {
    proxy: usize,
    /// `None` once the control plane noticed the connection is gone.
    session: Option<Session>,
    /// Control plane → proxy.
    down: VecDeque<Line>,
    /// Proxy → control plane (ACKs and NACKs).
    up: VecDeque<Bytes>,
    /// The proxy still reads this connection.
    open_at_proxy: bool,
    /// The generation the session last looked at.
    seen: u64,
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Mesh,
    CpWake(u64),
    CpRecv(u64),
    CpNotice(u64),
    ProxyRecv(usize),
    Connect(usize),
    Grace(usize),
    StartCp,
    Cut(usize),
    Isolate(usize),
    Restart(usize),
    CrashCp,
    Reorder(u64),
    Duplicate(u64),
    Corrupt(u64),
}

pub struct World {
    rng: Rng,
    step: u64,
    pub log: Vec<String>,
    cp: Option<ControlPlane>,
    /// The mesh file: the last mesh written, and whether it is valid.
    file: (Mesh, bool),
    /// Every valid mesh written, in order.
    history: Vec<Mesh>,
    /// Generations published, across control-plane restarts.
    seq: u64,
    /// Every (workload, version) ever published, with its config.
    published: HashMap<(String, String), Config>,
    proxies: Vec<Proxy>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    faults: bool,
    adversarial: bool,
    rates: Rates,
    pub violations: Vec<String>,
    /// How often each kind of thing happened, for the summary.
    pub counts: BTreeMap<&'static str, u64>,
    _dir: tempfile::TempDir,
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng::with_seed(seed);
        let services = 3 + rng.usize(..4);
        let workloads = 2 + rng.usize(..3);
        let adversarial = rng.u8(..3) == 0;
        let rates = Rates::draw(&mut rng);
        let mesh = meshes::initial(&mut rng, services, workloads);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut proxies = Vec::new();
        for w in &mesh.workloads {
            for r in 0..1 + rng.usize(..3) {
                let i = proxies.len();
                let admin = SocketAddr::from(([127, 0, 0, 1], 5000 + i as u16));
                let cache = dir.path().join(format!("{}-{r}.json", w.name));
                proxies.push(Proxy::start(
                    format!("{}#{r}", w.name),
                    w.name.clone(),
                    admin,
                    cache,
                ));
            }
        }
        let mut world = World {
            rng,
            step: 0,
            log: Vec::new(),
            cp: None,
            file: (mesh.clone(), true),
            history: vec![mesh],
            seq: 0,
            published: HashMap::new(),
            proxies,
            conns: BTreeMap::new(),
            next_conn: 1,
            faults: true,
            adversarial,
            rates,
            violations: Vec::new(),
            counts: BTreeMap::new(),
            _dir: dir,
        };
        let shape = format!(
            "{services} services, {workloads} workloads, {} proxies, adversarial: {adversarial}, {rates:?}",
            world.proxies.len()
        );
        world.note(shape);
        world.start_cp();
        world
    }

    fn note(&mut self, what: impl Into<String>) {
        self.log.push(format!("#{} {}", self.step, what.into()));
    }

    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn violation(&mut self, what: String) {
        self.note(format!("VIOLATION: {what}"));
        self.violations.push(format!("step {}: {what}", self.step));
    }

    /// Runs `steps` steps with faults, then heals and settles.
    pub async fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            if !self.violations.is_empty() {
                return;
            }
            let Some(ev) = self.pick() else { break };
            self.step += 1;
            self.apply(ev).await;
            self.check();
        }
        if self.violations.is_empty() {
            self.settle().await;
        }
    }

    /// Every step possible now, weighted, and one picked. Faults (and the
    /// adversary's moves) are weighted as a group, whatever the number of
    /// proxies, at this seed's rates.
    fn pick(&mut self) -> Option<Ev> {
        let r = self.rates;
        let mut evs: Vec<(Ev, u32)> = Vec::new();
        let mut faults: Vec<Ev> = Vec::new();
        let mut tampering: Vec<Ev> = Vec::new();
        let up = self.cp.is_some();
        for (&id, c) in &self.conns {
            if c.session.is_some() && up && c.seen < self.seq {
                evs.push((Ev::CpWake(id), r.wake));
            }
            if c.session.is_some() && !c.up.is_empty() {
                evs.push((Ev::CpRecv(id), r.cp_recv));
            }
            if c.session.is_some() && !c.open_at_proxy {
                evs.push((Ev::CpNotice(id), 2));
            }
            if self.faults && self.adversarial && c.open_at_proxy {
                let deltas = c
                    .down
                    .iter()
                    .filter(|l| !l.tampered && is_delta(&l.bytes))
                    .count();
                if deltas >= 2 {
                    tampering.push(Ev::Reorder(id));
                }
                if deltas >= 1 {
                    tampering.push(Ev::Duplicate(id));
                    tampering.push(Ev::Corrupt(id));
                }
            }
        }
        for (i, p) in self.proxies.iter().enumerate() {
            match p.conn {
                Some(c) if !self.conns[&c].down.is_empty() => {
                    evs.push((Ev::ProxyRecv(i), r.proxy_recv))
                }
                Some(_) => {}
                None if up && p.isolated_until <= self.step => evs.push((Ev::Connect(i), 3)),
                None => {}
            }
            if p.has_grace() {
                evs.push((Ev::Grace(i), 1));
            }
            if self.faults {
                if p.conn.is_some() {
                    faults.push(Ev::Cut(i));
                }
                faults.push(Ev::Isolate(i));
                faults.push(Ev::Restart(i));
            }
        }
        if !up {
            evs.push((Ev::StartCp, 3));
        }
        if self.faults {
            evs.push((Ev::Mesh, r.mesh));
            if up {
                faults.push(Ev::CrashCp);
            }
        }
        let fault = (!faults.is_empty()).then(|| faults[self.rng.usize(..faults.len())]);
        if let Some(f) = fault {
            evs.push((f, r.faults));
        }
        let tamper = (!tampering.is_empty()).then(|| tampering[self.rng.usize(..tampering.len())]);
        if let Some(t) = tamper {
            evs.push((t, 3));
        }
        let total: u32 = evs.iter().map(|e| e.1).sum();
        if total == 0 {
            return None;
        }
        let mut at = self.rng.u32(..total);
        evs.into_iter().find_map(|(e, w)| {
            if at < w {
                Some(e)
            } else {
                at -= w;
                None
            }
        })
    }
}

/// How often each kind of step is picked, drawn per seed: some seeds have
/// slow proxies (deltas pile up in flight), some many faults.
#[derive(Clone, Copy, Debug)]
struct Rates {
    wake: u32,
    cp_recv: u32,
    proxy_recv: u32,
    mesh: u32,
    faults: u32,
}

impl Rates {
    fn draw(rng: &mut Rng) -> Rates {
        Rates {
            wake: 2 + rng.u32(..8),
            cp_recv: 2 + rng.u32(..8),
            proxy_recv: 1 + rng.u32(..10),
            mesh: 2 + rng.u32(..6),
            faults: 1 + rng.u32(..4),
        }
    }
}

/// Whether a line is a delta (it has a `base`).
pub fn is_delta(line: &[u8]) -> bool {
    serde_json::from_slice::<DeltaMsg>(line).is_ok()
}

/// The version and base of a line, if it reads as a message at all.
pub fn heading(line: &[u8]) -> Option<(String, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Head {
        version: String,
        base: Option<String>,
    }
    let h: Head = serde_json::from_slice(line).ok()?;
    Some((h.version, h.base))
}

/// What a verdict says, for the log.
pub fn verdict_text(v: &Ack) -> String {
    match v {
        Ack::Ack { version } => format!("ACK {version}"),
        Ack::Nack { version, errors } => format!("NACK {version}: {}", errors.join("; ")),
    }
}

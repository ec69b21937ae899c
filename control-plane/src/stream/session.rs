//! One subscription's side of the snapshot stream: what the proxy has,
//! what to push to it next (nothing, a delta from what it has, or the whole
//! snapshot) and what its ACKs and NACKs mean. `Session::run` drives it
//! from the generations channel and the proxy's request body; the steps
//! ([`Session::next`], [`Session::verdict`]) are public so the deterministic
//! simulation (`control-plane/tests/sim/`) drives the same code.

use crate::app::stopped;
use crate::metrics::Metrics;
use crate::ndjson::Lines;
use crate::proxies::Connection;
use crate::source::{Generation, Published};
use bytes::Bytes;
use hyper::body::Incoming;
use remora_api::mesh::Ack;
use remora_api::stats::Report;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// One subscribed proxy.
pub struct Session {
    conn: Connection,
    workload: String,
    /// The version the proxy has or was last sent.
    has: Option<String>,
    /// That version's snapshot, when this session knows it (sent, or the
    /// current one when the Hello named it): what the next delta starts from.
    sent: Option<Published>,
    /// Versions sent and not answered yet, in order, each with whether it
    /// went as a delta. The proxy answers every line in turn, so a verdict
    /// is for the first of its version here: versions recur (a reverted
    /// mesh), and matching deltas alone by version took a whole snapshot's
    /// ACK for a later delta's, so that delta's NACK went unseen (found by
    /// the simulation). A NACK of a delta (the proxy may not hold its base)
    /// makes the next push whole.
    in_flight: VecDeque<(String, bool)>,
    /// The version sent and not answered yet, and when its clock started.
    pending: Option<(String, Instant)>,
    connected: Instant,
    warned_missing: bool,
    metrics: Arc<Metrics>,
}

/// At most this many versions in flight are remembered per session (a
/// proxy answers each in turn; more in flight means it is far behind).
const IN_FLIGHT: usize = 16;

impl Session {
    /// A session for `conn`, a proxy of `workload` that says it serves
    /// version `has` (its Hello's).
    pub fn new(
        conn: Connection,
        workload: String,
        has: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Session {
        Session {
            conn,
            workload,
            has,
            sent: None,
            in_flight: VecDeque::new(),
            pending: None,
            connected: Instant::now(),
            warned_missing: false,
            metrics,
        }
    }

    /// The workload this session serves.
    pub fn workload(&self) -> &str {
        &self.workload
    }

    /// Pushes what [`Session::next`] says at the start and after every
    /// verdict or new generation, until the proxy or the control plane goes.
    pub(super) async fn run(
        mut self,
        mut lines: Lines<Incoming>,
        tx: mpsc::Sender<Bytes>,
        mut generations: watch::Receiver<Arc<Generation>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let why = loop {
            let current = generations
                .borrow_and_update()
                .snapshots
                .get(&self.workload)
                .cloned();
            match self.next(current).await {
                Ok(Some(line)) => {
                    if tx.send(line).await.is_err() {
                        break "the proxy went away".to_string();
                    }
                }
                Ok(None) => {}
                Err(e) => break e,
            }
            tokio::select! {
                line = lines.next() => match line {
                    Ok(Some(line)) => self.verdict(&line),
                    Ok(None) => break "the proxy closed its stream".to_string(),
                    Err(e) => break e.to_string(),
                },
                changed = generations.changed() => if changed.is_err() {
                    break "shutting down".to_string();
                },
                _ = tx.closed() => break "the proxy went away".to_string(),
                _ = stopped(&mut stop) => break "shutting down".to_string(),
            }
        };
        tracing::info!(id = self.conn.id, workload = %self.workload, reason = %why, "proxy disconnected");
    }

    /// The line to push now that `current` is the workload's snapshot
    /// (`None`: the workload left the mesh): nothing when the proxy has (or
    /// was last sent) that version, else a delta from what it has or the
    /// whole snapshot, recorded as sent. `Err` ends the session.
    pub async fn next(&mut self, current: Option<Published>) -> Result<Option<Bytes>, String> {
        match current {
            Some(p) if self.has.as_ref() == Some(&p.version) => {
                self.warned_missing = false;
                // The Hello named it: later changes can be deltas.
                self.sent.get_or_insert(p);
                Ok(None)
            }
            Some(p) => {
                self.warned_missing = false;
                let (line, delta) = self.encode(&p).await?;
                self.pushed(p, &line, delta);
                Ok(Some(line))
            }
            None if !self.warned_missing => {
                self.warned_missing = true;
                tracing::warn!(id = self.conn.id, workload = %self.workload, "workload no longer in the mesh; its proxy keeps its last snapshot");
                self.conn.error(format!(
                    "workload `{}` is no longer in the mesh",
                    self.workload
                ));
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// `p` as a delta from what the proxy has, when that can be said; else
    /// whole (put together on a blocking thread: 10 MB for a snapshot with
    /// 10k services). With the number of changes a delta carries.
    async fn encode(&self, p: &Published) -> Result<(Bytes, Option<usize>), String> {
        let base = self
            .sent
            .as_ref()
            .filter(|s| self.has.as_ref() == Some(&s.version));
        if let Some(delta) = base.and_then(|b| p.delta_line(b)) {
            return Ok((delta.0, Some(delta.1)));
        }
        // A whole line is a copy of up to 10 MB: not on a runtime worker.
        let p = p.clone();
        tokio::task::spawn_blocking(move || p.line())
            .await
            .map(|line| (line, None))
            .map_err(|e| format!("encoding the snapshot failed: {e}"))
    }

    fn pushed(&mut self, p: Published, line: &Bytes, delta: Option<usize>) {
        let kind = if delta.is_some() { "delta" } else { "snapshot" };
        self.has = Some(p.version.clone());
        self.conn.sent(&p.version);
        self.metrics
            .pushes
            .with_label_values(&[&self.workload, kind])
            .inc();
        self.metrics.push_bytes.observe(line.len() as f64);
        // A proxy that subscribed after the change could not have had it sooner.
        self.pending = Some((p.version.clone(), p.since.max(self.connected)));
        if self.in_flight.len() == IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.in_flight
            .push_back((p.version.clone(), delta.is_some()));
        match delta {
            Some(changes) => {
                tracing::info!(id = self.conn.id, workload = %self.workload, version = %p.version, bytes = line.len(), changes, "delta sent")
            }
            None => {
                tracing::info!(id = self.conn.id, workload = %self.workload, version = %p.version, bytes = line.len(), "snapshot sent")
            }
        }
        self.sent = Some(p);
    }

    /// Records an ACK or NACK line (or a stats report).
    pub fn verdict(&mut self, line: &[u8]) {
        let (id, workload) = (self.conn.id, self.workload.as_str());
        let mut nacked = false;
        let answered = match serde_json::from_slice::<Ack>(line) {
            Ok(Ack::Ack { version }) => {
                self.metrics.acks.inc();
                if let Some((_, start)) = self.pending.as_ref().filter(|(v, _)| *v == version) {
                    self.metrics
                        .convergence
                        .observe(start.elapsed().as_secs_f64());
                }
                tracing::info!(id, workload = %workload, version = %version, "snapshot applied");
                self.conn.applied(&version);
                version
            }
            Ok(Ack::Nack { version, errors }) => {
                self.metrics.nacks.with_label_values(&[workload]).inc();
                tracing::warn!(id, workload = %workload, version = %version, errors = %errors.join("; "), "snapshot rejected");
                self.conn.rejected(&version, errors);
                nacked = true;
                version
            }
            Err(e) => {
                if let Ok(Report::Stats(report)) = serde_json::from_slice::<Report>(line) {
                    self.conn.stats(report);
                    return;
                }
                tracing::warn!(id, workload = %workload, error = %e, "bad message from a proxy");
                self.conn.error(format!("bad message: {e}"));
                return;
            }
        };
        if self.pending.as_ref().is_some_and(|(v, _)| *v == answered) {
            self.pending = None;
        }
        let at = self.in_flight.iter().position(|(v, _)| *v == answered);
        if let Some((_, delta)) = at.and_then(|i| self.in_flight.remove(i)) {
            if nacked && delta {
                // The proxy may not hold the delta's base: what it has is
                // unknown, so the current snapshot goes whole.
                self.has = None;
                self.sent = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxies::Proxies;
    use remora_api::mesh::DeltaMsg;

    /// One workload calling one service, whose endpoint is at `port`.
    fn generation(port: u16, prev: Option<&Generation>) -> Generation {
        let yaml = format!(
            "services: [{{ name: s, endpoints: [{{ address: '127.0.0.1:{port}' }}] }}]\n\
             workloads: [{{ name: w, outbound: '127.0.0.1:4140', calls: [s] }}]"
        );
        let mesh = crate::mesh::parse_for(&yaml, false).unwrap();
        Generation::build(&mesh, prev, Instant::now())
    }

    fn verdict(kind: &str, version: &str) -> Vec<u8> {
        let errors = if kind == "nack" {
            r#","errors":["no"]"#
        } else {
            ""
        };
        format!(r#"{{"type":"{kind}","version":"{version}"{errors}}}"#).into_bytes()
    }

    #[tokio::test]
    async fn a_verdict_is_for_the_push_it_answers_when_versions_recur() {
        let metrics = Metrics::new();
        let proxies = Proxies::new(metrics.clone());
        let conn = proxies.connect("w", None, None, None, ([127, 0, 0, 1], 1).into());
        let mut session = Session::new(conn, "w".into(), None, metrics);
        let a = generation(7001, None);
        let b = generation(7002, Some(&a));
        let back = generation(7001, Some(&b));
        let (va, vb) = (&a.snapshots["w"].version, &b.snapshots["w"].version);
        assert_eq!(*va, back.snapshots["w"].version);
        let is_delta =
            |line: &Bytes| serde_json::from_slice::<DeltaMsg>(line.trim_ascii_end()).is_ok();
        // In flight: A whole, then A→B and B→A (a revert) as deltas.
        let mut sent = Vec::new();
        for g in [&a, &b, &back] {
            let line = session.next(g.snapshots.get("w").cloned()).await.unwrap();
            sent.push(is_delta(&line.unwrap()));
        }
        assert_eq!(sent, [false, true, true]);
        // The proxy applies A and A→B, and NACKs B→A: the ACK of A is the
        // whole snapshot's, so the NACK is the delta's, and the current
        // version goes again, whole.
        session.verdict(&verdict("ack", va));
        session.verdict(&verdict("ack", vb));
        session.verdict(&verdict("nack", va));
        let again = session
            .next(back.snapshots.get("w").cloned())
            .await
            .unwrap();
        let again = again.expect("the current version, sent again");
        assert!(!is_delta(&again));
        // A NACK of a whole snapshot does not resend it (the proxy cannot
        // take it; the next change is tried).
        session.verdict(&verdict("nack", va));
        let none = session
            .next(back.snapshots.get("w").cloned())
            .await
            .unwrap();
        assert_eq!(none, None);
    }
}

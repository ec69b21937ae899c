//! The etcd source's loop: read every key under the prefix (a range, at
//! one revision), offer the mesh they make, then watch the prefix from the
//! next revision, applying each batch of events to the keys held in memory
//! and offering the result once the changes pause for [`DEBOUNCE`].
//!
//! A lost watch (etcd down, a member gone, the stream cut) is resumed from
//! the revision after the last event seen, on the next endpoint, after a
//! backoff (100 ms doubling to 10 s, with jitter); the last good mesh keeps
//! being served meanwhile. If that revision was compacted away (etcd cancels
//! the watch with `compact_revision`), or the store's revision went back
//! (a new cluster), everything is read again. The keys are a sorted map, so
//! a re-read that finds what was there builds the same mesh, whose version
//! [`MeshSource::offer`] sees unchanged: nothing is published.

use super::client::{Client, EtcdError};
use super::layout::{self, Keys};
use super::wire::WatchResponse;
use crate::admin::Readiness;
use crate::app::stopped;
use crate::source::MeshSource;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long the watch must be quiet before a batch of changes is offered.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A burst that never pauses is offered at the latest this long after its
/// first change.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What the source follows, and what it tells when it has a mesh.
pub struct Follower {
    pub source: Arc<MeshSource>,
    pub client: Client,
    pub prefix: String,
    /// Set ready once a valid mesh from etcd is served.
    pub readiness: Arc<Readiness>,
}

/// Why a watch ended.
enum Ended {
    /// The connection failed or closed: resume from the same revision.
    Lost(EtcdError),
    /// The revision is gone (compacted) or the store is not the one the
    /// keys came from: read everything again.
    Resync(String),
}

/// The keys held in memory, and what was last offered.
struct State {
    keys: Keys,
    /// The revision to watch from (the one after the last seen).
    next: i64,
    offered: Option<Keys>,
}

impl Follower {
    /// Follows etcd until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut state = State {
            keys: Keys::new(),
            next: 0,
            offered: None,
        };
        // Whether `state` holds a read of every key (else: read them).
        let mut synced = false;
        let mut failures: u32 = 0;
        loop {
            if failures > 0 {
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(backoff(failures)) => {}
                }
            }
            if !synced {
                let read = tokio::select! {
                    _ = stopped(&mut stop) => return,
                    r = self.client.range(&self.prefix) => r,
                };
                match read {
                    Ok((revision, kvs)) => {
                        state.keys = kvs
                            .into_iter()
                            .map(|kv| (kv.key.text(), kv.value.0))
                            .collect();
                        state.next = revision + 1;
                        synced = true;
                        tracing::info!(
                            revision,
                            keys = state.keys.len(),
                            "etcd: read the mesh keys"
                        );
                        self.offer(&mut state, Instant::now()).await;
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "etcd: cannot read the mesh; serving the last good one");
                        continue;
                    }
                }
            }
            let ended = tokio::select! {
                _ = stopped(&mut stop) => return,
                e = self.watch(&mut state, &mut failures) => e,
            };
            failures += 1;
            match ended {
                Ended::Lost(e) => {
                    tracing::warn!(error = %e, revision = state.next, "etcd: watch lost; serving the last good mesh");
                    // Changes seen before the loss but not offered yet.
                    self.offer(&mut state, Instant::now()).await;
                }
                Ended::Resync(why) => {
                    tracing::info!(reason = %why, "etcd: reading every key again");
                    synced = false;
                }
            }
        }
    }

    /// Watches from `state.next`, applying events, until the watch ends.
    async fn watch(&self, state: &mut State, failures: &mut u32) -> Ended {
        let mut watch = match self.client.watch(&self.prefix, state.next).await {
            Ok(w) => w,
            Err(e) => return Ended::Lost(e),
        };
        // (first change, last change) of the batch not yet offered.
        let mut pending: Option<(Instant, Instant)> = None;
        loop {
            let due = pending.map(|(first, last)| (last + DEBOUNCE).min(first + MAX_DELAY));
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                msg = watch.next() => {
                    let rsp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return Ended::Lost(EtcdError::Transport {
                            endpoint: watch.endpoint.clone(),
                            message: "the watch stream ended".into(),
                        }),
                        Err(e) => return Ended::Lost(e),
                    };
                    if let Some(why) = resync_reason(&rsp, state.next) {
                        return Ended::Resync(why);
                    }
                    if rsp.created {
                        *failures = 0;
                        tracing::info!(endpoint = %watch.endpoint, revision = state.next, "etcd: watching");
                    }
                    if apply(state, rsp) {
                        let now = Instant::now();
                        pending = Some((pending.map_or(now, |p| p.0), now));
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => {
                    if let Some((first, _)) = pending.take() {
                        self.offer(state, first).await;
                    }
                }
            }
        }
    }

    /// Offers the mesh the keys make, unless they are the ones last offered.
    async fn offer(&self, state: &mut State, seen: Instant) {
        if state.offered.as_ref() == Some(&state.keys) {
            return;
        }
        state.offered = Some(state.keys.clone());
        let (source, prefix, keys) = (self.source.clone(), self.prefix.clone(), state.keys.clone());
        // Validating and compiling a large mesh may take a while.
        let valid = tokio::task::spawn_blocking(move || {
            let mesh = layout::read(&prefix, &keys, |m| source.check(m));
            let valid = mesh.is_ok();
            source.offer(mesh, seen);
            valid
        })
        .await
        .unwrap_or(false);
        if valid {
            self.readiness.set_ready();
        }
    }
}

/// Why the keys must be read again, if they must.
fn resync_reason(rsp: &WatchResponse, next: i64) -> Option<String> {
    if rsp.compact_revision.0 > 0 {
        return Some(format!(
            "revision {next} was compacted (etcd keeps from {})",
            rsp.compact_revision.0
        ));
    }
    if rsp.canceled {
        return Some(format!("etcd canceled the watch: {}", rsp.cancel_reason));
    }
    if rsp.created && rsp.header.revision.0 + 1 < next {
        return Some(format!(
            "etcd is at revision {}, before the {} already seen (a new store?)",
            rsp.header.revision.0,
            next - 1
        ));
    }
    None
}

/// Applies a response's events to the keys; whether there were any.
fn apply(state: &mut State, rsp: WatchResponse) -> bool {
    let any = !rsp.events.is_empty();
    for ev in rsp.events {
        state.next = state.next.max(ev.kv.mod_revision.0 + 1);
        let key = ev.kv.key.text();
        if ev.is_delete() {
            state.keys.remove(&key);
        } else {
            state.keys.insert(key, ev.kv.value.0);
        }
    }
    any
}

/// The wait before try `failures` (≥ 1): 100 ms doubling to 10 s, times a
/// random factor in [0.5, 1) so replicas do not retry together.
fn backoff(failures: u32) -> Duration {
    let base = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(10));
    base.min(BACKOFF_MAX).mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(json: &str) -> WatchResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn when_to_read_everything_again() {
        // (what, response, the next revision expected, re-read?)
        let cases = [
            (
                "events",
                r#"{"header":{"revision":"9"},"events":[]}"#,
                9,
                false,
            ),
            (
                "created at the store's revision",
                r#"{"header":{"revision":"8"},"created":true}"#,
                9,
                false,
            ),
            (
                "compacted",
                r#"{"header":{},"created":true,"compact_revision":"12"}"#,
                9,
                true,
            ),
            (
                "canceled",
                r#"{"header":{"revision":"9"},"canceled":true,"cancel_reason":"no leader"}"#,
                9,
                true,
            ),
            (
                "a store behind what was seen",
                r#"{"header":{"revision":"3"},"created":true}"#,
                9,
                true,
            ),
        ];
        for (what, json, next, again) in cases {
            assert_eq!(
                resync_reason(&response(json), next).is_some(),
                again,
                "{what}"
            );
        }
    }

    #[test]
    fn events_apply_in_order_and_move_the_revision() {
        let mut state = State {
            keys: Keys::new(),
            next: 5,
            offered: None,
        };
        state.keys.insert("/r/a".into(), "old".into());
        // PUT /r/b = x at 6, DELETE /r/a at 7.
        let rsp = response(
            r#"{"header":{"revision":"7"},"events":[
                {"kv":{"key":"L3IvYg==","value":"eA==","mod_revision":"6"}},
                {"type":"DELETE","kv":{"key":"L3IvYQ==","mod_revision":"7"}}]}"#,
        );
        assert!(apply(&mut state, rsp));
        assert_eq!(state.next, 8);
        assert_eq!(state.keys.keys().collect::<Vec<_>>(), ["/r/b"]);
        assert!(!apply(
            &mut state,
            response(r#"{"header":{"revision":"7"}}"#)
        ));
        assert_eq!(state.next, 8);
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        let ms = Duration::from_millis;
        // (failures, the full wait: the jittered one is in [half, full)).
        let cases = [
            (1, ms(100)),
            (2, ms(200)),
            (3, ms(400)),
            (7, ms(6400)),
            (8, ms(10_000)),
            (1000, ms(10_000)),
        ];
        for (failures, full) in cases {
            for _ in 0..20 {
                let wait = backoff(failures);
                assert!(wait >= full / 2 && wait < full, "{failures}: {wait:?}");
            }
        }
    }
}

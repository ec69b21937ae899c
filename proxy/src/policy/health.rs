//! Active health checks: per-endpoint health driven by periodic HTTP probes.
//!
//! [`HealthState`] lives in an endpoint, so it is carried across config swaps
//! with the endpoint. It holds whether the endpoint is healthy, the streak of
//! probe results that contradict that, and when the next probe is due, all in
//! atomics, so the balancer reads it without a lock. A supervisor ticks, asks
//! [`HealthState::due`] which endpoints to [`probe`], and feeds each result
//! to [`HealthState::record`], which applies the thresholds.

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use remora_api as api;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::net::TcpStream;

/// The `user-agent` of every probe, so upstream logs can tell them apart.
const PROBE_AGENT: &str = "remora-health-check";
/// Set in [`HealthState::status`] while the endpoint is unhealthy.
const UNHEALTHY: u64 = 1 << 32;

/// Health of one endpoint. Endpoints start healthy: only probes can prove
/// otherwise, so an endpoint without health checks is always healthy.
#[derive(Debug, Default)]
pub struct HealthState {
    /// [`UNHEALTHY`] flag, and in the low 32 bits the number of probe results
    /// in a row that contradict the current state.
    status: AtomicU64,
    /// When the next probe is due, on the caller's clock; 0 = never probed.
    next_probe_ns: AtomicU64,
}

impl HealthState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_healthy(&self) -> bool {
        self.status.load(Relaxed) & UNHEALTHY == 0
    }

    /// Records a probe result: `unhealthy_threshold` failures in a row make a
    /// healthy endpoint unhealthy, `healthy_threshold` successes in a row make
    /// it healthy again (a threshold of 0 counts as 1). Returns the new state
    /// on a transition, `None` otherwise.
    pub fn record(&self, ok: bool, cfg: &api::HealthCheck) -> Option<bool> {
        let mut transition = None;
        let _ = self.status.fetch_update(Relaxed, Relaxed, |s| {
            let healthy = s & UNHEALTHY == 0;
            transition = None;
            if ok == healthy {
                return (s != pack(healthy, 0)).then_some(pack(healthy, 0));
            }
            let streak = (s as u32).saturating_add(1);
            let threshold = if healthy {
                cfg.unhealthy_threshold
            } else {
                cfg.healthy_threshold
            };
            if streak < threshold.max(1) {
                return Some(pack(healthy, streak));
            }
            transition = Some(!healthy);
            Some(pack(!healthy, 0))
        });
        transition
    }

    /// Whether a probe is due at `now_ns` (any monotonic clock, the same on
    /// every call, e.g. `balance::now_ns()`), and if so schedules the next
    /// one: `interval` after this one was due, so a supervisor ticking more
    /// often than `interval` probes once per interval without drift. A new
    /// endpoint is due at once; one that fell a whole interval behind (or
    /// whose interval shrank) restarts its schedule from `now_ns`. Of
    /// concurrent callers, only one sees `true`.
    pub fn due(&self, now_ns: u64, interval: Duration) -> bool {
        let interval = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let next = self.next_probe_ns.load(Relaxed);
        if now_ns < next && next - now_ns <= interval {
            return false;
        }
        let on_schedule = next != 0 && next <= now_ns && now_ns - next < interval;
        let after = if on_schedule { next } else { now_ns }.saturating_add(interval);
        self.next_probe_ns
            .compare_exchange(next, after, Relaxed, Relaxed)
            .is_ok()
    }

    /// Forgets all results: healthy, due at once. For when a backend's health
    /// check is removed or changed, so no endpoint stays marked unhealthy by
    /// a check that no longer runs.
    pub fn reset(&self) {
        self.status.store(0, Relaxed);
        self.next_probe_ns.store(0, Relaxed);
    }
}

fn pack(healthy: bool, streak: u32) -> u64 {
    (if healthy { 0 } else { UNHEALTHY }) | u64::from(streak)
}

/// Probes an endpoint once: a GET of `path` with `host` on a fresh
/// connection, healthy iff a 2xx status arrives within `timeout` (connect
/// included). The response body is not read. Never panics; failures are
/// logged at debug level.
///
/// Plain TCP and HTTP/1.1 only: TLS upstreams are not supported yet, and a
/// probe of one fails (so the supervisor must not health-check TLS backends).
pub async fn probe(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, get(addr, host, path)).await {
        Ok(Ok(status)) => {
            if !status.is_success() {
                tracing::debug!(%addr, path, %status, "health probe: unhealthy status");
            }
            status.is_success()
        }
        Ok(Err(error)) => {
            tracing::debug!(%addr, path, %error, "health probe failed");
            false
        }
        Err(_) => {
            tracing::debug!(%addr, path, ?timeout, "health probe timed out");
            false
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One GET on a fresh connection, returning the response status. The
/// connection is driven in this future (no task is spawned), so dropping it
/// on timeout closes the socket.
async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<StatusCode, BoxError> {
    let req = Request::get(path)
        .header(HOST, host)
        .header(USER_AGENT, PROBE_AGENT)
        .body(Empty::<Bytes>::new())?;
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
    let mut conn = pin!(conn);
    let mut response = pin!(sender.send_request(req));
    tokio::select! {
        res = response.as_mut() => Ok(res?.status()),
        // The connection may end right after handing over the response
        // (`connection: close`): the response future then has it, or an error.
        end = conn.as_mut() => {
            end?;
            Ok(response.await?.status())
        }
    }
}

#[cfg(test)]
mod tests;

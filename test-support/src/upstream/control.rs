//! The test upstream's scriptable side: the failure [`Mode`] a test switches
//! at run time, the health flag behind `/healthz`, and the counters, all
//! shared by every connection of one [`Upstream`](super::Upstream). Also the
//! responses a failing upstream sends.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};

use super::routes::{named, RespBody};

/// How an [`Upstream`](super::Upstream) answers requests, set with
/// [`Upstream::set_mode`](super::Upstream::set_mode). `/healthz` ignores the
/// mode; it follows [`Upstream::set_health`](super::Upstream::set_health).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Every path behaves as documented on [`Upstream`](super::Upstream).
    #[default]
    Normal,
    /// Every request gets `status` with body `<name> failing\n` (empty for
    /// 204 and 304). The request body is read first.
    FailStatus { status: u16 },
    /// Request number `k` fails like [`Mode::FailStatus`] when `k % n == 0`,
    /// and is served normally otherwise. `k` counts every request this
    /// upstream has received since it started (what
    /// [`requests`](super::Upstream::requests) reports once it has arrived),
    /// not since the mode was set: `n = 2` fails every second request.
    FailEvery { n: u32, status: u16 },
    /// Every request's connection is closed without a response: the client
    /// sees EOF or a reset. On HTTP/2 that ends the whole connection, other
    /// streams on it included.
    Reset,
    /// A gRPC "trailers-only" failure: 200, `content-type: application/grpc`,
    /// `grpc-status: <code>`, `grpc-message: failing`, empty body.
    GrpcStatus { code: u32 },
}

impl Mode {
    /// Panics on a mode the server could not act on, so the mistake shows in
    /// the test that made it rather than in a server task.
    pub(super) fn validate(self) {
        let status = match self {
            Mode::FailStatus { status } => status,
            Mode::FailEvery { n, status } => {
                assert!(n > 0, "Mode::FailEvery needs n > 0");
                status
            }
            Mode::Normal | Mode::Reset | Mode::GrpcStatus { .. } => return,
        };
        let valid = StatusCode::from_u16(status).is_ok_and(|s| !s.is_informational());
        assert!(valid, "{self:?}: status must be in 200..=999");
    }

    /// What this mode does to request number `k` (counted from 1).
    fn fault(self, k: usize) -> Option<Fault> {
        let status = |s| StatusCode::from_u16(s).expect("validated in set_mode");
        match self {
            Mode::Normal => None,
            Mode::FailStatus { status: s } => Some(Fault::Status(status(s))),
            Mode::FailEvery { n, status: s } => (k as u64)
                .is_multiple_of(u64::from(n))
                .then(|| Fault::Status(status(s))),
            Mode::Reset => Some(Fault::Reset),
            Mode::GrpcStatus { code } => Some(Fault::Grpc(code)),
        }
    }
}

/// A request the mode fails.
pub(super) enum Fault {
    Status(StatusCode),
    Reset,
    Grpc(u32),
}

/// State shared by the [`Upstream`](super::Upstream) handle and its tasks.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) connections: AtomicUsize,
    pub(super) requests: AtomicUsize,
    pub(super) failures: AtomicUsize,
    pub(super) health_checks: AtomicUsize,
    mode: Mutex<Mode>,
    /// Inverted so that `Default` means healthy.
    unhealthy: AtomicBool,
}

impl Shared {
    pub(super) fn set_mode(&self, mode: Mode) {
        mode.validate();
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    pub(super) fn set_health(&self, healthy: bool) {
        self.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    pub(super) fn healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::SeqCst)
    }

    /// Counts one request (not a health check) and decides whether the
    /// current mode fails it; failures are counted too.
    pub(super) fn admit(&self) -> Option<Fault> {
        let k = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let mode = *self.mode.lock().unwrap_or_else(|e| e.into_inner());
        let fault = mode.fault(k);
        if fault.is_some() {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        fault
    }
}

/// `status` with body `<name> failing\n`.
pub(super) fn failing(name: &str, status: StatusCode) -> Response<RespBody> {
    named(&format!("{name} failing"), status)
}

/// A trailers-only gRPC response carrying `code`.
pub(super) fn grpc_failure(code: u32) -> Response<RespBody> {
    let mut resp = Response::new(super::routes::full(""));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code));
    headers.insert("grpc-message", HeaderValue::from_static("failing"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_every_counts_from_one() {
        let mode = Mode::FailEvery { n: 3, status: 503 };
        let failed: Vec<usize> = (1..=9).filter(|&k| mode.fault(k).is_some()).collect();
        assert_eq!(failed, [3, 6, 9]);
    }

    #[test]
    #[should_panic(expected = "n > 0")]
    fn fail_every_zero_is_refused() {
        Mode::FailEvery { n: 0, status: 503 }.validate();
    }

    #[test]
    #[should_panic(expected = "status must be")]
    fn informational_status_is_refused() {
        Mode::FailStatus { status: 100 }.validate();
    }
}

//! Steady client load for tests that change something under traffic (a
//! reload, a control-plane push or restart) and must show that no request
//! failed: a few clients on kept-alive HTTP/1.1 connections, each bounded in
//! count, that record every failure and which upstream answered last.

use crate::Http1Conn;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Requests each client sends at most.
pub const MAX_PER_CLIENT: usize = 20_000;

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    total: AtomicUsize,
    failures: AtomicUsize,
    /// The `x-upstream` of the latest successful response.
    last: Mutex<String>,
    /// What the failures were, for the assertion message.
    errors: Mutex<Vec<String>>,
}

/// What a finished [`Load`] saw.
#[derive(Debug)]
pub struct Tally {
    pub total: usize,
    pub failures: usize,
    /// Up to the first 20 failures.
    pub errors: Vec<String>,
}

pub struct Load {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// `clients` connections to `addr` sending `GET /` with `host` as the
    /// Host header (or the address), until [`Load::finish`] or
    /// [`MAX_PER_CLIENT`] requests each. A non-200 answer or a transport
    /// error is a failure; after a transport error the client reconnects.
    pub fn start(addr: SocketAddr, host: Option<&str>, clients: usize) -> Load {
        let shared = Arc::new(Shared::default());
        let tasks = (0..clients)
            .map(|_| {
                let shared = shared.clone();
                let host = host.map(str::to_string);
                tokio::spawn(async move { client(addr, host, &shared).await })
            })
            .collect();
        Load { shared, tasks }
    }

    /// Requests sent so far.
    pub fn total(&self) -> usize {
        self.shared.total.load(Relaxed)
    }

    /// Failed requests so far.
    pub fn failures(&self) -> usize {
        self.shared.failures.load(Relaxed)
    }

    /// The upstream (`x-upstream`) of the latest successful answer.
    pub fn last_upstream(&self) -> String {
        self.shared.last.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until the latest answer came from upstream `name`.
    pub async fn wait_for_upstream(&self, name: &str) {
        for _ in 0..400 {
            if *self.shared.last.lock().unwrap() == name {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "traffic never reached {name}; last answer from {:?}",
            self.shared.last.lock().unwrap()
        );
    }

    /// Waits until `n` more requests have been sent (up to 10 s).
    pub async fn wait_for_requests(&self, n: usize) {
        let target = self.total() + n;
        for _ in 0..400 {
            if self.total() >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("load stalled at {} requests", self.total());
    }

    /// Stops the clients and says what they saw.
    pub async fn finish(self) -> Tally {
        self.shared.stop.store(true, Relaxed);
        for t in self.tasks {
            t.await.expect("load client panicked");
        }
        Tally {
            total: self.shared.total.load(Relaxed),
            failures: self.shared.failures.load(Relaxed),
            errors: std::mem::take(&mut *self.shared.errors.lock().unwrap()),
        }
    }
}

async fn client(addr: SocketAddr, host: Option<String>, shared: &Shared) {
    let headers: Vec<(&str, &str)> = host.as_deref().map(|h| ("host", h)).into_iter().collect();
    let mut conn = Http1Conn::try_connect(addr).await;
    for _ in 0..MAX_PER_CLIENT {
        if shared.stop.load(Relaxed) {
            break;
        }
        let result = match &mut conn {
            Ok(c) => c.try_send("GET", "/", &headers, Bytes::new()).await,
            Err(e) => Err(anyhow::anyhow!("connect: {e:#}")),
        };
        let failure = match result {
            Ok(r) if r.status == 200 => {
                *shared.last.lock().unwrap() = r.upstream().unwrap_or("").to_string();
                None
            }
            Ok(r) => Some(format!(
                "{} remora-error={:?} {}",
                r.status,
                r.header("remora-error"),
                r.text()
            )),
            Err(e) => {
                let msg = format!("{e:#}");
                conn = Http1Conn::try_connect(addr).await;
                Some(msg)
            }
        };
        if let Some(f) = failure {
            shared.failures.fetch_add(1, Relaxed);
            let mut errors = shared.errors.lock().unwrap();
            if errors.len() < 20 {
                errors.push(f);
            }
        }
        shared.total.fetch_add(1, Relaxed);
    }
}

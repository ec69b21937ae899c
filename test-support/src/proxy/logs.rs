//! The proxy's log store: every stdout and stderr line of the child process,
//! in arrival order, plus the addresses announced by `"listener bound"` and
//! `"admin bound"` JSON lines. Waiting is race-free: a `watch` counter ticks
//! on every line, and waiters re-check after each tick.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Default)]
pub(super) struct State {
    pub(super) lines: Vec<String>,
    pub(super) listeners: HashMap<String, SocketAddr>,
    pub(super) admin: Option<SocketAddr>,
}

pub(super) struct LogStore {
    state: Mutex<State>,
    ticks: watch::Sender<u64>,
}

impl LogStore {
    pub(super) fn new() -> LogStore {
        LogStore {
            state: Mutex::default(),
            ticks: watch::channel(0).0,
        }
    }

    /// Records one line, noting any address it announces.
    pub(super) fn push(&self, line: String) {
        {
            let mut state = self.state.lock().unwrap();
            if let Ok(json) = serde_json::from_str::<Value>(&line) {
                let field = |name: &str| json.get(name).and_then(Value::as_str);
                let address = field("address").and_then(|a| a.parse::<SocketAddr>().ok());
                match (field("message"), address) {
                    (Some("listener bound"), Some(addr)) => {
                        if let Some(name) = field("listener") {
                            state.listeners.insert(name.to_owned(), addr);
                        }
                    }
                    (Some("admin bound"), Some(addr)) => state.admin = Some(addr),
                    _ => {}
                }
            }
            state.lines.push(line);
        }
        self.ticks.send_modify(|n| *n += 1);
    }

    /// Runs `f` on the current state.
    pub(super) fn with<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap())
    }

    pub(super) fn lines(&self) -> Vec<String> {
        self.with(|s| s.lines.clone())
    }

    /// Calls `f` now and after every new line until it returns `Some` or
    /// `timeout` passes.
    pub(super) async fn wait<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut ticks = self.ticks.subscribe();
        loop {
            ticks.borrow_and_update();
            if let Some(found) = self.with(&mut f) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, ticks.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    /// The collected lines, numbered, for error messages.
    pub(super) fn dump(&self) -> String {
        self.with(|s| {
            s.lines
                .iter()
                .enumerate()
                .map(|(i, l)| format!("{i:4}: {l}\n"))
                .collect()
        })
    }
}

/// Feeds every line of `pipe` into `store` until EOF (lossy UTF-8).
pub(super) async fn pump(pipe: impl AsyncRead + Unpin, store: &LogStore) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                store.push(line.trim_end_matches(['\n', '\r']).to_owned());
            }
        }
    }
}

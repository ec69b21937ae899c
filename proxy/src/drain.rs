//! Graceful drain. [`Drain::drain`] tells every accept loop to stop and every
//! client connection to finish its in-flight requests and close (HTTP/1.1:
//! after the current response; HTTP/2: GOAWAY), then waits for them up to a
//! deadline. Each accept loop and connection holds a [`Watch`]; the drain is
//! complete when the last one is dropped.

use std::time::Duration;
use tokio::sync::watch;

pub struct Drain {
    tx: watch::Sender<bool>,
}

#[derive(Clone)]
pub struct Watch {
    rx: watch::Receiver<bool>,
}

impl Drain {
    pub fn new() -> (Drain, Watch) {
        let (tx, rx) = watch::channel(false);
        (Drain { tx }, Watch { rx })
    }

    /// Tells every watcher to drain: accept loops stop accepting.
    pub fn signal(&self) {
        let _ = self.tx.send(true);
    }

    /// Signals the drain and waits for every watcher to finish, at most
    /// `deadline`. Returns whether all finished in time.
    pub async fn drain(self, deadline: Duration) -> bool {
        self.signal();
        tokio::time::timeout(deadline, self.tx.closed())
            .await
            .is_ok()
    }
}

impl Watch {
    /// Resolves once the drain has started.
    pub async fn signaled(&mut self) {
        let _ = self.rx.wait_for(|d| *d).await;
    }
}

/// Resolves once a stop flag turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

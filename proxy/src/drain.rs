//! Graceful drain. [`Drain::drain`] tells every accept loop to stop and every
//! client connection to finish its in-flight requests and close (HTTP/1.1:
//! after the current response; HTTP/2: GOAWAY), then waits for them up to a
//! deadline. Each accept loop and connection holds a [`Watch`]; the drain is
//! complete when the last one is dropped.

use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;

pub struct Drain {
    tx: watch::Sender<bool>,
    /// Set before the channel says so: what [`Watch::signaled`] looks at.
    started: Arc<AtomicBool>,
}

#[derive(Clone)]
pub struct Watch {
    rx: watch::Receiver<bool>,
    started: Arc<AtomicBool>,
}

impl Drain {
    pub fn new() -> (Drain, Watch) {
        let (tx, rx) = watch::channel(false);
        let started = Arc::new(AtomicBool::new(false));
        let watch = Watch {
            rx,
            started: started.clone(),
        };
        (Drain { tx, started }, watch)
    }

    /// Tells every watcher to drain: accept loops stop accepting.
    pub fn signal(&self) {
        self.started.store(true, Ordering::Release);
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
    /// Resolves once the drain has started. A client connection's task
    /// polls it at every wake-up, twice a request: after its first poll,
    /// which registers the task for the drain's wake-up, it looks at one
    /// atomic flag until the drain has set it, and only then at the channel
    /// (perf, issue 12: the channel's check cost ~200 instructions a poll).
    pub fn signaled(&mut self) -> Signaled<'_, impl Future<Output = ()> + '_> {
        let Watch { rx, started } = self;
        Signaled {
            started,
            registered: false,
            inner: async move {
                let _ = rx.wait_for(|d| *d).await;
            },
        }
    }
}

pin_project! {
    /// [`Watch::signaled`]'s future.
    pub struct Signaled<'a, F> {
        started: &'a AtomicBool,
        registered: bool,
        #[pin]
        inner: F,
    }
}

impl<F: Future<Output = ()>> Future for Signaled<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // Registered with the channel already (the same task's waker: a
        // task's wakers all wake it), and no drain yet: nothing to see.
        if *this.registered && !this.started.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        *this.registered = true;
        this.inner.poll(cx)
    }
}

/// Resolves once a stop flag turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

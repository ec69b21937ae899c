//! The HTTP/1.1 header read timeout (the slowloris guard) without a timer per
//! request.
//!
//! hyper starts its head timer each time a connection begins to wait for a
//! request head, and stops it when the head has arrived. With tokio's timer
//! that is a boxed `Sleep` put into the timer wheel and taken out again for
//! every request (~700 instructions a request, perf, issue 12). Here the
//! timer hyper is given ([`HeadTimer`]) only writes the deadline down, and
//! one tokio `Sleep` per connection ([`Watchdog`]), polled by the
//! connection's own task, looks at it lazily: when it fires it sleeps again
//! until the deadline written down since, or, if that deadline has passed
//! while hyper still waits, marks it expired. hyper's next poll of its sleep
//! (in the same wake-up: the watchdog is polled before the connection) sees
//! it, and hyper ends the connection as with its own timer.
//!
//! The sleep hyper holds never registers a waker: the watchdog's `Sleep`
//! wakes the task that polls both. So the two must be polled by one task,
//! as [`super::server::serve`] does.

use crate::balance::ns_at;
use hyper::rt::{Sleep, Timer};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

#[derive(Default)]
struct State {
    /// When the head hyper waits for is late ([`ns_at`]); 0: hyper waits
    /// for none.
    deadline: AtomicU64,
    /// That deadline passed while hyper still waited.
    expired: AtomicBool,
}

/// The timer for hyper's HTTP/1.1 side of one connection. It only serves
/// the header read timeout (hyper's HTTP/1.1 server uses its timer for
/// nothing else).
#[derive(Clone)]
pub struct HeadTimer(Arc<State>);

pin_project! {
    /// The connection's one real sleep: see the module's doc. Pinned where
    /// the connection's task keeps it (no allocation of its own).
    pub struct Watchdog {
        state: Arc<State>,
        #[pin]
        sleep: tokio::time::Sleep,
        // The sleep is registered with the timer (polled once since its
        // last reset) and, until it fires, wakes this task.
        armed: bool,
        timeout: Duration,
    }
}

/// A connection's timer and watchdog, for a header read timeout of
/// `timeout`.
pub fn new(timeout: Duration) -> (HeadTimer, Watchdog) {
    let state = Arc::new(State::default());
    let watchdog = Watchdog {
        state: state.clone(),
        sleep: tokio::time::sleep(timeout),
        armed: false,
        timeout,
    };
    (HeadTimer(state), watchdog)
}

// hyper's `Timer` speaks std's `Instant`: converted to tokio's (whose
// clock tests pause) on the way in and out.
#[allow(clippy::disallowed_types)]
impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    /// tokio's clock, as the watchdog's (paused in tests).
    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn Sleep>> {
        // Never 0 ("none"): the epoch of `ns_at` is in the past.
        let at = ns_at(deadline.into()).max(1);
        self.0.expired.store(false, Relaxed);
        self.0.deadline.store(at, Relaxed);
        Box::pin(HeadSleep {
            state: self.0.clone(),
            at,
        })
    }
}

/// What hyper holds while it waits for a head.
struct HeadSleep {
    state: Arc<State>,
    at: u64,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        // No waker kept: the watchdog wakes the task (module doc).
        if self.state.expired.load(Relaxed) && self.state.deadline.load(Relaxed) == self.at {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        // The head arrived (or the connection ends). Only this sleep's own
        // deadline is cleared: hyper's `reset` makes the next before it
        // drops this one.
        if self
            .state
            .deadline
            .compare_exchange(self.at, 0, Relaxed, Relaxed)
            .is_ok()
        {
            self.state.expired.store(false, Relaxed);
        }
    }
}

impl Watchdog {
    /// Called by the connection's task at each wake-up, before it polls the
    /// connection. Once armed, and until its sleep fires, one load.
    pub fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) {
        let mut this = self.project();
        if *this.armed && !this.sleep.is_elapsed() {
            return;
        }
        // Not armed yet, or fired: look at what hyper waits for, and sleep
        // until then. Twice at most: the second reset is to a later instant.
        for _ in 0..2 {
            let now = tokio::time::Instant::now();
            let deadline = this.state.deadline.load(Relaxed);
            let next = if deadline == 0 {
                // No head awaited (a request in flight, or HTTP/2): any
                // head awaited from now on is late no sooner than this.
                now + *this.timeout
            } else if deadline <= ns_at(now) {
                this.state.expired.store(true, Relaxed);
                now + *this.timeout
            } else {
                now + Duration::from_nanos(deadline - ns_at(now))
            };
            this.sleep.as_mut().reset(next);
            if this.sleep.as_mut().poll(cx).is_pending() {
                *this.armed = true;
                return;
            }
        }
        *this.armed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn poll_once(f: &mut Pin<Box<dyn Sleep>>) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        f.as_mut().poll(&mut cx).is_ready()
    }

    /// The watchdog polled as the connection's task would, then hyper's sleep.
    async fn wake(watchdog: &mut Pin<&mut Watchdog>, sleep: &mut Pin<Box<dyn Sleep>>) -> bool {
        poll_fn(|cx| {
            watchdog.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        poll_once(sleep)
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_late_past_its_deadline_is_expired_and_not_before() {
        let (timer, watchdog) = new(Duration::from_secs(10));
        let mut watchdog = std::pin::pin!(watchdog);
        let mut sleep = timer.sleep(Duration::from_secs(10));
        assert!(!wake(&mut watchdog, &mut sleep).await);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(!wake(&mut watchdog, &mut sleep).await);
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(wake(&mut watchdog, &mut sleep).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_arrived_is_not_timed_out_and_the_next_gets_its_own_time() {
        let (timer, watchdog) = new(Duration::from_secs(10));
        let mut watchdog = std::pin::pin!(watchdog);
        let first = timer.sleep(Duration::from_secs(10));
        assert!(!poll_once(&mut { first }));
        // (dropped: the head arrived) a request runs for 8 s, then the
        // next head is awaited: it has its own 10 s.
        tokio::time::advance(Duration::from_secs(8)).await;
        let mut second = timer.sleep(Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(
            !wake(&mut watchdog, &mut second).await,
            "11 s after the first head, 3 s into the second"
        );
        tokio::time::advance(Duration::from_secs(7)).await;
        assert!(wake(&mut watchdog, &mut second).await);
    }

    #[tokio::test(start_paused = true)]
    async fn no_head_awaited_is_never_expired() {
        let (timer, watchdog) = new(Duration::from_secs(1));
        let mut watchdog = std::pin::pin!(watchdog);
        drop(timer.sleep(Duration::from_secs(1)));
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            poll_fn(|cx| {
                watchdog.as_mut().poll(cx);
                Poll::Ready(())
            })
            .await;
        }
        assert!(!watchdog.state.expired.load(Relaxed));
        assert_eq!(watchdog.state.deadline.load(Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_keeps_the_new_deadline() {
        let (timer, watchdog) = new(Duration::from_secs(10));
        let mut watchdog = std::pin::pin!(watchdog);
        let mut sleep = timer.sleep(Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(5)).await;
        // hyper's default `reset`: the new sleep made, then the old dropped.
        timer.reset(&mut sleep, timer.now() + Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!wake(&mut watchdog, &mut sleep).await);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(wake(&mut watchdog, &mut sleep).await);
    }
}

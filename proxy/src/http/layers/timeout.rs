//! The route's timeout as a deadline in the context, rather than a timer
//! around the layers below: body buffering, each attempt and each backoff
//! are bounded by it, so the happy path arms one timer per request whether
//! the route has a timeout, a per-try timeout or both. Running out is `504`.

use super::Step;
use crate::http::call::{Answer, Call, Deadline};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, Default)]
pub struct RouteTimeout;

impl<B> Step<B> for RouteTimeout {
    fn step(&self, call: &mut Call<B>) -> Option<Answer> {
        let cx = &mut call.cx;
        cx.deadline = cx.view.forward_route().timeout.map(|t| Deadline {
            at: Instant::now() + t,
            timeout: t,
        });
        None
    }
}

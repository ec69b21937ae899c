//! Rate limits: the listener's, before routing, and the route's, after.
//! A request over the limit is answered `429` with `Retry-After`.

use super::Step;
use crate::http::call::{Answer, Call};
use crate::http::error::ProxyError;
use crate::policy::ratelimit::RateLimiter;
use http::HeaderMap;

/// Which limit a [`RateLimit`] layer applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimit {
    Listener,
    Route,
}

impl<B> Step<B> for RateLimit {
    fn step(&self, call: &mut Call<B>) -> Option<Answer> {
        let view = &call.cx.view;
        let limiter = match self {
            RateLimit::Listener => view.listener().rate_limit.as_ref(),
            RateLimit::Route => view.route().and_then(|r| r.rate_limit.as_ref()),
        };
        let (_, limiter) = limiter?;
        check(limiter, call.req.headers())
    }
}

fn check(limiter: &RateLimiter, headers: &HeaderMap) -> Option<Answer> {
    let wait = limiter.check(headers).err()?;
    Some(Err(ProxyError::RateLimited {
        retry_after: wait.0,
    }))
}

//! The backend's circuit breaker: a slot among its `max_requests`, held
//! until the response body ends; none free is `503` (overloaded).

use super::Step;
use crate::balance::{Backend, Overflow};
use crate::http::body::RequestBody;
use crate::http::call::{Answer, Call};
use crate::http::error::ProxyError;

#[derive(Clone, Copy, Debug, Default)]
pub struct Breaker;

impl Step<RequestBody> for Breaker {
    fn step(&self, call: &mut Call) -> Option<Answer> {
        let cx = &mut call.cx;
        let backend = cx.view.backend()?;
        match backend
            .breaker
            .acquire(Overflow::Requests, backend.limits.max_requests)
        {
            Ok(slot) => {
                cx.attempt.slot = Some(slot);
                None
            }
            Err(limit) => Some(Err(overloaded(backend, limit.as_str()))),
        }
    }
}

/// Counts a backend's overflow and names it as the error.
fn overloaded(backend: &Backend, limit: &'static str) -> ProxyError {
    count_overflow(backend, limit);
    ProxyError::Overloaded {
        backend: backend.name.clone(),
        limit,
    }
}

/// Counts an overflow of one of the backend's limits.
pub fn count_overflow(backend: &Backend, limit: &str) {
    backend
        .metrics
        .overflows
        .with_label_values(&[&*backend.name, limit])
        .inc();
}

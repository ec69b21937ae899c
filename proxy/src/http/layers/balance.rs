//! The backend's balancer picks an endpoint (avoiding those this request
//! already tried) and the attempt is counted in flight there. None
//! available is `503`.

use super::Step;
use crate::balance::InFlight;
use crate::http::body::RequestBody;
use crate::http::call::{Answer, Call};
use crate::http::error::ProxyError;

#[derive(Clone, Copy, Debug, Default)]
pub struct Balance;

impl Step<RequestBody> for Balance {
    fn step(&self, call: &mut Call) -> Option<Answer> {
        let cx = &mut call.cx;
        // Taken here, so a failed pick frees it before the next attempt.
        let slot = cx.attempt.slot.take();
        let backend = cx.view.backend()?;
        let picked = backend.pick_excluding(call.req.headers(), &mut cx.rng, &cx.attempt.tried);
        let Some((index, ep)) = picked else {
            return Some(Err(ProxyError::NoEndpoints {
                backend: backend.name.clone(),
            }));
        };
        cx.attempt.tried.insert(index);
        cx.attempt.endpoint = index;
        let mut in_flight = InFlight::start(ep, slot);
        in_flight.request_sent = call.req.body_mut().track_sent();
        cx.attempt.in_flight = Some(in_flight);
        None
    }
}

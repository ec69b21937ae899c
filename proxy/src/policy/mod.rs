//! Resilience policies that stand alone from the request path: local rate
//! limits ([`ratelimit`]), fault injection ([`fault`]) and active health
//! checks ([`health`], driven by [`checker`]). Each is a pure core with its
//! own tests; the proxy wires them into requests, endpoints and metrics.

pub mod checker;
pub mod fault;
pub mod health;
pub mod ratelimit;

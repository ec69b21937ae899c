//! Policies that stand alone from the request path: local rate limits
//! ([`ratelimit`]), fault injection ([`fault`]), active health checks
//! ([`health`], driven by [`checker`]) and inbound authorization
//! ([`authz`]). Each is a pure core with its own tests; the proxy wires them
//! into requests, connections, endpoints and metrics.

pub mod authz;
pub mod checker;
pub mod fault;
pub mod health;
pub mod ratelimit;

//! HTTP: serving client connections, routing, forwarding to endpoints, and
//! the one map from proxy errors to responses.

pub mod body;
pub mod client;
pub mod error;
pub mod headers;
pub mod message;
pub mod orig_proto;
pub mod passthrough;
pub mod peer;
pub mod proxy;
pub mod retry;
pub mod router;
pub mod server;
pub mod upgrade;

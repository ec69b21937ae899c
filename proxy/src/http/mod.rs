//! HTTP: serving client connections, the request path as a tower stack of
//! layers ([`stack`]: routing, policies, forwarding to endpoints), and the
//! one map from proxy errors to responses.

/// The body of a request below the edge layer: as the client sent it, or
/// decompressed ([`edge::InBody`]).
pub type ReqBody = edge::InBody;

pub mod body;
pub mod call;
pub mod client;
pub mod edge;
pub mod error;
pub mod grpc;
pub mod head_timer;
pub mod headers;
pub mod layers;
pub mod message;
pub mod orig_proto;
pub mod passthrough;
pub mod peer;
pub mod retry;
pub mod router;
pub mod server;
pub mod stack;
pub mod upgrade;

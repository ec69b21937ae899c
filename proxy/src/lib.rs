//! remora-proxy: Remora's data plane, a library with a thin binary.
//!
//! Request flow (see ARCHITECTURE.md): [`listen`] accepts and terminates TLS,
//! [`detect`] tells HTTP from opaque TCP ([`tcp`]) where the listener asks,
//! [`http::server`] serves HTTP/1.1 and HTTP/2, each request through the
//! tower layer stack of [`http::stack`] (routing with the snapshot loaded
//! once per request ([`snapshot`]), policies, retries), [`balance`] picks an
//! endpoint, [`http::client`] sends over a pooled connection. Failures the
//! proxy makes become responses in exactly one place ([`http::error`]).
//! [`builder`] runs the proxy as a library, with the user's own layers.

pub mod admin;
pub mod app;
pub mod balance;
pub mod builder;
pub mod control_plane;
pub mod detect;
pub mod drain;
pub mod explain;
pub mod http;
pub mod identity;
pub mod init;
pub mod listen;
pub mod metrics;
pub mod orig_dst;
pub mod policy;
pub mod snapshot;
pub mod stats;
pub mod tap;
pub mod tcp;
pub mod telemetry;
pub mod tls;

pub use app::App;
pub use builder::{Proxy, ProxyBuilder};
pub use http::call::{Call, Done};

//! Dev-only helpers for Remora's tests: upstream servers that say who they
//! are ([`upstream`]), a throwaway certificate authority and rustls configs
//! ([`tls`]), one-connection HTTP clients ([`client`]), steady client load
//! ([`load`]), a loopback OTLP trace receiver ([`otlp`]) and a harness that
//! runs the real proxy binary and reads its JSON logs ([`proxy`]).
//!
//! Everything binds to `127.0.0.1:0` only. Timeouts use `tokio::time`, so the
//! socket-based helpers must not run under a paused test clock
//! (`start_paused = true`): an idle runtime would jump straight past them.

pub mod client;
pub mod grpc;
pub mod load;
pub mod otlp;
pub mod proxy;
pub mod tls;
pub mod tools;
pub mod upstream;

pub use client::{Http1Conn, Http2Conn, HttpVersion, Response};
pub use load::Load;
pub use otlp::OtlpReceiver;
pub use proxy::ProxyProcess;
pub use tls::{CertPair, TestCa};
pub use upstream::Upstream;

/// The error type every boxed body in this crate uses.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

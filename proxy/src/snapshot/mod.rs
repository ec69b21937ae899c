//! The running config: a compiled, immutable [`Snapshot`] behind an
//! `ArcSwap`. A request takes one `load` at its start and keeps that view to
//! its end; a new snapshot replaces the old one atomically.

pub mod backoff;
mod compile;
pub mod control;
mod file;
mod materials;
mod swap;

pub use compile::{compile, compile_as};
pub use file::{load_file, FileSource};
pub use materials::{load_materials, Materials};
pub use swap::{swap_in, swap_in_versioned, Reload};

use crate::balance::{Backend, Endpoint};
use crate::http::router::Router;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

pub type Store = Arc<ArcSwap<Snapshot>>;

/// A config compiled into lookup tables, with the runtime state of its
/// endpoints (carried over from the snapshot it replaced).
pub struct Snapshot {
    /// Derived from content: the same config (and files) has the same
    /// version. Either from the config itself ([`version`]) or from a
    /// version its source gave it ([`content_version`]); the two differ
    /// for the same config.
    pub version: String,
    pub config: Arc<remora_api::Config>,
    /// In config order; listener tasks find theirs by index.
    pub listeners: Vec<ListenerTable>,
    pub backends: HashMap<Arc<str>, Arc<Backend>>,
    /// Spans to a collector, when the config has `tracing:`.
    pub tracer: Option<Arc<crate::telemetry::otel::Tracer>>,
}

pub struct ListenerTable {
    pub name: Arc<str>,
    pub router: Router,
    pub limits: remora_api::Limits,
    pub access_log: bool,
    /// The listener's own limit as configured, and its buckets.
    pub rate_limit: Option<(
        remora_api::RateLimit,
        Arc<crate::policy::ratelimit::RateLimiter>,
    )>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How connections are read: `http`, `tcp` or `detect`.
    pub protocol: remora_api::ListenerProtocol,
    /// How long `detect` waits for a client's first bytes.
    pub detect_timeout: std::time::Duration,
    /// Where opaque TCP goes (`tcp_backend`); set for `tcp` and `detect`.
    pub tcp_backend: Option<Arc<Backend>>,
    /// Traffic from other proxies: mutual TLS and authorization.
    pub inbound: Option<Arc<InboundTable>>,
    /// Set on `original_destination` (transparent) listeners: the
    /// snapshot's endpoints by address, built once and shared.
    pub original_destination: Option<Arc<EndpointIndex>>,
    /// On a transparent listener with `match.destinations`: where opaque
    /// connections to those addresses go (a ClusterIP's service).
    pub tcp_destinations: Option<Arc<crate::http::router::TcpDestinations>>,
    /// Edge middleware (`edge:`), compiled; `None` costs a request one branch.
    pub edge: Option<crate::http::edge::EdgeTable>,
}

/// Every endpoint of the snapshot by address, with its backend: an original
/// destination found here is reached as that endpoint (its transport, its
/// backend's breaker and metrics). An address in several backends belongs
/// to the first in config order.
pub type EndpointIndex = HashMap<std::net::SocketAddr, (Arc<Backend>, Arc<Endpoint>)>;

/// An `inbound` listener's mutual TLS and authorization, compiled.
pub struct InboundTable {
    /// Presents the mesh certificate; requires and verifies the client's.
    pub tls: Arc<rustls::ServerConfig>,
    /// Plaintext is refused.
    pub strict: bool,
    pub authz: crate::policy::authz::Authz,
}

impl Snapshot {
    /// A snapshot with nothing in it: what a proxy serves (nothing) before
    /// its first config arrives.
    pub fn empty() -> Self {
        Snapshot {
            version: String::new(),
            config: Arc::default(),
            listeners: Vec::new(),
            backends: HashMap::new(),
            tracer: None,
        }
    }
}

/// The version of a config: a hash of its canonical JSON form and of the
/// contents of the files it names (`files_digest`).
pub fn version(config: &remora_api::Config, files_digest: u64) -> String {
    let mut bytes = serde_json::to_vec(config).unwrap_or_default();
    bytes.extend_from_slice(&files_digest.to_le_bytes());
    format!("{:016x}", crate::balance::content_hash(&bytes))
}

/// The version of a config that came with a version of its content
/// (`content_version`, e.g. the control plane's): a hash of that and of the
/// contents of the files the config names, without serializing the config.
pub fn content_version(content_version: &str, files_digest: u64) -> String {
    let mut bytes = b"content:".to_vec();
    bytes.extend_from_slice(content_version.as_bytes());
    bytes.extend_from_slice(&files_digest.to_le_bytes());
    format!("{:016x}", crate::balance::content_hash(&bytes))
}

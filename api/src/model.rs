//! The config types. Every struct denies unknown fields so a typo is an error,
//! not a silently ignored setting. `docs/config.md` documents each field.

use crate::identity::*;
use crate::policy::*;
use crate::Duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A whole proxy config: listeners with their routes, and the backends the
/// routes send to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub admin: Admin,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: Duration,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// The mesh identity, for `inbound` listeners and endpoints with an
    /// `identity` (see `docs/identity.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfig>,
    /// OpenTelemetry spans exported to a collector (see `docs/operations.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Box<crate::tracing::Tracing>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address of the admin server (`/metrics`, `/ready`, `/live`, `/config`, `/log-level`).
    #[serde(default = "defaults::admin_address")]
    pub address: SocketAddr,
    /// Whether endpoints that change state (`PUT /log-level`) answer clients
    /// that are not on loopback. Off: they get 403.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_remote_changes: bool,
    /// Whether `/tap` (live request summaries: paths, peers, identities)
    /// answers clients that are not on loopback. Off: they get 403.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_remote_tap: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            address: defaults::admin_address(),
            allow_remote_changes: false,
            allow_remote_tap: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name; used as the `listener` metric label.
    pub name: String,
    pub address: SocketAddr,
    /// Terminate TLS on this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    #[serde(default)]
    pub limits: Limits,
    /// Log one line per request (target `remora_proxy::access`, level info).
    #[serde(default)]
    pub access_log: bool,
    /// Applies to every request of the listener, before routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Routes in order; see `docs/config.md` for how one is chosen.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// How connections are read: `http` (default), `tcp` or `detect`.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// Where opaque TCP goes (`protocol: tcp` or `detect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_backend: Option<String>,
    /// How long `detect` waits for a client's first bytes.
    #[serde(default = "crate::identity::defaults::detect_timeout")]
    pub detect_timeout: Duration,
    /// Traffic from other proxies: mutual TLS with the mesh identity, and
    /// who may come in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Inbound>,
    /// Transparent mode: opaque connections go where the client meant them
    /// to go before iptables redirected them here (`SO_ORIGINAL_DST`). On
    /// the outbound side, to that address (a known endpoint with its
    /// backend's transport, else directly); on an `inbound` listener, to
    /// the local app at `127.0.0.1:<that port>`. Needs `protocol: tcp` or
    /// `detect`; `tcp_backend` then only takes connections that were not
    /// redirected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub original_destination: bool,
    /// Edge middleware: compression, CORS, request ids, logged headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<crate::edge::ListenerEdge>,
}

impl Listener {
    pub fn default_detect_timeout() -> Duration {
        crate::identity::defaults::detect_timeout()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// Certificates; the first one is the default when SNI matches none.
    pub certificates: Vec<CertificateFiles>,
    /// PEM bundle of CAs that client certificates are verified against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: reject clients that present no certificate.
    #[serde(default)]
    pub require_client_certificate: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// SNI names served by this certificate (`a.example.com`, `*.example.com`).
    /// Empty: the DNS names of the certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line and headers) accepted; larger gets 431.
    #[serde(default = "defaults::max_request_header_bytes")]
    pub max_request_header_bytes: usize,
    /// Time a client has to send a whole request head (slowloris guard).
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: Duration,
    /// Open connections accepted at once; more are closed on accept.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Largest request body accepted; larger gets 413. No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_bytes: defaults::max_request_header_bytes(),
            header_read_timeout: defaults::header_read_timeout(),
            max_connections: defaults::max_connections(),
            max_request_body_bytes: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique within its listener; used as the `route` metric label.
    pub name: String,
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Weighted backends (a traffic split); weights 1-10000. Exactly one of `backends`,
    /// `direct_response` and `redirect` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<WeightedBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Whole-exchange timeout (until response headers, all retries
    /// included); 504 `timeout` when it passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Longest wait for the next piece of a response body; the response is
    /// cut off when it passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// On an `inbound` listener: who may send requests matching this
    /// route, instead of the listener's authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// Overrides of the listener's edge compression and CORS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<crate::edge::RouteEdge>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// `api.example.com` (exact) or `*.example.com` (any subdomain). Empty: any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Empty: any method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// All must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// On a transparent listener (`original_destination: true`): a request
    /// whose host matches no route, on a connection the client dialed to
    /// one of these addresses (a Kubernetes Service's ClusterIP and port),
    /// takes this route if the rest of the match holds. Elsewhere unused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<std::net::SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    /// The whole path (without the query) equals this.
    Exact(String),
    /// The path starts with these whole segments: `/api` matches `/api` and
    /// `/api/x`, not `/apix`.
    Prefix(String),
    /// The path matches this regular expression (anchored at both ends).
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    /// One of `exact`, `regex` and `present` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedBackend {
    /// Name of an entry in `backends`.
    pub name: String,
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Appended (a header already there keeps its values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Replaces any value already there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Host/authority sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Replaces the part of the path matched by a `prefix` path match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default = "defaults::content_type")]
    pub content_type: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "defaults::redirect_status")]
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Replaces the whole path (the query is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Unique name; used as the `backend` metric label.
    pub name: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub balancer: Balancer,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Duration,
    #[serde(default)]
    pub pool: Pool,
    #[serde(default)]
    pub retry_budget: RetryBudget,
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `ip:port`.
    pub address: SocketAddr,
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// The SPIFFE ID of the proxy at `address`: connect with mutual TLS and
    /// the mesh identity, and fail unless the peer proves this identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Balancer {
    /// Power of two choices over a peak-EWMA latency estimate (Linkerd's default).
    #[default]
    PeakEwma,
    /// Each endpoint in turn, `weight` times per round.
    RoundRobin,
    /// Power of two choices over the number of requests in flight.
    LeastRequest,
    /// Consistent hashing of a header or cookie: the same key goes to the same endpoint.
    RingHash(RingHash),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RingHash {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// The protocol the client used (HTTP/2 in, HTTP/2 out), for upstreams
    /// that speak both (such as most gRPC servers).
    Auto,
    /// HTTP/1.1 whatever the client spoke: what most upstreams serve.
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge in plaintext; ALPN `h2` over TLS): gRPC.
    Http2,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Name sent as SNI and checked against the upstream's certificate.
    pub server_name: String,
    /// PEM bundle of CAs the upstream's certificate is verified against.
    pub ca: PathBuf,
    /// Client certificate and key, for upstreams that verify clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// An idle pooled connection is closed after this long.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per endpoint.
    #[serde(default = "defaults::max_idle")]
    pub max_idle_per_endpoint: usize,
    /// To endpoints with a mesh `identity` (another Remora proxy): offer
    /// ALPN `h2` and carry every request, HTTP/1.1 ones too, over one
    /// multiplexed HTTP/2 connection per endpoint. Off: HTTP/1.1 pooling
    /// as for any endpoint.
    #[serde(default = "defaults::mesh_http2")]
    pub mesh_http2: bool,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            idle_timeout: defaults::idle_timeout(),
            max_idle_per_endpoint: defaults::max_idle(),
            mesh_http2: defaults::mesh_http2(),
        }
    }
}

pub mod defaults {
    //! Default values, in one place so docs and code agree.
    use crate::Duration;
    use std::net::SocketAddr;

    pub fn admin_address() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 4191))
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_request_header_bytes() -> usize {
        64 * 1024
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn content_type() -> String {
        "text/plain".to_string()
    }
    pub fn redirect_status() -> u16 {
        302
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub fn max_idle() -> usize {
        64
    }

    pub fn mesh_http2() -> bool {
        true
    }
}

//! Mesh identity and what it gates: the proxy's own certificate and the roots
//! it trusts ([`IdentityConfig`]), a listener that takes traffic from other
//! proxies ([`Inbound`]) with its [`Authorization`], and how a listener reads
//! a connection ([`ListenerProtocol`]).
//!
//! Identities are SPIFFE IDs, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`,
//! carried as the URI SAN of each proxy's certificate.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// This proxy's mesh identity: the certificate it shows other proxies, and
/// the roots their certificates must chain to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Trust roots as PEM text (several during a CA rotation). The control
    /// plane sends them this way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_roots: Vec<String>,
    /// Or a PEM bundle file of trust roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_roots_file: Option<PathBuf>,
    /// This proxy's certificate (leaf first, with a SPIFFE URI SAN) and key,
    /// from files. Absent in sidecar mode with `--identity-token`: the control
    /// plane's CA issues one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<IdentityFiles>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How a listener reads the connections it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge), through the routes.
    #[default]
    Http,
    /// Opaque bytes, copied both ways to an endpoint of `tcp_backend`.
    Tcp,
    /// Peek at the first bytes (bounded by `detect_timeout`): HTTP goes
    /// through the routes, anything else (or silence: a server-speaks-first
    /// protocol) is opaque TCP to `tcp_backend`.
    Detect,
}

/// A listener for traffic from other proxies: mutual TLS with the mesh
/// identity, and an authorization policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    #[serde(default)]
    pub mode: InboundMode,
    #[serde(default)]
    pub authorization: Authorization,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InboundMode {
    /// Mutual TLS from mesh proxies, and plaintext from clients outside the mesh.
    #[default]
    Permissive,
    /// Only mutual TLS: plaintext never reaches the app.
    Strict,
}

/// Who may connect (opaque TCP) or send requests (HTTP). With `allow` rules,
/// a peer must match one of them; without, `default` decides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(default)]
    pub default: DefaultPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowRule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Anyone, with or without a mesh identity.
    #[default]
    AllUnauthenticated,
    /// Any peer with a mesh identity (mutual TLS).
    AllAuthenticated,
    /// No one.
    Deny,
}

/// One way to be allowed in; a peer matches when it matches any field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// Exact SPIFFE IDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Any identity in these namespaces (`spiffe://<td>/ns/<namespace>/...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Any peer with a mesh identity.
    #[serde(default)]
    pub authenticated: bool,
    /// Plaintext (or any) peers from these networks (`10.0.0.0/8`, `::1/128`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
}

pub(crate) mod defaults {
    use crate::Duration;

    pub fn detect_timeout() -> Duration {
        Duration::from_secs(1)
    }
}

/// Ports where the server speaks first (SMTP, MySQL, PostgreSQL, Redis,
/// memcached, …): a `detect` listener sends them straight to opaque TCP
/// instead of waiting for the client's first bytes.
pub const SERVER_SPEAKS_FIRST_PORTS: &[u16] =
    &[25, 587, 3306, 4222, 5432, 6379, 9300, 11211, 27017];

/// `spiffe://td/ns/NS/sa/SA` → `(td, NS, SA)`.
pub fn parse_spiffe(id: &str) -> Option<(&str, &str, &str)> {
    let rest = id.strip_prefix("spiffe://")?;
    let (td, path) = rest.split_once('/')?;
    let mut parts = path.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa), None)
            if !td.is_empty() && !ns.is_empty() && !sa.is_empty() =>
        {
            Some((td, ns, sa))
        }
        _ => None,
    }
}

/// `10.0.0.0/8` or `::1/128` (or a bare address: all its bits) → network
/// address and prefix length; `None` if malformed.
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (
            ip.parse::<std::net::IpAddr>().ok()?,
            Some(len.parse::<u8>().ok()?),
        ),
        None => (s.parse().ok()?, None),
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((ip, len))
}

/// Problems of an authorization policy at `at`.
pub(crate) fn check_authorization(at: &str, a: &Authorization, found: &mut crate::policy::Found) {
    for (i, rule) in a.allow.iter().enumerate() {
        let at = format!("{at}.allow[{i}]");
        if rule.identities.is_empty()
            && rule.namespaces.is_empty()
            && !rule.authenticated
            && rule.networks.is_empty()
        {
            found.push((
                at.clone(),
                "matches no one: give `identities`, `namespaces`, `authenticated` or `networks`"
                    .into(),
            ));
        }
        for (j, id) in rule.identities.iter().enumerate() {
            if parse_spiffe(id).is_none() {
                found.push((
                    format!("{at}.identities[{j}]"),
                    "must be a SPIFFE ID: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>".into(),
                ));
            }
        }
        for (j, n) in rule.networks.iter().enumerate() {
            if parse_cidr(n).is_none() {
                found.push((
                    format!("{at}.networks[{j}]"),
                    "must be a CIDR such as 10.0.0.0/8 or ::1/128".into(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_and_cidrs() {
        assert_eq!(
            parse_spiffe("spiffe://cluster.local/ns/shop/sa/web"),
            Some(("cluster.local", "shop", "web"))
        );
        for bad in [
            "spiffe://td/ns/a",
            "spiffe:///ns/a/sa/b",
            "http://td/ns/a/sa/b",
            "spiffe://td/ns/a/sa/b/c",
        ] {
            assert_eq!(parse_spiffe(bad), None, "{bad}");
        }
        assert_eq!(
            parse_cidr("10.0.0.0/8"),
            Some(("10.0.0.0".parse().unwrap(), 8))
        );
        assert_eq!(parse_cidr("::1"), Some(("::1".parse().unwrap(), 128)));
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("nope/8"), None);
    }
}

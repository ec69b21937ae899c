//! Authorization of inbound traffic: may this peer (its mesh identity, if
//! it proved one with mutual TLS, and its address) use this listener or
//! route? With `allow` rules a peer must match one of them; without, the
//! default policy decides. Compiled once per snapshot; a check allocates
//! nothing.

use remora_api::identity::{parse_cidr, parse_spiffe};
use remora_api::{AllowRule, Authorization, DefaultPolicy};
use std::net::IpAddr;

/// Who is asking.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    /// The SPIFFE ID proved with mutual TLS; `None` for plaintext.
    pub id: Option<&'a str>,
    pub addr: IpAddr,
}

#[derive(Debug)]
pub struct Authz {
    default: DefaultPolicy,
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    identities: Vec<String>,
    namespaces: Vec<String>,
    authenticated: bool,
    networks: Vec<(IpAddr, u8)>,
}

impl Authz {
    /// From a validated policy (malformed CIDRs were rejected by validation
    /// and are skipped here).
    pub fn new(a: &Authorization) -> Authz {
        Authz {
            default: a.default,
            rules: a.allow.iter().map(Rule::new).collect(),
        }
    }

    pub fn allows(&self, peer: Peer<'_>) -> bool {
        if !self.rules.is_empty() {
            return self.rules.iter().any(|r| r.matches(peer));
        }
        match self.default {
            DefaultPolicy::AllUnauthenticated => true,
            DefaultPolicy::AllAuthenticated => peer.id.is_some(),
            DefaultPolicy::Deny => false,
        }
    }
}

impl Rule {
    fn new(r: &AllowRule) -> Rule {
        Rule {
            identities: r.identities.clone(),
            namespaces: r.namespaces.clone(),
            authenticated: r.authenticated,
            networks: r.networks.iter().filter_map(|n| parse_cidr(n)).collect(),
        }
    }

    fn matches(&self, peer: Peer<'_>) -> bool {
        if let Some(id) = peer.id {
            if self.authenticated || self.identities.iter().any(|i| i == id) {
                return true;
            }
            if let Some((_, ns, _)) = parse_spiffe(id) {
                if self.namespaces.iter().any(|n| n == ns) {
                    return true;
                }
            }
        }
        self.networks
            .iter()
            .any(|&(net, len)| in_network(peer.addr, net, len))
    }
}

fn in_network(addr: IpAddr, net: IpAddr, len: u8) -> bool {
    // An IPv4 peer on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => prefix_eq(&a.octets(), &n.octets(), len),
        (IpAddr::V6(a), IpAddr::V6(n)) => prefix_eq(&a.octets(), &n.octets(), len),
        _ => false,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let (bytes, bits) = (usize::from(len / 8), len % 8);
    if a[..bytes] != b[..bytes] {
        return false;
    }
    bits == 0 || (a[bytes] ^ b[bytes]) >> (8 - bits) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "spiffe://td/ns/shop/sa/web";
    const OPS: &str = "spiffe://td/ns/ops/sa/cron";

    fn authz(yaml: &str) -> Authz {
        Authz::new(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    fn peer(id: Option<&'static str>, addr: &str) -> Peer<'static> {
        Peer {
            id,
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn default_policies() {
        let plain = peer(None, "10.0.0.1");
        let meshed = peer(Some(WEB), "10.0.0.1");
        let all = authz("default: all-unauthenticated");
        assert!(all.allows(plain) && all.allows(meshed));
        let authn = authz("default: all-authenticated");
        assert!(!authn.allows(plain) && authn.allows(meshed));
        let deny = authz("default: deny");
        assert!(!deny.allows(plain) && !deny.allows(meshed));
    }

    #[test]
    fn allow_rules_replace_the_default() {
        let a = authz(
            "default: all-unauthenticated\nallow:\n  - identities: [\"spiffe://td/ns/shop/sa/web\"]\n  - namespaces: [ops]\n  - networks: [10.1.0.0/16, \"::1/128\"]\n",
        );
        assert!(a.allows(peer(Some(WEB), "192.0.2.1")));
        assert!(a.allows(peer(Some(OPS), "192.0.2.1")));
        assert!(!a.allows(peer(Some("spiffe://td/ns/shop/sa/api"), "192.0.2.1")));
        assert!(a.allows(peer(None, "10.1.200.3")));
        assert!(a.allows(peer(None, "::ffff:10.1.0.9")));
        assert!(a.allows(peer(None, "::1")));
        assert!(!a.allows(peer(None, "10.2.0.1")));
        assert!(!a.allows(peer(None, "127.0.0.1")));
        let any = authz("allow: [{ authenticated: true }]");
        assert!(any.allows(peer(Some(OPS), "192.0.2.1")));
        assert!(!any.allows(peer(None, "192.0.2.1")));
    }

    #[test]
    fn prefixes_of_any_length() {
        let n = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_network(n("10.0.0.129"), n("10.0.0.128"), 25));
        assert!(!in_network(n("10.0.0.127"), n("10.0.0.128"), 25));
        assert!(in_network(n("192.0.2.7"), n("0.0.0.0"), 0));
        assert!(in_network(n("fd00::1"), n("fd00::"), 8));
        assert!(!in_network(n("fe00::1"), n("fd00::"), 8));
        assert!(!in_network(n("10.0.0.1"), n("fd00::"), 8));
    }
}

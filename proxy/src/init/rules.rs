//! The interception rules as data: settings in, an `iptables-restore` script
//! out. Pure, so every rule is tested without root (see `tests.rs`).
//!
//! Layout of the nat table (one per family, iptables and ip6tables):
//!
//! ```text
//! PREROUTING --tcp--> REMORA_PROXY_INBOUND: skip the proxy's inbound and admin ports
//!                                           and --skip-inbound-ports, else REDIRECT to 4143
//! OUTPUT     --tcp--> REMORA_PROXY_OUTPUT:  skip the proxy's UID, anything leaving on lo,
//!                                           --skip-outbound-ports and -cidrs, else REDIRECT to 4140
//! ```
//!
//! Re-running is safe: declaring a chain in an `iptables-restore --noflush`
//! script creates it or empties it, so our two chains are rewritten whole,
//! and a jump from a built-in chain is added only if the current table
//! ([`Existing`]) does not have it yet. Nothing outside our chains and
//! jumps is touched.

use super::skip::{Cidr, PortRange};
use std::fmt;

/// Chain hooked from `PREROUTING`: traffic arriving at the pod.
pub const INBOUND_CHAIN: &str = "REMORA_PROXY_INBOUND";
/// Chain hooked from `OUTPUT`: traffic the pod's processes send.
pub const OUTPUT_CHAIN: &str = "REMORA_PROXY_OUTPUT";
/// Every chain whose name starts with this is ours (cleanup removes them all,
/// including chains an older version may have made).
pub const CHAIN_PREFIX: &str = "REMORA_PROXY_";
/// `-m multiport` takes at most 15 ports per rule (a range counts twice).
const MULTIPORT_LIMIT: usize = 15;

/// IPv4 (iptables) or IPv6 (ip6tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The tool prefix: `iptables` or `ip6tables`.
    pub fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// What to intercept and what to leave alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Inbound TCP is redirected here.
    pub inbound_port: u16,
    /// Outbound TCP is redirected here.
    pub outbound_port: u16,
    /// The admin port: reached directly from outside (probes, scrapes).
    pub admin_port: u16,
    /// Connections made by this UID (the proxy's own) are never redirected.
    pub proxy_uid: u32,
    /// Inbound destination ports reached directly, besides the proxy's own.
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports reached directly.
    pub skip_outbound_ports: Vec<PortRange>,
    /// Outbound destination networks reached directly (each family takes its own).
    pub skip_outbound_cidrs: Vec<Cidr>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            inbound_port: 4143,
            outbound_port: 4140,
            admin_port: 4191,
            proxy_uid: 2102,
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_outbound_cidrs: Vec::new(),
        }
    }
}

/// A jump from a chain that is not ours (a built-in one) into ours, as
/// iptables-save printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jump {
    /// The chain the rule is in, e.g. `PREROUTING`.
    pub from: String,
    /// Our chain it jumps to.
    pub to: String,
    /// The rule after `-A <from> `, exactly as saved (so `-D` matches it).
    pub spec: String,
}

/// What of ours is in a nat table now, read from `iptables-save` output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Existing {
    /// Our chains (by [`CHAIN_PREFIX`]).
    pub chains: Vec<String>,
    /// Rules elsewhere that jump into our chains.
    pub jumps: Vec<Jump>,
}

impl Existing {
    /// Reads the `*nat` section of `iptables-save` output; other tables and
    /// comment lines are ignored.
    pub fn parse(save: &str) -> Existing {
        let mut existing = Existing::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
            } else if line == "COMMIT" {
                in_nat = false;
            } else if !in_nat {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                if name.starts_with(CHAIN_PREFIX) {
                    existing.chains.push(name.to_string());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let Some((from, spec)) = rule.split_once(' ') else {
                    continue;
                };
                let tokens: Vec<&str> = spec.split_whitespace().collect();
                let target = tokens
                    .iter()
                    .rposition(|t| *t == "-j" || *t == "--jump")
                    .and_then(|i| tokens.get(i + 1));
                if let Some(to) = target.filter(|t| t.starts_with(CHAIN_PREFIX)) {
                    if !from.starts_with(CHAIN_PREFIX) {
                        existing.jumps.push(Jump {
                            from: from.to_string(),
                            to: to.to_string(),
                            spec: spec.to_string(),
                        });
                    }
                }
            }
        }
        existing
    }

    /// The state right after an install with default jumps: what a cleanup
    /// dry run assumes when it cannot read the table.
    pub fn installed() -> Existing {
        Existing {
            chains: vec![INBOUND_CHAIN.to_string(), OUTPUT_CHAIN.to_string()],
            jumps: hooks()
                .into_iter()
                .map(|(from, to, comment)| Jump {
                    from: from.to_string(),
                    to: to.to_string(),
                    spec: jump_spec(to, comment),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }

    fn has_jump(&self, from: &str, to: &str) -> bool {
        self.jumps.iter().any(|j| j.from == from && j.to == to)
    }
}

/// The built-in chains we hook, the chain each jumps to, and the jump's comment.
fn hooks() -> [(&'static str, &'static str, &'static str); 2] {
    [
        ("PREROUTING", INBOUND_CHAIN, "remora: intercept inbound TCP"),
        ("OUTPUT", OUTPUT_CHAIN, "remora: intercept outbound TCP"),
    ]
}

fn jump_spec(to: &str, comment: &str) -> String {
    format!("-p tcp -m comment --comment \"{comment}\" -j {to}")
}

/// One `-A` line. Comments avoid quotes (iptables-save escapes them). The order of the parts is the one iptables-save prints
/// (protocol, matches, comment, target), so the script reads like the saved table.
fn rule(chain: &str, matches: &str, comment: &str, target: &str) -> String {
    let matches = if matches.is_empty() {
        String::new()
    } else {
        format!("{matches} ")
    };
    format!("-A {chain} {matches}-m comment --comment \"{comment}\" -j {target}")
}

/// `-m multiport` rules that RETURN for these ports, at most 15 slots each.
fn skip_ports(chain: &str, ports: &[PortRange], comment: &str) -> Vec<String> {
    let mut groups: Vec<Vec<PortRange>> = Vec::new();
    let mut used = MULTIPORT_LIMIT;
    for &p in ports {
        if used + p.slots() > MULTIPORT_LIMIT {
            groups.push(Vec::new());
            used = 0;
        }
        groups.last_mut().unwrap().push(p);
        used += p.slots();
    }
    groups
        .iter()
        .map(|group| {
            let list: Vec<String> = group.iter().map(ToString::to_string).collect();
            let matches = format!("-p tcp -m multiport --dports {}", list.join(","));
            rule(chain, &matches, comment, "RETURN")
        })
        .collect()
}

fn dedup(ports: impl IntoIterator<Item = PortRange>) -> Vec<PortRange> {
    let mut out: Vec<PortRange> = Vec::new();
    for p in ports {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The rules of [`INBOUND_CHAIN`], in order.
pub fn inbound_rules(s: &Settings) -> Vec<String> {
    let own = [
        PortRange::single(s.inbound_port),
        PortRange::single(s.admin_port),
    ];
    let mut rules = skip_ports(
        INBOUND_CHAIN,
        &own,
        "remora: skip proxy inbound and admin ports",
    );
    let user = dedup(
        s.skip_inbound_ports
            .iter()
            .copied()
            .filter(|p| !own.contains(p)),
    );
    rules.extend(skip_ports(
        INBOUND_CHAIN,
        &user,
        "remora: skip inbound ports",
    ));
    rules.push(rule(
        INBOUND_CHAIN,
        "-p tcp",
        "remora: redirect inbound to the proxy",
        &format!("REDIRECT --to-ports {}", s.inbound_port),
    ));
    rules
}

/// The rules of [`OUTPUT_CHAIN`], in order; `family` picks the CIDRs.
pub fn output_rules(s: &Settings, family: Family) -> Vec<String> {
    let mut rules = vec![
        rule(
            OUTPUT_CHAIN,
            &format!("-m owner --uid-owner {}", s.proxy_uid),
            "remora: skip the proxy uid",
            "RETURN",
        ),
        rule(OUTPUT_CHAIN, "-o lo", "remora: skip loopback", "RETURN"),
    ];
    let ports = dedup(s.skip_outbound_ports.iter().copied());
    rules.extend(skip_ports(
        OUTPUT_CHAIN,
        &ports,
        "remora: skip outbound ports",
    ));
    for cidr in s
        .skip_outbound_cidrs
        .iter()
        .filter(|c| c.family() == family)
    {
        rules.push(rule(
            OUTPUT_CHAIN,
            &format!("-d {cidr}"),
            "remora: skip outbound CIDR",
            "RETURN",
        ));
    }
    rules.push(rule(
        OUTPUT_CHAIN,
        "-p tcp",
        "remora: redirect outbound to the proxy",
        &format!("REDIRECT --to-ports {}", s.outbound_port),
    ));
    rules
}

/// The script for `iptables-restore --noflush` that installs (or rewrites)
/// interception in a table whose current state is `existing`.
pub fn install_script(s: &Settings, family: Family, existing: &Existing) -> String {
    let mut lines = vec!["*nat".to_string()];
    for chain in [INBOUND_CHAIN, OUTPUT_CHAIN] {
        // Creates the chain, or empties it if it exists.
        lines.push(format!(":{chain} - [0:0]"));
    }
    lines.extend(inbound_rules(s));
    lines.extend(output_rules(s, family));
    for (from, to, comment) in hooks() {
        if !existing.has_jump(from, to) {
            lines.push(format!("-A {from} {}", jump_spec(to, comment)));
        }
    }
    lines.push("COMMIT".to_string());
    lines.join("\n") + "\n"
}

/// The script for `iptables-restore --noflush` that removes every jump
/// into our chains and then the chains; `None` when there is nothing to remove.
pub fn cleanup_script(existing: &Existing) -> Option<String> {
    if existing.is_empty() {
        return None;
    }
    let mut lines = vec!["*nat".to_string()];
    for jump in &existing.jumps {
        lines.push(format!("-D {} {}", jump.from, jump.spec));
    }
    // Empty them all first: a chain that is still jumped to cannot be deleted.
    for chain in &existing.chains {
        lines.push(format!("-F {chain}"));
    }
    for chain in &existing.chains {
        lines.push(format!("-X {chain}"));
    }
    lines.push("COMMIT".to_string());
    Some(lines.join("\n") + "\n")
}

/// The lines of `iptables-save` output that are ours: our chain
/// declarations, our chains' rules and the jumps into them (for logs).
pub fn our_lines(save: &str) -> Vec<&str> {
    save.lines()
        .map(str::trim)
        .filter(|l| {
            l.strip_prefix(':')
                .or_else(|| l.strip_prefix("-A "))
                .is_some_and(|rest| rest.starts_with(CHAIN_PREFIX))
                || (l.starts_with("-A ") && l.contains(&format!("-j {CHAIN_PREFIX}")))
        })
        .collect()
}

#[cfg(test)]
mod tests;

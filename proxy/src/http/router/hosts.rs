//! The first step of route selection: the candidate routes for a request's
//! host and port. The routes that name the exact host win; else those with
//! the longest matching `*.suffix`; else the routes without `hosts`, which
//! also join every other list. A host or suffix named with the request's
//! port (`api.example.com:9090`) goes before the same one named without.

use remora_api as api;
use std::collections::HashMap;

/// A request's port as it names it: the text after its host's colon, empty
/// when it names none. Read only for a host some route names with a port
/// (the request path does not parse what no route asks about).
#[derive(Clone, Copy, Debug, Default)]
pub struct Port<'a>(&'a str);

impl<'a> Port<'a> {
    /// `text` as the request has it (`"9090"`), `""` for none.
    pub fn named(text: &'a str) -> Self {
        Port(text)
    }

    /// The port number; `default` when the request names none; `None`
    /// when what it names is not a port (then no route's port matches).
    pub fn number(self, default: u16) -> Option<u16> {
        let digits = self.0.as_bytes();
        if digits.is_empty() {
            return Some(default);
        }
        if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = digits
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        u16::try_from(n).ok().filter(|&p| p != 0)
    }
}

pub(super) struct Hosts {
    pub(super) exact: HashMap<Box<str>, Named>,
    /// Keyed by the suffix with its leading dot: `.example.com`.
    pub(super) suffix: HashMap<Box<str>, Named>,
    /// The routes without `hosts` (or with `*`).
    pub(super) any: Vec<u32>,
    /// The port of a request that names none: 443 on a listener that
    /// terminates TLS, else 80.
    pub(super) default_port: u16,
}

impl Default for Hosts {
    fn default() -> Self {
        Hosts {
            exact: HashMap::new(),
            suffix: HashMap::new(),
            any: Vec::new(),
            default_port: 80,
        }
    }
}

/// The routes naming one host (or one `*.suffix`), each list with the
/// routes without `hosts` merged in, in file order.
#[derive(Default)]
pub(super) struct Named {
    /// Those naming it without a port; `None`: none do.
    any_port: Option<Vec<u32>>,
    /// Those naming it at a port, by port.
    pub(super) ports: Vec<(u16, Vec<u32>)>,
}

impl Named {
    /// The routes for this host at `port` (`default` if it names none):
    /// those naming the port, else those naming no port; `None` when
    /// neither.
    pub(super) fn at(&self, port: Port<'_>, default: u16) -> Option<&[u32]> {
        if !self.ports.is_empty() {
            let named = port
                .number(default)
                .and_then(|n| self.ports.iter().find(|(p, _)| *p == n));
            if let Some((_, list)) = named {
                return Some(list);
            }
        }
        self.any_port.as_deref()
    }

    fn list(&mut self, port: Option<u16>) -> &mut Vec<u32> {
        let Some(p) = port else {
            return self.any_port.get_or_insert_default();
        };
        let k = match self.ports.iter().position(|(q, _)| *q == p) {
            Some(k) => k,
            None => {
                self.ports.push((p, Vec::new()));
                self.ports.len() - 1
            }
        };
        &mut self.ports[k].1
    }

    fn lists(&mut self) -> impl Iterator<Item = &mut Vec<u32>> {
        self.any_port
            .iter_mut()
            .chain(self.ports.iter_mut().map(|(_, l)| l))
    }
}

impl Hosts {
    /// Indexes route `i` by its `match.hosts`.
    pub(super) fn add(&mut self, i: u32, hosts: &[String]) -> Result<(), String> {
        if hosts.is_empty() || hosts.iter().any(|h| h == "*") {
            self.any.push(i);
        }
        for h in hosts {
            let (h, port) = api::route_host(h).map_err(|e| format!("host `{h}`: {e}"))?;
            let named = match h.strip_prefix('*') {
                Some("") => continue,
                Some(s) => self.suffix.entry(s.into()).or_default(),
                None => self.exact.entry(h.into()).or_default(),
            };
            named.list(port).push(i);
        }
        Ok(())
    }

    /// After the last [`Hosts::add`]: host-less routes join every list, in
    /// file order.
    pub(super) fn finish(&mut self) {
        let any = &self.any;
        let named = self.exact.values_mut().chain(self.suffix.values_mut());
        for list in named.flat_map(Named::lists) {
            list.extend(any.iter().copied());
            list.sort_unstable();
            list.dedup();
        }
    }

    /// The candidates for `host` (lowercase, without port) at `port`.
    pub(super) fn candidates(&self, host: &str, port: Port<'_>) -> &[u32] {
        let default = self.default_port;
        if let Some(list) = self.exact.get(host).and_then(|n| n.at(port, default)) {
            return list;
        }
        if !self.suffix.is_empty() {
            // Longest suffix first: cut at each dot from the left.
            for (i, _) in host.match_indices('.') {
                let named = self.suffix.get(&host[i..]);
                if let Some(list) = named.and_then(|n| n.at(port, default)) {
                    return list;
                }
            }
        }
        &self.any
    }
}

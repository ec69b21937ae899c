//! How a mesh lies in etcd under a prefix (default `/remora/`), both ways,
//! with no I/O:
//!
//! - `<prefix>trust_domain`: the trust domain, a plain string (absent: the
//!   mesh default, `cluster.local`);
//! - `<prefix>tracing`: the mesh's `tracing`, a YAML (or JSON) document
//!   (absent: none);
//! - `<prefix>services/<name>`: one service, a YAML (or JSON) document with
//!   the fields of an entry of the mesh file's `services:` (`name` may be
//!   left out; if written it must be the key's);
//! - `<prefix>workloads/<name>`: one workload, likewise.
//!
//! The mesh is every key, sorted by key (so by name): the same keys give the
//! same mesh, and the same mesh version, on every control plane. No key at
//! all is not a mesh (a wrong prefix, or nothing imported yet: not an empty
//! mesh that would empty every proxy). A problem
//! is reported at its key (`etcd /remora/services/api: routes[0].timeout`),
//! with the line in that key's document; any other key under the prefix is a
//! problem too.

use bytes::Bytes;
use remora_api::mesh::{Mesh, Service, Workload};
use remora_api::Problem;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;

/// The key (after the prefix) of the trust domain.
pub const TRUST_DOMAIN: &str = "trust_domain";
/// The key (after the prefix) of the mesh's tracing.
pub const TRACING: &str = "tracing";
/// Where services are (after the prefix): `services/<name>`.
pub const SERVICES: &str = "services/";
/// Where workloads are (after the prefix): `workloads/<name>`.
pub const WORKLOADS: &str = "workloads/";

/// The keys under a prefix (whole, with the prefix) and their values.
pub type Keys = BTreeMap<String, Bytes>;

/// Builds the mesh from the `keys` under `prefix` and checks it with
/// `check` (the control plane's mesh rules); every problem names its key.
pub fn read(
    prefix: &str,
    keys: &Keys,
    check: impl FnOnce(&Mesh) -> Vec<Problem>,
) -> Result<Mesh, Vec<Problem>> {
    let (mesh, origins) = parse(prefix, keys)?;
    let problems = check(&mesh);
    if problems.is_empty() {
        return Ok(mesh);
    }
    Err(problems
        .into_iter()
        .map(|p| origins.place(prefix, p))
        .collect())
}

/// Where each entry of a mesh read from etcd came from.
#[derive(Default)]
struct Origins<'a> {
    trust_domain: Option<&'a str>,
    /// (key, document) of the tracing.
    tracing: Option<(&'a str, &'a str)>,
    /// (key, document) of each service, in the mesh's order.
    services: Vec<(&'a str, &'a str)>,
    workloads: Vec<(&'a str, &'a str)>,
}

/// Every key parsed into its part of the mesh (no mesh rules yet).
fn parse<'a>(prefix: &str, keys: &'a Keys) -> Result<(Mesh, Origins<'a>), Vec<Problem>> {
    let mut mesh = Mesh::default();
    let mut origins = Origins::default();
    let mut problems = Vec::new();
    for (key, value) in keys {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(value) else {
            problems.push(at_key(key, "", "is not UTF-8 text"));
            continue;
        };
        let parsed = if rest == TRUST_DOMAIN {
            mesh.trust_domain = text.trim().to_string();
            origins.trust_domain = Some(key);
            Ok(())
        } else if rest == TRACING {
            typed::<remora_api::Tracing>(key, text, serde_yaml_ng::from_str(text)).map(|t| {
                mesh.tracing = Some(t);
                origins.tracing = Some((key, text));
            })
        } else if let Some(name) = rest.strip_prefix(SERVICES) {
            document::<Service>(key, name, text).map(|s| {
                mesh.services.push(s);
                origins.services.push((key, text));
            })
        } else if let Some(name) = rest.strip_prefix(WORKLOADS) {
            document::<Workload>(key, name, text).map(|w| {
                mesh.workloads.push(w);
                origins.workloads.push((key, text));
            })
        } else {
            Err(at_key(
                key,
                "",
                format!("not a mesh key: expected {prefix}{TRUST_DOMAIN}, {prefix}{TRACING}, {prefix}{SERVICES}<name> or {prefix}{WORKLOADS}<name>"),
            ))
        };
        problems.extend(parsed.err());
    }
    let none = origins.trust_domain.is_none()
        && origins.tracing.is_none()
        && origins.services.is_empty()
        && origins.workloads.is_empty();
    if none && problems.is_empty() {
        problems.push(at_key(
            prefix,
            "",
            "no mesh keys: load a mesh with `remora-control-plane etcd import`",
        ));
    }
    if problems.is_empty() {
        Ok((mesh, origins))
    } else {
        Err(problems)
    }
}

impl Origins<'_> {
    /// `p` (at a mesh path such as `services[2].routes[0]`) at its key.
    fn place(&self, prefix: &str, p: Problem) -> Problem {
        let located = [
            ("services[", &self.services),
            ("workloads[", &self.workloads),
        ]
        .into_iter()
        .find_map(|(list, origins)| {
            let (index, rest) = p.path.strip_prefix(list)?.split_once(']')?;
            let (key, text) = origins.get(index.parse::<usize>().ok()?)?;
            Some((*key, *text, rest.strip_prefix('.').unwrap_or(rest)))
        })
        .or_else(|| {
            let (key, text) = self.tracing?;
            let rest = p.path.strip_prefix(TRACING)?;
            Some((key, text, rest.strip_prefix('.').unwrap_or(rest)))
        });
        match located {
            Some((key, text, rest)) => {
                let mut q = at_key(key, rest, p.message);
                q.line = (!rest.is_empty())
                    .then(|| remora_api::line_of(text, rest))
                    .flatten();
                q
            }
            None if p.path == TRUST_DOMAIN => {
                let key = self
                    .trust_domain
                    .map_or(format!("{prefix}{TRUST_DOMAIN}"), str::to_string);
                at_key(&key, "", p.message)
            }
            None => p,
        }
    }
}

/// The keys (with `prefix`) and values that hold `mesh`.
pub fn write(prefix: &str, mesh: &Mesh) -> Result<BTreeMap<String, String>, serde_yaml_ng::Error> {
    let mut keys = BTreeMap::new();
    keys.insert(format!("{prefix}{TRUST_DOMAIN}"), mesh.trust_domain.clone());
    if let Some(t) = &mesh.tracing {
        keys.insert(format!("{prefix}{TRACING}"), to_yaml(t)?);
    }
    for s in &mesh.services {
        keys.insert(format!("{prefix}{SERVICES}{}", s.name), to_yaml(s)?);
    }
    for w in &mesh.workloads {
        keys.insert(format!("{prefix}{WORKLOADS}{}", w.name), to_yaml(w)?);
    }
    Ok(keys)
}

/// `value` as YAML, enums written the way the mesh file writes them
/// (`{prefix: /api}`).
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, serde_yaml_ng::Error> {
    let mut out = Vec::new();
    let mut ser = serde_yaml_ng::Serializer::new(&mut out);
    serde_yaml_ng::with::singleton_map_recursive::serialize(value, &mut ser)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A problem at `key` (and at `path` in its document, if any).
fn at_key(key: &str, path: &str, message: impl Into<String>) -> Problem {
    Problem {
        path: match path {
            "" => format!("etcd {key}"),
            path => format!("etcd {key}: {path}"),
        },
        message: message.into(),
        line: None,
    }
}

/// One service or workload document, named `name` by its key.
fn document<T: DeserializeOwned>(key: &str, name: &str, text: &str) -> Result<T, Problem> {
    let mut value: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let mut p = at_key(key, "", e.to_string());
        p.line = e.location().map(|l| l.line());
        p
    })?;
    let Value::Mapping(map) = &mut value else {
        return Err(at_key(
            key,
            "",
            "must be a mapping (YAML or JSON) of one entry",
        ));
    };
    match map.get("name") {
        None => {
            map.insert("name".into(), name.into());
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => {
            let written = serde_yaml_ng::to_string(other).unwrap_or_default();
            let mut p = at_key(
                key,
                "name",
                format!("is `{}` but the key says `{name}`", written.trim()),
            );
            p.line = remora_api::line_of(text, "name");
            return Err(p);
        }
    }
    // Deserialized from text again, so errors carry their field path.
    let doc = serde_yaml_ng::to_string(&value).map_err(|e| at_key(key, "", e.to_string()))?;
    let de = serde_yaml_ng::Deserializer::from_str(&doc);
    typed(
        key,
        text,
        serde_yaml_ng::with::singleton_map_recursive::deserialize(de),
    )
}

/// A document's parse, its error at `key` with the field's path and line.
fn typed<T>(key: &str, text: &str, parsed: Result<T, serde_yaml_ng::Error>) -> Result<T, Problem> {
    parsed.map_err(|e| {
        let (path, message) = crate::mesh::split_serde_message(&e.to_string());
        let mut p = at_key(key, &path, message);
        p.line = remora_api::line_of(text, &path).or(e.location().map(|l| l.line()));
        p
    })
}

#[cfg(test)]
mod tests;

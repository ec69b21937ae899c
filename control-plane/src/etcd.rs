//! The etcd source: the mesh kept in etcd (one key per service and per
//! workload under a prefix, see [`layout`]), so control planes outside
//! Kubernetes share a replicated store and any number of them serve the
//! same mesh, with the same versions.
//!
//! [`follow::Follower`] reads and watches the keys and offers each mesh to
//! the [`MeshSource`](crate::source::MeshSource) (validated like the file: a
//! bad key rejects the mesh, the last good one stays, the problems name the
//! key); [`client`] speaks etcd's JSON gateway; [`import`] and [`export`]
//! move a mesh file in (atomically: one transaction) and out.

pub mod client;
pub mod follow;
pub mod layout;
pub mod wire;

use anyhow::Context as _;
use bytes::Bytes;
use client::Client;
use remora_api::mesh::Mesh;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The default prefix of the mesh's keys.
pub const DEFAULT_PREFIX: &str = "/remora/";

/// Where the mesh is in etcd.
#[derive(Clone, Debug)]
pub struct EtcdSettings {
    /// Members of one cluster (`http://host:port` or `https://...`).
    pub endpoints: Vec<String>,
    /// Every key of the mesh starts with it (e.g. `/remora/`).
    pub prefix: String,
    pub tls: EtcdTls,
}

/// TLS to etcd, for `https://` endpoints.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct EtcdTls {
    /// The CA (PEM) that signed etcd's certificate (`https://` endpoints).
    #[arg(long = "etcd-ca", env = "REMORA_ETCD_CA")]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd's `--client-cert-auth`.
    #[arg(long = "etcd-cert", env = "REMORA_ETCD_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --etcd-cert.
    #[arg(long = "etcd-key", env = "REMORA_ETCD_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl EtcdSettings {
    /// From `--etcd a,b` and a prefix (`/` added at the end if missing).
    pub fn new(endpoints: &str, prefix: &str, tls: EtcdTls) -> EtcdSettings {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        EtcdSettings {
            endpoints: endpoints
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect(),
            prefix,
            tls,
        }
    }

    /// Where the mesh comes from, for logs and `/status`.
    pub fn origin(&self) -> String {
        format!("etcd {} {}", self.endpoints.join(","), self.prefix)
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.endpoints, &self.tls)?)
    }
}

/// What an import changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Imported {
    pub written: usize,
    pub deleted: usize,
    pub unchanged: usize,
    /// The store's revision after the import (before it, if nothing changed).
    pub revision: i64,
}

/// How many times an import reads and writes again when the keys changed
/// between its read and its write.
const IMPORT_TRIES: usize = 3;

/// Makes the keys under the prefix hold `mesh` exactly, in one
/// transaction: keys whose value differs are written, keys the mesh does not
/// have are deleted, and none of it happens if another writer changed a key
/// under the prefix since they were read (then it reads again).
pub async fn import(settings: &EtcdSettings, mesh: &Mesh) -> anyhow::Result<Imported> {
    let client = settings.client()?;
    let prefix = &settings.prefix;
    let want = layout::write(prefix, mesh).context("cannot write the mesh as YAML")?;
    for _ in 0..IMPORT_TRIES {
        let (revision, kvs) = client.range(prefix).await?;
        let have: BTreeMap<String, Bytes> = kvs
            .into_iter()
            .map(|kv| (kv.key.text(), kv.value.0))
            .collect();
        let mut txn = wire::TxnRequest::default();
        txn.unchanged_since(prefix, revision);
        let mut unchanged = 0;
        for (key, value) in &want {
            if have.get(key).map(|v| &v[..]) == Some(value.as_bytes()) {
                unchanged += 1;
            } else {
                txn.put(key, value);
            }
        }
        let written = txn.success.len();
        for key in have.keys().filter(|k| !want.contains_key(*k)) {
            txn.delete(key);
        }
        let deleted = txn.success.len() - written;
        if txn.success.is_empty() {
            return Ok(Imported {
                written,
                deleted,
                unchanged,
                revision,
            });
        }
        let rsp = client.txn(&txn).await.map_err(|e| {
            anyhow::anyhow!("{e}\n(etcd takes at most --max-txn-ops operations, 128 by default, and --max-request-bytes, 1.5 MiB, in one transaction)")
        })?;
        if rsp.succeeded {
            return Ok(Imported {
                written,
                deleted,
                unchanged,
                revision: rsp.header.revision.0,
            });
        }
        tracing::info!("the keys changed while importing; reading them again");
    }
    anyhow::bail!(
        "the keys under {prefix} kept changing while importing ({IMPORT_TRIES} tries); try again"
    )
}

/// The mesh under the prefix, as a mesh file (YAML); an error lists every
/// problem of a key that does not parse.
pub async fn export(settings: &EtcdSettings) -> anyhow::Result<String> {
    let client = settings.client()?;
    let (_, kvs) = client.range(&settings.prefix).await?;
    let keys: layout::Keys = kvs
        .into_iter()
        .map(|kv| (kv.key.text(), kv.value.0))
        .collect();
    let mesh = layout::read(&settings.prefix, &keys, |_| Vec::new()).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        anyhow::anyhow!(
            "the keys under {} are not a mesh:\n{}",
            settings.prefix,
            list.join("\n")
        )
    })?;
    Ok(layout::to_yaml(&mesh)?)
}

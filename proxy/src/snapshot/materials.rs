//! What a config names on disk: certificates and keys loaded into TLS
//! configs ([`load_materials`], the only I/O of a swap), with a digest of
//! the files' contents so a certificate replaced on disk changes the
//! version.

use crate::http::client::UpstreamTls;
use crate::identity::tls::MeshRoots;
use remora_api::{Config, Problem};
use std::sync::Arc;

/// Loaded TLS configs, by listener and backend index, with a digest of the
/// files' contents: a certificate replaced on disk changes the version.
pub struct Materials {
    /// The mesh trust roots, when the config has an `identity`.
    pub(super) mesh: Option<Arc<MeshRoots>>,
    /// The identity certificate from files (`identity.certificate`),
    /// installed when the snapshot is compiled.
    pub(super) credential: Option<Arc<crate::identity::Credential>>,
    pub(super) listener_tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    pub(super) backend_tls: Vec<Option<UpstreamTls>>,
    pub(super) backend_digest: Vec<u64>,
    pub(super) digest: u64,
}

impl Materials {
    /// A hash of every file the config names, by content.
    pub fn digest(&self) -> u64 {
        self.digest
    }
}

/// Hash of the contents of `paths` (a missing file hashes as empty: the TLS
/// loader reports it).
fn file_digest<'a>(paths: impl Iterator<Item = &'a std::path::Path>) -> u64 {
    let mut all = Vec::new();
    for p in paths {
        all.extend_from_slice(p.as_os_str().as_encoded_bytes());
        all.extend_from_slice(&std::fs::read(p).unwrap_or_default());
    }
    crate::balance::content_hash(&all)
}

pub(super) fn problem((path, message): (String, String)) -> Problem {
    Problem {
        path,
        message,
        line: None,
    }
}

/// Reads every certificate and key the config names.
pub fn load_materials(config: &Config) -> Result<Materials, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut listener_tls = Vec::new();
    let mut digests = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        if let Some(tls) = &l.tls {
            let files = tls
                .certificates
                .iter()
                .flat_map(|c| [c.cert.as_path(), c.key.as_path()]);
            digests.push(file_digest(files.chain(tls.client_ca.as_deref())));
        }
        listener_tls.push(l.tls.as_ref().and_then(|tls| {
            crate::tls::server_config(tls, &format!("listeners[{i}].tls"))
                .map_err(|e| problems.push(problem(e)))
                .ok()
        }));
    }
    let mut backend_tls = Vec::new();
    let mut backend_digest = Vec::new();
    for (i, b) in config.backends.iter().enumerate() {
        backend_digest.push(b.tls.as_ref().map_or(0, |tls| {
            let files = [
                Some(tls.ca.as_path()),
                tls.client_cert.as_deref(),
                tls.client_key.as_deref(),
            ];
            file_digest(files.into_iter().flatten())
        }));
        backend_tls.push(b.tls.as_ref().and_then(|tls| {
            let at = format!("backends[{i}].tls");
            let configs = crate::tls::client_configs(tls, &at)
                .map_err(|e| problems.push(problem(e)))
                .ok()?;
            let name = rustls_pki_types::ServerName::try_from(tls.server_name.clone())
                .map_err(|e| problems.push(problem((format!("{at}.server_name"), e.to_string()))))
                .ok()?;
            Some(UpstreamTls {
                h1: configs.0,
                h2: configs.1,
                mesh: None,
                server_name: name,
            })
        }));
    }
    let mesh = config
        .identity
        .as_ref()
        .and_then(|id| mesh_roots(id).map_err(|e| problems.push(problem(e))).ok());
    if let Some(m) = &mesh {
        digests.push(m.digest);
    }
    let files = config
        .identity
        .as_ref()
        .and_then(|id| id.certificate.as_ref());
    let credential = files.and_then(|f| {
        digests.push(file_digest([f.cert.as_path(), f.key.as_path()].into_iter()));
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        read(&f.cert)
            .and_then(|c| Ok((c, read(&f.key)?)))
            .and_then(|(c, k)| crate::identity::Credential::parse(&c, &k))
            .map(Arc::new)
            .map_err(|e| problems.push(problem(("identity.certificate".into(), e))))
            .ok()
    });
    if problems.is_empty() {
        digests.extend_from_slice(&backend_digest);
        let bytes: Vec<u8> = digests.iter().flat_map(|d| d.to_le_bytes()).collect();
        Ok(Materials {
            mesh,
            credential,
            listener_tls,
            backend_tls,
            backend_digest,
            digest: crate::balance::content_hash(&bytes),
        })
    } else {
        Err(problems)
    }
}

/// The trust roots of an `identity` section, inline or from a file.
fn mesh_roots(id: &remora_api::IdentityConfig) -> Result<Arc<MeshRoots>, (String, String)> {
    let (at, pems) = match &id.trust_roots_file {
        Some(path) => (
            "identity.trust_roots_file",
            vec![std::fs::read(path).map_err(|e| {
                (
                    "identity.trust_roots_file".to_string(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?],
        ),
        None => (
            "identity.trust_roots",
            id.trust_roots
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
        ),
    };
    let slices: Vec<&[u8]> = pems.iter().map(Vec::as_slice).collect();
    MeshRoots::from_pem(&slices)
        .map(Arc::new)
        .map_err(|e| (at.to_string(), e))
}

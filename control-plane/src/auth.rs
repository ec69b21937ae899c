//! Credentials for certificate requests: an [`Authenticator`] decides
//! whether the bearer of a token may get a certificate for a workload.
//!
//! [`JoinTokens`] is the file-mode one: a YAML file of tokens, each for one
//! workload, read at start and again whenever the file changes (an invalid
//! edit is logged and the previous tokens stay). Tokens are compared in
//! constant time and never logged. [`TokenReviewer`] is the Kubernetes one:
//! a projected ServiceAccount token, checked with the TokenReview API
//! ([`token_review`]). [`Credentials`] says which one a CA uses.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub mod token_review;

pub use token_review::TokenReviewer;

/// The shortest token accepted in a token file.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a credential was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// The token is not known (401).
    Unknown,
    /// The token is known but not for this workload (403).
    NotFor,
    /// The credential could not be checked now (503), e.g. the Kubernetes
    /// API server did not answer; the text says why (never the token).
    Unavailable(String),
}

/// How certificate requests prove their workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A join-token file ([`JoinTokens`], `--join-tokens`).
    JoinTokens(PathBuf),
    /// A Kubernetes ServiceAccount token for `audience`, checked with the
    /// TokenReview API ([`TokenReviewer`], `--token-review`).
    TokenReview { audience: String },
}

pub trait Authenticator: Send + Sync {
    /// Whether the bearer of `token` may get a certificate for `workload`,
    /// whose mesh identity is `spiffe_id`.
    fn authorize<'a>(
        &'a self,
        token: &'a str,
        workload: &'a str,
        spiffe_id: &'a str,
    ) -> BoxFuture<'a, Result<(), Denied>>;
}

/// The token file:
///
/// ```yaml
/// tokens:
///   - token: 5d1c0e6f0a8b4c7e9f2a3b4c5d6e7f80   # at least 16 characters
///     workload: web
/// ```
///
/// A token listed for several workloads allows each of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: String,
    workload: String,
}

/// Join tokens from a file, reloaded when it changes.
pub struct JoinTokens {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    fingerprint: Option<(SystemTime, u64)>,
    entries: Arc<Vec<TokenEntry>>,
}

impl JoinTokens {
    /// Reads the file; fails if it cannot be read or is invalid.
    pub fn load(path: &Path) -> anyhow::Result<JoinTokens> {
        let fingerprint = fingerprint(path);
        let entries =
            read(path).map_err(|e| anyhow::anyhow!("join tokens {}: {e}", path.display()))?;
        tracing::info!(path = %path.display(), tokens = entries.len(), "join tokens loaded");
        Ok(JoinTokens {
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                fingerprint,
                entries: Arc::new(entries),
            }),
        })
    }

    /// The current tokens, read again if the file changed since.
    fn entries(&self) -> Arc<Vec<TokenEntry>> {
        let now = fingerprint(&self.path);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if now != loaded.fingerprint {
            loaded.fingerprint = now;
            match read(&self.path) {
                Ok(entries) => {
                    tracing::info!(path = %self.path.display(), tokens = entries.len(), "join tokens reloaded");
                    loaded.entries = Arc::new(entries);
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "join tokens rejected; keeping the previous ones")
                }
            }
        }
        loaded.entries.clone()
    }
}

impl Authenticator for JoinTokens {
    fn authorize<'a>(
        &'a self,
        token: &'a str,
        workload: &'a str,
        _spiffe_id: &'a str,
    ) -> BoxFuture<'a, Result<(), Denied>> {
        let entries = self.entries();
        let verdict = check(&entries, token, workload);
        Box::pin(async move { verdict })
    }
}

/// Looks at every entry whatever matches, so the time taken does not tell
/// which token (or how much of one) was right.
fn check(entries: &[TokenEntry], token: &str, workload: &str) -> Result<(), Denied> {
    let (mut known, mut allowed) = (false, false);
    for e in entries {
        let same = constant_time_eq(e.token.as_bytes(), token.as_bytes());
        known |= same;
        allowed |= same & (e.workload == workload);
    }
    match (known, allowed) {
        (_, true) => Ok(()),
        (true, false) => Err(Denied::NotFor),
        (false, _) => Err(Denied::Unknown),
    }
}

/// Compares every byte up to the longer length; only the lengths leak.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

fn read(path: &Path) -> Result<Vec<TokenEntry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    parse(&text)
}

/// Parses and checks a token file. Errors never quote a token.
fn parse(text: &str) -> Result<Vec<TokenEntry>, String> {
    let file: TokenFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    for (i, e) in file.tokens.iter().enumerate() {
        if e.token.trim().len() < MIN_TOKEN_LEN {
            return Err(format!(
                "tokens[{i}].token: must be at least {MIN_TOKEN_LEN} characters (try `openssl rand -hex 32`)"
            ));
        }
        if e.token.trim() != e.token {
            return Err(format!("tokens[{i}].token: has leading or trailing spaces"));
        }
        if e.workload.is_empty() {
            return Err(format!("tokens[{i}].workload: must not be empty"));
        }
    }
    Ok(file.tokens)
}

fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "0123456789abcdef-web";
    const API: &str = "0123456789abcdef-api";

    fn entries() -> Vec<TokenEntry> {
        parse(&format!(
            "tokens:\n  - {{token: {WEB}, workload: web}}\n  - {{token: {API}, workload: api}}\n  - {{token: {API}, workload: batch}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_token_allows_its_workloads_only() {
        let e = entries();
        assert_eq!(check(&e, WEB, "web"), Ok(()));
        assert_eq!(check(&e, WEB, "api"), Err(Denied::NotFor));
        assert_eq!(check(&e, API, "api"), Ok(()));
        assert_eq!(check(&e, API, "batch"), Ok(()));
        assert_eq!(
            check(&e, "0123456789abcdef-wex", "web"),
            Err(Denied::Unknown)
        );
        assert_eq!(check(&e, "0123456789abcdef", "web"), Err(Denied::Unknown));
        assert_eq!(check(&e, "", "web"), Err(Denied::Unknown));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        for (a, b) in [
            ("", ""),
            ("a", "a"),
            ("a", "b"),
            ("ab", "a"),
            ("a", "ab"),
            ("abc", "abd"),
        ] {
            assert_eq!(
                constant_time_eq(a.as_bytes(), b.as_bytes()),
                a == b,
                "{a} {b}"
            );
        }
    }

    #[test]
    fn bad_files_are_refused_without_quoting_tokens() {
        let cases = [
            ("tokens: [{token: short, workload: web}]", "at least 16"),
            (
                "tokens: [{token: 0123456789abcdef, workload: ''}]",
                "workload: must not be empty",
            ),
            (
                "tokens: [{token: 0123456789abcdef, workload: web, x: 1}]",
                "unknown field",
            ),
            (
                "tokens: [{token: 0123456789abcdef}]",
                "missing field `workload`",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).err().unwrap_or_default();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
    }

    #[tokio::test]
    async fn edits_apply_on_the_next_request_and_bad_edits_are_ignored() {
        let dir = remora_test_support::proxy::tempdir();
        let path = dir.path().join("tokens.yaml");
        std::fs::write(&path, format!("tokens: [{{token: {WEB}, workload: web}}]")).unwrap();
        let tokens = JoinTokens::load(&path).unwrap();
        assert_eq!(tokens.authorize(WEB, "web", "").await, Ok(()));
        std::fs::write(
            &path,
            format!("tokens: [{{token: {API}, workload: web}}]\n"),
        )
        .unwrap();
        assert_eq!(tokens.authorize(WEB, "web", "").await, Err(Denied::Unknown));
        assert_eq!(tokens.authorize(API, "web", "").await, Ok(()));
        std::fs::write(&path, "tokens: [{token: x, workload: web}]\n\n\n").unwrap();
        assert_eq!(
            tokens.authorize(API, "web", "").await,
            Ok(()),
            "the last good tokens stay"
        );
    }
}

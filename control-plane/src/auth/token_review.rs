//! Kubernetes ServiceAccount tokens: a proxy sends its pod's projected
//! token (audience `remora`) as the bearer of `POST /v1/certify`, and
//! [`TokenReviewer`] asks the API server about it with a TokenReview
//! (`authentication.k8s.io/v1`, `spec.audiences: [<audience>]`).
//!
//! A token allows one workload only: the API server must say it is
//! authenticated, for our audience, as `system:serviceaccount:<ns>:<sa>`,
//! and the workload asked for must be `<sa>.<ns>` with the SPIFFE ID
//! `spiffe://<trust domain>/ns/<ns>/sa/<sa>`. [`review`] and [`allows`] are
//! that decision, pure. Not authenticated, or not for our audience →
//! [`Denied::Unknown`] (401); another ServiceAccount, or a user that is not
//! one → [`Denied::NotFor`] (403); the API server unreachable, slow or
//! refusing the review itself → [`Denied::Unavailable`] (503).
//!
//! Positive answers are cached for [`CACHE_TTL`] (at most [`CACHE_MAX`]
//! tokens), keyed by a 128-bit keyed hash of the token: the token itself is
//! never kept, and never logged. So a token the API server stops accepting
//! (its pod deleted, or expired) may still be honoured for up to a minute;
//! refusals are not cached.

use super::{Authenticator, Denied};
use crate::mesh::{dns_label, dns_subdomain};
use futures_util::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long a positive review is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// The most tokens remembered at once.
pub const CACHE_MAX: usize = 4096;
/// The longest wait for the API server's answer (proxies give up on a
/// certificate request after 10 s).
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// The username prefix of ServiceAccounts.
const SA_PREFIX: &str = "system:serviceaccount:";

/// A ServiceAccount the API server vouched for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    /// Parses `system:serviceaccount:<namespace>:<name>`; `None` for any
    /// other user or a malformed name.
    pub fn from_username(username: &str) -> Option<ServiceAccount> {
        let (namespace, name) = username.strip_prefix(SA_PREFIX)?.split_once(':')?;
        (dns_label(namespace) && dns_subdomain(name)).then(|| ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// `<name>.<namespace>`, as proxies subscribe.
    pub fn workload(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

/// Why a review or a workload was refused: logged, then told as [`Denied`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not authenticated: {0}")]
    NotAuthenticated(String),
    #[error("the token's audiences {got:?} do not include `{want}`")]
    Audience { got: Vec<String>, want: String },
    #[error("`{0}` is not a ServiceAccount (system:serviceaccount:<namespace>:<name>)")]
    NotServiceAccount(String),
    #[error("ServiceAccount {namespace}/{name} may only get workload `{own}`, not `{asked}`")]
    OtherWorkload {
        namespace: String,
        name: String,
        own: String,
        asked: String,
    },
    #[error(
        "workload `{workload}` has SPIFFE ID {spiffe_id}, not ServiceAccount {namespace}/{name}'s"
    )]
    OtherIdentity {
        namespace: String,
        name: String,
        workload: String,
        spiffe_id: String,
    },
}

impl Refusal {
    pub fn denied(&self) -> Denied {
        match self {
            Refusal::NotAuthenticated(_) | Refusal::Audience { .. } => Denied::Unknown,
            _ => Denied::NotFor,
        }
    }
}

/// What the API server's answer proves: a ServiceAccount, for `audience`.
pub fn review(status: &TokenReviewStatus, audience: &str) -> Result<ServiceAccount, Refusal> {
    if status.authenticated != Some(true) {
        let why = status
            .error
            .as_deref()
            .unwrap_or("the API server gave no reason");
        return Err(Refusal::NotAuthenticated(why.to_string()));
    }
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(Refusal::Audience {
            got: audiences,
            want: audience.to_string(),
        });
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or("");
    ServiceAccount::from_username(username)
        .ok_or_else(|| Refusal::NotServiceAccount(username.to_string()))
}

/// Whether `sa` may get a certificate for `workload`, whose SPIFFE ID is
/// `spiffe_id`: the workload is `<sa>.<ns>` and the ID ends in
/// `/ns/<ns>/sa/<sa>` (any trust domain).
pub fn allows(sa: &ServiceAccount, workload: &str, spiffe_id: &str) -> Result<(), Refusal> {
    let own = sa.workload();
    if workload != own {
        return Err(Refusal::OtherWorkload {
            namespace: sa.namespace.clone(),
            name: sa.name.clone(),
            own,
            asked: workload.to_string(),
        });
    }
    let path = spiffe_id
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(domain, _)| !domain.is_empty())
        .map(|(_, path)| path);
    if path != Some(&format!("ns/{}/sa/{}", sa.namespace, sa.name)) {
        return Err(Refusal::OtherIdentity {
            namespace: sa.namespace.clone(),
            name: sa.name.clone(),
            workload: workload.to_string(),
            spiffe_id: spiffe_id.to_string(),
        });
    }
    Ok(())
}

/// Checks ServiceAccount tokens with the TokenReview API.
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
    cache: Mutex<Cache>,
    keys: (std::hash::RandomState, std::hash::RandomState),
}

impl TokenReviewer {
    /// Reviews tokens for `audience` through `client`.
    pub fn new(client: kube::Client, audience: &str) -> TokenReviewer {
        TokenReviewer {
            api: Api::all(client),
            audience: audience.to_string(),
            cache: Mutex::new(Cache::default()),
            keys: Default::default(),
        }
    }

    /// A reviewer on the cluster this process runs in (in-cluster config),
    /// or the one `KUBECONFIG` (else `~/.kube/config`) names.
    pub async fn from_environment(audience: &str) -> anyhow::Result<TokenReviewer> {
        let config = kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!("--token-review needs the Kubernetes API server: run in a pod (in-cluster config) or set KUBECONFIG: {e}")
        })?;
        let url = config.cluster_url.to_string();
        let client = kube::Client::try_from(config)
            .map_err(|e| anyhow::anyhow!("--token-review: a client for {url}: {e}"))?;
        tracing::info!(api_server = %url, audience, "ServiceAccount tokens checked with the TokenReview API");
        Ok(TokenReviewer::new(client, audience))
    }

    fn key(&self, token: &str) -> Key {
        (self.keys.0.hash_one(token), self.keys.1.hash_one(token))
    }

    /// The ServiceAccount of `token`: cached, else from the API server.
    async fn service_account(&self, token: &str) -> Result<ServiceAccount, Denied> {
        let key = self.key(token);
        let cached = self.lock().get(key, Instant::now());
        if let Some(sa) = cached {
            return Ok(sa);
        }
        let status = self.ask(token).await?;
        match review(&status, &self.audience) {
            Ok(sa) => {
                self.lock().insert(key, sa.clone(), Instant::now());
                Ok(sa)
            }
            Err(refusal) => {
                let reason = scrub(&refusal.to_string(), token);
                tracing::warn!(reason = %reason, "ServiceAccount token refused");
                Err(refusal.denied())
            }
        }
    }

    /// One TokenReview; every failure to get an answer is `Unavailable`.
    async fn ask(&self, token: &str) -> Result<TokenReviewStatus, Denied> {
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let answer = tokio::time::timeout(
            REVIEW_TIMEOUT,
            self.api.create(&PostParams::default(), &request),
        )
        .await;
        let why = match answer {
            Ok(Ok(reviewed)) => return Ok(reviewed.status.unwrap_or_default()),
            Err(_) => format!("the Kubernetes API server did not answer the TokenReview within {REVIEW_TIMEOUT:?}"),
            Ok(Err(kube::Error::Api(s))) => {
                let hint = match s.code {
                    401 => ": it does not accept the control plane's own credential (its ServiceAccount token, or the KUBECONFIG user)",
                    403 => ": the control plane's ServiceAccount needs `create` on `tokenreviews` (authentication.k8s.io)",
                    _ => "",
                };
                format!(
                    "the Kubernetes API server answered the TokenReview with {} {}: {}{hint}",
                    s.code, s.reason, s.message
                )
            }
            Ok(Err(e)) => format!("cannot reach the Kubernetes API server for the TokenReview: {e}"),
        };
        let why = scrub(&why, token);
        tracing::error!(error = %why, "TokenReview failed");
        Err(Denied::Unavailable(why))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Authenticator for TokenReviewer {
    fn authorize<'a>(
        &'a self,
        token: &'a str,
        workload: &'a str,
        spiffe_id: &'a str,
    ) -> BoxFuture<'a, Result<(), Denied>> {
        Box::pin(async move {
            let sa = self.service_account(token).await?;
            allows(&sa, workload, spiffe_id).map_err(|refusal| {
                tracing::warn!(reason = %refusal, "ServiceAccount token refused");
                refusal.denied()
            })
        })
    }
}

/// One line, at most 512 bytes, without the token (should an answer quote it).
fn scrub(text: &str, token: &str) -> String {
    let mut line = text.replace(['\n', '\r'], " ");
    if !token.is_empty() {
        line = line.replace(token, "<token>");
    }
    if line.len() > 512 {
        let mut end = 512;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

type Key = (u64, u64);

/// Positive reviews by token hash, each until [`CACHE_TTL`] after it was
/// made. Full: the expired go, and if none had, everything does.
#[derive(Default)]
pub(crate) struct Cache {
    entries: HashMap<Key, (ServiceAccount, Instant)>,
}

impl Cache {
    pub(crate) fn get(&mut self, key: Key, now: Instant) -> Option<ServiceAccount> {
        match self.entries.get(&key) {
            Some((sa, until)) if now < *until => Some(sa.clone()),
            Some(_) => {
                self.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn insert(&mut self, key: Key, sa: ServiceAccount, now: Instant) {
        if self.entries.len() >= CACHE_MAX && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, until)| now < *until);
            if self.entries.len() >= CACHE_MAX {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (sa, now + CACHE_TTL));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests;

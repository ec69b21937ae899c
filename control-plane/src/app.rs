//! Wiring: load the CA and its credential check (if configured) and the mesh (an
//! invalid one of any stops the start), bind the snapshot stream (which also
//! serves certificate requests) and the admin server, start the file
//! watcher. [`App`] exposes the bound addresses, so tests and callers can
//! bind port 0.

use crate::admin::{self, Admin, Readiness};
use crate::auth::{Authenticator, Credentials, JoinTokens, TokenReviewer};
use crate::ca::{Ca, CaSettings};
use crate::certify::Certifier;
use crate::metrics::Metrics;
use crate::proxies::Proxies;
use crate::source::MeshSource;
use crate::stream::{self, Stream};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the mesh comes from.
#[derive(Clone, Debug)]
pub enum MeshFrom {
    /// A YAML mesh file, reloaded when it changes and on SIGHUP.
    File(PathBuf),
    /// Keys under a prefix in etcd, watched (see [`crate::etcd`]).
    Etcd(crate::etcd::EtcdSettings),
    /// The Kubernetes cluster (in-cluster config or KUBECONFIG): see
    /// [`crate::k8s`]. `/ready` says `starting` until it is synced.
    Kubernetes {
        /// The cluster's DNS domain (`cluster.local`).
        cluster_domain: String,
        /// The trust domain of the workloads' SPIFFE IDs.
        trust_domain: String,
        /// The mesh's tracing (`--tracing-collector`).
        tracing: Option<remora_api::Tracing>,
    },
}

/// Where the mesh is, where to listen, and the CA if there is one.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mesh: MeshFrom,
    /// The snapshot stream (`POST /v1/subscribe`) and `POST /v1/certify`.
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// `None`: no CA; certificate requests get a 503.
    pub ca: Option<CaSettings>,
    /// The certificate `listen` serves with; `None`: plain TCP.
    pub tls: Option<ServingTls>,
    /// Subscriptions must present the proxy's mesh certificate, for the
    /// workload they name (needs `tls` and `ca`).
    pub require_proxy_identity: bool,
    /// The sidecar injector's webhook; `None`: off.
    pub webhook: Option<crate::inject::webhook::WebhookSettings>,
    /// Ask proxies for a stats report this often, for the service graph
    /// (`/graph`); `None`: never.
    pub stats_interval: Option<std::time::Duration>,
}

/// The certificate and key (PEM) of the snapshot stream's port.
#[derive(Clone, Debug)]
pub struct ServingTls {
    /// The leaf first, then its intermediates.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServingTls {
    /// The TLS server config: HTTP/2 and HTTP/1.1 by ALPN. With the mesh's
    /// `client_roots` (PEM), a client may present a certificate that chains
    /// to them (a proxy's mesh certificate); clients without one are let in.
    pub fn load(&self, client_roots: &[String]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", self.cert.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "--tls-cert {}: no certificate in the file",
            self.cert.display()
        );
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if client_roots.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for pem in client_roots {
                for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(der?)?;
                }
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", self.key.display()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // No resumption: a resumed session would carry its first handshake's
        // client certificate (or its absence). Connections are few and long.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

pub struct App {
    pub listen_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The injector webhook's address, when it runs.
    pub webhook_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub proxies: Arc<Proxies>,
    readiness: Arc<Readiness>,
    stop: watch::Sender<bool>,
    stream: JoinHandle<()>,
}

impl App {
    pub async fn start(settings: Settings) -> anyhow::Result<App> {
        let metrics = Metrics::new();
        let (ca, auth) = match &settings.ca {
            Some(s) => {
                let (ca, auth) = load_ca(s).await?;
                (Some(ca), Some(auth))
            }
            None => {
                tracing::info!("no CA configured: certificate requests will be refused");
                (None, None)
            }
        };
        let roots = ca
            .as_ref()
            .map_or_else(Vec::new, |ca| ca.trust_roots().to_vec());
        if let Some(ca) = &ca {
            let expiry = ca.not_after().duration_since(std::time::UNIX_EPOCH);
            metrics
                .ca_expiry
                .set(expiry.map_or(0.0, |d| d.as_secs_f64()));
        }
        let m = metrics.clone();
        let mut kube = None;
        let source = match settings.mesh.clone() {
            MeshFrom::File(path) => {
                tokio::task::spawn_blocking(move || MeshSource::load(path, roots, m)).await??
            }
            // Not ready until the first mesh is read from etcd.
            MeshFrom::Etcd(etcd) => {
                etcd.client()?; // bad endpoints or TLS files stop the start
                MeshSource::starting(etcd.origin(), roots, m)
            }
            MeshFrom::Kubernetes {
                cluster_domain,
                trust_domain,
                tracing,
            } => {
                let client = kube::Client::try_default()
                    .await
                    .context("no Kubernetes API config (in-cluster, or KUBECONFIG)")?;
                let opts = crate::k8s::translate::Options {
                    cluster_domain,
                    trust_domain: trust_domain.clone(),
                    mtls: ca.is_some(),
                    tracing,
                };
                kube = Some((client, opts));
                // Empty until the cluster is synced (and not ready till then).
                let empty = remora_api::mesh::Mesh {
                    trust_domain,
                    ..Default::default()
                };
                MeshSource::new("kubernetes".into(), &empty, roots, m)
            }
        };
        let source = Arc::new(source);
        let (stop, stop_rx) = watch::channel(false);
        let proxies = Proxies::new(metrics.clone());
        let readiness = Arc::new(Readiness::default());

        anyhow::ensure!(
            !settings.require_proxy_identity || (settings.tls.is_some() && ca.is_some()),
            "--require-proxy-identity needs --tls-cert and a CA (--ca-cert)"
        );
        let client_roots = ca.as_ref().map_or(&[][..], |ca| ca.trust_roots());
        let tls = match &settings.tls {
            Some(t) => Some(t.load(client_roots)?),
            None => None,
        };
        let tcp = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot bind the snapshot stream to {}", settings.listen))?;
        let listen_addr = tcp.local_addr()?;
        let admin_tcp = TcpListener::bind(settings.admin)
            .await
            .with_context(|| format!("cannot bind the admin server to {}", settings.admin))?;
        let admin_addr = admin_tcp.local_addr()?;

        let admin = Arc::new(Admin {
            generations: source.subscribe(),
            mesh: source.status.clone(),
            proxies: proxies.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
        });
        tokio::spawn(admin::serve(admin_tcp, admin, stop_rx.clone()));
        tracing::info!(address = %admin_addr, "admin bound");
        let streams = Arc::new(Stream {
            require_identity: settings.require_proxy_identity,
            generations: source.subscribe(),
            proxies: proxies.clone(),
            metrics: metrics.clone(),
            stop: stop_rx.clone(),
            certifier: Arc::new(Certifier {
                ca,
                auth,
                generations: source.subscribe(),
                metrics: metrics.clone(),
            }),
            stats_interval: settings.stats_interval,
        });
        let tls_on = tls.is_some();
        let stream = tokio::spawn(stream::serve(tcp, tls, streams, stop_rx.clone()));
        tracing::info!(address = %listen_addr, tls = tls_on, "control plane bound");
        let webhook_addr = match &settings.webhook {
            Some(w) => {
                Some(crate::inject::webhook::start(w, metrics.clone(), stop_rx.clone()).await?)
            }
            None => None,
        };
        match settings.mesh {
            MeshFrom::File(path) => {
                tokio::spawn(source.watch_file(path, stop_rx));
                readiness.set_ready();
            }
            MeshFrom::Etcd(etcd) => {
                let follower = crate::etcd::follow::Follower {
                    source,
                    client: etcd.client()?,
                    prefix: etcd.prefix,
                    readiness: readiness.clone(),
                };
                tracing::info!(source = %etcd.endpoints.join(","), prefix = %follower.prefix, "following the mesh in etcd");
                tokio::spawn(follower.run(stop_rx));
            }
            MeshFrom::Kubernetes { .. } => {
                if let Some((client, opts)) = kube {
                    let ready = readiness.clone();
                    let on_sync = move || ready.set_ready();
                    tokio::spawn(crate::k8s::watch::run(
                        client, opts, source, on_sync, stop_rx,
                    ));
                }
            }
        }
        Ok(App {
            listen_addr,
            admin_addr,
            webhook_addr,
            metrics,
            proxies,
            readiness,
            stop,
            stream,
        })
    }

    /// Ends every subscription (proxies keep their snapshots and reconnect
    /// elsewhere or later), waits up to `deadline` for the connections to
    /// close, then stops the admin server and the watcher.
    pub async fn shutdown(self, deadline: Duration) {
        self.readiness.set_draining();
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(deadline, self.stream).await;
    }
}

/// The CA (from files) and its credential check.
async fn load_ca(s: &CaSettings) -> anyhow::Result<(Arc<Ca>, Arc<dyn Authenticator>)> {
    let ca = Ca::from_files(s)?;
    tracing::info!(
        cert = %s.cert.display(),
        trust_roots = ca.trust_roots().len(),
        lifetime = ?s.lifetime,
        expires_at = %crate::proxies::rfc3339(ca.not_after()),
        "CA loaded"
    );
    let auth: Arc<dyn Authenticator> = match &s.credentials {
        Credentials::JoinTokens(path) => Arc::new(JoinTokens::load(path)?),
        Credentials::TokenReview { audience } => {
            Arc::new(TokenReviewer::from_environment(audience).await?)
        }
    };
    Ok((Arc::new(ca), auth))
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

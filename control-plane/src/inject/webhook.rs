//! The mutating admission webhook (HTTPS, port 9443 in a cluster):
//! `POST /inject` takes an `admission.k8s.io/v1` AdmissionReview of a Pod
//! and answers it allowed, with a JSONPatch (the diff between the pod and
//! the injected pod) when the pod is injected; `GET /live`. A body that is
//! not an AdmissionReview gets a 400 saying why; a pod with a bad
//! `remora.io/*` annotation is denied with the annotation's problem.
//!
//! The namespace's labels (the namespace opt-in) come from the Kubernetes
//! API when there is one ([`Namespaces::Api`]), else from a fixed map.

use super::{inject_pod, tls::ReloadingCert, InjectConfig};
use crate::metrics::Metrics;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The largest AdmissionReview read (a pod is far smaller).
const MAX_BODY: usize = 4 << 20;

/// Where the namespace labels come from.
pub enum Namespaces {
    /// Read each pod's namespace from the API server.
    Api(kube::Client),
    /// A fixed map (no cluster: only pods that opt in themselves, or tests).
    Fixed(BTreeMap<String, BTreeMap<String, String>>),
}

impl Namespaces {
    async fn labels(&self, namespace: &str) -> Result<BTreeMap<String, String>, kube::Error> {
        match self {
            Namespaces::Fixed(map) => Ok(map.get(namespace).cloned().unwrap_or_default()),
            Namespaces::Api(client) => {
                let api = kube::Api::<Namespace>::all(client.clone());
                Ok(api
                    .get(namespace)
                    .await?
                    .metadata
                    .labels
                    .unwrap_or_default())
            }
        }
    }
}

/// What the webhook serves with.
pub struct Injector {
    pub config: InjectConfig,
    pub namespaces: Namespaces,
    pub metrics: Arc<Metrics>,
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    rsp
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        body.into().into_bytes(),
    )
}

impl Injector {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
            (&Method::POST, "/inject") => {
                let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => return text(StatusCode::BAD_REQUEST, format!("body: {e}\n")),
                };
                match self.review(&body).await {
                    Ok(json) => reply(StatusCode::OK, "application/json", json),
                    Err((status, message)) => {
                        tracing::warn!(%message, "admission request refused");
                        text(status, format!("{message}\n"))
                    }
                }
            }
            (_, "/live") => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
            (_, "/inject") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try POST /inject, GET /live\n",
            ),
        }
    }

    /// The answer to one AdmissionReview body, as JSON; or the HTTP status
    /// and message of a request that is not one.
    pub async fn review(&self, body: &[u8]) -> Result<Vec<u8>, (StatusCode, String)> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, m);
        let review: AdmissionReview<Pod> = serde_json::from_slice(body)
            .map_err(|e| bad(format!("not an AdmissionReview of a Pod: {e}")))?;
        let request: AdmissionRequest<Pod> = review
            .try_into()
            .map_err(|_| bad("the AdmissionReview has no `request`".into()))?;
        let response = self.admit(&request).await?;
        let internal = |e: serde_json::Error| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        let mut json = serde_json::to_value(response.into_review()).map_err(internal)?;
        // kube writes the patch's bytes as a JSON array; the API server's
        // documented form (Go's []byte) is a base64 string.
        if let Some(patch) = json.pointer_mut("/response/patch") {
            let bytes: Vec<u8> = serde_json::from_value(patch.take()).map_err(internal)?;
            *patch = base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into();
        }
        serde_json::to_vec(&json).map_err(internal)
    }

    async fn admit(
        &self,
        request: &AdmissionRequest<Pod>,
    ) -> Result<AdmissionResponse, (StatusCode, String)> {
        let allowed = AdmissionResponse::from(request);
        let pod = match (&request.operation, &request.object) {
            (Operation::Create, Some(pod)) => pod,
            _ => return Ok(allowed),
        };
        let namespace = request
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let labels = self.namespaces.labels(&namespace).await.map_err(|e| {
            // The API server's failurePolicy then decides.
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read namespace {namespace}: {e}"),
            )
        })?;
        let name = pod
            .metadata
            .name
            .clone()
            .or_else(|| pod.metadata.generate_name.clone())
            .unwrap_or_default();
        let count = |outcome: &str| self.metrics.injections.with_label_values(&[outcome]).inc();
        match inject_pod(pod, &labels, &self.config) {
            Ok(Ok(injected)) => {
                let patch = json_patch::diff(&to_json(pod)?, &to_json(&injected)?);
                count("injected");
                tracing::info!(%namespace, pod = %name, "injected");
                allowed
                    .with_patch(patch)
                    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
            }
            Ok(Err(skip)) => {
                count(skip.as_str());
                tracing::debug!(%namespace, pod = %name, reason = skip.as_str(), "not injected");
                Ok(allowed)
            }
            Err(e) => {
                count("invalid");
                tracing::info!(%namespace, pod = %name, error = %e, "denied");
                Ok(allowed.deny(format!("remora injector: {e}")))
            }
        }
    }
}

fn to_json(pod: &Pod) -> Result<serde_json::Value, (StatusCode, String)> {
    serde_json::to_value(pod).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The TLS config of the webhook's port: the certificate from `cert`/`key`,
/// re-read when the files change (a renewed Secret), HTTP/2 and HTTP/1.1.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let resolver = ReloadingCert::load(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the webhook on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    injector: Arc<Injector>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::app::stopped(&mut stop) => return,
        };
        let (acceptor, injector) = (acceptor.clone(), injector.clone());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(error = %e, "webhook TLS handshake failed"),
                Err(_) => return tracing::debug!("webhook TLS handshake timed out"),
            };
            let svc = hyper::service::service_fn(move |req| {
                let injector = injector.clone();
                async move { Ok::<_, Infallible>(injector.handle(req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// Where and with what the webhook serves (`run --webhook-listen ...`).
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub listen: std::net::SocketAddr,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// Read each pod's namespace labels from the Kubernetes API (if there
    /// is one); `false`: only the pod's own opt-in counts.
    pub namespace_labels: bool,
    pub config: InjectConfig,
}

/// Loads the certificate, binds, and serves the webhook in a task; the bound
/// address. Namespace labels come from the Kubernetes API (in-cluster config
/// or KUBECONFIG); without one (or with `namespace_labels` off), only pods
/// that opt in themselves are injected.
pub async fn start(
    settings: &WebhookSettings,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context as _;
    let tls = tls_config(&settings.cert, &settings.key)?;
    let namespaces = if !settings.namespace_labels {
        tracing::info!(
            "namespace labels ignored: the webhook injects only pods that opt in themselves"
        );
        Namespaces::Fixed(BTreeMap::new())
    } else {
        match kube::Client::try_default().await {
            Ok(client) => Namespaces::Api(client),
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes API: the webhook injects only pods that opt in themselves");
                Namespaces::Fixed(BTreeMap::new())
            }
        }
    };
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot bind the injector webhook to {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let injector = Arc::new(Injector {
        config: settings.config.clone(),
        namespaces,
        metrics,
    });
    tokio::spawn(serve(listener, tls, injector, stop));
    tracing::info!(address = %addr, "webhook bound");
    Ok(addr)
}

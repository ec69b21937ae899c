//! The admin server (default 127.0.0.1:9990): `/live`, `/ready`, `/status`
//! (the mesh being served and every connected proxy, as JSON) and
//! `/metrics` (Prometheus text), and the service graph: `/graph` (a page)
//! and `/graph.json` ([`crate::graph`]).

use crate::app::stopped;
use crate::metrics::Metrics;
use crate::proxies::Proxies;
use crate::source::{Generation, MeshStatus};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Readiness: starting → ready → draining, and never back.
#[derive(Default)]
pub struct Readiness(AtomicU8);

const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Readiness {
    pub fn set_ready(&self) {
        let _ = self
            .0
            .compare_exchange(0, READY, Ordering::SeqCst, Ordering::SeqCst);
    }
    pub fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }
}

pub struct Admin {
    pub generations: watch::Receiver<Arc<Generation>>,
    pub mesh: Arc<ArcSwap<MeshStatus>>,
    pub proxies: Arc<Proxies>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    rsp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body)
}

impl Admin {
    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        }
        match req.uri().path() {
            "/live" => text(StatusCode::OK, "live\n"),
            "/ready" => match self.readiness.0.load(Ordering::SeqCst) {
                READY => text(StatusCode::OK, "ready\n"),
                DRAINING => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
                _ => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
            },
            "/status" => respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&self.status()).unwrap_or_default(),
            ),
            "/graph.json" => respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&self.graph()).unwrap_or_default(),
            ),
            "/graph" => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                crate::graph::page(&self.graph()),
            ),
            "/metrics" => respond(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                self.metrics.encode(),
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /live /ready /status /metrics /graph /graph.json\n",
            ),
        }
    }

    /// The service graph of the mesh served, from the proxies' reports.
    pub fn graph(&self) -> crate::graph::Graph {
        let current = self.generations.borrow().clone();
        crate::graph::graph(
            current.snapshots.keys().map(String::as_str),
            &self.proxies.list(),
        )
    }

    /// The mesh being served, each workload's version, and every proxy.
    pub fn status(&self) -> Value {
        let current = self.generations.borrow().clone();
        let proxies = self.proxies.list();
        let mut workloads: BTreeMap<&str, Value> = BTreeMap::new();
        for (name, p) in &current.snapshots {
            let count = proxies.iter().filter(|s| s.workload == *name).count();
            let identity = current.identities.get(name);
            workloads.insert(
                name,
                json!({ "version": p.version, "proxies": count, "identity": identity }),
            );
        }
        let proxies: Vec<Value> = proxies
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                let current = current.snapshots.get(&s.workload).map(|p| &p.version);
                v["in_sync"] = json!(current.is_some() && s.applied.as_ref() == current);
                // What its last stats report said of its mesh certificate.
                let expires = s
                    .stats
                    .last
                    .as_ref()
                    .map(|(_, r)| &r.certificate_expires_at);
                v["certificate"] = json!({ "expires_at": expires.cloned().flatten() });
                v
            })
            .collect();
        let mut mesh = serde_json::to_value(&**self.mesh.load()).unwrap_or_default();
        mesh["version"] = json!(current.mesh_version);
        json!({
            "mesh": mesh,
            "services": current.services,
            "workloads": workloads,
            "proxies": proxies,
        })
    }
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let rsp = admin.handle(&req);
                async move { Ok::<_, Infallible>(rsp) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

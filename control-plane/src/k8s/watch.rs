//! The watch of the cluster: one kube-runtime watcher per kind (Services,
//! EndpointSlices, Pods, HTTPRoutes, GRPCRoutes, ServicePolicies,
//! AuthorizationPolicies), each feeding a reflector store. Any change
//! starts a debounce (100 ms of quiet, at most 1 s); then the mesh is
//! rebuilt from the stores ([`super::translate`]) and offered to the
//! [`MeshSource`], which publishes it only when it differs from the one it
//! serves (else it counts it `unchanged`).
//!
//! No spurious versions: nothing is offered before every kind has been
//! listed once; a relist (a watch restart, a `410 Gone` expiry) replaces a
//! store's content at once, when the list is complete (`InitDone`), so a
//! relist that finds the same objects gives the same mesh, which is not
//! offered again. Readiness follows the first full sync.
//!
//! A kind whose API is not installed (404 on its list: no Gateway API, no
//! Remora CRDs) is logged once and read as empty; it is listed again every
//! 30 s, so installing it later needs no restart. Other errors are retried
//! with backoff (0.5 s doubling to 30 s); a `410 Gone` relists at once.

use super::translate::{self, Cluster, ObjectProblem, Options};
use crate::app::stopped;
use crate::k8s::crd::{AuthorizationPolicy, ServicePolicy};
use crate::source::MeshSource;
use futures_util::StreamExt;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{store::Writer, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Quiet time after a change before the mesh is rebuilt.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Longest a rebuild waits under a constant stream of changes.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// How often a kind that is not installed is listed again.
pub const ABSENT_RETRY: Duration = Duration::from_secs(30);

/// What a kind's watcher tells the rebuild loop.
#[derive(Debug)]
enum Msg {
    /// The kind's store changed.
    Changed,
    /// The kind was listed (or is not installed): its store is complete.
    Synced(usize),
}

/// The kinds, in the order of their `Synced` index.
const KINDS: [&str; 7] = [
    "Service",
    "EndpointSlice",
    "Pod",
    "HTTPRoute",
    "GRPCRoute",
    "ServicePolicy",
    "AuthorizationPolicy",
];

/// The stores every watcher fills.
#[derive(Clone)]
struct Stores {
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    http_routes: Store<HttpRoute>,
    grpc_routes: Store<GrpcRoute>,
    service_policies: Store<ServicePolicy>,
    authorization_policies: Store<AuthorizationPolicy>,
}

impl Stores {
    fn cluster(&self) -> Cluster {
        Cluster {
            services: self.services.state(),
            endpoint_slices: self.endpoint_slices.state(),
            pods: self.pods.state(),
            http_routes: self.http_routes.state(),
            grpc_routes: self.grpc_routes.state(),
            service_policies: self.service_policies.state(),
            authorization_policies: self.authorization_policies.state(),
        }
    }
}

/// Starts a watcher per kind, then rebuilds and offers the mesh on every
/// change until `stop`. `ready` is called once, after the first full sync
/// has been offered.
pub async fn run(
    client: Client,
    opts: Options,
    source: Arc<MeshSource>,
    ready: impl FnOnce() + Send,
    stop: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stores = Stores {
        services: spawn::<Service>(&client, 0, &tx, &stop),
        endpoint_slices: spawn::<EndpointSlice>(&client, 1, &tx, &stop),
        pods: spawn_trimmed::<Pod>(&client, 2, &tx, &stop, trim_pod),
        http_routes: spawn::<HttpRoute>(&client, 3, &tx, &stop),
        grpc_routes: spawn::<GrpcRoute>(&client, 4, &tx, &stop),
        service_policies: spawn::<ServicePolicy>(&client, 5, &tx, &stop),
        authorization_policies: spawn::<AuthorizationPolicy>(&client, 6, &tx, &stop),
    };
    drop(tx);
    rebuild_loop(stores, rx, opts, source, ready, stop).await;
}

fn spawn<K>(
    client: &Client,
    kind: usize,
    tx: &mpsc::UnboundedSender<Msg>,
    stop: &watch::Receiver<bool>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    spawn_trimmed(client, kind, tx, stop, |_| {})
}

/// A watcher whose objects are cut down by `trim` before they are stored.
fn spawn_trimmed<K>(
    client: &Client,
    kind: usize,
    tx: &mpsc::UnboundedSender<Msg>,
    stop: &watch::Receiver<bool>,
    trim: fn(&mut K),
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let writer = Writer::<K>::default();
    let store = writer.as_reader();
    let api = Api::<K>::all(client.clone());
    tokio::spawn(follow(api, writer, kind, trim, tx.clone(), stop.clone()));
    store
}

/// Only what the translation reads of a pod (its name, annotations,
/// ServiceAccount, container ports and phase): thousands of pods stay small.
fn trim_pod(pod: &mut Pod) {
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    pod.metadata.labels = None;
    pod.metadata.owner_references = None;
    if let Some(spec) = &mut pod.spec {
        let containers = spec
            .containers
            .iter_mut()
            .map(|c| Container {
                name: std::mem::take(&mut c.name),
                ports: c.ports.take(),
                ..Container::default()
            })
            .collect();
        *spec = PodSpec {
            service_account_name: spec.service_account_name.take(),
            containers,
            ..PodSpec::default()
        };
    }
    if let Some(status) = &mut pod.status {
        *status = PodStatus {
            phase: status.phase.take(),
            ..PodStatus::default()
        };
    }
}

/// Whether an error says the kind's API does not exist (404).
fn not_found(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404)
}

/// Whether an error says the resource version expired (410 Gone).
fn gone(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(s) => s.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 410,
        _ => false,
    }
}

/// Follows one kind into its store until `stop`.
async fn follow<K>(
    api: Api<K>,
    mut writer: Writer<K>,
    kind: usize,
    trim: fn(&mut K),
    tx: mpsc::UnboundedSender<Msg>,
    mut stop: watch::Receiver<bool>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let name = KINDS[kind];
    let mut failures: u32 = 0;
    let mut absent = false;
    'restart: loop {
        let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
        loop {
            let next = tokio::select! {
                _ = stopped(&mut stop) => return,
                next = events.next() => next,
            };
            let Some(next) = next else { continue 'restart };
            let event = match next {
                Ok(event) => event,
                Err(e) if not_found(&e) => {
                    if !absent {
                        tracing::info!(kind = name, "not installed in the cluster: read as empty");
                        absent = true;
                        // Empty the store (it may have had objects before).
                        writer.apply_watcher_event(&Event::Init);
                        writer.apply_watcher_event(&Event::InitDone);
                        let _ = tx.send(Msg::Synced(kind));
                    }
                    tokio::select! {
                        _ = stopped(&mut stop) => return,
                        _ = tokio::time::sleep(ABSENT_RETRY) => continue 'restart,
                    }
                }
                Err(e) if gone(&e) => {
                    tracing::debug!(kind = name, error = %e, "resource version expired: relisting");
                    if matches!(e, watcher::Error::WatchError(_)) {
                        continue; // the watcher relists by itself
                    }
                    // An HTTP 410 answering a watch (kube reads it as an
                    // error inside the watch's stream): the watcher would
                    // resume from the same expired version. Start over.
                    continue 'restart;
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures);
                    tracing::warn!(kind = name, error = %e, retry_in = ?wait, "watch failed");
                    tokio::select! {
                        _ = stopped(&mut stop) => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            failures = 0;
            let event = event.modify(|o| {
                o.meta_mut().managed_fields = None;
                trim(o);
            });
            writer.apply_watcher_event(&event);
            let msg = match event {
                Event::Init | Event::InitApply(_) => continue,
                Event::InitDone => {
                    absent = false;
                    Msg::Synced(kind)
                }
                Event::Apply(_) | Event::Delete(_) => Msg::Changed,
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    }
}

/// 0.5 s doubling to 30 s.
fn backoff(failures: u32) -> Duration {
    let ms = 500u64.saturating_mul(1 << failures.min(6).saturating_sub(1));
    Duration::from_millis(ms.min(30_000))
}

async fn rebuild_loop(
    stores: Stores,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    opts: Options,
    source: Arc<MeshSource>,
    ready: impl FnOnce() + Send,
    mut stop: watch::Receiver<bool>,
) {
    let mut synced = [false; KINDS.len()];
    let mut ready = Some(ready);
    let mut reported: BTreeSet<ObjectProblem> = BTreeSet::new();
    loop {
        let first = tokio::select! {
            _ = stopped(&mut stop) => return,
            m = rx.recv() => m,
        };
        let Some(first) = first else { return };
        let seen = Instant::now();
        note(&mut synced, first);
        let deadline = seen + MAX_DELAY;
        loop {
            let quiet = (Instant::now() + DEBOUNCE).min(deadline);
            tokio::select! {
                _ = stopped(&mut stop) => return,
                m = rx.recv() => match m {
                    Some(m) => note(&mut synced, m),
                    None => return,
                },
                _ = tokio::time::sleep_until(quiet) => break,
            }
        }
        if synced.iter().any(|s| !s) {
            continue;
        }
        let cluster = stores.cluster();
        let (opts, src) = (opts.clone(), source.clone());
        let built = tokio::task::spawn_blocking(move || {
            translate::translate(&cluster, &opts, |m| src.check(m))
        })
        .await;
        let Ok(t) = built else { continue };
        let problems: BTreeSet<ObjectProblem> = t.problems.iter().cloned().collect();
        for p in problems.difference(&reported) {
            tracing::warn!(problem = %p, "left out of the mesh");
        }
        if problems != reported {
            source.set_left_out(problems.iter().map(ToString::to_string).collect());
            reported = problems;
        }
        if !t.fatal.is_empty() {
            source.offer(Err(t.fatal), seen);
            continue;
        }
        // The source skips a mesh it serves already (counted `unchanged`).
        let src = source.clone();
        let _ = tokio::task::spawn_blocking(move || src.offer(Ok(t.mesh), seen)).await;
        if let Some(ready) = ready.take() {
            tracing::info!("the cluster is synced: ready");
            ready();
        }
    }
}

fn note(synced: &mut [bool; KINDS.len()], m: Msg) {
    if let Msg::Synced(kind) = m {
        synced[kind] = true;
    }
}

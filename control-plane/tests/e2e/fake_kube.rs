//! A small fake Kubernetes API server on loopback, for the Kubernetes
//! source's tests: it serves the list (`GET /api/v1/services?limit=500&...`)
//! and watch (`?watch=true&resourceVersion=N`, JSON lines of
//! `{"type": "ADDED", "object": {...}}`, a BOOKMARK first) requests of the
//! kinds it has, in the real API's shapes (List kinds with
//! `metadata.resourceVersion`, one resource version counter for all
//! objects), from fixtures under `tests/k8s/fixtures/`. A kind it does not
//! have answers `404 page not found`, as the real API does for an API group
//! that is not installed.
//!
//! Tests change objects ([`FakeKube::apply`]) and expire watches
//! ([`FakeKube::expire`]): an `ERROR` event with a `410 Expired` Status on
//! the open watch, or the open watch closed and the next one answered with
//! HTTP 410, as after an etcd compaction.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The fixtures directory.
pub fn fixture(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/k8s/fixtures/");
    let text = std::fs::read_to_string(format!("{path}{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub const SERVICES: &str = "/api/v1/services";
pub const PODS: &str = "/api/v1/pods";
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
pub const HTTPROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
pub const SERVICE_POLICIES: &str = "/apis/policy.remora.io/v1alpha1/servicepolicies";

/// How a watch expires.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expiry {
    /// An `ERROR` event (Status 410, reason Expired) on the open watch.
    ErrorEvent,
    /// The open watch ends; the next watch request gets HTTP 410.
    HttpGone,
}

struct Kind {
    list_kind: String,
    api_version: String,
    objects: BTreeMap<(String, String), Value>,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    /// The next watch request gets HTTP 410.
    gone_next: bool,
    /// Lists fail with a 500 (an API server whose etcd times out).
    failing: bool,
    lists: usize,
    watches: usize,
}

#[derive(Default)]
struct State {
    rv: u64,
    kinds: BTreeMap<String, Kind>,
    /// (resource version, path, event line) of every change.
    history: Vec<(u64, String, Bytes)>,
}

#[derive(Clone)]
pub struct FakeKube {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn key(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&m["namespace"]), s(&m["name"]))
}

impl FakeKube {
    /// Serves the kinds of the List fixtures `lists` (path, file).
    pub async fn start(lists: &[(&str, &str)]) -> FakeKube {
        let mut state = State {
            rv: 1000,
            ..State::default()
        };
        for (path, file) in lists {
            let list = fixture(file);
            let objects = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| (key(o), o.clone()))
                .collect();
            let kind = Kind {
                list_kind: list["kind"].as_str().unwrap().to_string(),
                api_version: list["apiVersion"].as_str().unwrap().to_string(),
                objects,
                watchers: Vec::new(),
                gone_next: false,
                failing: false,
                lists: 0,
                watches: 0,
            };
            state.kinds.insert(path.to_string(), kind);
        }
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let fake = FakeKube {
            addr,
            state: Arc::new(Mutex::new(state)),
        };
        let server = fake.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = tcp.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let rsp = server.handle(&req);
                        async move { Ok::<_, Infallible>(rsp) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        fake
    }

    /// A kube Client of this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// A kubeconfig file's text pointing at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: 'http://{}'}}\n\
             users:\n- name: fake\n  user: {{token: fake}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\n\
             current-context: fake\n",
            self.addr
        )
    }

    /// Adds or changes an object (ADDED or MODIFIED to the open watches;
    /// with `quiet`, to none: as if it happened while they were expired).
    pub fn apply(&self, path: &str, mut obj: Value, quiet: bool) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let kind = st.kinds.get_mut(path).expect("a kind the fake serves");
        let kind_type = match kind.objects.insert(key(&obj), obj.clone()) {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        let line = Bytes::from(format!("{}\n", json!({"type": kind_type, "object": obj})));
        if !quiet {
            kind.watchers.retain(|w| w.send(line.clone()).is_ok());
        }
        st.history.push((rv, path.to_string(), line));
    }

    /// Expires the open watches of `path` (see [`Expiry`]).
    pub fn expire(&self, path: &str, how: Expiry) {
        let mut st = self.state.lock().unwrap();
        let rv = st.rv;
        let kind = st.kinds.get_mut(path).unwrap();
        match how {
            Expiry::ErrorEvent => {
                let mut status = fixture("expired-event.json");
                status["object"]["message"] = json!(format!("too old resource version: 1 ({rv})"));
                let line = Bytes::from(format!("{status}\n"));
                for w in kind.watchers.drain(..) {
                    let _ = w.send(line.clone());
                }
            }
            Expiry::HttpGone => {
                kind.gone_next = true;
                kind.watchers.clear();
            }
        }
        // Compacted: no watch can resume from before now.
        st.history.clear();
    }

    /// Makes the lists of `path` fail (500) or work again.
    pub fn fail(&self, path: &str, failing: bool) {
        self.state
            .lock()
            .unwrap()
            .kinds
            .get_mut(path)
            .unwrap()
            .failing = failing;
    }

    /// How many times `path` was listed.
    pub fn lists(&self, path: &str) -> usize {
        self.state.lock().unwrap().kinds[path].lists
    }

    /// How many watches of `path` were started.
    pub fn watches(&self, path: &str) -> usize {
        self.state.lock().unwrap().kinds[path].watches
    }

    fn handle(&self, req: &http::Request<Incoming>) -> http::Response<BoxBody<Bytes, Infallible>> {
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let path = req.uri().path().to_string();
        let mut st = self.state.lock().unwrap();
        let rv = st.rv;
        let Some(kind) = st.kinds.get_mut(&path) else {
            return respond(
                404,
                "text/plain; charset=utf-8",
                "404 page not found\n".into(),
            );
        };
        if query.get("watch").map(String::as_str) != Some("true") {
            kind.lists += 1;
            if kind.failing {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": "etcdserver: request timed out",
                    "reason": "InternalError", "code": 500});
                return respond(500, "application/json", status.to_string().into());
            }
            let items: Vec<&Value> = kind.objects.values().collect();
            let list = json!({
                "kind": kind.list_kind,
                "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            });
            return respond(200, "application/json", list.to_string().into());
        }
        kind.watches += 1;
        if std::mem::take(&mut kind.gone_next) {
            let status = fixture("expired-status.json");
            return respond(410, "application/json", status.to_string().into());
        }
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let object_kind = kind.list_kind.trim_end_matches("List").to_string();
        let bookmark = json!({"type": "BOOKMARK", "object": {
            "kind": object_kind, "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": rv.to_string()}}});
        let _ = tx.send(Bytes::from(format!("{bookmark}\n")));
        kind.watchers.push(tx.clone());
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        for (at, p, line) in &st.history {
            if *at > from && *p == path {
                let _ = tx.send(line.clone());
            }
        }
        drop(st);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(line)), rx))
        });
        let mut rsp = http::Response::new(BodyExt::boxed(StreamBody::new(frames)));
        rsp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        rsp
    }
}

fn respond(
    status: u16,
    content_type: &str,
    body: Bytes,
) -> http::Response<BoxBody<Bytes, Infallible>> {
    let mut rsp = http::Response::new(BodyExt::boxed(Full::new(body)));
    *rsp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    rsp.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    rsp
}

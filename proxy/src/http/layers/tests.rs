//! The synchronous layers as a table, without a socket: a request's
//! context built from a compiled config, then the steps in stack order.

use super::action::Action;
use super::message::Message;
use super::rate_limit::RateLimit;
use super::route::Route;
use super::timeout::RouteTimeout;
use super::Step;
use crate::http::call::{Answer, Call, Cx, Downstream, View};
use crate::http::error::ProxyError;
use crate::metrics::Metrics;
use crate::snapshot::{compile, load_materials, Snapshot};
use http::{header, Request, StatusCode};
use std::sync::Arc;

fn snapshot() -> Arc<Snapshot> {
    let yaml = "
admin: { address: 127.0.0.1:0 }
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: api
        match: { path: { prefix: /api } }
        backends: [{ name: a, weight: 1 }, { name: b, weight: 1 }]
        timeout: 2s
      - name: old
        match: { path: { prefix: /old } }
        redirect: { status: 301, path: /new }
      - name: home
        match: { path: { exact: / } }
        direct_response: { status: 200, body: hi }
backends:
  - name: a
    endpoints: [{ address: 127.0.0.1:1001 }]
  - name: b
    endpoints: [{ address: 127.0.0.1:1002 }]
";
    let config = remora_api::parse_yaml(yaml).unwrap();
    let materials = load_materials(&config).unwrap();
    Arc::new(compile(config, materials, None, &Metrics::new()).unwrap())
}

/// Runs the synchronous steps in stack order: the call, and the first
/// step's answer if one answered.
fn through(snapshot: &Arc<Snapshot>, uri: &str) -> (Call<()>, Option<Answer>) {
    let req = Request::get(uri)
        .header(header::HOST, "x")
        .body(())
        .unwrap();
    let down = Downstream::new("127.0.0.1:5000".parse().unwrap(), false);
    let cx = Box::new(Cx::new(
        View::new(snapshot.clone(), 0),
        std::sync::Arc::new(down),
        tokio::time::Instant::now(),
    ));
    let mut call = Call {
        req: Box::new(req),
        cx,
    };
    let steps: [&dyn Step<()>; 6] = [
        &Message,
        &RateLimit::Listener,
        &Route,
        &RateLimit::Route,
        &Action,
        &RouteTimeout,
    ];
    for step in steps {
        if let Some(answer) = step.step(&mut call) {
            return (call, Some(answer));
        }
    }
    (call, None)
}

#[test]
fn the_steps_route_answer_or_pick_a_backend() {
    let snapshot = snapshot();
    let (call, answer) = through(&snapshot, "/api/users");
    assert!(answer.is_none(), "forwarded");
    let view = &call.cx.view;
    assert_eq!(&*view.route().unwrap().name, "api");
    assert!(["a", "b"].contains(&&*view.backend().unwrap().name));
    assert!(view.route_metrics().is_some());
    assert!(
        call.cx.deadline.is_some(),
        "the route's timeout is a deadline"
    );

    let home = through(&snapshot, "/").1.unwrap().unwrap();
    assert_eq!(home.status(), StatusCode::OK);

    let old = through(&snapshot, "/old/page?q=1").1.unwrap().unwrap();
    assert_eq!(old.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(old.headers()[header::LOCATION], "http://x/new?q=1");

    let none = through(&snapshot, "/nowhere").1.unwrap();
    assert!(matches!(none, Err(ProxyError::NoRoute)));
}

#[test]
fn a_split_picks_every_backend_by_weight() {
    let snapshot = snapshot();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let (call, _) = through(&snapshot, "/api");
        seen.insert(call.cx.view.backend().unwrap().name.clone());
    }
    assert_eq!(seen.len(), 2);
}

//! `/explain?protocol=tcp`: where an opaque TCP connection would go.

use super::query::Query;
use super::{authorization, forward, Explanation, ListenerChoice, Policies};
use crate::http::router::RouteTrace;
use crate::listen::Plan;
use crate::snapshot::Snapshot;
use crate::tcp::{choice, Choice};

/// An opaque TCP connection to listener `index`: where
/// [`crate::tcp::choice`], the proxy's own choice, sends it.
pub(super) fn explain(
    snap: &Snapshot,
    index: usize,
    listener: ListenerChoice,
    q: &Query,
) -> Explanation {
    let table = &snap.listeners[index];
    let transparent = snap.config.listeners[index].original_destination;
    let mut plan = Plan::new(table);
    plan.destination = q.destination.filter(|_| transparent);
    let how = match plan.destination {
        Some(d) => format!("opaque TCP, redirected: the client dialed {d}"),
        None if transparent => "opaque TCP, not redirected (no destination given)".into(),
        None => "opaque TCP".into(),
    };
    let mut out = Explanation {
        version: snap.version.clone(),
        protocol: "tcp",
        listener,
        route: RouteTrace {
            hosts: how,
            steps: Vec::new(),
            chosen: None,
        },
        chosen_route: None,
        outcome: String::new(),
        policies: Policies {
            authorization: authorization(snap, index, None, q),
            ..Policies::default()
        },
        split: Vec::new(),
        chosen_backend: None,
        backends: Vec::new(),
        chosen_endpoint: None,
    };
    let mut rng = fastrand::Rng::new();
    out.outcome = match choice(&plan) {
        Some(Choice::LocalApp(app)) => {
            format!("to the local app at {app} (the port the client dialed), in plaintext")
        }
        Some(Choice::Endpoint(backend, ep)) => {
            let mut trace = backend.explain(&q.headers, &mut rng);
            trace.chosen = Some(ep.addr);
            trace.reason = "the original destination is this endpoint".into();
            out.backends.push(trace);
            out.chosen_backend = Some(backend.name.to_string());
            out.chosen_endpoint = Some(ep.addr);
            format!(
                "to endpoint {} of backend {} (the address dialed)",
                ep.addr, backend.name
            )
        }
        Some(Choice::Destination(d)) => {
            let route = &table.router.routes()[d.route as usize];
            out.chosen_route = Some(route.name.to_string());
            out.route.chosen = Some(d.route as usize);
            out.route.hosts = format!(
                "{}; route {} has it in match.destinations",
                out.route.hosts, route.name
            );
            forward(&mut out, &d.split, q);
            match (&out.chosen_backend, out.chosen_endpoint) {
                (Some(b), Some(e)) => {
                    format!("to backend {b} of route {}, endpoint {e}", route.name)
                }
                (Some(b), None) => {
                    format!("backend {b} has no endpoints: the connection is closed")
                }
                _ => "the route has no backends".into(),
            }
        }
        Some(Choice::Passthrough(dst)) => format!(
            "to the original destination {dst} directly, in plaintext (no endpoint or route of \
             the snapshot has it)"
        ),
        Some(Choice::TcpBackend(backend)) => {
            let trace = backend.explain(&q.headers, &mut rng);
            out.chosen_backend = Some(backend.name.to_string());
            out.chosen_endpoint = trace.chosen;
            out.backends.push(trace);
            match out.chosen_endpoint {
                Some(e) => format!("to backend {} (tcp_backend), endpoint {e}", backend.name),
                None => format!(
                    "backend {} has no endpoints: the connection is closed",
                    backend.name
                ),
            }
        }
        None if transparent => "closed: not redirected (addressed to the listener itself) and \
                                no tcp_backend; forwarding it to its own address would loop"
            .into(),
        None => "closed: the listener has no tcp_backend".into(),
    };
    if out.denied() {
        out.outcome = format!("refused by the authorization policy (else {})", out.outcome);
    }
    out
}

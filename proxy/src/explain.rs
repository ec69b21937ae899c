//! `/explain` on the admin port: which listener, route, backend and
//! endpoint a request would go to, and why, from the live snapshot, with no
//! request sent. Each step is explained by code next to what it explains
//! (`http/router/explain.rs`, `balance/explain.rs`); this module strings
//! them together in the order the layer stack (`http/stack.rs`) applies them, with the
//! policies the chosen route would apply. Nothing here runs on the request
//! path.

pub mod http;
pub mod query;
mod tcp;
pub mod text;

use crate::balance::BackendTrace;
use crate::http::router::{Action, Port, RouteTrace};
use crate::listen::Plan;
use crate::policy::authz::Peer;
use crate::snapshot::Snapshot;
use query::Query;
use remora_api as api;
use remora_api::ListenerProtocol;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};

/// Everything `/explain` answers, serialized as its JSON.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// The snapshot version explained.
    pub version: String,
    /// `http` (a request) or `tcp` (an opaque connection).
    pub protocol: &'static str,
    pub listener: ListenerChoice,
    pub route: RouteTrace,
    /// The chosen route's name; `None`: 404 no-route.
    pub chosen_route: Option<String>,
    /// What the proxy would do, in a sentence.
    pub outcome: String,
    pub policies: Policies,
    /// The route's traffic split: each backend with its weight and share.
    pub split: Vec<SplitEntry>,
    /// A draw of the split (a request's own draw is random by weight).
    pub chosen_backend: Option<String>,
    /// Every backend of the split, as its balancer sees it now.
    pub backends: Vec<BackendTrace>,
    /// The endpoint of the chosen backend a request would go to now.
    pub chosen_endpoint: Option<std::net::SocketAddr>,
}

impl Explanation {
    /// The caller is refused by the authorization policy.
    fn denied(&self) -> bool {
        self.policies
            .authorization
            .as_ref()
            .is_some_and(|a| !a.allowed)
    }
}

#[derive(Debug, Serialize)]
pub struct ListenerChoice {
    pub name: String,
    pub address: std::net::SocketAddr,
    pub reason: String,
}

/// The policies on the way, as configured (`null`: none).
#[derive(Debug, Default, Serialize)]
pub struct Policies {
    pub listener_rate_limit: Option<api::RateLimit>,
    pub route_rate_limit: Option<api::RateLimit>,
    pub fault: Option<api::Fault>,
    pub authorization: Option<AuthzVerdict>,
    pub retry: Option<api::RetryPolicy>,
    pub timeout: Option<api::Duration>,
    pub idle_timeout: Option<api::Duration>,
}

#[derive(Debug, Serialize)]
pub struct AuthzVerdict {
    /// `route` (the route's own policy) or `listener` (the inbound default).
    pub policy: &'static str,
    pub allowed: bool,
    pub reason: String,
    pub rules: api::Authorization,
}

#[derive(Debug, Serialize)]
pub struct SplitEntry {
    pub backend: String,
    pub weight: u32,
    pub percent: f64,
}

/// Explains `q` against `snap`; `Err` names what in the query cannot be
/// explained (an unknown listener, a TCP-only listener).
pub fn explain(snap: &Snapshot, q: &Query) -> Result<Explanation, String> {
    let (index, listener, tcp) = choose_listener(snap, q)?;
    if tcp {
        return Ok(tcp::explain(snap, index, listener, q));
    }
    if q.host.is_empty() {
        return Err("host is required (or a header host:name)".into());
    }
    let table = &snap.listeners[index];
    let route_cfg = |i: usize| &snap.config.listeners[index].routes[i];
    let mut trace = table.router.explain(
        &q.host,
        Port::named(&q.port),
        &q.method,
        &q.path,
        &q.headers,
    );
    let transparent = snap.config.listeners[index].original_destination;
    let redirected = q.destination.filter(|_| transparent);
    if let (Some(i), Some(d)) = (trace.chosen, redirected) {
        let route = &table.router.routes()[i];
        if route.names_another_port(d) {
            trace.hosts = format!(
                "{}; {} is for another port of its destinations' address, not {d}",
                trace.hosts, route.name
            );
            trace.chosen = None;
        }
    }
    if let (None, Some(d)) = (trace.chosen, redirected) {
        table
            .router
            .explain_at(&mut trace, d, &q.method, &q.path, &q.headers);
    }
    let mut out = Explanation {
        version: snap.version.clone(),
        protocol: "http",
        listener,
        chosen_route: None,
        outcome: String::new(),
        policies: Policies {
            listener_rate_limit: table.rate_limit.as_ref().map(|(c, _)| c.clone()),
            ..Policies::default()
        },
        split: Vec::new(),
        chosen_backend: None,
        backends: Vec::new(),
        chosen_endpoint: None,
        route: trace,
    };
    let Some(i) = out.route.chosen else {
        out.outcome = match redirected {
            Some(d) => format!("no route matches: on to the original destination {d}"),
            None => "no route matches: 404 no-route".into(),
        };
        return Ok(out);
    };
    let route = &table.router.routes()[i];
    let cfg = route_cfg(i);
    out.chosen_route = Some(route.name.to_string());
    let p = &mut out.policies;
    p.route_rate_limit = cfg.rate_limit.clone();
    p.fault = cfg.fault.clone();
    p.retry = cfg.retry.clone();
    p.timeout = cfg.timeout;
    p.idle_timeout = cfg.idle_timeout;
    let route_policy = route.authz.as_ref().zip(cfg.authorization.as_ref());
    p.authorization = authorization(snap, index, route_policy, q);
    out.outcome = match &route.action {
        Action::Direct { status, .. } => format!("answered by the proxy: {status}"),
        Action::Redirect(rd) => format!("redirected with {}", rd.status),
        Action::Forward(split) => {
            forward(&mut out, split, q);
            match (&out.chosen_backend, out.chosen_endpoint) {
                (Some(b), Some(e)) => format!("forwarded to backend {b}, endpoint {e}"),
                (Some(b), None) => format!("backend {b} has no endpoints: 503 no-endpoints"),
                _ => "the route has no backends".into(),
            }
        }
    };
    if out.denied() {
        out.outcome = format!("403 forbidden (else {})", out.outcome);
    }
    Ok(out)
}

/// On an inbound listener: whether the query's client may pass, by the
/// route's policy when it has one, else the listener's.
fn authorization(
    snap: &Snapshot,
    index: usize,
    route: Option<(&crate::policy::authz::Authz, &api::Authorization)>,
    q: &Query,
) -> Option<AuthzVerdict> {
    let inbound = snap.listeners[index].inbound.as_ref()?;
    let in_cfg = snap.config.listeners[index].inbound.as_ref()?;
    let (policy, authz, rules) = match route {
        Some((a, rules)) => ("route", a, rules.clone()),
        None => ("listener", &inbound.authz, in_cfg.authorization.clone()),
    };
    let addr = q.client_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let allowed = authz.allows(Peer {
        id: q.client_id.as_deref(),
        addr,
    });
    let who = q
        .client_id
        .as_deref()
        .unwrap_or("a client without a mesh identity");
    let mut reason = format!(
        "{who} at {addr} is {} by the {policy}'s policy",
        if allowed { "allowed" } else { "denied" }
    );
    if q.client_addr.is_none() && rules.allow.iter().any(|r| !r.networks.is_empty()) {
        // The networks rules were asked about an address nobody has.
        reason.push_str(" (no client_addr given: its networks rules were checked for 0.0.0.0)");
    }
    Some(AuthzVerdict {
        policy,
        allowed,
        reason,
        rules,
    })
}

/// The split's shares, a draw of it, and each backend's balancer.
fn forward(out: &mut Explanation, split: &crate::http::router::Split, q: &Query) {
    let mut rng = fastrand::Rng::new();
    let total: u32 = split.weights().map(|(_, w)| w).sum();
    for (b, w) in split.weights() {
        out.split.push(SplitEntry {
            backend: b.name.to_string(),
            weight: w,
            percent: if total == 0 {
                0.0
            } else {
                f64::from(w) * 100.0 / f64::from(total)
            },
        });
        out.backends.push(b.explain(&q.headers, &mut rng));
    }
    if split.backends().next().is_none() {
        return;
    }
    let chosen = split.pick(&mut rng);
    out.chosen_backend = Some(chosen.name.to_string());
    out.chosen_endpoint = out
        .backends
        .iter()
        .find(|t| *t.backend == *chosen.name)
        .and_then(|t| t.chosen);
}

/// The listener named in the query, else the first that serves HTTP (with
/// `protocol=tcp`: the first that forwards opaque TCP); and whether a TCP
/// connection is explained (`protocol=tcp`, or a listener that forwards
/// only TCP).
fn choose_listener(snap: &Snapshot, q: &Query) -> Result<(usize, ListenerChoice, bool), String> {
    let cfgs = &snap.config.listeners;
    let names = || {
        cfgs.iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let protocol = |i: usize| Plan::protocol(&snap.listeners[i]);
    let (i, reason) = match &q.listener {
        Some(name) => {
            let i = cfgs
                .iter()
                .position(|l| l.name == *name)
                .ok_or_else(|| format!("no listener is named `{name}`; listeners: {}", names()))?;
            (i, "named in the query".to_string())
        }
        None => {
            let wanted = |i: &usize| match q.tcp {
                Some(true) => protocol(*i) != ListenerProtocol::Http,
                _ => protocol(*i) != ListenerProtocol::Tcp,
            };
            let what = if q.tcp == Some(true) {
                "forwards opaque TCP"
            } else {
                "serves HTTP"
            };
            let i = (0..cfgs.len())
                .find(wanted)
                .ok_or_else(|| format!("no listener {what}"))?;
            (
                i,
                format!(
                    "the first listener that {what} (of: {}); choose with listener=",
                    names()
                ),
            )
        }
    };
    let name = &cfgs[i].name;
    let tcp = match (q.tcp, protocol(i)) {
        (Some(false), ListenerProtocol::Tcp) => {
            return Err(format!(
                "listener `{name}` forwards opaque TCP only: no HTTP routes (explain a \
                 connection with protocol=tcp)"
            ))
        }
        (Some(true), ListenerProtocol::Http) => {
            return Err(format!("listener `{name}` serves HTTP only: no opaque TCP"))
        }
        (Some(tcp), _) => tcp,
        (None, p) => p == ListenerProtocol::Tcp,
    };
    Ok((
        i,
        ListenerChoice {
            name: cfgs[i].name.clone(),
            address: cfgs[i].address,
            reason,
        },
        tcp,
    ))
}

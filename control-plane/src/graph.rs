//! The service graph (admin `/graph.json`, drawn by `/graph`): workloads
//! as nodes, calls as edges, each edge with its requests per second,
//! success rate and p99 latency over the last report interval. Computed
//! from the stats reports proxies send on their subscriptions
//! (`remora-stats-interval`, [`remora_api::stats`]): the difference
//! between a proxy's last two reports, divided by the time between them,
//! summed over the replicas of a workload. An edge is what a workload's
//! `outbound` listener sent to a backend (a service of the mesh; answers
//! the proxy gave itself count for their route's backend); a service is
//! drawn as the node of its name.

use crate::compile::OUTBOUND;
use crate::proxies::ProxyState;
use remora_api::stats::{quantile, Series, StatsReport};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Proxies that sent two reports (the ones measured).
    pub reporting: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    /// Connected proxies of this workload (0 for a service no workload of
    /// that name runs).
    pub proxies: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// Requests answered per second over the last interval.
    pub rps: f64,
    /// Share of those answers that were not 5xx; `null` without requests.
    pub success: Option<f64>,
    /// 99th percentile of their latency, milliseconds; `null` without.
    pub p99_ms: Option<f64>,
    /// Answers in the last interval, and how many of them were 5xx.
    pub requests: u64,
    pub failures: u64,
}

/// What one edge summed over proxies and routes.
#[derive(Default)]
struct Sum {
    rps: f64,
    requests: u64,
    failures: u64,
    timed: u64,
    latency: Vec<u64>,
}

/// The graph of `workloads` (the mesh's) from what `proxies` reported.
pub fn graph<'a>(workloads: impl IntoIterator<Item = &'a str>, proxies: &[ProxyState]) -> Graph {
    let mut nodes: BTreeMap<String, usize> =
        workloads.into_iter().map(|w| (w.to_string(), 0)).collect();
    let mut sums: BTreeMap<(String, String), Sum> = BTreeMap::new();
    let mut bounds: &[f64] = &[];
    let mut reporting = 0;
    for p in proxies {
        *nodes.entry(p.workload.clone()).or_default() += 1;
        let (Some((t0, prev)), Some((t1, last))) = (&p.stats.prev, &p.stats.last) else {
            continue;
        };
        let seconds = t1.duration_since(*t0).as_secs_f64();
        if seconds <= 0.0 {
            continue;
        }
        reporting += 1;
        if bounds.is_empty() {
            bounds = &last.buckets;
        }
        for s in last.series.iter().filter(|s| s.listener == OUTBOUND) {
            let Some(to) = target(last, s) else {
                continue;
            };
            let d = delta(s, before(prev, s));
            let sum = sums
                .entry((p.workload.clone(), to.to_string()))
                .or_default();
            sum.rps += d.responses() as f64 / seconds;
            sum.requests += d.responses();
            // A gRPC server's failure rides an HTTP 200.
            sum.failures += d.status[4] + d.grpc_failures;
            sum.timed += d.count;
            if sum.latency.len() < d.latency.len() {
                sum.latency.resize(d.latency.len(), 0);
            }
            for (a, b) in sum.latency.iter_mut().zip(&d.latency) {
                *a += b;
            }
        }
    }
    let edges: Vec<Edge> = sums
        .into_iter()
        .map(|((from, to), s)| Edge {
            from,
            to,
            rps: s.rps,
            success: (s.requests > 0).then(|| (s.requests - s.failures) as f64 / s.requests as f64),
            p99_ms: quantile(0.99, bounds, &s.latency, s.timed).map(|q| q * 1000.0),
            requests: s.requests,
            failures: s.failures,
        })
        .collect();
    let targets: BTreeSet<&str> = edges.iter().map(|e| e.to.as_str()).collect();
    for t in targets {
        nodes.entry(t.to_string()).or_default();
    }
    Graph {
        nodes: nodes
            .into_iter()
            .map(|(name, proxies)| Node { name, proxies })
            .collect(),
        edges,
        reporting,
    }
}

/// The service a series' requests were for: its backend; for answers the
/// proxy gave before choosing one (a fault, a rate limit: no backend), the
/// backend its route sends to in another series, else the route's name;
/// `None` without a route either (no route matched: no call).
fn target<'a>(report: &'a StatsReport, s: &'a Series) -> Option<&'a str> {
    if !s.backend.is_empty() {
        return Some(&s.backend);
    }
    if s.route.is_empty() {
        return None;
    }
    let routed = report
        .series
        .iter()
        .find(|o| o.listener == s.listener && o.route == s.route && !o.backend.is_empty());
    Some(routed.map_or(s.route.as_str(), |o| o.backend.as_str()))
}

/// The series of `report` with the same listener, route and backend.
fn before<'a>(report: &'a StatsReport, s: &Series) -> Option<&'a Series> {
    report
        .series
        .iter()
        .find(|p| p.listener == s.listener && p.route == s.route && p.backend == s.backend)
}

/// What `now` counted since `then` (everything, when `then` is `None`).
fn delta(now: &Series, then: Option<&Series>) -> Series {
    let Some(then) = then else {
        return now.clone();
    };
    let mut d = now.clone();
    for (a, b) in d.status.iter_mut().zip(then.status) {
        *a = a.saturating_sub(b);
    }
    d.errors = d.errors.saturating_sub(then.errors);
    d.grpc_failures = d.grpc_failures.saturating_sub(then.grpc_failures);
    d.count = d.count.saturating_sub(then.count);
    for (a, b) in d.latency.iter_mut().zip(&then.latency) {
        *a = a.saturating_sub(*b);
    }
    d
}

/// The `/graph` page: `graph` drawn at once, then fetched again from
/// `/graph.json` every few seconds. One HTML file, no external assets.
pub fn page(graph: &Graph) -> String {
    // `<` escaped: the JSON sits inside a <script> element.
    let json = serde_json::to_string(graph)
        .unwrap_or_default()
        .replace('<', "\\u003c");
    include_str!("graph/page.html").replace("/*GRAPH*/null", &json)
}

#[cfg(test)]
mod tests;

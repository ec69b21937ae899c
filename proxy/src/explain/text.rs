//! `/explain?format=text`: the same explanation for a person at a terminal,
//! one step a line, in the order the proxy takes them.

use super::Explanation;
use std::fmt::Write;

pub fn render(e: &Explanation) -> String {
    let mut s = String::new();
    let mut line = |text: String| {
        s.push_str(&text);
        s.push('\n');
    };
    line(format!("snapshot  {}", e.version));
    line(format!(
        "listener  {} ({}): {}",
        e.listener.name, e.listener.address, e.listener.reason
    ));
    if let Some(rl) = &e.policies.listener_rate_limit {
        line(format!(
            "  listener rate limit: {} req/s",
            rl.requests_per_second
        ));
    }
    if e.protocol == "tcp" {
        line(format!("opaque    {}", e.route.hosts));
    } else {
        line(format!("routes    {}", e.route.hosts));
    }
    for step in &e.route.steps {
        let mark = if step.matched { "✓" } else { "✗" };
        line(format!("  {mark} {:<20} {}", step.route, step.reason));
    }
    let p = &e.policies;
    if e.chosen_route.is_some() && e.protocol == "http" {
        let mut pol = Vec::new();
        if let Some(rl) = &p.route_rate_limit {
            pol.push(format!("rate limit {} req/s", rl.requests_per_second));
        }
        if let Some(f) = &p.fault {
            if let Some(d) = &f.delay {
                pol.push(format!("fault delay {} on {}%", d.duration, d.percent));
            }
            if let Some(a) = &f.abort {
                pol.push(format!("fault abort {} on {}%", a.status, a.percent));
            }
        }
        if let Some(r) = &p.retry {
            pol.push(format!("retry {} attempts", r.attempts));
        }
        if let Some(t) = &p.timeout {
            pol.push(format!("timeout {t}"));
        }
        if let Some(t) = &p.idle_timeout {
            pol.push(format!("idle timeout {t}"));
        }
        let pol = if pol.is_empty() {
            "none".to_string()
        } else {
            pol.join(", ")
        };
        line(format!("policies  {pol}"));
    }
    if let Some(a) = &p.authorization {
        line(format!("authz     {}", a.reason));
    }
    if !e.split.is_empty() {
        let split: Vec<String> = e
            .split
            .iter()
            .map(|b| format!("{} {}%", b.backend, round(b.percent)))
            .collect();
        line(format!("split     {}", split.join(", ")));
    }
    for b in &e.backends {
        line(format!(
            "backend   {} ({}): {}",
            b.backend, b.balancer, b.reason
        ));
        for ep in &b.endpoints {
            let mut state = String::new();
            match ep.ejected_for_seconds {
                Some(t) => write!(state, "ejected for {}s more", round(t)).unwrap_or(()),
                None if !ep.healthy => state.push_str("unhealthy"),
                None => state.push_str("available"),
            }
            let chosen = if b.chosen == Some(ep.address) {
                "→"
            } else {
                " "
            };
            line(format!(
                "  {chosen} {} weight {} {state}, {} in flight, {:.1} ms",
                ep.address, ep.weight, ep.in_flight, ep.latency_ms
            ));
        }
    }
    line(format!("outcome   {}", e.outcome));
    s
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

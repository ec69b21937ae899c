//! Snapshot deltas: the changes that turn one config into the next, so a
//! change to one service of a 10k-service snapshot travels as a few hundred
//! bytes and is applied without decoding the other 9,999.
//!
//! A delta names routes and backends by name. [`Delta::apply`] first removes
//! (`remove`), then upserts in list order: a route or backend that exists is
//! replaced where it stands; a new route goes right after the route upserted
//! before it in the same list, or at the end of the listener's routes when it
//! is the first of its list; a new backend goes at the end. The producer (the
//! control plane) sends every route of a changed service, in order, so a
//! service's routes keep their order; routes of different services match
//! different hosts, so their relative order does not matter.
//!
//! Applying is strict: removing a route or backend that does not exist, or
//! naming a listener that does not exist, is an error, because it means the
//! receiver does not hold the config the delta was made from; so is a route
//! named twice in one upsert list, which no producer sends.

use crate::{Backend, Config, Route};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The changes from one config to the next (listeners' other settings,
/// admin, identity and drain timeout are unchanged; a change to those is
/// sent as a whole snapshot).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// Route changes, by listener name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, RoutesDelta>,
    /// Backends to remove, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_backends: Vec<String>,
    /// Backends to add or replace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
}

/// One listener's route changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesDelta {
    /// Routes to remove, by name (applied first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Routes to add or replace, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<Route>,
}

impl Delta {
    /// Nothing changes.
    pub fn is_empty(&self) -> bool {
        self.routes
            .values()
            .all(|r| r.remove.is_empty() && r.upsert.is_empty())
            && self.remove_backends.is_empty()
            && self.backends.is_empty()
    }

    /// How many routes and backends it removes or carries.
    pub fn len(&self) -> usize {
        self.routes
            .values()
            .map(|r| r.remove.len() + r.upsert.len())
            .sum::<usize>()
            + self.remove_backends.len()
            + self.backends.len()
    }

    /// Applies the delta to `config`; on error (see the module docs),
    /// `config` may be half changed: apply to a copy.
    pub fn apply(&self, config: &mut Config) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (name, change) in &self.routes {
            match config.listeners.iter_mut().find(|l| l.name == *name) {
                Some(l) => change.apply(&mut l.routes, name, &mut errors),
                None => errors.push(format!("delta: no listener is named `{name}`")),
            }
        }
        let remove: HashSet<&str> = self.remove_backends.iter().map(String::as_str).collect();
        let before = config.backends.len();
        config
            .backends
            .retain(|b| !remove.contains(b.name.as_str()));
        if before - config.backends.len() != remove.len() {
            let have: HashSet<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
            for r in &self.remove_backends {
                if !have.contains(r.as_str()) {
                    errors.push(format!("delta: no backend `{r}` to remove"));
                }
            }
        }
        let mut at: HashMap<String, usize> = config
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.clone(), i))
            .collect();
        for b in &self.backends {
            match at.get(&b.name) {
                Some(&i) => config.backends[i] = b.clone(),
                None => {
                    at.insert(b.name.clone(), config.backends.len());
                    config.backends.push(b.clone());
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl RoutesDelta {
    fn apply(&self, routes: &mut Vec<Route>, listener: &str, errors: &mut Vec<String>) {
        if !self.remove.is_empty() {
            let remove: HashSet<&str> = self.remove.iter().map(String::as_str).collect();
            let kept = routes.len();
            routes.retain(|r| !remove.contains(r.name.as_str()));
            if kept - routes.len() != remove.len() {
                errors.push(format!(
                    "delta: listener `{listener}` does not have every route it removes ({})",
                    self.remove.join(", ")
                ));
                return;
            }
        }
        if self.upsert.is_empty() {
            return;
        }
        // A name twice has no one place (and twice new, the copies would
        // follow each other without end).
        let mut names = HashSet::new();
        for r in &self.upsert {
            if !names.insert(r.name.as_str()) {
                errors.push(format!(
                    "delta: listener `{listener}` upserts route `{}` twice",
                    r.name
                ));
                return;
            }
        }
        let at: HashMap<&str, usize> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        // New routes, by the route they follow (`None`: the end).
        let mut after: HashMap<Option<&str>, &Route> = HashMap::new();
        let mut replaced: Vec<(usize, &Route)> = Vec::new();
        let mut previous: Option<&str> = None;
        for r in &self.upsert {
            match at.get(r.name.as_str()) {
                Some(&i) => replaced.push((i, r)),
                None => {
                    after.insert(previous, r);
                }
            }
            previous = Some(r.name.as_str());
        }
        for (i, r) in replaced {
            routes[i] = r.clone();
        }
        if after.is_empty() {
            return;
        }
        let old = std::mem::take(routes);
        routes.reserve(old.len() + after.len());
        let follow = |routes: &mut Vec<Route>, mut name: String| {
            while let Some(next) = after.get(&Some(name.as_str())) {
                routes.push((*next).clone());
                name = next.name.clone();
            }
        };
        for r in old {
            let name = r.name.clone();
            routes.push(r);
            follow(routes, name);
        }
        if let Some(first) = after.get(&None) {
            routes.push((*first).clone());
            follow(routes, first.name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: &str) -> Route {
        let yaml = format!(
            "listeners: [{{name: l, address: '127.0.0.1:1', routes: [{{name: {name}, match: {{hosts: [{host}]}}, backends: [{{name: b}}]}}]}}]\nbackends: [{{name: b, endpoints: [{{address: '127.0.0.1:2'}}]}}]"
        );
        crate::parse_yaml(&yaml).unwrap().listeners[0].routes[0].clone()
    }

    fn config(routes: &[(&str, &str)]) -> Config {
        let mut c = crate::parse_yaml(
            "listeners: [{name: l, address: '127.0.0.1:1', routes: []}]\nbackends: [{name: b, endpoints: [{address: '127.0.0.1:2'}]}]",
        )
        .unwrap();
        c.listeners[0].routes = routes.iter().map(|(n, h)| route(n, h)).collect();
        c
    }

    fn names(c: &Config) -> Vec<&str> {
        c.listeners[0]
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .collect()
    }

    fn upsert(remove: &[&str], upsert: &[(&str, &str)]) -> Delta {
        Delta {
            routes: BTreeMap::from([(
                "l".to_string(),
                RoutesDelta {
                    remove: remove.iter().map(|s| s.to_string()).collect(),
                    upsert: upsert.iter().map(|(n, h)| route(n, h)).collect(),
                },
            )]),
            ..Delta::default()
        }
    }

    #[test]
    fn routes_are_replaced_in_place_and_new_ones_follow_their_predecessor() {
        let mut c = config(&[("a.x", "a"), ("b.x", "b"), ("b.y", "b"), ("c", "c")]);
        upsert(&[], &[("b.x", "b"), ("b.new", "b"), ("b.y", "b")])
            .apply(&mut c)
            .unwrap();
        assert_eq!(names(&c), ["a.x", "b.x", "b.new", "b.y", "c"]);
        // A new service's routes go at the end, in order.
        upsert(&["c"], &[("d.1", "d"), ("d.2", "d")])
            .apply(&mut c)
            .unwrap();
        assert_eq!(names(&c), ["a.x", "b.x", "b.new", "b.y", "d.1", "d.2"]);
        // Reordered: everything removed, then added back in the new order.
        upsert(&["b.x", "b.new", "b.y"], &[("b.y", "b"), ("b.x", "b")])
            .apply(&mut c)
            .unwrap();
        assert_eq!(names(&c), ["a.x", "d.1", "d.2", "b.y", "b.x"]);
    }

    #[test]
    fn backends_are_replaced_added_and_removed() {
        let mut c = config(&[]);
        let mut b2 = c.backends[0].clone();
        b2.name = "b2".into();
        let mut b = c.backends[0].clone();
        b.connect_timeout = "3s".parse().unwrap();
        Delta {
            backends: vec![b.clone(), b2.clone()],
            ..Delta::default()
        }
        .apply(&mut c)
        .unwrap();
        assert_eq!(c.backends, [b, b2.clone()]);
        Delta {
            remove_backends: vec!["b".into()],
            ..Delta::default()
        }
        .apply(&mut c)
        .unwrap();
        assert_eq!(c.backends, [b2]);
    }

    #[test]
    fn a_delta_from_another_config_is_refused() {
        let mut c = config(&[("a", "a")]);
        let errors = upsert(&["zz"], &[]).apply(&mut c).unwrap_err();
        assert!(
            errors[0].contains("does not have every route"),
            "{errors:?}"
        );
        let mut d = upsert(&[], &[]);
        d.routes = BTreeMap::from([("nope".to_string(), RoutesDelta::default())]);
        d.remove_backends = vec!["gone".into()];
        let errors = d.apply(&mut c).unwrap_err();
        assert_eq!(
            errors,
            [
                "delta: no listener is named `nope`",
                "delta: no backend `gone` to remove"
            ]
        );
    }

    /// Found by the `delta` fuzz target: a route named twice in one upsert
    /// list. Twice new, `apply` never returned (each copy followed the
    /// other); twice existing, the last silently won. Both are refused now.
    #[test]
    fn a_route_upserted_twice_is_refused() {
        for name in ["new", "a"] {
            let mut c = config(&[("a", "a")]);
            let errors = upsert(&[], &[(name, "x"), (name, "y")])
                .apply(&mut c)
                .unwrap_err();
            assert_eq!(
                errors,
                [format!("delta: listener `l` upserts route `{name}` twice")]
            );
        }
    }

    #[test]
    fn the_wire_form_leaves_out_what_is_empty() {
        let d = upsert(&["a"], &[]);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"routes":{"l":{"remove":["a"]}}}"#
        );
        let back: Delta = serde_json::from_str(r#"{"routes":{"l":{"remove":["a"]}}}"#).unwrap();
        assert_eq!(back, d);
    }
}

//! Swapping a new config in: the one path every source (file, control
//! plane) takes after it has a validated config.

use super::{load_materials, Store};
use crate::metrics::Metrics;
use remora_api::{Config, Problem};
use std::sync::Arc;

#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Applied(String),
    Unchanged,
}

/// Loads the files a validated `config` names, compiles it against the
/// running snapshot (whose endpoint state it keeps) and swaps it in; or
/// says it is unchanged; or returns every problem and changes nothing.
/// The version is the config's own (see [`super::version`]).
pub fn swap_in(
    store: &Store,
    metrics: &Arc<Metrics>,
    config: Config,
) -> Result<Reload, Vec<Problem>> {
    swap_in_versioned(store, metrics, config, None)
}

/// [`swap_in`] for a config that comes with a version of its content (the
/// control plane's): the local version is derived from it and the files'
/// digest ([`super::content_version`]) instead of from the whole config
/// serialized. `None` versions the config itself, as [`swap_in`] does.
pub fn swap_in_versioned(
    store: &Store,
    metrics: &Arc<Metrics>,
    config: Config,
    content_version: Option<&str>,
) -> Result<Reload, Vec<Problem>> {
    let current = store.load_full();
    check_listeners_unchanged(&current.config, &config)?;
    let materials = load_materials(&config)?;
    let version = match content_version {
        Some(v) => super::content_version(v, materials.digest()),
        None => super::version(&config, materials.digest()),
    };
    if version == current.version {
        return Ok(Reload::Unchanged);
    }
    let next = super::compile::compile_as(config, materials, version, Some(&current), metrics)?;
    let version = next.version.clone();
    store.store(Arc::new(next));
    // The replaced snapshot is freed here, with `current` (unless a
    // request still holds it): its backends that were kept live on.
    Ok(Reload::Applied(version))
}

fn check_listeners_unchanged(running: &Config, next: &Config) -> Result<(), Vec<Problem>> {
    let key = |c: &Config| -> Vec<_> {
        c.listeners
            .iter()
            .map(|l| (l.name.clone(), l.address, l.tls.is_some()))
            .collect()
    };
    let mut problems = Vec::new();
    if key(running) != key(next) {
        problems.push(Problem {
            path: "listeners".into(),
            message: "listener names, addresses or TLS on/off changed: that needs a restart".into(),
            line: None,
        });
    }
    if running.admin.address != next.admin.address {
        problems.push(Problem {
            path: "admin.address".into(),
            message: "changing the admin address needs a restart".into(),
            line: None,
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{compile, content_version};
    use arc_swap::ArcSwap;

    /// Two backends; `b_extra` is appended to backend `b`'s settings.
    fn config(b_extra: &str) -> Config {
        let yaml = format!(
            "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: a
        match: {{ hosts: [a] }}
        backends: [{{ name: a }}]
      - name: b
        match: {{ hosts: [b] }}
        backends: [{{ name: b }}]
backends:
  - name: a
    endpoints: [{{ address: 127.0.0.1:1001 }}, {{ address: 127.0.0.1:1002 }}]
  - name: b
    endpoints: [{{ address: 127.0.0.1:1003 }}]
{b_extra}"
        );
        remora_api::parse_yaml(&yaml).unwrap()
    }

    fn serving(config: Config, metrics: &Arc<Metrics>) -> Store {
        let materials = load_materials(&config).unwrap();
        let snap = compile(config, materials, None, metrics).unwrap();
        Arc::new(ArcSwap::from_pointee(snap))
    }

    #[test]
    fn an_unchanged_backend_is_kept_whole() {
        let metrics = Metrics::new();
        let store = serving(config(""), &metrics);
        let before = store.load_full();
        let next = config("    outlier_detection: { consecutive_failures: 3 }");
        let applied = swap_in(&store, &metrics, next);
        assert!(matches!(applied, Ok(Reload::Applied(_))));
        let after = store.load_full();
        let (a0, a1) = (&before.backends["a"], &after.backends["a"]);
        assert!(Arc::ptr_eq(a0, a1));
        let (b0, b1) = (&before.backends["b"], &after.backends["b"]);
        assert!(!Arc::ptr_eq(b0, b1));
        assert_eq!(b1.outlier_detection.consecutive_failures, 3);
        // Rebuilt, but reached the same way: its endpoint and breaker live on.
        assert!(Arc::ptr_eq(&b0.endpoints[0], &b1.endpoints[0]));
        assert!(Arc::ptr_eq(&b0.breaker, &b1.breaker));
        // The routes send to the backends of the new snapshot.
        let route = |host: &str| {
            let (method, headers) = (http::Method::GET, http::HeaderMap::new());
            let r =
                after.listeners[0]
                    .router
                    .find(host, Default::default(), &method, "/", &headers);
            match &r.unwrap().action {
                crate::http::router::Action::Forward(split) => split.backends().next().cloned(),
                _ => None,
            }
            .unwrap()
        };
        assert!(Arc::ptr_eq(&route("a"), a1));
        assert!(Arc::ptr_eq(&route("b"), b1));
    }

    #[test]
    fn backends_in_another_order_are_kept_whole() {
        let metrics = Metrics::new();
        let store = serving(config(""), &metrics);
        let before = store.load_full();
        let mut next = config("");
        next.backends.reverse();
        let applied = swap_in(&store, &metrics, next);
        assert!(matches!(applied, Ok(Reload::Applied(_))));
        let after = store.load_full();
        for name in ["a", "b"] {
            assert!(Arc::ptr_eq(&before.backends[name], &after.backends[name]));
        }
    }

    #[test]
    fn a_content_version_stands_for_the_config() {
        let metrics = Metrics::new();
        let store = serving(config(""), &metrics);
        let next = config("    connect_timeout: 3s");
        let applied = swap_in_versioned(&store, &metrics, next.clone(), Some("v2"));
        let Ok(Reload::Applied(local)) = applied else {
            panic!("not applied: {applied:?}");
        };
        assert_eq!(local, store.load().version);
        let digest = load_materials(&next).unwrap().digest();
        assert_eq!(local, content_version("v2", digest));
        assert_ne!(local, crate::snapshot::version(&next, digest));
        let again = swap_in_versioned(&store, &metrics, next, Some("v2"));
        assert_eq!(again, Ok(Reload::Unchanged));
    }

    #[test]
    fn allowing_remote_admin_changes_is_a_reload_not_a_restart() {
        let metrics = Metrics::new();
        let store = serving(config(""), &metrics);
        let mut next = config("");
        next.admin.allow_remote_changes = true;
        let applied = swap_in(&store, &metrics, next);
        assert!(matches!(applied, Ok(Reload::Applied(_))), "{applied:?}");
        assert!(store.load().config.admin.allow_remote_changes);
        let mut moved = config("");
        moved.admin.address = "127.0.0.1:1".parse().unwrap();
        assert!(swap_in(&store, &metrics, moved).is_err());
    }
}

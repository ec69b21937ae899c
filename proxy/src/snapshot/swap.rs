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
pub fn swap_in(
    store: &Store,
    metrics: &Arc<Metrics>,
    config: Config,
) -> Result<Reload, Vec<Problem>> {
    let current = store.load_full();
    check_listeners_unchanged(&current.config, &config)?;
    let materials = load_materials(&config)?;
    let version = super::version(&config, materials.digest());
    if version == current.version {
        return Ok(Reload::Unchanged);
    }
    let next = super::compile::compile_as(config, materials, version, Some(&current), metrics)?;
    let version = next.version.clone();
    store.store(Arc::new(next));
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
    if running.admin != next.admin {
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

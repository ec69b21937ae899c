//! Logging: `tracing` to stdout as text or JSON, filtered by a
//! `RUST_LOG`-style directive that `/log-level` can change at run time;
//! OpenTelemetry spans in [`otel`].

pub mod otel;

use std::sync::Arc;
use tracing_subscriber::{reload, EnvFilter};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

type Getter = Arc<dyn Fn() -> String + Send + Sync>;
type Setter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Reads and replaces the running log filter.
#[derive(Clone)]
pub struct LogLevel {
    get: Getter,
    set: Setter,
}

impl LogLevel {
    pub fn get(&self) -> String {
        (self.get)()
    }
    pub fn set(&self, filter: &str) -> Result<(), String> {
        (self.set)(filter)
    }
    /// For embedding without a subscriber (tests): remembers, changes nothing.
    pub fn detached() -> Self {
        let current = Arc::new(std::sync::Mutex::new("info".to_string()));
        let c2 = current.clone();
        LogLevel {
            get: Arc::new(move || current.lock().map(|s| s.clone()).unwrap_or_default()),
            set: Arc::new(move |f| {
                EnvFilter::try_new(f).map_err(|e| e.to_string())?;
                *c2.lock().map_err(|e| e.to_string())? = f.to_string();
                Ok(())
            }),
        }
    }
}

/// Installs the global subscriber. The filter comes from `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) -> LogLevel {
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .init(),
        LogFormat::Text => {
            use std::io::IsTerminal;
            let ansi = std::io::stdout().is_terminal();
            registry
                .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
                .init()
        }
    }
    let h2 = handle.clone();
    LogLevel {
        get: Arc::new(move || handle.with_current(|f| f.to_string()).unwrap_or_default()),
        set: Arc::new(move |f| {
            let filter = EnvFilter::try_new(f).map_err(|e| e.to_string())?;
            h2.reload(filter).map_err(|e| e.to_string())
        }),
    }
}

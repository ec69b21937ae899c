//! `remora-proxy`: parse args, init logging, build the app, wait for a
//! signal, drain.

use clap::{Parser, Subcommand};
use remora_proxy::telemetry::{self, LogFormat};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "remora-proxy",
    version,
    about = "Remora's data plane: a fast, observable, hot-reloadable HTTP proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy on a YAML config; reloads it on change and on SIGHUP.
    Run {
        /// The config file.
        #[arg(long, env = "REMORA_CONFIG")]
        config: PathBuf,
        /// Log as human-readable text or as one JSON object per line.
        #[arg(long, value_enum, default_value = "text", env = "REMORA_LOG_FORMAT")]
        log_format: LogFormat,
        /// Runtime worker threads (default: one per available CPU).
        #[arg(long, env = "REMORA_WORKERS")]
        workers: Option<usize>,
    },
    /// Validate a config file: print every problem and exit non-zero on any.
    Check {
        /// The config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Run {
            config,
            log_format,
            workers,
        } => {
            let log_level = telemetry::init(log_format);
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = workers {
                rt.worker_threads(n.max(1));
            }
            let rt = match rt.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(config, log_level)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(config: PathBuf, log_level: telemetry::LogLevel) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let app = remora_proxy::App::start(config, log_level).await?;
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    let deadline = app.drain_timeout();
    tracing::info!(signal = which, "shutting down");
    app.shutdown(deadline).await;
    Ok(())
}

fn check(file: &Path) -> ExitCode {
    let metrics = remora_proxy::metrics::Metrics::new();
    match remora_proxy::snapshot::load_file(file, &metrics) {
        Ok(snap) => {
            let routes: usize = snap.config.listeners.iter().map(|l| l.routes.len()).sum();
            println!(
                "{}: ok ({} listeners, {} routes, {} backends; version {})",
                file.display(),
                snap.config.listeners.len(),
                routes,
                snap.config.backends.len(),
                snap.version
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                match p.line {
                    Some(line) => println!(
                        "{}:{line}: {}{}",
                        file.display(),
                        path_prefix(&p.path),
                        p.message
                    ),
                    None => println!("{}: {}{}", file.display(), path_prefix(&p.path), p.message),
                }
            }
            eprintln!("{}: {} problem(s)", file.display(), problems.len());
            ExitCode::FAILURE
        }
    }
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

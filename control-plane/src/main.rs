//! `remora-control-plane`: parse args, init logging, start the app, wait
//! for a signal, stop; or `check` a mesh file.

use clap::{Parser, Subcommand};
use remora_control_plane::telemetry::{self, LogFormat};
use remora_control_plane::{App, Settings};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "remora-control-plane",
    version,
    about = "Remora's control plane: compiles a mesh file into proxy snapshots and streams them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve snapshots from a mesh file, reloaded when it changes (and on SIGHUP).
    Run {
        /// The mesh file.
        #[arg(long, env = "REMORA_MESH")]
        mesh: PathBuf,
        /// Address of the snapshot stream (`POST /v1/subscribe`, HTTP/2).
        #[arg(long, env = "REMORA_CP_LISTEN", default_value = "127.0.0.1:8086")]
        listen: SocketAddr,
        /// Address of the admin server (`/live`, `/ready`, `/status`, `/metrics`).
        #[arg(long, env = "REMORA_CP_ADMIN", default_value = "127.0.0.1:9990")]
        admin: SocketAddr,
        /// Log as human-readable text or as one JSON object per line.
        #[arg(long, value_enum, default_value = "text", env = "REMORA_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Validate a mesh file: print every problem and exit non-zero on any.
    Check {
        /// The mesh file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { file } => check(&file),
        Command::Run {
            mesh,
            listen,
            admin,
            log_format,
        } => {
            telemetry::init(log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(Settings {
                mesh,
                listen,
                admin,
            })) {
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

async fn run(settings: Settings) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let app = App::start(settings).await?;
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "shutting down");
    app.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

fn check(file: &Path) -> ExitCode {
    match remora_control_plane::source::read(file) {
        Ok(mesh) => {
            println!(
                "{}: ok ({} services, {} workloads)",
                file.display(),
                mesh.services.len(),
                mesh.workloads.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                let at = match p.line {
                    Some(line) => format!("{}:{line}", file.display()),
                    None => file.display().to_string(),
                };
                match p.path.as_str() {
                    "" => println!("{at}: {}", p.message),
                    path => println!("{at}: {path}: {}", p.message),
                }
            }
            eprintln!("{}: {} problem(s)", file.display(), problems.len());
            ExitCode::FAILURE
        }
    }
}

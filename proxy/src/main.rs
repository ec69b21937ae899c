//! `remora-proxy`: parse args, init logging, build the app, wait for a
//! signal, drain.

use clap::{Parser, Subcommand};
use remora_proxy::app::Source;
use remora_proxy::control_plane::Dial;
use remora_proxy::identity::issuer::Settings as IssuerSettings;
use remora_proxy::snapshot::control::Settings;
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

// Parsed once at start: the size of `Run` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the proxy: on a YAML config (reloaded on change and on SIGHUP), or
    /// on snapshots from a control plane (sidecar mode).
    Run {
        /// The config file.
        #[arg(
            long,
            env = "REMORA_CONFIG",
            required_unless_present = "control_plane",
            conflicts_with = "control_plane"
        )]
        config: Option<PathBuf>,
        #[command(flatten)]
        control: ControlPlaneArgs,
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
    /// Program iptables in this network namespace so the proxy intercepts
    /// the pod's TCP traffic, as an init container (docs/interception.md).
    Init(remora_proxy::init::Args),
    /// Print requests as a proxy serves them, from its admin port's `/tap`:
    /// one line each, filtered, until a limit or a time is up.
    Tap(remora_proxy::tap::cli::Args),
}

/// Sidecar mode: where the control plane is and who this proxy is.
#[derive(clap::Args)]
struct ControlPlaneArgs {
    /// Control plane address (`host:port` of its snapshot stream); the
    /// host is an IP address or a DNS name, resolved at each connection.
    #[arg(long, env = "REMORA_CONTROL_PLANE", requires = "workload")]
    control_plane: Option<remora_proxy::control_plane::Address>,
    /// The workload this proxy serves, as named in the mesh.
    #[arg(long, env = "REMORA_WORKLOAD")]
    workload: Option<String>,
    /// This proxy's workload identity (e.g. a SPIFFE ID).
    #[arg(long, env = "REMORA_IDENTITY")]
    identity: Option<String>,
    /// File that keeps the last good snapshot, to start from when the
    /// control plane is down.
    #[arg(long, env = "REMORA_SNAPSHOT_CACHE")]
    snapshot_cache: Option<PathBuf>,
    /// File holding a join token: get this proxy's certificate from the
    /// control plane's CA (`POST /v1/certify` on --control-plane) and renew it.
    #[arg(long, env = "REMORA_IDENTITY_TOKEN", requires = "control_plane")]
    identity_token: Option<PathBuf>,
    /// The roots (PEM) the control plane's certificate chains to: connect to
    /// it over TLS. Without it, plain TCP (keep the control plane on
    /// loopback or a trusted network then: join tokens travel in clear).
    #[arg(long, env = "REMORA_CONTROL_PLANE_CA", requires = "control_plane")]
    control_plane_ca: Option<PathBuf>,
    /// The same roots as PEM text instead of a file (the injector puts them
    /// in the pod's environment, so no ConfigMap is needed per namespace).
    #[arg(
        long,
        env = "REMORA_CONTROL_PLANE_CA_PEM",
        requires = "control_plane",
        conflicts_with = "control_plane_ca",
        hide_env_values = true
    )]
    control_plane_ca_pem: Option<String>,
    /// The name the control plane's certificate is for (a DNS name or an IP
    /// address). Default: the host of --control-plane.
    #[arg(long, env = "REMORA_CONTROL_PLANE_NAME")]
    control_plane_name: Option<String>,
    /// Admin server address in sidecar mode (file mode reads it from the config).
    #[arg(long, env = "REMORA_ADMIN", default_value = "127.0.0.1:4191")]
    admin: std::net::SocketAddr,
    /// Sidecar mode: let admin endpoints that change state (PUT /log-level)
    /// answer clients that are not on loopback (file mode:
    /// `admin.allow_remote_changes`).
    #[arg(long, env = "REMORA_ADMIN_ALLOW_REMOTE_CHANGES")]
    admin_allow_remote_changes: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Init(args) => remora_proxy::init::main(&args),
        Command::Tap(args) => remora_proxy::tap::cli::main(&args),
        Command::Run {
            config,
            control,
            log_format,
            workers,
        } => {
            let roots = match (&control.control_plane_ca, &control.control_plane_ca_pem) {
                (Some(file), _) => Some(
                    remora_proxy::tls::roots(file).map_err(|e| format!("--control-plane-ca: {e}")),
                ),
                (None, Some(pem)) => Some(remora_proxy::tls::roots_from_pem(
                    pem,
                    "--control-plane-ca-pem",
                )),
                (None, None) => None,
            };
            let dial = match (control.control_plane, roots) {
                (None, _) => None,
                (Some(address), None) => Some(Dial::plain(address)),
                (Some(address), Some(roots)) => {
                    match roots.and_then(|roots| {
                        Dial::tls(address, roots, control.control_plane_name.as_deref())
                    }) {
                        Ok(dial) => Some(dial),
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
            };
            let await_identity =
                control.identity_token.is_some() && dial.as_ref().is_some_and(Dial::is_tls);
            let issuer = match (control.identity_token, &dial, &control.workload) {
                (Some(token_file), Some(dial), Some(workload)) => Some(IssuerSettings {
                    control_plane: dial.clone(),
                    workload: workload.clone(),
                    token_file,
                }),
                _ => None,
            };
            let source = match (config, dial, control.workload) {
                (Some(path), _, _) => Source::File(path),
                (None, Some(control_plane), Some(workload)) => Source::ControlPlane {
                    settings: Settings {
                        control_plane,
                        workload,
                        identity: control.identity,
                        cache: control.snapshot_cache,
                        await_identity,
                        admin_allow_remote_changes: control.admin_allow_remote_changes,
                    },
                    admin: control.admin,
                },
                _ => {
                    eprintln!(
                        "error: give --config FILE, or --control-plane ADDR with --workload NAME"
                    );
                    return ExitCode::from(2);
                }
            };
            let log_level = telemetry::init(log_format);
            // One worker (a sidecar's usual CPU share): a single-threaded
            // runtime, which skips the work-stealing scheduler's
            // bookkeeping (-2.3% instructions per request, issue 12).
            let workers = workers
                .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
                .unwrap_or(1);
            let mut rt = match workers {
                0 | 1 => tokio::runtime::Builder::new_current_thread(),
                n => {
                    let mut rt = tokio::runtime::Builder::new_multi_thread();
                    rt.worker_threads(n);
                    rt
                }
            };
            let rt = match rt.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(source, issuer, log_level)) {
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

async fn run(
    source: Source,
    issuer: Option<IssuerSettings>,
    log_level: telemetry::LogLevel,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // With a control plane, starting may wait for a first snapshot: a
    // signal meanwhile stops the proxy.
    let app = tokio::select! {
        app = remora_proxy::App::start_with_issuer(source, issuer, log_level) => app?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = app.shutdown_requested() => "POST /shutdown",
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

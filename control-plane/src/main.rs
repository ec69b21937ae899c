//! `remora-control-plane`: parse args, init logging, start the app, wait
//! for a signal, stop; or `check` a mesh file; or `ca init` a development CA;
//! or `etcd import` / `etcd export` a mesh; or `diagnose` a running mesh.

use clap::{Parser, Subcommand};
use remora_control_plane::app::ServingTls;
use remora_control_plane::auth::Credentials;
use remora_control_plane::ca::{self, CaSettings};
use remora_control_plane::etcd::{EtcdSettings, EtcdTls};
use remora_control_plane::inject::cli::{InjectArgs, WebhookArgs};
use remora_control_plane::k8s::TracingArgs;
use remora_control_plane::telemetry::{self, LogFormat};
use remora_control_plane::{App, MeshFrom, Settings};
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

// Parsed once at start: the size of `Run` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve snapshots from a mesh file, reloaded when it changes (and on
    /// SIGHUP), from etcd (--etcd), watched, or from a Kubernetes cluster
    /// (--kubernetes).
    #[command(group(clap::ArgGroup::new("source").required(true)))]
    Run {
        /// The mesh file.
        #[arg(long, env = "REMORA_MESH", group = "source")]
        mesh: Option<PathBuf>,
        /// The mesh in etcd instead: its members' client URLs,
        /// comma-separated (e.g. `http://10.0.0.1:2379,http://10.0.0.2:2379`).
        #[arg(long, env = "REMORA_ETCD", group = "source")]
        etcd: Option<String>,
        /// The prefix of the mesh's keys in etcd.
        #[arg(long, env = "REMORA_ETCD_PREFIX", default_value = remora_control_plane::etcd::DEFAULT_PREFIX)]
        etcd_prefix: String,
        #[command(flatten)]
        etcd_tls: Box<EtcdTls>,
        /// Read the mesh from the Kubernetes cluster (Services,
        /// EndpointSlices, Pods, Gateway API routes, Remora's policies),
        /// with the in-cluster config or KUBECONFIG.
        #[arg(long, env = "REMORA_KUBERNETES", group = "source")]
        kubernetes: bool,
        /// With --kubernetes: the cluster's DNS domain (services' aliases
        /// `<name>.<ns>.svc.<domain>`).
        #[arg(long, env = "REMORA_CLUSTER_DOMAIN", default_value = "cluster.local")]
        cluster_domain: String,
        /// With --kubernetes: the trust domain of the workloads' SPIFFE IDs
        /// (`spiffe://<trust domain>/ns/<ns>/sa/<sa>`).
        #[arg(long, env = "REMORA_TRUST_DOMAIN", default_value = "cluster.local")]
        trust_domain: String,
        #[command(flatten)]
        tracing: TracingArgs,
        /// Address of the snapshot stream (`POST /v1/subscribe`, HTTP/2) and
        /// of certificate requests (`POST /v1/certify`).
        #[arg(long, env = "REMORA_CP_LISTEN", default_value = "127.0.0.1:8086")]
        listen: SocketAddr,
        #[command(flatten)]
        ca: CaArgs,
        /// The certificate (PEM, leaf then intermediates) --listen serves
        /// TLS with; proxies verify it with --control-plane-ca. Without it,
        /// --listen is plain TCP: keep it on loopback or a trusted network,
        /// as join tokens then travel in clear.
        #[arg(long, env = "REMORA_CP_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, env = "REMORA_CP_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Refuse subscriptions that do not present the mesh certificate of
        /// the workload they name (a proxy's, from this CA). Needs --tls-cert
        /// and --ca-cert.
        #[arg(long, env = "REMORA_REQUIRE_PROXY_IDENTITY", requires_all = ["tls_cert", "ca_cert"])]
        require_proxy_identity: bool,
        /// Address of the admin server (`/live`, `/ready`, `/status`, `/metrics`).
        #[arg(long, env = "REMORA_CP_ADMIN", default_value = "127.0.0.1:9990")]
        admin: SocketAddr,
        /// Log as human-readable text or as one JSON object per line.
        #[arg(long, value_enum, default_value = "text", env = "REMORA_LOG_FORMAT")]
        log_format: LogFormat,
        #[command(flatten)]
        webhook: Box<WebhookArgs>,
        /// How often proxies report their request stats for the service
        /// graph (admin `/graph`); `0s`: never.
        #[arg(long, env = "REMORA_STATS_INTERVAL", default_value = "10s")]
        stats_interval: remora_api::Duration,
    },
    /// Add the proxy to every pod template of a manifest (multi-document
    /// YAML; `-` reads stdin) and print it, as the webhook would
    /// (docs/injection.md). Pods that opt in themselves are injected, or
    /// all with --force.
    Inject {
        /// The manifest, or `-` for stdin.
        #[arg(short = 'f', long)]
        file: String,
        /// Inject pods that did not opt in (as if their namespace had);
        /// `remora.io/inject: disabled` still wins.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        args: InjectArgs,
    },
    /// Validate a mesh file: print every problem and exit non-zero on any.
    Check {
        /// The mesh file.
        file: PathBuf,
    },
    /// A local mesh in one command: this control plane with a fresh CA, two
    /// demo apps, a `remora-proxy` sidecar per workload (mutual TLS between
    /// all of them) and light traffic. Ctrl-C stops everything.
    Demo {
        /// Stop after this long (e.g. `30s`); default: run until Ctrl-C.
        #[arg(long)]
        duration: Option<remora_api::Duration>,
        /// Requests per second from the traffic generator.
        #[arg(long, default_value_t = 5)]
        rate: u32,
        /// The `remora-proxy` binary; default: the one beside this executable.
        #[arg(long)]
        proxy_bin: Option<PathBuf>,
        /// Keep the demo's directory (CA, mesh file, logs) after stopping.
        #[arg(long)]
        keep: bool,
        /// Send every sidecar's spans to this OpenTelemetry collector
        /// (`host:port` of its OTLP receiver, e.g. 127.0.0.1:4318).
        #[arg(long, value_name = "ADDR")]
        otlp: Option<String>,
        /// The OTLP protocol for `--otlp`: `http` (protobuf, port 4318 by
        /// convention) or `grpc` (4317).
        #[arg(long, value_name = "PROTOCOL", default_value = "http", value_parser = ["http", "grpc"])]
        otlp_protocol: String,
        /// How often sidecars report their stats for the service graph.
        #[arg(long, default_value = "2s")]
        stats_interval: remora_api::Duration,
    },
    /// Check a mesh: the mesh file, the CA's expiry, and a running control
    /// plane's proxies (in sync, certificates). Prints ✔/⚠/✖ per check with
    /// what to do; exits 0 when all pass, 1 when any fails, 2 on warnings only.
    Diagnose {
        /// A running control plane's admin address (`run --admin`).
        #[arg(long, env = "REMORA_CP_ADMIN")]
        admin: Option<SocketAddr>,
        /// The mesh file to check.
        #[arg(long, env = "REMORA_MESH")]
        mesh: Option<PathBuf>,
        /// The CA certificate (PEM) to check the expiry of.
        #[arg(long, env = "REMORA_CA_CERT")]
        ca_cert: Option<PathBuf>,
        /// Warn when the CA expires within this.
        #[arg(long, default_value = "720h")]
        ca_warn: remora_api::Duration,
        /// Warn when a proxy's certificate expires within this.
        #[arg(long, default_value = "10m")]
        cert_warn: remora_api::Duration,
    },
    /// Move a mesh between a file and etcd.
    Etcd {
        #[command(subcommand)]
        command: EtcdCommand,
    },
    /// Print Remora's CustomResourceDefinitions (ServicePolicy,
    /// AuthorizationPolicy) as YAML, for `kubectl apply -f -`.
    Crds,
    /// Certificate authority tools.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Subcommand)]
enum EtcdCommand {
    /// Validate a mesh file (as `check` does), then make the keys under the
    /// prefix hold exactly it, in one transaction: changed keys written,
    /// keys the file no longer has deleted.
    Import {
        #[command(flatten)]
        at: EtcdAt,
        /// The mesh file.
        file: PathBuf,
    },
    /// Print the mesh in etcd as a mesh file (YAML).
    Export {
        #[command(flatten)]
        at: EtcdAt,
    },
}

/// Where the mesh is in etcd, for `etcd import` and `etcd export`.
#[derive(clap::Args)]
struct EtcdAt {
    /// etcd members' client URLs, comma-separated.
    #[arg(long, env = "REMORA_ETCD")]
    etcd: String,
    /// The prefix of the mesh's keys.
    #[arg(long, alias = "etcd-prefix", env = "REMORA_ETCD_PREFIX", default_value = remora_control_plane::etcd::DEFAULT_PREFIX)]
    prefix: String,
    #[command(flatten)]
    tls: EtcdTls,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Write a development root CA (ECDSA P-256, valid 10 years) as
    /// DIR/ca.crt and DIR/ca.key (mode 0600).
    Init {
        /// The directory to write into (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// The trust domain, shown in the CA's name (set the same in the mesh).
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
    /// Write a certificate for the control plane's own port (`run
    /// --tls-cert`), signed by the CA, as DIR/control-plane.crt and
    /// DIR/control-plane.key (mode 0600).
    ServingCert {
        /// The CA certificate (PEM), as for `run`.
        #[arg(long)]
        ca_cert: PathBuf,
        /// The CA's private key (PEM, PKCS#8).
        #[arg(long)]
        ca_key: PathBuf,
        /// A name proxies dial the control plane by: an IP address or a DNS
        /// name (repeat for several).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// How long the certificate is valid.
        #[arg(long, default_value = "8760h")]
        lifetime: remora_api::Duration,
        /// The directory to write into (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
}

/// The CA: without `--ca-cert`, identity is off. With it, one credential
/// check: `--join-tokens` or `--token-review`.
#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("credential").args(["join_tokens", "token_review"]))]
struct CaArgs {
    /// The CA certificate (PEM): a root, or an intermediate followed by its
    /// chain up. Turns on `POST /v1/certify` and trust roots in snapshots.
    #[arg(long, env = "REMORA_CA_CERT", requires_all = ["ca_key", "credential"])]
    ca_cert: Option<PathBuf>,
    /// The CA's private key (PEM, PKCS#8).
    #[arg(long, env = "REMORA_CA_KEY", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// The roots proxies trust (a PEM bundle; several during a CA rotation).
    /// Default: the self-signed certificate at the top of --ca-cert.
    #[arg(long, env = "REMORA_TRUST_ROOTS", requires = "ca_cert")]
    trust_roots: Option<PathBuf>,
    /// The join tokens (YAML: `tokens: [{token: ..., workload: web}]`).
    #[arg(long, env = "REMORA_JOIN_TOKENS", requires = "ca_cert")]
    join_tokens: Option<PathBuf>,
    /// Certificate requests carry a Kubernetes ServiceAccount token,
    /// checked with the TokenReview API (needs in-cluster config or
    /// KUBECONFIG).
    #[arg(long, env = "REMORA_TOKEN_REVIEW", requires = "ca_cert")]
    token_review: bool,
    /// The audience ServiceAccount tokens must be for (--token-review).
    #[arg(long, env = "REMORA_TOKEN_AUDIENCE", default_value = "remora", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    token_audience: String,
    /// How long issued certificates are valid (proxies renew at about 70%).
    #[arg(long, env = "REMORA_CERT_LIFETIME", default_value = "24h")]
    cert_lifetime: remora_api::Duration,
}

impl CaArgs {
    fn settings(self) -> Option<CaSettings> {
        // Clap requires one of the two with --ca-cert.
        let credentials = match (self.join_tokens, self.token_review) {
            (Some(path), _) => Credentials::JoinTokens(path),
            (None, true) => Credentials::TokenReview {
                audience: self.token_audience,
            },
            (None, false) => return None,
        };
        Some(CaSettings {
            cert: self.ca_cert?,
            key: self.ca_key?,
            trust_roots: self.trust_roots,
            credentials,
            lifetime: self.cert_lifetime.get(),
        })
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { file } => check(&file),
        Command::Crds => {
            print!("{}", remora_control_plane::k8s::crd::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Inject { file, force, args } => {
            remora_control_plane::inject::cli::inject(&file, force, &args)
        }
        Command::Ca {
            command: CaCommand::Init { dir, trust_domain },
        } => ca_init(&dir, &trust_domain),
        Command::Demo {
            duration,
            rate,
            proxy_bin,
            keep,
            otlp,
            otlp_protocol,
            stats_interval,
        } => {
            // The demo prints what matters; logs only when something is wrong.
            telemetry::init_with_default(LogFormat::Text, "warn");
            let args = remora_control_plane::demo::DemoArgs {
                duration: duration.map(|d| d.get()),
                rate,
                proxy_bin,
                keep,
                otlp: otlp.map(|addr| {
                    let protocol = match otlp_protocol.as_str() {
                        "grpc" => remora_api::OtlpProtocol::Grpc,
                        _ => remora_api::OtlpProtocol::HttpProtobuf,
                    };
                    (addr, protocol)
                }),
                stats_interval: stats_interval.get(),
            };
            let Some(rt) = runtime() else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(remora_control_plane::demo::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ca {
            command:
                CaCommand::ServingCert {
                    ca_cert,
                    ca_key,
                    names,
                    lifetime,
                    dir,
                },
        } => serving_cert(&ca_cert, &ca_key, &names, lifetime.get(), &dir),
        Command::Etcd { command } => etcd(command),
        Command::Diagnose {
            admin,
            mesh,
            ca_cert,
            ca_warn,
            cert_warn,
        } => {
            let args = remora_control_plane::diagnose::DiagnoseArgs {
                admin,
                mesh,
                ca_cert,
                ca_warn: ca_warn.get(),
                cert_warn: cert_warn.get(),
            };
            match runtime() {
                Some(rt) => rt.block_on(remora_control_plane::diagnose::run(&args)),
                None => ExitCode::FAILURE,
            }
        }
        Command::Run {
            mesh,
            etcd,
            etcd_prefix,
            etcd_tls,
            kubernetes,
            cluster_domain,
            trust_domain,
            tracing,
            listen,
            ca,
            tls_cert,
            tls_key,
            require_proxy_identity,
            admin,
            log_format,
            webhook,
            stats_interval,
        } => {
            telemetry::init(log_format);
            // The one crypto provider (the Kubernetes client's TLS too).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let webhook = match webhook.settings() {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let mesh_tracing = match (tracing.tracing(), kubernetes) {
                (Ok(t), true) => t,
                (Ok(None), false) => None,
                (Ok(Some(_)), false) => {
                    eprintln!("error: --tracing-collector is for --kubernetes; a mesh file or etcd sets `tracing` in the mesh");
                    return ExitCode::from(2);
                }
                (Err(e), _) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let mesh = match (mesh, etcd, kubernetes) {
                (Some(path), _, _) => MeshFrom::File(path),
                (None, Some(etcd), _) => {
                    MeshFrom::Etcd(EtcdSettings::new(&etcd, &etcd_prefix, *etcd_tls))
                }
                _ => {
                    if !remora_control_plane::mesh::dns_subdomain(&trust_domain) {
                        eprintln!("error: --trust-domain `{trust_domain}` must be a lowercase DNS name such as cluster.local");
                        return ExitCode::from(2);
                    }
                    MeshFrom::Kubernetes {
                        cluster_domain,
                        trust_domain,
                        tracing: mesh_tracing,
                    }
                }
            };
            let Some(rt) = runtime() else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(run(Settings {
                mesh,
                listen,
                admin,
                ca: ca.settings(),
                tls: tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| ServingTls { cert, key }),
                require_proxy_identity,
                webhook,
                stats_interval: Some(stats_interval.get()).filter(|d| !d.is_zero()),
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

/// The multi-threaded runtime; `None` (after saying why) if it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("error: cannot start the runtime: {e}"))
        .ok()
}

fn serving_cert(
    ca_cert: &Path,
    ca_key: &Path,
    names: &[String],
    lifetime: std::time::Duration,
    dir: &Path,
) -> ExitCode {
    let settings = CaSettings {
        cert: ca_cert.to_path_buf(),
        key: ca_key.to_path_buf(),
        trust_roots: None,
        credentials: Credentials::JoinTokens(PathBuf::new()),
        lifetime,
    };
    let written = ca::Ca::from_files(&settings).and_then(|ca| {
        let (chain, key) = ca.serving_certificate(names, std::time::SystemTime::now())?;
        std::fs::create_dir_all(dir)?;
        let (cert_path, key_path) = (dir.join("control-plane.crt"), dir.join("control-plane.key"));
        std::fs::write(&cert_path, chain)?;
        write_secret(&key_path, key.as_bytes())?;
        Ok((cert_path, key_path))
    });
    match written {
        Ok((cert, key)) => {
            println!("wrote {} (for {})", cert.display(), names.join(", "));
            println!("  and {} (its private key, mode 0600)", key.display());
            println!(
                "Serve with: remora-control-plane run ... --tls-cert {} --tls-key {}",
                cert.display(),
                key.display()
            );
            println!(
                "Proxies verify it with: remora-proxy run ... --control-plane-ca {}",
                ca_cert.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a file only its owner may read.
fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

fn ca_init(dir: &Path, trust_domain: &str) -> ExitCode {
    if !remora_control_plane::mesh::dns_subdomain(trust_domain) {
        eprintln!("error: --trust-domain `{trust_domain}` must be a lowercase DNS name such as cluster.local");
        return ExitCode::from(2);
    }
    match ca::init(dir, trust_domain) {
        Ok((cert, key, not_after)) => {
            let until = remora_control_plane::proxies::rfc3339(not_after);
            println!(
                "wrote {} (a development root CA, valid until {until})",
                cert.display()
            );
            println!(
                "  and {} (its private key, mode 0600: keep it secret)",
                key.display()
            );
            println!();
            println!(
                "Set `trust_domain: {trust_domain}` in the mesh, write a join-token file, e.g."
            );
            println!("  tokens:");
            println!("    - {{ token: <openssl rand -hex 32>, workload: web }}");
            println!("and run the control plane with the CA:");
            println!(
                "  remora-control-plane run --mesh mesh.yaml --ca-cert {} --ca-key {} --join-tokens tokens.yaml",
                cert.display(),
                key.display()
            );
            println!("Each proxy then gets its certificate with --identity-token FILE (the token alone in FILE).");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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

/// `etcd import` / `etcd export`.
fn etcd(command: EtcdCommand) -> ExitCode {
    telemetry::init_with_default(LogFormat::Text, "warn");
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = match command {
        EtcdCommand::Import { at, file } => {
            let mesh = match remora_control_plane::source::read(&file) {
                Ok(mesh) => mesh,
                Err(_) => {
                    check(&file);
                    return ExitCode::FAILURE;
                }
            };
            let settings = EtcdSettings::new(&at.etcd, &at.prefix, at.tls);
            rt.block_on(remora_control_plane::etcd::import(&settings, &mesh))
                .map(|i| {
                    println!(
                        "{}: imported into {} under {} ({} written, {} deleted, {} unchanged; revision {})",
                        file.display(),
                        settings.endpoints.join(","),
                        settings.prefix,
                        i.written,
                        i.deleted,
                        i.unchanged,
                        i.revision
                    );
                })
        }
        EtcdCommand::Export { at } => {
            let settings = EtcdSettings::new(&at.etcd, &at.prefix, at.tls);
            rt.block_on(remora_control_plane::etcd::export(&settings))
                .map(|yaml| print!("{yaml}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

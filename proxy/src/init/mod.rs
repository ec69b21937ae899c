//! `remora-proxy init`: transparent interception. Programs the nat table of
//! the current network namespace, as a pod's init container does, so that
//! inbound TCP reaches the proxy's inbound port (4143) and TCP the pod's
//! processes send reaches its outbound port (4140), except the proxy's own
//! connections, loopback, the proxy's inbound and admin ports and the
//! configured ports and networks. Also `--dry-run` (print the script, change
//! nothing) and `--cleanup` (remove what init added).
//!
//! [`rules`] turns settings into `iptables-restore` scripts (pure);
//! [`exec`] picks legacy or nft and runs the binaries. The user guide is
//! `docs/interception.md`.
//!
//! Why `iptables-restore --noflush` rather than one `iptables` command per
//! rule: a script is applied in one commit per table, so the pod never runs
//! with half the rules; the dry run prints exactly the text that would be
//! applied; and one process per family is fast to start.

pub mod exec;
pub mod rules;
pub mod skip;

use exec::Mode;
use rules::{Existing, Family, Settings};
use skip::{Cidr, List, PortRange};
use std::process::{ExitCode, ExitStatus};

/// The flags of `remora-proxy init`; each has an environment variable, so an
/// init container can be configured either way.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// The proxy's inbound port: inbound TCP is redirected here.
    #[arg(long, env = "REMORA_INIT_INBOUND_PORT", default_value_t = 4143)]
    pub inbound_port: u16,
    /// The proxy's outbound port: TCP the pod sends is redirected here.
    #[arg(long, env = "REMORA_INIT_OUTBOUND_PORT", default_value_t = 4140)]
    pub outbound_port: u16,
    /// The proxy's admin port: inbound connections to it are not redirected.
    #[arg(long, env = "REMORA_INIT_ADMIN_PORT", default_value_t = 4191)]
    pub admin_port: u16,
    /// The UID the proxy runs as: its own connections are not redirected.
    #[arg(long, env = "REMORA_INIT_PROXY_UID", default_value_t = 2102)]
    pub proxy_uid: u32,
    /// Inbound ports (or ranges like 9000-9100), comma-separated, that reach
    /// the application directly.
    #[arg(long, env = "REMORA_INIT_SKIP_INBOUND_PORTS", value_name = "PORTS")]
    pub skip_inbound_ports: Vec<List<PortRange>>,
    /// Outbound destination ports (or ranges), comma-separated, not redirected.
    #[arg(long, env = "REMORA_INIT_SKIP_OUTBOUND_PORTS", value_name = "PORTS")]
    pub skip_outbound_ports: Vec<List<PortRange>>,
    /// Outbound destination networks, comma-separated CIDRs, not redirected.
    /// IPv6 ones need --ipv6.
    #[arg(long, env = "REMORA_INIT_SKIP_OUTBOUND_CIDRS", value_name = "CIDRS")]
    pub skip_outbound_cidrs: Vec<List<Cidr>>,
    /// Program IPv6 (ip6tables) too.
    #[arg(long, env = "REMORA_INIT_IPV6")]
    pub ipv6: bool,
    /// Which iptables backend to use; auto picks the one that already has
    /// rules, else nft.
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "REMORA_INIT_IPTABLES_MODE"
    )]
    pub iptables_mode: Mode,
    /// Print the iptables-restore script(s) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove every Remora chain and the jumps into them.
    #[arg(long)]
    pub cleanup: bool,
}

impl Args {
    /// The families to program: IPv4, and IPv6 with `--ipv6`.
    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    /// The validated settings.
    pub fn settings(&self) -> Result<Settings, InitError> {
        let ports = [
            ("--inbound-port", self.inbound_port),
            ("--outbound-port", self.outbound_port),
            ("--admin-port", self.admin_port),
        ];
        for (flag, port) in ports {
            if port == 0 {
                return Err(InitError::Usage(format!("{flag} must not be 0")));
            }
        }
        if self.inbound_port == self.outbound_port {
            return Err(InitError::Usage(format!(
                "--inbound-port and --outbound-port are both {}",
                self.inbound_port
            )));
        }
        let cidrs = flatten(&self.skip_outbound_cidrs);
        if !self.ipv6 {
            if let Some(c) = cidrs.iter().find(|c| c.family() == Family::V6) {
                return Err(InitError::Usage(format!(
                    "--skip-outbound-cidrs has the IPv6 network {c}: add --ipv6 to program ip6tables"
                )));
            }
        }
        Ok(Settings {
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            admin_port: self.admin_port,
            proxy_uid: self.proxy_uid,
            skip_inbound_ports: flatten(&self.skip_inbound_ports),
            skip_outbound_ports: flatten(&self.skip_outbound_ports),
            skip_outbound_cidrs: cidrs,
        })
    }
}

/// The items of every occurrence of a list flag, in order.
fn flatten<T: Clone>(lists: &[List<T>]) -> Vec<T> {
    lists.iter().flat_map(|l| l.0.iter().cloned()).collect()
}

/// Why init failed; the message names the command, its status and its stderr.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot run `{program}`: {source}{hint}")]
    Spawn {
        program: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("`{command}` failed ({status}): {stderr}{hint}{script}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
        hint: &'static str,
        /// The numbered script that was fed in, or empty.
        script: String,
    },
    #[error("no usable iptables backend\n  legacy: {legacy}\n  nft: {nft}")]
    NoBackend {
        legacy: Box<InitError>,
        nft: Box<InitError>,
    },
}

impl InitError {
    pub(crate) fn spawn(program: &str, source: std::io::Error) -> InitError {
        let hint = if source.kind() == std::io::ErrorKind::NotFound {
            " (is the iptables package installed in this image?)"
        } else {
            ""
        };
        InitError::Spawn {
            program: program.to_string(),
            source,
            hint,
        }
    }

    pub(crate) fn failed(
        command: String,
        status: ExitStatus,
        stderr: &[u8],
        script: String,
    ) -> InitError {
        let stderr = String::from_utf8_lossy(stderr).trim().to_string();
        let denied = ["ermission denied", "not permitted", "must be root"]
            .iter()
            .any(|s| stderr.contains(s));
        let hint = if denied {
            "\n(init needs root, or the NET_ADMIN and NET_RAW capabilities in an init container)"
        } else {
            ""
        };
        let script = if script.is_empty() {
            script
        } else {
            format!("\nthe script was:\n{script}")
        };
        InitError::Failed {
            command,
            status,
            stderr,
            hint,
            script,
        }
    }
}

/// The `init` subcommand: 0 on success, 2 for bad flags, 1 when iptables failed.
pub fn main(args: &Args) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ InitError::Usage(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs, cleans up or (with `--dry-run`) prints; progress goes to stdout.
pub fn run(args: &Args) -> Result<(), InitError> {
    let settings = args.settings()?;
    let families = args.families();
    if args.dry_run {
        dry_run(args, &settings, &families);
        return Ok(());
    }
    let choice = exec::detect(args.iptables_mode, &families)?;
    let backend = choice.backend;
    println!(
        "remora-proxy init: using iptables-{} ({})",
        backend.name(),
        choice.reason
    );
    for &family in &families {
        let before = Existing::parse(&exec::read(backend, family)?);
        if args.cleanup {
            match rules::cleanup_script(&before) {
                None => println!("{family}: nothing to clean up"),
                Some(script) => {
                    exec::apply(backend, family, &script)?;
                    println!(
                        "{family}: removed {} jump(s) and chain(s) {}",
                        before.jumps.len(),
                        before.chains.join(", ")
                    );
                }
            }
        } else {
            let script = rules::install_script(&settings, family, &before);
            exec::apply(backend, family, &script)?;
            let after = exec::read(backend, family)?;
            println!("{family}: interception installed; the nat table's Remora rules:");
            for line in rules::our_lines(&after) {
                println!("  {line}");
            }
        }
    }
    Ok(())
}

/// Prints each family's script with the command that would apply it. The
/// current table is read when it can be (that changes nothing), so the
/// script is the one a real run would apply; else a note says what is assumed.
fn dry_run(args: &Args, settings: &Settings, families: &[Family]) {
    let choice = exec::detect(args.iptables_mode, families).map(|c| c.backend);
    for &family in families {
        let restore = match &choice {
            Ok(b) => format!("{} {}", b.restore(family), b.restore_args().join(" ")),
            Err(_) => format!("{}-restore --noflush", family.tool()),
        };
        println!("# {family}: the script for `{restore}`");
        let current = match &choice {
            Ok(b) => exec::read(*b, family)
                .map(|save| Existing::parse(&save))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let existing = current.unwrap_or_else(|e| {
            let (assumed, existing) = if args.cleanup {
                ("everything init installs is present", Existing::installed())
            } else {
                ("no Remora rules yet", Existing::default())
            };
            let why = e.lines().next().unwrap_or_default();
            println!("# (the current rules could not be read: {why}; assuming {assumed})");
            existing
        });
        let script = if args.cleanup {
            rules::cleanup_script(&existing)
        } else {
            Some(rules::install_script(settings, family, &existing))
        };
        match script {
            Some(script) => print!("{script}"),
            None => println!("# nothing to clean up"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Args {
        let argv = std::iter::once("init").chain(argv.iter().copied());
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn flags_become_settings() {
        let args = parse(&[
            "--proxy-uid=1337",
            "--skip-inbound-ports=22,9000-9100",
            "--skip-outbound-ports",
            "3306",
            "--skip-outbound-cidrs=10.0.0.0/8,fd00::/8",
            "--ipv6",
            "--iptables-mode=legacy",
        ]);
        assert_eq!(args.families(), vec![Family::V4, Family::V6]);
        assert_eq!(args.iptables_mode, Mode::Legacy);
        let s = args.settings().unwrap();
        assert_eq!(
            (s.inbound_port, s.outbound_port, s.admin_port),
            (4143, 4140, 4191)
        );
        assert_eq!(s.proxy_uid, 1337);
        assert_eq!(s.skip_inbound_ports.len(), 2);
        assert_eq!(s.skip_outbound_ports, vec![PortRange::single(3306)]);
        assert_eq!(s.skip_outbound_cidrs.len(), 2);
        assert_eq!(parse(&[]).settings().unwrap(), Settings::default());
        // Repeated flags add up; empty values mean none.
        let args = parse(&["--skip-inbound-ports=22", "--skip-inbound-ports=23,"]);
        assert_eq!(args.settings().unwrap().skip_inbound_ports.len(), 2);
        let empty = parse(&["--skip-outbound-ports=", "--skip-outbound-cidrs="]);
        assert_eq!(empty.settings().unwrap(), Settings::default());
    }

    #[test]
    fn bad_combinations_are_usage_errors() {
        for (argv, want) in [
            (&["--skip-outbound-cidrs=fd00::/8"][..], "add --ipv6"),
            (&["--inbound-port=4140"][..], "both 4140"),
            (&["--admin-port=0"][..], "--admin-port must not be 0"),
        ] {
            match parse(argv).settings() {
                Err(InitError::Usage(msg)) => assert!(msg.contains(want), "{msg}"),
                other => panic!("{argv:?}: {other:?}"),
            }
        }
        let bad_port = Cli::try_parse_from(["init", "--skip-inbound-ports=22,http"]);
        assert!(bad_port.is_err());
    }
}

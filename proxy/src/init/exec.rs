//! Running iptables: choosing the backend (legacy or nft), reading the
//! current tables with `*-save`, applying a script with `*-restore --noflush`.
//!
//! Both backends read and write the same text format, so [`super::rules`]
//! never knows which one runs. The binaries are called by their full
//! variant names (`iptables-nft-restore`, `ip6tables-legacy-save`, ...), as
//! iptables 1.8 and later install them, never through the `iptables`
//! alternative, whose target differs between images.

use super::rules::Family;
use super::InitError;
use std::io::Write;
use std::process::{Command, Stdio};

/// How to choose the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The backend that already has rules; nft when neither has any.
    Auto,
    /// `iptables-legacy` (the kernel's x_tables).
    Legacy,
    /// `iptables-nft` (nf_tables with the iptables syntax).
    Nft,
}

/// Which set of iptables binaries (and kernel API) to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }

    /// `iptables-nft-save` and the like.
    pub fn save(self, family: Family) -> String {
        format!("{}-{}-save", family.tool(), self.name())
    }

    /// `ip6tables-legacy-restore` and the like.
    pub fn restore(self, family: Family) -> String {
        format!("{}-{}-restore", family.tool(), self.name())
    }

    /// The arguments for the restore binary: keep everything not in the
    /// script; legacy alone takes the xtables lock, so only it waits for it.
    pub fn restore_args(self) -> &'static [&'static str] {
        match self {
            Backend::Legacy => &["--noflush", "--wait=10"],
            Backend::Nft => &["--noflush"],
        }
    }
}

/// The chosen backend and why, for the log.
#[derive(Clone, Debug)]
pub struct Choice {
    pub backend: Backend,
    pub reason: String,
}

/// Picks the backend. `Auto` follows kube-proxy's iptables-wrapper: the
/// backend with more rules is the one the node (and CNI) uses, and mixing
/// the two in one namespace makes rule order unpredictable; with no rules
/// anywhere, nft, the default of current distributions.
pub fn detect(mode: Mode, families: &[Family]) -> Result<Choice, InitError> {
    let forced = |backend| {
        Ok(Choice {
            backend,
            reason: "--iptables-mode".to_string(),
        })
    };
    match mode {
        Mode::Legacy => return forced(Backend::Legacy),
        Mode::Nft => return forced(Backend::Nft),
        Mode::Auto => {}
    }
    let count = |backend: Backend| -> Result<usize, InitError> {
        let mut n = 0;
        for &family in families {
            n += read(backend, family)?
                .lines()
                .filter(|l| l.starts_with("-A "))
                .count();
        }
        Ok(n)
    };
    match (count(Backend::Legacy), count(Backend::Nft)) {
        (Ok(legacy), Ok(nft)) if legacy > nft => Ok(Choice {
            backend: Backend::Legacy,
            reason: format!("legacy has {legacy} rules, nft {nft}"),
        }),
        (Ok(legacy), Ok(nft)) => Ok(Choice {
            backend: Backend::Nft,
            reason: if nft > 0 {
                format!("nft has {nft} rules, legacy {legacy}")
            } else {
                "no rules in either backend; nft is the default".to_string()
            },
        }),
        (Err(e), Ok(_)) => Ok(Choice {
            backend: Backend::Nft,
            reason: format!("legacy is not usable: {}", one_line(&e.to_string())),
        }),
        (Ok(_), Err(e)) => Ok(Choice {
            backend: Backend::Legacy,
            reason: format!("nft is not usable: {}", one_line(&e.to_string())),
        }),
        (Err(legacy), Err(nft)) => Err(InitError::NoBackend {
            legacy: Box::new(legacy),
            nft: Box::new(nft),
        }),
    }
}

/// Every table of `family` as `*-save` prints it. No `-t nat`: naming a
/// table makes legacy create it, and reading must change nothing.
pub fn read(backend: Backend, family: Family) -> Result<String, InitError> {
    let program = backend.save(family);
    let out = Command::new(&program)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| InitError::spawn(&program, source))?;
    if !out.status.success() {
        return Err(InitError::failed(
            program,
            out.status,
            &out.stderr,
            String::new(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Feeds `script` to `*-restore --noflush`: one atomic commit per table.
pub fn apply(backend: Backend, family: Family, script: &str) -> Result<(), InitError> {
    let program = backend.restore(family);
    let args = backend.restore_args();
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(&program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| InitError::spawn(&program, source))?;
    // A restore that dies early closes its stdin; its exit status and
    // stderr below say why, so a write error here adds nothing.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| InitError::spawn(&program, source))?;
    if !out.status.success() {
        return Err(InitError::failed(
            command,
            out.status,
            &out.stderr,
            numbered(script),
        ));
    }
    Ok(())
}

/// The script with line numbers, as restore's "line N failed" counts them.
fn numbered(script: &str) -> String {
    script
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{:>4}  {l}\n", i + 1))
        .collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_names_per_backend_and_family() {
        assert_eq!(Backend::Nft.save(Family::V4), "iptables-nft-save");
        assert_eq!(
            Backend::Legacy.restore(Family::V6),
            "ip6tables-legacy-restore"
        );
        assert!(Backend::Legacy.restore_args().contains(&"--noflush"));
        assert!(Backend::Nft.restore_args().contains(&"--noflush"));
    }

    #[test]
    fn forced_modes_run_nothing() {
        let c = detect(Mode::Legacy, &[Family::V4, Family::V6]).unwrap();
        assert_eq!(c.backend, Backend::Legacy);
        assert_eq!(detect(Mode::Nft, &[]).unwrap().backend, Backend::Nft);
    }

    #[test]
    fn a_missing_binary_is_named_in_the_error() {
        let err = InitError::spawn(
            "ip6tables-nft-restore",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        let msg = err.to_string();
        assert!(msg.contains("ip6tables-nft-restore"), "{msg}");
        assert!(msg.contains("iptables package"), "{msg}");
    }

    #[test]
    fn failed_restore_shows_stderr_and_numbered_script() {
        let status = Command::new("sh").args(["-c", "exit 2"]).status().unwrap();
        let err = InitError::failed(
            "iptables-nft-restore --noflush".into(),
            status,
            b"iptables-nft-restore: line 2 failed: Permission denied\n",
            numbered("*nat\n-A X -j Y\nCOMMIT\n"),
        );
        let msg = err.to_string();
        for want in [
            "`iptables-nft-restore --noflush` failed",
            "line 2 failed: Permission denied",
            "NET_ADMIN",
            "   2  -A X -j Y\n",
        ] {
            assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
        }
    }
}

//! `remora-control-plane diagnose`, like `linkerd check`: checks the mesh
//! file (it parses and validates), the CA certificate's expiry, and, from a
//! running control plane's admin `/status`, that it serves and that each
//! connected proxy applied the current version of its snapshot and holds a
//! mesh certificate that is not about to expire. One line per check,
//! ✔ (fine), ⚠ (look at it) or ✖ (broken), each ⚠ and ✖ with what to do.
//! Exit status: 0 all fine, 1 something is broken, 2 warnings only.

use crate::proxies::rfc3339;
use serde_json::Value;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// What `diagnose` looks at; each part is checked only when given.
#[derive(Clone, Debug)]
pub struct DiagnoseArgs {
    /// A running control plane's admin address.
    pub admin: Option<SocketAddr>,
    pub mesh: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    /// A CA certificate expiring within this is a warning.
    pub ca_warn: Duration,
    /// A proxy's certificate expiring within this is a warning (proxies
    /// renew theirs at about 70% of its lifetime).
    pub cert_warn: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One line of the report, with what to do when it is not fine.
#[derive(Clone, Debug)]
pub struct Check {
    pub verdict: Verdict,
    pub what: String,
    pub todo: Option<String>,
}

impl Check {
    fn ok(what: String) -> Check {
        Check {
            verdict: Verdict::Ok,
            what,
            todo: None,
        }
    }
    fn warn(what: String, todo: &str) -> Check {
        Check {
            verdict: Verdict::Warn,
            what,
            todo: Some(todo.to_string()),
        }
    }
    fn fail(what: String, todo: &str) -> Check {
        Check {
            verdict: Verdict::Fail,
            what,
            todo: Some(todo.to_string()),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.verdict {
            Verdict::Ok => "✔",
            Verdict::Warn => "⚠",
            Verdict::Fail => "✖",
        };
        write!(f, "{mark} {}", self.what)?;
        if let Some(todo) = &self.todo {
            write!(f, "\n    → {todo}")?;
        }
        Ok(())
    }
}

/// Runs every check the arguments ask for, prints them, and returns the
/// exit status.
pub async fn run(args: &DiagnoseArgs) -> ExitCode {
    let mut checks = Vec::new();
    if let Some(path) = &args.mesh {
        checks.push(mesh(path));
    }
    if let Some(path) = &args.ca_cert {
        checks.push(ca(path, args.ca_warn, SystemTime::now()));
    }
    if let Some(admin) = args.admin {
        checks.extend(control_plane(admin, args.cert_warn).await);
    }
    if checks.is_empty() {
        eprintln!("error: nothing to check: give --admin, --mesh and/or --ca-cert");
        return ExitCode::FAILURE;
    }
    for c in &checks {
        println!("{c}");
    }
    let worst = checks.iter().map(|c| c.verdict).max();
    let (fails, warns) = (count(&checks, Verdict::Fail), count(&checks, Verdict::Warn));
    println!();
    match worst {
        Some(Verdict::Fail) => {
            println!("{fails} check(s) failed, {warns} warning(s)");
            ExitCode::from(1)
        }
        Some(Verdict::Warn) => {
            println!("all checks passed, {warns} warning(s)");
            ExitCode::from(2)
        }
        _ => {
            println!("all {} checks passed", checks.len());
            ExitCode::SUCCESS
        }
    }
}

fn count(checks: &[Check], v: Verdict) -> usize {
    checks.iter().filter(|c| c.verdict == v).count()
}

fn mesh(path: &std::path::Path) -> Check {
    match crate::source::read(path) {
        Ok(m) => Check::ok(format!(
            "mesh file {}: valid ({} services, {} workloads)",
            path.display(),
            m.services.len(),
            m.workloads.len()
        )),
        Err(problems) => {
            let list: Vec<String> = problems
                .iter()
                .map(|p| {
                    let line = p.line.map(|l| format!("line {l}: ")).unwrap_or_default();
                    match p.path.as_str() {
                        "" => format!("{line}{}", p.message),
                        at => format!("{line}{at}: {}", p.message),
                    }
                })
                .collect();
            Check::fail(
                format!(
                    "mesh file {}: {} problem(s): {}",
                    path.display(),
                    problems.len(),
                    list.join("; ")
                ),
                "fix the file; a running control plane keeps serving the last valid mesh until then",
            )
        }
    }
}

fn ca(path: &std::path::Path, warn: Duration, now: SystemTime) -> Check {
    let expiry = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|pem| crate::ca::expiry(&pem));
    let at = match expiry {
        Ok(at) => at,
        Err(e) => {
            return Check::fail(
                format!("CA certificate {}: {e}", path.display()),
                "give the CA certificate the control plane runs with (--ca-cert)",
            )
        }
    };
    let what = |state: &str| format!("CA certificate {}: {state} {}", path.display(), rfc3339(at));
    expiry_check(at, warn, now, what, ROTATE_CA)
}

const ROTATE_CA: &str = "rotate the CA: issue a new one and serve both roots during the change (docs/identity.md, \"CA rotation\")";

/// ✖ expired, ⚠ expiring within `warn`, ✔ else; `what` says it with
/// "expired at", "expires soon, at" or "valid until".
fn expiry_check(
    at: SystemTime,
    warn: Duration,
    now: SystemTime,
    what: impl Fn(&str) -> String,
    todo: &str,
) -> Check {
    match at.duration_since(now) {
        Err(_) => Check::fail(what("expired at"), todo),
        Ok(left) if left < warn => {
            Check::warn(what(&format!("expires in {}, at", human(left))), todo)
        }
        Ok(_) => Check::ok(what("valid until")),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The control plane's `/status`, and each proxy in it.
async fn control_plane(admin: SocketAddr, cert_warn: Duration) -> Vec<Check> {
    let status = match crate::demo::get(admin, "localhost", "/status").await {
        Ok((200, body)) => serde_json::from_str::<Value>(&body).map_err(|e| e.to_string()),
        Ok((code, body)) => Err(format!("/status answered {code}: {}", body.trim())),
        Err(e) => Err(format!("{e:#}")),
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return vec![Check::fail(
                format!("control plane at {admin}: {e}"),
                "is it running? give its admin address (`run --admin`, default 127.0.0.1:9990)",
            )]
        }
    };
    let mut checks = Vec::new();
    let mesh = &status["mesh"];
    let served = format!(
        "control plane at {admin}: serves mesh version {} from {}",
        mesh["version"].as_str().unwrap_or("?"),
        mesh["path"].as_str().unwrap_or("?")
    );
    checks.push(match mesh["rejected_at"].as_str() {
        Some(at) => Check::fail(
            format!("{served}; its latest change was rejected at {at}: {}", strings(&mesh["problems"])),
            "fix the mesh (`remora-control-plane check FILE` shows each problem); the last valid mesh is served until then",
        ),
        None => Check::ok(served),
    });
    let proxies = status["proxies"].as_array().cloned().unwrap_or_default();
    if proxies.is_empty() {
        checks.push(Check::warn(
            "no proxy is connected".into(),
            "start proxies with `remora-proxy run --control-plane ADDRESS --workload NAME`",
        ));
    }
    let now = SystemTime::now();
    for p in &proxies {
        checks.push(sync(p, &status["workloads"]));
        if let Some(at) = p["certificate"]["expires_at"]
            .as_str()
            .and_then(parse_rfc3339)
        {
            let name = proxy_name(p);
            let what =
                |state: &str| format!("proxy {name}: mesh certificate {state} {}", rfc3339(at));
            checks.push(expiry_check(at, cert_warn, now, what, RENEW));
        }
    }
    checks
}

const RENEW: &str = "the proxy renews at about 70% of its certificate's lifetime: see its log for `certificate renewal failed`, and that its credential (join token or service account) is still accepted";

fn proxy_name(p: &Value) -> String {
    format!(
        "{}#{} ({})",
        p["workload"].as_str().unwrap_or("?"),
        p["id"],
        p["peer"].as_str().unwrap_or("?")
    )
}

/// Whether a proxy applied its workload's current version.
fn sync(p: &Value, workloads: &Value) -> Check {
    let name = proxy_name(p);
    let current = workloads[p["workload"].as_str().unwrap_or("")]["version"]
        .as_str()
        .unwrap_or("?");
    let applied = p["applied"].as_str().unwrap_or("nothing");
    if p["in_sync"].as_bool() == Some(true) {
        return Check::ok(format!("proxy {name}: in sync (version {current})"));
    }
    if let Some(rejected) = p["rejected"].as_str() {
        return Check::fail(
            format!(
                "proxy {name}: rejected version {rejected}: {}; it serves {applied}",
                strings(&p["errors"])
            ),
            "fix what the proxy rejected in the mesh (or the proxy's environment the errors name); it keeps serving its last good snapshot",
        );
    }
    Check::warn(
        format!("proxy {name}: serves {applied}, current is {current} (not acknowledged yet)"),
        "wait a few seconds and run diagnose again; if it stays behind, see the proxy's log and `last_error` in /status",
    )
}

fn strings(v: &Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    list.join("; ")
}

/// `2025-01-02T03:04:05Z`, as [`rfc3339`] writes it.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    if s.len() != 20 || !s.ends_with('Z') {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(n(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(n(0..4)?).ok()?,
        month,
        u8::try_from(n(8..10)?).ok()?,
    )
    .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(n(11..13)?).ok()?,
        u8::try_from(n(14..16)?).ok()?,
        u8::try_from(n(17..19)?).ok()?,
    )
    .ok()?;
    let secs = date.with_time(t).assume_utc().unix_timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_fine_then_a_warning_then_a_failure() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let day = Duration::from_secs(86400);
        let check = |at| expiry_check(at, 30 * day, now, |s| s.to_string(), "rotate").verdict;
        assert_eq!(check(now + 90 * day), Verdict::Ok);
        assert_eq!(check(now + 2 * day), Verdict::Warn);
        assert_eq!(check(now - day), Verdict::Fail);
        let warn = expiry_check(now + 2 * day, 30 * day, now, |s| s.to_string(), "rotate");
        assert_eq!(warn.to_string(), "⚠ expires in 2d, at\n    → rotate");
    }

    #[test]
    fn rfc3339_reads_back_what_it_wrote() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_733_400_000);
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert_eq!(parse_rfc3339("soon"), None);
    }
}

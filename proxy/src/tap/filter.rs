//! Which requests a tap stream shows, and for how long: from the query
//! string of `/tap` (`?route=users&status=5xx&limit=50&seconds=30`).
//! Every stream ends after `limit` summaries or `seconds`, whichever comes
//! first; both have server-side caps.

use super::Summary;
use crate::explain::query::pairs;
use std::time::Duration;

/// Summaries per stream: default and cap.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 10_000;
/// Seconds per stream: default and cap.
pub const DEFAULT_SECONDS: u64 = 60;
pub const MAX_SECONDS: u64 = 600;

/// The filter names, in the order the docs and `--help` give them.
pub const FIELDS: &[&str] = &[
    "listener",
    "route",
    "backend",
    "method",
    "authority",
    "path",
    "status",
    "error",
    "client_id",
];

#[derive(Debug, Default)]
pub struct Filter {
    listener: Option<String>,
    route: Option<String>,
    backend: Option<String>,
    method: Option<String>,
    authority: Option<String>,
    /// A path prefix.
    path: Option<String>,
    status: Option<Status>,
    /// A cause, or `any` for any proxy error.
    error: Option<String>,
    client_id: Option<String>,
    pub limit: u64,
    pub duration: Duration,
}

#[derive(Debug)]
enum Status {
    Exact(u16),
    /// `5xx`: the hundreds digit.
    Class(u16),
}

impl Filter {
    pub fn parse(qs: &str) -> Result<Filter, String> {
        let mut f = Filter {
            limit: DEFAULT_LIMIT,
            duration: Duration::from_secs(DEFAULT_SECONDS),
            ..Filter::default()
        };
        for (k, v) in pairs(qs)? {
            let slot = match k.as_str() {
                "listener" => &mut f.listener,
                "route" => &mut f.route,
                "backend" => &mut f.backend,
                "method" => &mut f.method,
                "authority" => &mut f.authority,
                "path" => &mut f.path,
                "error" => &mut f.error,
                "client_id" => &mut f.client_id,
                "status" => {
                    f.status = Some(status(&v)?);
                    continue;
                }
                "limit" => {
                    f.limit = number(&k, &v, MAX_LIMIT)?;
                    continue;
                }
                "seconds" => {
                    f.duration = Duration::from_secs(number(&k, &v, MAX_SECONDS)?);
                    continue;
                }
                other => {
                    return Err(format!(
                        "unknown filter `{other}`; use {}, limit, seconds",
                        FIELDS.join(", ")
                    ))
                }
            };
            *slot = Some(v);
        }
        Ok(f)
    }

    pub fn matches(&self, s: &Summary) -> bool {
        let is = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        is(&self.listener, &s.listener)
            && is(&self.route, &s.route)
            && is(&self.backend, &s.backend)
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(&s.method))
            && is(&self.authority, &s.authority)
            && self.path.as_deref().is_none_or(|p| s.path.starts_with(p))
            && self.status.as_ref().is_none_or(|st| match st {
                Status::Exact(c) => *c == s.status,
                Status::Class(c) => s.status / 100 == *c,
            })
            && self.error.as_deref().is_none_or(|e| match e {
                "any" => !s.error.is_empty(),
                e => e == s.error,
            })
            && is(&self.client_id, s.client_id.as_deref().unwrap_or(""))
    }
}

fn status(v: &str) -> Result<Status, String> {
    let bad = || format!("status `{v}`: use a code (503) or a class (5xx)");
    match v.as_bytes() {
        [d @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => Ok(Status::Class(u16::from(d - b'0'))),
        _ => v
            .parse()
            .ok()
            .filter(|c| (100..600).contains(c))
            .map(Status::Exact)
            .ok_or_else(bad),
    }
}

fn number(k: &str, v: &str, max: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{k} `{v}`: use a whole number from 1 to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(route: &str, status: u16, error: &str) -> Summary {
        Summary {
            time: 0.0,
            listener: "edge".into(),
            route: route.into(),
            backend: "b".into(),
            endpoint: None,
            method: "GET".into(),
            authority: "a".into(),
            path: "/users/7".into(),
            status,
            latency_ms: 1.0,
            client: "127.0.0.1:1".parse().unwrap(),
            client_id: None,
            error: error.into(),
        }
    }

    #[test]
    fn filters_by_route_status_class_and_error() {
        let f = Filter::parse("route=users&status=5xx&path=/users").unwrap();
        assert!(f.matches(&summary("users", 503, "")));
        assert!(!f.matches(&summary("users", 200, "")));
        assert!(!f.matches(&summary("orders", 503, "")));
        let f = Filter::parse("error=any").unwrap();
        assert!(f.matches(&summary("", 404, "no-route")));
        assert!(!f.matches(&summary("users", 200, "")));
        assert_eq!(
            (f.limit, f.duration.as_secs()),
            (DEFAULT_LIMIT, DEFAULT_SECONDS)
        );
    }

    #[test]
    fn bounds_and_bad_filters_are_refused() {
        let err = |qs| Filter::parse(qs).unwrap_err();
        assert!(err("limit=0").contains("from 1 to 10000"));
        assert!(err("seconds=601").contains("from 1 to 600"));
        assert!(err("status=5yy").contains("a class (5xx)"));
        assert!(err("colour=red").contains("unknown filter `colour`"));
    }
}

//! A backend's checks: its endpoints, balancer, transport and policies.

use super::route::{check_header_name, check_weight};
use super::Problems;
use crate::model::*;
use std::collections::HashSet;

pub(super) fn check_backend(p: &mut Problems, at: &str, b: &Backend) {
    let mut addrs = HashSet::with_capacity(b.endpoints.len());
    for (k, e) in b.endpoints.iter().enumerate() {
        check_weight(p, || format!("{at}.endpoints[{k}].weight"), e.weight);
        if !addrs.insert(e.address) {
            p.add(
                format!("{at}.endpoints[{k}].address"),
                format!("{} is listed twice", e.address),
            );
        }
    }
    if let Balancer::RingHash(rh) = &b.balancer {
        if rh.header.is_some() == rh.cookie.is_some() {
            p.add(
                format!("{at}.balancer.ring_hash"),
                "needs exactly one of `header` and `cookie`",
            );
        }
        if let Some(h) = &rh.header {
            check_header_name(p, &format!("{at}.balancer.ring_hash.header"), h);
        }
    }
    if let Some(tls) = &b.tls {
        if rustls_name_ok(&tls.server_name).is_err() {
            p.add(
                format!("{at}.tls.server_name"),
                "is not a DNS name or IP address",
            );
        }
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            p.add(
                format!("{at}.tls"),
                "`client_cert` and `client_key` go together",
            );
        }
    }
    if b.connect_timeout.get().is_zero() {
        p.add(format!("{at}.connect_timeout"), "must be > 0");
    }
    let mut found = Vec::new();
    b.retry_budget
        .check(&format!("{at}.retry_budget"), &mut found);
    b.outlier_detection
        .check(&format!("{at}.outlier_detection"), &mut found);
    b.circuit_breaker
        .check(&format!("{at}.circuit_breaker"), &mut found);
    if let Some(hc) = &b.health_check {
        hc.check(&format!("{at}.health_check"), &mut found);
        if b.tls.is_some() {
            found.push((
                format!("{at}.health_check"),
                "health checks over TLS are not supported yet".into(),
            ));
        }
        if b.protocol == UpstreamProtocol::Http2 {
            found.push((
                format!("{at}.health_check"),
                "health checks probe with HTTP/1.1: not supported for `protocol: http2` yet".into(),
            ));
        }
    }
    p.extend(found);
    if b.pool.idle_timeout.get().is_zero() {
        p.add(format!("{at}.pool.idle_timeout"), "must be > 0");
    }
}

fn rustls_name_ok(name: &str) -> Result<(), ()> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

//! The original destination of a connection that iptables redirected to
//! this proxy (`remora-proxy init`: nat `REDIRECT` to the outbound or
//! inbound port).
//!
//! `REDIRECT` rewrites the destination of a connection to a local port and
//! keeps the address the client asked for in the connection-tracking entry.
//! [`original_dst`] reads it back with `getsockopt(SOL_IP, SO_ORIGINAL_DST)`
//! for IPv4 (a `sockaddr_in`) and `getsockopt(SOL_IPV6,
//! IP6T_SO_ORIGINAL_DST)` for IPv6 (a `sockaddr_in6`). The calls go through
//! `socket2`'s `original_dst_v4` / `original_dst_v6`, which wrap exactly
//! these two `getsockopt`s: this crate keeps `unsafe_code` forbidden.
//!
//! A connection that was **not** redirected (a client that dialed the
//! listener itself) has no NAT entry: its original destination is its local
//! address, and [`original_dst`] returns that, so [`redirected`] can tell
//! the two apart.

use socket2::SockRef;
use std::io;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// Where the client of `tcp` meant to connect: the address before an
/// iptables `REDIRECT`, or the socket's local address when the connection
/// was not redirected. IPv4-mapped IPv6 addresses (a dual-stack listener)
/// come back as plain IPv4.
pub fn original_dst(tcp: &TcpStream) -> io::Result<SocketAddr> {
    let local = canonical(tcp.local_addr()?);
    let sock = SockRef::from(tcp);
    // An IPv4 connection on a dual-stack (`[::]`) listener is an IPv6
    // socket, but its NAT entry is IPv4: the family of the local address
    // decides, and Linux answers SOL_IP options on such a socket.
    let found = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    match found {
        Ok(addr) => addr.as_socket().map(canonical).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "SO_ORIGINAL_DST returned an address that is not IP",
            )
        }),
        Err(e) if not_translated(&e) => Ok(local),
        Err(e) => Err(e),
    }
}

/// Whether a connection whose original destination is `dst` was redirected
/// to the socket at `local` (not dialed there directly).
pub fn redirected(dst: SocketAddr, local: SocketAddr) -> bool {
    dst != canonical(local)
}

/// `ENOENT`: conntrack has no entry for the connection (nothing was
/// translated); `ENOPROTOOPT`: conntrack is not loaded at all, so nothing
/// can have been redirected.
fn not_translated(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOPROTOOPT))
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; other addresses unchanged.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// An accepted connection to a listener on `at`.
    async fn accepted(at: &str) -> Option<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind(at).await.ok()?;
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        Some((server, client))
    }

    #[tokio::test]
    async fn a_connection_that_was_not_redirected_has_its_local_address() {
        let (server, _client) = accepted("127.0.0.1:0").await.unwrap();
        let local = server.local_addr().unwrap();
        let dst = original_dst(&server).unwrap();
        assert_eq!(dst, local);
        assert!(!redirected(dst, local));
    }

    #[tokio::test]
    async fn ipv6_without_redirect_has_its_local_address() {
        // Hosts without IPv6 on loopback skip this case.
        let Some((server, _client)) = accepted("[::1]:0").await else {
            return;
        };
        let local = server.local_addr().unwrap();
        assert_eq!(original_dst(&server).unwrap(), local);
    }

    #[tokio::test]
    async fn ipv4_on_a_dual_stack_listener_comes_back_as_ipv4() {
        let Ok(listener) = TcpListener::bind("[::]:0").await else {
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let Ok(_client) = TcpStream::connect(("127.0.0.1", port)).await else {
            return; // IPV6_V6ONLY by default on this host
        };
        let (server, _) = listener.accept().await.unwrap();
        let local = server.local_addr().unwrap();
        assert!(local.ip().to_string().starts_with("::ffff:"), "{local}");
        let dst = original_dst(&server).unwrap();
        assert_eq!(dst, SocketAddr::from(([127, 0, 0, 1], port)));
        assert!(!redirected(dst, local), "mapped and plain are the same");
    }

    #[test]
    fn redirected_compares_canonical_addresses() {
        let local: SocketAddr = "127.0.0.1:4140".parse().unwrap();
        assert!(redirected("10.0.0.2:8080".parse().unwrap(), local));
        assert!(redirected("127.0.0.1:8080".parse().unwrap(), local));
        assert!(!redirected(local, local));
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:4143".parse().unwrap();
        assert!(!redirected("10.0.0.1:4143".parse().unwrap(), mapped));
        assert!(redirected(
            "[fd00::2]:8080".parse().unwrap(),
            "[::1]:4140".parse().unwrap()
        ));
    }
}

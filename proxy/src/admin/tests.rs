use super::*;

#[test]
fn only_loopback_peers_may_change_state_unless_allowed() {
    let rows: &[(&str, bool, bool)] = &[
        ("127.0.0.1:5000", false, true),
        ("127.8.9.10:5000", false, true),
        ("[::1]:5000", false, true),
        // IPv4 loopback as a dual-stack (::) socket reports it.
        ("[::ffff:127.0.0.1]:5000", false, true),
        ("10.0.0.1:5000", false, false),
        ("0.0.0.0:5000", false, false),
        ("192.168.1.20:5000", false, false),
        ("[::ffff:10.0.0.1]:5000", false, false),
        ("[fe80::1]:5000", false, false),
        ("[2001:db8::1]:5000", false, false),
        // Configured otherwise: anyone.
        ("10.0.0.1:5000", true, true),
        ("[2001:db8::1]:5000", true, true),
        ("127.0.0.1:5000", true, true),
    ];
    for (peer, allow, want) in rows {
        let peer: SocketAddr = peer.parse().unwrap();
        assert_eq!(
            peer_may_change(peer, *allow),
            *want,
            "{peer} allow_remote={allow}"
        );
    }
}

#[test]
fn state_changing_requests_from_elsewhere_get_403() {
    let remote: SocketAddr = "10.1.2.3:4000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let put = Method::PUT;
    let rsp = refuse_change(&put, "/log-level", remote, false).expect("refused");
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
    assert!(refuse_change(&put, "/log-level", local, false).is_none());
    assert!(refuse_change(&put, "/log-level", remote, true).is_none());
    let post = Method::POST;
    assert!(refuse_change(&post, "/shutdown", remote, false).is_some());
    assert!(refuse_change(&post, "/shutdown", local, false).is_none());
    // Reads stay open to everyone (probes and scrapes).
    for path in ["/log-level", "/metrics", "/ready", "/live", "/config"] {
        assert!(
            refuse_change(&Method::GET, path, remote, false).is_none(),
            "{path}"
        );
    }
}

#[test]
fn tap_from_elsewhere_gets_403_unless_allowed() {
    let remote: SocketAddr = "10.1.2.3:4000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let rsp = refuse_tap("/tap", remote, false).expect("refused");
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
    assert!(refuse_tap("/tap", local, false).is_none());
    assert!(refuse_tap("/tap", remote, true).is_none());
    // Other reads stay open.
    for path in ["/metrics", "/ready", "/config", "/explain"] {
        assert!(refuse_tap(path, remote, false).is_none(), "{path}");
    }
}

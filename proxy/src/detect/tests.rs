use super::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

#[test]
fn classify_first_bytes() {
    use Protocol::*;
    let cases: &[(&[u8], Option<Protocol>)] = &[
        (b"", None),
        (CLIENT_HELLO, Some(Tls)),
        (&[0x16], None),
        (&[0x16, 0x03], Some(Tls)),
        (&[0x16, 0x01], Some(Opaque)),
        (H2_PREFACE, Some(Http2)),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
            Some(Http2),
        ),
        (b"PRI * HTTP/2.0\r\n", None),
        (b"PRI", None),
        (b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", Some(Http1)),
        (b"GET / HTTP/1.1\r\n", Some(Http1)),
        (b"GET / HTTP/1.0\n", Some(Http1)),
        (b"POST /api/v1?q=a%20b HTTP/1.1\r\n", Some(Http1)),
        (b"OPTIONS * HTTP/1.1\r\n", Some(Http1)),
        (b"CONNECT example.com:443 HTTP/1.1\r\n", Some(Http1)),
        (b"PROPFIND /dav HTTP/1.1\r\n", Some(Http1)),
        (b"GET http://a.example/x HTTP/1.1\r\n", Some(Http1)),
        ("GET /caf\u{e9} HTTP/1.1\r\n".as_bytes(), Some(Http1)),
        // Prefixes of a request line: wait for more.
        (b"G", None),
        (b"GET", None),
        (b"GET ", None),
        (b"GET /index.ht", None),
        (b"GET / ", None),
        (b"GET / HTT", None),
        (b"GET / HTTP/1.", None),
        (b"GET / HTTP/1.1", None),
        (b"GET / HTTP/1.1\r", None),
        // Not HTTP.
        (b"GET / HTTP/2.0\r\n", Some(Opaque)),
        (b"GET / HTTP/1.x\r\n", Some(Opaque)),
        (b"GET / HTTP/1.1\rX", Some(Opaque)),
        (b"GET  / HTTP/1.1\r\n", Some(Opaque)),
        (b" GET / HTTP/1.1\r\n", Some(Opaque)),
        (b"GET /\x01 HTTP/1.1\r\n", Some(Opaque)),
        (b"SSH-2.0-OpenSSH_9.6\r\n", Some(Opaque)),
        (b"*1\r\n$4\r\nPING\r\n", Some(Opaque)),
        (b"PING\r\n", Some(Opaque)),
        (b"get key\r\n", Some(Opaque)),
        (b"SET key value\r\n", Some(Opaque)),
        (
            &[0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f],
            Some(Opaque),
        ),
        (&[0x80, 0x01, 0x02], Some(Opaque)),
        (b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Some(Opaque)),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            classify(bytes),
            *want,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn guess_when_no_more_bytes_come() {
    use Protocol::*;
    let cases: &[(&[u8], Protocol)] = &[
        (b"", Opaque),
        (&[0x16], Opaque),
        (b"GET / HTTP/1.1\r\n", Http1),
        (b"GET /a-very-long-url", Http1),
        (b"POST /x HTTP/1.", Http1),
        (b"GET", Opaque),
        (b"GET ", Opaque),
        (b"FOO /x", Opaque),
        (b"PRI * HTTP/2.0\r\n", Http2),
        (b"PRI", Opaque),
        (b"hello", Opaque),
    ];
    for (bytes, want) in cases {
        assert_eq!(guess(bytes), *want, "{:?}", String::from_utf8_lossy(bytes));
    }
    let mut long = b"GET /".to_vec();
    long.resize(MAX_BYTES, b'a');
    assert_eq!(classify(&long), None);
    assert_eq!(guess(&long), Http1, "a long URL is judged on its start");
}

#[test]
fn server_speaks_first_ports() {
    for port in [25, 587, 3306, 5432, 6379, 11211] {
        assert!(server_speaks_first(port), "{port}");
    }
    for port in [0, 80, 443, 8080, 4140] {
        assert!(!server_speaks_first(port), "{port}");
    }
}

/// A connected pair of sockets on loopback: (client, server side).
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server, _) = l.accept().await.unwrap();
    (client, server)
}

#[tokio::test]
async fn peek_consumes_nothing_and_waits_for_a_split_line() {
    let (mut client, mut server) = pair().await;
    client.write_all(b"GET /ind").await.unwrap();
    let write_rest = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.write_all(b"ex HTTP/1.1\r\n").await.unwrap();
    };
    let (d, ()) = tokio::join!(peek(&server, 8080, Duration::from_secs(10)), write_rest);
    assert_eq!((d.protocol, d.reason), (Protocol::Http1, Reason::Detected));
    let want = b"GET /index HTTP/1.1\r\n";
    let mut got = vec![0u8; want.len()];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, want, "peeking consumed nothing");
}

#[tokio::test]
async fn undecided_bytes_then_silence_end_at_the_timeout() {
    // `ping` without a newline could still become a request line: wait for
    // more, and at the deadline give a verdict (this once spun forever).
    let (mut client, server) = pair().await;
    client.write_all(b"ping").await.unwrap();
    let d = tokio::time::timeout(
        Duration::from_secs(5),
        peek(&server, 8080, Duration::from_millis(100)),
    )
    .await
    .expect("detection ends at its deadline");
    assert_eq!((d.protocol, d.reason), (Protocol::Opaque, Reason::Timeout));
}

#[tokio::test]
async fn silence_is_opaque_after_the_timeout() {
    let (_client, server) = pair().await;
    let d = peek(&server, 8080, Duration::from_millis(100)).await;
    assert_eq!((d.protocol, d.reason), (Protocol::Opaque, Reason::Timeout));
    assert!(d.took.unwrap() >= Duration::from_millis(100));
}

#[tokio::test]
async fn a_server_speaks_first_port_is_not_waited_for() {
    let (_client, server) = pair().await;
    let d = tokio::time::timeout(
        Duration::from_secs(5),
        peek(&server, 5432, Duration::from_secs(3600)),
    )
    .await
    .expect("no waiting");
    assert_eq!(d, Detection::opaque(Reason::ServerSpeaksFirst));
}

#[tokio::test]
async fn read_then_rewind_gives_every_byte_back() {
    let (mut client, mut server) = tokio::io::duplex(64);
    client.write_all(H2_PREFACE).await.unwrap();
    client.write_all(b"frames").await.unwrap();
    drop(client);
    let (d, prefix) = read(&mut server, 8080, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((d.protocol, d.reason), (Protocol::Http2, Reason::Detected));
    let mut all = Vec::new();
    Rewind::new(prefix, server)
        .read_to_end(&mut all)
        .await
        .unwrap();
    assert_eq!(all, [H2_PREFACE, b"frames"].concat());
}

#[tokio::test]
async fn read_of_a_silent_stream_times_out() {
    let (_client, mut server) = tokio::io::duplex(64);
    let (d, prefix) = read(&mut server, 8080, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!((d.protocol, d.reason), (Protocol::Opaque, Reason::Timeout));
    assert!(prefix.is_empty());
}

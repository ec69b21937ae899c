use super::*;

/// One row: method, target, version, header lines, and the expected result.
type Row = (
    &'static str,
    &'static str,
    Version,
    &'static [(&'static str, &'static str)],
    Result<(), Violation>,
);

const H11: Version = Version::HTTP_11;
const H10: Version = Version::HTTP_10;
const H2: Version = Version::HTTP_2;

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // Host (RFC 9112 §3.2)
    ("GET", "/", H11, &[("host", "a")], Ok(())),
    ("GET", "/", H11, &[("host", "a:8080")], Ok(())),
    ("GET", "/", H11, &[("host", "[::1]:8080")], Ok(())),
    ("GET", "/", H11, &[("host", "")], Ok(())),
    ("GET", "/", H11, &[], Err(Violation::MissingHost)),
    ("GET", "/", H10, &[], Ok(())),
    ("GET", "/", H11, &[("host", "a"), ("host", "b")], Err(Violation::MultipleHosts)),
    ("GET", "/", H11, &[("host", "a"), ("host", "a")], Err(Violation::MultipleHosts)),
    ("GET", "/", H11, &[("host", "a@b")], Err(Violation::InvalidHost)),
    ("GET", "/", H11, &[("host", "a/b")], Err(Violation::InvalidHost)),
    ("GET", "/", H11, &[("host", "a:http")], Err(Violation::InvalidHost)),
    ("GET", "/", H11, &[("host", "a:99999")], Err(Violation::InvalidHost)),
    ("GET", "/", H11, &[("host", "[::1")], Err(Violation::InvalidHost)),
    ("GET", "/", H11, &[("host", "[zz]")], Err(Violation::InvalidHost)),
    // absolute-form against Host (RFC 9112 §3.2.2)
    ("GET", "http://a/", H11, &[("host", "a")], Ok(())),
    ("GET", "http://A:80/", H11, &[("host", "a")], Ok(())),
    ("GET", "https://a/", H11, &[("host", "a:443")], Ok(())),
    ("GET", "http://a/", H11, &[("host", "b")], Err(Violation::HostMismatch)),
    ("GET", "http://a:8080/", H11, &[("host", "a")], Err(Violation::HostMismatch)),
    ("GET", "http://a/", H11, &[], Err(Violation::MissingHost)),
    // HTTP/2 :authority against host (RFC 9113 §8.3.1)
    ("GET", "http://a/", H2, &[], Ok(())),
    ("GET", "http://a/", H2, &[("host", "a")], Ok(())),
    ("GET", "http://a/", H2, &[("host", "b")], Err(Violation::HostMismatch)),
    ("GET", "/", H2, &[], Ok(())),
    // Transfer-Encoding (RFC 9112 §6.1)
    ("POST", "/", H11, &[("host", "a"), ("transfer-encoding", "chunked")], Ok(())),
    ("POST", "/", H11, &[("host", "a"), ("transfer-encoding", "Chunked")], Ok(())),
    ("POST", "/", H11, &[("host", "a"), ("transfer-encoding", "gzip, chunked")], Err(Violation::UnsupportedTransferCoding)),
    ("POST", "/", H11, &[("host", "a"), ("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")], Err(Violation::UnsupportedTransferCoding)),
    ("POST", "/", H10, &[("transfer-encoding", "chunked")], Err(Violation::TransferEncodingInHttp10)),
    ("POST", "/", H11, &[("host", "a"), ("content-length", "3")], Ok(())),
    // CONNECT (RFC 9110 §9.3.6)
    ("CONNECT", "a:443", H11, &[("host", "a:443")], Err(Violation::Connect)),
];

#[test]
fn every_rule() {
    for (i, (method, target, version, lines, want)) in ROWS.iter().enumerate() {
        let mut headers = HeaderMap::new();
        for (k, v) in *lines {
            headers.append(*k, v.parse().unwrap());
        }
        let uri: Uri = target.parse().unwrap();
        let got = check(&method.parse().unwrap(), &uri, *version, &headers);
        assert_eq!(
            got, *want,
            "row {i}: {method} {target} {version:?} {lines:?}"
        );
    }
}

#[test]
fn statuses_and_causes() {
    assert_eq!(Violation::HostMismatch.status(), 400);
    assert_eq!(Violation::HostMismatch.cause(), "bad-request");
    assert_eq!(Violation::Connect.status(), 501);
    assert_eq!(
        Violation::UnsupportedTransferCoding.cause(),
        "not-implemented"
    );
}

#[test]
fn max_forwards_only_for_trace_and_options() {
    let h = |v: &str| {
        let mut m = HeaderMap::new();
        m.insert(header::MAX_FORWARDS, v.parse().unwrap());
        m
    };
    let rows: &[(Method, HeaderMap, MaxForwards)] = &[
        (Method::OPTIONS, h("0"), MaxForwards::Answer),
        (Method::TRACE, h("0"), MaxForwards::Answer),
        (Method::OPTIONS, h("3"), MaxForwards::Forward(2)),
        (Method::OPTIONS, h("1"), MaxForwards::Forward(0)),
        (
            Method::OPTIONS,
            h("99999999999"),
            MaxForwards::Forward(u32::MAX),
        ),
        (Method::OPTIONS, h("x"), MaxForwards::Ignore),
        (Method::OPTIONS, HeaderMap::new(), MaxForwards::Ignore),
        (Method::GET, h("0"), MaxForwards::Ignore),
        (Method::POST, h("0"), MaxForwards::Ignore),
    ];
    for (method, headers, want) in rows {
        assert_eq!(max_forwards(method, headers), *want, "{method} {headers:?}");
    }
}

use super::*;
use rcgen::CertifiedIssuer;
use x509_parser::extensions::{GeneralName, ParsedExtension};

const ID: &str = "spiffe://example.org/ns/shop/sa/web";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn ca_params(cn: &str, not_after: SystemTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_after = asn1_time(not_after);
    p
}

/// A root CA: the issuer, its certificate PEM and its key PEM.
fn root(cn: &str) -> (CertifiedIssuer<'static, KeyPair>, String, String) {
    let key = KeyPair::generate().unwrap();
    let key_pem = key.serialize_pem();
    let later = SystemTime::now() + 365 * DAY;
    let issuer = CertifiedIssuer::self_signed(ca_params(cn, later), key).unwrap();
    let pem = issuer.pem();
    (issuer, pem, key_pem)
}

/// A CSR asking for much more than it gets.
fn greedy_csr() -> (String, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    p.subject_alt_names.push(SanType::URI(
        "spiffe://example.org/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    ));
    p.distinguished_name.push(DnType::CommonName, "admin");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    (p.serialize_request(&key).unwrap().pem().unwrap(), key)
}

fn ders(chain: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_leaf_has_the_spiffe_id_only_whatever_the_csr_asks() {
    let now = SystemTime::now();
    let (cert, key, _) = dev_root("example.org", now).unwrap();
    let ca = Ca::from_pem(&cert, &key, None, Duration::from_secs(600)).unwrap();
    assert_eq!(ca.trust_roots(), std::slice::from_ref(&cert));
    let (csr, csr_key) = greedy_csr();
    let issued = ca.issue(&csr, ID, now).unwrap();

    let chain = ders(&issued.chain);
    assert_eq!(chain.len(), 1, "a root CA sends the leaf alone");
    let leaf = parse(&chain[0]).unwrap();
    let root_der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let root = parse(&root_der).unwrap();
    leaf.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(leaf.issuer(), root.subject());
    assert_eq!(leaf.subject().iter().count(), 0, "empty subject");
    assert_eq!(leaf.public_key().raw, csr_key.subject_public_key_info());

    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "an empty subject makes the SAN critical");
    assert_eq!(san.value.general_names, [GeneralName::URI(ID)]);
    let bc = leaf.basic_constraints().unwrap().unwrap().value;
    assert!(!bc.ca);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.key_encipherment());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.code_signing && eku.other.is_empty());
    assert!(leaf.extensions().iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::AuthorityKeyIdentifier(_)
    )));

    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let v = leaf.validity();
    assert_eq!(v.not_before.timestamp(), secs(now) - 60);
    assert_eq!(v.not_after.timestamp(), secs(now) + 600);
    assert_eq!(secs(issued.not_after), secs(now) + 600);
    assert_eq!(issued.serial.len(), 32);
    assert_eq!(
        u128::from_str_radix(&issued.serial, 16)
            .unwrap()
            .to_be_bytes()
            .to_vec(),
        leaf.raw_serial().to_vec()
    );
    // Each certificate gets its own serial.
    assert_ne!(ca.issue(&csr, ID, now).unwrap().serial, issued.serial);
}

#[test]
fn an_intermediate_ca_sends_its_chain_and_trusts_the_root_above_it() {
    let (root, root_pem, _) = root("root");
    let key = KeyPair::generate().unwrap();
    let key_pem = key.serialize_pem();
    let later = SystemTime::now() + 30 * DAY;
    let inter = CertifiedIssuer::signed_by(ca_params("intermediate", later), key, &root).unwrap();
    let inter_pem = inter.pem();

    let ca = Ca::from_pem(&format!("{inter_pem}{root_pem}"), &key_pem, None, DAY).unwrap();
    assert_eq!(ca.trust_roots(), std::slice::from_ref(&root_pem));
    let now = SystemTime::now();
    let issued = ca.issue(&greedy_csr().0, ID, now).unwrap();
    let chain = ders(&issued.chain);
    assert_eq!(chain.len(), 2, "leaf and intermediate, not the root");
    assert_eq!(chain[1], *inter.der());
    let (leaf, inter_cert) = (parse(&chain[0]).unwrap(), parse(&chain[1]).unwrap());
    leaf.verify_signature(Some(inter_cert.public_key()))
        .unwrap();

    let err = Ca::from_pem(&inter_pem, &key_pem, None, DAY).err().unwrap();
    assert!(err.contains("--trust-roots"), "{err}");
    let (_, other_root, _) = self::root("another root");
    let both = format!("{other_root}{root_pem}");
    let ca = Ca::from_pem(&inter_pem, &key_pem, Some(&both), DAY).unwrap();
    assert_eq!(
        ca.trust_roots(),
        [other_root.clone(), root_pem],
        "a rotation bundle"
    );
    let err = Ca::from_pem(&inter_pem, &key_pem, Some(&other_root), DAY)
        .err()
        .unwrap();
    assert!(
        err.contains("does not lead to any of the trust roots"),
        "{err}"
    );
}

#[test]
fn a_leaf_never_outlives_its_ca() {
    let key = KeyPair::generate().unwrap();
    let key_pem = key.serialize_pem();
    let ca_end = SystemTime::now() + Duration::from_secs(3600);
    let cert = ca_params("short", ca_end).self_signed(&key).unwrap().pem();
    let ca = Ca::from_pem(&cert, &key_pem, None, DAY).unwrap();
    let issued = ca.issue(&greedy_csr().0, ID, SystemTime::now()).unwrap();
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(issued.not_after), secs(ca_end));
}

#[test]
fn unusable_cas_are_refused_with_a_reason() {
    let (_, root_pem, root_key) = root("root");
    let other_key = KeyPair::generate().unwrap().serialize_pem();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    let expired = {
        let mut p = ca_params("old", SystemTime::now() - DAY);
        p.not_before = asn1_time(SystemTime::now() - 2 * DAY);
        p.self_signed(&key).unwrap().pem()
    };
    let cases = [
        ("", root_key.as_str(), DAY, "no PEM certificate"),
        (&root_pem, &other_key, DAY, "does not belong"),
        (&root_pem, "junk", DAY, "no private key"),
        (&leaf, &key.serialize_pem(), DAY, "not a CA"),
        (&expired, &key.serialize_pem(), DAY, "expired"),
        (&root_pem, &root_key, Duration::ZERO, "lifetime"),
    ];
    for (cert, key, lifetime, want) in cases {
        let err = Ca::from_pem(cert, key, None, lifetime).err().unwrap();
        assert!(err.contains(want), "want {want:?}, got {err:?}");
    }
}

#[test]
fn bad_csrs_are_refused() {
    let (cert, key, _) = dev_root("example.org", SystemTime::now()).unwrap();
    let ca = Ca::from_pem(&cert, &key, None, DAY).unwrap();
    let (csr, _) = greedy_csr();
    // One base64 digit near the end: a byte of the signature.
    let mut lines: Vec<String> = csr.lines().map(str::to_string).collect();
    let last = lines.len() - 2;
    let digits = lines[last].trim_end_matches('=').len();
    let mut chars: Vec<char> = lines[last].chars().collect();
    chars[digits - 4] = if chars[digits - 4] == 'A' { 'B' } else { 'A' };
    lines[last] = chars.into_iter().collect();
    let tampered = lines.join("\n");
    for (what, csr, want) in [
        ("not PEM", "hello", "Could not parse"),
        ("a certificate, not a CSR", cert.as_str(), "Could not parse"),
        ("a signature that does not verify", &tampered, "signature"),
    ] {
        match ca.issue(csr, ID, SystemTime::now()) {
            Err(Error::BadCsr(msg)) => assert!(msg.contains(want), "{what}: {msg}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn init_writes_a_dev_root_once() {
    let dir = remora_test_support::proxy::tempdir();
    let sub = dir.path().join("ca");
    let (cert, key, not_after) = init(&sub, "example.org").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(&cert).unwrap();
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let x = parse(&der).unwrap();
    assert!(x.is_ca() && self_signed(&x));
    assert!(x.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert!(x.subject().to_string().contains("example.org"));
    let years = not_after
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs()
        / (365 * 86400);
    assert_eq!(years, 9, "about ten years");
    let key_pem = std::fs::read_to_string(&key).unwrap();
    assert!(key_pem.contains("BEGIN PRIVATE KEY"));
    Ca::from_pem(&pem, &key_pem, None, DAY).unwrap();
    let again = init(&sub, "example.org").err().unwrap().to_string();
    assert!(again.contains("already exists"), "{again}");
}

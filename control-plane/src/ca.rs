//! The certificate authority: it signs short-lived workload certificates
//! whose only name is the workload's SPIFFE ID.
//!
//! The CA is a certificate and its PKCS#8 key from files (`run --ca-cert
//! --ca-key`): a root, or an intermediate followed in the same file by its
//! chain up. The trust roots proxies get (`--trust-roots`, several during a
//! rotation) default to the self-signed certificate at the top of that file.
//! [`Ca::issue`] takes a CSR's public key and nothing else from it. [`init`]
//! writes a development root (`remora-control-plane ca init`).

use crate::Error;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use x509_parser::certificate::X509Certificate;

/// Certificates are valid from this long before they are issued, so a
/// proxy whose clock is a little behind accepts them.
pub const BACKDATE: Duration = Duration::from_secs(60);
/// The default certificate lifetime (`--cert-lifetime`).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How long a development root from [`init`] is valid.
const DEV_ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Where the CA comes from, and how long its certificates live.
#[derive(Clone, Debug)]
pub struct CaSettings {
    /// PEM: the CA certificate, then (for an intermediate) its chain up.
    pub cert: PathBuf,
    /// PEM, PKCS#8: the CA certificate's private key.
    pub key: PathBuf,
    /// PEM bundle of the roots proxies trust; default: the top of `cert`.
    pub trust_roots: Option<PathBuf>,
    /// How certificate requests prove their workload: join tokens or
    /// Kubernetes ServiceAccount tokens.
    pub credentials: crate::auth::Credentials,
    pub lifetime: Duration,
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The intermediates sent after each leaf, PEM (empty for a root CA).
    intermediates: String,
    trust_roots: Vec<String>,
    /// The CA certificate's own expiry: no leaf outlives it.
    not_after: SystemTime,
    lifetime: Duration,
}

/// A certificate the CA signed.
#[derive(Clone, Debug)]
pub struct Issued {
    /// PEM: the leaf, then the CA's intermediates.
    pub chain: String,
    pub not_after: SystemTime,
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
}

impl Ca {
    /// Reads the CA's files; every error names the file and what is wrong.
    pub fn from_files(s: &CaSettings) -> anyhow::Result<Ca> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
        };
        let cert = read(&s.cert)?;
        let key = read(&s.key)?;
        let roots = s.trust_roots.as_deref().map(read).transpose()?;
        Ca::from_pem(&cert, &key, roots.as_deref(), s.lifetime)
            .map_err(|e| anyhow::anyhow!("CA {} (key {}): {e}", s.cert.display(), s.key.display()))
    }

    /// The CA from PEM text: `cert` (the CA certificate, then its chain up),
    /// its `key`, and optionally a bundle of trust `roots`.
    pub fn from_pem(
        cert: &str,
        key: &str,
        roots: Option<&str>,
        lifetime: Duration,
    ) -> Result<Ca, String> {
        if lifetime.is_zero() {
            return Err("the certificate lifetime must be more than 0".into());
        }
        let chain = pem_certificates(cert)?;
        let (issuer, not_after) = signer(&chain[0].1, key)?;
        // The chain a leaf needs: every certificate of the file but a root.
        let mut intermediates = String::new();
        for (pem, der) in &chain {
            if !self_signed(&parse(der)?) {
                intermediates.push_str(pem);
            }
        }
        let trust_roots = trust_roots(&chain[chain.len() - 1], roots)?;
        Ok(Ca {
            issuer,
            intermediates,
            trust_roots,
            not_after,
            lifetime,
        })
    }

    /// The trust roots, PEM, one per entry.
    pub fn trust_roots(&self) -> &[String] {
        &self.trust_roots
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Signs a certificate for `spiffe_id` with the public key of `csr_pem`
    /// (whose signature must verify). Every name, usage or extension the CSR
    /// asks for is ignored: the leaf has the SPIFFE ID as its only (URI) SAN,
    /// an empty subject, `digitalSignature`, `serverAuth` and `clientAuth`,
    /// and is valid from `now` − [`BACKDATE`] to `now` + the lifetime (at
    /// most to the CA's own expiry).
    pub fn issue(&self, csr_pem: &str, spiffe_id: &str, now: SystemTime) -> Result<Issued, Error> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = spiffe_id
            .try_into()
            .map_err(|e| Error::Internal(format!("SPIFFE ID `{spiffe_id}`: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let not_after = (now + self.lifetime).min(self.not_after);
        params.not_before = asn1_time(now - BACKDATE);
        params.not_after = asn1_time(not_after);
        let serial = random_serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let leaf = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| Error::Internal(format!("signing: {e}")))?;
        Ok(Issued {
            chain: format!("{}{}", leaf.pem(), self.intermediates),
            // The time as encoded: whole seconds.
            not_after: unix(asn1_time(not_after).unix_timestamp()),
            serial: serial.iter().map(|b| format!("{b:02X}")).collect(),
        })
    }
}

impl Ca {
    /// A server certificate for the control plane's own port (`run
    /// --tls-cert`), for `names` (IP addresses and DNS names), with a new
    /// key: the chain PEM (leaf, then intermediates) and the PKCS#8 key PEM.
    /// Valid as long as workload certificates are, at most to the CA's expiry.
    pub fn serving_certificate(
        &self,
        names: &[String],
        now: SystemTime,
    ) -> Result<(String, String), Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::Internal(format!("key: {e}")))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| Error::Internal(e.to_string()))?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "remora-control-plane");
        for n in names {
            params.subject_alt_names.push(match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    n.as_str()
                        .try_into()
                        .map_err(|e| Error::Internal(format!("name `{n}`: {e}")))?,
                ),
            });
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = asn1_time(now - BACKDATE);
        params.not_after = asn1_time((now + self.lifetime).min(self.not_after));
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| Error::Internal(format!("signing: {e}")))?;
        Ok((
            format!("{}{}", leaf.pem(), self.intermediates),
            key.serialize_pem(),
        ))
    }
}

/// The CA certificate checked (a CA that may sign, not expired) with its
/// key checked (PKCS#8, the certificate's): an issuer, and its expiry.
fn signer(
    der: &CertificateDer<'_>,
    key: &str,
) -> Result<(Issuer<'static, KeyPair>, SystemTime), String> {
    let ca = parse(der)?;
    if !ca.is_ca() {
        return Err("the certificate is not a CA (basicConstraints CA:TRUE is missing)".into());
    }
    if ca
        .key_usage()
        .ok()
        .flatten()
        .is_some_and(|ku| !ku.value.key_cert_sign())
    {
        return Err("the CA certificate's keyUsage lacks keyCertSign".into());
    }
    let not_after = unix(ca.validity().not_after.timestamp());
    if not_after <= SystemTime::now() {
        return Err("the CA certificate has expired".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| format!("no private key: {e}"))?;
    if !matches!(key, PrivateKeyDer::Pkcs8(_)) {
        return Err("the key must be PKCS#8 (`BEGIN PRIVATE KEY`); convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`".into());
    }
    let key = KeyPair::try_from(&key).map_err(|e| format!("unusable key: {e}"))?;
    if key.subject_public_key_info() != ca.public_key().raw {
        return Err("the key does not belong to the CA certificate".into());
    }
    let issuer = Issuer::from_ca_cert_der(der, key)
        .map_err(|e| format!("cannot sign with this certificate: {e}"))?;
    Ok((issuer, not_after))
}

/// The trust roots: the `roots` bundle, or else `top` (the last
/// certificate of the CA file) if it is a root; checked to be where `top`
/// leads.
fn trust_roots(
    (top_pem, top_der): &(String, CertificateDer<'static>),
    roots: Option<&str>,
) -> Result<Vec<String>, String> {
    let top = parse(top_der)?;
    let roots: Vec<String> = match roots {
        Some(text) => pem_certificates(text)
            .map_err(|e| format!("trust roots: {e}"))?
            .into_iter()
            .map(|(pem, _)| pem)
            .collect(),
        None if self_signed(&top) => vec![top_pem.clone()],
        None => return Err("the file ends with an intermediate, not a root: give --trust-roots with the root it chains to".into()),
    };
    if !leads_to(&top, top_der, &roots)? {
        return Err("the CA chain does not lead to any of the trust roots".into());
    }
    Ok(roots)
}

/// Writes a development root CA (ECDSA P-256, valid 10 years) into `dir` as
/// `ca.crt` and `ca.key` (mode 0600); refuses to overwrite either. Returns
/// both paths and the root's expiry.
pub fn init(dir: &Path, trust_domain: &str) -> anyhow::Result<(PathBuf, PathBuf, SystemTime)> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            anyhow::bail!(
                "{} already exists: remove it, or use another --dir",
                p.display()
            );
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let (cert, key, not_after) = dev_root(trust_domain, SystemTime::now())?;
    let write = |path: &Path, mode: u32, text: &str| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    };
    write(&key_path, 0o600, &key)?;
    write(&cert_path, 0o644, &cert)?;
    Ok((cert_path, key_path, not_after))
}

/// A self-signed root for development: `(certificate PEM, key PEM, expiry)`.
pub fn dev_root(
    trust_domain: &str,
    now: SystemTime,
) -> Result<(String, String, SystemTime), rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Remora");
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Remora development root CA ({trust_domain})"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let not_after = unix(asn1_time(now + DEV_ROOT_LIFETIME).unix_timestamp());
    params.not_before = asn1_time(now - BACKDATE);
    params.not_after = asn1_time(not_after);
    let serial = random_serial().map_err(|_| rcgen::Error::RingUnspecified)?;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// When the first certificate of a PEM text (a CA file: the CA's) expires.
pub fn expiry(pem: &str) -> Result<SystemTime, String> {
    let chain = pem_certificates(pem)?;
    Ok(unix(parse(&chain[0].1)?.validity().not_after.timestamp()))
}

/// Each `CERTIFICATE` block of a PEM text: its text (ending in a newline)
/// and its DER.
fn pem_certificates(text: &str) -> Result<Vec<(String, CertificateDer<'static>)>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            return Err("a certificate has no END line".into());
        };
        let block = format!("{}\n", &rest[start..start + len + END.len()]);
        let der = CertificateDer::from_pem_slice(block.as_bytes())
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        parse(&der)?;
        out.push((block, der));
        rest = &rest[start + len + END.len()..];
    }
    if out.is_empty() {
        return Err("no PEM certificate (`BEGIN CERTIFICATE`) found".into());
    }
    Ok(out)
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, c)| c)
        .map_err(|e| format!("not an X.509 certificate: {e}"))
}

fn self_signed(c: &X509Certificate<'_>) -> bool {
    c.subject() == c.issuer() && c.verify_signature(None).is_ok()
}

/// Whether `top` is one of `roots` or signed by one of them.
fn leads_to(
    top: &X509Certificate<'_>,
    top_der: &CertificateDer<'_>,
    roots: &[String],
) -> Result<bool, String> {
    for root in roots {
        let der = CertificateDer::from_pem_slice(root.as_bytes())
            .map_err(|e| format!("trust roots: {e}"))?;
        let root = parse(&der)?;
        if der.as_ref() == top_der.as_ref()
            || (top.issuer() == root.subject()
                && top.verify_signature(Some(root.public_key())).is_ok())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// 16 random bytes, the first in 0x10..0x80: positive, and printed by
/// OpenSSL with exactly 32 hex digits.
/// 16 bytes from the system's CSPRNG (serials must be unpredictable), the
/// first one in 0x10..0x80: positive, and always 16 bytes long.
fn random_serial() -> Result<[u8; 16], Error> {
    let mut serial = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|_| Error::Internal("the system's random source failed".into()))?;
    serial[0] = 0x10 + serial[0] % 0x70;
    Ok(serial)
}

fn asn1_time(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn unix(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

#[cfg(test)]
mod tests;

//! Dialing the control plane, for the snapshot stream and for certificate
//! requests: plain TCP, or TLS when `--control-plane-ca` names the roots its
//! certificate chains to. The certificate must be for `--control-plane-name`,
//! by default the IP address of `--control-plane` (an IP SAN). Over TLS the
//! proxy presents its mesh certificate when it has one.

use crate::http::client::Conn;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Where the control plane is and how to reach it.
#[derive(Clone)]
pub struct Dial {
    pub address: SocketAddr,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dial")
            .field("address", &self.address)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

impl Dial {
    /// Plain TCP (the control plane on loopback or a trusted network).
    pub fn plain(address: SocketAddr) -> Dial {
        Dial { address, tls: None }
    }

    /// TLS, verifying the control plane's certificate against the PEM
    /// roots in `ca`, for `name` (default: the address's IP).
    pub fn tls(address: SocketAddr, ca: &Path, name: Option<&str>) -> Result<Dial, String> {
        let roots = crate::tls::roots(ca)?;
        let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            // The proxy's mesh certificate, once it has one: a control plane
            // that asks checks it is the workload's.
            .with_client_cert_resolver(crate::identity::tls::client_cert_resolver(
                crate::identity::global(),
            ));
        // A resumed session keeps the first handshake's client certificate
        // (or its absence): every connection does a full handshake instead.
        config.resumption = rustls::client::Resumption::disabled();
        let name = match name {
            Some(n) => ServerName::try_from(n.to_string())
                .map_err(|e| format!("--control-plane-name {n}: {e}"))?,
            None => ServerName::IpAddress(address.ip().into()),
        };
        Ok(Dial {
            address,
            tls: Some((Arc::new(config), name)),
        })
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A connection, TLS handshake done when it is TLS.
    pub async fn connect(&self) -> std::io::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(self.address).await?;
        let _ = tcp.set_nodelay(true);
        let Some((config, name)) = &self.tls else {
            return Ok(Conn::Plain(tcp));
        };
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name.clone(), tcp)
            .await?;
        Ok(Conn::Tls(Box::new(tls)))
    }
}

//! Dialing the control plane, for the snapshot stream and for certificate
//! requests: plain TCP, or TLS when `--control-plane-ca` names the roots its
//! certificate chains to. `--control-plane` is `host:port`, the host an IP
//! address or a DNS name resolved again at each connection attempt (a
//! Kubernetes Service name follows the Service). The certificate must be
//! for `--control-plane-name`, by default the host of `--control-plane` (an
//! IP SAN or a DNS SAN). Over TLS the proxy presents its mesh certificate
//! when it has one.

use crate::http::client::Conn;
use rustls::pki_types::ServerName;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// `host:port` of the control plane: an IP address or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    host: Host,
    port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address {
            host: Host::Ip(a.ip()),
            port: a.port(),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

impl std::str::FromStr for Address {
    type Err = String;

    /// `10.0.0.1:8086`, `[::1]:8086` or `name.example:8086`.
    fn from_str(s: &str) -> Result<Address, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(a.into());
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}`: expected host:port"))?;
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("`{s}`: `{port}` is not a port (1-65535)")),
        };
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !name_ok {
            return Err(format!(
                "`{s}`: `{host}` is neither an IP address nor a DNS name"
            ));
        }
        Ok(Address {
            host: Host::Name(host.to_ascii_lowercase()),
            port,
        })
    }
}

impl Address {
    /// The name a certificate for this host is checked against.
    fn server_name(&self) -> Result<ServerName<'static>, String> {
        match &self.host {
            Host::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
            Host::Name(n) => ServerName::try_from(n.clone()).map_err(|e| format!("{n}: {e}")),
        }
    }

    /// A TCP connection: to the IP address, or to the first of the name's
    /// addresses (looked up now) that accepts.
    async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        let name = match &self.host {
            Host::Ip(ip) => return tokio::net::TcpStream::connect((*ip, self.port)).await,
            Host::Name(n) => n,
        };
        let mut last = None;
        for addr in tokio::net::lookup_host((name.as_str(), self.port)).await? {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{name} has no address"),
            )
        }))
    }
}

/// Where the control plane is and how to reach it.
#[derive(Clone)]
pub struct Dial {
    pub address: Address,
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
    pub fn plain(address: impl Into<Address>) -> Dial {
        Dial {
            address: address.into(),
            tls: None,
        }
    }

    /// TLS, verifying the control plane's certificate against `roots`
    /// (see [`crate::tls::roots`], [`crate::tls::roots_from_pem`]), for
    /// `name` (default: the address's host).
    pub fn tls(
        address: impl Into<Address>,
        roots: rustls::RootCertStore,
        name: Option<&str>,
    ) -> Result<Dial, String> {
        let address = address.into();
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
            None => address
                .server_name()
                .map_err(|e| format!("--control-plane {e}"))?,
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
        let tcp = self.address.connect().await?;
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

#[cfg(test)]
mod tests {
    use super::Address;

    #[test]
    fn addresses() {
        for (input, shown) in [
            ("127.0.0.1:8086", "127.0.0.1:8086"),
            ("[::1]:8086", "[::1]:8086"),
            ("localhost:1", "localhost:1"),
            (
                "Remora-Control-Plane.remora-system.svc:8086",
                "remora-control-plane.remora-system.svc:8086",
            ),
        ] {
            let a: Address = input.parse().unwrap();
            assert_eq!(a.to_string(), shown, "{input}");
        }
        for bad in [
            "localhost",
            "host:0",
            "host:http",
            ":80",
            "a..b:80",
            "-a:80",
            "a_b:80",
            "::1:80",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad} parsed");
        }
    }
}

//! Where HTTP goes that matches no route of a transparent outbound
//! listener: the redirected connection's original destination.

use crate::balance::Backend;
use crate::snapshot::ListenerTable;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// The original destination of a redirected connection, for its HTTP
/// requests that match no route: the snapshot's backend with an endpoint
/// there (mutual TLS as that backend says), else the address itself in
/// plaintext, through a backend named `passthrough` made for the
/// connection on its first such request (its upstream connection pooled).
pub struct Passthrough {
    addr: SocketAddr,
    direct: OnceLock<Arc<Backend>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passthrough")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Passthrough {
    pub fn new(addr: SocketAddr, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Passthrough {
            addr,
            direct: OnceLock::new(),
            metrics,
        }
    }

    /// The address the client dialed.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend requests to this destination go through.
    pub fn backend<'a>(&'a self, listener: &'a ListenerTable) -> &'a Arc<Backend> {
        let known = listener.original_destination.as_ref();
        match known.and_then(|index| index.get(&self.addr)) {
            Some((backend, _)) => backend,
            None => self.direct.get_or_init(|| {
                let name = crate::tcp::PASSTHROUGH;
                let transport = super::client::Transport {
                    tls: None,
                    identity: None,
                    connect_timeout: remora_api::defaults::connect_timeout().get(),
                    idle_timeout: remora_api::defaults::idle_timeout().get(),
                    max_idle: 1,
                };
                let client = super::client::EndpointClient::new(
                    self.addr,
                    transport,
                    self.metrics.upstream(name),
                );
                let ep = Arc::new(crate::balance::Endpoint::new(self.addr, client));
                let mut backend = Backend::new(
                    name.into(),
                    vec![(ep, 1)],
                    &remora_api::Balancer::default(),
                    remora_api::UpstreamProtocol::Auto,
                );
                backend.metrics = self.metrics.backend(name);
                Arc::new(backend)
            }),
        }
    }
}

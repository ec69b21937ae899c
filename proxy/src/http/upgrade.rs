//! HTTP/1.1 Upgrade (e.g. WebSocket) pass-through: once the upstream answers
//! 101, the two upgraded connections are joined and bytes copied both ways.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Joins the client's and the upstream's upgraded connections.
pub fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => {
                tracing::debug!(sent = up, received = down, "upgraded connection closed")
            }
            Err(e) => tracing::debug!(error = %e, "upgraded connection failed"),
        }
    });
}

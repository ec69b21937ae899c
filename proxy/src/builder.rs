//! Remora as a library: start a proxy from a config file in your own
//! program, with your own tower layers in every HTTP listener's request
//! path (see `docs/library.md` and `proxy/examples/custom_auth.rs`).
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let app = remora_proxy::Proxy::builder()
//!     .config_file("remora.yaml")
//!     .layer(tower::layer::util::Identity::new())
//!     .start()
//!     .await?;
//! println!("listening on {:?}", app.listener("edge"));
//! let drain = app.drain_timeout();
//! app.shutdown(drain).await;
//! # Ok(())
//! # }
//! ```

use crate::app::{App, Source};
use crate::http::call::{Call, Done};
use crate::http::stack::{UserLayers, UserService};
use crate::telemetry::LogLevel;
use std::convert::Infallible;
use std::path::PathBuf;
use tower::{Layer, Service};

/// The proxy, started with [`Proxy::builder`].
pub struct Proxy;

impl Proxy {
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }
}

/// What a library user's proxy is made of: its config file and the layers
/// it adds to the request path.
#[derive(Debug, Default)]
pub struct ProxyBuilder {
    config: Option<PathBuf>,
    layers: UserLayers,
}

impl ProxyBuilder {
    /// The YAML config (as `remora-proxy run --config`), watched for
    /// changes and reloaded as the binary does.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }

    /// Adds a layer to every HTTP request's path, after routing and
    /// authorization and before the route's action (direct response,
    /// redirect, or forwarding with its timeout, retries and balancing).
    /// Its service takes a [`Call`] (the request and its context: the
    /// route matched is `call.cx.view.route()`) and answers a [`Done`]:
    /// the inner service's, or its own (`call.answer(Ok(response))`).
    ///
    /// Layers added first are outermost, as in `tower::ServiceBuilder`.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<UserService> + Send + Sync + 'static,
        L::Service:
            Service<Call, Response = Done, Error = Infallible> + Clone + Send + Sync + 'static,
        <L::Service as Service<Call>>::Future: Send + 'static,
    {
        self.layers.push(layer);
        self
    }

    /// Binds the admin server and the listeners and starts serving; returns
    /// once the proxy is ready. Logging is the caller's: install a
    /// `tracing` subscriber to see the proxy's logs.
    pub async fn start(self) -> anyhow::Result<App> {
        let Some(path) = self.config else {
            anyhow::bail!("Proxy::builder() needs a config: call .config_file(path)");
        };
        let source = Source::File(path);
        App::start_with(source, None, LogLevel::detached(), self.layers).await
    }
}

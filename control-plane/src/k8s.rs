//! The Kubernetes source: the cluster's API (etcd behind it) is the store.
//! [`watch`] follows Services, EndpointSlices, Pods, Gateway API routes and
//! Remora's CRDs ([`crd`]) and offers the mesh [`translate`] makes of them
//! to the [`crate::source::MeshSource`], like the mesh file does. Replicas
//! that see the same objects publish the same versions, so several control
//! planes can serve the same proxies.

pub mod crd;
pub mod translate;
pub mod watch;

/// `run --kubernetes`: the mesh's tracing, which the cluster's objects do
/// not carry. Every workload's proxy exports its spans there, each named
/// after its workload.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TracingArgs {
    /// With --kubernetes: the OpenTelemetry collector every proxy exports
    /// spans to, `host:port` (e.g. `otel-collector.observability:4318`).
    /// Without it, proxies trace nothing.
    #[arg(long = "tracing-collector", env = "REMORA_TRACING_COLLECTOR")]
    pub collector: Option<String>,
    /// With --tracing-collector: `http/protobuf` or `grpc`.
    #[arg(long = "tracing-protocol", env = "REMORA_TRACING_PROTOCOL", default_value = "http/protobuf", value_parser = ["http/protobuf", "grpc"])]
    pub protocol: String,
    /// With --tracing-collector: the share of new traces recorded, 0 to 1
    /// (a request with a `traceparent` follows its sampled flag).
    #[arg(long = "tracing-sampling", env = "REMORA_TRACING_SAMPLING", default_value_t = remora_api::tracing::defaults::sampling())]
    pub sampling: f64,
}

impl TracingArgs {
    /// The mesh's `tracing`: `None` without a collector; `Err` says what is
    /// wrong with the flags.
    pub fn tracing(&self) -> Result<Option<remora_api::Tracing>, String> {
        let Some(collector) = &self.collector else {
            return Ok(None);
        };
        let protocol = match self.protocol.as_str() {
            "grpc" => remora_api::tracing::OtlpProtocol::Grpc,
            _ => remora_api::tracing::OtlpProtocol::HttpProtobuf,
        };
        let tracing: remora_api::Tracing = serde_json::from_value(serde_json::json!({
            "collector": collector,
            "sampling": self.sampling,
        }))
        .map_err(|e| format!("--tracing-collector: {e}"))?;
        let tracing = remora_api::Tracing {
            protocol,
            ..tracing
        };
        let mut found = Vec::new();
        remora_api::tracing::check(&tracing, &mut found);
        match found.first() {
            None => Ok(Some(tracing)),
            Some((field, message)) => {
                let flag = field.trim_start_matches("tracing.");
                Err(format!("--tracing-{flag} {message}"))
            }
        }
    }
}

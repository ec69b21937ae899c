//! Remora's control plane: it reads a mesh (services, routes, policies and
//! the workloads that run proxies) from a YAML file, compiles one proxy
//! snapshot per workload with a pure function, and streams each workload's
//! snapshot to the proxies subscribed for it, recording their ACKs and NACKs.
//!
//! The flow: [`source`] watches the file and publishes a [`source::Generation`]
//! (the mesh compiled by [`compile`], after [`mesh::parse`] validated it);
//! [`stream`] serves `POST /v1/subscribe` and pushes every new version of a
//! workload's snapshot; [`proxies`] keeps what each connected proxy was sent
//! and applied; [`admin`] shows it all on `/status` and `/metrics`, and
//! [`graph`] draws the calls proxies report as a live service graph.
//!
//! Identity: [`ca`] signs workload certificates for the SPIFFE IDs of the
//! mesh, [`auth`] checks the credential of a request, and [`certify`]
//! serves `POST /v1/certify` beside the snapshot stream.
//!
//! Kubernetes: [`inject`] adds the proxy to pods (admission webhook and
//! offline `inject`).

pub mod admin;
pub mod app;
pub mod auth;
pub mod ca;
pub mod certify;
pub mod compile;
pub mod demo;
pub mod diagnose;
pub mod error;
pub mod etcd;
pub mod graph;
pub mod inject;
pub mod k8s;
pub mod mesh;
pub mod metrics;
pub mod ndjson;
pub mod proxies;
pub mod source;
pub mod stream;
pub mod telemetry;

pub use app::{App, MeshFrom, Settings};
pub use compile::{compile, compile_with_roots};
pub use error::Error;

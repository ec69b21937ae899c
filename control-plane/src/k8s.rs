//! The Kubernetes source: the cluster's API (etcd behind it) is the store.
//! [`watch`] follows Services, EndpointSlices, Pods, Gateway API routes and
//! Remora's CRDs ([`crd`]) and offers the mesh [`translate`] makes of them
//! to the [`crate::source::MeshSource`], like the mesh file does. Replicas
//! that see the same objects publish the same versions, so several control
//! planes can serve the same proxies.

pub mod crd;
pub mod translate;
pub mod watch;

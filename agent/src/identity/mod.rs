//! Who talks to whom: turns the endpoints of flow records into workloads and peers.
//!
//! ```text
//!   FlowRecord ──orient (UDP initiator doubt)──▶ src, dst, port
//!        │                                          │
//!        ├─ pod IP ──(time-aware: who held it then)─▶ Pod ──ownerRefs──▶ Workload
//!        ├─ Service ClusterIP:port ──EndpointSlices──▶ backend pods, targetPort
//!        ├─ node IP, hostNetwork pod ────────────────▶ Peer::Node
//!        ├─ cluster DNS on port 53 ──────────────────▶ Peer::ClusterDns
//!        └─ anything else outside the cluster CIDRs ─▶ Peer::External
//! ```
//!
//! Pure: reads an [`Inventory`](crate::inventory::Inventory), returns [`Observation`]s. It
//! also decides each workload's selector ([`WorkloadSelectors`]): the selector a learned policy
//! uses for it, checked to select no other workload's pods.

mod resolve;
mod selector;
mod types;

#[cfg(test)]
mod tests;

pub use resolve::{Batch, Identities, IdentityOptions, infer_cluster_cidrs};
pub use selector::{PER_INSTANCE_LABELS, SelectorChoice, WorkloadSelectors};
pub use types::{Observation, Peer, Sample, SampleEnd, WorkloadRef};

use std::net::IpAddr;

use crate::flow::Protocol;

/// Why a flow record yields no observation. None of these stops learning: the command counts
/// them and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A `namespace/name` or `namespace/Kind/name` endpoint that the manifests do not have.
    #[error("unknown {what} {endpoint:?}: not in the manifests")]
    UnknownEndpoint {
        endpoint: String,
        what: &'static str,
    },
    /// An address inside the cluster CIDRs that is no known pod, node or Service: probably a
    /// pod missing from the manifests. Never turned into an ipBlock.
    #[error(
        "{ip} is inside the cluster CIDRs but no pod, node or Service in the manifests has it; \
         add the pod's manifest (with status.podIPs) or pass --cluster-cidr"
    )]
    UnknownClusterAddress { ip: IpAddr },
    /// A connection to a Service ClusterIP on a port the Service does not declare.
    #[error("Service {service} has no port {port}/{protocol}")]
    NoServicePort {
        service: String,
        port: u16,
        protocol: Protocol,
    },
    /// A Service whose backends are unknown: no EndpointSlice and no pod its selector matches.
    #[error(
        "Service {service} has no known backends: add its EndpointSlices or its pods to the manifests"
    )]
    NoBackends { service: String },
    /// A connectionless flow whose initiator is a guess and whose ports are both ephemeral:
    /// which one is the server port cannot be told, and an ephemeral port never enters a rule.
    #[error(
        "{protocol} {src} -> {dst}: both ports {src_port} and {port} are ephemeral and the initiator \
         is a guess; declare the server's containerPort to learn it"
    )]
    AmbiguousDirection {
        protocol: Protocol,
        src: String,
        src_port: u16,
        dst: String,
        port: u16,
    },
}

impl IdentityError {
    /// A short stable name, for counting skipped records by reason.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownEndpoint { .. } => "unknown_endpoint",
            Self::UnknownClusterAddress { .. } => "unknown_cluster_address",
            Self::NoServicePort { .. } => "no_service_port",
            Self::NoBackends { .. } => "no_backends",
            Self::AmbiguousDirection { .. } => "ambiguous_direction",
        }
    }
}

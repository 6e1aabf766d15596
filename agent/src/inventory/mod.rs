//! What the cluster holds: namespaces, pods, workloads, services, endpoint slices and nodes.
//!
//! ```text
//!   manifests ──load (IO)──▶ k8s-openapi objects ──InventoryBuilder (pure)──▶ Inventory
//!                                    └── NetworkPolicy ──▶ policy::Policy
//!
//!   Inventory: Namespace ◀── Pod ──▶ Workload        ip → Pod, ip → Node,
//!                                └──▶ Node            ns/name → Pod, ns/Kind/name → Workload
//! ```
//!
//! A workload given as a manifest stands for its pods through its *template pod*, which has the
//! template's labels and ports but no IP and no node. The model and builder are pure; only
//! [`load_paths`] reads files.

mod build;
mod link;
mod load;
mod model;
pub mod strict;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use build::{InventoryBuilder, NAMESPACE_NAME_LABEL};
pub use load::{
    Loaded, Location, Manifests, UNEVALUATED_POLICY_KINDS, load_paths, load_paths_with,
};
pub use model::{
    ContainerPort, EndpointPort, EndpointSlice, Inventory, Namespace, NamespaceId, Node, NodeId,
    Pod, PodId, Resolved, Service, ServicePort, TargetPort, Workload, WorkloadId,
};

use crate::policy::PolicyError;

/// Why manifests could not be read, or a reference not resolved.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A document is not valid YAML or JSON.
    #[error("{}: document {document}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        document: usize,
        message: String,
    },
    /// A document does not fit the schema of its kind.
    #[error("{location}: {object}: field {field}: {message}")]
    Decode {
        location: String,
        object: String,
        field: String,
        message: String,
    },
    /// Fields the object's kind does not have: a typo, which the API server would refuse
    /// (kubectl validates strictly) and which would otherwise change the object's meaning.
    #[error("{location}: {object}: {}; fix the manifest, or pass --lenient to read it anyway", fields.join("; "))]
    UnknownFields {
        location: String,
        object: String,
        /// Each as `unknown field PATH (line N, did you mean FIELD?)`.
        fields: Vec<String>,
    },
    /// A field has a value Kubernetes would reject.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// An invalid NetworkPolicy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// An error inside an object of a manifest, with where it is.
    #[error("{location}: {object}: {source}")]
    InDocument {
        location: String,
        object: String,
        source: Box<InventoryError>,
    },
    /// A pod or workload reference that names nothing in the inventory.
    #[error("unknown {what} {endpoint:?}: not in the manifests")]
    UnknownEndpoint {
        endpoint: String,
        what: &'static str,
    },
}

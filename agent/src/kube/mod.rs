//! The Kubernetes side of the agent: the inventory from the API server, and the `FlowEdges`
//! custom resource through which agents share what they learned.
//!
//! ```text
//!   API server ──watch+reflect (inventory)──▶ stores ──snapshot──▶ Inventory + Policy (inventory, policy)
//!
//!   agent on node N: edges ──shard──▶ FlowEdges N-0, N-1 … ──server-side apply (publish)──▶ API server
//!   trustmap export --from-cluster ◀──list + merge (export)── FlowEdges of every node
//! ```
//!
//! The agent also reports alerts as Events on the pods concerned (`events`); `peers` is how the
//! learning graph's peers are spelled in `FlowEdges` records.
//!
//! `snapshot`, `crd` and `peers` are pure; `inventory`, `publish` and `export` talk to the API server
//! through a `kube::Client` and nothing else (no files, no clock of their own).

pub mod admin;
pub mod crd;
pub mod events;
pub mod export;
pub mod inventory;
pub mod peers;
pub mod publish;
pub mod snapshot;
pub mod unevaluated;

pub use crd::{EdgeRecord, FlowEdges, FlowEdgesSpec};
pub use events::{EventSink, EventSinkConfig};
pub use export::{client_for, client_from_kubeconfig, fetch_edges, write_json_lines};
pub use inventory::{KubeInventory, PodScope, WatchStatus};
pub use peers::{graph_to_records, records_to_graph};
pub use publish::{
    FIELD_MANAGER, PublishLoop, PublishReport, Publisher, collect_garbage, is_gc_leader,
};

/// The namespace the manifests in deploy/ install trustmap into, where `FlowEdges` live.
pub const DEFAULT_NAMESPACE: &str = "trustmap-system";

/// Why a call to the API server, or the setup of a client, failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig file could not be read or used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    /// No kubeconfig and no in-cluster service account were found.
    #[error(
        "no cluster to talk to: {message}; pass --kubeconfig, set KUBECONFIG, or run inside a pod"
    )]
    InferConfig { message: String },
    /// The client could not be built from the configuration (TLS, proxy, auth plugin).
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// Listing objects failed.
    #[error("listing {what}: {source}")]
    List {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Reading one object failed.
    #[error("reading {what}: {source}")]
    Get {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The server-side apply of an object failed.
    #[error("applying FlowEdges {namespace}/{name}: {source}")]
    Apply {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Deleting an object failed.
    #[error("deleting FlowEdges {namespace}/{name}: {source}")]
    Delete {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Whether an API error is a 404: the object is already gone.
fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a call failed on its way rather than being answered: the connection was refused,
/// reset, or closed before the response (a pooled keep-alive connection the server closed as the
/// request left), or the request timed out.
fn is_transport(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
}

/// Runs an idempotent call, and runs it again, up to twice, after a transport error, 100 ms and
/// then 400 ms later. client-go does the same for a request whose connection was reset or closed
/// before the answer: an answered call, even a 5xx, is returned as it is.
async fn retry_transport<T, F, Fut>(what: &str, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = std::time::Duration::from_millis(100);
    for _ in 0..2 {
        match call().await {
            Err(e) if is_transport(&e) => {
                tracing::debug!(what, error = %e, ?delay, "transport error; trying again");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            answered => return answered,
        }
    }
    call().await
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn transport_error() -> kube::Error {
        kube::Error::Service("connection closed before message completed".into())
    }

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("boom", "InternalError").with_code(code),
        ))
    }

    #[tokio::test]
    async fn a_transport_error_is_tried_again_and_an_answer_is_not() {
        let calls = Cell::new(0);
        let r = retry_transport("get", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n < 3 { Err(transport_error()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.unwrap(), 3);

        let calls = Cell::new(0);
        let r: Result<(), _> = retry_transport("get", || {
            calls.set(calls.get() + 1);
            async { Err(transport_error()) }
        })
        .await;
        assert!(is_transport(&r.unwrap_err()));
        assert_eq!(calls.get(), 3, "three tries in all");

        let calls = Cell::new(0);
        let r: Result<(), _> = retry_transport("get", || {
            calls.set(calls.get() + 1);
            async { Err(status(500)) }
        })
        .await;
        assert!(matches!(r, Err(kube::Error::Api(s)) if s.code == 500));
        assert_eq!(calls.get(), 1, "an answered call is returned as it is");
    }
}

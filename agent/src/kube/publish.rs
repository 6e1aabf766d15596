//! Publishing a node's edges as `FlowEdges` objects: server-side apply of every shard under one
//! field manager, deletion of the shards a smaller graph no longer needs, and the garbage
//! collection of the objects of nodes that are gone.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};

use super::{
    KubeError,
    crd::{
        DEFAULT_SHARD_BUDGET, EdgeRecord, FlowEdges, MANAGED_BY, NODE_LABEL, node_label_value,
        shard, shard_index, shard_name,
    },
    is_not_found, retry_transport,
};

/// The field manager of every server-side apply the agent makes.
pub const FIELD_MANAGER: &str = "trustmap-agent";

/// What one [`Publisher::publish`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishReport {
    /// The names of the shards applied, in order.
    pub applied: Vec<String>,
    /// The names of surplus shards deleted.
    pub deleted: Vec<String>,
    /// Edges published, after merging.
    pub edges: usize,
}

/// Writes one node's edges to the API server.
#[derive(Clone)]
pub struct Publisher {
    api: Api<FlowEdges>,
    namespace: String,
    node: String,
    budget: usize,
}

impl Publisher {
    /// A publisher of `node`'s edges into `namespace`.
    pub fn new(client: Client, namespace: &str, node: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            node: node.to_owned(),
            budget: DEFAULT_SHARD_BUDGET,
        }
    }

    /// Sets the byte budget of one shard's edges (default [`DEFAULT_SHARD_BUDGET`]).
    pub fn with_budget(mut self, budget: usize) -> Self {
        self.budget = budget;
        self
    }

    /// Replaces the node's published edges with `edges`: applies each shard (server-side apply,
    /// field manager [`FIELD_MANAGER`], forced: the agent owns these objects), then deletes the
    /// node's objects beyond the new shard count. Applying unchanged shards changes nothing on
    /// the server, so publishing the same edges again is cheap.
    #[tracing::instrument(skip_all, fields(node = %self.node, edges = edges.len()))]
    pub async fn publish(&self, edges: Vec<EdgeRecord>) -> Result<PublishReport, KubeError> {
        let specs = shard(&self.node, edges, self.budget);
        let edges = specs.iter().map(|s| s.edges.len()).sum();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut applied = Vec::new();
        for spec in specs {
            let name = shard_name(&self.node, spec.shard);
            let mut object = FlowEdges::new(&name, spec);
            object.metadata.namespace = Some(self.namespace.clone());
            object.metadata.labels = Some(labels(&self.node));
            let patch = Patch::Apply(&object);
            retry_transport("apply", || self.api.patch(&name, &params, &patch))
                .await
                .map_err(|source| KubeError::Apply {
                    namespace: self.namespace.clone(),
                    name: name.clone(),
                    source,
                })?;
            applied.push(name);
        }

        let selector = format!("{NODE_LABEL}={}", node_label_value(&self.node));
        let list = ListParams::default().labels(&selector);
        let existing = retry_transport("list", || self.api.list_metadata(&list))
            .await
            .map_err(|source| KubeError::List {
                what: format!("FlowEdges {selector} in {}", self.namespace),
                source,
            })?;
        let keep: BTreeSet<&String> = applied.iter().collect();
        let mut deleted = Vec::new();
        for o in existing.items {
            let Some(name) = o.metadata.name else {
                continue;
            };
            // Another node whose name shortens to the same label value is not ours to touch.
            if keep.contains(&name) || shard_index(&self.node, &name).is_none() {
                continue;
            }
            self.delete(&name).await?;
            deleted.push(name);
        }
        tracing::debug!(shards = applied.len(), deleted = deleted.len(), "published");
        Ok(PublishReport {
            applied,
            deleted,
            edges,
        })
    }

    async fn delete(&self, name: &str) -> Result<(), KubeError> {
        delete(&self.api, &self.namespace, name).await
    }
}

fn labels(node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NODE_LABEL.to_owned(), node_label_value(node)),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
    ])
}

async fn delete(api: &Api<FlowEdges>, namespace: &str, name: &str) -> Result<(), KubeError> {
    let params = DeleteParams::default();
    match retry_transport("delete", || api.delete(name, &params)).await {
        Ok(_) => Ok(()),
        // Another agent's garbage collection got there first.
        Err(e) if is_not_found(&e) => Ok(()),
        Err(source) => Err(KubeError::Delete {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// Deletes the `FlowEdges` in `namespace` of nodes that no longer exist, and returns their
/// names. `known_nodes` (the inventory's nodes) spares the nodes it names without a request;
/// any other node is looked up, and only a `404` for it condemns its objects, so a stale or
/// empty node list never deletes a live node's edges. Every agent may run this: deleting an
/// object twice is harmless.
#[tracing::instrument(skip_all, fields(namespace))]
pub async fn collect_garbage(
    client: Client,
    namespace: &str,
    known_nodes: &BTreeSet<String>,
) -> Result<Vec<String>, KubeError> {
    let api: Api<FlowEdges> = Api::namespaced(client.clone(), namespace);
    let nodes: Api<Node> = Api::all(client);
    let list = ListParams::default();
    let objects = retry_transport("list", || api.list(&list))
        .await
        .map_err(|source| KubeError::List {
            what: format!("FlowEdges in {namespace}"),
            source,
        })?;
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in objects.items {
        if let Some(name) = o.metadata.name {
            by_node.entry(o.spec.node).or_default().push(name);
        }
    }
    let mut deleted = Vec::new();
    for (node, names) in by_node {
        if known_nodes.contains(&node) {
            continue;
        }
        let exists = retry_transport("get", || nodes.get_opt(&node))
            .await
            .map_err(|source| KubeError::Get {
                what: format!("Node {node}"),
                source,
            })?
            .is_some();
        if exists {
            continue;
        }
        tracing::info!(
            node,
            objects = names.len(),
            "node is gone: deleting its FlowEdges"
        );
        for name in names {
            delete(&api, namespace, &name).await?;
            deleted.push(name);
        }
    }
    Ok(deleted)
}

/// Whether `node` collects the garbage of the cluster: the node whose name sorts first among the
/// nodes of the inventory. One collector keeps the lookups of unknown nodes from being made by
/// every agent; the confirmed-404 rule of [`collect_garbage`] keeps any collector safe. When
/// that node's agent is down, collection waits for it (nothing is urgent about it).
pub fn is_gc_leader(node: &str, known_nodes: &BTreeSet<String>) -> bool {
    known_nodes.first().is_some_and(|first| first == node)
}

/// What the publishing task needs besides the edges.
pub struct PublishLoop {
    pub client: Client,
    pub namespace: String,
    pub node: String,
    /// The inventory's node names, read at each round (for garbage collection).
    pub known_nodes: Box<dyn Fn() -> BTreeSet<String> + Send + Sync>,
    /// Counts rounds whose publication or collection failed.
    pub failures: prometheus_client::metrics::counter::Counter,
}

impl PublishLoop {
    /// Publishes each new set of edges sent on `edges`, then collects garbage when this node
    /// is the collector. A failed round is logged and counted; the next set retries. Runs
    /// until the sender is dropped. The agent's loop only sends; it never waits for this task.
    pub fn spawn(
        self,
        mut edges: tokio::sync::watch::Receiver<Vec<EdgeRecord>>,
    ) -> tokio::task::JoinHandle<()> {
        let publisher = Publisher::new(self.client.clone(), &self.namespace, &self.node);
        tokio::spawn(async move {
            while edges.changed().await.is_ok() {
                let batch = edges.borrow_and_update().clone();
                match publisher.publish(batch).await {
                    Ok(r) => tracing::info!(
                        edges = r.edges,
                        shards = r.applied.len(),
                        deleted = r.deleted.len(),
                        "published FlowEdges"
                    ),
                    Err(e) => {
                        self.failures.inc();
                        tracing::warn!(error = %e, "publishing FlowEdges failed; retrying next round");
                    }
                }
                let known = (self.known_nodes)();
                if is_gc_leader(&self.node, &known) {
                    match collect_garbage(self.client.clone(), &self.namespace, &known).await {
                        Ok(gone) if !gone.is_empty() => {
                            tracing::info!(
                                deleted = gone.len(),
                                "collected FlowEdges of gone nodes"
                            );
                        }
                        Ok(_) => {}
                        Err(e) => {
                            self.failures.inc();
                            tracing::warn!(error = %e, "collecting FlowEdges garbage failed");
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_node_by_name_collects_garbage() {
        let nodes: BTreeSet<String> = ["worker-2".into(), "worker-1".into()].into();
        assert!(is_gc_leader("worker-1", &nodes));
        assert!(!is_gc_leader("worker-2", &nodes));
        assert!(!is_gc_leader("worker-0", &BTreeSet::new()));
    }
}

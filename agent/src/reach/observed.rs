//! Observed traffic in the evaluator's terms: each edge of a flow graph as a [`Connection`]
//! between representative ends, with its count. Shared by lint (`--flows`), blast radius and
//! the graph.

use crate::{
    flow::Protocol,
    graph::FlowGraph,
    identity::{Identities, Peer},
    inventory::{Inventory, Resolved},
    policy::{Connection, Selector},
};

/// A connection seen in flows, with how often, ready for the evaluator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedConnection<'g> {
    pub connection: Connection<'g>,
    /// The ends as learned: a workload, a node, an external address or the cluster DNS.
    pub src_peer: Peer,
    pub dst_peer: Peer,
    /// Names for people: `ns/Kind/name`, `external 1.2.3.4`, ...
    pub src: String,
    pub dst: String,
    pub count: u64,
}

/// The end a learned peer stands for: a workload's representative pod, a node's address, an
/// external address, or a cluster DNS pod. `None` when the manifests do not have it.
pub fn resolve_peer(ids: &Identities<'_>, peer: &Peer) -> Option<Resolved> {
    let inv: &Inventory = ids.inventory();
    match peer {
        Peer::Workload(w) if w.kind == "Pod" => inv
            .pod_by_name(&w.namespace, &w.name)
            .map(|p| inv.resolve_pod(p, None)),
        Peer::Workload(w) => inv
            .workload_by_ref(&w.namespace, &w.kind, &w.name)
            .and_then(|id| inv.representative_pod(id))
            .map(|p| inv.resolve_pod(p, None)),
        Peer::Node { ip, .. } => Some(inv.resolve_ip(*ip)),
        Peer::External(ip) => Some(Resolved::External(*ip)),
        Peer::ClusterDns => {
            let opts = ids.options();
            let ns = inv.namespace_id(&opts.dns_namespace)?;
            let sel = Selector::from_labels(
                opts.dns_labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            inv.pods_in(ns)
                .iter()
                .copied()
                .find(|&p| !inv.pod(p).host_network && sel.matches(&inv.pod(p).labels))
                .map(|p| inv.resolve_pod(p, None))
        }
    }
}

/// A peer for people, with the DNS names its connections were made to:
/// `external 203.0.113.10 (api.payments.example)`.
pub fn named(peer: &Peer, names: &[String]) -> String {
    if names.is_empty() {
        peer.to_string()
    } else {
        format!("{peer} ({})", names.join(", "))
    }
}

/// Every edge of the graph whose ends resolve, in the graph's order. DNS edges get UDP 53
/// when the graph recorded them without a port.
pub fn observed_connections<'g>(
    ids: &Identities<'_>,
    graph: &'g FlowGraph,
) -> Vec<ObservedConnection<'g>> {
    graph
        .edges()
        .into_iter()
        .filter_map(|e| {
            let src = resolve_peer(ids, e.src)?;
            let dst = resolve_peer(ids, e.dst)?;
            let port = match (e.dst, e.port) {
                (Peer::ClusterDns, None) => Some(53),
                (_, p) => p,
            };
            let protocol: Protocol = e.protocol;
            Some(ObservedConnection {
                connection: Connection {
                    src,
                    dst,
                    protocol,
                    port,
                    dst_names: &e.stats.names,
                },
                src_peer: e.src.clone(),
                dst_peer: e.dst.clone(),
                src: e.src.to_string(),
                dst: named(e.dst, &e.stats.names),
                count: e.stats.count,
            })
        })
        .collect()
}

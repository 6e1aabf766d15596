//! Pure: the learning graph's edges as `FlowEdges` records and back. A record names its ends
//! with strings, so the graph's [`Peer`]s get one string form each that parses back exactly:
//!
//! | peer | string |
//! | --- | --- |
//! | a workload | `namespace/Kind/name` (a pod without owner: `namespace/Pod/name`) |
//! | a node or host-network pod | `node:<name>@<ip>` |
//! | an address outside the cluster | the address |
//! | the cluster DNS | `cluster-dns` |

use std::net::IpAddr;

use crate::{
    graph::{EdgeStats, FlowGraph},
    identity::{Peer, Sample, SampleEnd},
};

use super::crd::{EdgeRecord, merge_edges};

/// The string of the cluster DNS peer.
pub const CLUSTER_DNS: &str = "cluster-dns";

/// A peer's string form (see the module's table).
pub fn peer_to_string(p: &Peer) -> String {
    match p {
        Peer::Workload(w) => w.to_string(),
        Peer::Node { name, ip } => format!("node:{name}@{ip}"),
        Peer::External(ip) => ip.to_string(),
        Peer::ClusterDns => CLUSTER_DNS.to_owned(),
    }
}

/// Parses what [`peer_to_string`] wrote; `None` for anything else (records written by another
/// version, or by hand), which the caller counts and skips.
pub fn peer_from_string(s: &str) -> Option<Peer> {
    if s == CLUSTER_DNS {
        return Some(Peer::ClusterDns);
    }
    if let Some(rest) = s.strip_prefix("node:") {
        let (name, ip) = rest.rsplit_once('@')?;
        return Some(Peer::Node {
            name: name.to_owned(),
            ip: ip.parse().ok()?,
        });
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(Peer::External(ip));
    }
    s.parse().ok().map(Peer::Workload)
}

/// The graph's edges as records, merged and sorted. Edges without a time (restored from hand
/// written graphs) get `fallback` as first and last seen.
pub fn graph_to_records(
    graph: &FlowGraph,
    fallback: chrono::DateTime<chrono::Utc>,
) -> Vec<EdgeRecord> {
    merge_edges(graph.edges().into_iter().map(|e| {
        let first = e.stats.first_seen.unwrap_or(fallback);
        EdgeRecord {
            src: peer_to_string(e.src),
            dst: peer_to_string(e.dst),
            protocol: e.protocol,
            port: e.port,
            count: e.stats.count,
            first_seen: first,
            last_seen: e.stats.last_seen.unwrap_or(first),
            dst_names: e.stats.names.clone(),
        }
    }))
}

/// Records back into a graph. Returns the graph and the records whose ends did not parse.
pub fn records_to_graph(records: &[EdgeRecord]) -> (FlowGraph, Vec<EdgeRecord>) {
    let mut graph = FlowGraph::new();
    let mut bad = Vec::new();
    for r in records {
        let (Some(src), Some(dst)) = (peer_from_string(&r.src), peer_from_string(&r.dst)) else {
            bad.push(r.clone());
            continue;
        };
        let stats = EdgeStats {
            count: r.count,
            first_seen: Some(r.first_seen),
            last_seen: Some(r.last_seen),
            // The record keeps no raw connection: the ends' names stand in for one.
            sample: Sample {
                src: SampleEnd::Named(r.src.clone().into()),
                src_port: None,
                dst: SampleEnd::Named(r.dst.clone().into()),
                port: r.port,
                initiator: None,
                outcome: None,
            },
            alerted: Default::default(),
            names: crate::graph::name_list(&r.dst_names),
        };
        graph.add(&src, &dst, r.protocol, r.port, stats);
    }
    (graph, bad)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::{flow::Protocol, identity::WorkloadRef};

    fn peers() -> Vec<Peer> {
        vec![
            Peer::Workload(WorkloadRef::new("shop", "Deployment", "web")),
            Peer::Workload(WorkloadRef::new("shop", "Pod", "debug")),
            Peer::Node {
                name: "worker-1".into(),
                ip: "192.168.0.1".parse().unwrap(),
            },
            Peer::Node {
                name: "fd00::1".into(),
                ip: "fd00::1".parse().unwrap(),
            },
            Peer::External("203.0.113.10".parse().unwrap()),
            Peer::External("2001:db8::1".parse().unwrap()),
            Peer::ClusterDns,
        ]
    }

    #[test]
    fn every_peer_string_parses_back_to_the_same_peer() {
        for p in peers() {
            let s = peer_to_string(&p);
            assert_eq!(peer_from_string(&s), Some(p), "{s}");
        }
    }

    #[test]
    fn strings_of_no_peer_are_refused() {
        for s in ["shop/web", "node:worker-1", "node:x@notanip", "", "a/b/c/d"] {
            assert_eq!(peer_from_string(s), None, "{s}");
        }
    }

    #[test]
    fn a_graph_survives_the_trip_through_records() {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let ps = peers();
        let mut g = FlowGraph::new();
        for (i, dst) in ps.iter().enumerate().skip(1) {
            let stats = EdgeStats {
                count: i as u64,
                first_seen: Some(t),
                last_seen: Some(t),
                sample: Sample {
                    src: SampleEnd::Ip("10.0.0.1".parse().unwrap()),
                    src_port: Some(40000),
                    dst: SampleEnd::Ip("10.0.0.2".parse().unwrap()),
                    port: Some(80),
                    initiator: None,
                    outcome: None,
                },
                alerted: Default::default(),
                names: Vec::new(),
            };
            g.add(&ps[0], dst, Protocol::Tcp, Some(80), stats);
        }
        let records = graph_to_records(&g, t);
        assert_eq!(records.len(), ps.len() - 1);
        let (back, bad) = records_to_graph(&records);
        assert!(bad.is_empty());
        assert_eq!(graph_to_records(&back, t), records);
    }
}

//! The `FlowEdges` custom resource (`trustmap.dev/v1alpha1`): one node's learned edges, split
//! into shards that each stay far below the API server's object size limit.
//!
//! Pure: the resource types, the edge merge, the shard split and the object names. Talking to
//! the API server is `publish` and `export`.
//!
//! ```text
//!   node "worker-1", 9 000 edges ──shard(budget 512 KiB)──▶ FlowEdges worker-1-0  (label trustmap.dev/node=worker-1)
//!                                                     └──▶ FlowEdges worker-1-1
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::flow::Protocol;

/// The label every `FlowEdges` object carries with (a label-safe form of) its node's name.
pub const NODE_LABEL: &str = "trustmap.dev/node";
/// The `app.kubernetes.io/managed-by` value on the objects the agent writes.
pub const MANAGED_BY: &str = "trustmap-agent";
/// Serialized size an object's edges may take. The API server rejects objects over 1.5 MiB
/// (etcd's request limit); a third of that leaves room for metadata, managed fields and edges
/// whose endpoints grow, and keeps each apply request small.
pub const DEFAULT_SHARD_BUDGET: usize = 512 * 1024;

/// The learned edges of one node, or one shard of them.
#[expect(
    clippy::duplicated_attributes,
    reason = "several printcolumns share `type_ = \"integer\"`"
)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "trustmap.dev",
    version = "v1alpha1",
    kind = "FlowEdges",
    plural = "flowedges",
    singular = "flowedges",
    shortname = "fe",
    namespaced,
    doc = "Connections one trustmap agent observed on its node, one shard of them. Written by the agent with server-side apply (field manager trustmap-agent); read by `trustmap export --from-cluster`.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Shard", type_ = "integer", json_path = ".spec.shard"),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".spec.shards"),
    printcolumn(name = "Edges", type_ = "integer", json_path = ".spec.edgeCount"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FlowEdgesSpec {
    /// The node whose agent observed these edges.
    pub node: String,
    /// This object's index among the node's shards, from 0.
    pub shard: u32,
    /// How many shards the node had when this one was written.
    pub shards: u32,
    /// How many edges this shard holds (for `kubectl get`).
    pub edge_count: u32,
    /// The edges, sorted by (src, dst, protocol, port).
    pub edges: Vec<EdgeRecord>,
}

/// One learned edge: connections from `src` to `dst` on one protocol and server port, counted.
///
/// `src` and `dst` are endpoint identities as strings (`namespace/Kind/name`, `namespace/pod`,
/// an IP address or a CIDR, or whatever the learning graph names), so that this wire format does
/// not change when the graph's identities do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeRecord {
    /// The initiator.
    pub src: String,
    /// The responder.
    pub dst: String,
    /// TCP, UDP, SCTP, ICMP or ICMPv6.
    #[schemars(schema_with = "protocol_schema")]
    pub protocol: Protocol,
    /// The server port; absent for protocols without ports (ICMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Connection starts observed.
    pub count: u64,
    /// When the first of these connections started.
    pub first_seen: DateTime<Utc>,
    /// When the last of these connections started.
    pub last_seen: DateTime<Utc>,
    /// For a destination outside the cluster: the DNS names the initiator resolved to it
    /// before connecting, sorted. Absent when none is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_names: Vec<String>,
}

fn protocol_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "TCP, UDP, SCTP, ICMP or ICMPv6.",
        "type": "string",
        "enum": ["TCP", "UDP", "SCTP", "ICMP", "ICMPv6"],
    })
}

/// What identifies an edge; edges with the same key are merged.
pub type EdgeKey = (String, String, Protocol, Option<u16>);

impl EdgeRecord {
    pub fn key(&self) -> EdgeKey {
        (self.src.clone(), self.dst.clone(), self.protocol, self.port)
    }

    /// Folds another observation of the same edge into this one.
    fn absorb(&mut self, other: &EdgeRecord) {
        self.count = self.count.saturating_add(other.count);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        crate::graph::merge_names(&mut self.dst_names, &other.dst_names);
    }
}

/// Merges edges with the same key (counts added, first seen the earliest, last seen the
/// latest) and sorts them by key.
pub fn merge_edges<I: IntoIterator<Item = EdgeRecord>>(edges: I) -> Vec<EdgeRecord> {
    let mut by_key: BTreeMap<EdgeKey, EdgeRecord> = BTreeMap::new();
    for e in edges {
        match by_key.entry(e.key()) {
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().absorb(&e),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(e);
            }
        }
    }
    by_key.into_values().collect()
}

/// Splits a node's edges into shards whose serialized edges each take at most `budget` bytes
/// (an edge larger than the budget gets a shard of its own). Edges are merged and sorted
/// first, so the same edges always give the same shards and re-applying them changes nothing.
/// A node without edges still gets one, empty, shard: it says the agent is alive.
pub fn shard(node: &str, edges: Vec<EdgeRecord>, budget: usize) -> Vec<FlowEdgesSpec> {
    let edges = merge_edges(edges);
    let mut groups: Vec<Vec<EdgeRecord>> = vec![Vec::new()];
    let mut used = 0usize;
    for e in edges {
        // The comma between list items counts too.
        let size = serde_json::to_vec(&e).map(|v| v.len()).unwrap_or(0) + 1;
        let current = groups.last_mut().expect("groups is never empty");
        if !current.is_empty() && used + size > budget {
            groups.push(vec![e]);
            used = size;
        } else {
            current.push(e);
            used += size;
        }
    }
    let shards = groups.len() as u32;
    groups
        .into_iter()
        .enumerate()
        .map(|(i, edges)| FlowEdgesSpec {
            node: node.to_owned(),
            shard: i as u32,
            shards,
            edge_count: edges.len() as u32,
            edges,
        })
        .collect()
}

/// The label value for a node: the name itself when it is a valid label value (at most 63
/// characters), else a shortened form with a hash of the full name.
pub fn node_label_value(node: &str) -> String {
    shorten(node, 63)
}

/// The object name of a node's shard: `<node>-<shard>`, shortened (with a hash of the node
/// name) when it would pass the 253 characters allowed.
pub fn shard_name(node: &str, shard: u32) -> String {
    let suffix = format!("-{shard}");
    format!("{}{suffix}", shorten(node, 253 - suffix.len()))
}

/// The shard index in an object name made by [`shard_name`] for this node.
pub fn shard_index(node: &str, name: &str) -> Option<u32> {
    let (prefix, index) = name.rsplit_once('-')?;
    let index: u32 = index.parse().ok()?;
    (shard_name(node, index) == name && !prefix.is_empty()).then_some(index)
}

fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let hash = format!("{:016x}", fnv1a(name.as_bytes()));
    let mut keep = max - hash.len() - 1;
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    // Names and label values must end with an alphanumeric character: the hash does.
    format!("{}-{hash}", name[..keep].trim_end_matches(['-', '.', '_']))
}

/// FNV-1a, 64 bits: a hash that never changes between Rust releases, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The CustomResourceDefinition as YAML, as `trustmap crd` prints it and deploy/crd.yaml holds it.
pub fn crd_yaml() -> String {
    let yaml = serde_yaml::to_string(&crd()).expect("a CRD always serializes");
    format!("# Generated by `trustmap crd`: do not edit.\n---\n{yaml}")
}

/// The CustomResourceDefinition, with integer formats the API server knows.
///
/// schemars names Rust's unsigned integers `uint16`, `uint32` and `uint64`, which the API
/// server does not know: every `kubectl apply` of such a CRD warns `unrecognized format
/// "uint16"`. The range is already in `minimum` and `maximum`, so the format becomes the
/// signed type that holds the value on the wire (JSON integers the API server reads as int64).
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt as _;
    let mut value = serde_json::to_value(FlowEdges::crd()).expect("a CRD always serializes");
    kubernetes_formats(&mut value);
    serde_json::from_value(value).expect("only formats changed")
}

/// Rewrites every `format: uintN` in a schema into `int32` (N ≤ 16) or `int64`.
fn kubernetes_formats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(f)) = map.get_mut("format") {
                match f.as_str() {
                    "uint8" | "uint16" | "int8" | "int16" => *f = "int32".into(),
                    "uint32" | "uint64" => *f = "int64".into(),
                    _ => {}
                }
            }
            map.values_mut().for_each(kubernetes_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(kubernetes_formats),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid time")
    }

    fn edge(src: &str, dst: &str, port: u16, count: u64, first: i64, last: i64) -> EdgeRecord {
        EdgeRecord {
            src: src.into(),
            dst: dst.into(),
            protocol: Protocol::Tcp,
            port: Some(port),
            count,
            first_seen: t(first),
            last_seen: t(last),
            dst_names: Vec::new(),
        }
    }

    #[test]
    fn merge_adds_counts_and_widens_the_time_range() {
        let merged = merge_edges([
            edge(
                "shop/Deployment/web",
                "shop/Deployment/api",
                8080,
                2,
                10,
                20,
            ),
            edge("shop/Deployment/web", "shop/Deployment/api", 8080, 3, 5, 15),
            edge("shop/Deployment/web", "shop/Deployment/api", 9090, 1, 0, 0),
        ]);
        assert_eq!(
            merged,
            vec![
                edge("shop/Deployment/web", "shop/Deployment/api", 8080, 5, 5, 20),
                edge("shop/Deployment/web", "shop/Deployment/api", 9090, 1, 0, 0),
            ]
        );
    }

    #[test]
    fn merge_keeps_protocols_apart() {
        let mut udp = edge("a/b", "c/d", 53, 1, 0, 0);
        udp.protocol = Protocol::Udp;
        let merged = merge_edges([edge("a/b", "c/d", 53, 1, 0, 0), udp]);
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn shard_keeps_every_shard_within_the_budget() {
        let edges: Vec<_> = (0..5_000)
            .map(|i| edge(&format!("ns/Deployment/client-{i}"), "ns/db", 5432, 1, 0, 1))
            .collect();
        let budget = 64 * 1024;
        let shards = shard("worker-1", edges.clone(), budget);
        assert!(shards.len() > 1, "5 000 edges need several 64 KiB shards");
        let total: usize = shards.iter().map(|s| s.edges.len()).sum();
        assert_eq!(total, edges.len(), "no edge lost or duplicated");
        for s in &shards {
            let size = serde_json::to_vec(&s.edges).expect("serializes").len();
            assert!(size <= budget, "shard {} takes {size} bytes", s.shard);
            assert_eq!(s.shards, shards.len() as u32);
            assert_eq!(s.edge_count as usize, s.edges.len());
        }
    }

    #[test]
    fn shard_is_deterministic_whatever_the_input_order() {
        let mut edges: Vec<_> = (0..300)
            .map(|i| edge(&format!("ns/p{i}"), "ns/db", 5432, 1, 0, 1))
            .collect();
        let a = shard("n", edges.clone(), 4096);
        edges.reverse();
        assert_eq!(a, shard("n", edges, 4096));
    }

    #[test]
    fn shard_of_no_edges_is_one_empty_shard() {
        let shards = shard("n", Vec::new(), DEFAULT_SHARD_BUDGET);
        assert_eq!(shards.len(), 1);
        assert!(shards[0].edges.is_empty());
    }

    #[test]
    fn shard_gives_an_oversized_edge_its_own_shard() {
        let big = edge(&"x".repeat(500), "ns/db", 1, 1, 0, 0);
        let shards = shard("n", vec![big, edge("a/b", "c/d", 1, 1, 0, 0)], 100);
        assert_eq!(shards.len(), 2);
    }

    #[test]
    fn names_of_short_nodes_are_node_dash_index() {
        assert_eq!(shard_name("worker-1", 0), "worker-1-0");
        assert_eq!(shard_index("worker-1", "worker-1-12"), Some(12));
        assert_eq!(shard_index("worker-1", "worker-10-1"), None);
        assert_eq!(shard_index("worker", "worker-1-0"), None);
        assert_eq!(node_label_value("worker-1"), "worker-1");
    }

    #[test]
    fn long_node_names_are_shortened_with_a_hash() {
        let node = format!("{}.compute.internal", "ip-10-0-0-1".repeat(30));
        let name = shard_name(&node, 3);
        assert!(name.len() <= 253, "{}", name.len());
        assert_eq!(shard_index(&node, &name), Some(3));
        let label = node_label_value(&node);
        assert!(label.len() <= 63, "{label}");
        assert!(
            label
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric())
        );
        let other = format!("{}.compute.internal", "ip-10-0-0-2".repeat(30));
        assert_ne!(node_label_value(&other), label);
    }

    #[test]
    fn edge_record_wire_format_is_camel_case() {
        let json = serde_json::to_value(edge("a/b", "c/d", 80, 1, 0, 1)).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "src": "a/b", "dst": "c/d", "protocol": "TCP", "port": 80, "count": 1,
                "firstSeen": "2023-11-14T22:13:20Z", "lastSeen": "2023-11-14T22:13:21Z",
            })
        );
    }

    /// The formats the API server recognises for CRD schemas (apiextensions' supported
    /// formats), of those schemars can emit.
    #[test]
    fn crd_schema_uses_only_formats_the_api_server_knows() {
        fn formats(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(f) = m.get("format").and_then(|f| f.as_str()) {
                        out.push(f.to_owned());
                    }
                    m.values().for_each(|v| formats(v, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| formats(v, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        formats(&serde_json::to_value(crd()).unwrap(), &mut found);
        found.sort();
        found.dedup();
        assert_eq!(found, ["date-time", "int32", "int64"]);
        let port = &serde_json::to_value(crd()).unwrap()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            ["properties"]["spec"]["properties"]["edges"]["items"]["properties"]["port"];
        assert_eq!(
            (&port["format"], &port["minimum"], &port["maximum"]),
            (
                &serde_json::json!("int32"),
                &serde_json::json!(0.0),
                &serde_json::json!(65535.0)
            )
        );
    }

    #[test]
    fn committed_crd_matches_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crd.yaml");
        let committed = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e}; generate it with `trustmap crd > {path}`"));
        assert!(
            committed == crd_yaml(),
            "deploy/crd.yaml is out of date: regenerate it with \
             `cargo run -p trustmap -- crd > deploy/crd.yaml`"
        );
    }
}

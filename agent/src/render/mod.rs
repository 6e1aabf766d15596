//! The flow graph people look at: workloads grouped by namespace, plus externals and nodes,
//! with edges coloured by verdict, rendered as DOT, Mermaid or one self-contained HTML file.
//!
//! ```text
//!   Evaluator ──allowed ports per pair──┐
//!   observed connections (optional) ───┴─▶ GraphModel ──▶ to_dot | to_mermaid | render_html
//! ```
//!
//! Edge verdicts: `observed` (allowed and seen), `excess` (allowed, never seen; with flows
//! only), `denied` (seen, but the policies would deny it), `allowed` (no flows given). Pure:
//! the HTML has no external resource at all, so it works air-gapped.

mod dot;
mod html;

pub use dot::{to_dot, to_mermaid};
pub use html::render_html;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    flow::Protocol,
    inventory::{Inventory, Resolved},
    policy::{Connection, Evaluator, Explanation, PortSet},
    reach::{ObservedConnection, reach_matrix, report},
    synth::{Learned, to_yaml},
};

/// What an edge means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeVerdict {
    /// Allowed and observed.
    Observed,
    /// Allowed but never observed: excess privilege.
    Excess,
    /// Observed, but the policies would deny it.
    Denied,
    /// Allowed; no flows were given to tell whether it is used.
    Allowed,
}

impl EdgeVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observed => "observed",
            Self::Excess => "excess",
            Self::Denied => "denied",
            Self::Allowed => "allowed",
        }
    }

    /// The colour the outputs draw it in (see docs/audit.md).
    pub fn colour(self) -> &'static str {
        match self {
            Self::Observed => "#2e9e44",
            Self::Excess => "#e69f00",
            Self::Denied => "#d62728",
            Self::Allowed => "#6c7a89",
        }
    }
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Workload,
    Node,
    External,
}

/// A node: a workload (or pod without workload), a cluster node, or an external address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GraphNode {
    /// Unique: `ns/Kind/name`, `ns/pod`, `node <name>`, `external <ip or CIDR>`.
    pub id: String,
    /// Short: the name without its namespace.
    pub label: String,
    /// The namespace, or `(outside)` for nodes and externals.
    pub group: String,
    pub kind: NodeKind,
}

/// One port (or port set) of an edge, with its count and why the policies decide so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EdgeItem {
    /// `TCP 8080`, or a port set such as `TCP:80,443 UDP:53`.
    pub ports: String,
    /// Connections observed (0 for excess and allowed).
    pub count: u64,
    /// The explaining rules, one sentence per side.
    pub why: Vec<String>,
}

/// A drawn edge: one per source, destination and verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GraphEdge {
    pub src: usize,
    pub dst: usize,
    pub verdict: EdgeVerdict,
    pub items: Vec<EdgeItem>,
}

impl GraphEdge {
    /// The label drawn on the edge: ports with counts.
    pub fn label(&self) -> String {
        let parts: Vec<String> = self
            .items
            .iter()
            .map(|i| {
                if i.count > 0 {
                    format!("{} ×{}", i.ports, i.count)
                } else {
                    i.ports.clone()
                }
            })
            .collect();
        parts.join(", ")
    }
}

/// Nodes and edges, ready to render.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GraphModel {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    /// Whether flows were given (otherwise no edge is observed, excess or denied).
    pub with_flows: bool,
    /// The learned policy of each workload, as YAML, by node id (`ns/Kind/name`); the page
    /// shows it when the workload is selected.
    pub policies: BTreeMap<String, String>,
    /// Each in-cluster workload's blast radius under the policies (as `trustmap blast-radius`
    /// reports it), by node id.
    pub blast: BTreeMap<String, NodeBlast>,
}

/// What a workload could reach if it were compromised, by what the policies allow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeBlast {
    /// Pods it may connect to directly.
    pub reach_pods: u64,
    /// Pods reached by hopping, all hops together.
    pub transitive_pods: u64,
    /// Whether it may connect outside the cluster.
    pub reach_external: bool,
    /// Pods that may connect to it.
    pub reached_by_pods: u64,
    /// `hops[i]`: pods first reached at hop `i + 1`.
    pub hops: Vec<u64>,
    /// The workloads reached, nearest first, with their hop counts; at most
    /// [`BLAST_LISTED`] of them.
    pub reached: Vec<(String, u32)>,
    /// How many workloads are reached in all.
    pub reached_total: usize,
}

/// How many reached workloads a node's blast radius lists.
pub const BLAST_LISTED: usize = 100;

/// The group of nodes outside every namespace.
pub const OUTSIDE: &str = "(outside)";

fn node_of(inv: &Inventory, r: &Resolved, matrix_name: Option<&str>) -> GraphNode {
    let (id, group, kind) = match *r {
        Resolved::Pod { pod, .. } | Resolved::Host { pod: Some(pod), .. } => {
            let p = inv.pod(pod);
            let id = match p.workload {
                Some(w) => inv.workload_ref(w),
                None => inv.pod_ref(pod),
            };
            (
                id,
                inv.namespace(p.namespace).name.clone(),
                NodeKind::Workload,
            )
        }
        Resolved::Host { node: Some(n), .. } => (
            format!("node {}", inv.node(n).name),
            OUTSIDE.into(),
            NodeKind::Node,
        ),
        Resolved::Host { ip, .. } => (
            ip.map_or_else(|| "node".into(), |ip| format!("node {ip}")),
            OUTSIDE.into(),
            NodeKind::Node,
        ),
        Resolved::External(ip) => (
            match matrix_name {
                Some("external") => "external (internet)".to_owned(),
                Some(n) => format!("external {n}"),
                None => format!("external {ip}"),
            },
            OUTSIDE.into(),
            NodeKind::External,
        ),
    };
    let label = match kind {
        NodeKind::Workload => id.split_once('/').map_or(id.clone(), |(_, r)| r.to_owned()),
        _ => id.clone(),
    };
    GraphNode {
        id,
        label,
        group,
        kind,
    }
}

fn why(e: &Explanation) -> Vec<String> {
    vec![
        format!("egress of {}: {}", e.source, e.egress.reason),
        format!("ingress of {}: {}", e.destination, e.ingress.reason),
    ]
}

/// A connection that stands for a port set: its first TCP, UDP or SCTP port.
fn probe(src: Resolved, dst: Resolved, s: &PortSet) -> Connection<'static> {
    let (protocol, port) = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
        .into_iter()
        .find_map(|p| {
            let r = s.ranges(p)?;
            r.ranges().first().map(|&(a, _)| (p, Some(a.max(1))))
        })
        .unwrap_or((Protocol::Icmp, None));
    Connection {
        src,
        dst,
        protocol,
        port,
        dst_names: &[],
    }
}

struct Builder<'a> {
    ev: &'a Evaluator<'a>,
    model: GraphModel,
    index: BTreeMap<String, usize>,
    edges: BTreeMap<(usize, usize, EdgeVerdict), Vec<EdgeItem>>,
}

impl Builder<'_> {
    /// Labels an external node with the DNS names connections to it were made to:
    /// `api.payments.example (203.0.113.10)`.
    fn name_external(&mut self, i: usize, names: &[String]) {
        let n = &mut self.model.nodes[i];
        if names.is_empty() || n.kind != NodeKind::External {
            return;
        }
        let ip = n.id.strip_prefix("external ").unwrap_or(&n.id).to_owned();
        let mut all: Vec<String> = n
            .label
            .split_once(" (")
            .map(|(known, _)| known.split(", ").map(str::to_owned).collect())
            .unwrap_or_default();
        all.extend(names.iter().cloned());
        all.sort();
        all.dedup();
        n.label = format!("{} ({ip})", all.join(", "));
    }

    fn node(&mut self, r: &Resolved, matrix_name: Option<&str>) -> usize {
        let n = node_of(self.ev.inventory(), r, matrix_name);
        if let Some(&i) = self.index.get(&n.id) {
            return i;
        }
        let i = self.model.nodes.len();
        self.index.insert(n.id.clone(), i);
        self.model.nodes.push(n);
        i
    }
}

impl GraphModel {
    /// Builds the graph: every allowed pair of entities (see `trustmap matrix`) and, when
    /// flows are given, every observed connection with its verdict.
    pub fn build(ev: &Evaluator<'_>, observed: Option<&[ObservedConnection]>) -> Self {
        let mut b = Builder {
            ev,
            model: GraphModel {
                with_flows: observed.is_some(),
                ..GraphModel::default()
            },
            index: BTreeMap::new(),
            edges: BTreeMap::new(),
        };
        let entities = ev.matrix_entities();
        let inside = |r: &Resolved| {
            matches!(
                r,
                Resolved::Pod { .. } | Resolved::Host { pod: Some(_), .. }
            )
        };
        for e in &entities {
            if inside(&e.end) {
                b.node(&e.end, None);
            }
        }
        // Observed ports per (src, dst) node pair, to subtract from what is allowed.
        let mut seen: BTreeMap<(usize, usize), PortSet> = BTreeMap::new();
        for o in observed.unwrap_or_default() {
            let c = &o.connection;
            let s = b.node(&c.src, None);
            let d = b.node(&c.dst, None);
            b.name_external(d, c.dst_names);
            let e = ev.explain(c);
            let verdict = if e.verdict == "allow" {
                EdgeVerdict::Observed
            } else {
                EdgeVerdict::Denied
            };
            let ports = match c.port {
                Some(p) => format!("{} {p}", c.protocol),
                None => c.protocol.to_string(),
            };
            let set = match c.port {
                Some(p) => PortSet::of(c.protocol, crate::policy::PortRanges::range(p, p)),
                None => PortSet::of(c.protocol, crate::policy::PortRanges::all()),
            };
            let acc = seen.entry((s, d)).or_default();
            *acc = acc.union(&set);
            let items = b.edges.entry((s, d, verdict)).or_default();
            match items.iter_mut().find(|i| i.ports == ports) {
                Some(i) => i.count += o.count,
                None => items.push(EdgeItem {
                    ports,
                    count: o.count,
                    why: why(&e),
                }),
            }
        }
        let m = reach_matrix(ev, &entities);
        for (i, a) in entities.iter().enumerate() {
            for (j, z) in entities.iter().enumerate() {
                if m[i][j].is_empty() {
                    continue;
                }
                let s = b.node(&a.end, Some(&a.name));
                let d = b.node(&z.end, Some(&z.name));
                let rest = match seen.get(&(s, d)) {
                    Some(o) => m[i][j].minus(o),
                    None => m[i][j].clone(),
                };
                if rest.is_empty() {
                    continue;
                }
                let verdict = if observed.is_some() {
                    EdgeVerdict::Excess
                } else {
                    EdgeVerdict::Allowed
                };
                let e = ev.explain(&probe(a.end, z.end, &rest));
                b.edges.entry((s, d, verdict)).or_default().push(EdgeItem {
                    ports: rest.to_string(),
                    count: 0,
                    why: why(&e),
                });
            }
        }
        let inv = ev.inventory();
        for row in report(inv, &entities, &m).rows {
            let blast = NodeBlast {
                reach_pods: row.reach_pods,
                transitive_pods: row.transitive_pods,
                reach_external: row.reach_external,
                reached_by_pods: row.reached_by_pods,
                hops: row.hops,
                reached_total: row.reached.len(),
                reached: row
                    .reached
                    .into_iter()
                    .take(BLAST_LISTED)
                    .map(|r| (r.workload, r.hops))
                    .collect(),
            };
            b.model.blast.insert(row.workload, blast);
        }
        let mut model = b.model;
        model.edges = b
            .edges
            .into_iter()
            .map(|((src, dst, verdict), items)| GraphEdge {
                src,
                dst,
                verdict,
                items,
            })
            .collect();
        model
    }

    /// The part of the graph that touches `namespace`: its nodes, the edges with an end in it,
    /// and the peers at their other ends.
    pub fn scoped(self, namespace: &str) -> Self {
        let inside = |i: usize| self.nodes[i].group == namespace;
        let edges: Vec<&GraphEdge> = self
            .edges
            .iter()
            .filter(|e| inside(e.src) || inside(e.dst))
            .collect();
        let mut keep: Vec<bool> = (0..self.nodes.len()).map(inside).collect();
        for e in &edges {
            keep[e.src] = true;
            keep[e.dst] = true;
        }
        let mut index = vec![usize::MAX; self.nodes.len()];
        let mut nodes = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if keep[i] {
                index[i] = nodes.len();
                nodes.push(n.clone());
            }
        }
        let edges = edges
            .into_iter()
            .map(|e| GraphEdge {
                src: index[e.src],
                dst: index[e.dst],
                ..e.clone()
            })
            .collect();
        let kept = |id: &String| nodes.iter().any(|n: &GraphNode| &n.id == id);
        let policies = self
            .policies
            .into_iter()
            .filter(|(id, _)| kept(id))
            .collect();
        let blast = self.blast.into_iter().filter(|(id, _)| kept(id)).collect();
        GraphModel {
            nodes,
            edges,
            with_flows: self.with_flows,
            policies,
            blast,
        }
    }

    /// Attaches learned policies, one YAML document per workload, to the nodes they select.
    /// A namespace's default deny has no workload and is left out.
    pub fn with_policies(mut self, learned: &Learned) -> Self {
        for p in &learned.policies {
            let Some(w) = &p.workload else { continue };
            let yaml = match to_yaml(p) {
                Ok(y) => y,
                Err(e) => format!("# the policy could not be rendered: {e}\n"),
            };
            self.policies.insert(w.to_string(), yaml);
        }
        self
    }

    /// Node indexes by group, groups in name order (the outside last), nodes by id.
    pub fn groups(&self) -> Vec<(String, Vec<usize>)> {
        let mut g: BTreeMap<(bool, String), Vec<usize>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            g.entry((n.group == OUTSIDE, n.group.clone()))
                .or_default()
                .push(i);
        }
        g.into_iter()
            .map(|((_, name), mut v)| {
                v.sort_by(|&a, &b| self.nodes[a].id.cmp(&self.nodes[b].id));
                (name, v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, group: &str) -> GraphNode {
        GraphNode {
            id: id.into(),
            label: id.rsplit('/').next().unwrap_or(id).into(),
            group: group.into(),
            kind: NodeKind::Workload,
        }
    }

    fn edge(src: usize, dst: usize, verdict: EdgeVerdict) -> GraphEdge {
        GraphEdge {
            src,
            dst,
            verdict,
            items: vec![EdgeItem {
                ports: "TCP 80".into(),
                count: 1,
                why: vec![],
            }],
        }
    }

    /// `-n a`: a's nodes, the edges with an end in a, and the peers at their other ends, with
    /// the edges' node indexes renumbered; the rest, and its policies, are gone.
    #[test]
    fn scoping_keeps_a_namespace_its_edges_and_their_peers() {
        let ids = [
            "a/Deployment/x",
            "b/Deployment/y",
            "c/Deployment/z",
            "a/Deployment/w",
        ];
        let m = GraphModel {
            nodes: vec![
                node(ids[0], "a"),
                node(ids[1], "b"),
                node(ids[2], "c"),
                node(ids[3], "a"),
            ],
            edges: vec![
                edge(0, 1, EdgeVerdict::Observed),
                edge(1, 2, EdgeVerdict::Observed),
                edge(2, 2, EdgeVerdict::Denied),
                edge(1, 3, EdgeVerdict::Excess),
            ],
            with_flows: true,
            policies: ids
                .iter()
                .map(|i| ((*i).to_owned(), format!("# {i}")))
                .collect(),
            blast: ids
                .iter()
                .map(|i| ((*i).to_owned(), NodeBlast::default()))
                .collect(),
        };
        let s = m.scoped("a");
        let kept: Vec<&str> = s.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(kept, ["a/Deployment/x", "b/Deployment/y", "a/Deployment/w"]);
        let edges: Vec<(&str, &str, EdgeVerdict)> = s
            .edges
            .iter()
            .map(|e| (kept[e.src], kept[e.dst], e.verdict))
            .collect();
        assert_eq!(
            edges,
            [
                ("a/Deployment/x", "b/Deployment/y", EdgeVerdict::Observed),
                ("b/Deployment/y", "a/Deployment/w", EdgeVerdict::Excess),
            ]
        );
        let policies: Vec<&str> = s.policies.keys().map(String::as_str).collect();
        assert_eq!(
            policies,
            ["a/Deployment/w", "a/Deployment/x", "b/Deployment/y"]
        );
        assert_eq!(s.blast.len(), 3);
        assert!(s.with_flows);
        assert_eq!(
            GraphModel {
                nodes: vec![node(ids[2], "c")],
                ..GraphModel::default()
            }
            .scoped("a"),
            GraphModel::default()
        );
    }
}

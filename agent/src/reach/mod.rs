//! Blast radius: what a compromised pod reaches under a set of policies, directly and by
//! hopping through allowed connections, and who reaches it.
//!
//! ```text
//!   Evaluator ──allowed_ports(a, b) for every ordered pair of entities──▶ reach graph
//!        reach graph ──per workload──▶ direct out/in (pods, ports) + BFS hops ──▶ BlastRow
//! ```
//!
//! Entities are the matrix's ([`Evaluator::matrix_entities`]): workloads (their
//! representative pod), pods without workload, `external` and the policies' CIDRs. A
//! workload counts as its real pods, or as one pod when only its manifest is known. The
//! diagonal (one replica to another) is left out: a replica holds no privilege its sibling
//! lacks. Ports count port numbers 1-65535 of TCP, UDP and SCTP, summed over destinations.
//! Pure.

mod observed;

#[cfg(test)]
mod tests;

pub use observed::{ObservedConnection, named, observed_connections, resolve_peer};

use std::collections::VecDeque;

use serde::Serialize;

use crate::{
    inventory::{Inventory, Resolved},
    policy::{Entity, Evaluator, PortRanges, PortSet},
};

/// Port numbers 1-65535 in a set, over TCP, UDP and SCTP.
pub fn port_count(s: &PortSet) -> u64 {
    let count = |r: &PortRanges| -> u64 {
        r.ranges()
            .iter()
            .filter(|&&(_, b)| b >= 1)
            .map(|&(a, b)| u64::from(b) - u64::from(a.max(1)) + 1)
            .sum()
    };
    count(&s.tcp) + count(&s.udp) + count(&s.sctp)
}

/// One workload's exposure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlastRow {
    /// `namespace/Kind/name` or `namespace/pod`.
    pub workload: String,
    /// Pods it stands for.
    pub pods: u64,
    /// Pods it may open connections to, directly.
    pub reach_pods: u64,
    /// Port numbers it may open to them, summed over destinations.
    pub reach_ports: u64,
    /// Whether it may connect to an address outside the cluster.
    pub reach_external: bool,
    /// Pods that may open connections to it.
    pub reached_by_pods: u64,
    /// Whether an address outside the cluster may connect to it.
    pub reached_by_external: bool,
    /// Pods reached by hopping (the start excluded), all hops together.
    pub transitive_pods: u64,
    /// `hops[i]`: pods first reached at hop `i + 1`.
    pub hops: Vec<u64>,
    /// Every workload reached, with its hop count, nearest first.
    pub reached: Vec<Reached>,
    /// With flows: the DNS names of the outside destinations it was seen connecting to that
    /// these policies allow (`api.payments.example:443/TCP`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_names: Vec<String>,
}

/// A workload reached from another, in so many hops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reached {
    pub workload: String,
    pub hops: u32,
    /// Ports the previous hop may open to it.
    pub ports: PortSet,
}

/// The blast radius of every in-cluster workload, sorted by exposure: transitive reach,
/// then who reaches it, then name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlastReport {
    pub rows: Vec<BlastRow>,
}

fn in_cluster(e: &Entity) -> bool {
    matches!(
        e.end,
        Resolved::Pod { .. } | Resolved::Host { pod: Some(_), .. }
    )
}

/// Pods an entity stands for: a workload's real pods (one when only its template is known),
/// one for a pod, none outside the cluster.
fn pods_of(inv: &Inventory, e: &Entity) -> u64 {
    let pod = match e.end {
        Resolved::Pod { pod, .. } | Resolved::Host { pod: Some(pod), .. } => pod,
        _ => return 0,
    };
    match inv.pod(pod).workload {
        Some(w) => (inv.workload(w).pods.len() as u64).max(1),
        None => 1,
    }
}

/// The allowed ports between every ordered pair of entities (the diagonal left empty).
pub fn reach_matrix(ev: &Evaluator<'_>, entities: &[Entity]) -> Vec<Vec<PortSet>> {
    entities
        .iter()
        .enumerate()
        .map(|(i, a)| {
            entities
                .iter()
                .enumerate()
                .map(|(j, b)| {
                    if i == j || (!in_cluster(a) && !in_cluster(b)) {
                        PortSet::empty()
                    } else {
                        ev.allowed_ports_between(&a.end, &b.end, true)
                    }
                })
                .collect()
        })
        .collect()
}

/// Computes the blast radius of every in-cluster entity.
pub fn blast_radius(ev: &Evaluator<'_>) -> BlastReport {
    let entities = ev.matrix_entities();
    let m = reach_matrix(ev, &entities);
    report(ev.inventory(), &entities, &m)
}

/// The report from a reach matrix (see [`reach_matrix`]).
pub fn report(inv: &Inventory, entities: &[Entity], m: &[Vec<PortSet>]) -> BlastReport {
    let n = entities.len();
    let pods: Vec<u64> = entities.iter().map(|e| pods_of(inv, e)).collect();
    let mut rows = Vec::new();
    for s in 0..n {
        if !in_cluster(&entities[s]) {
            continue;
        }
        let out: Vec<usize> = (0..n).filter(|&t| !m[s][t].is_empty()).collect();
        let into: Vec<usize> = (0..n).filter(|&t| !m[t][s].is_empty()).collect();
        // Breadth-first over in-cluster entities: an attacker hops only through pods.
        let mut dist = vec![u32::MAX; n];
        dist[s] = 0;
        let mut queue = VecDeque::from([s]);
        let mut reached = Vec::new();
        while let Some(a) = queue.pop_front() {
            for b in 0..n {
                if dist[b] != u32::MAX || m[a][b].is_empty() || !in_cluster(&entities[b]) {
                    continue;
                }
                dist[b] = dist[a] + 1;
                reached.push(Reached {
                    workload: entities[b].name.clone(),
                    hops: dist[b],
                    ports: m[a][b].clone(),
                });
                queue.push_back(b);
            }
        }
        let max = reached.iter().map(|r| r.hops).max().unwrap_or(0) as usize;
        let mut hops = vec![0u64; max];
        for (b, &d) in dist.iter().enumerate() {
            if d != u32::MAX && d > 0 {
                hops[d as usize - 1] += pods[b];
            }
        }
        rows.push(BlastRow {
            workload: entities[s].name.clone(),
            pods: pods[s],
            reach_pods: out.iter().map(|&t| pods[t]).sum(),
            reach_ports: out
                .iter()
                .filter(|&&t| in_cluster(&entities[t]))
                .map(|&t| port_count(&m[s][t]))
                .sum(),
            reach_external: out.iter().any(|&t| !in_cluster(&entities[t])),
            reached_by_pods: into.iter().map(|&t| pods[t]).sum(),
            reached_by_external: into.iter().any(|&t| !in_cluster(&entities[t])),
            transitive_pods: hops.iter().sum(),
            hops,
            reached,
            external_names: Vec::new(),
        });
    }
    rows.sort_by(|a, b| {
        (
            b.transitive_pods,
            b.reached_by_pods,
            b.reach_ports,
            &a.workload,
        )
            .cmp(&(
                a.transitive_pods,
                a.reached_by_pods,
                a.reach_ports,
                &b.workload,
            ))
    });
    BlastReport { rows }
}

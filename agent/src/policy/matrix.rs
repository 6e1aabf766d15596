//! The connectivity matrix: for every ordered pair of workloads (and external addresses), the
//! ports the source may open to the destination.
//!
//! The diagonal (a workload to itself) is between two of its pods, so policies decide it.
//! A workload is represented by one pod: its template pod when its manifest was given, else its
//! first real pod (a workload's pods share labels and ports). A pod without owner is its own
//! entry. `external` stands for an internet address, represented by 203.0.113.1 (TEST-NET-3);
//! each ipBlock CIDR of the policies other than a default route is an entry too, represented by
//! its first address outside that CIDR's `except`s.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::{Evaluator, Peer, PortSet};
use crate::inventory::{PodId, Resolved};

/// The address `external` stands for.
pub const EXTERNAL_REPRESENTATIVE: &str = "203.0.113.1";

/// One row/column of the matrix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entity {
    /// `namespace/Kind/name`, `namespace/pod`, `external`, or a CIDR.
    pub name: String,
    #[serde(skip)]
    pub end: Resolved,
}

/// An allowed cell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub src: String,
    pub dst: String,
    pub ports: PortSet,
}

/// Allowed connections between every ordered pair of entities. Pairs with nothing allowed
/// are left out; cells are sorted by source, then destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub entities: Vec<Entity>,
    pub allowed: Vec<Cell>,
}

impl Evaluator<'_> {
    /// The entities of the matrix: workloads, pods without workload, and external addresses.
    pub fn matrix_entities(&self) -> Vec<Entity> {
        let inv = self.inventory();
        let mut out: Vec<Entity> = Vec::new();
        for i in 0..inv.workloads().len() {
            let id = crate::inventory::WorkloadId(i as u32);
            if let Some(p) = inv.representative_pod(id) {
                out.push(Entity {
                    name: inv.workload_ref(id),
                    end: inv.resolve_pod(p, None),
                });
            }
        }
        for (i, p) in inv.pods().iter().enumerate() {
            if p.workload.is_none() {
                let id = PodId(i as u32);
                out.push(Entity {
                    name: inv.pod_ref(id),
                    end: inv.resolve_pod(id, None),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.push(Entity {
            name: "external".into(),
            end: Resolved::External(EXTERNAL_REPRESENTATIVE.parse().expect("valid address")),
        });
        for (cidr, ip) in self.cidr_representatives() {
            out.push(Entity {
                name: cidr.to_string(),
                end: inv.resolve_ip(ip),
            });
        }
        out
    }

    fn cidr_representatives(&self) -> Vec<(IpNet, IpAddr)> {
        let mut blocks: Vec<(IpNet, Vec<IpNet>)> = Vec::new();
        for p in self.policies() {
            for rule in p.ingress.iter().chain(&p.egress).flatten() {
                for peer in &rule.peers {
                    if let Peer::IpBlock(b) = peer
                        && b.cidr.prefix_len() > 0
                    {
                        match blocks.iter_mut().find(|(c, _)| *c == b.cidr) {
                            Some((_, ex)) => ex.extend(b.except.iter().copied()),
                            None => blocks.push((b.cidr, b.except.clone())),
                        }
                    }
                }
            }
        }
        blocks.sort_by_key(|(c, _)| *c);
        blocks
            .into_iter()
            .filter_map(|(cidr, except)| {
                let mut candidate = cidr.network();
                // Step past exceptions; each step moves forward, so this ends.
                while let Some(e) = except.iter().find(|e| e.contains(&candidate)) {
                    candidate = next_ip(e.broadcast())?;
                    if !cidr.contains(&candidate) {
                        return None;
                    }
                }
                Some((cidr, candidate))
            })
            .collect()
    }

    /// Computes the matrix.
    pub fn matrix(&self) -> Matrix {
        let entities = self.matrix_entities();
        let mut allowed = Vec::new();
        for src in &entities {
            for dst in &entities {
                let both_outside = !matches!(
                    src.end,
                    Resolved::Pod { .. } | Resolved::Host { pod: Some(_), .. }
                ) && !matches!(
                    dst.end,
                    Resolved::Pod { .. } | Resolved::Host { pod: Some(_), .. }
                );
                if both_outside {
                    continue;
                }
                // The diagonal is between two pods of the workload, not a pod and itself.
                let ports = self.allowed_ports_between(&src.end, &dst.end, src.name != dst.name);
                if !ports.is_empty() {
                    allowed.push(Cell {
                        src: src.name.clone(),
                        dst: dst.name.clone(),
                        ports,
                    });
                }
            }
        }
        Matrix { entities, allowed }
    }
}

fn next_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

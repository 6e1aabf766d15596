//! Semantic diff of two policy sets, in connections: what the current policies allow that the
//! reference (learned policies, i.e. what was observed) does not — excess privilege — and what
//! the reference needs that the current policies deny — what enforcing them would break.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    inventory::{Inventory, Resolved},
    policy::{Evaluator, Policy, PortRanges, PortSet},
};

/// Connections between two ends, on these ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiffRow {
    pub src: String,
    pub dst: String,
    pub ports: PortSet,
}

/// The result of [`connectivity_diff`], each list sorted by source then destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConnectivityDiff {
    /// Allowed by the current policies, never observed: the blast radius to cut.
    pub excess: Vec<DiffRow>,
    /// Observed (allowed by the reference), denied by the current policies: what would break.
    pub denied: Vec<DiffRow>,
}

fn ranges_minus(a: &PortRanges, b: &PortRanges) -> PortRanges {
    // a ∩ complement(b)
    let mut complement = PortRanges::empty();
    let mut next: u32 = 0;
    for &(s, e) in b.ranges() {
        if u32::from(s) > next {
            complement = complement.union(&PortRanges::range(next as u16, s - 1));
        }
        next = u32::from(e) + 1;
    }
    if next <= u32::from(u16::MAX) {
        complement = complement.union(&PortRanges::range(next as u16, u16::MAX));
    }
    a.intersect(&complement)
}

/// Ports in `a` and not in `b`.
pub fn port_set_minus(a: &PortSet, b: &PortSet) -> PortSet {
    PortSet {
        tcp: ranges_minus(&a.tcp, &b.tcp),
        udp: ranges_minus(&a.udp, &b.udp),
        sctp: ranges_minus(&a.sctp, &b.sctp),
        portless: a.portless && !b.portless,
    }
}

/// Compares what `current` and `reference` allow between every pair of ends: the workloads
/// and bare pods of the inventory, `external`, the ipBlocks of either policy set, and
/// `extra` ends (e.g. observed external addresses).
pub fn connectivity_diff(
    inv: &Inventory,
    current: &[Policy],
    reference: &[Policy],
    extra: &[(String, Resolved)],
) -> ConnectivityDiff {
    let cur = Evaluator::new(inv, current);
    let refe = Evaluator::new(inv, reference);
    let mut ends: BTreeMap<String, Resolved> = BTreeMap::new();
    for e in cur
        .matrix_entities()
        .into_iter()
        .chain(refe.matrix_entities())
    {
        ends.entry(e.name).or_insert(e.end);
    }
    for (name, end) in extra {
        ends.entry(name.clone()).or_insert(*end);
    }
    let inside = |r: &Resolved| {
        matches!(
            r,
            Resolved::Pod { .. } | Resolved::Host { pod: Some(_), .. }
        )
    };
    let mut out = ConnectivityDiff::default();
    for (sn, s) in &ends {
        for (dn, d) in &ends {
            if sn == dn || (!inside(s) && !inside(d)) {
                continue;
            }
            let a = cur.allowed_ports(s, d);
            let b = refe.allowed_ports(s, d);
            let row = |ports: PortSet| DiffRow {
                src: sn.clone(),
                dst: dn.clone(),
                ports,
            };
            let excess = port_set_minus(&a, &b);
            if !excess.is_empty() {
                out.excess.push(row(excess));
            }
            let denied = port_set_minus(&b, &a);
            if !denied.is_empty() {
                out.denied.push(row(denied));
            }
        }
    }
    out
}

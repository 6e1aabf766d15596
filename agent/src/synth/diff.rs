//! Semantic diff of two policy sets, in connections: what the current policies allow that the
//! reference (learned policies, i.e. what was observed) does not — excess privilege — and what
//! the reference needs that the current policies deny — what enforcing them would break.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    inventory::{Inventory, Resolved},
    policy::{AdminPolicy, Evaluator, Policy, PortSet},
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

/// Compares what `current` and `reference` allow between every pair of ends: the workloads
/// and bare pods of the inventory, `external`, the ipBlocks of either policy set, and
/// `extra` ends (e.g. observed external addresses, with the DNS names connections to them
/// were made to, which `toFQDNs` and `domainNames` rules match).
/// The admin tiers (`admin`) are in force for both: a learned policy set is judged with the
/// cluster's guardrails around it.
pub fn connectivity_diff(
    inv: &Inventory,
    current: &[Policy],
    reference: &[Policy],
    admin: &[AdminPolicy],
    extra: &[(String, Resolved, Vec<String>)],
) -> ConnectivityDiff {
    let cur = Evaluator::new(inv, current).with_admin(admin);
    let refe = Evaluator::new(inv, reference).with_admin(admin);
    let mut ends: BTreeMap<String, (Resolved, &[String])> = BTreeMap::new();
    for e in cur
        .matrix_entities()
        .into_iter()
        .chain(refe.matrix_entities())
    {
        ends.entry(e.name).or_insert((e.end, &[]));
    }
    for (name, end, names) in extra {
        ends.entry(name.clone()).or_insert((*end, names));
    }
    let inside = |r: &Resolved| {
        matches!(
            r,
            Resolved::Pod { .. } | Resolved::Host { pod: Some(_), .. }
        )
    };
    let mut out = ConnectivityDiff::default();
    for (sn, (s, _)) in &ends {
        for (dn, (d, names)) in &ends {
            if sn == dn || (!inside(s) && !inside(d)) {
                continue;
            }
            let a = cur.allowed_ports_named(s, d, true, names);
            let b = refe.allowed_ports_named(s, d, true, names);
            let row = |ports: PortSet| DiffRow {
                src: sn.clone(),
                dst: dn.clone(),
                ports,
            };
            let excess = a.minus(&b);
            if !excess.is_empty() {
                out.excess.push(row(excess));
            }
            let denied = b.minus(&a);
            if !denied.is_empty() {
                out.denied.push(row(denied));
            }
        }
    }
    out
}

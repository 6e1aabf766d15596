//! Excess privilege measured against observed traffic: rules that decided no observed
//! connection (TM050), and ports (TM051) or peers (TM052) of used rules that none used, each
//! with what was observed instead.
//!
//! A rule is *used* when the evaluator names it as the rule that allowed a side of an observed
//! connection (the first matching rule, in policy-name order); a peer or port when it is the
//! one that matched.

use std::collections::{BTreeMap, BTreeSet};

use super::{Ctx, Tail, dir_key, peers_key, rule_path, rule_subject, rules_of};
use crate::{
    flow::Protocol,
    lint::{Finding, ObservedConnection, RuleId, fix},
    policy::{Direction, SideVerdict},
};

#[derive(Default)]
struct Use {
    peers: BTreeSet<u32>,
    ports: BTreeSet<u32>,
    /// Observed peers (names) and ports.
    seen_peers: BTreeSet<String>,
    seen_ports: BTreeSet<(Protocol, u16)>,
    count: u64,
}

pub fn check(ctx: &Ctx<'_>, observed: &[ObservedConnection], out: &mut Vec<Finding>) {
    let mut used: BTreeMap<(u32, Direction, u32), Use> = BTreeMap::new();
    for o in observed {
        let v = ctx.ev.evaluate(&o.connection);
        for (d, side, peer) in [
            (Direction::Egress, v.egress, &o.dst),
            (Direction::Ingress, v.ingress, &o.src),
        ] {
            let SideVerdict::Allowed(r) = side else {
                continue;
            };
            let u = used.entry((r.policy, d, r.rule)).or_default();
            u.peers.extend(r.peer);
            u.ports.extend(r.port);
            u.seen_peers.insert(peer.clone());
            if let Some(port) = o.connection.port {
                u.seen_ports.insert((o.connection.protocol, port));
            }
            u.count += o.count;
        }
    }
    for (pi, p) in ctx.policies.iter().enumerate() {
        if ctx.selected(p).is_empty() {
            continue;
        }
        for (d, ri, rule) in rules_of(p) {
            let where_ = format!("{} {} rule {ri}", p.key(), dir_key(d));
            let Some(u) = used.get(&(pi as u32, d, ri as u32)) else {
                out.push(
                    Finding::new(
                        RuleId::RuleUnused,
                        rule_subject(p, d, ri, None),
                        format!(
                            "{where_} allowed none of the {} observed connections",
                            observed.len()
                        ),
                        "remove the rule, or observe longer if its traffic is rare".into(),
                    )
                    .at(ctx.policy_location(p, &rule_path(d, ri, Tail::Rule))),
                );
                continue;
            };
            let seen_ports: Vec<(Protocol, u16)> = u.seen_ports.iter().copied().collect();
            let seen_list = seen_ports
                .iter()
                .map(|(p, n)| format!("{n}/{p}"))
                .collect::<Vec<_>>()
                .join(", ");
            let unused_ports: Vec<String> = rule
                .ports
                .iter()
                .enumerate()
                .filter(|(i, _)| !u.ports.contains(&(*i as u32)))
                .map(|(_, m)| m.to_string())
                .collect();
            if rule.ports.is_empty() || !unused_ports.is_empty() {
                let what = if rule.ports.is_empty() {
                    "allows every port".to_owned()
                } else {
                    format!("allows {} that no connection used", unused_ports.join(", "))
                };
                out.push(
                    Finding::new(
                        RuleId::PortsUnused,
                        rule_subject(p, d, ri, None),
                        format!("{where_} {what}; observed: {seen_list}"),
                        format!("narrow the rule's ports to the observed ones: {seen_list}"),
                    )
                    .yaml(format!("ports: {}\n", fix::ports(&seen_ports)))
                    .at(ctx.policy_location(p, &rule_path(d, ri, Tail::Ports))),
                );
            }
            let unused_peers: Vec<String> = rule
                .peers
                .iter()
                .enumerate()
                .filter(|(i, _)| !u.peers.contains(&(*i as u32)))
                .map(|(i, peer)| format!("peer {i} ({peer})"))
                .collect();
            if rule.peers.is_empty() || !unused_peers.is_empty() {
                let seen: Vec<&str> = u.seen_peers.iter().map(String::as_str).collect();
                let what = if rule.peers.is_empty() {
                    "allows every peer".to_owned()
                } else {
                    format!(
                        "allows {} that no connection matched",
                        unused_peers.join(", ")
                    )
                };
                out.push(
                    Finding::new(
                        RuleId::PeersUnused,
                        rule_subject(p, d, ri, None),
                        format!(
                            "{where_} {what}; observed {}: {}",
                            peers_key(d),
                            seen.join(", ")
                        ),
                        format!(
                            "narrow `{}` to the observed peers: {}",
                            peers_key(d),
                            seen.join(", ")
                        ),
                    )
                    .at(ctx.policy_location(p, &rule_path(d, ri, Tail::Rule))),
                );
            }
        }
    }
}

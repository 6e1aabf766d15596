//! What has no effect: policies that select no pod (TM030), pod peers that match no pod
//! (TM031), and rules that a broader rule already covers for every pod they apply to (TM032).

use super::{Ctx, Tail, dir_key, pod_peers, rule_path, rule_subject, rules_of};
use crate::{
    inventory::PodId,
    lint::{Finding, RuleId, Subject, locate::Seg},
    policy::{Direction, IpBlock, NamespaceScope, Peer, Policy, PortMatcher, PortSpec, Rule},
};

pub fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for p in ctx.policies {
        let selected = ctx.selected(p);
        if selected.is_empty() {
            out.push(
                Finding::new(
                    RuleId::PolicySelectsNothing,
                    Subject {
                        policy: Some(p.key()),
                        ..Subject::default()
                    },
                    format!(
                        "{} has podSelector [{}], which selects no pod of namespace {}: it enforces nothing",
                        p.key(),
                        p.pod_selector,
                        p.namespace
                    ),
                    "fix the podSelector's labels, or delete the policy".into(),
                )
                .at(ctx.policy_location(p, &[Seg::key("spec"), Seg::key("podSelector")])),
            );
        }
        for (d, ri, rule) in rules_of(p) {
            dead_peers(ctx, p, d, ri, rule, out);
            if !selected.is_empty() {
                shadowed(ctx, p, &selected, d, ri, rule, out);
            }
        }
    }
}

fn dead_peers(
    ctx: &Ctx<'_>,
    p: &Policy,
    d: Direction,
    ri: usize,
    rule: &Rule,
    out: &mut Vec<Finding>,
) {
    for (pi, ns, pods) in pod_peers(rule) {
        if !ctx.peer_pods(ns, pods).is_empty() {
            continue;
        }
        // A podSelector alone that matches pods elsewhere is TM020's finding.
        let elsewhere = matches!(ns, NamespaceScope::Named(_))
            && ctx
                .pods
                .iter()
                .any(|&id| pods.matches(&ctx.inv.pod(id).labels));
        if elsewhere {
            continue;
        }
        let scope = match ns {
            NamespaceScope::Named(n) => format!("namespace {n}"),
            NamespaceScope::Selector(s) => format!("namespaces [{s}]"),
        };
        out.push(
            Finding::new(
                RuleId::PeerMatchesNothing,
                rule_subject(p, d, ri, Some(pi)),
                format!(
                    "{} {} rule {ri} peer {pi} matches no pod: no pod [{pods}] in {scope}",
                    p.key(),
                    dir_key(d)
                ),
                "fix the selector's labels, or remove the peer".into(),
            )
            .at(ctx.policy_location(p, &rule_path(d, ri, Tail::Peer(pi)))),
        );
    }
}

/// What a rule's peers cover: the pods its pod peers match, its ipBlocks, and its Cilium
/// peers (CIDRs, names, entities), which only the same peer covers; `None` when it has no
/// peers (all).
type Cover<'r> = (Vec<PodId>, Vec<IpBlock>, Vec<&'r Peer>);

fn peer_cover<'r>(ctx: &Ctx<'_>, r: &'r Rule) -> Option<Cover<'r>> {
    if r.peers.is_empty() {
        return None;
    }
    let mut pods = Vec::new();
    let mut blocks = Vec::new();
    let mut others = Vec::new();
    for peer in &r.peers {
        match peer {
            Peer::Pods {
                namespaces,
                pods: sel,
            } => pods.extend(ctx.peer_pods(namespaces, sel)),
            Peer::IpBlock(b) => blocks.push(b.clone()),
            Peer::Cidr(_) | Peer::Fqdn(_) | Peer::Entity(_) => others.push(peer),
        }
    }
    pods.sort();
    pods.dedup();
    Some((pods, blocks, others))
}

fn block_within(inner: &IpBlock, outer: &IpBlock) -> bool {
    outer.cidr.contains(&inner.cidr)
        && outer.except.iter().all(|e| {
            !(e.contains(&inner.cidr) || inner.cidr.contains(e))
                || inner.except.iter().any(|ie| ie.contains(e))
        })
}

fn peers_covered(ctx: &Ctx<'_>, r: &Rule, s: &Rule) -> bool {
    match (peer_cover(ctx, r), peer_cover(ctx, s)) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some((rp, rb, ro)), Some((sp, sb, so))) => {
            rp.iter().all(|p| sp.contains(p))
                && rb.iter().all(|b| sb.iter().any(|o| block_within(b, o)))
                && ro.iter().all(|p| so.contains(p))
        }
    }
}

fn port_within(m: &PortMatcher, o: &PortMatcher) -> bool {
    if m.protocol != o.protocol {
        return false;
    }
    match (&m.port, &o.port) {
        (_, PortSpec::All) => true,
        (PortSpec::Range { start, end }, PortSpec::Range { start: s, end: e }) => {
            s <= start && end <= e
        }
        (PortSpec::Named(a), PortSpec::Named(b)) => a == b,
        _ => false,
    }
}

fn ports_covered(r: &Rule, s: &Rule) -> bool {
    if s.ports.is_empty() {
        return true;
    }
    !r.ports.is_empty()
        && r.ports
            .iter()
            .all(|m| s.ports.iter().any(|o| port_within(m, o)))
}

fn shadowed(
    ctx: &Ctx<'_>,
    p: &Policy,
    selected: &[PodId],
    d: Direction,
    ri: usize,
    rule: &Rule,
    out: &mut Vec<Finding>,
) {
    // A rule whose peers all match nothing is dead, not shadowed.
    if let Some((pods, blocks, others)) = peer_cover(ctx, rule)
        && pods.is_empty()
        && blocks.is_empty()
        && others.is_empty()
    {
        return;
    }
    let me = (p.key(), ri);
    for q in ctx.policies {
        if q.namespace != p.namespace || q.rules(d).is_none() {
            continue;
        }
        if !selected
            .iter()
            .all(|&pod| q.pod_selector.matches(&ctx.inv.pod(pod).labels))
        {
            continue;
        }
        for (si, s) in q.rules(d).unwrap_or_default().iter().enumerate() {
            let other = (q.key(), si);
            if other == me {
                continue;
            }
            if !(peers_covered(ctx, rule, s) && ports_covered(rule, s)) {
                continue;
            }
            // Two rules that cover each other: only the later one is reported.
            let mutual = peers_covered(ctx, s, rule) && ports_covered(s, rule);
            if mutual && other > me {
                continue;
            }
            out.push(
                Finding::new(
                    RuleId::RuleShadowed,
                    rule_subject(p, d, ri, None),
                    format!(
                        "{} {} rule {ri} is covered by {} {} rule {si}, which allows the same peers and ports (or more) to every pod it applies to",
                        p.key(),
                        dir_key(d),
                        q.key(),
                        dir_key(d)
                    ),
                    "remove the narrower rule, or narrow the broader one".into(),
                )
                .at(ctx.policy_location(p, &rule_path(d, ri, Tail::Rule))),
            );
            return;
        }
    }
}

//! The admin tiers (ClusterNetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy): a
//! Pass with nothing below it (TM060), an Admin Accept for a broad peer (TM061), a rule
//! shadowed by a higher-priority policy (TM062), overlapping equal priorities (TM063), and a
//! Baseline that allows everything (TM064).

use std::collections::BTreeSet;

use super::{Ctx, Tail, rule_path};
use crate::lint::locate::Seg;
use crate::{
    inventory::PodId,
    lint::{Finding, RuleId, Subject},
    policy::{Action, AdminPeer, AdminPolicy, AdminRule, Direction, Subject as AdminSubject, Tier},
};

/// The pods (on the pod network) an admin policy's subject selects.
fn subject_pods(ctx: &Ctx<'_>, p: &AdminPolicy) -> BTreeSet<PodId> {
    let (namespaces, pods) = match &p.subject {
        AdminSubject::Namespaces(ns) => (ns, None),
        AdminSubject::Pods { namespaces, pods } => (namespaces, Some(pods)),
    };
    ctx.pods
        .iter()
        .copied()
        .filter(|&id| {
            let pod = ctx.inv.pod(id);
            namespaces.matches(&ctx.inv.namespace(pod.namespace).labels)
                && pods.is_none_or(|s| s.matches(&pod.labels))
        })
        .collect()
}

fn subject(p: &AdminPolicy, d: Option<Direction>, rule: Option<usize>) -> Subject {
    Subject {
        policy: Some(p.key()),
        direction: d,
        rule,
        peer: None,
        object: None,
    }
}

/// A peer that matches every pod of the cluster (or every address).
fn everything(peer: &AdminPeer) -> bool {
    match peer {
        AdminPeer::Namespaces(ns) => ns.is_everything(),
        AdminPeer::Pods { namespaces, pods } => namespaces.is_everything() && pods.is_everything(),
        AdminPeer::Networks(nets) => nets.iter().any(|n| n.prefix_len() == 0),
        AdminPeer::Nodes(_) | AdminPeer::DomainNames(_) => false,
    }
}

fn directions(p: &AdminPolicy) -> impl Iterator<Item = (Direction, usize, &AdminRule)> {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .flat_map(move |d| p.rules(d).iter().enumerate().map(move |(i, r)| (d, i, r)))
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

pub fn check(ctx: &Ctx<'_>, admin: &[AdminPolicy], out: &mut Vec<Finding>) {
    let pods: Vec<BTreeSet<PodId>> = admin.iter().map(|p| subject_pods(ctx, p)).collect();
    for (pi, p) in admin.iter().enumerate() {
        for (d, ri, rule) in directions(p) {
            let where_ = format!("{} {} rule {ri}", p.key(), dir_name(d));
            let broad_peer = rule.peers.iter().position(everything);
            let broad = broad_peer.is_some();
            let at_rule = ctx.admin_location(p, &rule_path(d, ri, Tail::Rule));
            if p.tier == Tier::Admin && rule.action == Action::Pass {
                pass_to_nothing(ctx, admin, &pods, pi, d, ri, &where_, out);
            }
            if p.tier == Tier::Admin && rule.action == Action::Accept && broad {
                out.push(Finding::new(
                    RuleId::AdminAcceptBroad,
                    subject(p, Some(d), Some(ri)),
                    format!(
                        "{where_} accepts {} every pod or address: it overrides the NetworkPolicies of every namespace it selects, default-denies included",
                        if d == Direction::Ingress { "from" } else { "to" }
                    ),
                    "accept only the namespaces or pods that need the connection, or use Pass so that the namespaces' own policies decide".into(),
                ).at(ctx.admin_location(p, &rule_path(d, ri, Tail::Peer(broad_peer.unwrap_or(0))))));
            }
            if p.tier == Tier::Baseline
                && rule.action == Action::Accept
                && broad
                && rule.ports.is_empty()
            {
                out.push(Finding::new(
                    RuleId::BaselineAllowsEverything,
                    subject(p, Some(d), Some(ri)),
                    format!("{where_} accepts every peer on every port: the baseline denies nothing, which is the default without it"),
                    "make the baseline deny what nobody allowed, and accept only what every namespace needs (such as DNS)".into(),
                ).at(at_rule.clone()));
            }
            if let Some(f) = shadowed(admin, &pods, pi, d, ri, rule, &where_) {
                out.push(f.at(at_rule));
            }
        }
        for (qi, q) in admin.iter().enumerate().skip(pi + 1) {
            if q.tier != p.tier || q.priority != p.priority {
                continue;
            }
            let both = pods[pi].intersection(&pods[qi]).count();
            let same_dir = [Direction::Ingress, Direction::Egress]
                .into_iter()
                .any(|d| !p.rules(d).is_empty() && !q.rules(d).is_empty());
            if both > 0 && same_dir {
                out.push(Finding::new(
                    RuleId::AdminEqualPriorityOverlap,
                    subject(p, None, None),
                    format!(
                        "{} and {} have the same tier and priority ({}) and both select {both} pod(s): where their rules both match with different actions, the outcome is left to the implementation (trustmap reports it as undefined)",
                        p.key(),
                        q.key(),
                        p.priority
                    ),
                    "give the two policies different priorities".into(),
                ).at(ctx.admin_location(p, &[Seg::key("spec"), Seg::key("priority")])));
            }
        }
    }
}

/// TM060: an Admin Pass for pods that no NetworkPolicy isolates for the direction and no
/// Baseline-tier policy selects: it ends in the default allow.
#[allow(clippy::too_many_arguments)]
fn pass_to_nothing(
    ctx: &Ctx<'_>,
    admin: &[AdminPolicy],
    pods: &[BTreeSet<PodId>],
    pi: usize,
    d: Direction,
    ri: usize,
    where_: &str,
    out: &mut Vec<Finding>,
) {
    let p = &admin[pi];
    let below = |id: &PodId| {
        !ctx.ev.selecting(d, *id).is_empty()
            || admin.iter().zip(pods).any(|(b, bp)| {
                b.tier == Tier::Baseline && !b.rules(d).is_empty() && bp.contains(id)
            })
    };
    let bare: Vec<PodId> = pods[pi].iter().copied().filter(|id| !below(id)).collect();
    if bare.is_empty() {
        return;
    }
    let names = ctx.names(&bare);
    out.push(Finding::new(
        RuleId::AdminPassToNothing,
        subject(p, Some(d), Some(ri)),
        format!(
            "{where_} passes to NetworkPolicy and the Baseline tier, but neither decides {} for {}: the Pass allows",
            dir_name(d),
            names.join(", ")
        ),
        "isolate those pods with a NetworkPolicy, add a Baseline-tier deny, or make the rule Accept or Deny".into(),
    ).at(ctx.admin_location(p, &rule_path(d, ri, Tail::Rule))));
}

/// TM062: every connection the rule could match reaches an earlier decision first: a policy
/// of the same tier with a lower priority number selects all its pods and has, for the same
/// direction, a rule with no ports (or the same ports) whose peers match everything this
/// rule's peers do (a peer that matches everything, or the same peers).
#[allow(clippy::too_many_arguments)]
fn shadowed(
    admin: &[AdminPolicy],
    pods: &[BTreeSet<PodId>],
    pi: usize,
    d: Direction,
    ri: usize,
    rule: &AdminRule,
    where_: &str,
) -> Option<Finding> {
    let p = &admin[pi];
    if pods[pi].is_empty() {
        return None;
    }
    for (qi, q) in admin.iter().enumerate() {
        if q.tier != p.tier || q.priority >= p.priority || !pods[pi].is_subset(&pods[qi]) {
            continue;
        }
        let cover = q.rules(d).iter().enumerate().find(|(_, r)| {
            (r.ports.is_empty() || r.ports == rule.ports)
                && (r.peers.iter().any(everything) || r.peers == rule.peers)
                && !r
                    .peers
                    .iter()
                    .any(|x| matches!(x, AdminPeer::DomainNames(_)))
        });
        if let Some((qri, r)) = cover {
            return Some(Finding::new(
                RuleId::AdminRuleShadowed,
                subject(p, Some(d), Some(ri)),
                format!(
                    "{where_} never applies: {} (priority {}) {} rule {qri} decides ({}) every connection it matches first",
                    q.key(),
                    q.priority,
                    dir_name(d),
                    r.action
                ),
                "remove the rule, or move its policy before the other one".into(),
            ));
        }
    }
    None
}

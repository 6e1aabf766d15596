//! Isolation baselines: default-deny per direction (TM001, TM002) and DNS under egress
//! isolation (TM003).

use super::{Ctx, dir_key};
use crate::{
    flow::Protocol,
    inventory::{NamespaceId, PodId},
    lint::{Finding, RuleId, Subject, fix, locate::Seg},
    policy::{Connection, Direction, NamespaceScope, Peer, PortSpec, Rule, Selector, SideVerdict},
};

pub fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for (i, ns) in ctx.inv.namespaces().iter().enumerate() {
        let id = NamespaceId(i as u32);
        if !ctx.checks_namespace(&ns.name) || ctx.pods_in(id).next().is_none() {
            continue;
        }
        for d in [Direction::Ingress, Direction::Egress] {
            default_deny(ctx, &ns.name, d, out);
        }
        dns(ctx, id, out);
    }
}

fn default_deny(ctx: &Ctx<'_>, ns: &str, d: Direction, out: &mut Vec<Finding>) {
    let all_pods: Vec<_> = ctx
        .policies
        .iter()
        .filter(|p| p.namespace == ns && p.pod_selector.is_everything())
        .collect();
    if all_pods.iter().any(|p| p.rules(d).is_some()) {
        return;
    }
    let (id, other) = match d {
        Direction::Ingress => (RuleId::MissingDefaultDenyIngress, "Egress"),
        Direction::Egress => (RuleId::MissingDefaultDenyEgress, "Ingress"),
    };
    let one_sided = all_pods.first();
    let mut message = format!(
        "namespace {ns} has pods but no policy selects all of them for {}: new and unlisted pods {} connections",
        dir_key(d),
        match d {
            Direction::Ingress => "accept any incoming",
            Direction::Egress => "may open any outgoing",
        }
    );
    if let Some(p) = one_sided {
        message.push_str(&format!(
            "; {} selects every pod but its policyTypes covers only {other}",
            p.key()
        ));
    }
    let location = match one_sided {
        Some(p) => ctx.policy_location(p, &[Seg::key("spec"), Seg::key("policyTypes")]),
        None => ctx.sources.namespace_location(ns),
    };
    let fix_text = match one_sided {
        Some(p) => format!(
            "add {} to the policyTypes of {}, or add this policy",
            match d {
                Direction::Ingress => "Ingress",
                Direction::Egress => "Egress",
            },
            p.key()
        ),
        None => "add this policy, then allow what the pods need".to_owned(),
    };
    out.push(
        Finding::new(
            id,
            Subject {
                policy: one_sided.map(|p| p.key()),
                object: Some(format!("namespace {ns}")),
                direction: Some(d),
                ..Subject::default()
            },
            message,
            fix_text,
        )
        .yaml(fix::default_deny(ns, d))
        .at(location),
    );
}

/// The cluster DNS pods, if the manifests have them.
fn dns_pods(ctx: &Ctx<'_>) -> Vec<PodId> {
    let sel = Selector::from_labels(
        ctx.opts
            .dns_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    ctx.peer_pods(&NamespaceScope::Named(ctx.opts.dns_namespace.clone()), &sel)
}

fn dns(ctx: &Ctx<'_>, ns: NamespaceId, out: &mut Vec<Finding>) {
    let targets = dns_pods(ctx);
    let mut blocked = Vec::new();
    let mut policy = None;
    for pod in ctx.pods_in(ns) {
        if targets.contains(&pod) {
            continue;
        }
        let selecting = ctx.ev.selecting(Direction::Egress, pod);
        if selecting.is_empty() {
            continue;
        }
        let ok = match targets.first() {
            Some(&t) => {
                let c = Connection {
                    src: ctx.inv.resolve_pod(pod, None),
                    dst: ctx.inv.resolve_pod(t, None),
                    protocol: Protocol::Udp,
                    port: Some(53),
                    dst_names: &[],
                };
                // Only this pod's egress: the DNS pods' own ingress is another rule's business.
                !matches!(ctx.ev.evaluate(&c).egress, SideVerdict::Denied)
            }
            None => selecting.iter().any(|&pi| {
                ctx.policies[pi as usize]
                    .egress
                    .iter()
                    .flatten()
                    .any(|r| allows_dns_statically(ctx, r))
            }),
        };
        if !ok {
            blocked.push(pod);
            policy.get_or_insert(selecting[0]);
        }
    }
    let Some(pi) = policy else { return };
    let p = &ctx.policies[pi as usize];
    let ns_name = &ctx.inv.namespace(ns).name;
    let dns_sel = Selector::from_labels(
        ctx.opts
            .dns_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let peer = fix::pod_peer(Some(&ctx.opts.dns_namespace), &dns_sel);
    out.push(
        Finding::new(
            RuleId::EgressDenyBlocksDns,
            Subject {
                policy: Some(p.key()),
                direction: Some(Direction::Egress),
                object: Some(format!("namespace {ns_name}")),
                ..Subject::default()
            },
            format!(
                "{} isolates pods for egress and no rule lets them reach the cluster DNS ({} pods {}) on UDP 53: {} lose name resolution",
                p.key(),
                ctx.opts.dns_namespace,
                dns_sel,
                ctx.names(&blocked).join(", ")
            ),
            "allow egress to the cluster DNS on UDP and TCP 53 (this policy selects every pod of the namespace)".into(),
        )
        .yaml(fix::allow_policy(
            "allow-dns",
            ns_name,
            &Selector::everything(),
            Direction::Egress,
            &peer,
            &[(Protocol::Udp, 53), (Protocol::Tcp, 53)],
        ))
        .at(ctx.policy_location(p, &[])),
    );
}

/// Without DNS pods in the manifests: whether a rule could let UDP 53 reach them.
fn allows_dns_statically(ctx: &Ctx<'_>, r: &Rule) -> bool {
    let port_ok = r.ports.is_empty()
        || r.ports.iter().any(|m| {
            m.protocol == Protocol::Udp
                && match &m.port {
                    PortSpec::All => true,
                    PortSpec::Range { start, end } => (*start..=*end).contains(&53),
                    PortSpec::Named(n) => n.contains("dns"),
                }
        });
    let ns_labels = ctx
        .inv
        .namespace_id(&ctx.opts.dns_namespace)
        .map(|id| ctx.inv.namespace(id).labels.clone())
        .unwrap_or_else(|| {
            [(
                crate::inventory::NAMESPACE_NAME_LABEL.to_owned(),
                ctx.opts.dns_namespace.clone(),
            )]
            .into()
        });
    let peer_ok = r.peers.is_empty()
        || r.peers.iter().any(|p| match p {
            Peer::IpBlock(_) => true,
            // Cilium: CIDRs and names never match pods; these entities take in every pod.
            Peer::Entity(e) => matches!(
                e,
                crate::policy::CiliumEntity::All | crate::policy::CiliumEntity::Cluster
            ),
            Peer::Cidr(_) | Peer::Fqdn(_) => false,
            Peer::Pods { namespaces, pods } => {
                let ns_ok = match namespaces {
                    NamespaceScope::Named(n) => *n == ctx.opts.dns_namespace,
                    NamespaceScope::Selector(s) => s.matches(&ns_labels),
                };
                ns_ok && pods.matches(&ctx.opts.dns_labels)
            }
        });
    port_ok && peer_ok
}

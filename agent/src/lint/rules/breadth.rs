//! Peers and rules that allow too much: every namespace (TM010), every pod of a namespace
//! (TM011), any address (TM012), the pod CIDR by address (TM013), every port (TM014), every
//! peer (TM015), most of the cluster (TM016), and a podSelector that looks in the wrong
//! namespace (TM020).

use super::{Ctx, Tail, peers_key, pod_peers, rule_path, rule_subject, rules_of};
use crate::{
    lint::{Finding, RuleId, Severity, fix},
    policy::{Direction, NamespaceScope, Peer, Policy, PortSpec, Rule},
};

pub fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for p in ctx.policies {
        for (d, ri, rule) in rules_of(p) {
            let start = out.len();
            check_rule(ctx, p, d, ri, rule, out);
            if let Some(why) = expected_breadth(ctx, p, d, rule) {
                for f in &mut out[start..] {
                    if matches!(
                        f.rule,
                        RuleId::PeerAllNamespaces
                            | RuleId::PeerAllPodsInNamespace
                            | RuleId::SelectorTooBroad
                    ) {
                        f.severity = Severity::Note;
                        f.message
                            .push_str(&format!(" ({why}: this breadth is expected)"));
                    }
                }
            }
        }
    }
}

/// Whether a rule is broad by design: the ingress of the cluster DNS pods on port 53 (every
/// namespace resolves names), or the egress of the metrics scrapers (they reach every
/// target). Such a rule's breadth findings (TM010, TM011, TM016) are notes, not warnings.
fn expected_breadth(ctx: &Ctx<'_>, p: &Policy, d: Direction, rule: &Rule) -> Option<&'static str> {
    let selected = ctx.selected(p);
    if selected.is_empty() || rule.ports.is_empty() {
        return None;
    }
    let all =
        |f: &dyn Fn(&crate::inventory::Pod) -> bool| selected.iter().all(|&id| f(ctx.inv.pod(id)));
    match d {
        Direction::Ingress => {
            let dns_pod = |pod: &crate::inventory::Pod| {
                ctx.inv.namespace(pod.namespace).name == ctx.opts.dns_namespace
                    && ctx
                        .opts
                        .dns_labels
                        .iter()
                        .all(|(k, v)| pod.labels.get(k) == Some(v))
            };
            let port_53 = rule.ports.iter().all(|m| match &m.port {
                PortSpec::Range { start, end } => *start == 53 && *end == 53,
                PortSpec::Named(n) => n.starts_with("dns"),
                PortSpec::All => false,
            });
            (all(&dns_pod) && port_53).then_some("the cluster DNS serves every namespace")
        }
        Direction::Egress => {
            let scraper = |pod: &crate::inventory::Pod| {
                ctx.opts.scrapers.iter().any(|s| s.matches(&pod.labels))
            };
            all(&scraper).then_some("a metrics scraper reaches every target")
        }
    }
}

fn check_rule(
    ctx: &Ctx<'_>,
    p: &Policy,
    d: Direction,
    ri: usize,
    rule: &Rule,
    out: &mut Vec<Finding>,
) {
    let at = |tail| ctx.policy_location(p, &rule_path(d, ri, tail));
    let key = peers_key(d);
    let where_ = format!("{} {} rule {ri}", p.key(), super::dir_key(d));
    if rule.peers.is_empty() {
        out.push(
            Finding::new(
                RuleId::RuleAnyPeer,
                rule_subject(p, d, ri, None),
                format!("{where_} has no `{key}`: it matches every pod, node and address"),
                format!("list the peers that need this connection under `{key}`"),
            )
            .at(at(Tail::Rule)),
        );
    }
    if rule.ports.is_empty() {
        out.push(
            Finding::new(
                RuleId::RuleWithoutPorts,
                rule_subject(p, d, ri, None),
                format!("{where_} has no `ports`: it allows every port and protocol"),
                "list the ports the peers need".into(),
            )
            .yaml("ports:\n- {protocol: TCP, port: 8080}   # the port(s) the peers use\n".into())
            .at(at(Tail::Rule)),
        );
    }
    for (pi, peer) in rule.peers.iter().enumerate() {
        let subject = rule_subject(p, d, ri, Some(pi));
        let loc = at(Tail::Peer(pi));
        match peer {
            Peer::IpBlock(b) if b.cidr.prefix_len() == 0 => out.push(
                Finding::new(
                    RuleId::PeerAnyAddress,
                    subject,
                    format!("{where_} peer {pi} is ipBlock {}: every address, pods and nodes included", b.cidr),
                    "name the CIDRs the pods need, and except the private ranges and the pod CIDR".into(),
                )
                .yaml(format!(
                    "- ipBlock:\n    cidr: 203.0.113.0/24   # the service's own range\n    # or, for the internet: cidr: {}, except: [{}]\n",
                    b.cidr,
                    ctx.pod_cidrs
                        .iter()
                        .filter(|n| n.addr().is_ipv4() == b.cidr.addr().is_ipv4())
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .at(loc),
            ),
            Peer::IpBlock(b) => {
                let covered: Vec<String> = ctx
                    .pod_cidrs
                    .iter()
                    .filter(|n| b.cidr.contains(*n) && !b.except.iter().any(|e| e.contains(*n)))
                    .map(ToString::to_string)
                    .collect();
                if !covered.is_empty() {
                    out.push(
                        Finding::new(
                            RuleId::PeerCoversPodCidr,
                            subject,
                            format!(
                                "{where_} peer {pi} is ipBlock {}, which covers the pod CIDR {}: it matches pods by address, whatever their labels",
                                b.cidr,
                                covered.join(", ")
                            ),
                            "select pods with podSelector/namespaceSelector and add the pod CIDR to except".into(),
                        )
                        .yaml(format!(
                            "- ipBlock:\n    cidr: {}\n    except: [{}]\n",
                            b.cidr,
                            covered.join(", ")
                        ))
                        .at(loc),
                    );
                }
            }
            // Cilium peers: CIDRs never match pods, names and entities are what they say.
            Peer::Cidr(_) | Peer::Fqdn(_) | Peer::Entity(_) => {}
            Peer::Pods { namespaces, pods } => {
                let all_ns = matches!(namespaces, NamespaceScope::Selector(s) if s.is_everything());
                if all_ns {
                    let what = if pods.is_everything() {
                        "every pod of every namespace".to_owned()
                    } else {
                        format!("pods [{pods}] in every namespace")
                    };
                    out.push(
                        Finding::new(
                            RuleId::PeerAllNamespaces,
                            subject.clone(),
                            format!("{where_} peer {pi} has `namespaceSelector: {{}}`: it matches {what}, namespaces created later included"),
                            "select the namespaces by name".into(),
                        )
                        .yaml(format!("- {}\n", fix::pod_peer(Some("<namespace>"), pods)))
                        .at(loc.clone()),
                    );
                } else if pods.is_everything() {
                    out.push(
                        Finding::new(
                            RuleId::PeerAllPodsInNamespace,
                            subject.clone(),
                            format!("{where_} peer {pi} has `podSelector: {{}}`: it matches every pod of {}", scope_name(namespaces)),
                            "select the pods that need the connection by their labels".into(),
                        )
                        .yaml("- podSelector: {matchLabels: {app: <client>}}\n".into())
                        .at(loc.clone()),
                    );
                }
            }
        }
    }
    share(ctx, p, d, ri, rule, &where_, out);
    missing_namespace_selector(ctx, p, d, ri, rule, &where_, out);
}

fn scope_name(s: &NamespaceScope) -> String {
    match s {
        NamespaceScope::Named(n) => format!("namespace {n}"),
        NamespaceScope::Selector(s) => format!("the namespaces [{s}]"),
    }
}

/// TM016: a peer that matches more than the share of the cluster's pods. Peers already
/// reported as everything (TM010 with `podSelector: {}`) are left out.
fn share(
    ctx: &Ctx<'_>,
    p: &Policy,
    d: Direction,
    ri: usize,
    rule: &Rule,
    where_: &str,
    out: &mut Vec<Finding>,
) {
    let total = ctx.pods.len();
    if total < ctx.opts.min_pods_for_share {
        return;
    }
    for (pi, ns, pods) in pod_peers(rule) {
        let everything =
            matches!(ns, NamespaceScope::Selector(s) if s.is_everything()) && pods.is_everything();
        if everything {
            continue;
        }
        let n = ctx.peer_pods(ns, pods).len();
        let share = n as f64 / total as f64;
        if share > ctx.opts.max_selector_share {
            out.push(
                Finding::new(
                    RuleId::SelectorTooBroad,
                    rule_subject(p, d, ri, Some(pi)),
                    format!(
                        "{where_} peer {pi} matches {n} of the cluster's {total} pods ({:.0}%, more than {:.0}%)",
                        share * 100.0,
                        ctx.opts.max_selector_share * 100.0
                    ),
                    "select by a label only the workloads that need this connection carry".into(),
                )
                .at(ctx.policy_location(p, &rule_path(d, ri, Tail::Peer(pi)))),
            );
        }
    }
}

/// TM020: `podSelector` alone, no match in the policy's namespace, matches elsewhere.
fn missing_namespace_selector(
    ctx: &Ctx<'_>,
    p: &Policy,
    d: Direction,
    ri: usize,
    rule: &Rule,
    where_: &str,
    out: &mut Vec<Finding>,
) {
    for (pi, ns, pods) in pod_peers(rule) {
        let NamespaceScope::Named(own) = ns else {
            continue;
        };
        if pods.is_everything() || !ctx.peer_pods(ns, pods).is_empty() {
            continue;
        }
        let mut elsewhere: Vec<String> = ctx
            .pods
            .iter()
            .filter(|&&id| pods.matches(&ctx.inv.pod(id).labels))
            .map(|&id| ctx.inv.namespace(ctx.inv.pod(id).namespace).name.clone())
            .filter(|n| n != own)
            .collect();
        elsewhere.sort();
        elsewhere.dedup();
        let Some(first) = elsewhere.first() else {
            continue;
        };
        out.push(
            Finding::new(
                RuleId::PeerMissingNamespaceSelector,
                rule_subject(p, d, ri, Some(pi)),
                format!(
                    "{where_} peer {pi} has podSelector [{pods}] without namespaceSelector, so it looks only in {own}, where no pod has those labels; pods in {} do",
                    elsewhere.join(", ")
                ),
                "put namespaceSelector and podSelector in the same peer item".into(),
            )
            .yaml(format!("- {}\n", fix::pod_peer(Some(first), pods)))
            .at(ctx.policy_location(p, &rule_path(d, ri, Tail::Peer(pi)))),
        );
    }
}

//! The Cilium format of `learn`: one CiliumNetworkPolicy (`cilium.io/v2`) per workload, from
//! the same plan the NetworkPolicy format renders.
//!
//! Each NetworkPolicy rule becomes one Cilium rule per kind of peer, because Cilium takes one
//! L3 kind per rule: pods (`toEndpoints`, with the namespace label Cilium matches on), the
//! cluster DNS (with `rules.dns`, which sends lookups through Cilium's DNS proxy, the only way
//! `toFQDNs` learns addresses), addresses known by DNS names (`toFQDNs`), the API server and
//! nodes (`toEntities`: Cilium never matches them by CIDR), and other addresses
//! (`toCIDRSet`). A direction with nothing observed gets `- {}`, which selects no peer and
//! still turns default deny on. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{
    LearnedPolicy, SynthOptions,
    plan::{Plan, PortItem, RenderPeer, RuleSpec},
    render::{MANAGED_BY, annotate, label_selector, policy_name},
};
use crate::policy::{
    Direction,
    cilium::{
        API_VERSION, CidrRule, CiliumNetworkPolicy, CiliumRule, EgressRule, FqdnSelector,
        IngressRule, KIND, L7Rules, NAMESPACE_LABEL, PortProtocol, PortRule,
    },
};

/// Cilium takes at most this many ports in one `toPorts` entry.
const MAX_PORTS: usize = 40;

/// One Cilium rule, before it is written as ingress or egress.
#[derive(Default)]
struct Draft {
    endpoints: Option<Vec<LabelSelector>>,
    cidrs: Option<Vec<CidrRule>>,
    entities: Option<Vec<String>>,
    fqdns: Option<Vec<FqdnSelector>>,
    ports: Vec<PortRule>,
}

fn port_rules(items: &[PortItem], dns: Option<Vec<FqdnSelector>>) -> Vec<PortRule> {
    let ports: Vec<PortProtocol> = items
        .iter()
        .map(|p| {
            let (proto, port) = match p {
                PortItem::Number(proto, n) => (proto, n.to_string()),
                PortItem::Named(proto, n) => (proto, n.clone()),
            };
            PortProtocol {
                port: Some(port),
                end_port: None,
                protocol: Some(proto.to_string()),
            }
        })
        .collect();
    ports
        .chunks(MAX_PORTS)
        .map(|c| PortRule {
            ports: Some(c.to_vec()),
            rules: dns.clone().map(|d| L7Rules {
                dns: Some(d),
                ..L7Rules::default()
            }),
            ..PortRule::default()
        })
        .collect()
}

/// A pod selector as Cilium reads it: the pod labels, and the namespace's label.
fn endpoint(namespace: &str, selector: &crate::policy::Selector) -> LabelSelector {
    let mut s = label_selector(selector);
    s.match_labels
        .get_or_insert_default()
        .insert(NAMESPACE_LABEL.to_owned(), namespace.to_owned());
    s
}

/// `toFQDNs` selectors for a set of names: `matchName` each, except that `threshold` or more
/// names one label below the same parent become `matchPattern: "*.parent"` (0: never).
pub fn fqdn_selectors(names: &BTreeSet<String>, threshold: usize) -> Vec<FqdnSelector> {
    let mut by_parent: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for n in names {
        // A parent of two labels or more: never a pattern over a whole top-level domain.
        let parent = n
            .split_once('.')
            .map(|(_, p)| p)
            .filter(|p| p.contains('.'));
        by_parent.entry(parent.unwrap_or("")).or_default().push(n);
    }
    let mut out = Vec::new();
    for (parent, group) in by_parent {
        if threshold > 0 && !parent.is_empty() && group.len() >= threshold {
            out.push(FqdnSelector {
                match_pattern: Some(format!("*.{parent}")),
                ..FqdnSelector::default()
            });
        } else {
            out.extend(group.into_iter().map(|n| FqdnSelector {
                match_name: Some(n.clone()),
                ..FqdnSelector::default()
            }));
        }
    }
    // Names first, then patterns, each in order.
    out.sort_by(|a, b| {
        (a.match_pattern.is_some(), &a.match_name, &a.match_pattern).cmp(&(
            b.match_pattern.is_some(),
            &b.match_name,
            &b.match_pattern,
        ))
    });
    out
}

/// The Cilium rules of one direction, and the rule each peer landed in.
fn rules(
    plan: &Plan,
    direction: Direction,
    dns_peer: &RenderPeer,
    opts: &SynthOptions,
) -> (Vec<Draft>, HashMap<RenderPeer, usize>) {
    let specs: &[RuleSpec] = match direction {
        Direction::Ingress => &plan.ingress,
        Direction::Egress => &plan.egress,
    };
    let mut out: Vec<Draft> = Vec::new();
    let mut index = HashMap::new();
    let mut push = |d: Draft, peers: Vec<&RenderPeer>, out: &mut Vec<Draft>| {
        for p in peers {
            index.insert(p.clone(), out.len());
        }
        out.push(d);
    };
    let egress = direction == Direction::Egress;
    // Names allowed by toFQDNs anywhere in the policy: the DNS rule must let them be looked up.
    let all_names: BTreeSet<String> = plan
        .info
        .iter()
        .filter(|(_, i)| !i.node && !i.apiserver)
        .flat_map(|(_, i)| i.names.iter().cloned())
        .collect();
    // Addresses known by names, across rules, by port set: one toFQDNs rule per port set, so
    // that sibling names can share a pattern.
    let mut named_by_ports: BTreeMap<&[PortItem], (BTreeSet<String>, Vec<&RenderPeer>)> =
        BTreeMap::new();
    let info = |p: &RenderPeer| plan.info.get(p).cloned().unwrap_or_default();
    for spec in specs {
        let (mut pods, mut dns, mut named, mut api, mut nodes, mut blocks) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for p in &spec.peers {
            let i = info(p);
            match p {
                RenderPeer::Pods { .. } if egress && p == dns_peer => dns.push(p),
                RenderPeer::Pods { .. } => pods.push(p),
                RenderPeer::Block { .. } if i.apiserver => api.push(p),
                RenderPeer::Block { .. } if i.node => nodes.push(p),
                RenderPeer::Block { .. } if egress && !i.names.is_empty() => named.push(p),
                RenderPeer::Block { .. } => blocks.push(p),
            }
        }
        let ports = || port_rules(&spec.ports, None);
        if !pods.is_empty() {
            let sels = pods
                .iter()
                .map(|p| match p {
                    RenderPeer::Pods {
                        namespace,
                        selector,
                    } => endpoint(namespace.as_deref().unwrap_or(&plan.namespace), selector),
                    RenderPeer::Block { .. } => unreachable!("pods only"),
                })
                .collect();
            let d = Draft {
                endpoints: Some(sels),
                ports: ports(),
                ..Draft::default()
            };
            push(d, pods, &mut out);
        }
        if !dns.is_empty() {
            let mut sels = fqdn_selectors(&all_names, opts.fqdn_pattern_threshold);
            sels.push(FqdnSelector {
                match_pattern: Some(format!("**.{}", opts.cluster_domain)),
                ..FqdnSelector::default()
            });
            let (ns, sel) = match dns[0] {
                RenderPeer::Pods {
                    namespace,
                    selector,
                } => (namespace.as_deref().unwrap_or(&plan.namespace), selector),
                RenderPeer::Block { .. } => unreachable!("pods only"),
            };
            let d = Draft {
                endpoints: Some(vec![endpoint(ns, sel)]),
                ports: port_rules(&spec.ports, Some(sels)),
                ..Draft::default()
            };
            push(d, dns, &mut out);
        }
        if !named.is_empty() {
            let entry = named_by_ports.entry(&spec.ports).or_default();
            entry.0.extend(named.iter().flat_map(|p| info(p).names));
            entry.1.extend(named);
        }
        if !api.is_empty() {
            let d = Draft {
                entities: Some(vec!["kube-apiserver".into()]),
                ports: ports(),
                ..Draft::default()
            };
            push(d, api, &mut out);
        }
        if !nodes.is_empty() {
            let d = Draft {
                entities: Some(vec!["host".into(), "remote-node".into()]),
                ports: ports(),
                ..Draft::default()
            };
            push(d, nodes, &mut out);
        }
        if !blocks.is_empty() {
            let cidrs = blocks
                .iter()
                .map(|p| match p {
                    RenderPeer::Block { cidr, except } => CidrRule {
                        cidr: Some(cidr.to_string()),
                        except: (!except.is_empty())
                            .then(|| except.iter().map(ToString::to_string).collect()),
                        ..CidrRule::default()
                    },
                    RenderPeer::Pods { .. } => unreachable!("blocks only"),
                })
                .collect();
            let d = Draft {
                cidrs: Some(cidrs),
                ports: ports(),
                ..Draft::default()
            };
            push(d, blocks, &mut out);
        }
    }
    for (ports, (names, peers)) in named_by_ports {
        let d = Draft {
            fqdns: Some(fqdn_selectors(&names, opts.fqdn_pattern_threshold)),
            ports: port_rules(ports, None),
            ..Draft::default()
        };
        push(d, peers, &mut out);
    }
    (out, index)
}

fn ingress(d: Draft) -> IngressRule {
    IngressRule {
        from_endpoints: d.endpoints,
        from_cidr_set: d.cidrs,
        from_entities: d.entities,
        to_ports: (!d.ports.is_empty()).then_some(d.ports),
        ..IngressRule::default()
    }
}

fn egress(d: Draft) -> EgressRule {
    EgressRule {
        to_endpoints: d.endpoints,
        to_cidr_set: d.cidrs,
        to_entities: d.entities,
        to_fqdns: d.fqdns,
        to_ports: (!d.ports.is_empty()).then_some(d.ports),
        ..EgressRule::default()
    }
}

/// The Cilium rendering of a plan, on top of its NetworkPolicy rendering (which keeps the
/// rules in NetworkPolicy terms for diff and the confidence report).
pub(super) fn policy(
    plan: &Plan,
    dns_peer: &RenderPeer,
    opts: &SynthOptions,
    mut learned: LearnedPolicy,
) -> LearnedPolicy {
    let (in_rules, in_idx) = rules(plan, Direction::Ingress, dns_peer, opts);
    let (eg_rules, eg_idx) = rules(plan, Direction::Egress, dns_peer, opts);
    let (evidence, annotations) = annotate(plan, |direction, p| match direction {
        Direction::Ingress => in_idx[p],
        Direction::Egress => eg_idx[p],
    });
    let name = policy_name(&plan.workload.kind, &plan.workload.name);
    let spec = CiliumRule {
        description: Some(format!(
            "trustmap: learned for {} (what it was seen to use, nothing else)",
            plan.workload
        )),
        endpoint_selector: Some(label_selector(&plan.selector)),
        ingress: Some(or_deny(in_rules.into_iter().map(ingress).collect())),
        egress: Some(or_deny(eg_rules.into_iter().map(egress).collect())),
        ..CiliumRule::default()
    };
    learned.cilium = Some(object(&plan.namespace, &name, Some(annotations), spec));
    learned.evidence = evidence;
    learned
}

/// `- {}`: a rule that selects no peer, so that the direction is default-deny with nothing
/// allowed.
fn or_deny<T: Default>(rules: Vec<T>) -> Vec<T> {
    if rules.is_empty() {
        vec![T::default()]
    } else {
        rules
    }
}

fn object(
    namespace: &str,
    name: &str,
    annotations: Option<BTreeMap<String, String>>,
    spec: CiliumRule,
) -> CiliumNetworkPolicy {
    CiliumNetworkPolicy {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
            annotations,
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        ..CiliumNetworkPolicy::default()
    }
}

/// The namespace-wide default deny, in Cilium's terms.
pub(super) fn default_deny(mut learned: LearnedPolicy) -> LearnedPolicy {
    let spec = CiliumRule {
        description: Some("trustmap: deny what no learned policy allows".into()),
        endpoint_selector: Some(LabelSelector::default()),
        ingress: Some(vec![IngressRule::default()]),
        egress: Some(vec![EgressRule::default()]),
        ..CiliumRule::default()
    };
    learned.cilium = Some(object(&learned.namespace, &learned.name, None, spec));
    learned
}

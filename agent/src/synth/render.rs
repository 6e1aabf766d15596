//! Rendering: plans to Kubernetes objects and YAML, with the evidence in annotations.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
        NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{
    Context, Evidence, LearnedPolicy, SynthError, SynthOptions,
    plan::{Plan, PortItem, RenderPeer, RuleSpec},
};
use crate::{
    inventory::NAMESPACE_NAME_LABEL,
    policy::{Direction, Operator, Selector},
};

/// Annotation keys and the label learned policies carry.
pub const ANNOTATION_PREFIX: &str = "trustmap.dev/";
/// Edges listed in the evidence annotation; the rest are counted.
pub const EVIDENCE_LINES: usize = 50;
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "trustmap");

pub(super) fn label_selector(s: &Selector) -> LabelSelector {
    let mut labels = BTreeMap::new();
    let mut exprs = Vec::new();
    for r in s.requirements() {
        match &r.operator {
            Operator::In(v) if v.len() == 1 && !labels.contains_key(&r.key) => {
                labels.insert(r.key.clone(), v[0].clone());
            }
            op => {
                let (operator, values) = match op {
                    Operator::In(v) => ("In", Some(v.clone())),
                    Operator::NotIn(v) => ("NotIn", Some(v.clone())),
                    Operator::Exists => ("Exists", None),
                    Operator::DoesNotExist => ("DoesNotExist", None),
                };
                exprs.push(LabelSelectorRequirement {
                    key: r.key.clone(),
                    operator: operator.into(),
                    values,
                });
            }
        }
    }
    LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    }
}

fn peer(p: &RenderPeer) -> NetworkPolicyPeer {
    match p {
        RenderPeer::Pods {
            namespace,
            selector,
        } => NetworkPolicyPeer {
            namespace_selector: namespace.as_ref().map(|ns| LabelSelector {
                match_labels: Some([(NAMESPACE_NAME_LABEL.to_owned(), ns.clone())].into()),
                match_expressions: None,
            }),
            pod_selector: Some(label_selector(selector)),
            ip_block: None,
        },
        RenderPeer::Block { cidr, except } => NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.to_string(),
                except: (!except.is_empty())
                    .then(|| except.iter().map(ToString::to_string).collect()),
            }),
            ..NetworkPolicyPeer::default()
        },
    }
}

fn port(p: &PortItem) -> NetworkPolicyPort {
    let (protocol, port) = match p {
        PortItem::Number(proto, n) => (proto, IntOrString::Int(i32::from(*n))),
        PortItem::Named(proto, n) => (proto, IntOrString::String(n.clone())),
    };
    NetworkPolicyPort {
        protocol: Some(protocol.to_string()),
        port: Some(port),
        end_port: None,
    }
}

fn ports(rule: &RuleSpec) -> Option<Vec<NetworkPolicyPort>> {
    Some(rule.ports.iter().map(port).collect())
}

fn peers(rule: &RuleSpec) -> Option<Vec<NetworkPolicyPeer>> {
    Some(rule.peers.iter().map(peer).collect())
}

/// A DNS-1123 name for the policy of a workload.
pub(super) fn policy_name(kind: &str, name: &str) -> String {
    let mut n = format!("{name}-{}-learned", kind.to_ascii_lowercase());
    n.truncate(253);
    n
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "unknown".into(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// The evidence of a plan, given the rule each (direction, peer) landed in, and the
/// annotations that carry it.
pub(super) fn annotate(
    plan: &Plan,
    rule_of: impl Fn(Direction, &RenderPeer) -> usize,
) -> (Vec<Evidence>, BTreeMap<String, String>) {
    let mut evidence: Vec<Evidence> = plan
        .notes
        .iter()
        .map(|n| Evidence {
            rule: match n.direction {
                Direction::Ingress => format!("ingress[{}]", rule_of(n.direction, &n.peer)),
                Direction::Egress => format!("egress[{}]", rule_of(n.direction, &n.peer)),
            },
            peer: n.graph_peer.clone(),
            port: n.port.clone(),
            count: n.count,
            first_seen: n.first_seen,
            last_seen: n.last_seen,
            one_way: n.one_way,
            names: n.names.clone(),
        })
        .collect();
    evidence.sort_by(|a, b| (&a.rule, &a.peer, &a.port).cmp(&(&b.rule, &b.peer, &b.port)));
    let total: u64 = evidence.iter().map(|e| e.count).sum();
    let first = evidence.iter().filter_map(|e| e.first_seen).min();
    let last = evidence.iter().filter_map(|e| e.last_seen).max();
    let mut lines: Vec<String> = evidence
        .iter()
        .take(EVIDENCE_LINES)
        .map(|e| {
            let named = if e.names.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.names.join(", "))
            };
            format!(
                "{} {}{named} {}: {} connection(s){}, {} .. {}",
                e.rule,
                e.peer,
                e.port,
                e.count,
                if e.one_way {
                    ", one-way (no reply)"
                } else {
                    ""
                },
                time(e.first_seen),
                time(e.last_seen)
            )
        })
        .collect();
    if evidence.len() > EVIDENCE_LINES {
        lines.push(format!(
            "... and {} more edges (see the flow graph: trustmap learn -o graph)",
            evidence.len() - EVIDENCE_LINES
        ));
    }
    let a = |k: &str| format!("{ANNOTATION_PREFIX}{k}");
    let annotations: BTreeMap<String, String> = [
        (a("workload"), plan.workload.to_string()),
        (a("first-seen"), time(first)),
        (a("last-seen"), time(last)),
        (a("connections"), total.to_string()),
        (a("evidence"), lines.join("\n") + "\n"),
    ]
    .into();
    (evidence, annotations)
}

pub(super) fn policy(plan: Plan, _ctx: &Context<'_>, _opts: &SynthOptions) -> LearnedPolicy {
    let name = policy_name(&plan.workload.kind, &plan.workload.name);
    // Evidence: which rule each observed edge landed in (each peer is in one rule).
    let index = |rules: &[RuleSpec]| -> std::collections::HashMap<RenderPeer, usize> {
        rules
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.peers.iter().map(move |p| (p.clone(), i)))
            .collect()
    };
    let (in_idx, eg_idx) = (index(&plan.ingress), index(&plan.egress));
    let (evidence, annotations) = annotate(&plan, |direction, p| match direction {
        Direction::Ingress => in_idx[p],
        Direction::Egress => eg_idx[p],
    });
    let object = NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(plan.namespace.clone()),
            labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(label_selector(&plan.selector)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: (!plan.ingress.is_empty()).then(|| {
                plan.ingress
                    .iter()
                    .map(|r| NetworkPolicyIngressRule {
                        from: peers(r),
                        ports: ports(r),
                    })
                    .collect()
            }),
            egress: (!plan.egress.is_empty()).then(|| {
                plan.egress
                    .iter()
                    .map(|r| NetworkPolicyEgressRule {
                        to: peers(r),
                        ports: ports(r),
                    })
                    .collect()
            }),
        }),
    };
    LearnedPolicy {
        namespace: plan.namespace,
        name,
        workload: Some(plan.workload),
        ingress: plan.ingress,
        egress: plan.egress,
        evidence,
        object,
        cilium: None,
    }
}

/// Denies everything to and from every pod of a namespace, for pods no learned policy covers.
pub fn default_deny(namespace: &str) -> LearnedPolicy {
    let object = NetworkPolicy {
        metadata: ObjectMeta {
            name: Some("default-deny".into()),
            namespace: Some(namespace.to_owned()),
            labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: None,
        }),
    };
    LearnedPolicy {
        namespace: namespace.to_owned(),
        name: "default-deny".into(),
        workload: None,
        ingress: Vec::new(),
        egress: Vec::new(),
        evidence: Vec::new(),
        object,
        cilium: None,
    }
}

/// One policy as a YAML document (without `---`).
pub fn to_yaml(p: &LearnedPolicy) -> Result<String, SynthError> {
    let text = match &p.cilium {
        Some(c) => serde_yaml::to_string(c),
        None => serde_yaml::to_string(&p.object),
    };
    text.map_err(|e| SynthError::Render {
        policy: format!("{}/{}", p.namespace, p.name),
        message: e.to_string(),
    })
}

/// The `kustomization.yaml` listing the files of `--output DIR`.
pub fn kustomization(files: &[String]) -> String {
    let mut s = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for f in files {
        s.push_str(&format!("- {f}\n"));
    }
    s
}

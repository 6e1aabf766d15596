//! CiliumNetworkPolicy (`cilium.io/v2`): the object as YAML holds it, and its L3/L4 and FQDN
//! semantics in the policy model. Pure.
//!
//! The subset the evaluator decides (see docs/policy-semantics.md, "CiliumNetworkPolicy"):
//! `endpointSelector`; `ingress`/`egress` rules with `from`/`toEndpoints`, `from`/`toCIDR`,
//! `from`/`toCIDRSet`, `from`/`toEntities`, `toFQDNs` and `toPorts`. L7 rules (`rules.dns`,
//! `rules.http`, …) filter inside a connection the ports already allow, so a connection's
//! verdict is the L4 one. Deny rules, `enableDefaultDeny`, `nodeSelector`, `specs`, and the
//! peers the evaluator cannot place (`toServices`, `toGroups`, `toNodes`, `toRequires`,
//! `icmps`, service-account and reserved labels) are refused with the field that holds them,
//! rather than decided wrongly.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    PolicyError,
    model::{
        CiliumEntity, IpBlock, NamespaceScope, Peer, Policy, PolicyKind, PortMatcher, PortSpec,
        Rule,
    },
    names::NamePattern,
    selector::Selector,
};
use crate::{flow::Protocol, inventory::NAMESPACE_NAME_LABEL};

/// The API version and kind.
pub const API_VERSION: &str = "cilium.io/v2";
pub const KIND: &str = "CiliumNetworkPolicy";
/// The label Cilium gives every pod for its namespace.
pub const NAMESPACE_LABEL: &str = "k8s:io.kubernetes.pod.namespace";
/// Namespace labels, as Cilium exposes them on pods.
const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

/// A CiliumNetworkPolicy object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumNetworkPolicy {
    /// Absent in the items of a list the API server returns.
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<CiliumRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specs: Option<Vec<Value>>,
    #[serde(default, skip_serializing)]
    pub status: Option<Value>,
}

/// `spec`: one rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_deny: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_deny: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_default_deny: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Value>,
}

/// An `ingress` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_endpoints: Option<Vec<LabelSelector>>,
    #[serde(default, rename = "fromCIDR", skip_serializing_if = "Option::is_none")]
    pub from_cidr: Option<Vec<String>>,
    #[serde(
        default,
        rename = "fromCIDRSet",
        skip_serializing_if = "Option::is_none"
    )]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_entities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_requires: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_groups: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_nodes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmps: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Value>,
}

/// An `egress` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_endpoints: Option<Vec<LabelSelector>>,
    #[serde(default, rename = "toCIDR", skip_serializing_if = "Option::is_none")]
    pub to_cidr: Option<Vec<String>>,
    #[serde(default, rename = "toCIDRSet", skip_serializing_if = "Option::is_none")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_entities: Option<Vec<String>>,
    #[serde(default, rename = "toFQDNs", skip_serializing_if = "Option::is_none")]
    pub to_fqdns: Option<Vec<FqdnSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_requires: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_services: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_groups: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_nodes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmps: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Value>,
}

/// A `toCIDRSet` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CidrRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr_group_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr_group_selector: Option<Value>,
}

/// A `toFQDNs` entry, or a `rules.dns` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FqdnSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_pattern: Option<String>,
}

/// A `toPorts` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortProtocol>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<L7Rules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_names: Option<Value>,
    #[serde(
        default,
        rename = "originatingTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub originating_tls: Option<Value>,
    #[serde(
        default,
        rename = "terminatingTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub terminating_tls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<Value>,
}

/// A `ports` entry of `toPorts`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// `rules`: L7 rules on the ports of a `toPorts` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L7Rules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<FqdnSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7proto: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<Value>,
}

fn unsupported(field: String, reason: &'static str) -> PolicyError {
    PolicyError::Invalid { field, reason }
}

fn refuse(v: &Option<impl Sized>, field: String, reason: &'static str) -> Result<(), PolicyError> {
    match v {
        Some(_) => Err(unsupported(field, reason)),
        None => Ok(()),
    }
}

const NOT_EVALUATED: &str = "not evaluated by trustmap (verdicts would be wrong where it applies); remove it or check this policy with Cilium's own tools";

impl Policy {
    /// Validates a CiliumNetworkPolicy and gives its L3/L4 meaning (see the module notes for
    /// what is refused).
    pub fn from_cilium(cnp: &CiliumNetworkPolicy) -> Result<Self, PolicyError> {
        let namespace = cnp
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = cnp.metadata.name.clone().ok_or(PolicyError::MissingName)?;
        refuse(&cnp.specs, "specs".into(), NOT_EVALUATED)?;
        let spec = cnp.spec.as_ref().ok_or(PolicyError::MissingField {
            field: "spec".into(),
        })?;
        refuse(
            &spec.node_selector,
            "spec.nodeSelector".into(),
            "nodeSelector is for CiliumClusterwideNetworkPolicy; a CiliumNetworkPolicy selects pods with endpointSelector",
        )?;
        refuse(&spec.ingress_deny, "spec.ingressDeny".into(), NOT_EVALUATED)?;
        refuse(&spec.egress_deny, "spec.egressDeny".into(), NOT_EVALUATED)?;
        refuse(
            &spec.enable_default_deny,
            "spec.enableDefaultDeny".into(),
            NOT_EVALUATED,
        )?;
        let sel = spec
            .endpoint_selector
            .as_ref()
            .ok_or(PolicyError::MissingField {
                field: "spec.endpointSelector".into(),
            })?;
        let (scope, pod_selector) = endpoints(sel, &namespace, "spec.endpointSelector")?;
        if scope != NamespaceScope::Named(namespace.clone()) {
            return Err(unsupported(
                "spec.endpointSelector".into(),
                "a CiliumNetworkPolicy selects pods of its own namespace only",
            ));
        }
        let mut ingress = Vec::new();
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            let at = format!("spec.ingress[{i}]");
            refuse(
                &r.from_requires,
                format!("{at}.fromRequires"),
                NOT_EVALUATED,
            )?;
            refuse(&r.from_groups, format!("{at}.fromGroups"), NOT_EVALUATED)?;
            refuse(&r.from_nodes, format!("{at}.fromNodes"), NOT_EVALUATED)?;
            refuse(&r.icmps, format!("{at}.icmps"), NOT_EVALUATED)?;
            let mut peers = Vec::new();
            let mut any_l3 = false;
            l3(
                &mut peers,
                &mut any_l3,
                &namespace,
                &at,
                ["fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities"],
                (
                    r.from_endpoints.as_deref(),
                    r.from_cidr.as_deref(),
                    r.from_cidr_set.as_deref(),
                    r.from_entities.as_deref(),
                ),
            )?;
            ingress.push(rule(peers, any_l3, r.to_ports.as_deref(), &at, false)?);
        }
        let mut egress = Vec::new();
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            let at = format!("spec.egress[{i}]");
            refuse(&r.to_requires, format!("{at}.toRequires"), NOT_EVALUATED)?;
            refuse(&r.to_services, format!("{at}.toServices"), NOT_EVALUATED)?;
            refuse(&r.to_groups, format!("{at}.toGroups"), NOT_EVALUATED)?;
            refuse(&r.to_nodes, format!("{at}.toNodes"), NOT_EVALUATED)?;
            refuse(&r.icmps, format!("{at}.icmps"), NOT_EVALUATED)?;
            let mut peers = Vec::new();
            let mut any_l3 = false;
            l3(
                &mut peers,
                &mut any_l3,
                &namespace,
                &at,
                ["toEndpoints", "toCIDR", "toCIDRSet", "toEntities"],
                (
                    r.to_endpoints.as_deref(),
                    r.to_cidr.as_deref(),
                    r.to_cidr_set.as_deref(),
                    r.to_entities.as_deref(),
                ),
            )?;
            if let Some(list) = &r.to_fqdns {
                if any_l3 {
                    return Err(unsupported(
                        format!("{at}.toFQDNs"),
                        "toFQDNs cannot share a rule with another peer kind (Cilium refuses it); split the rule",
                    ));
                }
                any_l3 = true;
                for (j, f) in list.iter().enumerate() {
                    peers.push(Peer::Fqdn(fqdn(f, &format!("{at}.toFQDNs[{j}]"))?));
                }
            }
            egress.push(rule(peers, any_l3, r.to_ports.as_deref(), &at, true)?);
        }
        // A direction with rules isolates the selected pods (Cilium's default-deny).
        let has_ingress = spec.ingress.as_ref().is_some_and(|v| !v.is_empty());
        let has_egress = spec.egress.as_ref().is_some_and(|v| !v.is_empty());
        if !has_ingress && !has_egress {
            return Err(unsupported(
                "spec".into(),
                "a rule needs at least one of ingress, ingressDeny, egress and egressDeny",
            ));
        }
        Ok(Self {
            kind: PolicyKind::CiliumNetworkPolicy,
            namespace,
            name,
            pod_selector,
            ingress: has_ingress.then_some(ingress),
            egress: has_egress.then_some(egress),
        })
    }
}

type L3Lists<'a> = (
    Option<&'a [LabelSelector]>,
    Option<&'a [String]>,
    Option<&'a [CidrRule]>,
    Option<&'a [String]>,
);

/// The L3 peers of a rule. Each present field counts as L3 even when empty (an empty list
/// selects nothing).
fn l3(
    peers: &mut Vec<Peer>,
    any: &mut bool,
    namespace: &str,
    at: &str,
    names: [&str; 4],
    (eps, cidrs, sets, entities): L3Lists<'_>,
) -> Result<(), PolicyError> {
    // toCIDR and toCIDRSet are one kind of peer (addresses); Cilium takes them together.
    let kinds = [
        eps.is_some(),
        cidrs.is_some() || sets.is_some(),
        entities.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(unsupported(
            at.to_owned(),
            "one rule may name one kind of peer only (Cilium refuses the mix); split the rule",
        ));
    }
    *any |= kinds.iter().any(|k| *k);
    for (i, s) in eps.unwrap_or_default().iter().enumerate() {
        let (namespaces, pods) = endpoints(s, namespace, &format!("{at}.{}[{i}]", names[0]))?;
        peers.push(Peer::Pods { namespaces, pods });
    }
    for (i, c) in cidrs.unwrap_or_default().iter().enumerate() {
        let field = format!("{at}.{}[{i}]", names[1]);
        peers.push(Peer::Cidr(IpBlock {
            cidr: cidr(c, &field)?,
            except: Vec::new(),
        }));
    }
    for (i, c) in sets.unwrap_or_default().iter().enumerate() {
        let field = format!("{at}.{}[{i}]", names[2]);
        refuse(
            &c.cidr_group_ref,
            format!("{field}.cidrGroupRef"),
            NOT_EVALUATED,
        )?;
        refuse(
            &c.cidr_group_selector,
            format!("{field}.cidrGroupSelector"),
            NOT_EVALUATED,
        )?;
        let net = cidr(
            c.cidr.as_deref().ok_or(PolicyError::MissingField {
                field: format!("{field}.cidr"),
            })?,
            &format!("{field}.cidr"),
        )?;
        let mut except = Vec::new();
        for (j, e) in c.except.iter().flatten().enumerate() {
            let f = format!("{field}.except[{j}]");
            let x = cidr(e, &f)?;
            if !net.contains(&x) {
                return Err(PolicyError::ExceptOutsideCidr {
                    field: f,
                    except: e.clone(),
                    cidr: net.to_string(),
                });
            }
            except.push(x);
        }
        peers.push(Peer::Cidr(IpBlock { cidr: net, except }));
    }
    for (i, e) in entities.unwrap_or_default().iter().enumerate() {
        let entity = CiliumEntity::parse(e).ok_or_else(|| PolicyError::InvalidValue {
            field: format!("{at}.{}[{i}]", names[3]),
            value: e.clone(),
            expected: "world, cluster, host, remote-node, kube-apiserver, all or none (other entities are not evaluated)",
        })?;
        peers.push(Peer::Entity(entity));
    }
    Ok(())
}

fn cidr(s: &str, field: &str) -> Result<ipnet::IpNet, PolicyError> {
    let net = s
        .parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| PolicyError::InvalidCidr {
            field: field.to_owned(),
            value: s.to_owned(),
        })?;
    Ok(net.trunc())
}

fn fqdn(f: &FqdnSelector, field: &str) -> Result<NamePattern, PolicyError> {
    let bad = |e: super::names::NameError| PolicyError::InvalidValue {
        field: field.to_owned(),
        value: e.value,
        expected: e.reason,
    };
    match (&f.match_name, &f.match_pattern) {
        (Some(n), None) => NamePattern::cilium_name(n).map_err(bad),
        (None, Some(p)) => NamePattern::cilium_pattern(p).map_err(bad),
        _ => Err(unsupported(
            field.to_owned(),
            "set exactly one of matchName and matchPattern",
        )),
    }
}

/// A rule from its peers and `toPorts`. A rule without L3 peers allows every peer on its
/// ports; without ports either, it allows nothing (Cilium's `- {}`).
fn rule(
    mut peers: Vec<Peer>,
    any_l3: bool,
    to_ports: Option<&[PortRule]>,
    at: &str,
    egress: bool,
) -> Result<Rule, PolicyError> {
    let mut ports = Vec::new();
    for (i, pr) in to_ports.unwrap_or_default().iter().enumerate() {
        let field = format!("{at}.toPorts[{i}]");
        if let Some(r) = &pr.rules
            && r.dns.is_some()
            && !egress
        {
            return Err(unsupported(
                format!("{field}.rules.dns"),
                "DNS rules apply to egress only",
            ));
        }
        for (j, p) in pr.ports.iter().flatten().enumerate() {
            port(p, &format!("{field}.ports[{j}]"), &mut ports)?;
        }
    }
    if !any_l3 && to_ports.is_none_or(<[PortRule]>::is_empty) {
        peers.push(Peer::Entity(CiliumEntity::None));
    } else if any_l3 && peers.is_empty() {
        // Present but empty lists select nothing.
        peers.push(Peer::Entity(CiliumEntity::None));
    }
    Ok(Rule { peers, ports })
}

fn port(p: &PortProtocol, field: &str, out: &mut Vec<PortMatcher>) -> Result<(), PolicyError> {
    let protocols: &[Protocol] = match p.protocol.as_deref().unwrap_or("ANY") {
        "TCP" => &[Protocol::Tcp],
        "UDP" => &[Protocol::Udp],
        "SCTP" => &[Protocol::Sctp],
        "ANY" => &[Protocol::Tcp, Protocol::Udp, Protocol::Sctp],
        other => {
            return Err(PolicyError::InvalidValue {
                field: format!("{field}.protocol"),
                value: other.to_owned(),
                expected: "TCP, UDP, SCTP or ANY (uppercase)",
            });
        }
    };
    let spec = match p.port.as_deref() {
        None | Some("0") => PortSpec::All,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => {
                let end = match p.end_port {
                    Some(e) if e > 65535 => {
                        return Err(PolicyError::PortOutOfRange {
                            field: format!("{field}.endPort"),
                            value: e,
                        });
                    }
                    Some(e) if e < n as i32 => {
                        return Err(PolicyError::EndPortBelowPort {
                            field: format!("{field}.endPort"),
                            port: n as u16,
                            end_port: e.clamp(0, 65535) as u16,
                        });
                    }
                    Some(e) => e as u16,
                    None => n as u16,
                };
                PortSpec::Range {
                    start: n as u16,
                    end,
                }
            }
            Ok(n) => {
                return Err(PolicyError::PortOutOfRange {
                    field: format!("{field}.port"),
                    value: n as i32,
                });
            }
            Err(_) => PortSpec::Named(s.to_owned()),
        },
    };
    for &protocol in protocols {
        out.push(PortMatcher {
            protocol,
            port: spec.clone(),
        });
    }
    Ok(())
}

/// Strips the label source Cilium may put before a key (`k8s:`, `any:`).
fn bare_key<'a>(key: &'a str, field: &str) -> Result<&'a str, PolicyError> {
    match key.split_once(':') {
        None => Ok(key),
        Some(("k8s" | "any", rest)) => Ok(rest),
        Some(_) => Err(unsupported(
            format!("{field}: {key}"),
            "label sources other than k8s: and any: (reserved:, cidr:, …) are not evaluated",
        )),
    }
}

/// An endpoint selector: the namespaces it looks in (its namespace labels, else the policy's
/// namespace) and the pod labels it wants.
fn endpoints(
    s: &LabelSelector,
    namespace: &str,
    field: &str,
) -> Result<(NamespaceScope, Selector), PolicyError> {
    let mut pod = LabelSelector::default();
    let mut ns = LabelSelector::default();
    let mut named: Option<String> = None;
    for (k, v) in s.match_labels.iter().flatten() {
        let key = bare_key(k, &format!("{field}.matchLabels"))?;
        if key == "io.kubernetes.pod.namespace" {
            named = Some(v.clone());
        } else if let Some(l) = key.strip_prefix(NAMESPACE_LABELS_PREFIX) {
            ns.match_labels
                .get_or_insert_default()
                .insert(l.to_owned(), v.clone());
        } else if key.starts_with("io.cilium.") {
            return Err(unsupported(
                format!("{field}.matchLabels: {k}"),
                "Cilium's own labels (service accounts, …) are not evaluated",
            ));
        } else {
            pod.match_labels
                .get_or_insert_default()
                .insert(key.to_owned(), v.clone());
        }
    }
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let key = bare_key(&e.key, &format!("{field}.matchExpressions[{i}]"))?;
        let moved = |key: &str| LabelSelectorRequirement {
            key: key.to_owned(),
            ..e.clone()
        };
        if key == "io.kubernetes.pod.namespace" {
            ns.match_expressions
                .get_or_insert_default()
                .push(moved(NAMESPACE_NAME_LABEL));
        } else if let Some(l) = key.strip_prefix(NAMESPACE_LABELS_PREFIX) {
            ns.match_expressions.get_or_insert_default().push(moved(l));
        } else if key.starts_with("io.cilium.") {
            return Err(unsupported(
                format!("{field}.matchExpressions[{i}].key"),
                "Cilium's own labels (service accounts, …) are not evaluated",
            ));
        } else {
            pod.match_expressions
                .get_or_insert_default()
                .push(moved(key));
        }
    }
    let pods = Selector::from_k8s(&pod, field)?;
    let scope = match (named, ns == LabelSelector::default()) {
        (Some(n), true) => NamespaceScope::Named(n),
        (None, true) => NamespaceScope::Named(namespace.to_owned()),
        (n, false) => {
            if let Some(n) = n {
                ns.match_labels
                    .get_or_insert_default()
                    .insert(NAMESPACE_NAME_LABEL.to_owned(), n);
            }
            NamespaceScope::Selector(Selector::from_k8s(&ns, field)?)
        }
    };
    Ok((scope, pods))
}

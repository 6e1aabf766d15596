//! Policies in layers: ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`, also served
//! as v1beta1) in its Admin and Baseline tiers, and its predecessors AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy (`v1alpha1`), in one validated model. Pure.
//!
//! The tiers are evaluated Admin, then NetworkPolicy, then Baseline, then the default allow;
//! see docs/policy-semantics.md#tiers. The input types below follow the API's field names; the
//! validation is what the CRDs' schemas would reject, each error naming its field.

use std::fmt;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use super::{
    PolicyError,
    model::{PortMatcher, PortSpec},
    selector::Selector,
};
use crate::flow::Protocol;

/// Which API an admin policy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum AdminKind {
    ClusterNetworkPolicy,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
}

impl fmt::Display for AdminKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            Self::AdminNetworkPolicy => "AdminNetworkPolicy",
            Self::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
        })
    }
}

/// The tier of an admin policy: Admin runs before NetworkPolicy, Baseline after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Admin,
    Baseline,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Admin => "Admin",
            Self::Baseline => "Baseline",
        })
    }
}

/// What a matching rule does. v1alpha1's `Allow` is `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Allowed: no later rule, policy or tier is consulted for this direction.
    Accept,
    /// Denied: no later rule, policy or tier is consulted.
    Deny,
    /// The rest of this tier is skipped: the next tier decides.
    Pass,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Accept => "Accept",
            Self::Deny => "Deny",
            Self::Pass => "Pass",
        })
    }
}

/// The pods an admin policy applies to. Host-network pods are never selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Every pod of the namespaces the selector matches.
    Namespaces(Selector),
    /// The pods matching `pods` in the namespaces matching `namespaces`.
    Pods {
        namespaces: Selector,
        pods: Selector,
    },
}

/// One peer of an admin rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminPeer {
    /// Every pod of the matching namespaces (never host-network pods).
    Namespaces(Selector),
    /// Matching pods in matching namespaces (never host-network pods).
    Pods {
        namespaces: Selector,
        pods: Selector,
    },
    /// Egress only: nodes whose labels match, by their addresses.
    Nodes(Selector),
    /// Egress only: any address in these CIDRs, pods and nodes included.
    Networks(Vec<IpNet>),
    /// Egress only: destinations by DNS name (`*.` prefix allowed). Unknown until the DNS
    /// names of connections are known.
    DomainNames(Vec<String>),
}

impl fmt::Display for AdminPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Namespaces(s) => write!(f, "namespaces [{s}]"),
            Self::Pods { namespaces, pods } => {
                write!(f, "pods [{pods}] in namespaces [{namespaces}]")
            }
            Self::Nodes(s) => write!(f, "nodes [{s}]"),
            Self::Networks(n) => {
                let v: Vec<String> = n.iter().map(ToString::to_string).collect();
                write!(f, "networks {}", v.join(","))
            }
            Self::DomainNames(d) => write!(f, "domainNames {}", d.join(",")),
        }
    }
}

/// One rule: the first rule of a policy whose peers and ports match decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminRule {
    pub name: Option<String>,
    pub action: Action,
    /// At least one.
    pub peers: Vec<AdminPeer>,
    /// Empty: every port and protocol.
    pub ports: Vec<PortMatcher>,
}

/// A validated admin policy of either API version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminPolicy {
    pub kind: AdminKind,
    pub name: String,
    pub tier: Tier,
    /// Lower first. A BaselineAdminNetworkPolicy has none: it comes after every Baseline-tier
    /// ClusterNetworkPolicy ([`BANP_PRIORITY`]).
    pub priority: u32,
    pub subject: Subject,
    pub ingress: Vec<AdminRule>,
    pub egress: Vec<AdminRule>,
}

/// Where a BaselineAdminNetworkPolicy sorts among Baseline-tier policies: after all of them.
pub const BANP_PRIORITY: u32 = 1001;

impl AdminPolicy {
    /// `Kind/name`, as explanations name it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    pub fn rules(&self, direction: super::Direction) -> &[AdminRule] {
        match direction {
            super::Direction::Ingress => &self.ingress,
            super::Direction::Egress => &self.egress,
        }
    }
}

// ---- The API's objects, as they are written. Unknown fields are reported by the loader. ----

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminObject<S> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<S>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CnpSpec {
    pub tier: Option<String>,
    pub priority: Option<i32>,
    pub subject: Option<SubjectIn>,
    #[serde(default)]
    pub ingress: Vec<CnpIngressRule>,
    #[serde(default)]
    pub egress: Vec<CnpEgressRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnpSpec {
    pub priority: Option<i32>,
    pub subject: Option<SubjectIn>,
    #[serde(default)]
    pub ingress: Vec<AnpIngressRule>,
    #[serde(default)]
    pub egress: Vec<AnpEgressRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectIn {
    pub namespaces: Option<LabelSelector>,
    pub pods: Option<PodsIn>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodsIn {
    pub namespace_selector: Option<LabelSelector>,
    pub pod_selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerIn {
    pub namespaces: Option<LabelSelector>,
    pub pods: Option<PodsIn>,
    pub nodes: Option<LabelSelector>,
    pub networks: Option<Vec<String>>,
    pub domain_names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CnpIngressRule {
    pub name: Option<String>,
    pub action: Option<String>,
    #[serde(default)]
    pub from: Vec<PeerIn>,
    pub protocols: Option<Vec<ProtocolIn>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CnpEgressRule {
    pub name: Option<String>,
    pub action: Option<String>,
    #[serde(default)]
    pub to: Vec<PeerIn>,
    pub protocols: Option<Vec<ProtocolIn>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolIn {
    pub tcp: Option<ProtocolPortIn>,
    pub udp: Option<ProtocolPortIn>,
    pub sctp: Option<ProtocolPortIn>,
    pub destination_named_port: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolPortIn {
    pub destination_port: Option<DestinationPortIn>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationPortIn {
    pub number: Option<i32>,
    pub range: Option<RangeIn>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeIn {
    pub start: i32,
    pub end: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnpIngressRule {
    pub name: Option<String>,
    pub action: Option<String>,
    #[serde(default)]
    pub from: Vec<PeerIn>,
    pub ports: Option<Vec<AnpPortIn>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnpEgressRule {
    pub name: Option<String>,
    pub action: Option<String>,
    #[serde(default)]
    pub to: Vec<PeerIn>,
    pub ports: Option<Vec<AnpPortIn>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnpPortIn {
    pub port_number: Option<PortNumberIn>,
    pub named_port: Option<String>,
    pub port_range: Option<PortRangeIn>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortNumberIn {
    pub protocol: Option<String>,
    pub port: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRangeIn {
    pub protocol: Option<String>,
    pub start: i32,
    pub end: i32,
}

// ---- Conversion and validation. ----

fn invalid(field: impl Into<String>, reason: &'static str) -> PolicyError {
    PolicyError::Invalid {
        field: field.into(),
        reason,
    }
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, PolicyError> {
    v.ok_or_else(|| PolicyError::MissingField {
        field: field.to_owned(),
    })
}

fn name_of(meta: &ObjectMeta) -> Result<String, PolicyError> {
    meta.name.clone().ok_or(PolicyError::MissingName)
}

fn priority(p: Option<i32>, field: &str) -> Result<u32, PolicyError> {
    let p = required(p, field)?;
    u32::try_from(p)
        .ok()
        .filter(|p| *p <= 1000)
        .ok_or(PolicyError::OutOfRange {
            field: field.to_owned(),
            value: i64::from(p),
            range: "0-1000",
        })
}

fn selector(s: &LabelSelector, field: &str) -> Result<Selector, PolicyError> {
    Selector::from_k8s(s, field)
}

fn subject(s: Option<&SubjectIn>, field: &str) -> Result<Subject, PolicyError> {
    let s = required(s, field)?;
    match (&s.namespaces, &s.pods) {
        (Some(ns), None) => Ok(Subject::Namespaces(selector(
            ns,
            &format!("{field}.namespaces"),
        )?)),
        (None, Some(p)) => {
            let (namespaces, pods) = pods(p, &format!("{field}.pods"))?;
            Ok(Subject::Pods { namespaces, pods })
        }
        _ => Err(invalid(field, "set exactly one of namespaces and pods")),
    }
}

fn pods(p: &PodsIn, field: &str) -> Result<(Selector, Selector), PolicyError> {
    // An absent namespaceSelector is the empty selector: all namespaces.
    let namespaces = match &p.namespace_selector {
        Some(s) => selector(s, &format!("{field}.namespaceSelector"))?,
        None => Selector::everything(),
    };
    let pods = match &p.pod_selector {
        Some(s) => selector(s, &format!("{field}.podSelector"))?,
        None => {
            return Err(PolicyError::MissingField {
                field: format!("{field}.podSelector"),
            });
        }
    };
    Ok((namespaces, pods))
}

fn action(
    a: Option<&str>,
    field: &str,
    v1alpha1: bool,
    baseline_v1: bool,
) -> Result<Action, PolicyError> {
    let a = required(a, field)?;
    let expected = if baseline_v1 {
        "Allow or Deny"
    } else if v1alpha1 {
        "Allow, Deny or Pass"
    } else {
        "Accept, Deny or Pass"
    };
    match (a, v1alpha1) {
        ("Accept", false) | ("Allow", true) => Ok(Action::Accept),
        ("Deny", _) => Ok(Action::Deny),
        ("Pass", _) if !baseline_v1 => Ok(Action::Pass),
        _ => Err(PolicyError::InvalidValue {
            field: field.to_owned(),
            value: a.to_owned(),
            expected,
        }),
    }
}

fn peer(
    p: &PeerIn,
    field: &str,
    egress: bool,
    allow_domains: bool,
) -> Result<AdminPeer, PolicyError> {
    let set = [
        p.namespaces.is_some(),
        p.pods.is_some(),
        p.nodes.is_some(),
        p.networks.is_some(),
        p.domain_names.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(invalid(
            field,
            "set exactly one of namespaces, pods, nodes, networks and domainNames",
        ));
    }
    if !egress && (p.nodes.is_some() || p.networks.is_some() || p.domain_names.is_some()) {
        return Err(invalid(
            field,
            "nodes, networks and domainNames are egress peers only",
        ));
    }
    if let Some(ns) = &p.namespaces {
        return Ok(AdminPeer::Namespaces(selector(
            ns,
            &format!("{field}.namespaces"),
        )?));
    }
    if let Some(pp) = &p.pods {
        let (namespaces, pods) = pods(pp, &format!("{field}.pods"))?;
        return Ok(AdminPeer::Pods { namespaces, pods });
    }
    if let Some(n) = &p.nodes {
        return Ok(AdminPeer::Nodes(selector(n, &format!("{field}.nodes"))?));
    }
    if let Some(nets) = &p.networks {
        if nets.is_empty() {
            return Err(invalid(
                format!("{field}.networks"),
                "needs at least one CIDR",
            ));
        }
        let mut out = Vec::with_capacity(nets.len());
        for (i, c) in nets.iter().enumerate() {
            out.push(c.parse::<IpNet>().map_err(|_| PolicyError::InvalidCidr {
                field: format!("{field}.networks[{i}]"),
                value: c.clone(),
            })?);
        }
        return Ok(AdminPeer::Networks(out));
    }
    let names = p.domain_names.clone().unwrap_or_default();
    if !allow_domains {
        return Err(invalid(
            format!("{field}.domainNames"),
            "BaselineAdminNetworkPolicy has no domainNames peer",
        ));
    }
    if names.is_empty() {
        return Err(invalid(
            format!("{field}.domainNames"),
            "needs at least one name",
        ));
    }
    for (i, n) in names.iter().enumerate() {
        if !valid_domain(n) || super::names::NamePattern::domain_name(n).is_err() {
            return Err(PolicyError::InvalidValue {
                field: format!("{field}.domainNames[{i}]"),
                value: n.clone(),
                expected: "a DNS name of two or more labels, optionally starting with `*.`",
            });
        }
    }
    Ok(AdminPeer::DomainNames(names))
}

fn valid_domain(n: &str) -> bool {
    let rest = n.strip_prefix("*.").unwrap_or(n);
    !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn port(n: i32, field: String) -> Result<u16, PolicyError> {
    match u16::try_from(n) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(PolicyError::PortOutOfRange { field, value: n }),
    }
}

fn range(start: i32, end: i32, field: &str) -> Result<PortSpec, PolicyError> {
    let (s, e) = (
        port(start, format!("{field}.start"))?,
        port(end, format!("{field}.end"))?,
    );
    if e < s {
        return Err(PolicyError::EndPortBelowPort {
            field: format!("{field}.end"),
            port: s,
            end_port: e,
        });
    }
    Ok(PortSpec::Range { start: s, end: e })
}

fn protocol_name(p: Option<&str>, field: String) -> Result<Protocol, PolicyError> {
    match p {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some("SCTP") => Ok(Protocol::Sctp),
        Some(other) => Err(PolicyError::UnknownProtocol {
            field,
            value: other.to_owned(),
        }),
    }
}

/// v1alpha2 `protocols`: absent means every port of every protocol. A named port matches the
/// container port of that name, of whatever protocol it declares.
fn protocols(list: Option<&[ProtocolIn]>, field: &str) -> Result<Vec<PortMatcher>, PolicyError> {
    let mut out = Vec::new();
    for (i, p) in list.unwrap_or_default().iter().enumerate() {
        let at = format!("{field}[{i}]");
        let set = [
            p.tcp.is_some(),
            p.udp.is_some(),
            p.sctp.is_some(),
            p.destination_named_port.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(invalid(
                at,
                "set exactly one of tcp, udp, sctp and destinationNamedPort",
            ));
        }
        if let Some(name) = &p.destination_named_port {
            for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                out.push(PortMatcher {
                    protocol,
                    port: PortSpec::Named(name.clone()),
                });
            }
            continue;
        }
        let (protocol, pp, key) = match (&p.tcp, &p.udp, &p.sctp) {
            (Some(pp), _, _) => (Protocol::Tcp, pp, "tcp"),
            (_, Some(pp), _) => (Protocol::Udp, pp, "udp"),
            (_, _, Some(pp)) => (Protocol::Sctp, pp, "sctp"),
            _ => unreachable!("one key is set"),
        };
        let at = format!("{at}.{key}.destinationPort");
        let dp = required(pp.destination_port.as_ref(), &at)?;
        let spec = match (dp.number, &dp.range) {
            (Some(n), None) => {
                let n = port(n, format!("{at}.number"))?;
                PortSpec::Range { start: n, end: n }
            }
            (None, Some(r)) => range(r.start, r.end, &format!("{at}.range"))?,
            _ => return Err(invalid(at, "set exactly one of number and range")),
        };
        out.push(PortMatcher {
            protocol,
            port: spec,
        });
    }
    Ok(out)
}

/// v1alpha1 `ports`: absent means every port of every protocol.
fn anp_ports(list: Option<&[AnpPortIn]>, field: &str) -> Result<Vec<PortMatcher>, PolicyError> {
    let mut out = Vec::new();
    for (i, p) in list.unwrap_or_default().iter().enumerate() {
        let at = format!("{field}[{i}]");
        match (&p.port_number, &p.named_port, &p.port_range) {
            (Some(n), None, None) => {
                let protocol =
                    protocol_name(n.protocol.as_deref(), format!("{at}.portNumber.protocol"))?;
                let n = port(n.port, format!("{at}.portNumber.port"))?;
                out.push(PortMatcher {
                    protocol,
                    port: PortSpec::Range { start: n, end: n },
                });
            }
            (None, Some(name), None) => {
                for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                    out.push(PortMatcher {
                        protocol,
                        port: PortSpec::Named(name.clone()),
                    });
                }
            }
            (None, None, Some(r)) => {
                let protocol =
                    protocol_name(r.protocol.as_deref(), format!("{at}.portRange.protocol"))?;
                out.push(PortMatcher {
                    protocol,
                    port: range(r.start, r.end, &format!("{at}.portRange"))?,
                });
            }
            _ => {
                return Err(invalid(
                    at,
                    "set exactly one of portNumber, namedPort and portRange",
                ));
            }
        }
    }
    Ok(out)
}

fn rule_name(n: &Option<String>, field: &str) -> Result<Option<String>, PolicyError> {
    match n {
        Some(n) if n.len() > 100 => Err(invalid(
            format!("{field}.name"),
            "is longer than 100 characters",
        )),
        other => Ok(other.clone()),
    }
}

fn peers(
    list: &[PeerIn],
    field: &str,
    egress: bool,
    allow_domains: bool,
) -> Result<Vec<AdminPeer>, PolicyError> {
    if list.is_empty() {
        return Err(invalid(field, "needs at least one peer"));
    }
    list.iter()
        .enumerate()
        .map(|(i, p)| peer(p, &format!("{field}[{i}]"), egress, allow_domains))
        .collect()
}

/// domainNames peers only in Accept rules, as the API documents.
fn check_domains(rule: &AdminRule, field: &str) -> Result<(), PolicyError> {
    if rule.action != Action::Accept
        && rule
            .peers
            .iter()
            .any(|p| matches!(p, AdminPeer::DomainNames(_)))
    {
        return Err(invalid(
            field,
            "domainNames peers are only supported in Accept rules",
        ));
    }
    Ok(())
}

impl AdminPolicy {
    /// Converts and validates a ClusterNetworkPolicy (v1alpha2 or v1beta1).
    pub fn from_cnp(o: &AdminObject<CnpSpec>) -> Result<Self, PolicyError> {
        let name = name_of(&o.metadata)?;
        let spec = required(o.spec.as_ref(), "spec")?;
        let tier = match required(spec.tier.as_deref(), "spec.tier")? {
            "Admin" => Tier::Admin,
            "Baseline" => Tier::Baseline,
            other => {
                return Err(PolicyError::InvalidValue {
                    field: "spec.tier".into(),
                    value: other.to_owned(),
                    expected: "Admin or Baseline",
                });
            }
        };
        let mut ingress = Vec::new();
        for (i, r) in spec.ingress.iter().enumerate() {
            let at = format!("spec.ingress[{i}]");
            ingress.push(AdminRule {
                name: rule_name(&r.name, &at)?,
                action: action(r.action.as_deref(), &format!("{at}.action"), false, false)?,
                peers: peers(&r.from, &format!("{at}.from"), false, false)?,
                ports: protocols(r.protocols.as_deref(), &format!("{at}.protocols"))?,
            });
        }
        let mut egress = Vec::new();
        for (i, r) in spec.egress.iter().enumerate() {
            let at = format!("spec.egress[{i}]");
            let rule = AdminRule {
                name: rule_name(&r.name, &at)?,
                action: action(r.action.as_deref(), &format!("{at}.action"), false, false)?,
                peers: peers(&r.to, &format!("{at}.to"), true, true)?,
                ports: protocols(r.protocols.as_deref(), &format!("{at}.protocols"))?,
            };
            check_domains(&rule, &format!("{at}.to"))?;
            egress.push(rule);
        }
        Ok(Self {
            kind: AdminKind::ClusterNetworkPolicy,
            name,
            tier,
            priority: priority(spec.priority, "spec.priority")?,
            subject: subject(spec.subject.as_ref(), "spec.subject")?,
            ingress,
            egress,
        })
    }

    /// Converts and validates an AdminNetworkPolicy (`baseline: false`) or the
    /// BaselineAdminNetworkPolicy (`baseline: true`, which must be named `default`).
    pub fn from_v1alpha1(o: &AdminObject<AnpSpec>, baseline: bool) -> Result<Self, PolicyError> {
        let name = name_of(&o.metadata)?;
        if baseline && name != "default" {
            return Err(PolicyError::InvalidValue {
                field: "metadata.name".into(),
                value: name,
                expected: "default (BaselineAdminNetworkPolicy is a singleton)",
            });
        }
        let spec = required(o.spec.as_ref(), "spec")?;
        if baseline && spec.priority.is_some() {
            return Err(invalid(
                "spec.priority",
                "BaselineAdminNetworkPolicy has no priority",
            ));
        }
        let mut ingress = Vec::new();
        for (i, r) in spec.ingress.iter().enumerate() {
            let at = format!("spec.ingress[{i}]");
            ingress.push(AdminRule {
                name: rule_name(&r.name, &at)?,
                action: action(r.action.as_deref(), &format!("{at}.action"), true, baseline)?,
                peers: peers(&r.from, &format!("{at}.from"), false, false)?,
                ports: anp_ports(r.ports.as_deref(), &format!("{at}.ports"))?,
            });
        }
        let mut egress = Vec::new();
        for (i, r) in spec.egress.iter().enumerate() {
            let at = format!("spec.egress[{i}]");
            let rule = AdminRule {
                name: rule_name(&r.name, &at)?,
                action: action(r.action.as_deref(), &format!("{at}.action"), true, baseline)?,
                peers: peers(&r.to, &format!("{at}.to"), true, !baseline)?,
                ports: anp_ports(r.ports.as_deref(), &format!("{at}.ports"))?,
            };
            check_domains(&rule, &format!("{at}.to"))?;
            egress.push(rule);
        }
        let (kind, tier, priority) = if baseline {
            (
                AdminKind::BaselineAdminNetworkPolicy,
                Tier::Baseline,
                BANP_PRIORITY,
            )
        } else {
            (
                AdminKind::AdminNetworkPolicy,
                Tier::Admin,
                priority(spec.priority, "spec.priority")?,
            )
        };
        Ok(Self {
            kind,
            name,
            tier,
            priority,
            subject: subject(spec.subject.as_ref(), "spec.subject")?,
            ingress,
            egress,
        })
    }
}

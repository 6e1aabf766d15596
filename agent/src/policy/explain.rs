//! Explanations of verdicts, for `check` (JSON) and `explain` (text): for each side, whether it
//! is isolated, which policies select it, and the deciding rule or why nothing matched.

use std::fmt;

use serde::Serialize;

use super::{
    admin::{Action, Tier},
    evaluator::{Connection, Evaluator, Exemption, RuleRef, SideVerdict, Verdict},
    model::{Direction, PortMatcher},
    verdict::TierRuleRef,
};

fn inv_describe(ev: &Evaluator<'_>, r: &Resolved) -> String {
    ev.inventory().describe(r)
}
use crate::{flow::Protocol, inventory::Resolved};

/// A verdict with its reasons. Serializes to the JSON that `check` writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// `allow` or `deny`.
    pub verdict: &'static str,
    /// What the source resolved to.
    pub source: String,
    /// What the destination resolved to.
    pub destination: String,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub egress: SideExplanation,
    pub ingress: SideExplanation,
}

/// One side of a verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SideExplanation {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// Whether policies select this end for the direction.
    pub isolated: bool,
    /// The selecting policies, `namespace/name`, in evaluation order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Set when a CNI rule, not a policy, decided: `self`, `local-node`, `host-network`,
    /// `external`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption: Option<&'static str>,
    /// The deciding rule, when a rule allowed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_by: Option<AllowedBy>,
    /// When denied: why each rule of each selecting policy did not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub misses: Vec<PolicyMiss>,
    /// The Admin- or Baseline-tier rule that decided (or, for `unknown`, could decide).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_rule: Option<TierRuleExplanation>,
    /// For `undefined`: the rule of the same priority that disagrees with `tier_rule`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicting: Option<TierRuleExplanation>,
    /// The Pass rules that sent this side on to the next tier, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passed_by: Vec<TierRuleExplanation>,
    /// One sentence for people.
    pub reason: String,
}

/// A rule of an admin policy, named for people and tools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TierRuleExplanation {
    pub tier: Tier,
    /// `Kind/name`.
    pub policy: String,
    pub priority: u32,
    pub rule: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: Action,
}

impl fmt::Display for TierRuleExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (tier {}, priority {}) rule {}",
            self.policy, self.tier, self.priority, self.rule
        )?;
        if let Some(n) = &self.name {
            write!(f, " {n:?}")?;
        }
        write!(f, ": {}", self.action)
    }
}

/// The rule that allowed a side. `peer` and `port` are absent when the rule's list is empty
/// (matches everything).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllowedBy {
    pub policy: String,
    pub rule: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// Why a selecting policy did not allow a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyMiss {
    pub policy: String,
    /// Empty when the policy has no rules for the direction (it only isolates).
    pub rules: Vec<RuleMiss>,
}

/// Why one rule did not match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleMiss {
    pub rule: u32,
    pub peer_matched: bool,
    pub port_matched: bool,
    pub why: String,
}

fn side_decision(v: &SideVerdict) -> &'static str {
    match v {
        SideVerdict::Unknown(_) => "unknown",
        SideVerdict::Undefined(..) => "undefined",
        v if v.allows() => "allow",
        _ => "deny",
    }
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

impl Evaluator<'_> {
    /// Evaluates a connection and explains the verdict.
    pub fn explain(&self, c: &Connection) -> Explanation {
        let verdict = self.evaluate(c);
        self.explain_verdict(c, &verdict)
    }

    /// Explains a verdict computed by [`Evaluator::evaluate`] for `c`.
    pub fn explain_verdict(&self, c: &Connection, v: &Verdict) -> Explanation {
        let inv = self.inventory();
        let source = inv.describe(&c.src);
        let destination = inv.describe(&c.dst);
        Explanation {
            verdict: v.decision(),
            egress: self.explain_side(Direction::Egress, c, &c.src, &source, &v.egress),
            ingress: self.explain_side(Direction::Ingress, c, &c.dst, &destination, &v.ingress),
            source,
            destination,
            protocol: c.protocol,
            port: c.port,
        }
    }

    fn explain_side(
        &self,
        direction: Direction,
        c: &Connection,
        end: &Resolved,
        name: &str,
        v: &SideVerdict,
    ) -> SideExplanation {
        let dir = direction_name(direction);
        let policies: Vec<String> = match end {
            Resolved::Pod { pod, .. } => self
                .selecting(direction, *pod)
                .iter()
                .map(|&i| self.policies()[i as usize].key())
                .collect(),
            _ => Vec::new(),
        };
        let mut out = SideExplanation {
            decision: side_decision(v),
            isolated: !policies.is_empty(),
            policies,
            exemption: None,
            allowed_by: None,
            misses: Vec::new(),
            tier_rule: None,
            conflicting: None,
            passed_by: Vec::new(),
            reason: String::new(),
        };
        // Pass rules on the way: the Admin tier's for any later decision, the Baseline
        // tier's for the default allow.
        if let Resolved::Pod { pod, .. } = end
            && !self.admin_policies().is_empty()
            && !matches!(v, SideVerdict::Exempt(_))
        {
            let admin_decided = matches!(v, SideVerdict::Tier(r) | SideVerdict::Unknown(r) | SideVerdict::Undefined(r, _) if r.tier == Tier::Admin);
            if !admin_decided {
                if let Some(p) = self.tier_walk(Tier::Admin, direction, *pod, c).passed {
                    out.passed_by.push(self.tier_rule(direction, &p));
                }
                if *v == SideVerdict::NotIsolated
                    && let Some(p) = self.tier_walk(Tier::Baseline, direction, *pod, c).passed
                {
                    out.passed_by.push(self.tier_rule(direction, &p));
                }
            }
        }
        match v {
            SideVerdict::Exempt(e) => {
                let (tag, reason) = match e {
                    Exemption::SelfTraffic => (
                        "self",
                        "a pod's connections to itself are always allowed (as in Calico, Cilium and kube-router)".to_owned(),
                    ),
                    Exemption::LocalNode => (
                        "local-node",
                        "connections from the pod's own node, such as kubelet probes, are always allowed".to_owned(),
                    ),
                    Exemption::HostNetwork => (
                        "host-network",
                        format!("{name} is a node or a host-network pod: NetworkPolicies do not isolate it; as a peer only ipBlocks match it"),
                    ),
                    Exemption::External => (
                        "external",
                        format!("{name} is outside the cluster: no NetworkPolicy isolates it"),
                    ),
                };
                out.isolated = false;
                out.policies.clear();
                out.exemption = Some(tag);
                out.reason = reason;
            }
            SideVerdict::NotIsolated => {
                out.reason = if self.admin_policies().is_empty() {
                    format!("not isolated: no NetworkPolicy selects {name} for {dir}")
                } else {
                    format!(
                        "not isolated: no NetworkPolicy selects {name} for {dir}, and no Baseline-tier rule decides: allowed by default"
                    )
                };
            }
            SideVerdict::Tier(r) => {
                let t = self.tier_rule(direction, r);
                out.reason = format!(
                    "{} by {t}",
                    if r.action == super::Action::Accept {
                        "accepted"
                    } else {
                        "denied"
                    }
                );
                out.tier_rule = Some(t);
            }
            SideVerdict::Unknown(r) => {
                let t = self.tier_rule(direction, r);
                out.reason = format!(
                    "unknown: the first rule that could decide, {t}, names its peers by domainNames, and the DNS names of {} are not known",
                    inv_describe(self, &c.dst)
                );
                out.tier_rule = Some(t);
            }
            SideVerdict::Undefined(a, b) => {
                let (ta, tb) = (self.tier_rule(direction, a), self.tier_rule(direction, b));
                out.reason = format!(
                    "undefined: {ta} and {tb} have the same priority and both match; the API leaves which one applies to the implementation"
                );
                out.tier_rule = Some(ta);
                out.conflicting = Some(tb);
            }
            SideVerdict::Allowed(r) => {
                out.reason = self.allowed_reason(direction, r);
                out.allowed_by = Some(AllowedBy {
                    policy: self.policies()[r.policy as usize].key(),
                    rule: r.rule,
                    peer: r.peer,
                    port: r.port,
                });
            }
            SideVerdict::Denied => {
                if let Resolved::Pod { pod, .. } = end {
                    out.misses = self.misses(direction, *pod, c);
                }
                let n_rules: usize = out.misses.iter().map(|m| m.rules.len()).sum();
                out.reason = if n_rules == 0 {
                    format!(
                        "isolated for {dir} by {} polic{}, which allow no {dir} at all",
                        out.policies.len(),
                        if out.policies.len() == 1 { "y" } else { "ies" }
                    )
                } else {
                    format!(
                        "isolated for {dir}, and none of the {n_rules} {dir} rule(s) of the selecting policies matches"
                    )
                };
            }
        }
        if !out.passed_by.is_empty() {
            let passes: Vec<String> = out.passed_by.iter().map(ToString::to_string).collect();
            out.reason = format!("passed by {}; then {}", passes.join(", then "), out.reason);
        }
        out
    }

    fn tier_rule(&self, direction: Direction, r: &TierRuleRef) -> TierRuleExplanation {
        let p = &self.admin_policies()[r.policy as usize];
        TierRuleExplanation {
            tier: r.tier,
            policy: p.key(),
            priority: p.priority,
            rule: r.rule,
            name: p.rules(direction)[r.rule as usize].name.clone(),
            action: r.action,
        }
    }

    fn allowed_reason(&self, direction: Direction, r: &RuleRef) -> String {
        let p = &self.policies()[r.policy as usize];
        let rule = &p.rules(direction).unwrap_or_default()[r.rule as usize];
        let peer = match r.peer {
            None => "any peer".to_owned(),
            Some(i) => format!("peer {i}: {}", rule.peers[i as usize]),
        };
        let port = match r.port {
            None => "any port".to_owned(),
            Some(i) => format!("port {i}: {}", rule.ports[i as usize]),
        };
        format!(
            "allowed by {} {} rule {} ({peer}; {port})",
            p.key(),
            direction_name(direction),
            r.rule
        )
    }

    fn misses(
        &self,
        direction: Direction,
        pod: crate::inventory::PodId,
        c: &Connection,
    ) -> Vec<PolicyMiss> {
        let (peer, dst_ports) = self.peer_and_ports(direction, c);
        self.selecting(direction, pod)
            .iter()
            .map(|&pi| {
                let p = &self.policies()[pi as usize];
                let rules = p.rules(direction).unwrap_or_default();
                let rules = rules
                    .iter()
                    .enumerate()
                    .map(|(ri, rule)| {
                        let pc = super::evaluator::PeerContext {
                            subject: pod,
                            names: c.dst_names,
                        };
                        let peer_matched = self.peer_match(pi, direction, ri, &peer, pc).is_some();
                        let port_matched = self
                            .port_match(rule, c.protocol, c.port, dst_ports)
                            .is_some();
                        let mut why = Vec::new();
                        if !peer_matched {
                            let peers: Vec<String> =
                                rule.peers.iter().map(ToString::to_string).collect();
                            why.push(format!("no peer matches [{}]", peers.join("; ")));
                        }
                        if !port_matched {
                            why.push(port_miss(&rule.ports, c));
                        }
                        RuleMiss {
                            rule: ri as u32,
                            peer_matched,
                            port_matched,
                            why: why.join("; "),
                        }
                    })
                    .collect();
                PolicyMiss {
                    policy: p.key(),
                    rules,
                }
            })
            .collect()
    }
}

fn port_miss(ports: &[PortMatcher], c: &Connection) -> String {
    let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
    let conn = match c.port {
        Some(p) => format!("{p}/{}", c.protocol),
        None => c.protocol.to_string(),
    };
    let named = if ports
        .iter()
        .any(|m| matches!(m.port, super::model::PortSpec::Named(_)))
    {
        " (named ports resolve against the destination pod's container ports)"
    } else {
        ""
    };
    format!("{conn} is not in [{}]{named}", list.join(", "))
}

/// The text `explain` prints.
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = match self.port {
            Some(p) => format!("{p}/{}", self.protocol),
            None => self.protocol.to_string(),
        };
        writeln!(
            f,
            "{}: {} -> {} on {port}",
            self.verdict.to_uppercase(),
            self.source,
            self.destination
        )?;
        for (dir, end, side) in [
            ("egress", &self.source, &self.egress),
            ("ingress", &self.destination, &self.ingress),
        ] {
            writeln!(f, "  {dir} of {end}: {}", side.decision)?;
            if !side.policies.is_empty() {
                writeln!(f, "    selected by: {}", side.policies.join(", "))?;
            }
            writeln!(f, "    {}", side.reason)?;
            if let Some(t) = &side.tier_rule {
                writeln!(f, "    tier rule: {t}")?;
            }
            if let Some(t) = &side.conflicting {
                writeln!(f, "    conflicts with: {t}")?;
            }
            for m in &side.misses {
                if m.rules.is_empty() {
                    writeln!(f, "    {}: no {dir} rules", m.policy)?;
                }
                for r in &m.rules {
                    writeln!(f, "    {} {dir} rule {}: {}", m.policy, r.rule, r.why)?;
                }
            }
        }
        Ok(())
    }
}

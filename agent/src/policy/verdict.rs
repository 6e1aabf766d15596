//! What the evaluator decides: a [`Verdict`] per [`Connection`], one [`SideVerdict`] per side.

use super::admin::{Action, Tier};
use crate::{flow::Protocol, inventory::Resolved};

/// A connection to decide: resolved ends, protocol and destination port, and the names the
/// source resolved to the destination (for `toFQDNs` and `domainNames` peers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Connection<'n> {
    pub src: Resolved,
    pub dst: Resolved,
    pub protocol: Protocol,
    /// `None` for protocols without ports.
    pub port: Option<u16>,
    /// DNS names of the destination, when it is outside the cluster and they are known.
    pub dst_names: &'n [String],
}

/// The decision for a connection: one verdict per side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The source's egress side.
    pub egress: SideVerdict,
    /// The destination's ingress side.
    pub ingress: SideVerdict,
}

impl Verdict {
    /// Allowed when both sides allow.
    pub fn allowed(&self) -> bool {
        self.egress.allows() && self.ingress.allows()
    }

    /// `allow`, `deny`, `undefined` (two equal-priority admin policies disagree) or `unknown`
    /// (a `domainNames` rule decides, and the destination's names are not known). A side that
    /// denies for certain makes it `deny`.
    pub fn decision(&self) -> &'static str {
        let sides = [self.egress, self.ingress];
        if sides.iter().any(SideVerdict::denies) {
            "deny"
        } else if sides
            .iter()
            .any(|s| matches!(s, SideVerdict::Undefined(..)))
        {
            "undefined"
        } else if sides.iter().any(|s| matches!(s, SideVerdict::Unknown(_))) {
            "unknown"
        } else {
            "allow"
        }
    }
}

/// The decision of one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideVerdict {
    /// No NetworkPolicy applies to this end at all (see [`Exemption`]): allowed.
    Exempt(Exemption),
    /// No policy selects the pod for this direction: allowed.
    NotIsolated,
    /// Isolated, and this rule (the first in policy-name order) allows it.
    Allowed(RuleRef),
    /// Isolated, and no rule of any selecting policy matches.
    Denied,
    /// An Admin- or Baseline-tier rule decided (its action is Accept or Deny).
    Tier(TierRuleRef),
    /// The first rule that could decide has a `domainNames` peer, and the names of the
    /// destination are not known: the verdict is unknown.
    Unknown(TierRuleRef),
    /// Two policies of the same tier and priority both match with different actions: the API
    /// leaves the outcome to the implementation.
    Undefined(TierRuleRef, TierRuleRef),
}

impl SideVerdict {
    /// Allowed for certain.
    pub fn allows(&self) -> bool {
        match self {
            Self::Denied | Self::Unknown(_) | Self::Undefined(..) => false,
            Self::Tier(r) => r.action == Action::Accept,
            Self::Exempt(_) | Self::NotIsolated | Self::Allowed(_) => true,
        }
    }

    /// Denied for certain.
    pub fn denies(&self) -> bool {
        match self {
            Self::Denied => true,
            Self::Tier(r) => r.action == Action::Deny,
            _ => false,
        }
    }
}

/// The rule of an admin policy that decided or passed a side: indexes into the admin policies
/// given to [`Evaluator::with_admin`](super::Evaluator::with_admin) and the direction's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TierRuleRef {
    pub tier: Tier,
    pub policy: u32,
    pub rule: u32,
    pub action: Action,
}

/// Why a side is allowed without consulting policies. These are the choices of the mainstream
/// CNIs (Calico, Cilium, kube-router); see docs/policy-semantics.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exemption {
    /// A pod connecting to itself.
    SelfTraffic,
    /// A node (e.g. the kubelet's probes) connecting to a pod on that node.
    LocalNode,
    /// This end is a node or a host-network pod, which NetworkPolicies do not select.
    HostNetwork,
    /// This end is outside the cluster, which NetworkPolicies do not select.
    External,
}

/// The rule that allowed a side: indexes into the policy slice given to
/// [`Evaluator::new`](super::Evaluator::new),
/// the direction's rules, and the rule's `from`/`to` and `ports` (`None` when the list is empty,
/// which matches everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleRef {
    pub policy: u32,
    pub rule: u32,
    pub peer: Option<u32>,
    pub port: Option<u32>,
}

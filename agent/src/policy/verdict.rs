//! What the evaluator decides: a [`Verdict`] per [`Connection`], one [`SideVerdict`] per side.

use crate::{flow::Protocol, inventory::Resolved};

/// A connection to decide: resolved ends, protocol and destination port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Connection {
    pub src: Resolved,
    pub dst: Resolved,
    pub protocol: Protocol,
    /// `None` for protocols without ports.
    pub port: Option<u16>,
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
}

impl SideVerdict {
    pub fn allows(&self) -> bool {
        !matches!(self, Self::Denied)
    }
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

//! NetworkPolicy (networking.k8s.io/v1) semantics, with the admin tiers of ClusterNetworkPolicy
//! and AdminNetworkPolicy around it ([`admin`]): the validated models, the evaluator that decides
//! whether a connection is allowed, and explanations of its verdicts.
//!
//! Pure: no IO, no clock, no kube client. Inputs are an [`Inventory`](crate::inventory::Inventory)
//! and a list of [`Policy`]; see docs/policy-semantics.md for the rules, including the choices
//! the API leaves to the CNI.
//!
//! ```text
//!   k8s NetworkPolicy ──Policy::from_k8s──▶ Policy ─┐
//!                                                    ├─▶ Evaluator::new ──▶ evaluate(&Connection) → Verdict
//!   Inventory (namespaces, pods, workloads) ────────┘                   ├─▶ explain(&Connection)  → Explanation
//!                                                                        └─▶ allowed_ports(src,dst) → PortSet
//! ```

pub mod admin;
pub mod cilium;
mod compiled;
mod convert;
mod evaluator;
mod explain;
mod matrix;
mod model;
pub mod names;
mod ports;
mod reach;
mod selector;
mod tiers;
mod verdict;

#[cfg(test)]
mod cni_tests;
#[cfg(test)]
mod conformance_tests;
#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod tiers_tests;

pub use admin::{Action, AdminKind, AdminPeer, AdminPolicy, AdminRule, Subject, Tier};
pub use evaluator::Evaluator;
pub use explain::{
    AllowedBy, Explanation, PolicyMiss, RuleMiss, SideExplanation, TierRuleExplanation,
};
pub use matrix::{Cell, EXTERNAL_REPRESENTATIVE, Entity, Matrix};
pub use model::{
    CiliumEntity, Direction, IpBlock, NamespaceScope, Peer, Policy, PolicyKind, PortMatcher,
    PortSpec, Rule,
};
pub use names::NamePattern;
pub use ports::{PortRanges, PortSet};
pub use selector::{Labels, Operator, Requirement, Selector};
pub use verdict::{Connection, Exemption, RuleRef, SideVerdict, TierRuleRef, Verdict};

/// Why a NetworkPolicy is invalid. `field` is the path inside the object, such as
/// `spec.ingress[0].from[1].ipBlock.cidr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `metadata.name` is missing.
    #[error("metadata.name: a NetworkPolicy needs a name")]
    MissingName,
    /// A CIDR does not parse.
    #[error(
        "{field}: invalid CIDR {value:?}: expected an address and a prefix length, such as 10.0.0.0/8 or fd00::/64"
    )]
    InvalidCidr { field: String, value: String },
    /// An `except` entry is not strictly inside its `cidr`.
    #[error("{field}: except {except:?} is not strictly inside cidr {cidr:?}")]
    ExceptOutsideCidr {
        field: String,
        except: String,
        cidr: String,
    },
    /// A selector operator other than In, NotIn, Exists and DoesNotExist.
    #[error(
        "{field}: invalid selector operator {operator:?}: expected In, NotIn, Exists or DoesNotExist"
    )]
    InvalidOperator { field: String, operator: String },
    /// `values` does not fit the operator.
    #[error("{field}: values {reason} for operator {operator}")]
    SelectorValues {
        field: String,
        operator: String,
        reason: &'static str,
    },
    /// A label key that is empty or malformed.
    #[error("{field}: invalid label key {key:?}")]
    InvalidLabelKey { field: String, key: String },
    /// A port number outside 1-65535.
    #[error("{field}: port {value} is out of range 1-65535")]
    PortOutOfRange { field: String, value: i32 },
    /// `endPort` below `port`.
    #[error("{field}: endPort {end_port} is below port {port}")]
    EndPortBelowPort {
        field: String,
        port: u16,
        end_port: u16,
    },
    /// `endPort` together with a named port.
    #[error("{field}: endPort cannot be used with the named port {name:?}; use a number")]
    EndPortWithNamedPort { field: String, name: String },
    /// `endPort` without `port`.
    #[error("{field}: endPort needs a numeric port")]
    EndPortWithoutPort { field: String },
    /// A named port that is not a valid port name.
    #[error("{field}: invalid port name {name:?}: expected 1-15 lowercase letters, digits or '-'")]
    InvalidPortName { field: String, name: String },
    /// A protocol other than TCP, UDP and SCTP.
    #[error("{field}: unknown protocol {value:?}: expected TCP, UDP or SCTP")]
    UnknownProtocol { field: String, value: String },
    /// A `policyTypes` entry other than Ingress and Egress.
    #[error("{field}: unknown policy type {value:?}: expected Ingress or Egress")]
    UnknownPolicyType { field: String, value: String },
    /// A peer with no selector and no ipBlock, or with both.
    #[error("{field}: invalid peer: {reason}")]
    InvalidPeer { field: String, reason: &'static str },
    /// Another structural mistake, such as two keys where exactly one is allowed.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: &'static str },
    /// A required field is missing.
    #[error("{field}: required field missing")]
    MissingField { field: String },
    /// A number outside its range.
    #[error("{field}: {value} is out of range {range}")]
    OutOfRange {
        field: String,
        value: i64,
        range: &'static str,
    },
    /// A value that is not one of those allowed.
    #[error("{field}: invalid value {value:?}: expected {expected}")]
    InvalidValue {
        field: String,
        value: String,
        expected: &'static str,
    },
}

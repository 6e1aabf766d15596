//! Synthesis: from the flow graph to the NetworkPolicies a careful reviewer would write.
//!
//! ```text
//!   FlowGraph ──per subject workload──▶ (peer, port) pairs per direction     (plan)
//!       │                                  │ peers with the same port set share a rule
//!       ▼                                  ▼
//!   WorkloadSelectors ─────────────▶ LearnedPolicy { rules, evidence } ──render──▶ NetworkPolicy YAML
//! ```
//!
//! One policy per workload, isolating both directions, allowing exactly the observed
//! (peer, protocol, port) combinations: ports are exact (named when the destination names
//! them), never ephemeral (identity orients flows first), and nothing wider unless an option
//! asks (`cidr_prefix`, DNS over both UDP and TCP). Output is sorted, so two runs over the same
//! input give byte-identical YAML. Pure: no IO.

mod cilium;
mod diff;
pub mod layers;
mod plan;
mod render;

#[cfg(test)]
mod cilium_tests;
#[cfg(test)]
mod tests;

pub use cilium::fqdn_selectors;
pub use diff::{ConnectivityDiff, DiffRow, connectivity_diff};
pub use plan::{PeerInfo, PortItem, RenderPeer, RuleSpec};
pub use render::{default_deny, kustomization, to_yaml};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::{
    identity::{Identities, WorkloadRef, WorkloadSelectors},
    policy::{Labels, Policy, PolicyError},
};

/// Why synthesis output could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A learned policy failed the policy model's validation: a bug, reported with the policy.
    #[error("learned policy {policy} is invalid: {source}")]
    Invalid { policy: String, source: PolicyError },
    /// YAML serialization failed.
    #[error("rendering {policy} as YAML: {message}")]
    Render { policy: String, message: String },
}

/// What to learn and how wide to write it.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    /// Add a `default-deny` policy (all pods, both directions, no rules) per namespace that
    /// gets learned policies.
    pub namespace_default_deny: bool,
    /// Summarise external IPv4 peers to this prefix length (never over cluster CIDRs).
    pub cidr_prefix_v4: Option<u8>,
    /// Summarise external IPv6 peers to this prefix length.
    pub cidr_prefix_v6: Option<u8>,
    /// Namespace and labels of the cluster DNS pods, for the DNS egress rule.
    pub dns_namespace: String,
    pub dns_labels: Labels,
    /// Namespaces whose workloads get no policy (they still appear as peers).
    pub skip_namespaces: Vec<String>,
    /// When set, only workloads of these namespaces get a policy.
    pub only_namespaces: Vec<String>,
    /// NetworkPolicy or CiliumNetworkPolicy.
    pub format: PolicyFormat,
    /// Cilium format: this many names or more one label below the same parent become one
    /// `matchPattern: "*.parent"` (0: never).
    pub fqdn_pattern_threshold: usize,
    /// Cilium format: the cluster's DNS domain, whose names the DNS rule always lets pods look
    /// up (their own services, and the resolver's search-list expansions).
    pub cluster_domain: String,
}

/// The kind of policy `learn` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyFormat {
    /// networking.k8s.io/v1 NetworkPolicy.
    #[default]
    K8s,
    /// cilium.io/v2 CiliumNetworkPolicy, with toFQDNs for addresses known by name.
    Cilium,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            namespace_default_deny: false,
            cidr_prefix_v4: None,
            cidr_prefix_v6: None,
            dns_namespace: "kube-system".into(),
            dns_labels: [("k8s-app".to_owned(), "kube-dns".to_owned())].into(),
            skip_namespaces: vec!["kube-system".into()],
            only_namespaces: Vec::new(),
            format: PolicyFormat::K8s,
            fqdn_pattern_threshold: 4,
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// One observed edge behind a rule, for the evidence annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// `ingress[i]` or `egress[i]`.
    pub rule: String,
    pub peer: String,
    pub port: String,
    pub count: u64,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    /// One-way UDP: no packet came back.
    pub one_way: bool,
    /// The DNS names the workload connected to the peer by (externals only).
    pub names: Vec<String>,
}

/// A learned policy: for a workload, or a namespace's default deny (`workload` is `None`).
#[derive(Clone, Debug)]
pub struct LearnedPolicy {
    pub namespace: String,
    pub name: String,
    pub workload: Option<WorkloadRef>,
    pub ingress: Vec<RuleSpec>,
    pub egress: Vec<RuleSpec>,
    pub evidence: Vec<Evidence>,
    /// The Kubernetes object, with annotations (the rules in NetworkPolicy terms, whatever the
    /// format).
    pub object: NetworkPolicy,
    /// In the Cilium format: the object written instead of `object`.
    pub cilium: Option<crate::policy::cilium::CiliumNetworkPolicy>,
}

impl LearnedPolicy {
    /// The policy in the evaluator's model.
    pub fn to_policy(&self) -> Result<Policy, SynthError> {
        match &self.cilium {
            Some(c) => Policy::from_cilium(c),
            None => Policy::from_k8s(&self.object),
        }
        .map_err(|source| SynthError::Invalid {
            policy: format!("{}/{}", self.namespace, self.name),
            source,
        })
    }

    /// The file name `--output DIR` uses.
    pub fn file_name(&self) -> String {
        format!("{}.{}.yaml", self.namespace, self.name)
    }
}

/// The result of [`learn`].
#[derive(Clone, Debug, Default)]
pub struct Learned {
    /// Sorted by namespace, then name.
    pub policies: Vec<LearnedPolicy>,
    /// What could not be learned exactly, for people.
    pub warnings: Vec<String>,
    /// With `learn --layers`: the cluster-scoped layers, Admin tier first.
    pub layers: Vec<layers::LearnedLayer>,
}

impl Learned {
    /// All policies in the evaluator's model.
    pub fn to_policies(&self) -> Result<Vec<Policy>, SynthError> {
        self.policies.iter().map(LearnedPolicy::to_policy).collect()
    }
}

/// The context synthesis needs besides the graph.
pub struct Context<'a> {
    pub identities: &'a Identities<'a>,
    pub selectors: &'a WorkloadSelectors,
    /// Cluster CIDRs, which no ipBlock may cover.
    pub cluster_cidrs: &'a [IpNet],
}

/// Learns one policy per subject workload of the graph.
pub fn learn(ctx: &Context<'_>, graph: &crate::graph::FlowGraph, opts: &SynthOptions) -> Learned {
    let mut plans = plan::plan(ctx, graph, opts);
    let mut learned = Learned {
        warnings: std::mem::take(&mut plans.warnings),
        ..Learned::default()
    };
    let mut namespaces: BTreeMap<String, ()> = BTreeMap::new();
    for p in plans.policies {
        namespaces.insert(p.namespace.clone(), ());
        let k8s = render::policy(p.clone(), ctx, opts);
        learned.policies.push(match opts.format {
            PolicyFormat::K8s => k8s,
            PolicyFormat::Cilium => {
                cilium::policy(&p, &plan::dns_peer(&p.namespace, opts), opts, k8s)
            }
        });
    }
    if opts.namespace_default_deny {
        for ns in namespaces.keys() {
            let deny = render::default_deny(ns);
            learned.policies.push(match opts.format {
                PolicyFormat::K8s => deny,
                PolicyFormat::Cilium => cilium::default_deny(deny),
            });
        }
    }
    learned
        .policies
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    learned
}

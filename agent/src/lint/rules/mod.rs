//! The rules, by theme, and what they share: the evaluator, the cluster's pods, pod sets of
//! peers, and where things are in the manifests.

pub mod breadth;
pub mod dead;
pub mod exposure;
pub mod isolation;
pub mod layers;
pub mod usage;

use ipnet::IpNet;

use super::{LintInput, LintOptions, SourceLocation, Sources, Subject, locate::Seg};
use crate::{
    identity::infer_cluster_cidrs,
    inventory::{Inventory, NamespaceId, PodId},
    policy::{AdminPolicy, Direction, Evaluator, NamespaceScope, Peer, Policy, Selector},
};

/// What every rule reads.
pub struct Ctx<'a> {
    pub inv: &'a Inventory,
    pub policies: &'a [Policy],
    pub sources: &'a Sources,
    pub opts: &'a LintOptions,
    pub ev: Evaluator<'a>,
    /// Pods on the pod network, one per real pod, and a template pod only for a workload
    /// without real pods in the manifests.
    pub pods: Vec<PodId>,
    pub pod_cidrs: Vec<IpNet>,
}

impl<'a> Ctx<'a> {
    pub fn new(input: &LintInput<'a>) -> Self {
        let inv = input.inventory;
        let pods = (0..inv.pods().len() as u32)
            .map(PodId)
            .filter(|&id| {
                let p = inv.pod(id);
                // A template stands for real pods only when none are in the manifests.
                let shadowed_template =
                    p.is_template && p.workload.is_some_and(|w| !inv.workload(w).pods.is_empty());
                !p.host_network && !shadowed_template
            })
            .collect();
        let pod_cidrs = if input.options.pod_cidrs.is_empty() {
            // Service IPs too: an ipBlock over them is as wrong.
            infer_cluster_cidrs(inv)
        } else {
            input.options.pod_cidrs.clone()
        };
        Self {
            inv,
            policies: input.policies,
            sources: input.sources,
            opts: input.options,
            ev: Evaluator::new(inv, input.policies).with_admin(input.admin),
            pods,
            pod_cidrs,
        }
    }

    /// The cluster's pods in a namespace.
    pub fn pods_in(&self, ns: NamespaceId) -> impl Iterator<Item = PodId> + '_ {
        self.pods
            .iter()
            .copied()
            .filter(move |&p| self.inv.pod(p).namespace == ns)
    }

    /// Whether the namespace's own isolation is checked.
    pub fn checks_namespace(&self, ns: &str) -> bool {
        !self.opts.skip_namespaces.iter().any(|s| s == ns)
    }

    /// The namespaces a pod peer of a policy in `policy_ns` looks in.
    pub fn peer_namespaces(&self, scope: &NamespaceScope) -> Vec<NamespaceId> {
        match scope {
            NamespaceScope::Named(n) => self.inv.namespace_id(n).into_iter().collect(),
            NamespaceScope::Selector(s) => (0..self.inv.namespaces().len() as u32)
                .map(NamespaceId)
                .filter(|&id| s.matches(&self.inv.namespace(id).labels))
                .collect(),
        }
    }

    /// The cluster's pods a pod peer matches.
    pub fn peer_pods(&self, scope: &NamespaceScope, pods: &Selector) -> Vec<PodId> {
        let ns = self.peer_namespaces(scope);
        self.pods
            .iter()
            .copied()
            .filter(|&p| {
                let pod = self.inv.pod(p);
                ns.contains(&pod.namespace) && pods.matches(&pod.labels)
            })
            .collect()
    }

    /// The cluster's pods a policy selects.
    pub fn selected(&self, p: &Policy) -> Vec<PodId> {
        let Some(ns) = self.inv.namespace_id(&p.namespace) else {
            return Vec::new();
        };
        self.pods_in(ns)
            .filter(|&id| p.pod_selector.matches(&self.inv.pod(id).labels))
            .collect()
    }

    /// Where a policy, or a part of it, is.
    pub fn policy_location(&self, p: &Policy, path: &[Seg]) -> Option<SourceLocation> {
        self.sources
            .locate("NetworkPolicy", &p.namespace, &p.name, path)
    }

    /// Where an admin policy (cluster-scoped), or a part of it, is.
    pub fn admin_location(&self, p: &AdminPolicy, path: &[Seg]) -> Option<SourceLocation> {
        self.sources.locate(&p.kind.to_string(), "", &p.name, path)
    }

    /// Names for pods: their workloads (or pods), sorted, deduplicated.
    pub fn names(&self, pods: &[PodId]) -> Vec<String> {
        let mut v: Vec<String> = pods
            .iter()
            .map(|&p| match self.inv.pod(p).workload {
                Some(w) => self.inv.workload_ref(w),
                None => self.inv.pod_ref(p),
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `from` or `to`.
pub fn peers_key(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    }
}

pub fn dir_key(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// `spec.<dir>[rule]`, then `.from[peer]`/`.to[peer]` or `.ports`.
pub fn rule_path(d: Direction, rule: usize, tail: Tail) -> Vec<Seg> {
    let mut v = vec![Seg::key("spec"), Seg::key(dir_key(d)), Seg::Index(rule)];
    match tail {
        Tail::Rule => {}
        Tail::Peer(i) => v.extend([Seg::key(peers_key(d)), Seg::Index(i)]),
        Tail::Ports => v.push(Seg::key("ports")),
    }
    v
}

/// Which part of a rule a path ends at.
#[derive(Clone, Copy)]
pub enum Tail {
    Rule,
    Peer(usize),
    Ports,
}

/// The subject for a rule (and peer) of a policy.
pub fn rule_subject(p: &Policy, d: Direction, rule: usize, peer: Option<usize>) -> Subject {
    Subject {
        policy: Some(p.key()),
        direction: Some(d),
        rule: Some(rule),
        peer,
        object: None,
    }
}

/// Every (direction, rule index, rule) of a policy.
pub fn rules_of(p: &Policy) -> impl Iterator<Item = (Direction, usize, &crate::policy::Rule)> {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .flat_map(move |d| {
            p.rules(d)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(move |(i, r)| (d, i, r))
        })
}

/// Every pod peer with its index, for convenience.
pub fn pod_peers(
    r: &crate::policy::Rule,
) -> impl Iterator<Item = (usize, &NamespaceScope, &Selector)> {
    r.peers.iter().enumerate().filter_map(|(i, p)| match p {
        Peer::Pods { namespaces, pods } => Some((i, namespaces, pods)),
        Peer::IpBlock(_) | Peer::Cidr(_) | Peer::Fqdn(_) | Peer::Entity(_) => None,
    })
}

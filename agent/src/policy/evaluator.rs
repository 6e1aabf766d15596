//! The evaluator: is a connection allowed by the egress side of its source and the ingress side
//! of its destination?
//!
//! [`Evaluator::new`] indexes once: which policies select each pod, per direction (policies are
//! looked up by namespace, and pods selected with each distinct selector once), and the set of
//! pods each distinct peer matches, as a bitset. A verdict then costs two lookups and a walk over
//! the rules of the few policies that select the two ends; no policy is scanned per connection.

use std::collections::HashMap;

pub use super::verdict::{Connection, Exemption, RuleRef, SideVerdict, Verdict};
use super::{
    admin::AdminPolicy,
    compiled::{CPort, NamedPort, NamedPorts, SharedLists},
    model::{CiliumEntity, Direction, IpBlock, NamespaceScope, Peer, Policy, Rule},
    names::NamePattern,
    selector::Selector,
    tiers::TierIndex,
};
use crate::{
    flow::{FlowRecord, Protocol},
    inventory::{ContainerPort, Inventory, InventoryError, NamespaceId, PodId, Resolved},
};

/// Pods a peer matches.
#[derive(Debug)]
pub(super) enum PodSet {
    All,
    /// Every pod of these namespaces (bit per namespace).
    Namespaces(Vec<u64>),
    /// These pods (bit per pod).
    Pods(Vec<u64>),
}

pub(super) fn bit(set: &[u64], i: usize) -> bool {
    set.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

pub(super) fn set_bit(set: &mut [u64], i: usize) {
    set[i / 64] |= 1 << (i % 64);
}

/// A compiled peer: the pod set of a pod peer, an ipBlock, or a Cilium peer.
#[derive(Debug, Clone, Copy)]
enum PeerMatch {
    Pods(u32),
    /// Index into [`Evaluator::ip_blocks`].
    IpBlock(u32),
    /// A Cilium CIDR (outside the cluster only): index into [`Evaluator::ip_blocks`].
    Cidr(u32),
    /// Index into [`Evaluator::fqdns`].
    Fqdn(u32),
    Entity(CiliumEntity),
}

/// What a peer is matched against besides the other end: the pod whose side is decided (for
/// Cilium's `host` and `remote-node`) and the destination's DNS names (for `toFQDNs`).
#[derive(Clone, Copy)]
pub(super) struct PeerContext<'n> {
    pub subject: PodId,
    pub names: &'n [String],
}

/// A compiled rule: its ports and peers, as ranges of [`Evaluator::ports`] and
/// [`Evaluator::peers`].
#[derive(Debug, Clone, Copy)]
struct CRule {
    ports: (u32, u32),
    peers: (u32, u32),
}

fn dir(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// Decides connections against an inventory and a set of policies. Cheap to query, built once.
#[derive(Debug)]
pub struct Evaluator<'a> {
    inventory: &'a Inventory,
    policies: &'a [Policy],
    /// Per direction (ingress, egress), per policy: its rules' range in `rules`.
    rules_of: [Vec<(u32, u32)>; 2],
    rules: Vec<CRule>,
    ports: Vec<CPort>,
    peers: Vec<PeerMatch>,
    ip_blocks: Vec<&'a IpBlock>,
    fqdns: Vec<&'a NamePattern>,
    /// The API server's addresses (endpoints of Service default/kubernetes), for Cilium's
    /// `kube-apiserver` entity.
    apiserver: Vec<std::net::IpAddr>,
    pod_sets: Vec<PodSet>,
    /// Per pod, its namespace (read by namespace-wide pod sets without touching the pod).
    pod_ns: Vec<u32>,
    /// Every pod's named container ports, for named-port matchers.
    named: NamedPorts,
    /// Per direction, per pod, the policies selecting it, in (namespace, name) order.
    selecting: [SharedLists; 2],
    /// ClusterNetworkPolicies, AdminNetworkPolicies and the BaselineAdminNetworkPolicy.
    admin: &'a [AdminPolicy],
    tiers: TierIndex,
}

impl<'a> Evaluator<'a> {
    /// Indexes the policies against the inventory. Policies whose namespace is not in the
    /// inventory select nothing.
    pub fn new(inventory: &'a Inventory, policies: &'a [Policy]) -> Self {
        let n_pods = inventory.pods().len();
        let mut order: Vec<u32> = (0..policies.len() as u32).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&policies[a as usize], &policies[b as usize]);
            (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
        });
        let mut ingress_of = vec![Vec::new(); n_pods];
        let mut egress_of = vec![Vec::new(); n_pods];
        let mut selected: HashMap<(NamespaceId, &Selector), Vec<PodId>> = HashMap::new();
        for &pi in &order {
            let p = &policies[pi as usize];
            let Some(ns) = inventory.namespace_id(&p.namespace) else {
                continue;
            };
            let pods = selected.entry((ns, &p.pod_selector)).or_insert_with(|| {
                inventory
                    .pods_in(ns)
                    .iter()
                    .copied()
                    .filter(|&id| {
                        let pod = inventory.pod(id);
                        !pod.host_network && p.pod_selector.matches(&pod.labels)
                    })
                    .collect()
            });
            for &id in pods.iter() {
                if p.ingress.is_some() {
                    ingress_of[id.index()].push(pi);
                }
                if p.egress.is_some() {
                    egress_of[id.index()].push(pi);
                }
            }
        }

        let mut ev = Self {
            inventory,
            policies,
            rules_of: [Vec::new(), Vec::new()],
            rules: Vec::new(),
            ports: Vec::new(),
            peers: Vec::new(),
            ip_blocks: Vec::new(),
            fqdns: Vec::new(),
            apiserver: inventory.apiserver_ips(),
            pod_sets: Vec::new(),
            pod_ns: inventory.pods().iter().map(|p| p.namespace.0).collect(),
            named: NamedPorts::new(inventory),
            selecting: [SharedLists::new(ingress_of), SharedLists::new(egress_of)],
            admin: &[],
            tiers: TierIndex::default(),
        };
        let mut interned: HashMap<(&NamespaceScope, &Selector), u32> = HashMap::new();
        for p in policies {
            for (d, rules) in [(0, &p.ingress), (1, &p.egress)] {
                let start = ev.rules.len() as u32;
                for r in rules.iter().flatten() {
                    let ports_start = ev.ports.len() as u32;
                    for m in &r.ports {
                        let c = ev.named.compile(m);
                        ev.ports.push(c);
                    }
                    let peers_start = ev.peers.len() as u32;
                    for peer in &r.peers {
                        let m = match peer {
                            Peer::IpBlock(b) => {
                                ev.ip_blocks.push(b);
                                PeerMatch::IpBlock(ev.ip_blocks.len() as u32 - 1)
                            }
                            Peer::Cidr(b) => {
                                ev.ip_blocks.push(b);
                                PeerMatch::Cidr(ev.ip_blocks.len() as u32 - 1)
                            }
                            Peer::Fqdn(n) => {
                                ev.fqdns.push(n);
                                PeerMatch::Fqdn(ev.fqdns.len() as u32 - 1)
                            }
                            Peer::Entity(e) => PeerMatch::Entity(*e),
                            Peer::Pods { namespaces, pods } => {
                                let next = ev.pod_sets.len() as u32;
                                let id = *interned.entry((namespaces, pods)).or_insert(next);
                                if id == next {
                                    ev.pod_sets.push(pod_set(inventory, namespaces, pods));
                                }
                                PeerMatch::Pods(id)
                            }
                        };
                        ev.peers.push(m);
                    }
                    ev.rules.push(CRule {
                        ports: (ports_start, ev.ports.len() as u32),
                        peers: (peers_start, ev.peers.len() as u32),
                    });
                }
                ev.rules_of[d].push((start, ev.rules.len() as u32));
            }
        }
        ev
    }

    /// Adds the admin tiers: ClusterNetworkPolicies (Admin and Baseline tier),
    /// AdminNetworkPolicies and the BaselineAdminNetworkPolicy.
    pub fn with_admin(mut self, admin: &'a [AdminPolicy]) -> Self {
        self.tiers = TierIndex::new(self.inventory, admin, &self.named);
        self.admin = admin;
        self
    }

    pub fn inventory(&self) -> &'a Inventory {
        self.inventory
    }

    /// The admin policies given to [`Evaluator::with_admin`]; [`TierRuleRef::policy`]
    /// indexes this.
    ///
    /// [`TierRuleRef::policy`]: super::TierRuleRef::policy
    pub fn admin_policies(&self) -> &'a [AdminPolicy] {
        self.admin
    }

    pub(super) fn tiers(&self) -> &TierIndex {
        &self.tiers
    }

    /// The policies, in the order given to [`Evaluator::new`]; [`RuleRef::policy`] indexes this.
    pub fn policies(&self) -> &'a [Policy] {
        self.policies
    }

    /// Resolves the ends of a flow record.
    pub fn connection<'r>(&self, r: &'r FlowRecord) -> Result<Connection<'r>, InventoryError> {
        Ok(Connection {
            src: self.inventory.resolve(&r.src)?,
            dst: self.inventory.resolve(&r.dst)?,
            protocol: r.protocol,
            port: r.port,
            dst_names: &r.dst_names,
        })
    }

    /// Policies selecting a pod for a direction, in (namespace, name) order. Empty means not
    /// isolated. Host-network pods are never selected.
    pub fn selecting(&self, direction: Direction, pod: PodId) -> &[u32] {
        self.selecting[dir(direction)].get(pod)
    }

    /// Decides a connection.
    pub fn evaluate(&self, c: &Connection) -> Verdict {
        if let Some(e) = self.self_traffic(c) {
            return Verdict {
                egress: e,
                ingress: e,
            };
        }
        let egress = match c.src {
            Resolved::Pod { pod, .. } => self.layered_side(Direction::Egress, pod, c),
            Resolved::Host { .. } => SideVerdict::Exempt(Exemption::HostNetwork),
            Resolved::External(_) => SideVerdict::Exempt(Exemption::External),
        };
        let ingress = match c.dst {
            Resolved::Pod { pod, .. } if self.is_local_node(&c.src, pod) => {
                SideVerdict::Exempt(Exemption::LocalNode)
            }
            Resolved::Pod { pod, .. } => self.layered_side(Direction::Ingress, pod, c),
            Resolved::Host { .. } => SideVerdict::Exempt(Exemption::HostNetwork),
            Resolved::External(_) => SideVerdict::Exempt(Exemption::External),
        };
        Verdict { egress, ingress }
    }

    /// A real pod connecting to itself. A template pod stands for all the pods of its
    /// workload, so a template pod to itself is one replica to another, which policies decide.
    pub(super) fn self_traffic(&self, c: &Connection) -> Option<SideVerdict> {
        match (c.src.pod(), c.dst.pod()) {
            (Some(a), Some(b)) if a == b && !self.inventory.pod(a).is_template => {
                Some(SideVerdict::Exempt(Exemption::SelfTraffic))
            }
            _ => None,
        }
    }

    /// Whether `src` is the node `dst` runs on.
    pub(super) fn is_local_node(&self, src: &Resolved, dst: PodId) -> bool {
        match (src, self.inventory.pod(dst).node) {
            (Resolved::Host { node: Some(n), .. }, Some(m)) => *n == m,
            _ => false,
        }
    }

    /// The NetworkPolicy tier of a side.
    pub(super) fn side(&self, direction: Direction, pod: PodId, c: &Connection) -> SideVerdict {
        let selecting = self.selecting(direction, pod);
        if selecting.is_empty() {
            return SideVerdict::NotIsolated;
        }
        let peer = match direction {
            Direction::Egress => c.dst,
            Direction::Ingress => c.src,
        };
        let named = self.dst_named(c);
        let pc = PeerContext {
            subject: pod,
            names: c.dst_names,
        };
        for &pi in selecting {
            let (a, b) = self.rules_of[dir(direction)][pi as usize];
            for (ri, rule) in self.rules[a as usize..b as usize].iter().enumerate() {
                let Some(port) = self.compiled_port_match(rule, c, named) else {
                    continue;
                };
                let Some(peer) = self.compiled_peer_match(rule, &peer, pc) else {
                    continue;
                };
                return SideVerdict::Allowed(RuleRef {
                    policy: pi,
                    rule: ri as u32,
                    peer,
                    port,
                });
            }
        }
        SideVerdict::Denied
    }

    /// The destination's named container ports (none when it is not a pod).
    pub(super) fn dst_named(&self, c: &Connection) -> &[NamedPort] {
        match c.dst {
            Resolved::Pod { pod, .. } => self.named.of(pod),
            _ => &[],
        }
    }

    /// As [`Evaluator::port_match`], from the compiled rule.
    #[inline]
    fn compiled_port_match(
        &self,
        rule: &CRule,
        c: &Connection,
        named: &[NamedPort],
    ) -> Option<Option<u32>> {
        let (a, b) = rule.ports;
        if a == b {
            return Some(None);
        }
        self.ports[a as usize..b as usize]
            .iter()
            .position(|m| m.matches(c.protocol, c.port, named))
            .map(|i| Some(i as u32))
    }

    /// As [`Evaluator::peer_match`], from the compiled rule.
    #[inline]
    fn compiled_peer_match(
        &self,
        rule: &CRule,
        end: &Resolved,
        pc: PeerContext<'_>,
    ) -> Option<Option<u32>> {
        let (a, b) = rule.peers;
        if a == b {
            return Some(None);
        }
        self.peers[a as usize..b as usize]
            .iter()
            .position(|&m| self.peer_matches(m, end, pc))
            .map(|i| Some(i as u32))
    }

    /// Whether `end` is in a pod set.
    #[inline]
    pub(super) fn in_pod_set(&self, set: &PodSet, end: &Resolved) -> bool {
        match *end {
            Resolved::Pod { pod, .. } => match set {
                PodSet::All => true,
                PodSet::Namespaces(bits) => bit(bits, self.pod_ns[pod.index()] as usize),
                PodSet::Pods(bits) => bit(bits, pod.index()),
            },
            _ => false,
        }
    }

    /// The other end of a side, and the destination's container ports for named ports.
    pub(super) fn peer_and_ports(
        &self,
        direction: Direction,
        c: &Connection,
    ) -> (Resolved, &'a [ContainerPort]) {
        let dst_ports = match c.dst {
            Resolved::Pod { pod, .. } => self.inventory.pod(pod).ports.as_slice(),
            _ => &[],
        };
        let peer = match direction {
            Direction::Egress => c.dst,
            Direction::Ingress => c.src,
        };
        (peer, dst_ports)
    }

    /// `Some(index)` of the first matching port (`Some(None)` when the rule has no ports).
    pub(super) fn port_match(
        &self,
        rule: &Rule,
        protocol: Protocol,
        port: Option<u16>,
        dst_ports: &[ContainerPort],
    ) -> Option<Option<u32>> {
        if rule.ports.is_empty() {
            return Some(None);
        }
        rule.ports
            .iter()
            .position(|m| m.matches(protocol, port, dst_ports))
            .map(|i| Some(i as u32))
    }

    /// `Some(index)` of the first peer matching `end` (`Some(None)` when the rule has no peers).
    pub(super) fn peer_match(
        &self,
        policy: u32,
        direction: Direction,
        rule: usize,
        end: &Resolved,
        pc: PeerContext<'_>,
    ) -> Option<Option<u32>> {
        let (a, _) = self.rules_of[dir(direction)][policy as usize];
        self.compiled_peer_match(&self.rules[a as usize + rule], end, pc)
    }

    #[inline]
    fn peer_matches(&self, m: PeerMatch, end: &Resolved, pc: PeerContext<'_>) -> bool {
        match m {
            PeerMatch::Pods(set) => self.in_pod_set(&self.pod_sets[set as usize], end),
            PeerMatch::IpBlock(b) => end
                .ip()
                .is_some_and(|ip| self.ip_blocks[b as usize].contains(ip)),
            PeerMatch::Cidr(b) => match end {
                Resolved::External(ip) => self.ip_blocks[b as usize].contains(*ip),
                _ => false,
            },
            PeerMatch::Fqdn(f) => {
                matches!(end, Resolved::External(_)) && self.fqdns[f as usize].matches_any(pc.names)
            }
            PeerMatch::Entity(e) => self.entity_matches(e, end, pc.subject),
        }
    }

    /// Cilium's entities, placed with what the inventory knows.
    fn entity_matches(&self, e: CiliumEntity, end: &Resolved, subject: PodId) -> bool {
        let own_node = self.inventory.pod(subject).node;
        match (e, end) {
            (CiliumEntity::All, _) => true,
            (CiliumEntity::None, _) => false,
            (CiliumEntity::World, r) => matches!(r, Resolved::External(_)),
            (CiliumEntity::Cluster, r) => !matches!(r, Resolved::External(_)),
            (CiliumEntity::Host, Resolved::Host { node, .. }) => {
                node.is_some() && *node == own_node
            }
            (CiliumEntity::RemoteNode, Resolved::Host { node, .. }) => {
                node.is_some() && *node != own_node
            }
            (CiliumEntity::Host | CiliumEntity::RemoteNode, _) => false,
            (CiliumEntity::KubeApiserver, r) => {
                r.ip().is_some_and(|ip| self.apiserver.contains(&ip))
            }
        }
    }
}

pub(super) fn pod_set(inv: &Inventory, namespaces: &NamespaceScope, pods: &Selector) -> PodSet {
    let ns_ids: Vec<NamespaceId> = match namespaces {
        NamespaceScope::Named(n) => inv.namespace_id(n).into_iter().collect(),
        NamespaceScope::Selector(s) => (0..inv.namespaces().len() as u32)
            .map(NamespaceId)
            .filter(|&id| s.matches(&inv.namespace(id).labels))
            .collect(),
    };
    if pods.is_everything() {
        if ns_ids.len() == inv.namespaces().len() {
            return PodSet::All;
        }
        let mut bits = vec![0u64; inv.namespaces().len().div_ceil(64)];
        for id in ns_ids {
            set_bit(&mut bits, id.index());
        }
        return PodSet::Namespaces(bits);
    }
    let mut bits = vec![0u64; inv.pods().len().div_ceil(64)];
    for ns in ns_ids {
        for &id in inv.pods_in(ns) {
            if pods.matches(&inv.pod(id).labels) {
                set_bit(&mut bits, id.index());
            }
        }
    }
    PodSet::Pods(bits)
}

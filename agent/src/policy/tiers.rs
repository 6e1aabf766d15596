//! The admin tiers in the evaluator: which admin policies select each pod, their peers
//! compiled once, and the walk of a tier for one side of a connection. Pure.
//!
//! A side is decided by the Admin tier (the first matching rule of the policies selecting the
//! pod, by priority), then by NetworkPolicy when one isolates the pod, then by the Baseline
//! tier, then allowed. Pass skips the rest of its tier.

use ipnet::IpNet;

use super::names::NamePattern;
use super::{
    admin::{Action, AdminPeer, AdminPolicy, Subject, Tier},
    compiled::{CPort, NamedPorts, SharedLists},
    evaluator::{Evaluator, PodSet, bit, pod_set, set_bit},
    model::{Direction, NamespaceScope},
    ports::PortSet,
    reach::ports_of,
    selector::Selector,
    verdict::{Connection, SideVerdict, TierRuleRef},
};
use crate::inventory::{Inventory, NamespaceId, PodId, Resolved};

/// A compiled admin peer.
#[derive(Debug, Clone, Copy)]
enum Compiled {
    /// Index into [`TierIndex::pod_sets`].
    Pods(u32),
    /// Index into [`TierIndex::node_sets`].
    Nodes(u32),
    /// Index into [`TierIndex::networks`].
    Networks(u32),
    /// Index into [`TierIndex::domains`].
    DomainNames(u32),
}

/// One admin rule as a tier walk reads it, with what it needs in place: the walk's hot path
/// touches no policy.
#[derive(Debug, Clone, Copy)]
struct WalkRule {
    priority: u32,
    policy: u32,
    rule: u32,
    action: Action,
    /// Range in [`TierIndex::ports`]; empty: every port and protocol.
    ports: (u32, u32),
    /// Range in [`TierIndex::walk_peers`].
    peers: (u32, u32),
}

/// The admin policies, indexed against an inventory.
#[derive(Debug, Default)]
pub(super) struct TierIndex {
    /// By tier (Admin, Baseline) and direction (ingress, egress), per pod: the policies
    /// selecting it, by priority, then kind and name.
    selecting: [[SharedLists; 2]; 2],
    /// By tier and direction, per distinct selecting list: its rules' range in `walk`.
    walks: [[Vec<(u32, u32)>; 2]; 2],
    /// The rules of every distinct selecting list, policy after policy, in order.
    walk: Vec<WalkRule>,
    ports: Vec<CPort>,
    walk_peers: Vec<Compiled>,
    /// Per policy: per direction, per rule, per peer.
    peers: Vec<[Vec<Vec<Compiled>>; 2]>,
    pod_sets: Vec<PodSet>,
    node_sets: Vec<Vec<u64>>,
    networks: Vec<Vec<IpNet>>,
    /// The names of each `domainNames` peer.
    domains: Vec<Vec<NamePattern>>,
}

fn tier_index(t: Tier) -> usize {
    match t {
        Tier::Admin => 0,
        Tier::Baseline => 1,
    }
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// What walking a tier gives a side.
pub(super) struct TierWalk {
    /// Accept, Deny, unknown or undefined; `None` when the tier passed or nothing matched.
    pub decided: Option<SideVerdict>,
    /// The Pass rule that sent the side to the next tier.
    pub passed: Option<TierRuleRef>,
}

impl TierIndex {
    pub(super) fn new(inv: &Inventory, admin: &[AdminPolicy], named: &NamedPorts) -> Self {
        let n_pods = inv.pods().len();
        let mut selecting: [[Vec<Vec<u32>>; 2]; 2] =
            std::array::from_fn(|_| std::array::from_fn(|_| vec![Vec::new(); n_pods]));
        let mut order: Vec<u32> = (0..admin.len() as u32).collect();
        order.sort_by_key(|&i| {
            let p = &admin[i as usize];
            (p.priority, p.kind.to_string(), p.name.clone())
        });
        for &pi in &order {
            let p = &admin[pi as usize];
            let (namespaces, pods) = match &p.subject {
                Subject::Namespaces(ns) => (ns, None),
                Subject::Pods { namespaces, pods } => (namespaces, Some(pods)),
            };
            for (nsi, ns) in inv.namespaces().iter().enumerate() {
                if !namespaces.matches(&ns.labels) {
                    continue;
                }
                for &id in inv.pods_in(NamespaceId(nsi as u32)) {
                    let pod = inv.pod(id);
                    if pod.host_network || pods.is_some_and(|s| !s.matches(&pod.labels)) {
                        continue;
                    }
                    let t = tier_index(p.tier);
                    for (d, rules) in [(0, &p.ingress), (1, &p.egress)] {
                        if !rules.is_empty() {
                            selecting[t][d][id.index()].push(pi);
                        }
                    }
                }
            }
        }
        let mut idx = Self {
            selecting: selecting.map(|per_dir| per_dir.map(SharedLists::new)),
            ..Self::default()
        };
        for p in admin {
            let compiled = [&p.ingress, &p.egress].map(|rules| {
                rules
                    .iter()
                    .map(|r| r.peers.iter().map(|peer| idx.compile(inv, peer)).collect())
                    .collect()
            });
            idx.peers.push(compiled);
        }
        for t in 0..2 {
            for d in 0..2 {
                let mut walks = Vec::new();
                let lists = std::mem::take(&mut idx.selecting[t][d]);
                for list in lists.lists() {
                    let start = idx.walk.len() as u32;
                    for &pi in list {
                        idx.push_walk(admin, pi, d, named);
                    }
                    walks.push((start, idx.walk.len() as u32));
                }
                idx.selecting[t][d] = lists;
                idx.walks[t][d] = walks;
            }
        }
        idx
    }

    /// Appends the rules of policy `pi` for direction `d` to the walk table.
    fn push_walk(&mut self, admin: &[AdminPolicy], pi: u32, d: usize, named: &NamedPorts) {
        let p = &admin[pi as usize];
        let rules = if d == 0 { &p.ingress } else { &p.egress };
        for (ri, rule) in rules.iter().enumerate() {
            let ports_start = self.ports.len() as u32;
            self.ports
                .extend(rule.ports.iter().map(|m| named.compile(m)));
            let peers_start = self.walk_peers.len() as u32;
            self.walk_peers
                .extend_from_slice(&self.peers[pi as usize][d][ri]);
            self.walk.push(WalkRule {
                priority: p.priority,
                policy: pi,
                rule: ri as u32,
                action: rule.action,
                ports: (ports_start, self.ports.len() as u32),
                peers: (peers_start, self.walk_peers.len() as u32),
            });
        }
    }

    fn compile(&mut self, inv: &Inventory, peer: &AdminPeer) -> Compiled {
        let everything = Selector::everything();
        let (namespaces, pods) = match peer {
            AdminPeer::Namespaces(ns) => (ns, &everything),
            AdminPeer::Pods { namespaces, pods } => (namespaces, pods),
            AdminPeer::Nodes(sel) => {
                let mut bits = vec![0u64; inv.nodes().len().div_ceil(64).max(1)];
                for (i, n) in inv.nodes().iter().enumerate() {
                    if sel.matches(&n.labels) {
                        set_bit(&mut bits, i);
                    }
                }
                self.node_sets.push(bits);
                return Compiled::Nodes(self.node_sets.len() as u32 - 1);
            }
            AdminPeer::Networks(nets) => {
                self.networks.push(nets.clone());
                return Compiled::Networks(self.networks.len() as u32 - 1);
            }
            AdminPeer::DomainNames(names) => {
                // Validated when the policy was read: every entry compiles.
                self.domains.push(
                    names
                        .iter()
                        .filter_map(|n| NamePattern::domain_name(n).ok())
                        .collect(),
                );
                return Compiled::DomainNames(self.domains.len() as u32 - 1);
            }
        };
        let set = pod_set(inv, &NamespaceScope::Selector(namespaces.clone()), pods);
        self.pod_sets.push(set);
        Compiled::Pods(self.pod_sets.len() as u32 - 1)
    }

    /// The policies selecting `pod` in a tier for a direction, in walk order.
    fn selecting(&self, tier: Tier, direction: Direction, pod: PodId) -> &[u32] {
        self.selecting[tier_index(tier)][dir_index(direction)].get(pod)
    }

    /// The rules of the policies selecting `pod` in a tier for a direction, in walk order.
    fn walk(&self, tier: Tier, direction: Direction, pod: PodId) -> &[WalkRule] {
        let (t, d) = (tier_index(tier), dir_index(direction));
        let list = self.selecting[t][d].id(pod);
        self.walks[t][d]
            .get(list as usize)
            .map_or(&[], |&(a, b)| &self.walk[a as usize..b as usize])
    }
}

/// How a rule's peers match an end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerMatch {
    No,
    Yes,
    /// Only through a `domainNames` peer, whose names are not known.
    Unknown,
}

impl Evaluator<'_> {
    /// Walks one tier for one side of `c`, `pod` being the end the side belongs to: by
    /// priority, the first matching rule of each policy of that priority. Two that disagree
    /// make the side undefined.
    pub(super) fn tier_walk(
        &self,
        tier: Tier,
        direction: Direction,
        pod: PodId,
        c: &Connection,
    ) -> TierWalk {
        let mut out = TierWalk {
            decided: None,
            passed: None,
        };
        let idx = self.tiers();
        let rules = idx.walk(tier, direction, pod);
        if rules.is_empty() {
            return out;
        }
        let end = match direction {
            Direction::Egress => c.dst,
            Direction::Ingress => c.src,
        };
        let named = self.dst_named(c);
        let mut i = 0;
        while i < rules.len() {
            let priority = rules[i].priority;
            // The first matching rule of each policy of this priority, and the first that
            // disagrees with it (no allocation: this is the evaluator's hot path).
            let mut first: Option<(TierRuleRef, bool)> = None;
            let mut other: Option<TierRuleRef> = None;
            let mut matched_policy = u32::MAX;
            while i < rules.len() && rules[i].priority == priority {
                let r = &rules[i];
                i += 1;
                if r.policy == matched_policy {
                    continue;
                }
                let (a, b) = r.ports;
                if a != b
                    && !idx.ports[a as usize..b as usize]
                        .iter()
                        .any(|m| m.matches(c.protocol, c.port, named))
                {
                    continue;
                }
                let (a, b) = r.peers;
                let m =
                    self.peers_match(&idx.walk_peers[a as usize..b as usize], &end, c.dst_names);
                if m == PeerMatch::No {
                    continue;
                }
                matched_policy = r.policy;
                let found = TierRuleRef {
                    tier,
                    policy: r.policy,
                    rule: r.rule,
                    action: r.action,
                };
                let unknown = m == PeerMatch::Unknown;
                match first {
                    None => first = Some((found, unknown)),
                    Some((f, fu))
                        if other.is_none() && (found.action != f.action || unknown != fu) =>
                    {
                        other = Some(found);
                    }
                    Some(_) => {}
                }
            }
            let Some((first, unknown)) = first else {
                continue;
            };
            if let Some(other) = other {
                out.decided = Some(SideVerdict::Undefined(first, other));
                return out;
            }
            if unknown {
                out.decided = Some(SideVerdict::Unknown(first));
            } else if first.action == Action::Pass {
                out.passed = Some(first);
            } else {
                out.decided = Some(SideVerdict::Tier(first));
            }
            return out;
        }
        out
    }

    /// How a rule's peers match `end`: any peer matching is a match; else a `domainNames`
    /// peer for an external end whose names are not known is unknown.
    fn peers_match(&self, peers: &[Compiled], end: &Resolved, names: &[String]) -> PeerMatch {
        let mut matched = PeerMatch::No;
        for &m in peers {
            match self.admin_peer_matches(m, end, names) {
                PeerMatch::Yes => return PeerMatch::Yes,
                PeerMatch::Unknown => matched = PeerMatch::Unknown,
                PeerMatch::No => {}
            }
        }
        matched
    }

    fn admin_peer_matches(&self, m: Compiled, end: &Resolved, names: &[String]) -> PeerMatch {
        let inv = self.inventory();
        let idx = self.tiers();
        let yes = |b: bool| if b { PeerMatch::Yes } else { PeerMatch::No };
        match m {
            Compiled::Pods(set) => yes(self.in_pod_set(&idx.pod_sets[set as usize], end)),
            Compiled::Nodes(set) => {
                let node = match *end {
                    Resolved::Host { node: Some(n), .. } => Some(n),
                    Resolved::Host { ip: Some(ip), .. } => inv.node_by_ip(ip),
                    _ => None,
                };
                yes(node.is_some_and(|n| bit(&idx.node_sets[set as usize], n.index())))
            }
            Compiled::Networks(nets) => yes(end
                .ip()
                .is_some_and(|ip| idx.networks[nets as usize].iter().any(|n| n.contains(&ip)))),
            Compiled::DomainNames(_) if !matches!(end, Resolved::External(_)) => PeerMatch::No,
            Compiled::DomainNames(_) if names.is_empty() => PeerMatch::Unknown,
            Compiled::DomainNames(d) => {
                yes(idx.domains[d as usize].iter().any(|p| p.matches_any(names)))
            }
        }
    }

    /// A side of a pod, through the tiers: Admin, NetworkPolicy, Baseline, then allowed.
    pub(super) fn layered_side(
        &self,
        direction: Direction,
        pod: PodId,
        c: &Connection,
    ) -> SideVerdict {
        if self.admin_policies().is_empty() {
            return self.side(direction, pod, c);
        }
        if let Some(v) = self.tier_walk(Tier::Admin, direction, pod, c).decided {
            return v;
        }
        let v = self.side(direction, pod, c);
        if v != SideVerdict::NotIsolated {
            return v;
        }
        self.tier_walk(Tier::Baseline, direction, pod, c)
            .decided
            .unwrap_or(SideVerdict::NotIsolated)
    }
}

/// Ports of one side, sorted by what the tiers do with them.
#[derive(Default)]
struct PortFate {
    accepted: PortSet,
    passed: PortSet,
}

impl Evaluator<'_> {
    /// The ports a side allows, through the tiers (see [`Evaluator::layered_side`]): for each
    /// port, the same decision [`Evaluator::evaluate`] makes. Ports two equal-priority
    /// policies disagree on, and ports reached through unknown domain names, are not allowed.
    pub(super) fn layered_ports(
        &self,
        direction: Direction,
        pod: PodId,
        c: &Connection,
    ) -> PortSet {
        let np = || self.side_ports(direction, pod, c);
        if self.admin_policies().is_empty() {
            return np().unwrap_or_else(PortSet::all);
        }
        let (admin, rest) = self.tier_ports(Tier::Admin, direction, pod, c, PortSet::all());
        let undecided = rest.union(&admin.passed);
        if let Some(n) = np() {
            return admin.accepted.union(&undecided.intersect(&n));
        }
        let (baseline, rest) = self.tier_ports(Tier::Baseline, direction, pod, c, undecided);
        admin
            .accepted
            .union(&baseline.accepted)
            .union(&baseline.passed)
            .union(&rest)
    }

    /// Walks a tier over the ports `open`: what it accepts and passes, and what it leaves
    /// undecided.
    fn tier_ports(
        &self,
        tier: Tier,
        direction: Direction,
        pod: PodId,
        c: &Connection,
        mut open: PortSet,
    ) -> (PortFate, PortSet) {
        let mut fate = PortFate::default();
        let idx = self.tiers();
        let list = idx.selecting(tier, direction, pod);
        let (end, dst_ports) = self.peer_and_ports(direction, c);
        let admin = self.admin_policies();
        let mut i = 0;
        while i < list.len() && !open.is_empty() {
            let priority = admin[list[i] as usize].priority;
            let j = i + list[i..]
                .iter()
                .take_while(|&&p| admin[p as usize].priority == priority)
                .count();
            // Per action, the ports the group's policies give it (each policy's rules in
            // order, each port to its first matching rule).
            let (mut acc, mut deny, mut pass) =
                (PortSet::empty(), PortSet::empty(), PortSet::empty());
            for &pi in &list[i..j] {
                let p = &admin[pi as usize];
                let compiled = &idx.peers[pi as usize][dir_index(direction)];
                let mut left = open.clone();
                for (ri, rule) in p.rules(direction).iter().enumerate() {
                    let m = self.peers_match(&compiled[ri], &end, c.dst_names);
                    if m == PeerMatch::No {
                        continue;
                    }
                    let hit = left.intersect(&ports_of(&rule.ports, dst_ports));
                    left = left.minus(&hit);
                    match (m, rule.action) {
                        (PeerMatch::Unknown, _) | (_, Action::Deny) => deny = deny.union(&hit),
                        (_, Action::Accept) => acc = acc.union(&hit),
                        (_, Action::Pass) => pass = pass.union(&hit),
                    }
                }
            }
            let conflict = acc
                .intersect(&deny)
                .union(&acc.intersect(&pass))
                .union(&deny.intersect(&pass));
            fate.accepted = fate.accepted.union(&acc.minus(&conflict));
            fate.passed = fate.passed.union(&pass.minus(&conflict));
            open = open.minus(&acc.union(&deny).union(&pass));
            i = j;
        }
        (fate, open)
    }
}

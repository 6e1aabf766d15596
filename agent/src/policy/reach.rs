//! Reachability as port sets: every port and protocol one end may open to another, for the
//! matrix and for learning. Consistent with [`Evaluator::evaluate`]: a connection is allowed
//! exactly when its protocol and port are in the set.

use super::{
    evaluator::Evaluator,
    model::{Direction, PortMatcher, PortSpec},
    ports::{PortRanges, PortSet},
    verdict::Connection,
};
use crate::{
    flow::Protocol,
    inventory::{ContainerPort, PodId, Resolved},
};

impl Evaluator<'_> {
    /// Every port and protocol on which `src` may open connections to `dst`.
    pub fn allowed_ports(&self, src: &Resolved, dst: &Resolved) -> PortSet {
        self.allowed_ports_between(src, dst, true)
    }

    /// Like [`Evaluator::allowed_ports`]; with `self_exempt` false, a pod to itself stands for
    /// two pods alike (two replicas), which policies decide.
    pub fn allowed_ports_between(
        &self,
        src: &Resolved,
        dst: &Resolved,
        self_exempt: bool,
    ) -> PortSet {
        self.allowed_ports_named(src, dst, self_exempt, &[])
    }

    /// Like [`Evaluator::allowed_ports_between`], to a destination the source knows by these
    /// DNS names (for `toFQDNs` and `domainNames`).
    pub fn allowed_ports_named(
        &self,
        src: &Resolved,
        dst: &Resolved,
        self_exempt: bool,
        names: &[String],
    ) -> PortSet {
        let probe = Connection {
            src: *src,
            dst: *dst,
            protocol: Protocol::Tcp,
            port: None,
            dst_names: names,
        };
        if self_exempt && self.self_traffic(&probe).is_some() {
            return PortSet::all();
        }
        let egress = match *src {
            Resolved::Pod { pod, .. } => self.layered_ports(Direction::Egress, pod, &probe),
            _ => PortSet::all(),
        };
        if egress.is_empty() {
            return egress;
        }
        let ingress = match *dst {
            Resolved::Pod { pod, .. } if !self.is_local_node(src, pod) => {
                self.layered_ports(Direction::Ingress, pod, &probe)
            }
            _ => PortSet::all(),
        };
        egress.intersect(&ingress)
    }

    /// The NetworkPolicy tier's ports of a side; `None` when no NetworkPolicy isolates it.
    pub(super) fn side_ports(
        &self,
        direction: Direction,
        pod: PodId,
        c: &Connection,
    ) -> Option<PortSet> {
        let selecting = self.selecting(direction, pod);
        if selecting.is_empty() {
            return None;
        }
        let (peer, dst_ports) = self.peer_and_ports(direction, c);
        let mut out = PortSet::empty();
        for &pi in selecting {
            let rules = self.policies()[pi as usize]
                .rules(direction)
                .unwrap_or_default();
            for (ri, rule) in rules.iter().enumerate() {
                let pc = super::evaluator::PeerContext {
                    subject: pod,
                    names: c.dst_names,
                };
                if self.peer_match(pi, direction, ri, &peer, pc).is_some() {
                    out = out.union(&ports_of(&rule.ports, dst_ports));
                }
            }
        }
        Some(out)
    }
}

/// The ports a rule's port list names towards a destination with these container ports (an
/// empty list: all).
pub(super) fn ports_of(ports: &[PortMatcher], dst_ports: &[ContainerPort]) -> PortSet {
    if ports.is_empty() {
        return PortSet::all();
    }
    let mut out = PortSet::empty();
    for m in ports {
        let ranges = match &m.port {
            PortSpec::All => PortRanges::all(),
            PortSpec::Range { start, end } => PortRanges::range(*start, *end),
            PortSpec::Named(name) => match m.resolve(name, dst_ports) {
                Some(p) => PortRanges::range(p, p),
                None => continue,
            },
        };
        out = out.union(&PortSet::of(m.protocol, ranges));
    }
    out
}

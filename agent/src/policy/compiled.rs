//! The evaluator's hot-path forms, built once per index: port matchers with a named port's name
//! interned, every pod's named container ports in one flat table, and per-pod lists shared
//! between the pods that have the same one. A verdict then reads small contiguous arrays
//! instead of following pointers into the policies, the pods and their strings. Pure.

use std::collections::HashMap;

use super::model::{PortMatcher, PortSpec};
use crate::{
    flow::Protocol,
    inventory::{Inventory, PodId},
};

/// A container port with a name, the name interned.
#[derive(Debug, Clone, Copy)]
pub(super) struct NamedPort {
    name: u32,
    protocol: Protocol,
    port: u16,
}

/// The name of no container port: a matcher naming it never matches.
const UNKNOWN_NAME: u32 = u32::MAX;

/// Every pod's named container ports, in their declared order, with interned names.
#[derive(Debug, Default)]
pub(super) struct NamedPorts {
    names: HashMap<String, u32>,
    /// Per pod: its range in `ports`.
    of: Vec<(u32, u32)>,
    ports: Vec<NamedPort>,
}

impl NamedPorts {
    pub(super) fn new(inv: &Inventory) -> Self {
        let mut np = Self::default();
        for pod in inv.pods() {
            let start = np.ports.len() as u32;
            for cp in &pod.ports {
                let Some(name) = &cp.name else {
                    continue;
                };
                let next = np.names.len() as u32;
                let id = *np.names.entry(name.clone()).or_insert(next);
                np.ports.push(NamedPort {
                    name: id,
                    protocol: cp.protocol,
                    port: cp.port,
                });
            }
            np.of.push((start, np.ports.len() as u32));
        }
        np
    }

    /// A pod's named ports.
    pub(super) fn of(&self, pod: PodId) -> &[NamedPort] {
        self.of
            .get(pod.index())
            .map_or(&[], |&(a, b)| &self.ports[a as usize..b as usize])
    }

    /// A matcher, compiled.
    pub(super) fn compile(&self, m: &PortMatcher) -> CPort {
        let kind = match &m.port {
            PortSpec::All => CPortKind::All,
            PortSpec::Range { start, end } => CPortKind::Range(*start, *end),
            PortSpec::Named(n) => {
                CPortKind::Named(self.names.get(n).copied().unwrap_or(UNKNOWN_NAME))
            }
        };
        CPort {
            protocol: m.protocol,
            kind,
        }
    }
}

/// A compiled [`PortMatcher`]: the same decision, from the destination's [`NamedPort`]s.
#[derive(Debug, Clone, Copy)]
pub(super) struct CPort {
    protocol: Protocol,
    kind: CPortKind,
}

#[derive(Debug, Clone, Copy)]
enum CPortKind {
    All,
    Range(u16, u16),
    Named(u32),
}

impl CPort {
    /// As [`PortMatcher::matches`]: a named port resolves to the destination's first container
    /// port with that name and the matcher's protocol.
    #[inline]
    pub(super) fn matches(
        &self,
        protocol: Protocol,
        port: Option<u16>,
        named: &[NamedPort],
    ) -> bool {
        if protocol != self.protocol {
            return false;
        }
        match (self.kind, port) {
            (CPortKind::All, _) => true,
            (_, None) => false,
            (CPortKind::Range(s, e), Some(p)) => s <= p && p <= e,
            (CPortKind::Named(n), Some(p)) => named
                .iter()
                .find(|np| np.name == n && np.protocol == self.protocol)
                .is_some_and(|np| np.port == p),
        }
    }
}

/// Per-pod lists (of policies, say), each distinct list stored once: pods of one workload, or
/// of one namespace, usually share theirs.
#[derive(Debug, Default)]
pub(super) struct SharedLists {
    /// Per pod: an index into `lists`; 0 is the empty list.
    of: Vec<u32>,
    lists: Vec<Vec<u32>>,
}

impl SharedLists {
    pub(super) fn new(per_pod: Vec<Vec<u32>>) -> Self {
        let mut ids: HashMap<Vec<u32>, u32> = HashMap::from([(Vec::new(), 0)]);
        let mut lists = vec![Vec::new()];
        let of = per_pod
            .into_iter()
            .map(|l| {
                *ids.entry(l).or_insert_with_key(|l| {
                    lists.push(l.clone());
                    lists.len() as u32 - 1
                })
            })
            .collect();
        Self { of, lists }
    }

    pub(super) fn get(&self, pod: PodId) -> &[u32] {
        self.of
            .get(pod.index())
            .map_or(&[], |&i| self.lists[i as usize].as_slice())
    }

    /// The list's index (0: empty), for tables kept per distinct list.
    pub(super) fn id(&self, pod: PodId) -> u32 {
        self.of.get(pod.index()).copied().unwrap_or(0)
    }

    /// The distinct lists, by index.
    pub(super) fn lists(&self) -> &[Vec<u32>] {
        &self.lists
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::inventory::Manifests;

    #[test]
    fn compiled_matchers_decide_as_the_model_does() {
        let mut m = Manifests::new();
        m.add_text(
            Path::new("pod.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec:\n  containers:\n  \
             - {name: c, ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, \
             protocol: UDP}, {name: http, containerPort: 9090}]}\nstatus: {podIP: 198.18.0.1}\n",
        )
        .expect("manifest");
        let inv = m.finish().inventory;
        let ports = inv.pod(PodId(0)).ports.clone();
        assert_eq!(ports.len(), 3);
        let named = NamedPorts::new(&inv);
        let pod = named.of(PodId(0));
        let matchers = [
            PortMatcher {
                protocol: Protocol::Tcp,
                port: PortSpec::All,
            },
            PortMatcher {
                protocol: Protocol::Udp,
                port: PortSpec::Range { start: 50, end: 60 },
            },
            PortMatcher {
                protocol: Protocol::Tcp,
                port: PortSpec::Named("http".into()),
            },
            PortMatcher {
                protocol: Protocol::Tcp,
                port: PortSpec::Named("dns".into()),
            },
            PortMatcher {
                protocol: Protocol::Udp,
                port: PortSpec::Named("dns".into()),
            },
            PortMatcher {
                protocol: Protocol::Tcp,
                port: PortSpec::Named("nowhere".into()),
            },
        ];
        for m in &matchers {
            let c = named.compile(m);
            for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
                for port in [None, Some(53), Some(55), Some(8080), Some(9090)] {
                    assert_eq!(
                        c.matches(protocol, port, pod),
                        m.matches(protocol, port, &ports),
                        "{m} against {protocol} {port:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn equal_lists_are_stored_once() {
        let l = SharedLists::new(vec![vec![1, 2], vec![], vec![1, 2], vec![3]]);
        assert_eq!(l.lists().len(), 3, "the empty list and two others");
        assert_eq!(l.get(PodId(2)), [1, 2]);
        assert_eq!(l.id(PodId(0)), l.id(PodId(2)));
        assert_eq!(l.get(PodId(1)), [] as [u32; 0]);
        assert_eq!(l.get(PodId(9)), [] as [u32; 0]);
    }
}

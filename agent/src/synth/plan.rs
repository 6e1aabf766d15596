//! Planning: which rules a workload's policy needs. Edges become (peer, port) pairs per
//! direction; peers with the same port set share one rule, so each peer appears in exactly
//! one rule per direction and the rule set allows exactly the observed pairs.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::{Context, SynthOptions};
use crate::{
    flow::Protocol,
    graph::{Edge, FlowGraph},
    identity::{Peer, WorkloadRef},
    policy::{Direction, Selector},
};

/// A `from`/`to` entry, in the order rules list them: same-namespace pods, pods of other
/// namespaces, then ipBlocks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RenderPeer {
    /// Pods matching `selector`, in the policy's namespace (`None`) or the one named.
    Pods {
        namespace: Option<String>,
        selector: Selector,
    },
    /// Addresses in `cidr` minus `except` (the cluster CIDRs inside it).
    Block { cidr: IpNet, except: Vec<IpNet> },
}

/// A `ports` entry: a number, or the destination's container port name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortItem {
    Number(Protocol, u16),
    Named(Protocol, String),
}

/// What a peer of a rule stands for beyond its address, for the Cilium format and for grouping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// DNS names the workload's connections to it were made to (externals only).
    pub names: BTreeSet<String>,
    /// A node (or a host-network pod): Cilium matches it by entity, never by CIDR.
    pub node: bool,
    /// The API server (an endpoint of Service default/kubernetes).
    pub apiserver: bool,
}

/// One rule: every peer may use every port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleSpec {
    pub peers: Vec<RenderPeer>,
    pub ports: Vec<PortItem>,
}

/// One observed edge behind a (peer, port) pair of a direction.
#[derive(Clone, Debug)]
pub(super) struct EdgeNote {
    pub direction: Direction,
    pub peer: RenderPeer,
    pub graph_peer: String,
    pub port: String,
    pub count: u64,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    /// UDP that never got a packet back (its first connection was one-way).
    pub one_way: bool,
    /// The DNS names of an external destination.
    pub names: Vec<String>,
}

/// The rules of one workload's policy.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub workload: WorkloadRef,
    pub namespace: String,
    pub selector: Selector,
    pub ingress: Vec<RuleSpec>,
    pub egress: Vec<RuleSpec>,
    pub notes: Vec<EdgeNote>,
    /// What the address peers stand for.
    pub info: BTreeMap<RenderPeer, PeerInfo>,
}

#[derive(Debug, Default)]
pub(super) struct Plans {
    pub policies: Vec<Plan>,
    pub warnings: Vec<String>,
}

#[derive(Default)]
struct Draft {
    ingress: BTreeMap<RenderPeer, BTreeSet<PortItem>>,
    egress: BTreeMap<RenderPeer, BTreeSet<PortItem>>,
    notes: Vec<EdgeNote>,
    info: BTreeMap<RenderPeer, PeerInfo>,
}

fn host_net(ip: std::net::IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// The block an external address is allowed through: its /32 or /128, or the summary the
/// options ask for, minus the cluster CIDRs inside it; never a block inside a cluster CIDR.
fn external_block(ip: std::net::IpAddr, ctx: &Context<'_>, opts: &SynthOptions) -> RenderPeer {
    let prefix = if ip.is_ipv4() {
        opts.cidr_prefix_v4
    } else {
        opts.cidr_prefix_v6
    };
    let host = host_net(ip);
    let net = prefix
        .and_then(|p| IpNet::new(ip, p.min(host.max_prefix_len())).ok())
        .map(|n| n.trunc())
        .filter(|n| !ctx.cluster_cidrs.iter().any(|c| c.contains(n)))
        .unwrap_or(host);
    let mut except: Vec<IpNet> = ctx
        .cluster_cidrs
        .iter()
        .filter(|c| net.contains(*c) && **c != net)
        .copied()
        .collect();
    except.sort();
    except.dedup();
    RenderPeer::Block { cidr: net, except }
}

/// The cluster DNS pods' labels as a selector.
fn dns_selector(opts: &SynthOptions) -> Selector {
    Selector::from_labels(
        opts.dns_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// The cluster DNS as a peer of a policy in `subject_ns`.
pub(super) fn dns_peer(subject_ns: &str, opts: &SynthOptions) -> RenderPeer {
    RenderPeer::Pods {
        namespace: (subject_ns != opts.dns_namespace).then(|| opts.dns_namespace.clone()),
        selector: dns_selector(opts),
    }
}

fn wants_policy(w: &WorkloadRef, opts: &SynthOptions) -> bool {
    !opts.skip_namespaces.contains(&w.namespace)
        && (opts.only_namespaces.is_empty() || opts.only_namespaces.contains(&w.namespace))
}

fn port_text(protocol: Protocol, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{p}/{protocol}"),
        None => protocol.to_string(),
    }
}

/// Plans every subject workload's policy.
pub(super) fn plan(ctx: &Context<'_>, graph: &FlowGraph, opts: &SynthOptions) -> Plans {
    let mut out = Plans::default();
    let mut drafts: BTreeMap<WorkloadRef, Draft> = BTreeMap::new();
    let mut warned: BTreeSet<String> = BTreeSet::new();
    let apiserver = ctx.identities.inventory().apiserver_ips();
    // The workloads of the cluster DNS pods: when they get policies too, their ingress must
    // let in the lookups learned as "to the cluster DNS".
    let dns_workloads: Vec<WorkloadRef> = {
        let inv = ctx.identities.inventory();
        let sel = dns_selector(opts);
        let mut v: Vec<WorkloadRef> = inv
            .namespace_id(&opts.dns_namespace)
            .map(|ns| inv.pods_in(ns).to_vec())
            .unwrap_or_default()
            .into_iter()
            .filter(|&p| !inv.pod(p).host_network && sel.matches(&inv.pod(p).labels))
            .map(|p| ctx.identities.workload_of(p))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let mut warn = |w: String| {
        if warned.insert(w.clone()) {
            out.warnings.push(w);
        }
    };
    let dns_peer = |subject_ns: &str| dns_peer(subject_ns, opts);

    for e in graph.edges() {
        for direction in [Direction::Egress, Direction::Ingress] {
            let (subject, other) = match direction {
                Direction::Egress => (e.src, e.dst),
                Direction::Ingress => (e.dst, e.src),
            };
            let subjects: Vec<&WorkloadRef> = match subject {
                Peer::Workload(w) => vec![w],
                Peer::ClusterDns => dns_workloads.iter().collect(),
                _ => Vec::new(),
            };
            for w in subjects {
                if !wants_policy(w, opts) {
                    continue;
                }
                let Some(choice) = ctx.selectors.get(w) else {
                    warn(format!(
                        "{w}: no pod of this workload on the pod network is in the manifests; no policy learned for it"
                    ));
                    continue;
                };
                if !e.protocol.has_ports() {
                    warn(format!(
                        "{} -> {} {}: NetworkPolicy cannot allow ICMP without allowing every port; not allowed",
                        e.src, e.dst, e.protocol
                    ));
                    continue;
                }
                let Some(port) = e.port else {
                    warn(format!(
                        "{} -> {} {}: no port recorded; not allowed",
                        e.src, e.dst, e.protocol
                    ));
                    continue;
                };
                let (peer, ports) = match other {
                    // A lookup, seen from the DNS pods' side: in from the client on 53.
                    _ if subject == &Peer::ClusterDns => {
                        let peer = match other {
                            Peer::Workload(o) => match ctx.selectors.get(o) {
                                Some(oc) => RenderPeer::Pods {
                                    namespace: (o.namespace != w.namespace)
                                        .then(|| o.namespace.clone()),
                                    selector: oc.selector.clone(),
                                },
                                None => continue,
                            },
                            Peer::Node { ip, .. } => RenderPeer::Block {
                                cidr: host_net(*ip),
                                except: Vec::new(),
                            },
                            Peer::External(ip) => external_block(*ip, ctx, opts),
                            Peer::ClusterDns => continue,
                        };
                        (
                            peer,
                            vec![
                                PortItem::Number(Protocol::Udp, 53),
                                PortItem::Number(Protocol::Tcp, 53),
                            ],
                        )
                    }
                    Peer::ClusterDns => (
                        dns_peer(&w.namespace),
                        vec![
                            PortItem::Number(Protocol::Udp, 53),
                            PortItem::Number(Protocol::Tcp, 53),
                        ],
                    ),
                    Peer::Workload(o) => {
                        let Some(oc) = ctx.selectors.get(o) else {
                            warn(format!(
                                "{o}: not in the manifests with pods on the pod network; its connections with {w} are not allowed"
                            ));
                            continue;
                        };
                        if !oc.overlaps.is_empty() {
                            let names: Vec<String> =
                                oc.overlaps.iter().map(ToString::to_string).collect();
                            warn(format!(
                                "{o}: its selector {} also selects pods of {}; rules naming it allow those too",
                                oc.selector,
                                names.join(", ")
                            ));
                        }
                        let peer = RenderPeer::Pods {
                            namespace: (o.namespace != w.namespace).then(|| o.namespace.clone()),
                            selector: oc.selector.clone(),
                        };
                        let dst_choice = match direction {
                            Direction::Egress => oc,
                            Direction::Ingress => choice,
                        };
                        (peer, vec![port_item(&e, port, Some(dst_choice))])
                    }
                    Peer::Node { ip, .. } => {
                        let dst_choice = (direction == Direction::Ingress).then_some(choice);
                        (
                            RenderPeer::Block {
                                cidr: host_net(*ip),
                                except: Vec::new(),
                            },
                            vec![port_item(&e, port, dst_choice)],
                        )
                    }
                    Peer::External(ip) => {
                        let dst_choice = (direction == Direction::Ingress).then_some(choice);
                        (
                            external_block(*ip, ctx, opts),
                            vec![port_item(&e, port, dst_choice)],
                        )
                    }
                };
                let d = drafts.entry(w.clone()).or_default();
                let names: Vec<String> = match (direction, other) {
                    (Direction::Egress, Peer::External(_)) => e.stats.names.clone(),
                    _ => Vec::new(),
                };
                if let Peer::Node { ip, .. } | Peer::External(ip) = other {
                    let info = d.info.entry(peer.clone()).or_default();
                    info.names.extend(names.iter().cloned());
                    info.node |= matches!(other, Peer::Node { .. });
                    info.apiserver |= apiserver.contains(ip);
                }
                let map = match direction {
                    Direction::Egress => &mut d.egress,
                    Direction::Ingress => &mut d.ingress,
                };
                map.entry(peer.clone()).or_default().extend(ports);
                d.notes.push(EdgeNote {
                    direction,
                    peer,
                    graph_peer: other.to_string(),
                    port: port_text(e.protocol, e.port),
                    count: e.stats.count,
                    first_seen: e.stats.first_seen,
                    last_seen: e.stats.last_seen,
                    one_way: e.stats.sample.outcome == Some(crate::flow::Outcome::OneWay),
                    names,
                });
            }
        }
    }

    for (w, d) in drafts {
        let choice = ctx
            .selectors
            .get(&w)
            .expect("drafts only for workloads with selectors");
        if !choice.overlaps.is_empty() {
            let names: Vec<String> = choice.overlaps.iter().map(ToString::to_string).collect();
            warn(format!(
                "{w}: no label selector tells its pods from those of {}; its policy applies to them too (give the workloads distinct labels)",
                names.join(", ")
            ));
        }
        out.policies.push(Plan {
            namespace: w.namespace.clone(),
            selector: choice.selector.clone(),
            ingress: group(d.ingress, &d.info),
            egress: group(d.egress, &d.info),
            notes: d.notes,
            info: d.info,
            workload: w,
        });
    }
    out
}

/// The port of an edge as a rule lists it: the destination's port name when all its pods
/// agree on one, else the number.
fn port_item(e: &Edge<'_>, port: u16, dst: Option<&crate::identity::SelectorChoice>) -> PortItem {
    match dst.and_then(|c| c.port_names.get(&(e.protocol, port))) {
        Some(name) => PortItem::Named(e.protocol, name.clone()),
        None => PortItem::Number(e.protocol, port),
    }
}

/// Peers with the same port set share a rule, except that addresses known by DNS names get
/// rules of their own, one per set of names (so a rule reads as "api.payments.example, on
/// 443", whichever addresses the name had); rules sorted by their peers.
pub(super) fn group(
    pairs: BTreeMap<RenderPeer, BTreeSet<PortItem>>,
    info: &BTreeMap<RenderPeer, PeerInfo>,
) -> Vec<RuleSpec> {
    type Key = (BTreeSet<PortItem>, BTreeSet<String>);
    let mut by_ports: BTreeMap<Key, Vec<RenderPeer>> = BTreeMap::new();
    for (peer, ports) in pairs {
        let names = info.get(&peer).map(|i| i.names.clone()).unwrap_or_default();
        by_ports.entry((ports, names)).or_default().push(peer);
    }
    let mut rules: Vec<RuleSpec> = by_ports
        .into_iter()
        .map(|((ports, _), peers)| RuleSpec {
            peers,
            ports: ports.into_iter().collect(),
        })
        .collect();
    rules.sort();
    rules
}

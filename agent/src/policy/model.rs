//! The validated NetworkPolicy model. Defaulting is already applied: a direction that does not
//! apply is `None`, and an empty peer or port list means "all", as in the API.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
use serde::Serialize;

use super::{names::NamePattern, selector::Selector};
use crate::{flow::Protocol, inventory::ContainerPort};

/// One NetworkPolicy (networking.k8s.io/v1) or CiliumNetworkPolicy (cilium.io/v2), validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub namespace: String,
    pub name: String,
    /// The pods of `namespace` the policy applies to.
    pub pod_selector: Selector,
    /// `Some` when the policy isolates the selected pods for ingress (`policyTypes`, defaulted);
    /// then these rules are what it allows. `Some(vec![])` denies all ingress.
    pub ingress: Option<Vec<Rule>>,
    /// `Some` when the policy isolates the selected pods for egress.
    pub egress: Option<Vec<Rule>>,
}

/// The kinds of namespaced policy the evaluator reads. Both allow only, and both isolate the
/// pods they select in the directions they have rules for; they differ in the peers they name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PolicyKind {
    #[default]
    NetworkPolicy,
    CiliumNetworkPolicy,
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NetworkPolicy => "NetworkPolicy",
            Self::CiliumNetworkPolicy => "CiliumNetworkPolicy",
        })
    }
}

/// The two directions a policy can isolate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// One ingress or egress rule: it matches a connection when a peer matches the other end and a
/// port matches the destination port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// `from` or `to`. Empty matches every peer.
    pub peers: Vec<Peer>,
    /// Empty matches every port and protocol.
    pub ports: Vec<PortMatcher>,
}

/// A `from`/`to` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Pods matching `pods` in the namespaces of `namespaces`. Host-network pods, nodes and
    /// external addresses never match.
    Pods {
        namespaces: NamespaceScope,
        pods: Selector,
    },
    /// Addresses in a CIDR, minus exceptions.
    IpBlock(IpBlock),
    /// Cilium `toCIDR`/`toCIDRSet` (and `from…`): addresses outside the cluster only; pods and
    /// nodes have identities of their own and never match.
    Cidr(IpBlock),
    /// Cilium `toFQDNs`: a destination outside the cluster that the source resolved to a
    /// matching name before connecting.
    Fqdn(NamePattern),
    /// Cilium `toEntities`/`fromEntities`.
    Entity(CiliumEntity),
}

/// The Cilium entities the evaluator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CiliumEntity {
    /// Outside the cluster.
    World,
    /// Pods and nodes.
    Cluster,
    /// The node the selected pod runs on.
    Host,
    /// Any other node.
    RemoteNode,
    /// The API server's addresses (the endpoints of Service default/kubernetes).
    KubeApiserver,
    /// Everything.
    All,
    /// Nothing.
    None,
}

impl CiliumEntity {
    /// The entity of a `toEntities` value; `None` for entities the evaluator cannot place.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "world" => Self::World,
            "cluster" => Self::Cluster,
            "host" => Self::Host,
            "remote-node" => Self::RemoteNode,
            "kube-apiserver" => Self::KubeApiserver,
            "all" => Self::All,
            "none" => Self::None,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::World => "world",
            Self::Cluster => "cluster",
            Self::Host => "host",
            Self::RemoteNode => "remote-node",
            Self::KubeApiserver => "kube-apiserver",
            Self::All => "all",
            Self::None => "none",
        }
    }
}

/// Which namespaces a pod peer looks in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamespaceScope {
    /// One namespace by name: the policy's own, when the peer has no `namespaceSelector`.
    Named(String),
    /// Namespaces whose labels match.
    Selector(Selector),
}

/// An `ipBlock`: `cidr` minus every `except`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IpBlock {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

impl IpBlock {
    /// Whether the address is in the block. Addresses of the other IP family never are.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

/// A `ports` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortMatcher {
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    pub port: PortSpec,
}

/// Which ports of the protocol match.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// No `port`: every port of the protocol.
    All,
    /// `port`, or `port`..=`endPort`.
    Range { start: u16, end: u16 },
    /// A container port name, resolved against the destination pod.
    Named(String),
}

impl PortMatcher {
    /// Whether a connection to `port` over `protocol` matches, given the destination's container
    /// ports (empty when the destination is not a pod). Portless protocols never match.
    pub fn matches(
        &self,
        protocol: Protocol,
        port: Option<u16>,
        dst_ports: &[ContainerPort],
    ) -> bool {
        if protocol != self.protocol {
            return false;
        }
        match (&self.port, port) {
            (PortSpec::All, _) => true,
            (_, None) => false,
            (PortSpec::Range { start, end }, Some(p)) => (*start..=*end).contains(&p),
            (PortSpec::Named(name), Some(p)) => self.resolve(name, dst_ports) == Some(p),
        }
    }

    /// The number a named port has on the destination: a container port with that name and
    /// this matcher's protocol. `None` when absent or when its protocol differs.
    pub fn resolve(&self, name: &str, dst_ports: &[ContainerPort]) -> Option<u16> {
        dst_ports
            .iter()
            .find(|cp| cp.name.as_deref() == Some(name) && cp.protocol == self.protocol)
            .map(|cp| cp.port)
    }
}

impl fmt::Display for PortMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            PortSpec::All => write!(f, "all/{}", self.protocol),
            PortSpec::Range { start, end } if start == end => {
                write!(f, "{start}/{}", self.protocol)
            }
            PortSpec::Range { start, end } => write!(f, "{start}-{end}/{}", self.protocol),
            PortSpec::Named(n) => write!(f, "{n}/{}", self.protocol),
        }
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cidr)?;
        if !self.except.is_empty() {
            let ex: Vec<String> = self.except.iter().map(ToString::to_string).collect();
            write!(f, " except {}", ex.join(","))?;
        }
        Ok(())
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pods { namespaces, pods } => match namespaces {
                NamespaceScope::Named(ns) => write!(f, "pods [{pods}] in namespace {ns}"),
                NamespaceScope::Selector(s) => {
                    write!(f, "pods [{pods}] in namespaces [{s}]")
                }
            },
            Self::IpBlock(b) => write!(f, "ipBlock {b}"),
            Self::Cidr(b) => write!(f, "CIDR {b}"),
            Self::Fqdn(p) => write!(f, "FQDN {p}"),
            Self::Entity(e) => write!(f, "entity {}", e.as_str()),
        }
    }
}

impl Policy {
    /// The rules of one direction, `None` when the policy does not apply to it.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(name: &str, port: u16, protocol: Protocol) -> ContainerPort {
        ContainerPort {
            name: Some(name.into()),
            port,
            protocol,
        }
    }

    #[test]
    fn ip_block_excludes_its_exceptions_and_other_families() {
        let b = IpBlock {
            cidr: "10.0.0.0/8".parse().unwrap(),
            except: vec!["10.1.0.0/16".parse().unwrap()],
        };
        assert!(b.contains("10.2.3.4".parse().unwrap()));
        assert!(!b.contains("10.1.3.4".parse().unwrap()));
        assert!(!b.contains("11.0.0.1".parse().unwrap()));
        assert!(!b.contains("::ffff:10.2.3.4".parse().unwrap()));
    }

    #[test]
    fn named_port_matches_only_with_same_name_and_protocol() {
        let m = PortMatcher {
            protocol: Protocol::Tcp,
            port: PortSpec::Named("http".into()),
        };
        let ports = [
            cp("http", 8080, Protocol::Tcp),
            cp("dns", 53, Protocol::Udp),
        ];
        assert!(m.matches(Protocol::Tcp, Some(8080), &ports));
        assert!(!m.matches(Protocol::Tcp, Some(80), &ports));
        assert!(!m.matches(Protocol::Tcp, Some(8080), &[]));
        let udp_only = [cp("http", 8080, Protocol::Udp)];
        assert!(!m.matches(Protocol::Tcp, Some(8080), &udp_only));
    }

    #[test]
    fn range_and_all_ports_respect_the_protocol() {
        let m = PortMatcher {
            protocol: Protocol::Udp,
            port: PortSpec::Range {
                start: 30000,
                end: 32767,
            },
        };
        assert!(m.matches(Protocol::Udp, Some(30000), &[]));
        assert!(m.matches(Protocol::Udp, Some(32767), &[]));
        assert!(!m.matches(Protocol::Udp, Some(32768), &[]));
        assert!(!m.matches(Protocol::Tcp, Some(30000), &[]));
        let all = PortMatcher {
            protocol: Protocol::Sctp,
            port: PortSpec::All,
        };
        assert!(all.matches(Protocol::Sctp, Some(1), &[]));
        assert!(!all.matches(Protocol::Icmp, None, &[]));
    }
}

//! The inventory model: namespaces, pods, workloads, services, endpoint slices and nodes, with
//! the lookups the evaluator needs (IP → pod, reference → pod or workload). Built by
//! [`InventoryBuilder`](super::InventoryBuilder); read-only afterwards.

use std::{collections::HashMap, net::IpAddr};

use chrono::{DateTime, Utc};

use crate::{
    flow::{Endpoint, Protocol},
    policy::{Labels, Selector},
};

use super::InventoryError;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl $name {
            /// The position in the inventory's list.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

id_type!(
    /// Index of a [`Namespace`] in [`Inventory::namespaces`].
    NamespaceId
);
id_type!(
    /// Index of a [`Pod`] in [`Inventory::pods`].
    PodId
);
id_type!(
    /// Index of a [`Workload`] in [`Inventory::workloads`].
    WorkloadId
);
id_type!(
    /// Index of a [`Node`] in [`Inventory::nodes`].
    NodeId
);

/// A namespace. Its labels always include `kubernetes.io/metadata.name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
    /// Annotations, for settings such as `trustmap.dev/mode`.
    pub annotations: Labels,
}

/// A pod: a real one, or the template pod of a workload, which stands for the pods it would
/// create and has no IPs and no node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: NamespaceId,
    /// The pod's name; for a template pod, its workload's name.
    pub name: String,
    pub labels: Labels,
    /// `status.podIPs` (or `status.podIP`); empty for template pods.
    pub ips: Vec<IpAddr>,
    /// Host-network pods are node endpoints for NetworkPolicy: no policy selects them, and only
    /// ipBlocks match them as peers.
    pub host_network: bool,
    pub node: Option<NodeId>,
    /// Container ports of all containers, for named ports.
    pub ports: Vec<ContainerPort>,
    /// The workload that owns the pod (resolved through ReplicaSets and Jobs where possible).
    pub workload: Option<WorkloadId>,
    /// Whether this is a workload's template pod rather than a real pod.
    pub is_template: bool,
    /// `metadata.creationTimestamp` (else `status.startTime`): since when the pod holds its IPs.
    pub created: Option<DateTime<Utc>>,
    /// `metadata.deletionTimestamp`, or for a finished pod the last container's `finishedAt`:
    /// when it stopped holding its IPs.
    pub ended: Option<DateTime<Utc>>,
    /// The IPs a finished pod held before they were released (kept for time-aware lookups of
    /// flows seen while it ran; never indexed for evaluation).
    pub released_ips: Vec<IpAddr>,
}

/// A declared container port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// A workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
/// CronJob), from a manifest or inferred from the owner of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub namespace: NamespaceId,
    /// The kind, as Kubernetes spells it (`Deployment`).
    pub kind: String,
    pub name: String,
    /// The template pod, when the workload's manifest was given.
    pub template: Option<PodId>,
    /// Real pods owned by the workload.
    pub pods: Vec<PodId>,
    /// `spec.selector`, when the workload's manifest was given and has one.
    pub selector: Option<Selector>,
}

/// A node, given as a manifest or known from its pods' `spec.nodeName` and `status.hostIP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub labels: Labels,
    /// `spec.podCIDRs`: the node's share of the pod network, when the cluster assigns them.
    pub pod_cidrs: Vec<ipnet::IpNet>,
}

/// A Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub namespace: NamespaceId,
    pub name: String,
    /// `None` for a service without selector (endpoints managed by hand).
    pub selector: Option<Labels>,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
}

/// A port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    pub target: TargetPort,
}

/// A Service's `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Named(String),
}

/// An EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    pub namespace: NamespaceId,
    pub name: String,
    /// The `kubernetes.io/service-name` label.
    pub service: Option<String>,
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<EndpointPort>,
}

/// A port of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: Option<u16>,
    pub protocol: Protocol,
}

/// What an [`Endpoint`] of a flow is, in terms of NetworkPolicy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resolved {
    /// A pod on the pod network. `ip` is the address the flow used, or the pod's first IP.
    Pod { pod: PodId, ip: Option<IpAddr> },
    /// A node, or a host-network pod (then `pod` is set): matched by ipBlocks only.
    Host {
        ip: Option<IpAddr>,
        node: Option<NodeId>,
        pod: Option<PodId>,
    },
    /// An address that is no known pod or node.
    External(IpAddr),
}

impl Resolved {
    /// The address ipBlocks are matched against, if known.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Self::Pod { ip, .. } | Self::Host { ip, .. } => ip,
            Self::External(ip) => Some(ip),
        }
    }

    /// The pod on the pod network, if this is one.
    pub fn pod(&self) -> Option<PodId> {
        match *self {
            Self::Pod { pod, .. } => Some(pod),
            _ => None,
        }
    }
}

/// Everything known about a cluster's objects, with indexes. Pure data: build it with
/// [`InventoryBuilder`](super::InventoryBuilder) from k8s-openapi objects.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub(super) namespaces: Vec<Namespace>,
    pub(super) pods: Vec<Pod>,
    pub(super) workloads: Vec<Workload>,
    pub(super) nodes: Vec<Node>,
    pub(super) services: Vec<Service>,
    pub(super) endpoint_slices: Vec<EndpointSlice>,
    pub(super) ns_by_name: HashMap<String, NamespaceId>,
    pub(super) pods_by_ns: Vec<Vec<PodId>>,
    pub(super) pod_by_name: HashMap<(NamespaceId, String), PodId>,
    pub(super) pod_by_ip: HashMap<IpAddr, PodId>,
    /// Keyed by namespace, lowercase kind and name.
    pub(super) workload_by_ref: HashMap<(NamespaceId, String, String), WorkloadId>,
    pub(super) node_by_ip: HashMap<IpAddr, NodeId>,
}

impl Inventory {
    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }

    /// All pods, real and template, in a stable order.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn endpoint_slices(&self) -> &[EndpointSlice] {
        &self.endpoint_slices
    }

    /// Where the API server listens: the addresses of Service default/kubernetes's endpoints.
    pub fn apiserver_ips(&self) -> Vec<IpAddr> {
        let Some(ns) = self.namespace_id("default") else {
            return Vec::new();
        };
        self.endpoint_slices()
            .iter()
            .filter(|s| s.namespace == ns && s.service.as_deref() == Some("kubernetes"))
            .flat_map(|s| s.addresses.iter().copied())
            .collect()
    }

    pub fn namespace(&self, id: NamespaceId) -> &Namespace {
        &self.namespaces[id.index()]
    }

    pub fn pod(&self, id: PodId) -> &Pod {
        &self.pods[id.index()]
    }

    pub fn workload(&self, id: WorkloadId) -> &Workload {
        &self.workloads[id.index()]
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn namespace_id(&self, name: &str) -> Option<NamespaceId> {
        self.ns_by_name.get(name).copied()
    }

    /// Pods (real and template) of a namespace.
    pub fn pods_in(&self, ns: NamespaceId) -> &[PodId] {
        &self.pods_by_ns[ns.index()]
    }

    /// The pod on the pod network with this IP (host-network pods are not indexed by IP).
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<PodId> {
        self.pod_by_ip.get(&ip).copied()
    }

    /// The node with this address.
    pub fn node_by_ip(&self, ip: IpAddr) -> Option<NodeId> {
        self.node_by_ip.get(&ip).copied()
    }

    /// A real pod by namespace and name.
    pub fn pod_by_name(&self, namespace: &str, name: &str) -> Option<PodId> {
        let ns = self.namespace_id(namespace)?;
        self.pod_by_name.get(&(ns, name.to_owned())).copied()
    }

    /// A workload by namespace, kind (any case) and name.
    pub fn workload_by_ref(&self, namespace: &str, kind: &str, name: &str) -> Option<WorkloadId> {
        let ns = self.namespace_id(namespace)?;
        self.workload_by_ref
            .get(&(ns, kind.to_ascii_lowercase(), name.to_owned()))
            .copied()
    }

    /// How a pod is referred to: `namespace/name`, or `namespace/Kind/name` for a template pod.
    pub fn pod_ref(&self, id: PodId) -> String {
        let pod = self.pod(id);
        let ns = &self.namespace(pod.namespace).name;
        match (pod.is_template, pod.workload) {
            (true, Some(w)) => self.workload_ref(w),
            _ => format!("{ns}/{}", pod.name),
        }
    }

    /// `namespace/Kind/name`.
    pub fn workload_ref(&self, id: WorkloadId) -> String {
        let w = self.workload(id);
        format!("{}/{}/{}", self.namespace(w.namespace).name, w.kind, w.name)
    }

    /// A pod that stands for the workload: its template pod, or else its first real pod.
    pub fn representative_pod(&self, id: WorkloadId) -> Option<PodId> {
        let w = self.workload(id);
        w.template.or_else(|| w.pods.first().copied())
    }

    /// Resolves a flow endpoint. An IP that is no pod's and no node's is external; a pod or
    /// workload reference that is unknown is an error.
    pub fn resolve(&self, endpoint: &Endpoint) -> Result<Resolved, InventoryError> {
        match endpoint {
            Endpoint::Ip(ip) => Ok(self.resolve_ip(*ip)),
            Endpoint::Pod { namespace, name } => self
                .pod_by_name(namespace, name)
                .map(|p| self.resolve_pod(p, None))
                .ok_or_else(|| InventoryError::UnknownEndpoint {
                    endpoint: endpoint.to_string(),
                    what: "pod",
                }),
            Endpoint::Workload {
                namespace,
                kind,
                name,
            } => self
                .workload_by_ref(namespace, kind, name)
                .and_then(|w| self.representative_pod(w))
                .map(|p| self.resolve_pod(p, None))
                .ok_or_else(|| InventoryError::UnknownEndpoint {
                    endpoint: endpoint.to_string(),
                    what: "workload",
                }),
        }
    }

    /// Resolves an address: a pod's, a node's (or a host-network pod's), or external.
    pub fn resolve_ip(&self, ip: IpAddr) -> Resolved {
        if let Some(pod) = self.pod_by_ip(ip) {
            return Resolved::Pod { pod, ip: Some(ip) };
        }
        if let Some(node) = self.node_by_ip(ip) {
            return Resolved::Host {
                ip: Some(ip),
                node: Some(node),
                pod: None,
            };
        }
        Resolved::External(ip)
    }

    /// A pod as a connection end; `ip` overrides the pod's first IP.
    pub fn resolve_pod(&self, id: PodId, ip: Option<IpAddr>) -> Resolved {
        let pod = self.pod(id);
        let ip = ip.or_else(|| pod.ips.first().copied());
        if pod.host_network {
            Resolved::Host {
                ip,
                node: pod.node,
                pod: Some(id),
            }
        } else {
            Resolved::Pod { pod: id, ip }
        }
    }

    /// The name of the thing an endpoint resolved to, for people.
    pub fn describe(&self, r: &Resolved) -> String {
        match *r {
            Resolved::Pod { pod, .. } => self.pod_ref(pod),
            Resolved::Host { pod: Some(p), .. } => format!("{} (host network)", self.pod_ref(p)),
            Resolved::Host {
                node: Some(n), ip, ..
            } => match ip {
                Some(ip) => format!("node {} ({ip})", self.node(n).name),
                None => format!("node {}", self.node(n).name),
            },
            Resolved::Host { ip: Some(ip), .. } => format!("host {ip}"),
            Resolved::Host { .. } => "host".into(),
            Resolved::External(ip) => format!("external {ip}"),
        }
    }
}

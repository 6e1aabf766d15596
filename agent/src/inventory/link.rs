//! Ties the collected objects together: namespaces (declared and referenced), nodes (also those
//! known only from pods), workloads (folding a ReplicaSet or Job into its given owner), pods
//! (linked to their workload), and the indexes of [`Inventory`].

use std::{
    collections::{HashMap, hash_map::Entry},
    net::IpAddr,
};

use super::{
    build::{InventoryBuilder, NAMESPACE_NAME_LABEL},
    model::{Inventory, Namespace, NamespaceId, Node, NodeId, Pod, PodId, Workload, WorkloadId},
};
use crate::policy::Labels;

impl InventoryBuilder {
    /// Ties objects together and indexes them.
    pub fn build(mut self) -> Inventory {
        let mut inv = Inventory::default();

        // Namespaces: declared and referenced ones, each labelled with its own name.
        for name in self
            .pods
            .iter()
            .map(|p| &p.namespace)
            .chain(self.workloads.iter().map(|w| &w.namespace))
            .chain(self.services.iter().map(|s| &s.0))
            .chain(self.slices.iter().map(|s| &s.0))
            .cloned()
            .collect::<Vec<_>>()
        {
            self.reference_namespace(&name);
        }
        for (name, mut labels) in std::mem::take(&mut self.namespaces) {
            labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
            let id = NamespaceId(inv.namespaces.len() as u32);
            inv.ns_by_name.insert(name.clone(), id);
            let annotations = self.namespace_annotations.remove(&name).unwrap_or_default();
            inv.namespaces.push(Namespace {
                name,
                labels,
                annotations,
            });
            inv.pods_by_ns.push(Vec::new());
        }
        let ns = |inv: &Inventory, name: &str| inv.ns_by_name[name];

        // Nodes, also those only known from pods.
        let pod_nodes: Vec<(String, Vec<IpAddr>)> = self
            .pods
            .iter()
            .filter_map(|p| {
                let pod_ips = if p.pod.host_network {
                    &p.pod.ips[..]
                } else {
                    &[]
                };
                let ips = p.host_ips.iter().chain(pod_ips).copied().collect();
                p.node_name.clone().map(|n| (n, ips))
            })
            .collect();
        for (name, ips) in pod_nodes {
            self.node_entry(&name).addresses.extend(ips);
        }
        let mut node_by_name = HashMap::new();
        for (name, mut node) in std::mem::take(&mut self.nodes) {
            node.addresses.sort();
            node.addresses.dedup();
            let id = NodeId(inv.nodes.len() as u32);
            for ip in &node.addresses {
                inv.node_by_ip.entry(*ip).or_insert(id);
            }
            node_by_name.insert(name, id);
            inv.nodes.push(node);
        }
        // Host IPs of pods on nodes of unknown name still mark node addresses.
        for p in &self.pods {
            if p.node_name.is_none() {
                for ip in &p.host_ips {
                    if !inv.node_by_ip.contains_key(ip) {
                        let id = NodeId(inv.nodes.len() as u32);
                        inv.nodes.push(Node {
                            name: ip.to_string(),
                            addresses: vec![*ip],
                            labels: Labels::new(),
                            pod_cidrs: Vec::new(),
                        });
                        inv.node_by_ip.insert(*ip, id);
                    }
                }
            }
        }

        // Workloads: one owned by another given workload (a Deployment's ReplicaSet, a
        // CronJob's Job) is folded into its owner.
        let given: HashMap<(String, String, String), usize> = self
            .workloads
            .iter()
            .enumerate()
            .map(|(i, w)| ((w.namespace.clone(), w.kind.to_owned(), w.name.clone()), i))
            .collect();
        let mut alias: HashMap<(String, String, String), (String, String, String)> = HashMap::new();
        for w in &self.workloads {
            if let Some((kind, name)) = &w.owner {
                let owner = (w.namespace.clone(), kind.clone(), name.clone());
                if given.contains_key(&owner) {
                    alias.insert(
                        (w.namespace.clone(), w.kind.to_owned(), w.name.clone()),
                        owner,
                    );
                }
            }
        }
        for w in std::mem::take(&mut self.workloads) {
            let key = (w.namespace.clone(), w.kind.to_owned(), w.name.clone());
            if alias.contains_key(&key) {
                continue;
            }
            let nsid = ns(&inv, &w.namespace);
            let id = workload_id(&mut inv, nsid, w.kind, &w.name);
            inv.workloads[id.index()].selector = w.selector;
            if let Some(mut pod) = w.template {
                pod.namespace = nsid;
                pod.workload = Some(id);
                let pid = PodId(inv.pods.len() as u32);
                inv.pods_by_ns[nsid.index()].push(pid);
                inv.pods.push(pod);
                inv.workloads[id.index()].template = Some(pid);
            }
        }

        // Real pods.
        for p in std::mem::take(&mut self.pods) {
            let nsid = ns(&inv, &p.namespace);
            let mut pod = p.pod;
            pod.namespace = nsid;
            pod.node = p.node_name.as_ref().map(|n| node_by_name[n]);
            let pid = PodId(inv.pods.len() as u32);
            if let Some((kind, name)) = p.owner {
                let (kind, name) = owner_workload(&alias, &given, &p.namespace, kind, name, &pod);
                let id = workload_id(&mut inv, nsid, &kind, &name);
                pod.workload = Some(id);
                inv.workloads[id.index()].pods.push(pid);
            }
            if !pod.host_network {
                for ip in &pod.ips {
                    inv.pod_by_ip.entry(*ip).or_insert(pid);
                }
            }
            inv.pod_by_name
                .entry((nsid, pod.name.clone()))
                .or_insert(pid);
            inv.pods_by_ns[nsid.index()].push(pid);
            inv.pods.push(pod);
        }

        for (namespace, mut s) in std::mem::take(&mut self.services) {
            s.namespace = ns(&inv, &namespace);
            inv.services.push(s);
        }
        for (namespace, mut s) in std::mem::take(&mut self.slices) {
            s.namespace = ns(&inv, &namespace);
            inv.endpoint_slices.push(s);
        }
        inv
    }
}

/// The workload a pod belongs to: its owner, through a given ReplicaSet or Job to their owner,
/// or a ReplicaSet named `<deployment>-<pod-template-hash>` to its Deployment.
fn owner_workload(
    alias: &HashMap<(String, String, String), (String, String, String)>,
    given: &HashMap<(String, String, String), usize>,
    namespace: &str,
    kind: String,
    name: String,
    pod: &Pod,
) -> (String, String) {
    let key = (namespace.to_owned(), kind, name);
    if let Some((_, k, n)) = alias.get(&key) {
        return (k.clone(), n.clone());
    }
    let (_, kind, name) = key;
    if kind == "ReplicaSet"
        && !given.contains_key(&(namespace.to_owned(), kind.clone(), name.clone()))
        && let Some(hash) = pod.labels.get("pod-template-hash")
        && let Some(deployment) = name.strip_suffix(&format!("-{hash}"))
    {
        return ("Deployment".into(), deployment.to_owned());
    }
    (kind, name)
}

fn workload_id(inv: &mut Inventory, ns: NamespaceId, kind: &str, name: &str) -> WorkloadId {
    let key = (ns, kind.to_ascii_lowercase(), name.to_owned());
    let next = WorkloadId(inv.workloads.len() as u32);
    match inv.workload_by_ref.entry(key) {
        Entry::Occupied(e) => *e.get(),
        Entry::Vacant(e) => {
            e.insert(next);
            inv.workloads.push(Workload {
                namespace: ns,
                kind: kind.to_owned(),
                name: name.to_owned(),
                template: None,
                pods: Vec::new(),
                selector: None,
            });
            next
        }
    }
}

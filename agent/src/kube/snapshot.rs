//! Pure: what the reflectors keep of each object ([`trim_pod`] and friends, applied with the
//! watcher's `.modify()`), and the turning of the stores' contents into an [`Inventory`] and
//! policies ([`Objects::build`]). No client, no clock.

use std::sync::Arc;

use k8s_openapi::{
    Metadata,
    api::{
        core::v1::{
            Container, ContainerState, ContainerStateTerminated, ContainerStatus, Namespace, Node,
            NodeStatus, Pod, PodSpec, PodStatus, Service,
        },
        discovery::v1::EndpointSlice,
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::admin::{AdminNetworkPolicyRes, BaselineAdminNetworkPolicyRes, ClusterNetworkPolicyRes};
use crate::{
    inventory::{InventoryBuilder, Loaded},
    policy::{AdminPolicy, Policy, PolicyError},
};

/// Drops what no object here needs: managed fields (often the largest part of an object) and
/// annotations (`kubectl.kubernetes.io/last-applied-configuration` repeats the whole object).
pub fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
}

/// Keeps of a pod what the inventory reads: name, namespace, labels, owners, times, node, host
/// network, container names and ports, phase, IPs and the containers' termination times.
pub fn trim_pod(pod: &mut Pod) {
    trim_meta(&mut pod.metadata);
    let keep_ports = |c: &Container| Container {
        name: c.name.clone(),
        ports: c.ports.clone(),
        ..Container::default()
    };
    if let Some(spec) = &pod.spec {
        pod.spec = Some(PodSpec {
            containers: spec.containers.iter().map(keep_ports).collect(),
            init_containers: spec
                .init_containers
                .as_ref()
                .map(|cs| cs.iter().map(keep_ports).collect()),
            node_name: spec.node_name.clone(),
            host_network: spec.host_network,
            ..PodSpec::default()
        });
    }
    if let Some(status) = &pod.status {
        let terminated_only = |c: &ContainerStatus| ContainerStatus {
            name: c.name.clone(),
            state: c
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: t.exit_code,
                        finished_at: t.finished_at.clone(),
                        started_at: t.started_at.clone(),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                }),
            ..ContainerStatus::default()
        };
        pod.status = Some(PodStatus {
            phase: status.phase.clone(),
            pod_ip: status.pod_ip.clone(),
            pod_ips: status.pod_ips.clone(),
            host_ip: status.host_ip.clone(),
            host_ips: status.host_ips.clone(),
            start_time: status.start_time.clone(),
            container_statuses: status
                .container_statuses
                .as_ref()
                .map(|cs| cs.iter().map(terminated_only).collect()),
            ..PodStatus::default()
        });
    }
}

/// Keeps a namespace's name, labels and trustmap's own annotations (`trustmap.dev/mode`
/// decides the namespace's mode); other annotations are dropped like everywhere else.
pub fn trim_namespace(ns: &mut Namespace) {
    let ours = ns.metadata.annotations.take().map(|a| {
        a.into_iter()
            .filter(|(k, _)| k.starts_with("trustmap.dev/"))
            .collect::<std::collections::BTreeMap<_, _>>()
    });
    trim_meta(&mut ns.metadata);
    ns.metadata.annotations = ours.filter(|a| !a.is_empty());
    ns.spec = None;
    ns.status = None;
}

/// Keeps a node's labels, addresses and podCIDRs (the pod network, known before any pod
/// starts): its image list and conditions are large and change often.
pub fn trim_node(node: &mut Node) {
    trim_meta(&mut node.metadata);
    node.spec = node
        .spec
        .take()
        .map(|s| k8s_openapi::api::core::v1::NodeSpec {
            pod_cidrs: s.pod_cidrs,
            ..Default::default()
        });
    node.status = node.status.take().map(|s| NodeStatus {
        addresses: s.addresses,
        ..NodeStatus::default()
    });
}

/// Keeps a service's spec (selector, cluster IPs, ports).
pub fn trim_service(svc: &mut Service) {
    trim_meta(&mut svc.metadata);
    svc.status = None;
}

/// Keeps an endpoint slice's addresses and ports, without per-endpoint conditions, hints and
/// target references.
pub fn trim_endpoint_slice(slice: &mut EndpointSlice) {
    trim_meta(&mut slice.metadata);
    for e in &mut slice.endpoints {
        e.target_ref = None;
        e.hints = None;
        e.deprecated_topology = None;
    }
}

/// Keeps a policy's spec.
pub fn trim_network_policy(np: &mut NetworkPolicy) {
    trim_meta(&mut np.metadata);
}

/// The contents of the stores at one moment.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub namespaces: Vec<Arc<Namespace>>,
    pub nodes: Vec<Arc<Node>>,
    pub pods: Vec<Arc<Pod>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub network_policies: Vec<Arc<NetworkPolicy>>,
    pub cluster_network_policies: Vec<Arc<ClusterNetworkPolicyRes>>,
    pub admin_network_policies: Vec<Arc<AdminNetworkPolicyRes>>,
    pub baseline_admin_network_policies: Vec<Arc<BaselineAdminNetworkPolicyRes>>,
}

fn sort_by_key<K: Metadata<Ty = ObjectMeta>>(objects: &mut [Arc<K>]) {
    objects.sort_by(|a, b| {
        let key = |o: &Arc<K>| {
            let m = o.metadata();
            (m.namespace.clone(), m.name.clone())
        };
        key(a).cmp(&key(b))
    });
}

fn describe<K: Metadata<Ty = ObjectMeta>>(kind: &str, o: &K) -> String {
    let m = o.metadata();
    match (&m.namespace, &m.name) {
        (Some(ns), Some(n)) => format!("{kind} {ns}/{n}"),
        (None, Some(n)) => format!("{kind} {n}"),
        _ => kind.to_owned(),
    }
}

impl Objects {
    /// Builds the inventory and the policies. Objects are taken in (namespace, name) order so
    /// that the same objects always give the same inventory. An object the builder or the
    /// policy conversion rejects is left out with a note: one odd object must not blind the
    /// agent to the rest of the cluster.
    pub fn build(mut self) -> Loaded {
        sort_by_key(&mut self.namespaces);
        sort_by_key(&mut self.nodes);
        sort_by_key(&mut self.pods);
        sort_by_key(&mut self.services);
        sort_by_key(&mut self.endpoint_slices);
        sort_by_key(&mut self.network_policies);
        let mut b = InventoryBuilder::new();
        let mut notes = Vec::new();
        let mut note = |what: String, e: &dyn std::fmt::Display| {
            notes.push(format!("{what}: skipped: {e}"));
        };
        for o in &self.namespaces {
            if let Err(e) = b.namespace(o) {
                note(describe("Namespace", o.as_ref()), &e);
            }
        }
        for o in &self.nodes {
            if let Err(e) = b.node(o) {
                note(describe("Node", o.as_ref()), &e);
            }
        }
        for o in &self.pods {
            if let Err(e) = b.pod(o) {
                note(describe("Pod", o.as_ref()), &e);
            }
        }
        for o in &self.services {
            if let Err(e) = b.service(o) {
                note(describe("Service", o.as_ref()), &e);
            }
        }
        for o in &self.endpoint_slices {
            if let Err(e) = b.endpoint_slice(o) {
                note(describe("EndpointSlice", o.as_ref()), &e);
            }
        }
        let mut policies = Vec::new();
        for o in &self.network_policies {
            match Policy::from_k8s(o) {
                Ok(p) => {
                    b.reference_namespace(&p.namespace);
                    policies.push(p);
                }
                Err(e) => note(describe("NetworkPolicy", o.as_ref()), &e),
            }
        }
        let mut admin = Vec::new();
        let mut by_name = |kind: &str, m: &ObjectMeta, r: Result<AdminPolicy, PolicyError>| match r
        {
            Ok(p) => admin.push(p),
            Err(e) => notes.push(format!(
                "{kind} {}: skipped: {e}",
                m.name.as_deref().unwrap_or("(unnamed)")
            )),
        };
        for o in &self.cluster_network_policies {
            by_name("ClusterNetworkPolicy", &o.metadata, o.to_policy());
        }
        for o in &self.admin_network_policies {
            by_name("AdminNetworkPolicy", &o.metadata, o.to_policy());
        }
        for o in &self.baseline_admin_network_policies {
            by_name("BaselineAdminNetworkPolicy", &o.metadata, o.to_policy());
        }
        admin.sort_by(|a, b| (a.kind.to_string(), &a.name).cmp(&(b.kind.to_string(), &b.name)));
        Loaded {
            inventory: b.build(),
            policies,
            admin,
            notes,
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("valid object")
    }

    #[test]
    fn trim_namespace_keeps_the_mode_annotation_and_drops_the_others() {
        let mut ns: Namespace = from(json!({"metadata": {"name": "shop",
            "annotations": {"trustmap.dev/mode": "alert", "kubectl.kubernetes.io/x": "{...}"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]}}));
        trim_namespace(&mut ns);
        assert_eq!(
            ns.metadata.annotations,
            Some([("trustmap.dev/mode".to_owned(), "alert".to_owned())].into())
        );
        assert!(ns.metadata.managed_fields.is_none());
        let mut plain: Namespace = from(json!({"metadata": {"name": "a",
            "annotations": {"other": "x"}}}));
        trim_namespace(&mut plain);
        assert!(plain.metadata.annotations.is_none());
    }

    fn full_pod() -> Pod {
        from(json!({
            "metadata": {
                "name": "web-7d4b9-abcde", "namespace": "shop",
                "labels": {"app": "web", "pod-template-hash": "7d4b9"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d4b9", "uid": "u1", "controller": true}],
                "creationTimestamp": "2024-01-01T00:00:00Z",
            },
            "spec": {
                "nodeName": "worker-1",
                "containers": [{"name": "web", "image": "nginx",
                    "env": [{"name": "SECRET_LOOKING", "value": "x"}],
                    "ports": [{"name": "http", "containerPort": 8080}]}],
                "volumes": [{"name": "v", "emptyDir": {}}],
            },
            "status": {
                "phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                "hostIP": "192.168.0.1", "startTime": "2024-01-01T00:00:01Z",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "web", "image": "nginx", "imageID": "sha256:1",
                    "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2024-01-01T00:00:02Z"}}}],
            },
        }))
    }

    #[test]
    fn trim_pod_drops_managed_fields_annotations_env_and_volumes() {
        let mut pod = full_pod();
        trim_pod(&mut pod);
        assert!(pod.metadata.managed_fields.is_none());
        assert!(pod.metadata.annotations.is_none());
        let spec = pod.spec.as_ref().expect("spec kept");
        assert!(spec.volumes.is_none());
        assert!(spec.containers[0].env.is_none());
        assert!(spec.containers[0].image.is_none());
        let status = pod.status.as_ref().expect("status kept");
        assert!(status.conditions.is_none());
        assert!(
            status.container_statuses.as_ref().expect("kept")[0]
                .state
                .is_none()
        );
    }

    #[test]
    fn trim_pod_keeps_what_the_inventory_reads() {
        let mut trimmed = full_pod();
        trim_pod(&mut trimmed);
        let build = |p: Pod| {
            Objects {
                pods: vec![Arc::new(p)],
                ..Objects::default()
            }
            .build()
            .inventory
        };
        let (a, b) = (build(full_pod()), build(trimmed));
        assert_eq!(a.pods(), b.pods());
        assert_eq!(a.workloads(), b.workloads());
        assert_eq!(a.nodes(), b.nodes());
    }

    #[test]
    fn trim_pod_keeps_termination_times() {
        let mut pod: Pod = from(json!({
            "metadata": {"name": "job-x", "namespace": "ns"},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "c", "image": "i",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                    "finishedAt": "2024-01-01T00:01:00Z"}}}]},
        }));
        trim_pod(&mut pod);
        let status = pod.status.expect("status kept");
        let terminated = status.container_statuses.expect("kept")[0]
            .state
            .clone()
            .and_then(|s| s.terminated)
            .expect("terminated state kept");
        assert!(terminated.finished_at.is_some());
        assert!(terminated.reason.is_none());
    }

    #[test]
    fn trim_node_keeps_labels_addresses_and_pod_cidrs_only() {
        let mut node: Node = from(json!({
            "metadata": {"name": "worker-1", "labels": {"zone": "a"},
                "managedFields": [{"manager": "kubelet"}]},
            "spec": {"podCIDR": "10.0.0.0/24", "podCIDRs": ["10.0.0.0/24", "fd00:0:0:1::/64"],
                "providerID": "kind://worker-1", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}],
                "images": [{"names": ["nginx"], "sizeBytes": 1}],
                "conditions": [{"type": "Ready", "status": "True"}]},
        }));
        trim_node(&mut node);
        let status = node.status.expect("status kept");
        assert!(status.images.is_none() && status.conditions.is_none());
        assert_eq!(status.addresses.expect("kept").len(), 1);
        let spec = node.spec.expect("podCIDRs kept");
        assert_eq!(
            spec.pod_cidrs.expect("kept"),
            ["10.0.0.0/24", "fd00:0:0:1::/64"]
        );
        assert!(spec.pod_cidr.is_none() && spec.provider_id.is_none() && spec.taints.is_none());
        assert_eq!(node.metadata.labels.expect("kept")["zone"], "a");
    }

    #[test]
    fn build_is_independent_of_store_order() {
        let pod = |name: &str, ip: &str| -> Arc<Pod> {
            Arc::new(from(json!({
                "metadata": {"name": name, "namespace": "ns", "labels": {"app": name}},
                "status": {"podIP": ip},
            })))
        };
        let a = Objects {
            pods: vec![pod("a", "10.0.0.1"), pod("b", "10.0.0.2")],
            ..Objects::default()
        };
        let b = Objects {
            pods: vec![pod("b", "10.0.0.2"), pod("a", "10.0.0.1")],
            ..Objects::default()
        };
        assert_eq!(a.build().inventory.pods(), b.build().inventory.pods());
    }

    #[test]
    fn build_reads_admin_policies_and_skips_an_invalid_one_with_a_note() {
        let cnp = |name: &str, tier: &str| {
            Arc::new(from::<ClusterNetworkPolicyRes>(json!({
                "metadata": {"name": name},
                "spec": {"tier": tier, "priority": 5, "subject": {"namespaces": {}},
                    "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]},
            })))
        };
        let banp = Arc::new(from::<BaselineAdminNetworkPolicyRes>(json!({
            "metadata": {"name": "default"},
            "spec": {"subject": {"namespaces": {}},
                "egress": [{"action": "Allow", "to": [{"networks": ["10.0.0.0/8"]}]}]},
        })));
        let loaded = Objects {
            cluster_network_policies: vec![cnp("guard", "Admin"), cnp("odd", "Middle")],
            baseline_admin_network_policies: vec![banp],
            ..Objects::default()
        }
        .build();
        let names: Vec<String> = loaded.admin.iter().map(|p| p.key()).collect();
        assert_eq!(
            names,
            [
                "BaselineAdminNetworkPolicy/default",
                "ClusterNetworkPolicy/guard"
            ]
        );
        assert_eq!(loaded.notes.len(), 1, "{:?}", loaded.notes);
        assert!(
            loaded.notes[0].contains("ClusterNetworkPolicy odd")
                && loaded.notes[0].contains("spec.tier"),
            "{:?}",
            loaded.notes
        );
    }

    #[test]
    fn build_skips_an_invalid_object_with_a_note_and_keeps_the_rest() {
        let objects = Objects {
            pods: vec![
                Arc::new(from(json!({"metadata": {"name": "bad", "namespace": "ns"},
                    "status": {"podIP": "not-an-ip"}}))),
                Arc::new(from(
                    json!({"metadata": {"name": "good", "namespace": "ns"},
                    "status": {"podIP": "10.0.0.1"}}),
                )),
            ],
            network_policies: vec![
                Arc::new(from(
                    json!({"metadata": {"name": "deny", "namespace": "ns"},
                    "spec": {"podSelector": {}}}),
                )),
                Arc::new(from(
                    json!({"metadata": {"name": "broken", "namespace": "ns"},
                    "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "x"}}]}]}}),
                )),
            ],
            ..Objects::default()
        };
        let loaded = objects.build();
        assert_eq!(loaded.inventory.pods().len(), 1);
        assert_eq!(loaded.policies.len(), 1);
        assert_eq!(loaded.notes.len(), 2, "{:?}", loaded.notes);
        assert!(
            loaded.notes[0].starts_with("Pod ns/bad: skipped"),
            "{}",
            loaded.notes[0]
        );
        assert!(
            loaded.notes[1].starts_with("NetworkPolicy ns/broken"),
            "{}",
            loaded.notes[1]
        );
    }
}

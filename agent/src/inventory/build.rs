//! Pure conversion of k8s-openapi objects into an [`Inventory`](super::Inventory). Objects can be added in any
//! order; owners, nodes and referenced namespaces are tied together by
//! [`InventoryBuilder::build`] (in `link.rs`).

use std::{collections::BTreeMap, net::IpAddr};

use chrono::{DateTime, Utc};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{
            Container, Namespace as K8sNamespace, Node as K8sNode, Pod as K8sPod, PodSpec,
            PodTemplateSpec, ReplicationController, Service as K8sService,
        },
        discovery::v1::EndpointSlice as K8sEndpointSlice,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, Time},
        util::intstr::IntOrString,
    },
};

use super::{
    InventoryError,
    model::{
        ContainerPort, EndpointPort, EndpointSlice, NamespaceId, Node, Pod, Service, ServicePort,
        TargetPort,
    },
};
use crate::{
    flow::Protocol,
    policy::{Labels, Selector},
};

/// The label every namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Collects objects, then [`build`](Self::build)s the [`Inventory`](super::Inventory).
#[derive(Debug, Default)]
pub struct InventoryBuilder {
    pub(super) namespaces: BTreeMap<String, Labels>,
    pub(super) namespace_annotations: BTreeMap<String, Labels>,
    pub(super) pods: Vec<PendingPod>,
    pub(super) workloads: Vec<PendingWorkload>,
    pub(super) services: Vec<(String, Service)>,
    pub(super) slices: Vec<(String, EndpointSlice)>,
    pub(super) nodes: BTreeMap<String, Node>,
}

#[derive(Debug)]
pub(super) struct PendingPod {
    pub(super) namespace: String,
    pub(super) pod: Pod,
    pub(super) node_name: Option<String>,
    pub(super) host_ips: Vec<IpAddr>,
    /// Controller owner: kind and name.
    pub(super) owner: Option<(String, String)>,
}

#[derive(Debug)]
pub(super) struct PendingWorkload {
    pub(super) namespace: String,
    pub(super) kind: &'static str,
    pub(super) name: String,
    pub(super) selector: Option<Selector>,
    pub(super) template: Option<Pod>,
    pub(super) owner: Option<(String, String)>,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InventoryError {
    InventoryError::InvalidField {
        field: field.into(),
        message: message.into(),
    }
}

fn name_of(meta: &ObjectMeta) -> Result<String, InventoryError> {
    meta.name
        .clone()
        .ok_or_else(|| invalid("metadata.name", "missing"))
}

fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| "default".into())
}

fn controller_of(meta: &ObjectMeta) -> Option<(String, String)> {
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    refs.iter()
        .find(|o| o.controller == Some(true))
        .or(refs.first())
        .map(|o| (o.kind.clone(), o.name.clone()))
}

fn timestamp(t: &Time) -> Option<DateTime<Utc>> {
    let ts = t.0;
    DateTime::from_timestamp(ts.as_second(), ts.subsec_nanosecond().try_into().ok()?)
}

fn parse_ip(value: &str, field: String) -> Result<IpAddr, InventoryError> {
    value
        .parse()
        .map_err(|_| invalid(field, format!("invalid IP address {value:?}")))
}

/// Parses a protocol as Kubernetes spells it; absent means TCP.
pub(super) fn parse_protocol(
    value: Option<&str>,
    field: String,
) -> Result<Protocol, InventoryError> {
    match value {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some("SCTP") => Ok(Protocol::Sctp),
        Some(other) => Err(invalid(
            field,
            format!("unknown protocol {other:?}: expected TCP, UDP or SCTP"),
        )),
    }
}

fn parse_port(n: i32, field: String) -> Result<u16, InventoryError> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| invalid(field, format!("port {n} is out of range 1-65535")))
}

fn container_ports(spec: &PodSpec, field: &str) -> Result<Vec<ContainerPort>, InventoryError> {
    let mut out = Vec::new();
    let lists: [(&str, Option<&Vec<Container>>); 2] = [
        ("containers", Some(&spec.containers)),
        ("initContainers", spec.init_containers.as_ref()),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.into_iter().flatten().enumerate() {
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let at = format!("{field}.{list}[{i}].ports[{j}]");
                out.push(ContainerPort {
                    name: p.name.clone(),
                    port: parse_port(p.container_port, format!("{at}.containerPort"))?,
                    protocol: parse_protocol(p.protocol.as_deref(), format!("{at}.protocol"))?,
                });
            }
        }
    }
    Ok(out)
}

fn template_pod(t: &PodTemplateSpec, name: &str, field: &str) -> Result<Pod, InventoryError> {
    let spec = t.spec.clone().unwrap_or_default();
    Ok(Pod {
        namespace: NamespaceId(0),
        name: name.to_owned(),
        labels: t
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        ips: Vec::new(),
        host_network: spec.host_network.unwrap_or(false),
        node: None,
        ports: container_ports(&spec, &format!("{field}.spec"))?,
        workload: None,
        is_template: true,
        created: None,
        ended: None,
        released_ips: Vec::new(),
    })
}

impl InventoryBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a namespace with its labels.
    pub fn namespace(&mut self, ns: &K8sNamespace) -> Result<(), InventoryError> {
        let name = name_of(&ns.metadata)?;
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let annotations = ns.metadata.annotations.clone().unwrap_or_default();
        self.namespace_annotations
            .entry(name.clone())
            .or_default()
            .extend(annotations);
        self.namespaces.entry(name).or_default().extend(labels);
        Ok(())
    }

    /// Makes sure a namespace exists, for namespaces only referenced by other objects.
    pub fn reference_namespace(&mut self, name: &str) {
        self.namespaces.entry(name.to_owned()).or_default();
    }

    /// Adds a pod. Pods that have finished (`Succeeded`, `Failed`) keep no IPs, since those
    /// may already belong to another pod.
    pub fn pod(&mut self, p: &K8sPod) -> Result<(), InventoryError> {
        let name = name_of(&p.metadata)?;
        let namespace = namespace_of(&p.metadata);
        let spec = p.spec.clone().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        let mut ips = Vec::new();
        match (&status.pod_ips, &status.pod_ip) {
            (Some(list), _) if !list.is_empty() => {
                for (i, ip) in list.iter().enumerate() {
                    ips.push(parse_ip(&ip.ip, format!("status.podIPs[{i}].ip"))?);
                }
            }
            (_, Some(ip)) => ips.push(parse_ip(ip, "status.podIP".into())?),
            _ => {}
        }
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .or(status.start_time.as_ref())
            .and_then(timestamp);
        let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
        let last_exit = status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
            .filter_map(timestamp)
            .max();
        let ended = p
            .metadata
            .deletion_timestamp
            .as_ref()
            .and_then(timestamp)
            .or(if finished { last_exit } else { None });
        let released_ips = if finished {
            std::mem::take(&mut ips)
        } else {
            Vec::new()
        };
        let mut host_ips = Vec::new();
        for (i, h) in status.host_ips.iter().flatten().enumerate() {
            host_ips.push(parse_ip(&h.ip, format!("status.hostIPs[{i}].ip"))?);
        }
        if let (true, Some(h)) = (host_ips.is_empty(), &status.host_ip) {
            host_ips.push(parse_ip(h, "status.hostIP".into())?);
        }
        let host_network = spec.host_network.unwrap_or(false);
        self.pods.push(PendingPod {
            pod: Pod {
                namespace: NamespaceId(0),
                name,
                labels: p.metadata.labels.clone().unwrap_or_default(),
                ips,
                host_network,
                node: None,
                ports: container_ports(&spec, "spec")?,
                workload: None,
                is_template: false,
                created,
                ended,
                released_ips,
            },
            namespace,
            node_name: spec.node_name.clone(),
            host_ips,
            owner: controller_of(&p.metadata),
        });
        Ok(())
    }

    fn workload(
        &mut self,
        kind: &'static str,
        meta: &ObjectMeta,
        template: Option<&PodTemplateSpec>,
        selector: Option<&LabelSelector>,
        field: &str,
    ) -> Result<(), InventoryError> {
        let name = name_of(meta)?;
        let template = template
            .map(|t| template_pod(t, &name, field))
            .transpose()?;
        let selector_field = field.replace("template", "selector");
        let selector = selector
            .map(|s| Selector::from_k8s(s, &selector_field))
            .transpose()?;
        self.workloads.push(PendingWorkload {
            namespace: namespace_of(meta),
            kind,
            name,
            template,
            selector,
            owner: controller_of(meta),
        });
        Ok(())
    }

    pub fn deployment(&mut self, d: &Deployment) -> Result<(), InventoryError> {
        let t = d.spec.as_ref().map(|s| &s.template);
        let sel = d.spec.as_ref().map(|s| &s.selector);
        self.workload("Deployment", &d.metadata, t, sel, "spec.template")
    }

    pub fn stateful_set(&mut self, s: &StatefulSet) -> Result<(), InventoryError> {
        let t = s.spec.as_ref().map(|s| &s.template);
        let sel = s.spec.as_ref().map(|s| &s.selector);
        self.workload("StatefulSet", &s.metadata, t, sel, "spec.template")
    }

    pub fn daemon_set(&mut self, d: &DaemonSet) -> Result<(), InventoryError> {
        let t = d.spec.as_ref().map(|s| &s.template);
        let sel = d.spec.as_ref().map(|s| &s.selector);
        self.workload("DaemonSet", &d.metadata, t, sel, "spec.template")
    }

    pub fn replica_set(&mut self, r: &ReplicaSet) -> Result<(), InventoryError> {
        let t = r.spec.as_ref().and_then(|s| s.template.as_ref());
        let sel = r.spec.as_ref().map(|s| &s.selector);
        self.workload("ReplicaSet", &r.metadata, t, sel, "spec.template")
    }

    pub fn replication_controller(
        &mut self,
        r: &ReplicationController,
    ) -> Result<(), InventoryError> {
        let t = r.spec.as_ref().and_then(|s| s.template.as_ref());
        let sel = r
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .map(|m| LabelSelector {
                match_labels: Some(m.clone()),
                match_expressions: None,
            });
        self.workload(
            "ReplicationController",
            &r.metadata,
            t,
            sel.as_ref(),
            "spec.template",
        )
    }

    pub fn job(&mut self, j: &Job) -> Result<(), InventoryError> {
        // A Job's selector is generated (controller-uid), so it never selects anything stable.
        let t = j.spec.as_ref().map(|s| &s.template);
        self.workload("Job", &j.metadata, t, None, "spec.template")
    }

    pub fn cron_job(&mut self, c: &CronJob) -> Result<(), InventoryError> {
        let t = c
            .spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .map(|s| &s.template);
        self.workload(
            "CronJob",
            &c.metadata,
            t,
            None,
            "spec.jobTemplate.spec.template",
        )
    }

    pub fn service(&mut self, s: &K8sService) -> Result<(), InventoryError> {
        let spec = s.spec.clone().unwrap_or_default();
        let mut cluster_ips = Vec::new();
        let ips = spec
            .cluster_ips
            .clone()
            .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]));
        for (i, ip) in ips.iter().flatten().enumerate() {
            if ip != "None" && !ip.is_empty() {
                cluster_ips.push(parse_ip(ip, format!("spec.clusterIPs[{i}]"))?);
            }
        }
        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let at = format!("spec.ports[{i}]");
            let port = parse_port(p.port, format!("{at}.port"))?;
            ports.push(ServicePort {
                name: p.name.clone(),
                port,
                protocol: parse_protocol(p.protocol.as_deref(), format!("{at}.protocol"))?,
                target: match &p.target_port {
                    None => TargetPort::Number(port),
                    Some(IntOrString::Int(n)) => {
                        TargetPort::Number(parse_port(*n, format!("{at}.targetPort"))?)
                    }
                    Some(IntOrString::String(n)) => TargetPort::Named(n.clone()),
                },
            });
        }
        let namespace = namespace_of(&s.metadata);
        let service = Service {
            namespace: NamespaceId(0),
            name: name_of(&s.metadata)?,
            selector: spec.selector.clone(),
            cluster_ips,
            ports,
        };
        self.services.push((namespace, service));
        Ok(())
    }

    pub fn endpoint_slice(&mut self, s: &K8sEndpointSlice) -> Result<(), InventoryError> {
        let mut addresses = Vec::new();
        if s.address_type != "FQDN" {
            for (i, e) in s.endpoints.iter().enumerate() {
                for (j, a) in e.addresses.iter().enumerate() {
                    addresses.push(parse_ip(a, format!("endpoints[{i}].addresses[{j}]"))?);
                }
            }
        }
        let mut ports = Vec::new();
        for (i, p) in s.ports.iter().flatten().enumerate() {
            let at = format!("ports[{i}]");
            ports.push(EndpointPort {
                name: p.name.clone(),
                port: p
                    .port
                    .map(|n| parse_port(n, format!("{at}.port")))
                    .transpose()?,
                protocol: parse_protocol(p.protocol.as_deref(), format!("{at}.protocol"))?,
            });
        }
        let service = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name").cloned());
        let slice = EndpointSlice {
            namespace: NamespaceId(0),
            name: name_of(&s.metadata)?,
            service,
            addresses,
            ports,
        };
        self.slices.push((namespace_of(&s.metadata), slice));
        Ok(())
    }

    pub fn node(&mut self, n: &K8sNode) -> Result<(), InventoryError> {
        let name = name_of(&n.metadata)?;
        let mut addresses = Vec::new();
        let status = n.status.clone().unwrap_or_default();
        for (i, a) in status.addresses.iter().flatten().enumerate() {
            if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP") {
                addresses.push(parse_ip(
                    &a.address,
                    format!("status.addresses[{i}].address"),
                )?);
            }
        }
        let mut pod_cidrs = Vec::new();
        let spec = n.spec.clone().unwrap_or_default();
        for (i, c) in spec.pod_cidrs.iter().flatten().enumerate() {
            let net: ipnet::IpNet = c.parse().map_err(|_| {
                invalid(format!("spec.podCIDRs[{i}]"), format!("invalid CIDR {c:?}"))
            })?;
            pod_cidrs.push(net.trunc());
        }
        let node = self.node_entry(&name);
        node.addresses.extend(addresses);
        node.pod_cidrs.extend(pod_cidrs);
        node.labels
            .extend(n.metadata.labels.clone().unwrap_or_default());
        Ok(())
    }

    pub(super) fn node_entry(&mut self, name: &str) -> &mut Node {
        self.nodes.entry(name.to_owned()).or_insert_with(|| Node {
            name: name.to_owned(),
            addresses: Vec::new(),
            labels: Labels::new(),
            pod_cidrs: Vec::new(),
        })
    }
}

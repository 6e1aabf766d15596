//! Resolution of flow records: time-aware IP → pod, pod → workload, Service ClusterIP →
//! backends and targetPort, node and hostNetwork peers, cluster DNS, and the direction of
//! connectionless flows whose initiator is a guess.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::{
    IdentityError,
    types::{Observation, Peer, Sample, WorkloadRef},
};
use crate::{
    flow::{Endpoint, FlowRecord, Initiator, Protocol},
    inventory::{Inventory, PodId, Resolved, Service, TargetPort},
    policy::{Labels, Selector},
};

/// What identity needs beyond the inventory.
#[derive(Clone, Debug)]
pub struct IdentityOptions {
    /// Pod and Service CIDRs. Addresses inside are never external. Empty: inferred with
    /// [`infer_cluster_cidrs`].
    pub cluster_cidrs: Vec<IpNet>,
    /// Namespace of the cluster DNS pods.
    pub dns_namespace: String,
    /// Labels of the cluster DNS pods.
    pub dns_labels: Labels,
    /// The ephemeral port range (Linux: `net.ipv4.ip_local_port_range`).
    pub ephemeral: (u16, u16),
}

impl Default for IdentityOptions {
    fn default() -> Self {
        Self {
            cluster_cidrs: Vec::new(),
            dns_namespace: "kube-system".into(),
            dns_labels: [("k8s-app".to_owned(), "kube-dns".to_owned())].into(),
            ephemeral: (32768, 60999),
        }
    }
}

/// The /16 (IPv4) or /48 (IPv6) around every pod IP and Service ClusterIP of the inventory,
/// merged. A heuristic: pass the real CIDRs when the pod network is flat with the outside.
pub fn infer_cluster_cidrs(inv: &Inventory) -> Vec<IpNet> {
    let pod_ips = inv
        .pods()
        .iter()
        .filter(|p| !p.host_network)
        .flat_map(|p| p.ips.iter().chain(&p.released_ips));
    let svc_ips = inv.services().iter().flat_map(|s| &s.cluster_ips);
    let mut nets: Vec<IpNet> = pod_ips
        .chain(svc_ips)
        .map(|ip| {
            let len = if ip.is_ipv4() { 16 } else { 48 };
            IpNet::new(*ip, len).expect("prefix fits").trunc()
        })
        .collect();
    // The nodes' podCIDRs, where the cluster assigns them: known before any pod starts.
    nets.extend(inv.nodes().iter().flat_map(|n| n.pod_cidrs.iter().copied()));
    IpNet::aggregate(&nets)
}

/// Resolves flow records to [`Observation`]s against one inventory. Build once, query often.
#[derive(Debug)]
pub struct Identities<'a> {
    inv: &'a Inventory,
    opts: IdentityOptions,
    cluster_cidrs: Vec<IpNet>,
    /// Every pod that held an address, live or finished.
    holders: HashMap<IpAddr, Vec<PodId>>,
    service_by_ip: HashMap<IpAddr, usize>,
    dns_selector: Selector,
    dns_service_known: bool,
}

impl<'a> Identities<'a> {
    pub fn new(inv: &'a Inventory, opts: IdentityOptions) -> Self {
        let cluster_cidrs = if opts.cluster_cidrs.is_empty() {
            infer_cluster_cidrs(inv)
        } else {
            opts.cluster_cidrs.clone()
        };
        let mut holders: HashMap<IpAddr, Vec<PodId>> = HashMap::new();
        for (i, p) in inv.pods().iter().enumerate() {
            if p.is_template || p.host_network {
                continue;
            }
            for ip in p.ips.iter().chain(&p.released_ips) {
                holders.entry(*ip).or_default().push(PodId(i as u32));
            }
        }
        let mut service_by_ip = HashMap::new();
        for (i, s) in inv.services().iter().enumerate() {
            for ip in &s.cluster_ips {
                service_by_ip.entry(*ip).or_insert(i);
            }
        }
        let dns_selector = Selector::from_labels(
            opts.dns_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let mut me = Self {
            inv,
            opts,
            cluster_cidrs,
            holders,
            service_by_ip,
            dns_selector,
            dns_service_known: false,
        };
        me.dns_service_known = inv.services().iter().any(|s| me.is_dns_service(s));
        me
    }

    pub fn inventory(&self) -> &'a Inventory {
        self.inv
    }

    pub fn options(&self) -> &IdentityOptions {
        &self.opts
    }

    /// The cluster CIDRs in use (given or inferred).
    pub fn cluster_cidrs(&self) -> &[IpNet] {
        &self.cluster_cidrs
    }

    pub fn in_cluster_cidrs(&self, ip: IpAddr) -> bool {
        self.cluster_cidrs.iter().any(|n| n.contains(&ip))
    }

    /// The pod that held `ip` at time `at`: the one whose [created, ended) contains it, the
    /// latest created if several do. Without a time, or when none fits (clock skew, missing
    /// timestamps), a live pod, else the one that ended last.
    pub fn pod_at(&self, ip: IpAddr, at: Option<DateTime<Utc>>) -> Option<PodId> {
        let cands = self.holders.get(&ip)?;
        let inv = self.inv;
        let fits = |id: &&PodId| {
            let p = inv.pod(**id);
            at.is_some_and(|t| p.created.is_none_or(|c| c <= t) && p.ended.is_none_or(|e| t < e))
        };
        let latest = |a: &&PodId, b: &&PodId| inv.pod(**a).created.cmp(&inv.pod(**b).created);
        cands
            .iter()
            .filter(fits)
            .max_by(latest)
            .or_else(|| {
                cands
                    .iter()
                    .filter(|id| inv.pod(**id).ended.is_none())
                    .max_by(latest)
            })
            .or_else(|| cands.iter().max_by_key(|id| inv.pod(**id).ended))
            .copied()
    }

    /// The workload of a pod: its owner (through ReplicaSets and Jobs), or the pod itself.
    pub fn workload_of(&self, pod: PodId) -> WorkloadRef {
        let p = self.inv.pod(pod);
        match p.workload {
            Some(w) => {
                let w = self.inv.workload(w);
                WorkloadRef::new(&self.inv.namespace(w.namespace).name, &w.kind, &w.name)
            }
            None => WorkloadRef::new(&self.inv.namespace(p.namespace).name, "Pod", &p.name),
        }
    }

    fn is_dns_service(&self, s: &Service) -> bool {
        self.inv.namespace(s.namespace).name == self.opts.dns_namespace
            && (s.name == "kube-dns"
                || s.selector.as_ref().is_some_and(|sel| {
                    !self.dns_selector.is_everything() && self.dns_selector.matches(sel)
                }))
    }

    fn is_dns_pod(&self, pod: PodId) -> bool {
        let p = self.inv.pod(pod);
        self.inv.namespace(p.namespace).name == self.opts.dns_namespace
            && !self.dns_selector.is_everything()
            && self.dns_selector.matches(&p.labels)
    }

    fn is_ephemeral(&self, port: u16) -> bool {
        (self.opts.ephemeral.0..=self.opts.ephemeral.1).contains(&port)
    }

    /// Whether the pod an endpoint names declares `port` as a container port.
    fn declares(
        &self,
        end: &Endpoint,
        protocol: Protocol,
        port: u16,
        at: Option<DateTime<Utc>>,
    ) -> bool {
        let pod = match end {
            Endpoint::Ip(ip) => self.pod_at(*ip, at),
            Endpoint::Pod { namespace, name } => self.inv.pod_by_name(namespace, name),
            Endpoint::Workload { .. } => None,
        };
        pod.is_some_and(|p| {
            self.inv
                .pod(p)
                .ports
                .iter()
                .any(|c| c.port == port && c.protocol == protocol)
        })
    }

    /// Settles which end is the server of a connectionless flow whose initiator is a guess
    /// (`first_seen`): when its `port` is ephemeral and `src_port` is not, the first packet
    /// seen was a reply, and the record is turned around. A declared containerPort wins.
    pub fn orient(&self, r: &FlowRecord) -> Result<FlowRecord, IdentityError> {
        let (Some(Initiator::FirstSeen), Some(port), Some(src_port)) =
            (r.initiator, r.port, r.src_port)
        else {
            return Ok(r.clone());
        };
        if !self.is_ephemeral(port) || self.declares(&r.dst, r.protocol, port, r.first_seen) {
            return Ok(r.clone());
        }
        if !self.is_ephemeral(src_port) || self.declares(&r.src, r.protocol, src_port, r.first_seen)
        {
            let mut turned = r.clone();
            std::mem::swap(&mut turned.src, &mut turned.dst);
            turned.src_port = Some(port);
            turned.port = Some(src_port);
            return Ok(turned);
        }
        Err(IdentityError::AmbiguousDirection {
            protocol: r.protocol,
            src: r.src.to_string(),
            src_port,
            dst: r.dst.to_string(),
            port,
        })
    }

    /// The peer an endpoint is, at a time. ClusterIPs are not handled here (see [`classify`]).
    ///
    /// [`classify`]: Self::classify
    pub fn peer(&self, end: &Endpoint, at: Option<DateTime<Utc>>) -> Result<Peer, IdentityError> {
        match end {
            Endpoint::Ip(ip) => self.peer_of_ip(*ip, at),
            Endpoint::Pod { namespace, name } => {
                let id = self.inv.pod_by_name(namespace, name).ok_or_else(|| {
                    IdentityError::UnknownEndpoint {
                        endpoint: end.to_string(),
                        what: "pod",
                    }
                })?;
                Ok(self.peer_of_pod(id, None))
            }
            Endpoint::Workload {
                namespace,
                kind,
                name,
            } => {
                let id = self
                    .inv
                    .workload_by_ref(namespace, kind, name)
                    .ok_or_else(|| IdentityError::UnknownEndpoint {
                        endpoint: end.to_string(),
                        what: "workload",
                    })?;
                let w = self.inv.workload(id);
                Ok(Peer::Workload(WorkloadRef::new(
                    namespace, &w.kind, &w.name,
                )))
            }
        }
    }

    fn peer_of_pod(&self, id: PodId, ip: Option<IpAddr>) -> Peer {
        match self.inv.resolve_pod(id, ip) {
            Resolved::Host { ip, node, .. } => self.node_peer(ip, node),
            _ => Peer::Workload(self.workload_of(id)),
        }
    }

    fn node_peer(&self, ip: Option<IpAddr>, node: Option<crate::inventory::NodeId>) -> Peer {
        let ip = ip
            .or_else(|| node.and_then(|n| self.inv.node(n).addresses.first().copied()))
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let name = node.map_or_else(|| ip.to_string(), |n| self.inv.node(n).name.clone());
        Peer::Node { name, ip }
    }

    fn peer_of_ip(&self, ip: IpAddr, at: Option<DateTime<Utc>>) -> Result<Peer, IdentityError> {
        if let Some(pod) = self.pod_at(ip, at) {
            return Ok(self.peer_of_pod(pod, Some(ip)));
        }
        if let Some(node) = self.inv.node_by_ip(ip) {
            return Ok(self.node_peer(Some(ip), Some(node)));
        }
        if self.in_cluster_cidrs(ip) {
            return Err(IdentityError::UnknownClusterAddress { ip });
        }
        Ok(Peer::External(ip))
    }

    /// Turns one flow record into observations: usually one; one per backend workload for a
    /// Service ClusterIP whose receiving side was not recorded; none on error.
    pub fn classify(&self, r: &FlowRecord) -> Result<Vec<Observation>, IdentityError> {
        Ok(self.classify_ends(r)?.into_iter().map(|(o, _)| o).collect())
    }

    /// Like [`classify`](Self::classify), each observation with the connection policies judge
    /// for it: the record oriented, and sent to the backend's address and port when it went to
    /// a Service ClusterIP (what NetworkPolicy sees after DNAT).
    pub fn classify_ends(
        &self,
        r: &FlowRecord,
    ) -> Result<Vec<(Observation, FlowRecord)>, IdentityError> {
        let original = r;
        let r = self.orient(r)?;
        let at = r.first_seen;
        let sample = Sample {
            src: (&r.src).into(),
            src_port: r.src_port,
            dst: (&r.dst).into(),
            port: r.port,
            initiator: r.initiator,
            outcome: r.outcome,
        };
        let src = self.peer(&r.src, at)?;
        // Names belong to the record's destination: kept when orienting did not turn the
        // record around, and only for destinations outside the cluster.
        let names = if r.dst == original.dst {
            original.dst_names.as_slice()
        } else {
            &[]
        };
        let obs = |dst: Peer, port: Option<u16>, judged: FlowRecord| {
            let dst_names = match dst {
                Peer::External(_) => names.to_vec(),
                _ => Vec::new(),
            };
            let o = Observation {
                src: src.clone(),
                dst,
                protocol: r.protocol,
                port,
                seen: at,
                sample: sample.clone(),
                dst_names,
            };
            (o, judged)
        };
        let to_backend = |ip: IpAddr, port: Option<u16>| {
            let mut b = r.clone();
            b.dst = Endpoint::Ip(ip);
            b.port = port;
            b
        };
        let is_dns_port = r.port == Some(53) && matches!(r.protocol, Protocol::Udp | Protocol::Tcp);
        if let Endpoint::Ip(ip) = r.dst
            && let Some(&si) = self.service_by_ip.get(&ip)
            && self.pod_at(ip, at).is_none()
        {
            let svc = &self.inv.services()[si];
            if is_dns_port && self.is_dns_service(svc) {
                let judged = self.through_service(&r).unwrap_or_else(|| r.clone());
                return Ok(vec![obs(Peer::ClusterDns, Some(53), judged)]);
            }
            let backends = self.backends(svc, r.protocol, r.port, at)?;
            return Ok(backends
                .into_iter()
                .map(|(p, port, ip)| obs(p, port, to_backend(ip, port)))
                .collect());
        }
        let dst = match self.peer(&r.dst, at) {
            Err(IdentityError::UnknownClusterAddress { .. })
                if is_dns_port && !self.dns_service_known =>
            {
                Peer::ClusterDns
            }
            other => other?,
        };
        if is_dns_port
            && let Peer::Workload(_) = dst
            && let Endpoint::Ip(ip) = r.dst
            && self.pod_at(ip, at).is_some_and(|p| self.is_dns_pod(p))
        {
            return Ok(vec![obs(Peer::ClusterDns, Some(53), r.clone())]);
        }
        Ok(vec![obs(dst, r.port, r.clone())])
    }

    /// The backend peers of a Service port, with the pod port each receives on and one
    /// address of it.
    fn backends(
        &self,
        svc: &Service,
        protocol: Protocol,
        port: Option<u16>,
        at: Option<DateTime<Utc>>,
    ) -> Result<Vec<(Peer, Option<u16>, IpAddr)>, IdentityError> {
        let mut out: BTreeMap<Peer, (Option<u16>, IpAddr)> = BTreeMap::new();
        for (ip, selected, target) in self.backend_ends(svc, protocol, port, at)? {
            // Slice addresses are looked up at the flow's time; selector-matched pods are known.
            let peer = match selected {
                Some(id) => Ok(self.peer_of_pod(id, None)),
                None => self.peer_of_ip(ip, at),
            };
            if let Ok(peer) = peer {
                out.entry(peer).or_insert((Some(target), ip));
            }
        }
        if out.is_empty() {
            let ns = &self.inv.namespace(svc.namespace).name;
            return Err(IdentityError::NoBackends {
                service: format!("{ns}/{}", svc.name),
            });
        }
        Ok(out
            .into_iter()
            .map(|(p, (port, ip))| (p, port, ip))
            .collect())
    }

    /// The backends of a Service port as (address, the pod when found through the selector,
    /// port the pod receives on): from its EndpointSlices, else from the pods its selector
    /// matches.
    fn backend_ends(
        &self,
        svc: &Service,
        protocol: Protocol,
        port: Option<u16>,
        at: Option<DateTime<Utc>>,
    ) -> Result<Vec<(IpAddr, Option<PodId>, u16)>, IdentityError> {
        let ns = &self.inv.namespace(svc.namespace).name;
        let sp = svc
            .ports
            .iter()
            .find(|p| Some(p.port) == port && p.protocol == protocol)
            .ok_or_else(|| IdentityError::NoServicePort {
                service: format!("{ns}/{}", svc.name),
                port: port.unwrap_or(0),
                protocol,
            })?;
        let target_on = |pod: PodId| -> Option<u16> {
            match &sp.target {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Named(n) => self
                    .inv
                    .pod(pod)
                    .ports
                    .iter()
                    .find(|c| c.name.as_deref() == Some(n) && c.protocol == protocol)
                    .map(|c| c.port),
            }
        };
        let mut out = Vec::new();
        let slices =
            self.inv.endpoint_slices().iter().filter(|s| {
                s.namespace == svc.namespace && s.service.as_deref() == Some(&svc.name)
            });
        for s in slices {
            // The slice's port of the same name is the resolved targetPort.
            let slice_port = s
                .ports
                .iter()
                .find(|p| p.name == sp.name && p.protocol == protocol)
                .and_then(|p| p.port);
            for ip in &s.addresses {
                let pod = self.pod_at(*ip, at);
                if let Some(t) = slice_port.or_else(|| pod.and_then(target_on)) {
                    out.push((*ip, None, t));
                }
            }
        }
        if out.is_empty()
            && let Some(sel) = &svc.selector
        {
            let sel = Selector::from_labels(sel.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            for &id in self.inv.pods_in(svc.namespace) {
                let p = self.inv.pod(id);
                if p.is_template || p.ips.is_empty() || !sel.matches(&p.labels) {
                    continue;
                }
                if let Some(t) = target_on(id) {
                    out.push((p.ips[0], Some(id), t));
                }
            }
        }
        Ok(out)
    }

    /// A record sent to a Service ClusterIP (as the sender's veth sees it, before DNAT), as the
    /// connection NetworkPolicy judges: to a backend pod, on the port it receives on. `None`
    /// when the destination is no ClusterIP, or the Service has no backend for that port.
    /// Backends of one Service normally share the labels policies select on, so one stands
    /// for all.
    pub fn through_service(&self, r: &FlowRecord) -> Option<FlowRecord> {
        let Endpoint::Ip(ip) = r.dst else { return None };
        let &si = self.service_by_ip.get(&ip)?;
        if self.pod_at(ip, r.first_seen).is_some() {
            return None;
        }
        let svc = &self.inv.services()[si];
        let (backend, _, port) = self
            .backend_ends(svc, r.protocol, r.port, r.first_seen)
            .ok()?
            .into_iter()
            .next()?;
        let mut out = r.clone();
        out.dst = Endpoint::Ip(backend);
        out.port = Some(port);
        Some(out)
    }
}

/// The outcome of [`Identities::classify_batch`].
#[derive(Debug, Default)]
pub struct Batch {
    pub observations: Vec<Observation>,
    /// For each observation, at the same index, the connection policies judge for it (see
    /// [`Identities::classify_ends`]).
    pub judged: Vec<FlowRecord>,
    /// Records that yielded nothing, by index, with why.
    pub skipped: Vec<(usize, IdentityError)>,
    /// Sender-side records to a ClusterIP dropped because the receiving side's record of the
    /// same connection is in the batch (it names the real backend and port).
    pub superseded: usize,
}

impl Identities<'_> {
    /// Classifies records together, so that a connection to a ClusterIP recorded at both ends
    /// is learned once, from the receiving side. The ends are matched on protocol, client
    /// address and client port, which DNAT leaves alone.
    pub fn classify_batch(&self, records: &[FlowRecord]) -> Batch {
        let is_service = |e: &Endpoint| matches!(e, Endpoint::Ip(ip) if self.service_by_ip.contains_key(ip) && !self.holders.contains_key(ip));
        let received: std::collections::HashSet<(Protocol, &Endpoint, u16)> = records
            .iter()
            .filter(|r| !is_service(&r.dst))
            .filter_map(|r| Some((r.protocol, &r.src, r.src_port?)))
            .collect();
        let mut out = Batch::default();
        for (i, r) in records.iter().enumerate() {
            if is_service(&r.dst)
                && r.src_port
                    .is_some_and(|p| received.contains(&(r.protocol, &r.src, p)))
            {
                out.superseded += 1;
                continue;
            }
            match self.classify_ends(r) {
                Ok(ends) => {
                    for (o, judged) in ends {
                        out.observations.push(o);
                        out.judged.push(judged);
                    }
                }
                Err(e) => out.skipped.push((i, e)),
            }
        }
        out
    }
}

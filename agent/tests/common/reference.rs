//! A deliberately naive reference evaluator of NetworkPolicy v1, written straight from the API
//! documentation, for agreement tests. It shares nothing with trustmap's evaluator: it reads raw
//! JSON documents itself, keeps no index, scans every policy for every question, and matches
//! CIDRs with its own arithmetic.
//!
//! The CNI-dependent choices are those trustmap documents: a pod reaches itself; a node reaches
//! the pods on it; host-network pods are node endpoints (never isolated, matched by ipBlocks
//! only); ipBlocks match pod IPs too.

use std::{collections::BTreeMap, net::IpAddr};

use serde_json::Value;

type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct Pod {
    namespace: String,
    /// `ns/name` for a pod, `ns/Kind/name` for a workload's template.
    reference: String,
    labels: Labels,
    ips: Vec<IpAddr>,
    host_network: bool,
    node: Option<String>,
    ports: Vec<(Option<String>, i64, String)>,
}

/// One end of a connection, as the reference sees it.
#[derive(Debug, Clone)]
enum End {
    Pod(usize, Option<IpAddr>),
    Host(Option<IpAddr>, Option<String>),
    Outside(IpAddr),
}

pub struct Reference {
    namespaces: BTreeMap<String, Labels>,
    pods: Vec<Pod>,
    /// Node name → addresses.
    nodes: BTreeMap<String, Vec<IpAddr>>,
    policies: Vec<Value>,
}

fn s(v: &Value, path: &str) -> Option<String> {
    v.pointer(path).and_then(Value::as_str).map(str::to_owned)
}

fn labels(v: Option<&Value>) -> Labels {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn pod_from(
    namespace: &str,
    reference: String,
    meta_labels: Option<&Value>,
    spec: Option<&Value>,
) -> Pod {
    let mut ports = Vec::new();
    for list in ["containers", "initContainers"] {
        for c in spec
            .and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for p in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                ports.push((
                    s(p, "/name"),
                    p.get("containerPort").and_then(Value::as_i64).unwrap_or(0),
                    s(p, "/protocol").unwrap_or_else(|| "TCP".into()),
                ));
            }
        }
    }
    Pod {
        namespace: namespace.to_owned(),
        reference,
        labels: labels(meta_labels),
        ips: Vec::new(),
        host_network: spec
            .and_then(|s| s.get("hostNetwork"))
            .and_then(Value::as_bool)
            == Some(true),
        node: spec
            .and_then(|s| s.get("nodeName"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        ports,
    }
}

impl Reference {
    /// Reads documents (lists expanded by the caller or here).
    pub fn new(docs: &[Value]) -> Self {
        let mut r = Self {
            namespaces: BTreeMap::new(),
            pods: Vec::new(),
            nodes: BTreeMap::new(),
            policies: Vec::new(),
        };
        let mut flat = Vec::new();
        for d in docs {
            match d.get("items").and_then(Value::as_array) {
                Some(items) => flat.extend(items.iter().cloned()),
                None => flat.push(d.clone()),
            }
        }
        for d in &flat {
            let kind = s(d, "/kind").unwrap_or_default();
            let name = s(d, "/metadata/name").unwrap_or_default();
            let ns = s(d, "/metadata/namespace").unwrap_or_else(|| "default".into());
            match kind.as_str() {
                "Namespace" => {
                    r.namespaces
                        .entry(name)
                        .or_default()
                        .extend(labels(d.pointer("/metadata/labels")));
                }
                "Node" => {
                    let addrs = d
                        .pointer("/status/addresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|a| {
                            matches!(s(a, "/type").as_deref(), Some("InternalIP" | "ExternalIP"))
                        })
                        .filter_map(|a| s(a, "/address")?.parse::<IpAddr>().ok());
                    r.nodes.entry(name).or_default().extend(addrs);
                }
                "Pod" => {
                    let mut pod = pod_from(
                        &ns,
                        format!("{ns}/{name}"),
                        d.pointer("/metadata/labels"),
                        d.get("spec"),
                    );
                    let phase = s(d, "/status/phase").unwrap_or_default();
                    if phase != "Succeeded" && phase != "Failed" {
                        let many: Vec<IpAddr> = d
                            .pointer("/status/podIPs")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|p| s(p, "/ip")?.parse().ok())
                            .collect();
                        pod.ips = if many.is_empty() {
                            s(d, "/status/podIP")
                                .and_then(|i| i.parse().ok())
                                .into_iter()
                                .collect()
                        } else {
                            many
                        };
                    }
                    if let (Some(node), Some(host)) = (
                        &pod.node,
                        s(d, "/status/hostIP").and_then(|h| h.parse().ok()),
                    ) {
                        r.nodes.entry(node.clone()).or_default().push(host);
                    }
                    if let (true, Some(node)) = (pod.host_network, &pod.node) {
                        r.nodes
                            .entry(node.clone())
                            .or_default()
                            .extend(pod.ips.iter().copied());
                    }
                    r.namespaces.entry(ns).or_default();
                    r.pods.push(pod);
                }
                "Deployment"
                | "StatefulSet"
                | "DaemonSet"
                | "ReplicaSet"
                | "ReplicationController"
                | "Job" => {
                    let t = d.pointer("/spec/template");
                    r.pods.push(pod_from(
                        &ns,
                        format!("{ns}/{kind}/{name}"),
                        t.and_then(|t| t.pointer("/metadata/labels")),
                        t.and_then(|t| t.get("spec")),
                    ));
                    r.namespaces.entry(ns).or_default();
                }
                "CronJob" => {
                    let t = d.pointer("/spec/jobTemplate/spec/template");
                    r.pods.push(pod_from(
                        &ns,
                        format!("{ns}/{kind}/{name}"),
                        t.and_then(|t| t.pointer("/metadata/labels")),
                        t.and_then(|t| t.get("spec")),
                    ));
                    r.namespaces.entry(ns).or_default();
                }
                "NetworkPolicy" => {
                    r.namespaces.entry(ns).or_default();
                    r.policies.push(d.clone());
                }
                _ => {}
            }
        }
        for (name, l) in r.namespaces.iter_mut() {
            l.insert("kubernetes.io/metadata.name".into(), name.clone());
        }
        r
    }

    fn end(&self, e: &str) -> End {
        if let Ok(ip) = e.parse::<IpAddr>() {
            if let Some(i) = self
                .pods
                .iter()
                .position(|p| !p.host_network && p.ips.contains(&ip))
            {
                return End::Pod(i, Some(ip));
            }
            if let Some((n, _)) = self.nodes.iter().find(|(_, a)| a.contains(&ip)) {
                return End::Host(Some(ip), Some(n.clone()));
            }
            return End::Outside(ip);
        }
        let i = self
            .pods
            .iter()
            .position(|p| p.reference == e)
            .unwrap_or_else(|| panic!("reference knows no {e}"));
        let p = &self.pods[i];
        if p.host_network {
            End::Host(p.ips.first().copied(), p.node.clone())
        } else {
            End::Pod(i, p.ips.first().copied())
        }
    }

    /// Whether `src` may open `protocol`/`port` to `dst` (endpoints as in flow records).
    pub fn allowed(&self, src: &str, dst: &str, protocol: &str, port: Option<u16>) -> bool {
        let (src, dst) = (self.end(src), self.end(dst));
        // A pod reaches itself; a workload's template stands for several pods, which do not.
        if let (End::Pod(a, _), End::Pod(b, _)) = (&src, &dst)
            && a == b
            && self.pods[*a].reference.matches('/').count() == 1
        {
            return true;
        }
        let egress = match &src {
            End::Pod(i, _) => self.side("Egress", *i, &dst, &dst, protocol, port),
            _ => true,
        };
        let ingress = match &dst {
            End::Pod(i, _) => {
                let local =
                    matches!(&src, End::Host(_, Some(n)) if self.pods[*i].node.as_ref() == Some(n));
                local || self.side("Ingress", *i, &src, &dst, protocol, port)
            }
            _ => true,
        };
        egress && ingress
    }

    fn side(
        &self,
        dir: &str,
        pod: usize,
        other: &End,
        dst: &End,
        protocol: &str,
        port: Option<u16>,
    ) -> bool {
        let p = &self.pods[pod];
        let mut isolated = false;
        for pol in &self.policies {
            let ns = s(pol, "/metadata/namespace").unwrap_or_else(|| "default".into());
            let empty = Value::Object(Default::default());
            let sel = pol.pointer("/spec/podSelector").unwrap_or(&empty);
            if ns != p.namespace || !selector_matches(sel, &p.labels) || !applies(pol, dir) {
                continue;
            }
            isolated = true;
            let (rules_key, peers_key) = if dir == "Ingress" {
                ("ingress", "from")
            } else {
                ("egress", "to")
            };
            for rule in pol
                .pointer(&format!("/spec/{rules_key}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if self.peers_match(rule.get(peers_key), &ns, other)
                    && self.ports_match(rule.get("ports"), dst, protocol, port)
                {
                    return true;
                }
            }
        }
        !isolated
    }

    fn peers_match(&self, peers: Option<&Value>, policy_ns: &str, other: &End) -> bool {
        let list = peers.and_then(Value::as_array).cloned().unwrap_or_default();
        if list.is_empty() {
            return true;
        }
        list.iter().any(|peer| {
            if let Some(b) = peer.get("ipBlock") {
                let ip = match other {
                    End::Pod(_, ip) | End::Host(ip, _) => *ip,
                    End::Outside(ip) => Some(*ip),
                };
                let Some(ip) = ip else { return false };
                let in_cidr = s(b, "/cidr").is_some_and(|c| cidr_contains(&c, ip));
                let excepted = b
                    .get("except")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|e| e.as_str().is_some_and(|c| cidr_contains(c, ip)));
                return in_cidr && !excepted;
            }
            let End::Pod(i, _) = other else { return false };
            let o = &self.pods[*i];
            let ns_ok = match peer.get("namespaceSelector") {
                Some(sel) => selector_matches(sel, &self.namespaces[&o.namespace]),
                None => o.namespace == policy_ns,
            };
            let pod_ok = peer
                .get("podSelector")
                .is_none_or(|sel| selector_matches(sel, &o.labels));
            ns_ok && pod_ok
        })
    }

    fn ports_match(
        &self,
        ports: Option<&Value>,
        dst: &End,
        protocol: &str,
        port: Option<u16>,
    ) -> bool {
        let list = ports.and_then(Value::as_array).cloned().unwrap_or_default();
        if list.is_empty() {
            return true;
        }
        list.iter().any(|p| {
            let proto = s(p, "/protocol").unwrap_or_else(|| "TCP".into());
            if proto != protocol {
                return false;
            }
            match (p.get("port"), port) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(Value::Number(n)), Some(flow)) => {
                    let start = n.as_i64().unwrap_or(-1);
                    let end = p.get("endPort").and_then(Value::as_i64).unwrap_or(start);
                    (start..=end).contains(&i64::from(flow))
                }
                (Some(Value::String(name)), Some(flow)) => match dst {
                    End::Pod(i, _) => self.pods[*i].ports.iter().any(|(n, num, pr)| {
                        n.as_deref() == Some(name.as_str())
                            && *pr == proto
                            && *num == i64::from(flow)
                    }),
                    _ => false,
                },
                _ => false,
            }
        })
    }
}

/// Ingress always applies unless policyTypes says otherwise; Egress when listed, or when
/// policyTypes is absent and there are egress rules.
fn applies(pol: &Value, dir: &str) -> bool {
    let types = pol
        .pointer("/spec/policyTypes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if types.is_empty() {
        return dir == "Ingress"
            || pol
                .pointer("/spec/egress")
                .and_then(Value::as_array)
                .is_some_and(|e| !e.is_empty());
    }
    types.iter().any(|t| t.as_str() == Some(dir))
}

fn selector_matches(sel: &Value, labels: &Labels) -> bool {
    let by_label = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let by_expr = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = s(e, "/key").unwrap_or_default();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let have = labels.get(&key).map(String::as_str);
            match s(e, "/operator").as_deref() {
                Some("In") => have.is_some_and(|h| values.contains(&h)),
                Some("NotIn") => have.is_none_or(|h| !values.contains(&h)),
                Some("Exists") => have.is_some(),
                Some("DoesNotExist") => have.is_none(),
                other => panic!("reference: operator {other:?}"),
            }
        });
    by_label && by_expr
}

/// Prefix arithmetic on 128-bit numbers; IPv4 is compared only with IPv4.
fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let (addr, len) = cidr.split_once('/').expect("reference: CIDR has a prefix");
    let len: u32 = len.parse().expect("reference: prefix length");
    let net: IpAddr = addr.parse().expect("reference: CIDR address");
    let (a, b, bits) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(u32::from(n)), u128::from(u32::from(i)), 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
        _ => return false,
    };
    if len == 0 {
        return true;
    }
    let shift = bits - len;
    (a >> shift) == (b >> shift)
}

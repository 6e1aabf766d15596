//! Random but reproducible clusters: namespaces, workloads, pods, nodes and NetworkPolicies as
//! JSON documents, drawn from small vocabularies so that selectors, ports and CIDRs often hit.

use serde_json::{Value, json};

/// SplitMix64: small, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const APPS: &[&str] = &["web", "api", "db", "cache", "worker", "auth", "ui", "batch"];
const TIERS: &[&str] = &["fe", "be", "data"];
const TEAMS: &[&str] = &["a", "b", "c"];
const KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicaSet",
];
/// Flow ports: every numeric port the generated policies and containers use, and a few more.
pub const PORTS: &[u16] = &[53, 80, 443, 3868, 5000, 5003, 5005, 8080, 9090, 9100];
pub const PROTOCOLS: &[&str] = &["TCP", "TCP", "TCP", "UDP", "SCTP", "ICMP"];

/// A generated cluster: its documents and the endpoints flows may use.
pub struct Cluster {
    pub docs: Vec<Value>,
    pub endpoints: Vec<String>,
}

fn container_ports(rng: &mut Rng) -> Value {
    let all = [
        json!({"name": "http", "containerPort": 8080}),
        json!({"name": "grpc", "containerPort": 9090, "protocol": "TCP"}),
        json!({"name": "dns", "containerPort": 53, "protocol": "UDP"}),
        json!({"name": "metrics", "containerPort": 9100, "protocol": if rng.chance(30) { "UDP" } else { "TCP" }}),
        json!({"name": "diameter", "containerPort": 3868, "protocol": "SCTP"}),
        json!({"containerPort": 5003}),
    ];
    Value::Array(all.into_iter().filter(|_| rng.chance(45)).collect())
}

fn pod_labels(rng: &mut Rng) -> Value {
    let mut l = serde_json::Map::new();
    if rng.chance(95) {
        l.insert("app".into(), json!(rng.pick(APPS)));
    }
    if rng.chance(70) {
        l.insert("tier".into(), json!(rng.pick(TIERS)));
    }
    if rng.chance(20) {
        l.insert("canary".into(), json!("true"));
    }
    Value::Object(l)
}

fn selector(rng: &mut Rng, for_namespaces: bool) -> Value {
    let (key, values): (&str, &[&str]) = if for_namespaces {
        if rng.chance(50) {
            ("team", TEAMS)
        } else {
            ("kubernetes.io/metadata.name", &["ns0", "ns1", "ns2", "ns3"])
        }
    } else if rng.chance(60) {
        ("app", APPS)
    } else {
        ("tier", TIERS)
    };
    match rng.below(6) {
        0 => json!({}),
        1 | 2 => json!({"matchLabels": {key: rng.pick(values)}}),
        3 => {
            json!({"matchExpressions": [{"key": key, "operator": "In", "values": [rng.pick(values), rng.pick(values)]}]})
        }
        4 => {
            json!({"matchExpressions": [{"key": key, "operator": "NotIn", "values": [rng.pick(values)]}]})
        }
        _ => {
            let op = if rng.chance(50) {
                "Exists"
            } else {
                "DoesNotExist"
            };
            let k = if for_namespaces { "env" } else { "canary" };
            json!({"matchExpressions": [{"key": k, "operator": op}], "matchLabels": {key: rng.pick(values)}})
        }
    }
}

fn peer(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!({"podSelector": selector(rng, false)}),
        1 => json!({"namespaceSelector": selector(rng, true)}),
        2 => json!({"podSelector": selector(rng, false), "namespaceSelector": selector(rng, true)}),
        3 => match rng.below(4) {
            0 => json!({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}),
            1 => json!({"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}),
            2 => json!({"ipBlock": {"cidr": "fd00::/16"}}),
            _ => {
                json!({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "192.168.0.0/16"]}})
            }
        },
        _ => json!({"ipBlock": {"cidr": "192.168.0.0/24"}}),
    }
}

fn port(rng: &mut Rng) -> Value {
    let proto = *rng.pick(&["TCP", "UDP", "SCTP"]);
    let mut p = match rng.below(6) {
        0 => json!({"port": *rng.pick(PORTS)}),
        1 => json!({"port": 5000, "endPort": 5004}),
        2 => json!({"port": *rng.pick(&["http", "grpc", "dns", "metrics", "diameter", "nope"])}),
        3 => json!({}),
        _ => json!({"port": *rng.pick(&[80, 443, 8080, 53])}),
    };
    if rng.chance(60) {
        p["protocol"] = json!(proto);
    }
    p
}

fn list_of(rng: &mut Rng, f: fn(&mut Rng) -> Value) -> Option<Value> {
    match rng.below(5) {
        0 => None,
        1 => Some(json!([])),
        _ => Some(Value::Array(
            (0..1 + rng.below(3)).map(|_| f(rng)).collect(),
        )),
    }
}

fn rules(rng: &mut Rng, peers_key: &str) -> Option<Value> {
    match rng.below(5) {
        0 => None,
        1 => Some(json!([])),
        _ => Some(Value::Array(
            (0..1 + rng.below(3))
                .map(|_| {
                    let mut r = serde_json::Map::new();
                    if let Some(p) = list_of(rng, peer) {
                        r.insert(peers_key.into(), p);
                    }
                    if let Some(p) = list_of(rng, port) {
                        r.insert("ports".into(), p);
                    }
                    Value::Object(r)
                })
                .collect(),
        )),
    }
}

/// A NetworkPolicy in namespace `ns`.
pub fn policy(rng: &mut Rng, ns: &str, name: &str) -> Value {
    let mut spec = serde_json::Map::new();
    spec.insert("podSelector".into(), selector(rng, false));
    match rng.below(4) {
        0 => {}
        1 => drop(spec.insert("policyTypes".into(), json!(["Ingress"]))),
        2 => drop(spec.insert("policyTypes".into(), json!(["Egress"]))),
        _ => drop(spec.insert("policyTypes".into(), json!(["Ingress", "Egress"]))),
    }
    if let Some(r) = rules(rng, "from") {
        spec.insert("ingress".into(), r);
    }
    if let Some(r) = rules(rng, "to") {
        spec.insert("egress".into(), r);
    }
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// A cluster with `workloads` workload manifests, about as many running pods, and `policies`
/// policies over `namespaces` namespaces (one of them referenced but not declared).
pub fn cluster(seed: u64, namespaces: usize, workloads: usize, policies: usize) -> Cluster {
    let mut rng = Rng::new(seed);
    let mut docs = Vec::new();
    let mut endpoints = Vec::new();
    for n in 0..namespaces.saturating_sub(1) {
        let mut labels = json!({"team": rng.pick(TEAMS)});
        if rng.chance(50) {
            labels["env"] = json!("prod");
        }
        docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns{n}"), "labels": labels}}));
    }
    let ns_name = |rng: &mut Rng| format!("ns{}", rng.below(namespaces));
    for n in 0..3 {
        docs.push(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node{n}")},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.0.{}", n + 1)}]}}));
        endpoints.push(format!("192.168.0.{}", n + 1));
    }
    for w in 0..workloads {
        let ns = ns_name(&mut rng);
        let kind = *rng.pick(KINDS);
        let name = format!("w{w}");
        let template = json!({"metadata": {"labels": pod_labels(&mut rng)},
            "spec": {"hostNetwork": rng.chance(4), "containers": [{"name": "c", "ports": container_ports(&mut rng)}]}});
        let spec = if kind == "CronJob" {
            json!({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}})
        } else {
            json!({"selector": {}, "template": template})
        };
        let api = match kind {
            "Job" | "CronJob" => "batch/v1",
            _ => "apps/v1",
        };
        docs.push(json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}));
        endpoints.push(format!("{ns}/{kind}/{name}"));
    }
    for p in 0..workloads {
        let ns = ns_name(&mut rng);
        let host_network = rng.chance(5);
        let node = rng.below(3);
        let ip = if host_network {
            format!("192.168.0.{}", node + 1)
        } else {
            format!("10.{}.{}.{}", rng.below(3), p / 250, p % 250 + 1)
        };
        let mut ips = vec![json!({"ip": ip})];
        if !host_network && rng.chance(30) {
            ips.push(json!({"ip": format!("fd00::{:x}", p + 1)}));
            endpoints.push(format!("fd00::{:x}", p + 1));
        }
        let phase = if rng.chance(3) {
            "Succeeded"
        } else {
            "Running"
        };
        docs.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{p}"), "namespace": ns, "labels": pod_labels(&mut rng)},
            "spec": {"nodeName": format!("node{node}"), "hostNetwork": host_network, "containers": [{"name": "c", "ports": container_ports(&mut rng)}]},
            "status": {"phase": phase, "podIP": ip, "podIPs": ips, "hostIP": format!("192.168.0.{}", node + 1)}}));
        if !host_network {
            endpoints.push(ip);
        }
        endpoints.push(format!("{ns}/p{p}"));
    }
    for i in 0..policies {
        let ns = ns_name(&mut rng);
        docs.push(policy(&mut rng, &ns, &format!("np{i}")));
    }
    endpoints.extend(
        [
            "203.0.113.5",
            "203.0.113.200",
            "198.51.100.7",
            "10.1.2.3",
            "2001:db8::1",
            "192.168.0.77",
        ]
        .map(String::from),
    );
    Cluster { docs, endpoints }
}

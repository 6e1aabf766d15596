//! Evaluator throughput on a large synthetic cluster: 20 000 pods (2 000 workloads of 10 pods
//! in 100 namespaces), 2 000 NetworkPolicies, 1 000 000 flows between pod IPs and external
//! addresses; and the same with 200 ClusterNetworkPolicies (100 per tier) around them. Run with
//! `cargo bench -p trustmap --bench evaluator`.

use std::{hint::black_box, net::IpAddr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use k8s_openapi::api::{core::v1::Pod, networking::v1::NetworkPolicy};
use serde_json::{Value, json};
use trustmap::{
    flow::{Endpoint, FlowRecord, Protocol},
    inventory::{Inventory, InventoryBuilder},
    policy::{
        AdminPolicy, Connection, Evaluator, Policy,
        admin::{AdminObject, CnpSpec},
    },
};

const NAMESPACES: usize = 100;
const WORKLOADS_PER_NS: usize = 20;
const PODS_PER_WORKLOAD: usize = 10;
const FLOWS: usize = 1_000_000;

/// SplitMix64, so that runs are comparable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

fn pod_ip(ns: usize, w: usize, i: usize) -> IpAddr {
    let n = (ns * WORKLOADS_PER_NS + w) * PODS_PER_WORKLOAD + i;
    IpAddr::from([10, 64 + (n >> 16) as u8, (n >> 8) as u8, n as u8])
}

fn np(ns: usize, name: &str, spec: Value) -> Policy {
    let v = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": format!("ns{ns}")}, "spec": spec});
    let np: NetworkPolicy = serde_json::from_value(v).expect("valid policy");
    Policy::from_k8s(&np).expect("valid policy")
}

/// Per namespace: a default deny, DNS egress, and per workload one ingress policy (from its
/// callers in the namespace, and from a monitoring namespace on a named port) — 20 per
/// namespace, 2 000 in all.
fn cluster() -> (Inventory, Vec<Policy>) {
    let mut b = InventoryBuilder::new();
    let mut policies = Vec::new();
    for ns in 0..NAMESPACES {
        b.namespace(&serde_json::from_value(json!({"metadata": {"name": format!("ns{ns}"),
            "labels": {"team": format!("t{}", ns % 7), "purpose": if ns == 0 { "monitoring" } else { "apps" }}}})).unwrap())
            .unwrap();
        for w in 0..WORKLOADS_PER_NS {
            let tier = ["fe", "be", "data"][w % 3];
            for i in 0..PODS_PER_WORKLOAD {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("w{w}-{i}"), "namespace": format!("ns{ns}"),
                        "labels": {"app": format!("w{w}"), "tier": tier}},
                    "spec": {"nodeName": format!("node{}", (ns + i) % 50), "containers": [{"name": "c",
                        "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9100}]}]},
                    "status": {"phase": "Running", "podIP": pod_ip(ns, w, i).to_string()}}))
                .unwrap();
                b.pod(&pod).unwrap();
            }
        }
        policies.push(np(
            ns,
            "default-deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ));
        policies.push(np(ns, "allow-egress", json!({"podSelector": {}, "egress": [
            {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                     "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}], "ports": [{"port": 53, "protocol": "UDP"}]},
            {"to": [{"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["be", "data"]}]}}],
             "ports": [{"port": "http"}, {"port": 5432}]},
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}], "ports": [{"port": 443}]}]})));
        for w in 2..WORKLOADS_PER_NS {
            policies.push(np(ns, &format!("w{w}-ingress"), json!({
                "podSelector": {"matchLabels": {"app": format!("w{w}")}},
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": format!("w{}", (w + 1) % WORKLOADS_PER_NS)}}},
                              {"podSelector": {"matchLabels": {"tier": "fe"}}}],
                     "ports": [{"port": "http"}, {"port": 8000, "endPort": 8100}]},
                    {"from": [{"namespaceSelector": {"matchLabels": {"purpose": "monitoring"}}}], "ports": [{"port": "metrics"}]},
                    {"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]})));
        }
    }
    (b.build(), policies)
}

/// 200 ClusterNetworkPolicies, 100 per tier: each selects the namespaces of one team and has
/// an ingress rule from another team's namespaces and an egress rule to a network, on a port of
/// its own, with Deny, Pass and Accept in turn; priorities from 0 to 49.
fn admin_policies() -> Vec<AdminPolicy> {
    (0..200)
        .map(|i| {
            let tier = if i < 100 { "Admin" } else { "Baseline" };
            let action = ["Deny", "Pass", "Accept"][i % 3];
            let v = json!({"apiVersion": "policy.networking.k8s.io/v1alpha2",
                "kind": "ClusterNetworkPolicy", "metadata": {"name": format!("cnp{i}")},
                "spec": {"tier": tier, "priority": i % 50,
                    "subject": {"namespaces": {"matchLabels": {"team": format!("t{}", i % 7)}}},
                    "ingress": [{"action": action,
                        "from": [{"namespaces": {"matchLabels": {"team": format!("t{}", (i + 1) % 7)}}}],
                        "protocols": [{"tcp": {"destinationPort": {"number": 8000 + i}}}]}],
                    "egress": [{"action": action, "to": [{"networks": ["192.0.2.0/24"]}],
                        "protocols": [{"tcp": {"destinationPort": {"number": 9000 + i}}}]}]}});
            let o: AdminObject<CnpSpec> = serde_json::from_value(v).expect("valid policy");
            AdminPolicy::from_cnp(&o).expect("valid policy")
        })
        .collect()
}

/// Flows: mostly between pods (callers of a workload, same tier, other namespaces), some to
/// and from external addresses, on a handful of ports.
fn flows(n: usize) -> Vec<FlowRecord> {
    let mut rng = Rng(42);
    let ports = [8080, 8080, 8050, 9100, 5432, 443, 53, 22];
    (0..n)
        .map(|_| {
            let (ns, w) = (rng.below(NAMESPACES), rng.below(WORKLOADS_PER_NS));
            let src = Endpoint::Ip(pod_ip(ns, w, rng.below(PODS_PER_WORKLOAD)));
            let dst = match rng.below(10) {
                0 => Endpoint::Ip(IpAddr::from([192, 0, 2, rng.below(250) as u8])),
                1 | 2 => Endpoint::Ip(pod_ip(
                    rng.below(NAMESPACES),
                    rng.below(WORKLOADS_PER_NS),
                    rng.below(PODS_PER_WORKLOAD),
                )),
                _ => Endpoint::Ip(pod_ip(
                    ns,
                    rng.below(WORKLOADS_PER_NS),
                    rng.below(PODS_PER_WORKLOAD),
                )),
            };
            let port = ports[rng.below(ports.len())];
            let protocol = if port == 53 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            let (src, dst) = if rng.below(20) == 0 {
                (Endpoint::Ip(IpAddr::from([192, 0, 2, 7])), src)
            } else {
                (src, dst)
            };
            FlowRecord::new(protocol, src, dst, Some(port))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (inventory, policies) = cluster();
    assert_eq!(inventory.pods().len(), 20_000);
    assert_eq!(policies.len(), 2_000);
    let records = flows(FLOWS);

    let mut g = c.benchmark_group("evaluator");
    g.sample_size(10);
    g.bench_function("index 20k pods x 2k policies", |b| {
        b.iter(|| black_box(Evaluator::new(&inventory, &policies)));
    });
    let ev = Evaluator::new(&inventory, &policies);
    let conns: Vec<Connection> = records.iter().map(|r| ev.connection(r).unwrap()).collect();
    let allowed = conns.iter().filter(|c| ev.evaluate(c).allowed()).count();
    eprintln!("{allowed} of {FLOWS} flows allowed");

    g.throughput(Throughput::Elements(FLOWS as u64));
    g.bench_function("evaluate 1M resolved flows", |b| {
        b.iter(|| conns.iter().filter(|c| ev.evaluate(c).allowed()).count());
    });
    g.bench_function("resolve IPs and evaluate 1M flows", |b| {
        b.iter(|| {
            records
                .iter()
                .filter(|r| ev.evaluate(&ev.connection(r).unwrap()).allowed())
                .count()
        });
    });
    let admin = admin_policies();
    let layered = Evaluator::new(&inventory, &policies).with_admin(&admin);
    let allowed = conns
        .iter()
        .filter(|c| layered.evaluate(c).allowed())
        .count();
    eprintln!("{allowed} of {FLOWS} flows allowed with 200 ClusterNetworkPolicies");
    g.bench_function(
        "evaluate 1M resolved flows, 200 ClusterNetworkPolicies added",
        |b| {
            b.iter(|| {
                conns
                    .iter()
                    .filter(|c| layered.evaluate(c).allowed())
                    .count()
            });
        },
    );
    // Explanations build strings; measured on the first 100 000 flows to keep the run short.
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("explain 100k flows", |b| {
        b.iter(|| {
            conns[..100_000]
                .iter()
                .map(|c| ev.explain(c).egress.policies.len())
                .sum::<usize>()
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

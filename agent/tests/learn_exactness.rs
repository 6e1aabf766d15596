//! Exactness of learning, on random clusters and flow sets: evaluated by the policy engine,
//! the learned policies allow every observed flow and deny every other flow that involves a
//! learned workload — other ports, other protocols, other peers — except what the CNI exempts
//! (self traffic, a node to its own pods) and what NetworkPolicy cannot express (ICMP).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use proptest::prelude::*;
use serde_json::{Value, json};
use trustmap::{
    flow::{Endpoint, FlowRecord, Initiator, Protocol},
    graph::FlowGraph,
    identity::{Identities, IdentityOptions, WorkloadSelectors},
    inventory::{Inventory, Manifests, PodId, Resolved},
    policy::Evaluator,
    synth::{self, SynthOptions},
};

const KINDS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet", "Pod"];
const PORTS: &[u16] = &[80, 443, 5432, 8080, 9090];
const PROBE_PORTS: &[u16] = &[80, 443, 5432, 8080, 9090, 1234];
const PROTOS: &[Protocol] = &[
    Protocol::Tcp,
    Protocol::Tcp,
    Protocol::Udp,
    Protocol::Sctp,
    Protocol::Icmp,
];
const NODES: &[&str] = &["192.168.0.1", "192.168.0.2"];
const EXTERNALS: &[&str] = &["203.0.113.7", "203.0.113.9", "2001:db8::5"];

/// A generated workload: namespace, kind, pods, node of each pod, named container ports.
#[derive(Clone, Debug)]
struct W {
    ns: usize,
    kind: &'static str,
    pods: usize,
    nodes: Vec<usize>,
    ports: Vec<(u16, Option<&'static str>, Protocol)>,
    shared_tier: bool,
}

fn workload() -> impl Strategy<Value = W> {
    (
        0..3usize,
        prop::sample::select(KINDS),
        1..3usize,
        prop::collection::vec(0..2usize, 2),
        prop::collection::vec(
            (prop::sample::select(PORTS), any::<bool>(), 0..3usize),
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(ns, kind, pods, nodes, ports, shared_tier)| W {
            ns,
            kind,
            pods: if kind == "Pod" { 1 } else { pods },
            nodes,
            ports: {
                let mut seen = BTreeSet::new();
                ports
                    .into_iter()
                    .filter(|(p, _, pr)| seen.insert((*p, *pr)))
                    .map(|(p, named, pr)| {
                        let proto = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][pr];
                        let name = named.then_some(match p {
                            80 => "http",
                            443 => "https",
                            5432 => "pg",
                            8080 => "web",
                            _ => "metrics",
                        });
                        (p, name, proto)
                    })
                    .collect()
            },
            shared_tier,
        })
}

/// One end of a generated flow: (workload, pod) or a node or an external address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Pod(usize, usize),
    Node(usize),
    External(usize),
}

struct Built {
    inv: Inventory,
    /// The group (learned identity) of each end, for the expected verdicts.
    ends: Vec<(End, Resolved)>,
}

fn pod_ip(w: usize, p: usize, ns: usize) -> String {
    format!("10.{ns}.{w}.{}", p + 1)
}

fn manifests(ws: &[W]) -> Vec<Value> {
    let mut docs = vec![];
    for n in 0..3 {
        docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns{n}")}}));
    }
    for (i, ip) in NODES.iter().enumerate() {
        docs.push(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node{i}")},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}),
        );
    }
    for (wi, w) in ws.iter().enumerate() {
        let ns = format!("ns{}", w.ns);
        let name = format!("w{wi}");
        let mut labels = json!({"app": name});
        if w.shared_tier {
            labels["tier"] = json!("shared");
        }
        let ports: Vec<Value> = w
            .ports
            .iter()
            .map(|(p, n, proto)| {
                let mut v = json!({"containerPort": p, "protocol": proto.as_str()});
                if let Some(n) = n {
                    v["name"] = json!(n);
                }
                v
            })
            .collect();
        let containers = json!([{"name": "c", "image": "x", "ports": ports}]);
        let owner = match w.kind {
            "Deployment" => {
                docs.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"selector": {"matchLabels": {"app": name}},
                             "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}}}}));
                Some(("ReplicaSet", format!("{name}-5f7c8")))
            }
            "StatefulSet" => Some(("StatefulSet", name.clone())),
            "DaemonSet" => Some(("DaemonSet", name.clone())),
            _ => None,
        };
        for p in 0..w.pods {
            let mut pl = labels.clone();
            match w.kind {
                "Deployment" => pl["pod-template-hash"] = json!("5f7c8"),
                "StatefulSet" => {
                    pl["statefulset.kubernetes.io/pod-name"] = json!(format!("{name}-{p}"));
                    pl["controller-revision-hash"] = json!(format!("{name}-abc"));
                }
                "DaemonSet" => pl["controller-revision-hash"] = json!("xyz"),
                _ => {}
            }
            let mut meta = json!({"name": format!("{name}-{p}"), "namespace": ns, "labels": pl});
            if let Some((kind, oname)) = &owner {
                meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": oname, "uid": "u", "controller": true}]);
            }
            docs.push(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": {"nodeName": format!("node{}", w.nodes[p % 2]), "containers": containers},
                "status": {"phase": "Running", "podIP": pod_ip(wi, p, w.ns)}}));
        }
    }
    docs
}

fn build(ws: &[W]) -> Built {
    let text: String = manifests(ws).iter().map(|d| format!("{d}\n")).collect();
    let mut m = Manifests::new();
    m.add_text(Path::new("generated.json"), &text)
        .unwrap_or_else(|e| panic!("generated manifests load: {e}"));
    let inv = m.finish().inventory;
    let mut ends = vec![];
    for (wi, w) in ws.iter().enumerate() {
        for p in 0..w.pods {
            let ip: IpAddr = pod_ip(wi, p, w.ns).parse().unwrap();
            ends.push((End::Pod(wi, p), inv.resolve_ip(ip)));
        }
    }
    for (i, ip) in NODES.iter().enumerate() {
        ends.push((End::Node(i), inv.resolve_ip(ip.parse().unwrap())));
    }
    for (i, ip) in EXTERNALS.iter().enumerate() {
        ends.push((End::External(i), inv.resolve_ip(ip.parse().unwrap())));
    }
    Built { inv, ends }
}

/// What learning sees an end as: the workload, or the address.
fn group(e: End) -> End {
    match e {
        End::Pod(w, _) => End::Pod(w, 0),
        other => other,
    }
}

fn ip_of(b: &Built, e: End) -> IpAddr {
    b.ends
        .iter()
        .find(|(x, _)| *x == e)
        .unwrap()
        .1
        .ip()
        .unwrap()
}

fn node_of(inv: &Inventory, r: &Resolved) -> Option<u32> {
    match r {
        Resolved::Pod { pod, .. } => inv.pod(*pod).node.map(|n| n.0),
        Resolved::Host { node, .. } => node.map(|n| n.0),
        _ => None,
    }
}

/// With `layered`, the learned policies are judged together with the layers of
/// `learn --layers`: pods of learned namespaces that no learned policy isolates are then denied
/// by the Baseline tier (to and from pods, and egress to every address), instead of open.
fn check_exact(
    ws: Vec<W>,
    raw_flows: Vec<(usize, usize, usize, usize)>,
    layered: bool,
    format: synth::PolicyFormat,
) -> Result<(), TestCaseError> {
    // Cilium matches nodes by entity (host, remote-node), never one by one: learning one node
    // allows them all.
    let cilium = format == synth::PolicyFormat::Cilium;
    let group = |e: End| match group(e) {
        End::Node(_) if cilium => End::Node(0),
        g => g,
    };
    let b = build(&ws);
    let n = b.ends.len();
    // Flows between ends (not both outside the cluster).
    let mut observed: BTreeSet<(End, End, Protocol, Option<u16>)> = BTreeSet::new();
    let mut records = vec![];
    for (s, d, pr, po) in raw_flows {
        let (s, d) = (b.ends[s % n].0, b.ends[d % n].0);
        if !matches!(s, End::Pod(..)) && !matches!(d, End::Pod(..)) {
            continue;
        }
        let proto = PROTOS[pr % PROTOS.len()];
        let port = proto.has_ports().then(|| PORTS[po % PORTS.len()]);
        let mut r = FlowRecord::new(
            proto,
            Endpoint::Ip(ip_of(&b, s)),
            Endpoint::Ip(ip_of(&b, d)),
            port,
        );
        r.initiator = Some(Initiator::Syn);
        r.src_port = port.map(|_| 40000);
        records.push(r);
        if proto.has_ports() {
            observed.insert((group(s), group(d), proto, port));
        }
    }
    let ids = Identities::new(&b.inv, IdentityOptions::default());
    let batch = ids.classify_batch(&records);
    prop_assert!(batch.skipped.is_empty(), "skipped: {:?}", batch.skipped);
    let mut graph = FlowGraph::new();
    for o in &batch.observations {
        graph.observe(o);
    }
    let selectors = WorkloadSelectors::new(&ids);
    let ctx = synth::Context {
        identities: &ids,
        selectors: &selectors,
        cluster_cidrs: ids.cluster_cidrs(),
    };
    let opts = SynthOptions {
        format,
        ..SynthOptions::default()
    };
    let learned = synth::learn(&ctx, &graph, &opts);
    let policies = learned.to_policies().expect("learned policies are valid");
    let learned_namespaces: BTreeSet<String> = learned
        .policies
        .iter()
        .map(|p| p.namespace.clone())
        .collect();
    let layers = if layered {
        let ns: Vec<String> = learned_namespaces.iter().cloned().collect();
        synth::layers::layers(&ns, &SynthOptions::default(), None).expect("valid layers")
    } else {
        Vec::new()
    };
    let admin: Vec<_> = layers.iter().map(|l| l.policy.clone()).collect();
    let ev = Evaluator::new(&b.inv, &policies).with_admin(&admin);
    // A pod of a learned namespace: under the baseline when no learned policy isolates it.
    let in_layers = |e: End| {
        layered
            && matches!(e, End::Pod(w, _) if learned_namespaces.contains(&format!("ns{}", ws[w].ns)))
    };
    // Subjects: workloads with at least one ported edge.
    let subjects: BTreeSet<usize> = observed
        .iter()
        .flat_map(|(s, d, _, _)| [*s, *d])
        .filter_map(|e| match e {
            End::Pod(w, _) => Some(w),
            _ => None,
        })
        .collect();
    let is_subject = |e: End| matches!(e, End::Pod(w, _) if subjects.contains(&w));
    // Also template pods stand for their workloads' pods.
    let mut ends = b.ends.clone();
    for (wi, w) in ws.iter().enumerate() {
        if w.kind == "Deployment" {
            let wid = b
                .inv
                .workload_by_ref(&format!("ns{}", w.ns), "Deployment", &format!("w{wi}"))
                .unwrap();
            let t: PodId = b.inv.workload(wid).template.unwrap();
            ends.push((End::Pod(wi, 99), b.inv.resolve_pod(t, None)));
        }
    }
    let mut probes = vec![(Protocol::Icmp, None)];
    for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
        for p in PROBE_PORTS {
            probes.push((proto, Some(*p)));
        }
    }
    for (s, sr) in &ends {
        for (d, dr) in &ends {
            if !is_subject(*s) && !is_subject(*d) {
                continue;
            }
            for &(proto, port) in &probes {
                let c = trustmap::policy::Connection {
                    src: *sr,
                    dst: *dr,
                    protocol: proto,
                    port,
                    dst_names: &[],
                };
                let actual = ev.evaluate(&c).allowed();
                let seen = observed.contains(&(group(*s), group(*d), proto, port));
                // A pod to itself is exempt; a template pod stands for several replicas, so
                // traffic "to itself" is between two pods and policies decide it.
                let same_pod = matches!((sr, dr), (Resolved::Pod { pod: x, .. }, Resolved::Pod { pod: y, .. })
                    if x == y && !b.inv.pod(*x).is_template);
                let local_node = matches!(s, End::Node(_))
                    && matches!(dr, Resolved::Pod { .. })
                    && node_of(&b.inv, sr) == node_of(&b.inv, dr);
                let egress_ok = if is_subject(*s) { seen } else { !in_layers(*s) };
                let ingress_ok = local_node
                    || if is_subject(*d) {
                        seen
                    } else {
                        // The baseline's ingress peers are pods: nodes and external
                        // addresses are not matched.
                        !in_layers(*d) || !matches!(s, End::Pod(..))
                    };
                let expected = same_pod || (egress_ok && ingress_ok);
                prop_assert_eq!(
                    actual,
                    expected,
                    "{:?} -> {:?} {} {:?}\nobserved: {:?}\nwarnings: {:?}\npolicies:\n{}",
                    s,
                    d,
                    proto,
                    port,
                    observed,
                    learned.warnings,
                    learned
                        .policies
                        .iter()
                        .map(|p| synth::to_yaml(p).unwrap())
                        .collect::<Vec<_>>()
                        .join("---\n")
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn learned_policies_allow_exactly_the_observed_flows(
        ws in prop::collection::vec(workload(), 1..6),
        flows in prop::collection::vec((0..64usize, 0..64usize, 0..8usize, 0..8usize), 0..14),
    ) {
        check_exact(ws, flows, false, synth::PolicyFormat::K8s)?;
    }

    #[test]
    fn learned_cilium_policies_allow_exactly_the_observed_flows(
        ws in prop::collection::vec(workload(), 1..6),
        flows in prop::collection::vec((0..64usize, 0..64usize, 0..8usize, 0..8usize), 0..14),
    ) {
        check_exact(ws, flows, false, synth::PolicyFormat::Cilium)?;
    }

    #[test]
    fn learned_layers_keep_exactness_and_deny_the_unlearned_pods_of_learned_namespaces(
        ws in prop::collection::vec(workload(), 1..6),
        flows in prop::collection::vec((0..64usize, 0..64usize, 0..8usize, 0..8usize), 0..14),
    ) {
        check_exact(ws, flows, true, synth::PolicyFormat::K8s)?;
    }
}

#[test]
fn learning_twice_gives_byte_identical_yaml() {
    let ws = vec![
        W {
            ns: 0,
            kind: "Deployment",
            pods: 2,
            nodes: vec![0, 1],
            ports: vec![(8080, Some("web"), Protocol::Tcp)],
            shared_tier: true,
        },
        W {
            ns: 1,
            kind: "StatefulSet",
            pods: 2,
            nodes: vec![1, 0],
            ports: vec![(5432, None, Protocol::Tcp)],
            shared_tier: true,
        },
    ];
    let b = build(&ws);
    let recs: Vec<FlowRecord> = [
        ("10.0.0.1", "10.1.1.2", 5432),
        ("203.0.113.7", "10.0.0.2", 8080),
        ("10.0.0.1", "203.0.113.9", 443),
    ]
    .iter()
    .map(|(s, d, p)| {
        FlowRecord::new(
            Protocol::Tcp,
            s.parse().unwrap(),
            d.parse().unwrap(),
            Some(*p),
        )
    })
    .collect();
    let render = |recs: &[FlowRecord]| {
        let ids = Identities::new(&b.inv, IdentityOptions::default());
        let mut g = FlowGraph::new();
        for o in ids.classify_batch(recs).observations {
            g.observe(&o);
        }
        let sel = WorkloadSelectors::new(&ids);
        let ctx = synth::Context {
            identities: &ids,
            selectors: &sel,
            cluster_cidrs: ids.cluster_cidrs(),
        };
        synth::learn(&ctx, &g, &SynthOptions::default())
            .policies
            .iter()
            .map(|p| synth::to_yaml(p).unwrap())
            .collect::<String>()
    };
    let mut reversed = recs.clone();
    reversed.reverse();
    let a = render(&recs);
    assert_eq!(a, render(&reversed));
    assert!(a.contains("port: web"), "{a}");
    let by_kind: BTreeMap<&str, usize> =
        [("NetworkPolicy", a.matches("kind: NetworkPolicy").count())].into();
    assert_eq!(by_kind["NetworkPolicy"], 2);
}

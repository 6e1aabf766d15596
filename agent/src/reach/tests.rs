//! Blast radius on a small hand-written chain: a → b → c, c isolated for ingress.

use std::path::Path;

use super::{blast_radius, port_count};
use crate::{
    inventory::Manifests,
    policy::{Evaluator, PortRanges, PortSet},
};

const CHAIN: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {app: c}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-to-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 80}]}]
  egress: [{to: [{podSelector: {matchLabels: {app: c}}}], ports: [{port: 5432}, {port: 6379}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c, namespace: x}
spec:
  podSelector: {matchLabels: {app: c}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 5432}]}]
"#;

#[test]
fn compromise_hops_through_allowed_connections_and_stops_at_isolation() {
    let mut m = Manifests::new();
    m.add_text(Path::new("chain.yaml"), CHAIN).unwrap();
    let l = m.finish();
    let ev = Evaluator::new(&l.inventory, &l.policies);
    let r = blast_radius(&ev);
    let row = |n: &str| r.rows.iter().find(|x| x.workload == n).unwrap();
    let a = row("x/a");
    assert_eq!((a.reach_pods, a.reach_ports, a.reached_by_pods), (1, 1, 0));
    assert_eq!(a.hops, [1, 1]);
    assert_eq!(a.reached[1].workload, "x/c");
    // b may send to 6379 too, but c's ingress admits only 5432.
    let b = row("x/b");
    assert_eq!((b.reach_pods, b.reach_ports, b.reached_by_pods), (1, 1, 1));
    let c = row("x/c");
    assert_eq!((c.transitive_pods, c.reached_by_pods), (0, 1));
    // Sorted by exposure: a reaches the most.
    assert_eq!(r.rows[0].workload, "x/a");
}

#[test]
fn port_count_counts_port_numbers_one_to_65535_per_protocol() {
    assert_eq!(port_count(&PortSet::all()), 3 * 65535);
    let s = PortSet::of(crate::flow::Protocol::Udp, PortRanges::range(53, 54));
    assert_eq!(port_count(&s), 2);
}

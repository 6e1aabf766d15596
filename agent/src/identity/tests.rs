//! Identity rules, one table test per rule, on manifests loaded through the real loader.

use std::path::Path;

use super::*;
use crate::{
    flow::{Endpoint, FlowRecord, Initiator, Protocol},
    inventory::{Inventory, Manifests},
};

const MANIFESTS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-5f7c8-aaaaa
  namespace: shop
  labels: {app: web, pod-template-hash: 5f7c8}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5f7c8, uid: u, controller: true}]
  creationTimestamp: "2026-11-24T10:00:00Z"
spec: {nodeName: n1, containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata:
  name: report-29000-xyz
  namespace: shop
  labels: {app: report, batch.kubernetes.io/job-name: report-29000}
  ownerReferences: [{apiVersion: batch/v1, kind: Job, name: report-29000, uid: u, controller: true}]
  creationTimestamp: "2026-11-24T08:00:00Z"
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status:
  phase: Succeeded
  podIP: 10.1.0.5
  containerStatuses: [{name: c, image: x, imageID: x, ready: false, restartCount: 0, state: {terminated: {exitCode: 0, finishedAt: "2026-11-24T09:00:00Z"}}}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: report-29000
  namespace: shop
  ownerReferences: [{apiVersion: batch/v1, kind: CronJob, name: report, uid: u, controller: true}]
spec: {template: {metadata: {labels: {app: report}}, spec: {containers: [{name: c, image: x}]}}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: shop}
spec: {schedule: "@hourly", jobTemplate: {spec: {template: {metadata: {labels: {app: report}}, spec: {containers: [{name: c, image: x}]}}}}}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db, statefulset.kubernetes.io/pod-name: db-0}}
spec: {nodeName: n1, containers: [{name: c, image: x, ports: [{name: pg, containerPort: 5432}]}]}
status: {phase: Running, podIP: 10.1.0.6}
---
apiVersion: v1
kind: Pod
metadata: {name: agent-x, namespace: monitoring, labels: {app: agent}}
spec: {nodeName: n1, hostNetwork: true, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 192.168.0.1, hostIP: 192.168.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.0.20, selector: {app: db}, ports: [{name: sql, port: 15432, targetPort: pg}]}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec: {clusterIP: 10.96.0.10, ports: [{name: dns, port: 53, protocol: UDP}]}
"#;

fn inventory() -> Inventory {
    let mut m = Manifests::new();
    m.add_text(Path::new("test.yaml"), MANIFESTS).unwrap();
    m.finish().inventory
}

fn rec(proto: Protocol, src: &str, sport: u16, dst: &str, port: u16, at: &str) -> FlowRecord {
    let mut r = FlowRecord::new(
        proto,
        src.parse().unwrap(),
        dst.parse().unwrap(),
        Some(port),
    );
    r.src_port = Some(sport);
    r.first_seen = Some(at.parse().unwrap());
    r.initiator = Some(if proto == Protocol::Tcp {
        Initiator::Syn
    } else {
        Initiator::FirstSeen
    });
    r
}

fn w(s: &str) -> Peer {
    Peer::Workload(s.parse().unwrap())
}

#[test]
fn ip_belongs_to_the_pod_that_held_it_when_the_flow_was_seen() {
    let inv = inventory();
    let ids = Identities::new(&inv, IdentityOptions::default());
    let cases = [
        ("2026-11-24T08:30:00Z", "shop/CronJob/report"),
        ("2026-11-24T10:30:00Z", "shop/Deployment/web"),
    ];
    for (at, want) in cases {
        let r = rec(Protocol::Tcp, "10.1.0.5", 40000, "10.1.0.6", 5432, at);
        let o = ids.classify(&r).unwrap();
        assert_eq!(o[0].src, w(want), "at {at}");
    }
}

#[test]
fn cluster_ip_resolves_to_backends_and_their_named_target_port() {
    let inv = inventory();
    let ids = Identities::new(&inv, IdentityOptions::default());
    let r = rec(
        Protocol::Tcp,
        "10.1.0.5",
        40000,
        "10.96.0.20",
        15432,
        "2026-11-24T10:30:00Z",
    );
    let o = ids.classify(&r).unwrap();
    assert_eq!(o.len(), 1);
    assert_eq!(
        (o[0].dst.clone(), o[0].port),
        (w("shop/Pod/db-0"), Some(5432))
    );
    let bad = rec(
        Protocol::Tcp,
        "10.1.0.5",
        40000,
        "10.96.0.20",
        80,
        "2026-11-24T10:30:00Z",
    );
    assert_eq!(ids.classify(&bad).unwrap_err().kind(), "no_service_port");
}

#[test]
fn receiving_side_record_supersedes_the_cluster_ip_record() {
    let inv = inventory();
    let ids = Identities::new(&inv, IdentityOptions::default());
    let at = "2026-11-24T10:30:00Z";
    let sender = rec(Protocol::Tcp, "10.1.0.5", 40000, "10.96.0.20", 15432, at);
    let receiver = rec(Protocol::Tcp, "10.1.0.5", 40000, "10.1.0.6", 5432, at);
    let b = ids.classify_batch(&[sender, receiver]);
    assert_eq!(b.superseded, 1);
    assert_eq!(b.observations.len(), 1);
    assert_eq!(b.observations[0].sample.dst.to_string(), "10.1.0.6");
}

#[test]
fn host_network_pods_and_nodes_are_node_peers_and_externals_keep_their_address() {
    let inv = inventory();
    let ids = Identities::new(&inv, IdentityOptions::default());
    let at = "2026-11-24T10:30:00Z";
    let o = ids
        .classify(&rec(
            Protocol::Tcp,
            "192.168.0.1",
            40000,
            "10.1.0.5",
            8080,
            at,
        ))
        .unwrap();
    assert_eq!(
        o[0].src,
        Peer::Node {
            name: "n1".into(),
            ip: "192.168.0.1".parse().unwrap()
        }
    );
    let o = ids
        .classify(&rec(
            Protocol::Tcp,
            "10.1.0.5",
            40000,
            "203.0.113.7",
            443,
            at,
        ))
        .unwrap();
    assert_eq!(o[0].dst, Peer::External("203.0.113.7".parse().unwrap()));
    let err = ids
        .classify(&rec(Protocol::Tcp, "10.1.0.5", 40000, "10.1.9.9", 443, at))
        .unwrap_err();
    assert_eq!(err.kind(), "unknown_cluster_address");
}

#[test]
fn dns_to_the_cluster_dns_service_is_recognised() {
    let inv = inventory();
    let ids = Identities::new(&inv, IdentityOptions::default());
    let r = rec(
        Protocol::Udp,
        "10.1.0.5",
        40000,
        "10.96.0.10",
        53,
        "2026-11-24T10:30:00Z",
    );
    assert_eq!(ids.classify(&r).unwrap()[0].dst, Peer::ClusterDns);
}

#[test]
fn connectionless_reply_seen_first_is_turned_around_and_ephemeral_pairs_are_refused() {
    let inv = inventory();
    let ids = Identities::new(&inv, IdentityOptions::default());
    let at = "2026-11-24T10:30:00Z";
    // db-0:5432 answering web:45000 first: the server is db-0, on 5432.
    let o = ids
        .classify(&rec(Protocol::Udp, "10.1.0.6", 5432, "10.1.0.5", 45000, at))
        .unwrap();
    assert_eq!(
        (o[0].src.clone(), o[0].dst.clone(), o[0].port),
        (w("shop/Deployment/web"), w("shop/Pod/db-0"), Some(5432))
    );
    // Both ports ephemeral and none declared: not learned.
    let err = ids
        .classify(&rec(
            Protocol::Udp,
            "10.1.0.6",
            41000,
            "10.1.0.5",
            45000,
            at,
        ))
        .unwrap_err();
    assert_eq!(err.kind(), "ambiguous_direction");
    // A TCP SYN is certain: kept as recorded even on a high port.
    let o = ids
        .classify(&rec(
            Protocol::Tcp,
            "10.1.0.6",
            41000,
            "10.1.0.5",
            45000,
            at,
        ))
        .unwrap();
    assert_eq!(o[0].port, Some(45000));
}

#[test]
fn workload_selector_is_spec_selector_else_pod_labels_minus_per_instance_labels() {
    let inv = inventory();
    let ids = Identities::new(&inv, IdentityOptions::default());
    let sel = WorkloadSelectors::new(&ids);
    let cases = [
        ("shop/Deployment/web", "app=web"),
        ("shop/Pod/db-0", "app=db"),
        ("shop/CronJob/report", "app=report"),
    ];
    for (wl, want) in cases {
        let c = sel
            .get(&wl.parse().unwrap())
            .unwrap_or_else(|| panic!("{wl}"));
        assert_eq!(c.selector.to_string(), want, "{wl}");
        assert!(c.overlaps.is_empty(), "{wl}");
    }
    let web = sel.get(&"shop/Deployment/web".parse().unwrap()).unwrap();
    assert_eq!(
        web.port_names
            .get(&(Protocol::Tcp, 8080))
            .map(String::as_str),
        Some("http")
    );
}

#[test]
fn hand_written_endpoints_must_exist() {
    let inv = inventory();
    let ids = Identities::new(&inv, IdentityOptions::default());
    let r = FlowRecord::new(
        Protocol::Tcp,
        "shop/nope".parse().unwrap(),
        Endpoint::Ip("203.0.113.1".parse().unwrap()),
        Some(443),
    );
    assert_eq!(ids.classify(&r).unwrap_err().kind(), "unknown_endpoint");
}

#[test]
fn names_stay_with_an_external_destination_only() {
    let inv = inventory();
    let ids = Identities::new(&inv, IdentityOptions::default());
    let at = "2026-11-24T10:30:00Z";
    let names = vec!["api.pay.example".to_owned()];
    let named = |mut r: FlowRecord| {
        r.dst_names = names.clone();
        ids.classify(&r).unwrap()[0].dst_names.clone()
    };
    // web to an external address: the names are kept.
    let out = rec(Protocol::Tcp, "10.1.0.5", 40000, "203.0.113.10", 443, at);
    assert_eq!(named(out), names);
    // web to db-0, a pod: names of a cluster address are not kept.
    let inside = rec(Protocol::Tcp, "10.1.0.5", 40000, "10.1.0.6", 5432, at);
    assert_eq!(named(inside), Vec::<String>::new());
    // A reply seen first is turned around: the names were the record's destination's (web),
    // not the external server's.
    let turned = rec(Protocol::Udp, "203.0.113.10", 53, "10.1.0.5", 45000, at);
    let o = {
        let mut r = turned;
        r.dst_names = names.clone();
        ids.classify(&r).unwrap()
    };
    assert_eq!(o[0].dst, Peer::External("203.0.113.10".parse().unwrap()));
    assert!(o[0].dst_names.is_empty(), "{o:?}");
}

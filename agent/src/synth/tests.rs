//! Synthesis rules: grouping, ipBlocks and summaries, DNS, default deny.

use std::{collections::BTreeMap, path::Path};

use super::*;
use crate::{
    flow::{FlowRecord, Protocol},
    graph::FlowGraph,
    identity::{IdentityOptions, WorkloadSelectors},
    inventory::{Inventory, Manifests},
};

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.1.0.6}
---
apiVersion: v1
kind: Pod
metadata: {name: cache, namespace: shop, labels: {app: cache}}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.1.0.7}
"#;

fn inventory() -> Inventory {
    let mut m = Manifests::new();
    m.add_text(Path::new("t.yaml"), MANIFESTS).unwrap();
    m.finish().inventory
}

fn learn_from(
    inv: &Inventory,
    flows: &[(&str, &str, Protocol, u16)],
    opts: &SynthOptions,
) -> Learned {
    let records: Vec<FlowRecord> = flows
        .iter()
        .map(|(s, d, p, port)| {
            FlowRecord::new(*p, s.parse().unwrap(), d.parse().unwrap(), Some(*port))
        })
        .collect();
    learn_records(inv, &records, opts)
}

/// Learns from flow records, as `learn` does (shared with the Cilium-format tests).
pub(super) fn learn_records(
    inv: &Inventory,
    records: &[FlowRecord],
    opts: &SynthOptions,
) -> Learned {
    let ids = Identities::new(inv, IdentityOptions::default());
    let mut g = FlowGraph::new();
    for r in records {
        for o in ids.classify(r).unwrap() {
            g.observe(&o);
        }
    }
    let sel = WorkloadSelectors::new(&ids);
    let ctx = Context {
        identities: &ids,
        selectors: &sel,
        cluster_cidrs: ids.cluster_cidrs(),
    };
    learn(&ctx, &g, opts)
}

fn web(l: &Learned) -> &LearnedPolicy {
    l.policies
        .iter()
        .find(|p| p.name == "web-pod-learned")
        .unwrap()
}

#[test]
fn peers_sharing_a_port_set_share_one_rule() {
    let inv = inventory();
    let l = learn_from(
        &inv,
        &[
            ("10.1.0.5", "10.1.0.6", Protocol::Tcp, 9000),
            ("10.1.0.5", "10.1.0.7", Protocol::Tcp, 9000),
            ("10.1.0.5", "10.1.0.6", Protocol::Tcp, 9001),
            ("10.1.0.5", "10.1.0.7", Protocol::Tcp, 9001),
            ("10.1.0.5", "203.0.113.7", Protocol::Tcp, 443),
        ],
        &SynthOptions::default(),
    );
    let egress = &web(&l).egress;
    assert_eq!(egress.len(), 2, "{egress:?}");
    assert_eq!((egress[0].peers.len(), egress[0].ports.len()), (2, 2));
}

#[test]
fn destination_port_names_are_used_when_declared() {
    let inv = inventory();
    let l = learn_from(
        &inv,
        &[("10.1.0.5", "10.1.0.6", Protocol::Tcp, 8080)],
        &SynthOptions::default(),
    );
    assert_eq!(
        web(&l).egress[0].ports,
        [PortItem::Named(Protocol::Tcp, "http".into())]
    );
}

#[test]
fn externals_are_host_blocks_unless_summarised_and_summaries_except_cluster_cidrs() {
    let inv = inventory();
    let flows = [
        ("10.1.0.5", "203.0.113.7", Protocol::Tcp, 443),
        ("10.1.0.5", "203.0.113.9", Protocol::Tcp, 443),
        ("10.1.0.5", "2001:db8::1", Protocol::Tcp, 443),
    ];
    let exact = learn_from(&inv, &flows, &SynthOptions::default());
    let cidrs: Vec<String> = web(&exact).egress[0]
        .peers
        .iter()
        .map(|p| match p {
            RenderPeer::Block { cidr, .. } => cidr.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        cidrs,
        ["203.0.113.7/32", "203.0.113.9/32", "2001:db8::1/128"]
    );

    let summary = SynthOptions {
        cidr_prefix_v4: Some(24),
        ..SynthOptions::default()
    };
    let l = learn_from(&inv, &flows, &summary);
    assert_eq!(web(&l).egress[0].peers.len(), 2);
    // A summary that would cover the pod network keeps it out with `except`.
    let wide = SynthOptions {
        cidr_prefix_v4: Some(8),
        ..SynthOptions::default()
    };
    let l = learn_from(
        &inv,
        &[("10.1.0.5", "10.200.0.1", Protocol::Tcp, 443)],
        &wide,
    );
    match &web(&l).egress[0].peers[0] {
        RenderPeer::Block { cidr, except } => {
            assert_eq!(cidr.to_string(), "10.0.0.0/8");
            assert_eq!(
                except.iter().map(ToString::to_string).collect::<Vec<_>>(),
                ["10.1.0.0/16"]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn dns_allows_udp_and_tcp_53_to_the_dns_pods_and_icmp_is_never_allowed() {
    let inv = inventory();
    // No DNS Service in the manifests: port 53 to an unknown cluster address is the cluster DNS.
    let l = learn_from(
        &inv,
        &[
            ("10.1.0.5", "10.1.9.10", Protocol::Udp, 53),
            ("10.1.0.5", "10.1.0.6", Protocol::Icmp, 0),
        ],
        &SynthOptions::default(),
    );
    let rule = &web(&l).egress[0];
    assert_eq!(
        rule.ports,
        [
            PortItem::Number(Protocol::Tcp, 53),
            PortItem::Number(Protocol::Udp, 53)
        ]
    );
    let yaml = to_yaml(web(&l)).unwrap();
    assert!(
        yaml.contains("kubernetes.io/metadata.name: kube-system"),
        "{yaml}"
    );
    assert!(yaml.contains("k8s-app: kube-dns"), "{yaml}");
    assert!(
        l.warnings.iter().any(|w| w.contains("ICMP")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn default_deny_is_added_per_namespace_on_request() {
    let inv = inventory();
    let opts = SynthOptions {
        namespace_default_deny: true,
        ..SynthOptions::default()
    };
    let l = learn_from(
        &inv,
        &[("10.1.0.5", "10.1.0.6", Protocol::Tcp, 8080)],
        &opts,
    );
    let names: BTreeMap<&str, &str> = l
        .policies
        .iter()
        .map(|p| (p.name.as_str(), p.namespace.as_str()))
        .collect();
    assert_eq!(names.get("default-deny"), Some(&"shop"));
    let policies = l.to_policies().unwrap();
    let dd = policies.iter().find(|p| p.name == "default-deny").unwrap();
    assert_eq!(
        (dd.ingress.as_deref(), dd.egress.as_deref()),
        (Some(&[][..]), Some(&[][..]))
    );
}

#[test]
fn evidence_annotations_name_rule_peer_port_and_count() {
    let inv = inventory();
    let l = learn_from(
        &inv,
        &[
            ("10.1.0.5", "10.1.0.6", Protocol::Tcp, 8080),
            ("10.1.0.5", "10.1.0.6", Protocol::Tcp, 8080),
        ],
        &SynthOptions::default(),
    );
    let a = web(&l).object.metadata.annotations.clone().unwrap();
    assert_eq!(a["trustmap.dev/connections"], "2");
    assert!(
        a["trustmap.dev/evidence"].starts_with("egress[0] shop/Pod/api 8080/TCP: 2 connection(s)"),
        "{a:?}"
    );
}

#[test]
fn diff_lists_excess_privilege_and_what_enforcement_would_break() {
    let inv = inventory();
    let learned = learn_from(
        &inv,
        &[("10.1.0.5", "10.1.0.6", Protocol::Tcp, 8080)],
        &SynthOptions::default(),
    )
    .to_policies()
    .unwrap();
    // Current: nothing isolated, so everything is excess; nothing is denied.
    let d = connectivity_diff(&inv, &[], &learned, &[], &[]);
    assert!(d.denied.is_empty());
    let web_api = d
        .excess
        .iter()
        .find(|r| r.src == "shop/web" && r.dst == "shop/api")
        .unwrap();
    assert!(!web_api.ports.contains(Protocol::Tcp, Some(8080)));
    assert!(web_api.ports.contains(Protocol::Tcp, Some(8081)));
    // Reversed: the learned set as current denies nothing observed but the reference allows all.
    let d = connectivity_diff(&inv, &learned, &[], &[], &[]);
    assert!(d.excess.is_empty());
    assert!(
        d.denied
            .iter()
            .any(|r| r.src == "shop/web" && r.dst == "shop/cache")
    );
}

//! The Cilium format: exact YAML for names, DNS, nodes and externals; the policies allow every
//! observed connection and deny what was not observed, read back through the evaluator with
//! Cilium's semantics; NetworkPolicy output groups addresses by name.

use std::path::Path;

use super::{tests::learn_records, *};
use crate::{
    flow::{Endpoint, FlowRecord, Protocol},
    inventory::{Inventory, Manifests},
    policy::{Connection, Evaluator},
};

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {nodeName: n1, containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.1.0.6}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status: {podIP: 10.1.0.53}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}
"#;

fn inventory() -> Inventory {
    let mut m = Manifests::new();
    m.add_text(Path::new("t.yaml"), MANIFESTS).unwrap();
    m.finish().inventory
}

fn record(src: &str, dst: &str, proto: Protocol, port: u16, names: &[&str]) -> FlowRecord {
    let mut r = FlowRecord::new(
        proto,
        src.parse().unwrap(),
        dst.parse().unwrap(),
        Some(port),
    );
    r.dst_names = names.iter().map(|n| (*n).to_owned()).collect();
    r
}

/// web: DNS, api on 8080, two addresses of api.pay.example on 443 (the provider moved), four
/// CDN siblings on 443, one address without a name on 8443; api: scraped by the node.
fn observed() -> Vec<FlowRecord> {
    let mut v = vec![
        record("10.1.0.5", "10.1.0.53", Protocol::Udp, 53, &[]),
        record("10.1.0.5", "10.1.0.6", Protocol::Tcp, 8080, &[]),
        record(
            "10.1.0.5",
            "203.0.113.10",
            Protocol::Tcp,
            443,
            &["api.pay.example"],
        ),
        record(
            "10.1.0.5",
            "203.0.113.11",
            Protocol::Tcp,
            443,
            &["api.pay.example"],
        ),
        record("10.1.0.5", "203.0.113.99", Protocol::Tcp, 8443, &[]),
        record("192.168.0.1", "10.1.0.6", Protocol::Tcp, 8080, &[]),
    ];
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        let ip = format!("203.0.113.{}", 20 + i);
        let name = format!("{n}.cdn.example");
        v.push(record("10.1.0.5", &ip, Protocol::Tcp, 443, &[&name]));
    }
    v
}

fn cilium() -> SynthOptions {
    SynthOptions {
        format: PolicyFormat::Cilium,
        ..SynthOptions::default()
    }
}

fn spec_yaml(l: &Learned, name: &str) -> String {
    let p = l.policies.iter().find(|p| p.name == name).unwrap();
    let c = p.cilium.as_ref().expect("cilium format");
    serde_yaml::to_string(c.spec.as_ref().unwrap()).unwrap()
}

#[test]
fn web_gets_fqdn_dns_endpoint_and_cidr_rules() {
    let l = learn_records(&inventory(), &observed(), &cilium());
    assert_eq!(
        spec_yaml(&l, "web-pod-learned"),
        r#"description: 'trustmap: learned for shop/Pod/web (what it was seen to use, nothing else)'
endpointSelector:
  matchLabels:
    app: web
ingress:
- {}
egress:
- toEndpoints:
  - matchLabels:
      app: api
      k8s:io.kubernetes.pod.namespace: shop
  toPorts:
  - ports:
    - port: http
      protocol: TCP
- toEndpoints:
  - matchLabels:
      k8s-app: kube-dns
      k8s:io.kubernetes.pod.namespace: kube-system
  toPorts:
  - ports:
    - port: '53'
      protocol: TCP
    - port: '53'
      protocol: UDP
    rules:
      dns:
      - matchName: api.pay.example
      - matchPattern: '*.cdn.example'
      - matchPattern: '**.cluster.local'
- toCIDRSet:
  - cidr: 203.0.113.99/32
  toPorts:
  - ports:
    - port: '8443'
      protocol: TCP
- toFQDNs:
  - matchName: api.pay.example
  - matchPattern: '*.cdn.example'
  toPorts:
  - ports:
    - port: '443'
      protocol: TCP
"#
    );
    // api: from web, and from the nodes (the kubelet's probes), by entity.
    assert_eq!(
        spec_yaml(&l, "api-pod-learned"),
        r#"description: 'trustmap: learned for shop/Pod/api (what it was seen to use, nothing else)'
endpointSelector:
  matchLabels:
    app: api
ingress:
- fromEndpoints:
  - matchLabels:
      app: web
      k8s:io.kubernetes.pod.namespace: shop
  toPorts:
  - ports:
    - port: http
      protocol: TCP
- fromEntities:
  - host
  - remote-node
  toPorts:
  - ports:
    - port: http
      protocol: TCP
egress:
- {}
"#
    );
}

#[test]
fn the_pattern_threshold_is_a_flag_and_zero_keeps_every_name() {
    let opts = SynthOptions {
        fqdn_pattern_threshold: 0,
        ..cilium()
    };
    let l = learn_records(&inventory(), &observed(), &opts);
    let y = spec_yaml(&l, "web-pod-learned");
    assert!(!y.contains("*.cdn.example"), "{y}");
    for n in ["a", "b", "c", "d"] {
        assert!(y.contains(&format!("- matchName: {n}.cdn.example")), "{y}");
    }
}

/// Every observed connection, and probes that were not observed: other ports, an address the
/// name never had, a name never looked up, another pod.
#[test]
fn learned_cilium_policies_allow_exactly_what_was_observed() {
    let inv = inventory();
    let l = learn_records(&inv, &observed(), &cilium());
    let policies = l.to_policies().unwrap();
    assert!(
        policies
            .iter()
            .all(|p| p.kind == crate::policy::PolicyKind::CiliumNetworkPolicy)
    );
    let ev = Evaluator::new(&inv, &policies);
    let verdict = |r: &FlowRecord| {
        let c = ev.connection(r).unwrap();
        ev.evaluate(&c).decision()
    };
    for r in observed() {
        let c = ev.connection(&r).unwrap();
        assert_eq!(
            verdict(&r),
            "allow",
            "observed {r:?}: {:?}",
            ev.evaluate(&c)
        );
    }
    let denied = [
        record("10.1.0.5", "10.1.0.6", Protocol::Tcp, 9090, &[]),
        record(
            "10.1.0.5",
            "203.0.113.10",
            Protocol::Tcp,
            80,
            &["api.pay.example"],
        ),
        // The name's address, but the connection had no name: toFQDNs does not match.
        record("10.1.0.5", "203.0.113.10", Protocol::Tcp, 443, &[]),
        record(
            "10.1.0.5",
            "198.51.100.7",
            Protocol::Tcp,
            443,
            &["evil.example"],
        ),
        // A sibling the pattern does not cover (two labels below).
        record(
            "10.1.0.5",
            "203.0.113.30",
            Protocol::Tcp,
            443,
            &["x.y.cdn.example"],
        ),
        record("10.1.0.5", "203.0.113.98", Protocol::Tcp, 8443, &[]),
        record("10.1.0.6", "10.1.0.5", Protocol::Tcp, 8080, &[]),
        record("10.1.0.5", "10.1.0.53", Protocol::Tcp, 5353, &[]),
    ];
    for r in &denied {
        assert_eq!(verdict(r), "deny", "probe {r:?}");
    }
    // The pattern covers siblings never seen: the one widening the threshold asks for.
    let sibling = record(
        "10.1.0.5",
        "203.0.113.31",
        Protocol::Tcp,
        443,
        &["e.cdn.example"],
    );
    assert_eq!(verdict(&sibling), "allow");
}

#[test]
fn k8s_format_groups_addresses_by_name_with_the_name_in_the_evidence() {
    let l = learn_records(&inventory(), &observed(), &SynthOptions::default());
    let web = l
        .policies
        .iter()
        .find(|p| p.name == "web-pod-learned")
        .unwrap();
    let blocks = |r: &RuleSpec| -> Vec<String> {
        r.peers
            .iter()
            .filter_map(|p| match p {
                RenderPeer::Block { cidr, .. } => Some(cidr.to_string()),
                RenderPeer::Pods { .. } => None,
            })
            .collect()
    };
    let rules: Vec<Vec<String>> = web.egress.iter().map(blocks).collect();
    assert!(
        rules.contains(&vec![
            "203.0.113.10/32".to_owned(),
            "203.0.113.11/32".to_owned()
        ]),
        "{rules:?}"
    );
    assert!(
        rules.contains(&vec!["203.0.113.99/32".to_owned()]),
        "{rules:?}"
    );
    let evidence = &web.object.metadata.annotations.as_ref().unwrap()["trustmap.dev/evidence"];
    assert!(
        evidence.contains("203.0.113.10 (api.pay.example) 443/TCP: 1 connection(s)")
            && evidence.contains("203.0.113.11 (api.pay.example) 443/TCP: 1 connection(s)"),
        "{evidence}"
    );
    // Both addresses allowed, through the same rule.
    let policies = l.to_policies().unwrap();
    let inv = inventory();
    let ev = Evaluator::new(&inv, &policies);
    let rule_of = |ip: &str| {
        let r = record("10.1.0.5", ip, Protocol::Tcp, 443, &[]);
        match ev.evaluate(&ev.connection(&r).unwrap()).egress {
            crate::policy::SideVerdict::Allowed(rr) => rr.rule,
            other => panic!("{ip}: {other:?}"),
        }
    };
    assert_eq!(rule_of("203.0.113.10"), rule_of("203.0.113.11"));
}

#[test]
fn a_namespace_default_deny_in_cilium_terms_selects_every_pod_and_allows_nothing() {
    let opts = SynthOptions {
        namespace_default_deny: true,
        ..cilium()
    };
    let l = learn_records(&inventory(), &observed(), &opts);
    assert_eq!(
        spec_yaml(&l, "default-deny"),
        "description: 'trustmap: deny what no learned policy allows'\nendpointSelector: {}\ningress:\n- {}\negress:\n- {}\n"
    );
    let dd = l
        .to_policies()
        .unwrap()
        .into_iter()
        .find(|p| p.name == "default-deny")
        .unwrap();
    let inv = inventory();
    let ev = Evaluator::new(&inv, std::slice::from_ref(&dd));
    let c = Connection {
        src: inv
            .resolve(&"10.1.0.6".parse::<Endpoint>().unwrap())
            .unwrap(),
        dst: inv
            .resolve(&"10.1.0.5".parse::<Endpoint>().unwrap())
            .unwrap(),
        protocol: Protocol::Tcp,
        port: Some(80),
        dst_names: &[],
    };
    assert_eq!(ev.evaluate(&c).decision(), "deny");
}

fn load_err(spec: &str) -> String {
    let text = format!(
        "{MANIFESTS}---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n{spec}"
    );
    let mut m = Manifests::new();
    match m.add_text(Path::new("cnp.yaml"), &text) {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cilium_policies_it_cannot_decide_are_refused_with_their_field() {
    let cases = [
        (
            "  endpointSelector: {}\n  egress:\n  - toEndpoints: [{}]\n    toFQDNs: [{matchName: a.example}]\n",
            "spec.egress[0]",
        ),
        (
            "  endpointSelector: {}\n  egressDeny:\n  - toEntities: [world]\n",
            "spec.egressDeny",
        ),
        (
            "  endpointSelector: {}\n  egress:\n  - toEntities: [health]\n",
            "spec.egress[0].toEntities[0]",
        ),
        (
            "  endpointSelector: {}\n  egress:\n  - toPorts: [{ports: [{port: '53', protocol: tcp}]}]\n",
            "spec.egress[0].toPorts[0].ports[0].protocol",
        ),
        (
            "  endpointSelector: {}\n  egress:\n  - toFQDNs: [{matchName: 'bad name'}]\n",
            "spec.egress[0].toFQDNs[0]",
        ),
        (
            "  endpointSelector: {}\n  egress:\n  - toEndpoints: [{}]\n    toCIDR: [203.0.113.0/24]\n",
            "spec.egress[0]: one rule may name one kind of peer",
        ),
        ("  endpointSelector: {}\n", "spec: a rule needs"),
        (
            "  endpointSelector: {}\n  egress:\n  - toEndpoints: [{}]\n    typo: 1\n",
            "typo",
        ),
    ];
    for (spec, want) in cases {
        let e = load_err(spec);
        assert!(
            e.contains("cnp.yaml") && e.contains(want),
            "{spec}: {e:?} does not name {want}"
        );
    }
}

#[test]
fn cilium_endpoint_namespaces_entities_and_cidrs_mean_what_cilium_says() {
    let text = format!(
        "{MANIFESTS}---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n  egress:\n  - toEndpoints: [{{}}]\n  - toEndpoints: [{{matchLabels: {{'k8s:io.kubernetes.pod.namespace': kube-system}}}}]\n    toPorts: [{{ports: [{{port: '53', protocol: ANY}}]}}]\n  - toCIDR: [10.1.0.0/16, 203.0.113.0/24]\n    toCIDRSet: [{{cidr: 198.51.100.0/24, except: [198.51.100.7/32]}}]\n    toPorts: [{{ports: [{{port: '443'}}]}}]\n  - toEntities: [host]\n"
    );
    let mut m = Manifests::new();
    m.add_text(Path::new("cnp.yaml"), &text).unwrap();
    let loaded = m.finish();
    let inv = &loaded.inventory;
    let ev = Evaluator::new(inv, &loaded.policies);
    let decide = |dst: &str, proto: Protocol, port: u16| {
        let r = record("10.1.0.5", dst, proto, port, &[]);
        ev.evaluate(&ev.connection(&r).unwrap()).decision()
    };
    // `{}`: every pod of the policy's namespace, on any port.
    assert_eq!(decide("10.1.0.6", Protocol::Tcp, 9999), "allow");
    // The namespace label: kube-system's pods, on 53 over TCP or UDP.
    assert_eq!(decide("10.1.0.53", Protocol::Udp, 53), "allow");
    assert_eq!(decide("10.1.0.53", Protocol::Tcp, 53), "allow");
    assert_eq!(decide("10.1.0.53", Protocol::Udp, 54), "deny");
    // A CIDR never matches pods, even inside it; outside the cluster it does.
    assert_eq!(decide("203.0.113.7", Protocol::Tcp, 443), "allow");
    assert_eq!(decide("203.0.113.7", Protocol::Udp, 443), "allow");
    // toCIDRSet beside toCIDR in one rule: its except holds.
    assert_eq!(decide("198.51.100.8", Protocol::Tcp, 443), "allow");
    assert_eq!(decide("198.51.100.7", Protocol::Tcp, 443), "deny");
    assert_eq!(decide("192.0.2.7", Protocol::Tcp, 443), "deny");
    // host: the node the pod runs on.
    assert_eq!(decide("192.168.0.1", Protocol::Tcp, 10250), "allow");
}

#[test]
fn dns_pods_that_get_policies_let_in_the_lookups_learned_as_cluster_dns() {
    let inv = inventory();
    for format in [PolicyFormat::K8s, PolicyFormat::Cilium] {
        let opts = SynthOptions {
            format,
            skip_namespaces: Vec::new(),
            ..SynthOptions::default()
        };
        let l = learn_records(&inv, &observed(), &opts);
        let policies = l.to_policies().unwrap();
        let dns = policies
            .iter()
            .find(|p| p.namespace == "kube-system")
            .unwrap_or_else(|| panic!("{format:?}: no policy for the DNS pods"));
        assert_eq!(dns.name, "coredns-pod-learned");
        let ev = Evaluator::new(&inv, &policies);
        let decide = |src: &str, proto: Protocol, port: u16| {
            let r = record(src, "10.1.0.53", proto, port, &[]);
            ev.evaluate(&ev.connection(&r).unwrap()).decision()
        };
        assert_eq!(decide("10.1.0.5", Protocol::Udp, 53), "allow", "{format:?}");
        assert_eq!(decide("10.1.0.5", Protocol::Tcp, 53), "allow", "{format:?}");
        // api never looked anything up.
        assert_eq!(decide("10.1.0.6", Protocol::Udp, 53), "deny", "{format:?}");
    }
}

//! Table tests, one per rule of NetworkPolicy semantics, each named for the rule it pins; the
//! choices left to the CNI are in `cni_tests.rs`.
//! Clusters are written as manifests, so the tests read like the YAML users write.

use std::path::Path;

use super::{Evaluator, SideVerdict, Verdict};
use crate::{
    flow::{FlowRecord, Protocol},
    inventory::{Loaded, Manifests},
};

/// Namespaces `a` (team=a) and `b` (team=b); `a/web` (app=web, 10.0.1.1, http 8080/TCP,
/// dns 53/UDP) and `a/db` (app=db, 10.0.1.2, 5432) on node n1; `b/client` (app=client,
/// 10.0.2.1, fd00::2:1) on n2; `a/agent` host-network on n1 (192.168.0.1); node n2 is
/// 192.168.0.2; Deployment `b/api` (app=api, port http 8080).
const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: b}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec:
  nodeName: n1
  containers: [{name: c, ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]}]
status: {podIP: 10.0.1.1, hostIP: 192.168.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: a, labels: {app: db}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 5432}]}]}
status: {podIP: 10.0.1.2, hostIP: 192.168.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b, labels: {app: client}}
spec: {nodeName: n2, containers: [{name: c}]}
status: {podIPs: [{ip: 10.0.2.1}, {ip: "fd00::2:1"}], hostIP: 192.168.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: a, labels: {app: agent}}
spec: {nodeName: n1, hostNetwork: true, containers: [{name: c}]}
status: {podIP: 192.168.0.1, hostIP: 192.168.0.1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: b}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
"#;

pub(super) fn load(policies: &str) -> Loaded {
    let mut m = Manifests::new();
    m.add_text(Path::new("base.yaml"), BASE)
        .expect("base loads");
    m.add_text(Path::new("policies.yaml"), policies)
        .expect("policies load");
    m.finish()
}

pub(super) fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n"
    )
}

pub(super) fn verdict(l: &Loaded, src: &str, dst: &str, port: &str) -> Verdict {
    let ev = Evaluator::new(&l.inventory, &l.policies);
    let (protocol, port) = match port.split_once('/') {
        Some((p, proto)) => (proto.parse().unwrap(), Some(p.parse().unwrap())),
        None => (port.parse::<Protocol>().unwrap(), None),
    };
    let r = FlowRecord::new(protocol, src.parse().unwrap(), dst.parse().unwrap(), port);
    let c = ev.connection(&r).expect("endpoints resolve");
    ev.evaluate(&c)
}

/// Runs `(src, dst, port, allowed)` cases against one set of policies.
pub(super) fn table(policies: &str, cases: &[(&str, &str, &str, bool)]) {
    let l = load(policies);
    for (src, dst, port, want) in cases {
        let v = verdict(&l, src, dst, port);
        assert_eq!(v.allowed(), *want, "{src} -> {dst} {port}: {v:?}");
    }
}

const WEB_INGRESS_FROM_DB: &str = "  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: db}}}]}]";

#[test]
fn is_allowed_when_no_policy_selects_either_side() {
    table(
        "",
        &[
            ("a/web", "b/client", "80/TCP", true),
            ("10.0.2.1", "10.0.1.2", "ICMP", true),
        ],
    );
}

#[test]
fn is_allowed_only_when_egress_and_ingress_sides_both_allow() {
    let p = np("a", "web-in", WEB_INGRESS_FROM_DB)
        + &np(
            "a",
            "db-out",
            "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Egress]",
        );
    table(
        &p,
        &[
            ("a/db", "a/web", "80/TCP", false),
            ("b/client", "a/web", "80/TCP", false),
        ],
    );
    let l = load(&p);
    let v = verdict(&l, "a/db", "a/web", "80/TCP");
    assert!(matches!(v.ingress, SideVerdict::Allowed(_)) && v.egress == SideVerdict::Denied);
}

#[test]
fn only_pods_selected_by_a_policy_are_isolated() {
    table(
        &np("a", "web-in", WEB_INGRESS_FROM_DB),
        &[
            ("b/client", "a/web", "80/TCP", false),
            ("b/client", "a/db", "80/TCP", true),
        ],
    );
}

#[test]
fn union_of_selecting_policies_decides() {
    let p = np("a", "from-db", WEB_INGRESS_FROM_DB)
        + &np(
            "a",
            "from-b",
            "  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}]}]",
        );
    table(
        &p,
        &[
            ("a/db", "a/web", "1/TCP", true),
            ("b/client", "a/web", "1/TCP", true),
        ],
    );
}

#[test]
fn policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() {
    let only_ingress = np("a", "p", "  podSelector: {}\n  egress: []");
    table(
        &only_ingress,
        &[
            ("a/web", "b/client", "80/TCP", true),
            ("b/client", "a/web", "80/TCP", false),
        ],
    );
    let both = np(
        "a",
        "p",
        "  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 8.8.8.8/32}}]}]",
    );
    table(
        &both,
        &[
            ("a/web", "b/client", "80/TCP", false),
            ("a/web", "8.8.8.8", "53/UDP", true),
        ],
    );
}

#[test]
fn egress_listed_with_no_rules_denies_all_egress() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress: []",
    );
    table(
        &p,
        &[
            ("a/web", "b/client", "80/TCP", false),
            ("b/client", "a/web", "80/TCP", true),
        ],
    );
}

#[test]
fn rules_of_an_unlisted_policy_type_are_ignored() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n  egress: [{}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "80/TCP", true),
            ("a/web", "b/client", "80/TCP", true),
        ],
    );
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]",
    );
    table(&p, &[("a/web", "b/client", "80/TCP", false)]);
}

#[test]
fn empty_or_missing_from_matches_every_source() {
    for rule in ["[{}]", "[{from: []}]", "[{ports: [{port: 80}]}]"] {
        let p = np("a", "p", &format!("  podSelector: {{}}\n  ingress: {rule}"));
        table(
            &p,
            &[
                ("b/client", "a/web", "80/TCP", true),
                ("203.0.113.9", "a/web", "80/TCP", true),
            ],
        );
    }
}

#[test]
fn missing_ports_match_every_port_and_protocol() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "1/TCP", true),
            ("b/client", "a/web", "5/SCTP", true),
            ("b/client", "a/web", "ICMP", true),
        ],
    );
}

#[test]
fn rules_with_ports_never_match_portless_protocols() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: 80}]}]",
    );
    table(&p, &[("b/client", "a/web", "ICMP", false)]);
}

#[test]
fn pod_selector_alone_means_the_policy_namespace() {
    let p = np(
        "a",
        "p",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {}}]}]",
    );
    table(
        &p,
        &[
            ("a/web", "a/db", "5432/TCP", true),
            ("b/client", "a/db", "5432/TCP", false),
        ],
    );
}

#[test]
fn namespace_selector_alone_means_every_pod_of_matching_namespaces() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "1/TCP", true),
            ("b/Deployment/api", "a/web", "1/TCP", true),
            ("a/db", "a/web", "1/TCP", false),
        ],
    );
}

#[test]
fn namespace_and_pod_selectors_in_one_peer_are_anded() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}, podSelector: {matchLabels: {app: api}}}]}]",
    );
    table(
        &p,
        &[
            ("b/Deployment/api", "a/web", "1/TCP", true),
            ("b/client", "a/web", "1/TCP", false),
        ],
    );
}

#[test]
fn separate_peers_are_ored() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}, {podSelector: {matchLabels: {app: api}}}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "1/TCP", true),
            ("a/db", "a/web", "1/TCP", false),
        ],
    );
}

#[test]
fn empty_selectors_match_everything() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}, podSelector: {}}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "1/TCP", true),
            ("a/db", "a/web", "1/TCP", true),
            ("203.0.113.1", "a/web", "1/TCP", false),
        ],
    );
}

#[test]
fn every_namespace_carries_its_metadata_name_label() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "1/TCP", true),
            ("a/db", "a/web", "1/TCP", false),
        ],
    );
}

#[test]
fn match_expressions_select_peers() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [client]}, {key: app, operator: Exists}]}}]}]",
    );
    table(
        &p,
        &[
            ("b/Deployment/api", "a/web", "1/TCP", true),
            ("b/client", "a/web", "1/TCP", false),
        ],
    );
}

#[test]
fn ip_block_matches_its_cidr_minus_except() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}}]}]",
    );
    table(
        &p,
        &[
            ("203.0.113.5", "a/web", "80/TCP", true),
            ("203.0.113.200", "a/web", "80/TCP", false),
            ("198.51.100.1", "a/web", "80/TCP", false),
        ],
    );
}

#[test]
fn ip_block_matches_ipv6_addresses() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: \"2001:db8::/32\", except: [\"2001:db8:bad::/48\"]}}]}]",
    );
    table(
        &p,
        &[
            ("a/web", "2001:db8::1", "443/TCP", true),
            ("a/web", "2001:db8:bad::1", "443/TCP", false),
            ("a/web", "203.0.113.1", "443/TCP", false),
        ],
    );
}

#[test]
fn tcp_is_the_default_protocol() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: 53}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "53/TCP", true),
            ("b/client", "a/web", "53/UDP", false),
        ],
    );
}

#[test]
fn udp_and_sctp_ports_match_only_their_protocol() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: 53, protocol: UDP}, {protocol: SCTP}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "53/UDP", true),
            ("b/client", "a/web", "53/TCP", false),
            ("b/client", "a/web", "9/SCTP", true),
        ],
    );
}

#[test]
fn end_port_makes_an_inclusive_range() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: 8000, endPort: 8080}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "8000/TCP", true),
            ("b/client", "a/web", "8080/TCP", true),
            ("b/client", "a/web", "8081/TCP", false),
            ("b/client", "a/web", "7999/TCP", false),
        ],
    );
}

#[test]
fn named_port_resolves_against_the_destination_pod() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: http}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "8080/TCP", true),
            ("b/client", "a/web", "80/TCP", false),
            ("b/client", "a/db", "8080/TCP", false),
        ],
    );
}

#[test]
fn is_denied_when_named_port_protocol_differs() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: dns}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "53/TCP", false),
            ("b/client", "a/web", "53/UDP", false),
        ],
    );
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: dns, protocol: UDP}]}]",
    );
    table(&p, &[("b/client", "a/web", "53/UDP", true)]);
}

#[test]
fn named_port_in_egress_resolves_against_the_destination_not_the_source() {
    let p = np(
        "b",
        "p",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{ports: [{port: http}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "8080/TCP", true),
            ("b/client", "a/db", "8080/TCP", false),
            ("b/client", "203.0.113.1", "8080/TCP", false),
        ],
    );
}

#[test]
fn workload_template_pods_are_selected_by_their_labels() {
    let p = np(
        "b",
        "p",
        "  podSelector: {matchLabels: {app: api}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: http}]}]",
    );
    table(
        &p,
        &[
            ("b/client", "b/Deployment/api", "8080/TCP", true),
            ("a/web", "b/Deployment/api", "8080/TCP", false),
            ("a/web", "b/client", "8080/TCP", true),
        ],
    );
}

#[test]
fn object_without_namespace_is_in_default() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}\n";
    let l = load(p);
    assert_eq!(l.policies[0].namespace, "default");
    assert!(l.inventory.namespace_id("default").is_some());
}

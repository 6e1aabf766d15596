//! The admin tiers, one test per statement of the network-policy-api documentation: tier
//! order, priority, rule order, the three actions, subjects and peers, ports, the singleton
//! baseline, and what the API leaves undefined. Written from the spec's prose, on the cluster
//! of `rules_tests.rs`.

use super::{
    Evaluator, SideVerdict,
    rules_tests::{load, np},
};
use crate::{
    flow::{FlowRecord, Protocol},
    inventory::Loaded,
};

/// A ClusterNetworkPolicy (v1alpha2).
fn cnp(name: &str, tier: &str, priority: u32, subject: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n  subject: {subject}\n{rules}\n"
    )
}

/// An AdminNetworkPolicy (v1alpha1).
fn anp(name: &str, priority: u32, subject: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n  priority: {priority}\n  subject: {subject}\n{rules}\n"
    )
}

/// The BaselineAdminNetworkPolicy (v1alpha1).
fn banp(name: &str, subject: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n  subject: {subject}\n{rules}\n"
    )
}

const NS_A: &str = "{namespaces: {matchLabels: {team: a}}}";
const FROM_B: &str = "[{namespaces: {matchLabels: {team: b}}}]";

fn decide(l: &Loaded, src: &str, dst: &str, port: &str) -> (String, super::Explanation) {
    let ev = Evaluator::new(&l.inventory, &l.policies).with_admin(&l.admin);
    let (protocol, port) = match port.split_once('/') {
        Some((p, proto)) => (proto.parse().unwrap(), Some(p.parse().unwrap())),
        None => (port.parse::<Protocol>().unwrap(), None),
    };
    let r = FlowRecord::new(protocol, src.parse().unwrap(), dst.parse().unwrap(), port);
    let c = ev.connection(&r).expect("endpoints resolve");
    let e = ev.explain(&c);
    (e.verdict.to_owned(), e)
}

/// Runs `(src, dst, port, verdict)` cases.
fn table(policies: &str, cases: &[(&str, &str, &str, &str)]) {
    let l = load(policies);
    assert!(
        !l.admin.is_empty() || policies.is_empty(),
        "no admin policy loaded"
    );
    for (src, dst, port, want) in cases {
        let (got, e) = decide(&l, src, dst, port);
        assert_eq!(&got, want, "{src} -> {dst} {port}:\n{e}");
    }
}

#[test]
fn an_admin_deny_wins_over_a_network_policy_that_allows() {
    let p = cnp(
        "deny-b",
        "Admin",
        10,
        NS_A,
        &format!("  ingress: [{{action: Deny, from: {FROM_B}}}]"),
    ) + &np("a", "allow-all-in", "  podSelector: {}\n  ingress: [{}]");
    table(
        &p,
        &[
            ("b/client", "a/web", "8080/TCP", "deny"),
            ("a/db", "a/web", "8080/TCP", "allow"),
        ],
    );
    let (_, e) = decide(&load(&p), "b/client", "a/web", "8080/TCP");
    let t = e.ingress.tier_rule.expect("the tier rule is named");
    assert_eq!(
        (t.policy.as_str(), t.rule, t.priority),
        ("ClusterNetworkPolicy/deny-b", 0, 10)
    );
}

#[test]
fn an_admin_accept_wins_over_network_policy_isolation() {
    let p = cnp(
        "accept-b",
        "Admin",
        10,
        NS_A,
        &format!("  ingress: [{{action: Accept, from: {FROM_B}}}]"),
    ) + &np(
        "a",
        "deny-all-in",
        "  podSelector: {}\n  policyTypes: [Ingress]",
    );
    table(
        &p,
        &[
            ("b/client", "a/db", "5432/TCP", "allow"),
            ("a/web", "a/db", "5432/TCP", "deny"),
        ],
    );
}

#[test]
fn pass_hands_the_decision_to_network_policy_then_to_the_baseline() {
    let pass = cnp(
        "pass-b",
        "Admin",
        1,
        NS_A,
        &format!("  ingress: [{{action: Pass, from: {FROM_B}}}]"),
    );
    let baseline_deny = cnp(
        "baseline-deny",
        "Baseline",
        1,
        NS_A,
        "  ingress: [{action: Deny, from: [{namespaces: {}}]}]",
    );
    // db is isolated by a NetworkPolicy that admits client; web is not isolated, so the
    // baseline decides for it.
    let p = pass.clone()
        + &baseline_deny
        + &np(
            "a",
            "db-from-b",
            "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}]}]",
        );
    table(
        &p,
        &[
            ("b/client", "a/db", "5432/TCP", "allow"),
            ("b/client", "a/web", "8080/TCP", "deny"),
        ],
    );
    let (_, e) = decide(&load(&p), "b/client", "a/db", "5432/TCP");
    assert_eq!(e.ingress.passed_by.len(), 1, "{e}");
    assert_eq!(e.ingress.passed_by[0].policy, "ClusterNetworkPolicy/pass-b");
    assert!(
        e.ingress
            .reason
            .starts_with("passed by ClusterNetworkPolicy/pass-b"),
        "{e}"
    );
}

#[test]
fn the_baseline_applies_only_to_pods_no_network_policy_selects() {
    let p = banp(
        "default",
        NS_A,
        "  ingress: [{action: Deny, from: [{namespaces: {}}]}]",
    ) + &np(
        "a",
        "db-from-web",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]",
    );
    table(
        &p,
        &[
            // Isolated by a NetworkPolicy: it decides, allow and deny alike.
            ("a/web", "a/db", "5432/TCP", "allow"),
            ("b/client", "a/db", "5432/TCP", "deny"),
            // Not isolated: the baseline denies.
            ("b/client", "a/web", "8080/TCP", "deny"),
        ],
    );
}

#[test]
fn a_lower_priority_number_is_evaluated_first() {
    let p = cnp(
        "deny-late",
        "Admin",
        20,
        NS_A,
        &format!("  ingress: [{{action: Deny, from: {FROM_B}}}]"),
    ) + &cnp(
        "accept-early",
        "Admin",
        5,
        NS_A,
        &format!("  ingress: [{{action: Accept, from: {FROM_B}}}]"),
    );
    table(&p, &[("b/client", "a/web", "8080/TCP", "allow")]);
}

#[test]
fn rules_of_one_policy_apply_in_order() {
    let p = cnp(
        "ordered",
        "Admin",
        5,
        NS_A,
        &format!(
            "  ingress:\n  - {{name: web-port, action: Accept, from: {FROM_B}, protocols: [{{tcp: {{destinationPort: {{number: 8080}}}}}}]}}\n  - {{name: rest, action: Deny, from: {FROM_B}}}"
        ),
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "8080/TCP", "allow"),
            ("b/client", "a/web", "9090/TCP", "deny"),
        ],
    );
    let (_, e) = decide(&load(&p), "b/client", "a/web", "9090/TCP");
    let t = e.ingress.tier_rule.expect("named");
    assert_eq!((t.rule, t.name.as_deref()), (1, Some("rest")));
}

#[test]
fn equal_priorities_that_disagree_are_reported_as_undefined() {
    let accept = cnp(
        "x-accept",
        "Admin",
        7,
        NS_A,
        &format!("  ingress: [{{action: Accept, from: {FROM_B}}}]"),
    );
    let deny = cnp(
        "y-deny",
        "Admin",
        7,
        NS_A,
        &format!("  ingress: [{{action: Deny, from: {FROM_B}}}]"),
    );
    let same = cnp(
        "z-accept",
        "Admin",
        7,
        NS_A,
        &format!("  ingress: [{{action: Accept, from: {FROM_B}}}]"),
    );
    table(
        &(accept.clone() + &deny),
        &[("b/client", "a/web", "8080/TCP", "undefined")],
    );
    // Agreeing policies of equal priority are no conflict.
    table(
        &(accept + &same),
        &[("b/client", "a/web", "8080/TCP", "allow")],
    );
    let l = load(
        &(deny.clone()
            + &cnp(
                "w-accept",
                "Admin",
                7,
                NS_A,
                &format!("  ingress: [{{action: Accept, from: {FROM_B}}}]"),
            )),
    );
    let (_, e) = decide(&l, "b/client", "a/web", "8080/TCP");
    assert!(
        e.ingress.conflicting.is_some() && e.ingress.reason.contains("same priority"),
        "{e}"
    );
}

#[test]
fn host_network_pods_are_neither_subjects_nor_pod_peers() {
    // a/agent is a host-network pod of namespace a.
    let p = cnp(
        "deny-egress",
        "Admin",
        1,
        NS_A,
        "  egress: [{action: Deny, to: [{namespaces: {}}]}]",
    ) + &cnp(
        "deny-to-pods",
        "Admin",
        2,
        "{namespaces: {matchLabels: {team: b}}}",
        "  egress: [{action: Deny, to: [{pods: {namespaceSelector: {}, podSelector: {}}}]}]",
    );
    table(
        &p,
        &[
            ("a/agent", "b/client", "80/TCP", "allow"),
            ("a/web", "b/client", "80/TCP", "deny"),
            ("b/client", "a/agent", "80/TCP", "allow"),
            ("b/client", "a/web", "80/TCP", "deny"),
        ],
    );
}

#[test]
fn protocols_select_ports_numbers_ranges_and_named_ports() {
    let p = cnp(
        "ports",
        "Admin",
        1,
        NS_A,
        &format!(
            "  ingress:\n  - {{action: Deny, from: {FROM_B}, protocols: [{{destinationNamedPort: dns}}]}}\n  - {{action: Deny, from: {FROM_B}, protocols: [{{tcp: {{destinationPort: {{range: {{start: 9000, end: 9100}}}}}}}}, {{udp: {{destinationPort: {{number: 514}}}}}}]}}"
        ),
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "53/UDP", "deny"),
            ("b/client", "a/web", "53/TCP", "allow"),
            ("b/client", "a/web", "9050/TCP", "deny"),
            ("b/client", "a/web", "9101/TCP", "allow"),
            ("b/client", "a/web", "514/UDP", "deny"),
            ("b/client", "a/web", "514/TCP", "allow"),
        ],
    );
}

#[test]
fn networks_nodes_and_domain_names_are_egress_peers() {
    let node = "---\napiVersion: v1\nkind: Node\nmetadata: {name: n2, labels: {role: infra}}\nstatus: {addresses: [{type: InternalIP, address: 192.168.0.2}]}\n";
    let p = node.to_owned()
        + &cnp(
            "egress",
            "Admin",
            1,
            NS_A,
            "  egress:\n  - {action: Deny, to: [{networks: [203.0.113.0/24]}]}\n  - {action: Deny, to: [{nodes: {matchLabels: {role: infra}}}]}\n  - {action: Accept, to: [{domainNames: [api.example.com, '*.example.org']}]}\n  - {action: Deny, to: [{networks: [0.0.0.0/0]}]}",
        );
    table(
        &p,
        &[
            ("a/web", "203.0.113.7", "443/TCP", "deny"),
            ("a/web", "192.168.0.2", "10250/TCP", "deny"),
            // An external address might be one of the names: the verdict is unknown.
            ("a/web", "198.51.100.1", "443/TCP", "unknown"),
            // A pod is no domain name; 0.0.0.0/0 matches pods too.
            ("a/web", "b/client", "80/TCP", "deny"),
        ],
    );
}

#[test]
fn domain_names_match_the_names_the_source_resolved() {
    let p = cnp(
        "egress",
        "Admin",
        1,
        NS_A,
        "  egress:\n  - {action: Accept, to: [{domainNames: [api.example.com, '*.example.org']}]}\n  - {action: Deny, to: [{networks: [0.0.0.0/0]}]}",
    );
    let l = load(&p);
    let ev = Evaluator::new(&l.inventory, &l.policies).with_admin(&l.admin);
    let decide = |names: &[&str]| {
        let mut r = FlowRecord::new(
            Protocol::Tcp,
            "a/web".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            Some(443),
        );
        r.dst_names = names.iter().map(|n| (*n).to_owned()).collect();
        let c = ev.connection(&r).unwrap();
        ev.evaluate(&c).decision()
    };
    // Names known: the Accept decides for a match, and the Deny below it otherwise.
    assert_eq!(decide(&["api.example.com"]), "allow");
    assert_eq!(decide(&["cdn.eu.example.org"]), "allow");
    assert_eq!(decide(&["example.org"]), "deny");
    assert_eq!(decide(&["www.example.com"]), "deny");
    // Unknown: never a guess.
    assert_eq!(decide(&[]), "unknown");
}

#[test]
fn v1alpha1_policies_use_allow_and_ports_and_the_baseline_is_a_singleton() {
    let p = anp(
        "allow-web",
        3,
        NS_A,
        &format!(
            "  ingress:\n  - {{action: Allow, from: {FROM_B}, ports: [{{portNumber: {{protocol: TCP, port: 8080}}}}]}}\n  - {{action: Pass, from: {FROM_B}, ports: [{{portRange: {{protocol: UDP, start: 50, end: 60}}}}]}}\n  - {{action: Deny, from: {FROM_B}}}"
        ),
    ) + &banp(
        "default",
        NS_A,
        &format!("  ingress: [{{action: Allow, from: {FROM_B}}}]"),
    );
    table(
        &p,
        &[
            ("b/client", "a/web", "8080/TCP", "allow"),
            ("b/client", "a/web", "53/UDP", "allow"),
            ("b/client", "a/web", "22/TCP", "deny"),
        ],
    );
    let mut m = crate::inventory::Manifests::new();
    let err = m
        .add_text(
            std::path::Path::new("banp.yaml"),
            &banp(
                "strict",
                NS_A,
                "  ingress: [{action: Deny, from: [{namespaces: {}}]}]",
            ),
        )
        .expect_err("a baseline not named default");
    assert!(format!("{err:#}").contains("metadata.name"), "{err:#}");
    let err = m
        .add_text(
            std::path::Path::new("banp.yaml"),
            &banp(
                "default",
                NS_A,
                "  ingress: [{action: Pass, from: [{namespaces: {}}]}]",
            ),
        )
        .expect_err("Pass in a baseline");
    assert!(
        format!("{err:#}").contains("spec.ingress[0].action"),
        "{err:#}"
    );
}

#[test]
fn invalid_admin_policies_are_errors_naming_the_field() {
    for (policy, field) in [
        (cnp("t", "Middle", 1, NS_A, ""), "spec.tier"),
        (cnp("p", "Admin", 1001, NS_A, ""), "spec.priority"),
        (
            cnp(
                "s",
                "Admin",
                1,
                "{namespaces: {}, pods: {podSelector: {}}}",
                "",
            ),
            "spec.subject",
        ),
        (
            cnp(
                "i",
                "Admin",
                1,
                NS_A,
                "  ingress: [{action: Deny, from: [{networks: [10.0.0.0/8]}]}]",
            ),
            "spec.ingress[0].from[0]",
        ),
        (
            cnp(
                "a",
                "Admin",
                1,
                NS_A,
                "  ingress: [{action: Allow, from: [{namespaces: {}}]}]",
            ),
            "spec.ingress[0].action",
        ),
        (
            cnp(
                "d",
                "Admin",
                1,
                NS_A,
                "  egress: [{action: Deny, to: [{domainNames: [x.example]}]}]",
            ),
            "spec.egress[0].to",
        ),
        (
            cnp(
                "n",
                "Admin",
                1,
                NS_A,
                "  egress: [{action: Deny, to: [{networks: [10.0.0.0/33]}]}]",
            ),
            "spec.egress[0].to[0].networks[0]",
        ),
    ] {
        let mut m = crate::inventory::Manifests::new();
        let err = m
            .add_text(std::path::Path::new("cnp.yaml"), &policy)
            .expect_err(field);
        let text = format!("{err:#}");
        assert!(
            text.contains(field) && text.contains("cnp.yaml"),
            "{field}: {text}"
        );
    }
}

#[test]
fn a_pod_connecting_to_itself_is_not_subject_to_admin_policies() {
    let p = cnp(
        "deny-all",
        "Admin",
        1,
        NS_A,
        "  ingress: [{action: Deny, from: [{namespaces: {}}]}]\n  egress: [{action: Deny, to: [{namespaces: {}}]}]",
    );
    table(
        &p,
        &[
            ("10.0.1.1", "10.0.1.1", "8080/TCP", "allow"),
            ("a/db", "a/web", "8080/TCP", "deny"),
        ],
    );
}

#[test]
fn policy_kinds_that_are_not_evaluated_are_warned_about() {
    let l = load(
        "---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: l7}\nspec: {}\n---\napiVersion: k8s.cni.cncf.io/v1beta1\nkind: MultiNetworkPolicy\nmetadata: {name: m, namespace: a}\nspec: {}\n",
    );
    assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
    assert!(l.warnings[0].contains("CiliumClusterwideNetworkPolicy l7 is not evaluated"));
    assert!(l.warnings[1].contains("MultiNetworkPolicy m"));
}

#[test]
fn without_admin_policies_verdicts_are_those_of_network_policy() {
    let l = load(&np(
        "a",
        "deny-all-in",
        "  podSelector: {}\n  policyTypes: [Ingress]",
    ));
    let ev = Evaluator::new(&l.inventory, &l.policies).with_admin(&l.admin);
    let r = FlowRecord::new(
        Protocol::Tcp,
        "b/client".parse().unwrap(),
        "a/web".parse().unwrap(),
        Some(80),
    );
    let c = ev.connection(&r).unwrap();
    assert_eq!(ev.evaluate(&c).ingress, SideVerdict::Denied);
}

#[test]
fn allowed_ports_agree_with_verdicts_through_the_tiers() {
    // Accept 8080, deny 9000-9100, pass 53/UDP to a NetworkPolicy that admits UDP only, and
    // leave the rest to a baseline that denies TCP.
    let p = cnp(
        "admin",
        "Admin",
        1,
        NS_A,
        &format!(
            "  ingress:\n  - {{action: Accept, from: {FROM_B}, protocols: [{{tcp: {{destinationPort: {{number: 8080}}}}}}]}}\n  - {{action: Deny, from: {FROM_B}, protocols: [{{tcp: {{destinationPort: {{range: {{start: 9000, end: 9100}}}}}}}}]}}\n  - {{action: Pass, from: {FROM_B}, protocols: [{{udp: {{destinationPort: {{number: 53}}}}}}]}}"
        ),
    ) + &cnp(
        "baseline",
        "Baseline",
        1,
        NS_A,
        "  ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 1, end: 65535}}}}]}]",
    ) + &np(
        "a",
        "db-udp",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{ports: [{protocol: UDP}]}]",
    );
    let l = load(&p);
    let ev = Evaluator::new(&l.inventory, &l.policies).with_admin(&l.admin);
    for dst in ["a/web", "a/db"] {
        let src = l.inventory.resolve(&"b/client".parse().unwrap()).unwrap();
        let d = l.inventory.resolve(&dst.parse().unwrap()).unwrap();
        let ports = ev.allowed_ports(&src, &d);
        for (proto, port) in [
            (Protocol::Tcp, 8080),
            (Protocol::Tcp, 9050),
            (Protocol::Tcp, 22),
            (Protocol::Udp, 53),
            (Protocol::Udp, 514),
        ] {
            let r = FlowRecord::new(
                proto,
                "b/client".parse().unwrap(),
                dst.parse().unwrap(),
                Some(port),
            );
            let c = ev.connection(&r).unwrap();
            assert_eq!(
                ports.contains(proto, Some(port)),
                ev.evaluate(&c).allowed(),
                "{dst} {port}/{proto}: ports {ports}"
            );
        }
    }
}

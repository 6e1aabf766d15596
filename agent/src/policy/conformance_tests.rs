//! Conformance table: every action × direction × peer type × tier, in both API versions, with
//! and without a NetworkPolicy isolating the subject, written from the network-policy-api
//! documentation's statements (not from its test suite). Each case also checks the same
//! connection against a peer the rule does not match.

use super::{
    Evaluator,
    rules_tests::{load, np},
};
use crate::flow::{FlowRecord, Protocol};

/// Node n2 (192.168.0.2), labelled for `nodes` peers.
const NODE: &str = "---\napiVersion: v1\nkind: Node\nmetadata: {name: n2, labels: {role: infra}}\nstatus: {addresses: [{type: InternalIP, address: 192.168.0.2}]}\n";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Version {
    V1alpha2,
    V1alpha1,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Accept,
    Deny,
    Pass,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum PeerType {
    Namespaces,
    Pods,
    Nodes,
    Networks,
    DomainNames,
}

/// The peer YAML, the end it matches and an end it does not, from a/web's point of view.
fn peer(p: PeerType) -> (&'static str, &'static str, &'static str) {
    match p {
        PeerType::Namespaces => ("{namespaces: {matchLabels: {team: b}}}", "b/client", "a/db"),
        PeerType::Pods => (
            "{pods: {namespaceSelector: {matchLabels: {team: b}}, podSelector: {matchLabels: {app: client}}}}",
            "b/client",
            "a/db",
        ),
        PeerType::Nodes => (
            "{nodes: {matchLabels: {role: infra}}}",
            "192.168.0.2",
            "a/db",
        ),
        PeerType::Networks => ("{networks: [10.0.2.0/24]}", "b/client", "a/db"),
        PeerType::DomainNames => ("{domainNames: [api.example.com]}", "203.0.113.5", "a/db"),
    }
}

/// The policy of one case, selecting a/web, or `None` when the API cannot express it.
fn policy(v: Version, tier: &str, act: Act, ingress: bool, p: PeerType) -> Option<String> {
    let egress_only = matches!(
        p,
        PeerType::Nodes | PeerType::Networks | PeerType::DomainNames
    );
    if ingress && egress_only {
        return None;
    }
    let baseline_v1 = v == Version::V1alpha1 && tier == "Baseline";
    if p == PeerType::DomainNames && (act != Act::Accept || baseline_v1) {
        return None;
    }
    if baseline_v1 && act == Act::Pass {
        return None;
    }
    let action = match (act, v) {
        (Act::Accept, Version::V1alpha2) => "Accept",
        (Act::Accept, Version::V1alpha1) => "Allow",
        (Act::Deny, _) => "Deny",
        (Act::Pass, _) => "Pass",
    };
    let (peer_yaml, _, _) = peer(p);
    let (dir, list) = if ingress {
        ("ingress", "from")
    } else {
        ("egress", "to")
    };
    let subject = "{pods: {namespaceSelector: {matchLabels: {team: a}}, podSelector: {matchLabels: {app: web}}}}";
    let rules = format!("  {dir}: [{{action: {action}, {list}: [{peer_yaml}]}}]");
    Some(match (v, tier) {
        (Version::V1alpha2, _) => format!(
            "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: case}}\nspec:\n  tier: {tier}\n  priority: 10\n  subject: {subject}\n{rules}\n"
        ),
        (Version::V1alpha1, "Admin") => format!(
            "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {{name: case}}\nspec:\n  priority: 10\n  subject: {subject}\n{rules}\n"
        ),
        (Version::V1alpha1, _) => format!(
            "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {{name: default}}\nspec:\n  subject: {subject}\n{rules}\n"
        ),
    })
}

/// What the documentation says the matching connection gets.
fn expected(tier: &str, act: Act, isolated: bool, p: PeerType) -> &'static str {
    match (tier, isolated) {
        // The Baseline tier is only consulted for pods no NetworkPolicy selects.
        ("Baseline", true) => "deny",
        _ if p == PeerType::DomainNames => "unknown",
        (_, _) => match act {
            Act::Accept => "allow",
            Act::Deny => "deny",
            // Pass: NetworkPolicy decides, then the Baseline, then the default allow.
            Act::Pass if isolated => "deny",
            Act::Pass => "allow",
        },
    }
}

fn verdict(policies: &str, src: &str, dst: &str) -> String {
    let l = load(&format!("{NODE}{policies}"));
    let ev = Evaluator::new(&l.inventory, &l.policies).with_admin(&l.admin);
    let r = FlowRecord::new(
        Protocol::Tcp,
        src.parse().unwrap(),
        dst.parse().unwrap(),
        Some(443),
    );
    let c = ev.connection(&r).expect("resolves");
    ev.explain(&c).verdict.to_owned()
}

#[test]
fn every_action_direction_peer_and_tier_in_both_versions() {
    let mut cases = 0;
    for v in [Version::V1alpha2, Version::V1alpha1] {
        for tier in ["Admin", "Baseline"] {
            for ingress in [true, false] {
                for act in [Act::Accept, Act::Deny, Act::Pass] {
                    for p in [
                        PeerType::Namespaces,
                        PeerType::Pods,
                        PeerType::Nodes,
                        PeerType::Networks,
                        PeerType::DomainNames,
                    ] {
                        let Some(policy) = policy(v, tier, act, ingress, p) else {
                            continue;
                        };
                        let (_, hit, miss) = peer(p);
                        for isolated in [false, true] {
                            let dir = if ingress { "Ingress" } else { "Egress" };
                            let isolation = if isolated {
                                np(
                                    "a",
                                    "isolate-web",
                                    &format!(
                                        "  podSelector: {{matchLabels: {{app: web}}}}\n  policyTypes: [{dir}]"
                                    ),
                                )
                            } else {
                                String::new()
                            };
                            let text = policy.clone() + &isolation;
                            let (src, dst) = if ingress {
                                (hit, "a/web")
                            } else {
                                ("a/web", hit)
                            };
                            let want = expected(tier, act, isolated, p);
                            let got = verdict(&text, src, dst);
                            assert_eq!(
                                got, want,
                                "{v:?} {tier} {act:?} {dir} {p:?} isolated={isolated}: {src} -> {dst}\n{text}"
                            );
                            // A peer the rule does not match: as if the policy were not there.
                            let (src, dst) = if ingress {
                                (miss, "a/web")
                            } else {
                                ("a/web", miss)
                            };
                            let want = if isolated { "deny" } else { "allow" };
                            let got = verdict(&text, src, dst);
                            assert_eq!(
                                got, want,
                                "{v:?} {tier} {act:?} {dir} {p:?} isolated={isolated}, unmatched: {src} -> {dst}\n{text}"
                            );
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    // v1alpha2: 19 cases per tier; v1alpha1: 19 Admin, 12 Baseline; each with and without
    // isolation.
    assert_eq!(cases, 138);
}

#[test]
fn combinations_the_api_forbids_are_rejected_naming_the_field() {
    for (v, tier, act, ingress, p, field) in [
        (
            Version::V1alpha2,
            "Admin",
            Act::Deny,
            true,
            PeerType::Networks,
            "spec.ingress[0].from[0]",
        ),
        (
            Version::V1alpha2,
            "Admin",
            Act::Deny,
            true,
            PeerType::Nodes,
            "spec.ingress[0].from[0]",
        ),
        (
            Version::V1alpha2,
            "Admin",
            Act::Deny,
            false,
            PeerType::DomainNames,
            "spec.egress[0].to",
        ),
        (
            Version::V1alpha1,
            "Admin",
            Act::Pass,
            false,
            PeerType::DomainNames,
            "spec.egress[0].to",
        ),
    ] {
        // Build the forbidden policy by hand: `policy` refuses to.
        let action = match (act, v) {
            (Act::Accept, Version::V1alpha2) => "Accept",
            (Act::Accept, Version::V1alpha1) => "Allow",
            (Act::Deny, _) => "Deny",
            (Act::Pass, _) => "Pass",
        };
        let (dir, list) = if ingress {
            ("ingress", "from")
        } else {
            ("egress", "to")
        };
        let (kind, api, extra) = match v {
            Version::V1alpha2 => (
                "ClusterNetworkPolicy",
                "v1alpha2",
                format!("  tier: {tier}\n"),
            ),
            Version::V1alpha1 => ("AdminNetworkPolicy", "v1alpha1", String::new()),
        };
        let text = format!(
            "apiVersion: policy.networking.k8s.io/{api}\nkind: {kind}\nmetadata: {{name: bad}}\nspec:\n{extra}  priority: 1\n  subject: {{namespaces: {{}}}}\n  {dir}: [{{action: {action}, {list}: [{}]}}]\n",
            peer(p).0
        );
        let mut m = crate::inventory::Manifests::new();
        let err = m
            .add_text(std::path::Path::new("bad.yaml"), &text)
            .expect_err(field);
        assert!(
            format!("{err:#}").contains(field),
            "{field}: {err:#}\n{text}"
        );
    }
}

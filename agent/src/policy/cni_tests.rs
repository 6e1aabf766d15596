//! Table tests for the choices NetworkPolicy leaves to the CNI (docs/policy-semantics.md):
//! self-traffic, node traffic, host-network pods, external addresses, ipBlocks and pod IPs.

use super::{
    Exemption, SideVerdict,
    rules_tests::{load, np, table, verdict},
};

#[test]
fn pod_to_itself_is_allowed_regardless_of_policy() {
    let p = np(
        "a",
        "deny",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]",
    );
    table(
        &p,
        &[
            ("a/web", "a/web", "8080/TCP", true),
            ("10.0.1.1", "10.0.1.1", "1/UDP", true),
            ("a/web", "a/db", "1/TCP", false),
        ],
    );
    let l = load(&p);
    let v = verdict(&l, "a/web", "a/web", "80/TCP");
    assert_eq!(v.ingress, SideVerdict::Exempt(Exemption::SelfTraffic));
}

#[test]
fn replicas_of_one_workload_are_not_self_traffic() {
    let p = np("b", "deny", "  podSelector: {}\n  policyTypes: [Ingress]");
    table(
        &p,
        &[("b/Deployment/api", "b/Deployment/api", "8080/TCP", false)],
    );
    table(
        "",
        &[("b/Deployment/api", "b/Deployment/api", "8080/TCP", true)],
    );
}

#[test]
fn local_node_to_pod_is_allowed_for_kubelet_probes() {
    let p = np("a", "deny", "  podSelector: {}\n  policyTypes: [Ingress]");
    table(
        &p,
        &[
            ("192.168.0.1", "a/web", "8080/TCP", true),
            ("192.168.0.2", "a/web", "8080/TCP", false),
        ],
    );
    let l = load(&p);
    let v = verdict(&l, "192.168.0.1", "10.0.1.1", "8080/TCP");
    assert_eq!(v.ingress, SideVerdict::Exempt(Exemption::LocalNode));
}

#[test]
fn host_network_pods_are_never_isolated_and_match_only_ip_blocks() {
    let p = np(
        "a",
        "deny",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]",
    ) + &np(
        "b",
        "from-a",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}}]}]",
    );
    // a/agent is selected by nothing despite `podSelector: {}`, and podSelectors do not match it.
    table(
        &p,
        &[
            ("a/agent", "a/db", "5432/TCP", true),
            ("b/client", "a/agent", "22/TCP", true),
            ("a/agent", "b/client", "1/TCP", false),
        ],
    );
    let p = np(
        "b",
        "from-node",
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/24}}]}]",
    );
    table(&p, &[("a/agent", "b/client", "1/TCP", true)]);
}

#[test]
fn remote_node_is_matched_only_by_ip_block() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}}]}]",
    );
    table(&p, &[("192.168.0.2", "a/web", "80/TCP", false)]);
}

#[test]
fn unknown_address_is_external_and_decided_by_ip_blocks() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]}]",
    );
    table(
        &p,
        &[
            ("a/web", "203.0.113.1", "443/TCP", true),
            ("a/web", "10.9.9.9", "443/TCP", false),
            ("a/web", "b/client", "443/TCP", false),
        ],
    );
    let l = load(&p);
    let v = verdict(&l, "a/web", "203.0.113.1", "443/TCP");
    assert_eq!(v.ingress, SideVerdict::Exempt(Exemption::External));
}

#[test]
fn ip_block_matches_pod_ips_as_the_flow_uses_them() {
    let p = np(
        "a",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: \"fd00::/16\"}}]}]",
    );
    table(
        &p,
        &[
            ("fd00::2:1", "a/web", "80/TCP", true),
            ("10.0.2.1", "a/web", "80/TCP", false),
            ("b/Deployment/api", "a/web", "80/TCP", false),
        ],
    );
}

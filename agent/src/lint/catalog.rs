//! The rule catalog: stable ids, names, default severities, rationale and fix, shared by
//! every output (SARIF's `tool.driver.rules`) and by docs/audit.md.

use std::fmt;

use serde::{Serialize, Serializer};

/// How bad a finding is; the names are SARIF's levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Note => "note",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule's stable identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleId {
    MissingDefaultDenyIngress,
    MissingDefaultDenyEgress,
    EgressDenyBlocksDns,
    MetricsScrapeBlocked,
    PeerAllNamespaces,
    PeerAllPodsInNamespace,
    PeerAnyAddress,
    PeerCoversPodCidr,
    RuleWithoutPorts,
    RuleAnyPeer,
    SelectorTooBroad,
    PeerMissingNamespaceSelector,
    PolicySelectsNothing,
    PeerMatchesNothing,
    RuleShadowed,
    InternalServiceExposed,
    RuleUnused,
    PortsUnused,
    PeersUnused,
    AdminPassToNothing,
    AdminAcceptBroad,
    AdminRuleShadowed,
    AdminEqualPriorityOverlap,
    BaselineAllowsEverything,
}

/// What the catalog says about a rule.
#[derive(Clone, Copy, Debug)]
pub struct RuleInfo {
    pub id: RuleId,
    /// `TM001`: stable, never reused.
    pub code: &'static str,
    /// `missing-default-deny-ingress`.
    pub name: &'static str,
    pub severity: Severity,
    /// One line.
    pub summary: &'static str,
    /// Why it matters.
    pub rationale: &'static str,
    /// What to do.
    pub fix: &'static str,
}

macro_rules! catalog {
    ($($id:ident $code:literal $name:literal $sev:ident $summary:literal $rationale:literal $fix:literal;)*) => {
        /// Every rule, in id order.
        pub const RULES: &[RuleInfo] = &[$(RuleInfo {
            id: RuleId::$id,
            code: $code,
            name: $name,
            severity: Severity::$sev,
            summary: $summary,
            rationale: $rationale,
            fix: $fix,
        },)*];
    };
}

catalog! {
    MissingDefaultDenyIngress "TM001" "missing-default-deny-ingress" Warning
        "A namespace with pods has no default-deny for ingress."
        "Without a policy selecting every pod for Ingress, a new pod, or one nobody wrote a policy for, accepts connections from anywhere. A default-deny covers only the directions its policyTypes names: one written for Egress leaves ingress open."
        "Add a policy with `podSelector: {}` and `policyTypes: [Ingress]` and no ingress rules, then allow what is needed.";
    MissingDefaultDenyEgress "TM002" "missing-default-deny-egress" Warning
        "A namespace with pods has no default-deny for egress."
        "Without a policy selecting every pod for Egress, a compromised pod can connect anywhere, inside the cluster and out. `policyTypes` must name Egress: a policy without policyTypes and without egress rules isolates ingress only."
        "Add a policy with `podSelector: {}` and `policyTypes: [Egress]` and no egress rules, then allow DNS and what is needed.";
    EgressDenyBlocksDns "TM003" "egress-deny-blocks-dns" Error
        "Pods isolated for egress may not reach the cluster DNS."
        "Once a pod is isolated for egress, every connection needs a rule, name resolution included. Without UDP and TCP 53 to the cluster DNS pods, the pods lose name resolution and fail in ways that do not look like a policy problem."
        "Allow egress to the cluster DNS pods on UDP and TCP port 53.";
    MetricsScrapeBlocked "TM004" "metrics-scrape-blocked" Error
        "The metrics scraper cannot reach a scrape target."
        "Pods declared for scraping (prometheus.io/scrape annotations, ServiceMonitor, PodMonitor) whose metrics port the scraper's egress or the target's ingress denies disappear from monitoring, usually unnoticed until an incident."
        "Allow the scraper's pods to the target's metrics port, on the side that denies it.";
    PeerAllNamespaces "TM010" "peer-all-namespaces" Warning
        "A peer with `namespaceSelector: {}` matches every namespace."
        "`namespaceSelector: {}` means every namespace, including ones created later. Combined with `podSelector: {}` it means every pod of the cluster."
        "Select the namespaces by `kubernetes.io/metadata.name` or by a label they carry.";
    PeerAllPodsInNamespace "TM011" "peer-all-pods-in-namespace" Warning
        "A peer with `podSelector: {}` matches every pod of a namespace."
        "An empty podSelector in a peer matches every pod of its namespace, also pods deployed later that have no business with the policy's pods."
        "Select the pods that need the connection by their labels.";
    PeerAnyAddress "TM012" "peer-any-address" Error
        "An ipBlock peer is 0.0.0.0/0 or ::/0."
        "A default route as a peer matches every address: the whole internet and, on most CNIs, every pod and node too."
        "Name the external CIDRs the pods need; for internet egress, at least except the private ranges and the pod CIDR.";
    PeerCoversPodCidr "TM013" "peer-covers-pod-cidr" Error
        "An ipBlock peer covers the cluster's pod CIDR."
        "An ipBlock that contains the pod CIDR matches every pod by address, bypassing the selectors that were meant to limit which pods are peers."
        "Use pod and namespace selectors for pods, and add the pod CIDR to the ipBlock's `except`.";
    RuleWithoutPorts "TM014" "rule-without-ports" Warning
        "A rule has no ports: it allows every port and protocol."
        "A rule without `ports` opens every port of every protocol, ICMP included, to its peers, where the application needs one or two."
        "List the ports the peers need.";
    RuleAnyPeer "TM015" "rule-any-peer" Error
        "A rule has no `from`/`to`: it allows every peer."
        "An ingress rule without `from` (or an egress rule without `to`) matches every pod, node and address, which undoes the isolation."
        "List the peers that need the connection.";
    SelectorTooBroad "TM016" "selector-too-broad" Warning
        "A peer matches more than the allowed share of the cluster's pods."
        "A selector that matches most pods of the cluster, such as a label every workload carries, is a broad allow in disguise."
        "Select by a label that identifies the workloads that need the connection.";
    PeerMissingNamespaceSelector "TM020" "peer-missing-namespace-selector" Error
        "A podSelector peer without namespaceSelector matches only its own namespace, but the pods it names are elsewhere."
        "A peer with only `podSelector` looks in the policy's own namespace. When no pod there has the labels and pods of another namespace do, cross-namespace traffic was meant and is denied."
        "Put `namespaceSelector` and `podSelector` in the same peer (one list item).";
    PolicySelectsNothing "TM030" "policy-selects-nothing" Warning
        "A policy's podSelector selects no pod."
        "A policy that selects nothing enforces nothing: usually a typo in a label, or a workload that was renamed."
        "Fix the podSelector, or delete the policy.";
    PeerMatchesNothing "TM031" "peer-matches-nothing" Warning
        "A pod peer matches no pod."
        "A peer that matches nothing allows nothing: the traffic it was written for is denied, or the peer is left over."
        "Fix the selector, or remove the peer.";
    RuleShadowed "TM032" "rule-shadowed" Note
        "A rule is covered by a broader rule that applies to the same pods."
        "A rule whose peers and ports another rule already allows for every pod it applies to has no effect; removing the broader rule later would surprise."
        "Remove the narrower rule, or narrow the broader one.";
    InternalServiceExposed "TM040" "internal-service-exposed" Warning
        "An internal-only Service's pods are not isolated for ingress."
        "A ClusterIP Service with no Ingress or route in front of it is internal, yet with no ingress policy selecting its pods every pod in the cluster can connect to them."
        "Add an ingress policy for the Service's pods that allows its clients only.";
    RuleUnused "TM050" "rule-unused" Warning
        "A rule allowed none of the observed connections."
        "A rule that no observed traffic needs is excess privilege."
        "Remove the rule, or observe longer if the traffic is rare.";
    PortsUnused "TM051" "ports-unused" Warning
        "A rule allows ports that no observed connection used."
        "Ports allowed but never used are excess privilege."
        "Narrow the rule's ports to the observed ones.";
    PeersUnused "TM052" "peers-unused" Warning
        "A rule allows peers that no observed connection came from or went to."
        "Peers allowed but never seen are excess privilege."
        "Narrow the rule's peers to the observed ones.";
    AdminPassToNothing "TM060" "admin-pass-to-nothing" Warning
        "An Admin-tier Pass reaches pods that nothing below decides for."
        "Pass hands a connection to NetworkPolicy and then to the Baseline tier. For pods no NetworkPolicy isolates and no Baseline policy selects, that ends in the default allow: the Pass allows everything it matches."
        "Isolate those pods with a NetworkPolicy, add a Baseline-tier deny, or make the rule Accept or Deny.";
    AdminAcceptBroad "TM061" "admin-accept-broad" Warning
        "An Admin-tier Accept matches every namespace, pod or address."
        "An Admin Accept is final: no NetworkPolicy is consulted. Accepting a peer that matches everything overrides the isolation of every namespace the policy selects, default-denies included."
        "Accept only the peers that need the connection, or use Pass so that the namespaces' own policies decide.";
    AdminRuleShadowed "TM062" "admin-rule-shadowed" Note
        "An admin rule is decided first by a higher-priority policy."
        "A rule whose connections a policy with a lower priority number (same tier, same pods) always decides first has no effect; it misleads whoever reads it."
        "Remove the rule, or reorder the priorities.";
    AdminEqualPriorityOverlap "TM063" "admin-equal-priority-overlap" Warning
        "Two admin policies of the same tier and priority select the same pods."
        "The API leaves it to the implementation which of two equal-priority policies applies when both match; CNIs differ, and trustmap reports such verdicts as undefined."
        "Give each policy its own priority.";
    BaselineAllowsEverything "TM064" "baseline-allows-everything" Warning
        "A Baseline-tier rule accepts every peer on every port."
        "Without a baseline everything is allowed anyway: a baseline that accepts everything protects nothing, and hides that nobody wrote a default deny."
        "Make the baseline deny what nobody allowed, and accept only what every namespace needs, such as DNS.";
}

impl RuleId {
    pub fn info(self) -> &'static RuleInfo {
        RULES
            .iter()
            .find(|r| r.id == self)
            .expect("every rule is in the catalog")
    }

    /// Position in [`RULES`], for SARIF's `ruleIndex`.
    pub fn index(self) -> usize {
        RULES
            .iter()
            .position(|r| r.id == self)
            .expect("every rule is in the catalog")
    }
}

impl Serialize for RuleId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.info().code)
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.info();
        write!(f, "{}/{}", i.code, i.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_are_unique() {
        let mut codes: Vec<&str> = RULES.iter().map(|r| r.code).collect();
        let mut names: Vec<&str> = RULES.iter().map(|r| r.name).collect();
        codes.sort();
        codes.dedup();
        names.sort();
        names.dedup();
        assert_eq!(codes.len(), RULES.len());
        assert_eq!(names.len(), RULES.len());
    }

    #[test]
    fn docs_list_every_rule_with_its_severity() {
        let doc = include_str!("../../../docs/audit.md");
        for r in RULES {
            let row = format!("| {} | `{}` | {} |", r.code, r.name, r.severity);
            assert!(doc.contains(&row), "docs/audit.md lacks {row}");
        }
    }
}

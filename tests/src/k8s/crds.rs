//! Stand-ins for CustomResourceDefinitions that other projects publish and a cluster may have:
//! the SIG Network admin policy kinds, and one policy kind trustmap does not evaluate. Each
//! declares the group, version, kind, plural and scope of the real one and keeps every field of
//! an object (`x-kubernetes-preserve-unknown-fields`), so the API server stores what a test
//! applies and trustmap, not a schema, decides what is valid. A group under `k8s.io` needs the
//! approval annotation; a value starting with `unapproved` is what the API server accepts from
//! definitions made outside Kubernetes itself.

/// (group, version, kind, plural, scope) of each stand-in.
pub const KINDS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "policy.networking.k8s.io",
        "v1alpha2",
        "ClusterNetworkPolicy",
        "clusternetworkpolicies",
        "Cluster",
    ),
    (
        "policy.networking.k8s.io",
        "v1alpha1",
        "AdminNetworkPolicy",
        "adminnetworkpolicies",
        "Cluster",
    ),
    (
        "policy.networking.k8s.io",
        "v1alpha1",
        "BaselineAdminNetworkPolicy",
        "baselineadminnetworkpolicies",
        "Cluster",
    ),
    (
        "cilium.io",
        "v2",
        "CiliumNetworkPolicy",
        "ciliumnetworkpolicies",
        "Namespaced",
    ),
];

/// The stand-ins, as one multi-document YAML text for `kubectl apply -f`.
pub fn manifest() -> String {
    KINDS
        .iter()
        .map(|(group, version, kind, plural, scope)| {
            let approval = if group.ends_with("k8s.io") {
                "\n  annotations:\n    api-approved.kubernetes.io: \"unapproved, a test stand-in\""
            } else {
                ""
            };
            format!(
                "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}{approval}
spec:
  group: {group}
  scope: {scope}
  names: {{kind: {kind}, plural: {plural}, singular: {singular}, listKind: {kind}List}}
  versions:
    - name: {version}
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
",
                singular = kind.to_lowercase()
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// `plural.group` of each stand-in, for `kubectl wait crd/...`.
pub fn names() -> Vec<String> {
    KINDS
        .iter()
        .map(|(group, _, _, plural, _)| format!("{plural}.{group}"))
        .collect()
}

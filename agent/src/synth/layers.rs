//! `learn --layers`: the cluster-scoped layers around the learned NetworkPolicies. Pure.
//!
//! - `trustmap-baseline-deny`, a Baseline-tier ClusterNetworkPolicy over the learned namespaces
//!   that denies everything nobody allowed: pods that no learned NetworkPolicy isolates (new
//!   workloads, ones without traffic) are denied, where today they would be open.
//! - `trustmap-dns-and-monitoring`, an Admin-tier ClusterNetworkPolicy over the same namespaces
//!   that always accepts egress to the cluster DNS (UDP and TCP 53) and, when a monitoring
//!   namespace is given, ingress from it. These two are allowed whether observed or not: they
//!   are what every workload needs, and the Admin tier keeps a NetworkPolicy mistake from
//!   breaking them.

use serde_json::{Value, json};

use super::{SynthError, SynthOptions};
use crate::policy::{
    AdminPolicy,
    admin::{AdminObject, CnpSpec},
};

/// The Baseline-tier policy's priority: last.
pub const BASELINE_PRIORITY: u32 = 1000;
/// The Admin-tier policy's priority: early, leaving 0-9 to the platform team.
pub const ADMIN_PRIORITY: u32 = 10;

/// One learned layer: its object and the same in the evaluator's model.
#[derive(Clone, Debug)]
pub struct LearnedLayer {
    pub name: String,
    pub object: Value,
    pub policy: AdminPolicy,
}

impl LearnedLayer {
    /// The file name `--output DIR` uses.
    pub fn file_name(&self) -> String {
        format!("cluster.{}.yaml", self.name)
    }

    pub fn to_yaml(&self) -> Result<String, SynthError> {
        serde_yaml::to_string(&self.object).map_err(|e| SynthError::Render {
            policy: self.name.clone(),
            message: e.to_string(),
        })
    }
}

fn layer(name: &str, spec: Value) -> Result<LearnedLayer, SynthError> {
    let object = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {
            "name": name,
            "annotations": {format!("{}learned", super::render::ANNOTATION_PREFIX): "layers"},
        },
        "spec": spec,
    });
    let parsed: AdminObject<CnpSpec> =
        serde_json::from_value(object.clone()).map_err(|e| SynthError::Render {
            policy: name.to_owned(),
            message: e.to_string(),
        })?;
    let policy = AdminPolicy::from_cnp(&parsed).map_err(|source| SynthError::Invalid {
        policy: format!("ClusterNetworkPolicy/{name}"),
        source,
    })?;
    Ok(LearnedLayer {
        name: name.to_owned(),
        object,
        policy,
    })
}

/// The layers for `namespaces` (those that got learned policies), in evaluation order.
pub fn layers(
    namespaces: &[String],
    opts: &SynthOptions,
    monitoring_namespace: Option<&str>,
) -> Result<Vec<LearnedLayer>, SynthError> {
    if namespaces.is_empty() {
        return Ok(Vec::new());
    }
    let subject = json!({"namespaces": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]}});
    let dns_peer = json!({"pods": {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": opts.dns_namespace}},
        "podSelector": {"matchLabels": opts.dns_labels},
    }});
    let mut admin = json!({
        "tier": "Admin",
        "priority": ADMIN_PRIORITY,
        "subject": subject,
        "egress": [{
            "name": "cluster-dns",
            "action": "Accept",
            "to": [dns_peer],
            "protocols": [
                {"udp": {"destinationPort": {"number": 53}}},
                {"tcp": {"destinationPort": {"number": 53}}},
            ],
        }],
    });
    if let Some(ns) = monitoring_namespace.filter(|n| !n.is_empty()) {
        admin["ingress"] = json!([{
            "name": "monitoring-scrapes",
            "action": "Accept",
            "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}],
        }]);
    }
    let baseline = json!({
        "tier": "Baseline",
        "priority": BASELINE_PRIORITY,
        "subject": subject,
        "ingress": [{
            "name": "deny-what-nobody-allowed",
            "action": "Deny",
            "from": [{"namespaces": {}}],
        }],
        "egress": [{
            "name": "deny-what-nobody-allowed",
            "action": "Deny",
            "to": [{"namespaces": {}}, {"networks": ["0.0.0.0/0", "::/0"]}],
        }],
    });
    Ok(vec![
        layer("trustmap-dns-and-monitoring", admin)?,
        layer("trustmap-baseline-deny", baseline)?,
    ])
}

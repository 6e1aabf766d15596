//! The baseline that unexpected-flow alerts are decided against (pure). Either the accepted
//! policies given with `--baseline`, or, without them, the policies learned for a namespace at
//! the moment its mode became `alert`, frozen:
//!
//! ```text
//!   mode observe ──▶ alert   freeze: synth::learn(graph, only that namespace) + default deny
//!   mode alert   ──▶ other   thaw: the frozen policies are dropped (a later switch freezes anew)
//! ```
//!
//! The frozen policies of a namespace include its `default-deny`, so a workload that learned
//! nothing before the switch, or a new one, alerts on its first flow. The caller persists each
//! frozen namespace as YAML (`daemon::store`), so that a restart keeps it rather than
//! refreezing over a graph that has grown since.

use std::collections::{BTreeMap, BTreeSet};

use super::modes::{Mode, ModeConfig};
use crate::{
    graph::FlowGraph,
    identity::{Identities, WorkloadSelectors},
    inventory::Inventory,
    policy::Policy,
    synth::{self, SynthError, SynthOptions},
};

/// One namespace's frozen baseline.
#[derive(Clone, Debug)]
pub struct Frozen {
    /// The policies as a YAML stream, as persisted.
    pub yaml: String,
    pub policies: Vec<Policy>,
}

/// The frozen baselines, by namespace.
pub type FrozenSet = BTreeMap<String, Frozen>;

/// What must change in the frozen set for the modes now in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Namespaces in `alert` mode without a frozen baseline.
    pub freeze: Vec<String>,
    /// Frozen namespaces no longer in `alert` mode (or gone).
    pub thaw: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.freeze.is_empty() && self.thaw.is_empty()
    }
}

/// Compares the namespaces' modes (annotation, else configuration, else default) with the
/// frozen set. Only namespaces the inventory knows are considered: a namespace without pods
/// has nothing to evaluate.
pub fn plan(inv: &Inventory, modes: &ModeConfig, frozen: &BTreeSet<String>) -> Plan {
    let alert: BTreeSet<&str> = inv
        .namespaces()
        .iter()
        .filter(|ns| modes.mode_of(&ns.name, &ns.annotations) == Mode::Alert)
        .map(|ns| ns.name.as_str())
        .collect();
    Plan {
        freeze: alert
            .iter()
            .filter(|ns| !frozen.contains(**ns))
            .map(|ns| (*ns).to_owned())
            .collect(),
        thaw: frozen
            .iter()
            .filter(|ns| !alert.contains(ns.as_str()))
            .cloned()
            .collect(),
    }
}

/// Learns the policies of `namespace` from `graph` now, as `trustmap learn` would with
/// `--namespace <namespace> --namespace-default-deny`, and always with the namespace's
/// default deny (also when nothing was learned).
pub fn freeze(
    ids: &Identities<'_>,
    graph: &FlowGraph,
    namespace: &str,
    base: &SynthOptions,
) -> Result<Frozen, SynthError> {
    let opts = SynthOptions {
        namespace_default_deny: true,
        only_namespaces: vec![namespace.to_owned()],
        skip_namespaces: base
            .skip_namespaces
            .iter()
            .filter(|n| *n != namespace)
            .cloned()
            .collect(),
        ..base.clone()
    };
    let selectors = WorkloadSelectors::new(ids);
    let ctx = synth::Context {
        identities: ids,
        selectors: &selectors,
        cluster_cidrs: ids.cluster_cidrs(),
    };
    let mut learned = synth::learn(&ctx, graph, &opts);
    if !learned
        .policies
        .iter()
        .any(|p| p.workload.is_none() && p.namespace == namespace)
    {
        learned.policies.push(synth::default_deny(namespace));
    }
    let mut yaml = String::new();
    let mut policies = Vec::new();
    for p in &learned.policies {
        yaml.push_str("---\n");
        yaml.push_str(&synth::to_yaml(p)?);
        policies.push(p.to_policy()?);
    }
    Ok(Frozen { yaml, policies })
}

/// The policies of every frozen namespace, for one baseline evaluator: policies select pods of
/// their own namespace only, so the union decides each namespace by its own frozen policies.
pub fn union(frozen: &FrozenSet) -> Vec<Policy> {
    frozen
        .values()
        .flat_map(|f| f.policies.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flow::FlowRecord,
        identity::IdentityOptions,
        inventory::{Loaded, Manifests},
        policy::{Connection, Evaluator},
    };

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {trustmap.dev/mode: alert}}
---
apiVersion: v1
kind: Namespace
metadata: {name: blog}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.1.0.1, podIPs: [{ip: 10.1.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.1.0.2, podIPs: [{ip: 10.1.0.2}]}
"#;

    fn loaded() -> Loaded {
        let mut m = Manifests::new();
        m.add_text(std::path::Path::new("cluster.yaml"), CLUSTER)
            .expect("valid manifests");
        m.finish()
    }

    fn record(src: &str, dst: &str, port: u16) -> FlowRecord {
        serde_json::from_value(serde_json::json!({
            "protocol": "TCP", "src": src, "src_port": 40000, "dst": dst, "port": port,
            "initiator": "syn",
        }))
        .expect("a record")
    }

    fn allowed(inv: &Inventory, policies: &[Policy], r: &FlowRecord) -> bool {
        let e = Evaluator::new(inv, policies);
        let c: Connection = e.connection(r).expect("resolves");
        e.evaluate(&c).allowed()
    }

    #[test]
    fn plan_freezes_new_alert_namespaces_and_thaws_the_others() {
        let l = loaded();
        let none = BTreeSet::new();
        let p = plan(&l.inventory, &ModeConfig::default(), &none);
        assert_eq!(p.freeze, vec!["shop".to_owned()]);
        assert!(p.thaw.is_empty());
        let frozen: BTreeSet<String> = ["shop".into(), "blog".into()].into();
        let p = plan(&l.inventory, &ModeConfig::default(), &frozen);
        assert!(p.freeze.is_empty());
        assert_eq!(p.thaw, vec!["blog".to_owned()]);
        let all_alert = ModeConfig {
            default: Mode::Alert,
            ..ModeConfig::default()
        };
        let p = plan(&l.inventory, &all_alert, &["shop".into()].into());
        assert_eq!(p.freeze, vec!["blog".to_owned()]);
    }

    #[test]
    fn a_frozen_baseline_allows_what_was_learned_and_nothing_else() {
        let l = loaded();
        let ids = Identities::new(&l.inventory, IdentityOptions::default());
        let mut graph = FlowGraph::new();
        let learned = record("10.1.0.1", "10.1.0.2", 8080);
        for o in ids.classify(&learned).expect("classifies") {
            graph.observe(&o);
        }
        let f = freeze(&ids, &graph, "shop", &SynthOptions::default()).expect("freezes");
        assert!(f.yaml.contains("default-deny"), "{}", f.yaml);
        assert!(allowed(&l.inventory, &f.policies, &learned));
        assert!(!allowed(
            &l.inventory,
            &f.policies,
            &record("10.1.0.1", "10.1.0.2", 9000)
        ));
        assert!(!allowed(
            &l.inventory,
            &f.policies,
            &record("10.1.0.2", "10.1.0.1", 8080)
        ));
    }

    #[test]
    fn a_namespace_that_learned_nothing_freezes_to_its_default_deny() {
        let l = loaded();
        let ids = Identities::new(&l.inventory, IdentityOptions::default());
        let f = freeze(&ids, &FlowGraph::new(), "shop", &SynthOptions::default()).expect("freezes");
        assert_eq!(f.policies.len(), 1);
        assert!(!allowed(
            &l.inventory,
            &f.policies,
            &record("10.1.0.1", "10.1.0.2", 8080)
        ));
    }
}

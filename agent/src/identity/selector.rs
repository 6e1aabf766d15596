//! The selector of each workload: `spec.selector` when the manifest has one, else the labels
//! all its pods share minus per-instance labels; checked to select no other workload's pods
//! in its namespace, and narrowed to the shared labels when it does.

use std::collections::BTreeMap;

use super::{resolve::Identities, types::WorkloadRef};
use crate::{
    flow::Protocol,
    inventory::{Inventory, PodId},
    policy::{Labels, Selector},
};

/// Labels that differ from pod to pod of one workload, or from one rollout to the next.
pub const PER_INSTANCE_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-completion-index",
    "job-name",
    "controller-uid",
];

/// The selector chosen for one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorChoice {
    pub selector: Selector,
    /// Other workloads of the namespace whose pods the selector also matches: empty when the
    /// selector is exact. No label selector can tell these apart.
    pub overlaps: Vec<WorkloadRef>,
    /// Container port names every pod of the workload (template included) agrees on.
    pub port_names: BTreeMap<(Protocol, u16), String>,
}

/// Selectors of every workload (and bare pod) of an inventory that has pods on the pod
/// network, real or template.
#[derive(Clone, Debug, Default)]
pub struct WorkloadSelectors {
    by_workload: BTreeMap<WorkloadRef, SelectorChoice>,
}

fn shared_labels<'a>(mut sets: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = sets.next() else {
        return Labels::new();
    };
    let mut out: Labels = first
        .iter()
        .filter(|(k, _)| !PER_INSTANCE_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for s in sets {
        out.retain(|k, v| s.get(k) == Some(v));
    }
    out
}

/// Port names all pods agree on: a named port in a rule resolves per destination pod, so a
/// name is used only when it means the same number on every pod.
fn agreed_port_names(inv: &Inventory, pods: &[PodId]) -> BTreeMap<(Protocol, u16), String> {
    let mut out: BTreeMap<(Protocol, u16), Option<String>> = BTreeMap::new();
    for (i, id) in pods.iter().enumerate() {
        let ports = &inv.pod(*id).ports;
        let named = |proto: Protocol, port: u16| {
            ports
                .iter()
                .find(|c| c.protocol == proto && c.port == port)
                .and_then(|c| c.name.clone())
        };
        if i == 0 {
            for c in ports {
                out.entry((c.protocol, c.port))
                    .or_insert_with(|| c.name.clone());
            }
        } else {
            for ((proto, port), name) in out.iter_mut() {
                if name.is_some() && named(*proto, *port) != *name {
                    *name = None;
                }
            }
        }
    }
    // The name must also mean this port for this protocol, not another one.
    out.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()
}

fn label_selector(labels: &Labels) -> Selector {
    Selector::from_labels(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

impl WorkloadSelectors {
    pub fn new(ids: &Identities<'_>) -> Self {
        let inv = ids.inventory();
        // Pods per workload, per namespace.
        let mut groups: BTreeMap<WorkloadRef, Vec<PodId>> = BTreeMap::new();
        for (i, p) in inv.pods().iter().enumerate() {
            if p.host_network {
                continue;
            }
            let id = PodId(i as u32);
            let w = match (p.is_template, p.workload) {
                (true, None) => continue,
                _ => ids.workload_of(id),
            };
            groups.entry(w).or_default().push(id);
        }
        let mut by_workload = BTreeMap::new();
        for (w, pods) in &groups {
            let labels_of = |id: &PodId| &inv.pod(*id).labels;
            let shared = label_selector(&shared_labels(pods.iter().map(labels_of)));
            let given = inv
                .workload_by_ref(&w.namespace, &w.kind, &w.name)
                .and_then(|id| inv.workload(id).selector.clone());
            let overlaps = |sel: &Selector| -> Vec<WorkloadRef> {
                groups
                    .iter()
                    .filter(|(o, _)| *o != w && o.namespace == w.namespace)
                    .filter(|(_, ps)| ps.iter().any(|p| sel.matches(labels_of(p))))
                    .map(|(o, _)| o.clone())
                    .collect()
            };
            let port_names = agreed_port_names(inv, pods);
            let mut choice = match given {
                Some(sel) if !sel.is_everything() => SelectorChoice {
                    overlaps: overlaps(&sel),
                    selector: sel,
                    port_names,
                },
                _ => SelectorChoice {
                    overlaps: overlaps(&shared),
                    selector: shared.clone(),
                    port_names,
                },
            };
            if !choice.overlaps.is_empty() && choice.selector != shared {
                let narrower = overlaps(&shared);
                if narrower.len() < choice.overlaps.len() {
                    choice.selector = shared;
                    choice.overlaps = narrower;
                }
            }
            by_workload.insert(w.clone(), choice);
        }
        Self { by_workload }
    }

    pub fn get(&self, w: &WorkloadRef) -> Option<&SelectorChoice> {
        self.by_workload.get(w)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&WorkloadRef, &SelectorChoice)> {
        self.by_workload.iter()
    }
}

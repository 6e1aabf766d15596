//! Decides, for each observed connection, which alerts it raises (pure). The IO loop feeds it
//! the records the classifier judged and sends what it returns to the sinks.

use chrono::{DateTime, Utc};

use super::modes::{Mode, ModeConfig};
use crate::{
    alert::AlertKind,
    flow::FlowRecord,
    inventory::{Inventory, InventoryError, Resolved},
    policy::{Connection, Evaluator, Explanation},
};

/// What one connection means for the sinks. Its edge is named by the classifier
/// ([`crate::identity::Identities::classify_ends`]), which also feeds the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The initiating pod, `namespace/name`, when it is one.
    pub src_pod: Option<String>,
    pub seen: DateTime<Utc>,
    /// Alerts the connection raises (before deduplication and rate limiting).
    pub alerts: Vec<(AlertKind, Explanation)>,
    /// This node reports the connection's alerts (scans included).
    pub reported_here: bool,
}

/// The current policies, the optional baseline and the modes, over one inventory.
pub struct Flagger<'a> {
    inventory: &'a Inventory,
    current: Evaluator<'a>,
    baseline: Option<Evaluator<'a>>,
    modes: &'a ModeConfig,
    /// This node's name: a connection between two nodes is seen by both agents, and only one
    /// may alert (see [`Flagger::reports`]).
    local_node: Option<&'a str>,
}

impl<'a> Flagger<'a> {
    pub fn new(
        inventory: &'a Inventory,
        current: Evaluator<'a>,
        baseline: Option<Evaluator<'a>>,
        modes: &'a ModeConfig,
    ) -> Self {
        Self {
            inventory,
            current,
            baseline,
            modes,
            local_node: None,
        }
    }

    /// Alerts only for connections this node reports: see [`Flagger::reports`].
    pub fn on_node(mut self, node: &'a str) -> Self {
        self.local_node = Some(node);
        self
    }

    /// Whether this node reports the alerts of `c`: the node of the source pod, or, when the
    /// source is no pod of a known node (an external address, a host), the node of the
    /// destination pod. Without a node name (one process watching everything), always.
    fn reports(&self, c: &Connection) -> bool {
        let Some(local) = self.local_node else {
            return true;
        };
        let node_of = |r: &Resolved| {
            let pod = self.inventory.pod(r.pod()?);
            pod.node.map(|n| self.inventory.node(n).name.as_str())
        };
        match (node_of(&c.src), node_of(&c.dst)) {
            (Some(n), _) => n == local,
            (None, Some(n)) => n == local,
            (None, None) => true,
        }
    }

    /// The evaluator of the policies in force.
    pub fn current(&self) -> &Evaluator<'a> {
        &self.current
    }

    fn mode(&self, r: &Resolved) -> Option<Mode> {
        let pod = self.inventory.pod(r.pod()?);
        let ns = self.inventory.namespace(pod.namespace);
        Some(self.modes.mode_of(&ns.name, &ns.annotations))
    }

    /// The edge and alerts of one record; `None` when every pod end is in an `off` namespace.
    pub fn process(
        &self,
        record: &FlowRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<Outcome>, InventoryError> {
        let c: Connection = self.current.connection(record)?;
        let modes: Vec<Mode> = [self.mode(&c.src), self.mode(&c.dst)]
            .into_iter()
            .flatten()
            .collect();
        if !modes.is_empty() && modes.iter().all(|m| *m == Mode::Off) {
            return Ok(None);
        }
        let mut alerts = Vec::new();
        let reports = self.reports(&c);
        let verdict = self.current.evaluate(&c);
        if reports && !verdict.allowed() {
            alerts.push((
                AlertKind::WouldDeny,
                self.current.explain_verdict(&c, &verdict),
            ));
        }
        if reports
            && modes.contains(&Mode::Alert)
            && let Some(baseline) = &self.baseline
        {
            let v = baseline.evaluate(&c);
            if !v.allowed() {
                alerts.push((AlertKind::UnexpectedFlow, baseline.explain_verdict(&c, &v)));
            }
        }
        let src_pod = c.src.pod().map(|p| {
            let p = self.inventory.pod(p);
            format!("{}/{}", self.inventory.namespace(p.namespace).name, p.name)
        });
        Ok(Some(Outcome {
            src_pod,
            seen: record.first_seen.unwrap_or(now),
            alerts,
            reported_here: reports,
        }))
    }
}

//! What the agent does with each batch of flow records (IO at the edges only: the sinks): the
//! [`Flagger`] decides edges and alerts, the [`EdgeTable`] and the learning [`FlowGraph`]
//! record them, the [`AlertGate`] lets alerts through to the sinks.
//!
//! The pipeline outlives inventory snapshots: the flagger and identities of the snapshot in
//! force are passed to each call, so a refresh swaps them without losing any state.

use std::time::Instant;

use chrono::Utc;
use tracing::warn;

use super::{EdgeTable, Flagger};
use crate::{
    alert::{
        Alert, AlertGate, AlertKind, Decision, EdgeKey,
        scan::{ScanDetector, Target},
        sinks::{JsonLines, Webhook},
    },
    flow::FlowRecord,
    graph::FlowGraph,
    identity::Identities,
    kube::EventSink,
    metrics::Metrics,
};

/// Records parked at most, waiting for the inventory to know their addresses.
pub const PARK_LIMIT: usize = 10_000;
/// How long a record may wait for the inventory.
pub const PARK_FOR: chrono::Duration = chrono::Duration::seconds(30);

/// Where alerts go; each is optional.
#[derive(Default)]
pub struct Sinks {
    pub json: Option<JsonLines>,
    pub webhook: Option<Webhook>,
    pub events: Option<EventSink>,
}

/// The agent's state across batches.
pub struct Pipeline {
    pub edges: EdgeTable,
    pub graph: FlowGraph,
    pub gate: AlertGate,
    pub metrics: Metrics,
    pub sinks: Sinks,
    /// Failed attempts by source, for scan alerts.
    pub scans: ScanDetector,
    /// Records the snapshot could not resolve yet (a pod that talks before the agent's
    /// inventory has it, a Service whose endpoints are not known yet): retried with the next
    /// snapshot, at most [`PARK_LIMIT`] and for [`PARK_FOR`], then judged as they are.
    parked: Vec<FlowRecord>,
    /// Edges or graph changed since the last save.
    pub dirty: bool,
    started: Instant,
    suppressed_reported: u64,
}

impl Pipeline {
    /// Edges restored from an earlier run have already alerted: the gate remembers them.
    pub fn new(
        edges: EdgeTable,
        graph: FlowGraph,
        mut gate: AlertGate,
        metrics: Metrics,
        sinks: Sinks,
    ) -> Self {
        for (edge, _) in edges.iter() {
            gate.remember(AlertKind::WouldDeny, edge.clone());
            gate.remember(AlertKind::UnexpectedFlow, edge.clone());
        }
        metrics.edges.set(edges.len() as i64);
        Self {
            edges,
            graph,
            gate,
            metrics,
            sinks,
            scans: ScanDetector::default(),
            parked: Vec::new(),
            dirty: false,
            started: Instant::now(),
            suppressed_reported: 0,
        }
    }

    /// Handles one batch against the snapshot in force.
    pub fn handle(&mut self, flagger: &Flagger<'_>, ids: &Identities<'_>, records: &[FlowRecord]) {
        let now = Utc::now();
        let mut learned = Vec::with_capacity(records.len());
        for r in records {
            if self.park(ids, r, now) {
                continue;
            }
            self.metrics.flows_observed.inc();
            if r.is_attempt() {
                // Refused or unanswered: never an edge, never learned; a scan if there are many.
                self.attempt(flagger, ids, r, now);
                continue;
            }
            // A UDP flow whose reply was seen first (or whose entry the LRU evicted) is turned
            // around by its ports first, as learning does: never judged on an ephemeral port.
            let oriented = ids.orient(r).ok();
            let r = oriented.as_ref().unwrap_or(r);
            // Sent to a Service ClusterIP: judged as the connection to a backend pod on its
            // target port, which is what NetworkPolicy sees after DNAT.
            let via_service = ids.through_service(r);
            let outcome = match flagger.process(via_service.as_ref().unwrap_or(r), now) {
                Ok(Some(o)) => o,
                Ok(None) => continue,
                Err(e) => {
                    warn!(error = %e, "flow not resolved");
                    continue;
                }
            };
            learned.push(r.clone());
            self.dirty = true;
            if self.edges.observe(&outcome.edge, outcome.seen) {
                self.metrics.edges.set(self.edges.len() as i64);
            }
            for (kind, explanation) in outcome.alerts {
                let decision = self.gate.offer(kind, &outcome.edge, self.started.elapsed());
                if decision != Decision::Send {
                    continue;
                }
                match kind {
                    AlertKind::WouldDeny => self.metrics.would_deny_flows.inc(),
                    AlertKind::UnexpectedFlow => self.metrics.unexpected_flows.inc(),
                    AlertKind::Scan => self.metrics.scans.inc(),
                    AlertKind::Suppressed => 0,
                };
                let stats = self.edges.get(&outcome.edge);
                let alert = Alert {
                    kind,
                    edge: outcome.edge.clone(),
                    src_pod: outcome.src_pod.clone(),
                    first_seen: stats.map_or(outcome.seen, |s| s.first_seen),
                    count: stats.map_or(1, |s| s.count),
                    explanation: serde_json::to_value(&explanation).unwrap_or_default(),
                };
                self.send(&alert);
            }
        }
        // The learning graph: the same records, in the identities synthesis uses.
        let batch = ids.classify_batch(&learned);
        for o in &batch.observations {
            self.graph.observe(o);
        }
        self.send_summary();
        let suppressed = self.gate.suppressed();
        self.metrics
            .alerts_suppressed
            .inc_by(suppressed - self.suppressed_reported);
        self.suppressed_reported = suppressed;
    }

    /// Parks `r` when the snapshot does not know enough yet: an address in the cluster's CIDRs
    /// that no pod, node or Service has, or a Service without known backends. True when parked.
    fn park(&mut self, ids: &Identities<'_>, r: &FlowRecord, now: chrono::DateTime<Utc>) -> bool {
        let young = r.first_seen.is_none_or(|t| now - t < PARK_FOR);
        // A failed attempt is never learned, and a scan of unused addresses must alert now.
        if !r.is_attempt()
            && young
            && self.parked.len() < PARK_LIMIT
            && matches!(
                ids.classify(r),
                Err(crate::identity::IdentityError::UnknownClusterAddress { .. }
                    | crate::identity::IdentityError::NoBackends { .. })
            )
        {
            self.parked.push(r.clone());
            return true;
        }
        false
    }

    /// The parked records, for another try against a newer snapshot.
    pub fn take_parked(&mut self) -> Vec<FlowRecord> {
        std::mem::take(&mut self.parked)
    }

    fn attempt(
        &mut self,
        flagger: &Flagger<'_>,
        ids: &Identities<'_>,
        r: &FlowRecord,
        now: chrono::DateTime<Utc>,
    ) {
        self.metrics.failed_attempts.inc();
        let oriented = ids.orient(r).ok();
        let r = oriented.as_ref().unwrap_or(r);
        let via_service = ids.through_service(r);
        let Ok(Some(o)) = flagger.process(via_service.as_ref().unwrap_or(r), now) else {
            return;
        };
        if !o.reported_here {
            return;
        }
        let target = Target {
            dst: o.edge.dst.clone(),
            protocol: o.edge.protocol,
            port: o.edge.port,
        };
        let outcome = r.outcome.unwrap_or(crate::flow::Outcome::Unanswered);
        let Some(finding) = self.scans.observe(&o.edge.src, target, outcome, now) else {
            return;
        };
        self.metrics.scans.inc();
        let alert = Alert {
            kind: AlertKind::Scan,
            edge: EdgeKey {
                src: finding.src.clone(),
                dst: "*".into(),
                protocol: o.edge.protocol,
                port: None,
            },
            src_pod: o.src_pod.clone(),
            first_seen: finding.window_start,
            count: finding.targets.len() as u64,
            explanation: serde_json::to_value(&finding).unwrap_or_default(),
        };
        // Once per source and window already: not through the per-edge deduplication.
        self.send(&alert);
    }

    /// Sends the summary of the alerts the rate limit held back, when one is due. Called after
    /// each batch and on the agent's tick, so that a quiet period still brings it out.
    pub fn send_summary(&mut self) {
        let Some(held) = self.gate.summary_due(self.started.elapsed()) else {
            return;
        };
        let alert = Alert {
            kind: AlertKind::Suppressed,
            edge: EdgeKey {
                src: "*".into(),
                dst: "*".into(),
                protocol: held
                    .examples
                    .first()
                    .map_or(crate::flow::Protocol::Tcp, |e| e.edge.protocol),
                port: None,
            },
            src_pod: None,
            first_seen: Utc::now(),
            count: held.count,
            explanation: serde_json::to_value(&held).unwrap_or_default(),
        };
        self.send(&alert);
    }

    fn send(&mut self, alert: &Alert) {
        if let Some(sink) = self.sinks.json.as_mut()
            && let Err(e) = sink.send(alert)
        {
            warn!(error = %e, "writing an alert failed");
        }
        if let Some(w) = &self.sinks.webhook
            && !w.send(alert)
        {
            self.metrics.alerts_dropped.inc();
        }
        if let Some(e) = &self.sinks.events
            && alert.src_pod.is_some()
            && !e.send(alert)
        {
            self.metrics.alerts_dropped.inc();
        }
    }

    /// The node's edges as a JSON array, for `/flows`.
    pub fn flows_json(&self) -> String {
        self.edges.to_json_array()
    }
}

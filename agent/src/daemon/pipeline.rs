//! What the agent does with each batch of flow records (IO at the edges only: the sinks). The
//! [`Identities`] of the snapshot in force classify each record once: that names its edge,
//! which the [`FlowGraph`] (the one edge store) counts, and gives the connection the
//! [`Flagger`] judges; the [`AlertGate`] lets its alerts through to the sinks.
//!
//! The pipeline outlives inventory snapshots: the flagger and identities of the snapshot in
//! force are passed to each call, so a refresh swaps them without losing any state.

use std::time::Instant;

use chrono::Utc;
use tracing::warn;

use super::Flagger;
use crate::{
    alert::{
        Alert, AlertGate, AlertKind, Decision, EdgeKey,
        scan::{ScanDetector, Target},
        sinks::{JsonLines, Webhook},
    },
    flow::{Endpoint, FlowRecord},
    graph::FlowGraph,
    identity::{Identities, Observation, Peer},
    kube::{EventSink, graph_to_records, peers::peer_to_string},
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
    /// The node's edges, with their evidence and the alerts they raised.
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
    /// The graph changed since the last save.
    pub dirty: bool,
    started: Instant,
    suppressed_reported: u64,
}

/// The name alerts and `/flows` give an edge.
fn edge_key(src: &Peer, dst: &Peer, protocol: crate::flow::Protocol, port: Option<u16>) -> EdgeKey {
    EdgeKey {
        src: peer_to_string(src),
        dst: peer_to_string(dst),
        protocol,
        port,
    }
}

impl Pipeline {
    /// The graph restored from an earlier run remembers which alerts its edges raised: the
    /// gate does not send those again, and an edge whose verdict changed while the agent was
    /// down alerts on its next connection.
    pub fn new(graph: FlowGraph, mut gate: AlertGate, metrics: Metrics, sinks: Sinks) -> Self {
        for e in graph.edges() {
            let key = edge_key(e.src, e.dst, e.protocol, e.port);
            if e.stats.alerted.would_deny {
                gate.remember(AlertKind::WouldDeny, key.clone());
            }
            if e.stats.alerted.unexpected_flow {
                gate.remember(AlertKind::UnexpectedFlow, key);
            }
        }
        metrics.edges.set(graph.len() as i64);
        Self {
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
        let mut kept = Vec::with_capacity(records.len());
        for r in records {
            if r.is_attempt() {
                // Refused or unanswered: never an edge, never learned; a scan if there are many.
                // Never parked either: a scan of unused addresses must alert now.
                self.metrics.flows_observed.inc();
                self.attempt(flagger, ids, r, now);
            } else {
                kept.push(r.clone());
            }
        }
        // One classification per record: oriented by its ports (a UDP flow whose reply was
        // seen first, or whose entry the LRU evicted), a ClusterIP resolved to its backends
        // (a connection recorded at both ends counted once), named as the graph names it.
        // What it cannot resolve yet is parked for the next snapshot.
        let batch = ids.classify_batch(&kept);
        let mut parked = 0;
        for (i, e) in &batch.skipped {
            if self.park(&kept[*i], e, now) {
                parked += 1;
            } else {
                warn!(error = %e, record = ?kept[*i], "flow not resolved");
            }
        }
        self.metrics
            .flows_observed
            .inc_by((kept.len() - parked) as u64);
        for (o, judged) in batch.observations.iter().zip(&batch.judged) {
            self.observe(flagger, o, judged, now);
        }
        self.send_summary();
        let suppressed = self.gate.suppressed();
        self.metrics
            .alerts_suppressed
            .inc_by(suppressed - self.suppressed_reported);
        self.suppressed_reported = suppressed;
    }

    /// Counts one observation in the graph and sends the alerts its connection raises.
    fn observe(
        &mut self,
        flagger: &Flagger<'_>,
        o: &Observation,
        judged: &FlowRecord,
        now: chrono::DateTime<Utc>,
    ) {
        let outcome = match flagger.process(judged, now) {
            Ok(Some(outcome)) => outcome,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "flow not resolved");
                return;
            }
        };
        self.dirty = true;
        if self.graph.observe(o) {
            self.metrics.edges.set(self.graph.len() as i64);
        }
        let edge = edge_key(&o.src, &o.dst, o.protocol, o.port);
        for (kind, explanation) in outcome.alerts {
            if self.gate.offer(kind, &edge, self.started.elapsed()) != Decision::Send {
                continue;
            }
            let stats = self.graph.get_mut(&o.src, &o.dst, o.protocol, o.port);
            let (first_seen, count) = match stats {
                Some(s) => {
                    match kind {
                        AlertKind::WouldDeny => s.alerted.would_deny = true,
                        AlertKind::UnexpectedFlow => s.alerted.unexpected_flow = true,
                        AlertKind::Scan | AlertKind::Suppressed => {}
                    }
                    (s.first_seen.unwrap_or(outcome.seen), s.count)
                }
                None => (outcome.seen, 1),
            };
            match kind {
                AlertKind::WouldDeny => self.metrics.would_deny_flows.inc(),
                AlertKind::UnexpectedFlow => self.metrics.unexpected_flows.inc(),
                AlertKind::Scan => self.metrics.scans.inc(),
                AlertKind::Suppressed => 0,
            };
            let alert = Alert {
                kind,
                edge: edge.clone(),
                src_pod: outcome.src_pod.clone(),
                dst_names: judged.dst_names.clone(),
                first_seen,
                count,
                explanation: serde_json::to_value(&explanation).unwrap_or_default(),
            };
            self.send(&alert);
        }
    }

    /// Parks `r`, which the snapshot could not classify (`e`), when it does not know enough
    /// yet: an address in the cluster's CIDRs that no pod, node or Service has, or a Service
    /// without known backends. True when parked.
    fn park(
        &mut self,
        r: &FlowRecord,
        e: &crate::identity::IdentityError,
        now: chrono::DateTime<Utc>,
    ) -> bool {
        let young = r.first_seen.is_none_or(|t| now - t < PARK_FOR);
        if young
            && self.parked.len() < PARK_LIMIT
            && matches!(
                e,
                crate::identity::IdentityError::UnknownClusterAddress { .. }
                    | crate::identity::IdentityError::NoBackends { .. }
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
        let judged = via_service.as_ref().unwrap_or(r);
        let Ok(Some(o)) = flagger.process(judged, now) else {
            return;
        };
        if !o.reported_here {
            return;
        }
        // Named as the graph names peers; an address nothing in the inventory holds (a scan of
        // unused cluster addresses) by itself.
        let name = |e: &Endpoint| {
            ids.peer(e, r.first_seen)
                .map_or_else(|_| e.to_string(), |p| peer_to_string(&p))
        };
        let target = Target {
            dst: name(&judged.dst),
            protocol: judged.protocol,
            port: judged.port,
        };
        let outcome = r.outcome.unwrap_or(crate::flow::Outcome::Unanswered);
        let Some(finding) = self.scans.observe(&name(&r.src), target, outcome, now) else {
            return;
        };
        self.metrics.scans.inc();
        let alert = Alert {
            kind: AlertKind::Scan,
            edge: EdgeKey {
                src: finding.src.clone(),
                dst: "*".into(),
                protocol: judged.protocol,
                port: None,
            },
            src_pod: o.src_pod.clone(),
            dst_names: Vec::new(),
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
            dst_names: Vec::new(),
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

    /// The node's edges as a JSON array, for `/flows`: the records FlowEdges carry.
    pub fn flows_json(&self) -> String {
        serde_json::to_string(&graph_to_records(&self.graph, Utc::now()))
            .unwrap_or_else(|_| "[]".into())
    }
}

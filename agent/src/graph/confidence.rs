//! Learning confidence per workload: is what was learned stable enough to enforce?

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::FlowGraph;
use crate::identity::WorkloadRef;

/// How settled a workload's learned connections are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Confidence {
    pub workload: WorkloadRef,
    /// Edges it is an end of.
    pub edges: usize,
    /// When it was last seen talking.
    pub last_seen: Option<DateTime<Utc>>,
    /// When its most recent new edge was first seen.
    pub last_new_edge: Option<DateTime<Utc>>,
    /// Time since then, in seconds, at `now`.
    pub quiet_seconds: Option<i64>,
    /// Whether no new edge appeared for at least the quiet period.
    pub stable: bool,
}

impl FlowGraph {
    /// Confidence of every workload of the graph at `now` (given: pure modules have no
    /// clock), sorted by workload. A workload without timestamps is never stable.
    pub fn confidence(&self, now: DateTime<Utc>, quiet: TimeDelta) -> Vec<Confidence> {
        let mut by: BTreeMap<&WorkloadRef, Confidence> = BTreeMap::new();
        for e in self.edges() {
            for w in [e.src.workload(), e.dst.workload()].into_iter().flatten() {
                let c = by.entry(w).or_insert_with(|| Confidence {
                    workload: w.clone(),
                    edges: 0,
                    last_seen: None,
                    last_new_edge: None,
                    quiet_seconds: None,
                    stable: false,
                });
                c.edges += 1;
                c.last_seen = c.last_seen.max(e.stats.last_seen);
                c.last_new_edge = c.last_new_edge.max(e.stats.first_seen);
            }
        }
        by.into_values()
            .map(|mut c| {
                let quiet_for = c.last_new_edge.map(|t| now - t);
                c.quiet_seconds = quiet_for.map(|d| d.num_seconds());
                c.stable = quiet_for.is_some_and(|d| d >= quiet);
                c
            })
            .collect()
    }
}

//! The JSON-lines form of a graph: one edge per line, self-describing, so that dumps of
//! several nodes can simply be concatenated and read as one.

use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Alerted, EdgeStats, FlowGraph, GraphError};
use crate::{
    flow::Protocol,
    identity::{Peer, Sample},
};

#[derive(Serialize, Deserialize)]
struct Line<'a> {
    src: std::borrow::Cow<'a, Peer>,
    dst: std::borrow::Cow<'a, Peer>,
    protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_seen: Option<DateTime<Utc>>,
    sample: std::borrow::Cow<'a, Sample>,
    #[serde(default, skip_serializing_if = "Alerted::is_empty")]
    alerted: Alerted,
    /// The destination's DNS names (see [`EdgeStats::names`]).
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    dst_names: std::borrow::Cow<'a, [String]>,
}

impl FlowGraph {
    /// Writes every edge as one JSON line, in [`FlowGraph::edges`] order.
    pub fn write_json_lines<W: Write>(&self, mut w: W) -> std::io::Result<()> {
        for e in self.edges() {
            let line = Line {
                src: std::borrow::Cow::Borrowed(e.src),
                dst: std::borrow::Cow::Borrowed(e.dst),
                protocol: e.protocol,
                port: e.port,
                count: e.stats.count,
                first_seen: e.stats.first_seen,
                last_seen: e.stats.last_seen,
                sample: std::borrow::Cow::Borrowed(&e.stats.sample),
                alerted: e.stats.alerted,
                dst_names: std::borrow::Cow::Borrowed(&e.stats.names),
            };
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    }

    /// Reads JSON lines into this graph, merging edges that repeat. `source_name` names the
    /// input in errors.
    pub fn read_json_lines<R: BufRead>(
        &mut self,
        r: R,
        source_name: &str,
    ) -> Result<(), GraphError> {
        for (i, line) in r.lines().enumerate() {
            let err = |message: String| GraphError::Line {
                source_name: source_name.to_owned(),
                line: i + 1,
                message,
            };
            let line = line.map_err(|e| err(e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            let l: Line<'_> = serde_json::from_str(&line).map_err(|e| err(e.to_string()))?;
            let stats = EdgeStats {
                count: l.count,
                first_seen: l.first_seen,
                last_seen: l.last_seen,
                sample: l.sample.into_owned(),
                alerted: l.alerted,
                names: super::name_list(&l.dst_names),
            };
            self.add(&l.src, &l.dst, l.protocol, l.port, stats);
        }
        Ok(())
    }
}

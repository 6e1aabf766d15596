//! The workload flow graph: one edge per (source, destination, protocol, port), with how often,
//! since when and until when it was seen, and one sample connection.
//!
//! ```text
//!   Observation ──FlowGraph::observe──▶ FlowGraph ──merge──▶ the cluster's graph
//!                                          │  ▲
//!                    write_json_lines ─────┘  └──── read_json_lines   (one edge per line)
//!                    state::save (temp + rename) / state::load         (the only file IO)
//! ```
//!
//! Peers are interned, so an edge costs a few dozen bytes plus its sample (see
//! [`FlowGraph::memory_estimate`] and BENCHMARKS.md). Pure except [`state`].

mod confidence;
mod lines;
pub mod state;

#[cfg(test)]
mod tests;

pub use confidence::Confidence;

use std::{collections::HashMap, mem::size_of, path::PathBuf};

use chrono::{DateTime, Utc};

use crate::{
    flow::Protocol,
    identity::{Observation, Peer, Sample, SampleEnd},
};

/// Why a graph could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// A line is not an edge.
    #[error("{source_name}: line {line}: {message}")]
    Line {
        source_name: String,
        line: usize,
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The identity of an edge, with interned peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    src: u32,
    dst: u32,
    protocol: Protocol,
    port: Option<u16>,
}

/// What is known about an edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeStats {
    /// Connections seen (pre-existing ones included).
    pub count: u64,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    /// The earliest connection seen.
    pub sample: Sample,
    /// Alerts already sent about the edge (kept in the state file, so that a restart sends
    /// them only if the edge's verdict changed).
    pub alerted: Alerted,
    /// For a destination outside the cluster: the DNS names its connections were made to,
    /// sorted, at most [`MAX_NAMES`].
    pub names: Vec<String>,
}

/// Names an edge keeps; a destination answering for more is a shared front (a CDN), whose
/// names say little about the service.
pub const MAX_NAMES: usize = 16;

/// `names` as an edge keeps them (see [`merge_names`]).
pub fn name_list(names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    merge_names(&mut out, names);
    out
}

/// Adds `more` to the sorted name list `names`, keeping it sorted, unique and at most
/// [`MAX_NAMES`] long (the first names in order, so merging in any order gives the same list).
pub fn merge_names(names: &mut Vec<String>, more: &[String]) {
    if more.iter().all(|n| names.binary_search(n).is_ok()) {
        return;
    }
    names.extend(more.iter().cloned());
    names.sort();
    names.dedup();
    names.truncate(MAX_NAMES);
}

/// Which alerts an edge has raised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alerted {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub would_deny: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unexpected_flow: bool,
}

impl Alerted {
    pub fn is_empty(&self) -> bool {
        !self.would_deny && !self.unexpected_flow
    }
}

impl EdgeStats {
    fn absorb(&mut self, o: &EdgeStats) {
        self.alerted.would_deny |= o.alerted.would_deny;
        self.alerted.unexpected_flow |= o.alerted.unexpected_flow;
        merge_names(&mut self.names, &o.names);
        self.count = self.count.saturating_add(o.count);
        let earlier = match (o.first_seen, self.first_seen) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            _ => false,
        };
        if earlier {
            self.sample = o.sample.clone();
        }
        self.first_seen = min_opt(self.first_seen, o.first_seen);
        self.last_seen = self.last_seen.max(o.last_seen);
    }
}

fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A borrowed view of one edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge<'a> {
    pub src: &'a Peer,
    pub dst: &'a Peer,
    pub protocol: Protocol,
    pub port: Option<u16>,
    pub stats: &'a EdgeStats,
}

/// The flow graph. Edges are kept in a hash map keyed by interned peers; iteration in a
/// stable order is [`FlowGraph::edges`].
#[derive(Clone, Debug, Default)]
pub struct FlowGraph {
    peers: Vec<Peer>,
    peer_ids: HashMap<Peer, u32>,
    edges: HashMap<Key, EdgeStats>,
}

impl FlowGraph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    fn intern(&mut self, p: &Peer) -> u32 {
        if let Some(&id) = self.peer_ids.get(p) {
            return id;
        }
        let id = self.peers.len() as u32;
        self.peers.push(p.clone());
        self.peer_ids.insert(p.clone(), id);
        id
    }

    /// Adds an edge's statistics, creating the edge or merging into it. Returns whether the
    /// edge is new.
    pub fn add(
        &mut self,
        src: &Peer,
        dst: &Peer,
        protocol: Protocol,
        port: Option<u16>,
        stats: EdgeStats,
    ) -> bool {
        let key = Key {
            src: self.intern(src),
            dst: self.intern(dst),
            protocol,
            port,
        };
        match self.edges.get_mut(&key) {
            Some(old) => {
                old.absorb(&stats);
                false
            }
            None => {
                self.edges.insert(key, stats);
                true
            }
        }
    }

    /// Counts one observed connection. Returns whether it is a new edge.
    pub fn observe(&mut self, o: &Observation) -> bool {
        let stats = EdgeStats {
            count: 1,
            first_seen: o.seen,
            last_seen: o.seen,
            sample: o.sample.clone(),
            alerted: Alerted::default(),
            names: name_list(&o.dst_names),
        };
        self.add(&o.src, &o.dst, o.protocol, o.port, stats)
    }

    fn key_of(&self, src: &Peer, dst: &Peer, protocol: Protocol, port: Option<u16>) -> Option<Key> {
        Some(Key {
            src: *self.peer_ids.get(src)?,
            dst: *self.peer_ids.get(dst)?,
            protocol,
            port,
        })
    }

    /// The statistics of one edge, if it exists.
    pub fn get(
        &self,
        src: &Peer,
        dst: &Peer,
        protocol: Protocol,
        port: Option<u16>,
    ) -> Option<&EdgeStats> {
        self.edges.get(&self.key_of(src, dst, protocol, port)?)
    }

    /// The statistics of one edge, for changing them, if it exists.
    pub fn get_mut(
        &mut self,
        src: &Peer,
        dst: &Peer,
        protocol: Protocol,
        port: Option<u16>,
    ) -> Option<&mut EdgeStats> {
        let key = self.key_of(src, dst, protocol, port)?;
        self.edges.get_mut(&key)
    }

    /// Merges another graph (another node's, or an older state) into this one.
    pub fn merge(&mut self, other: &FlowGraph) {
        for e in other.edges() {
            self.add(e.src, e.dst, e.protocol, e.port, e.stats.clone());
        }
    }

    /// Every edge, sorted by source, destination, protocol and port.
    pub fn edges(&self) -> Vec<Edge<'_>> {
        let mut out: Vec<Edge<'_>> = self
            .edges
            .iter()
            .map(|(k, stats)| Edge {
                src: &self.peers[k.src as usize],
                dst: &self.peers[k.dst as usize],
                protocol: k.protocol,
                port: k.port,
                stats,
            })
            .collect();
        out.sort_by(|a, b| {
            (a.src, a.dst, a.protocol, a.port).cmp(&(b.src, b.dst, b.protocol, b.port))
        });
        out
    }

    /// Bytes held by the graph: the edge table at its capacity (hashbrown: one control byte
    /// per bucket, buckets a power of two), the peer table, and the heap behind samples and
    /// peers. An estimate, checked against a counting allocator in agent/tests/graph_memory.rs.
    pub fn memory_estimate(&self) -> usize {
        let buckets = |cap: usize| {
            if cap == 0 {
                0
            } else {
                (cap * 8 / 7).next_power_of_two()
            }
        };
        let edge_table = buckets(self.edges.capacity()) * (size_of::<(Key, EdgeStats)>() + 1);
        let peer_table = buckets(self.peer_ids.capacity()) * (size_of::<(Peer, u32)>() + 1)
            + self.peers.capacity() * size_of::<Peer>();
        let end_heap = |e: &SampleEnd| match e {
            SampleEnd::Ip(_) => 0,
            SampleEnd::Named(n) => n.len(),
        };
        let sample_heap: usize = self
            .edges
            .values()
            .map(|s| {
                end_heap(&s.sample.src)
                    + end_heap(&s.sample.dst)
                    + s.names.capacity() * size_of::<String>()
                    + s.names.iter().map(String::len).sum::<usize>()
            })
            .sum();
        let peer_heap: usize = self
            .peers
            .iter()
            .map(|p| match p {
                Peer::Workload(w) => w.namespace.len() + w.kind.len() + w.name.len(),
                Peer::Node { name, .. } => name.len(),
                _ => 0,
            })
            .sum::<usize>()
            * 2;
        edge_table + peer_table + sample_heap + peer_heap
    }
}

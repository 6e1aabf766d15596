//! The node's edges with their evidence, and their state file (written with atomic replace).

use std::{
    collections::BTreeMap,
    io::{self, BufRead, Write},
    path::Path,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::EdgeKey;

/// Evidence for one edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeStats {
    pub count: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(flatten)]
    edge: EdgeKey,
    #[serde(flatten)]
    stats: EdgeStats,
}

/// Edges in a stable order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeTable {
    edges: BTreeMap<EdgeKey, EdgeStats>,
}

impl EdgeTable {
    /// Adds one connection; returns true when the edge is new.
    pub fn observe(&mut self, edge: &EdgeKey, seen: DateTime<Utc>) -> bool {
        match self.edges.get_mut(edge) {
            Some(s) => {
                s.count += 1;
                s.first_seen = s.first_seen.min(seen);
                s.last_seen = s.last_seen.max(seen);
                false
            }
            None => {
                self.edges.insert(
                    edge.clone(),
                    EdgeStats {
                        count: 1,
                        first_seen: seen,
                        last_seen: seen,
                    },
                );
                true
            }
        }
    }

    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    pub fn get(&self, edge: &EdgeKey) -> Option<&EdgeStats> {
        self.edges.get(edge)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&EdgeKey, &EdgeStats)> {
        self.edges.iter()
    }

    /// JSON lines, one edge each.
    pub fn write_jsonl(&self, mut out: impl Write) -> io::Result<()> {
        for (edge, stats) in &self.edges {
            serde_json::to_writer(
                &mut out,
                &Line {
                    edge: edge.clone(),
                    stats: stats.clone(),
                },
            )?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// All edges as one JSON array (for `/flows`).
    pub fn to_json_array(&self) -> String {
        let lines: Vec<Line> = self
            .edges
            .iter()
            .map(|(edge, stats)| Line {
                edge: edge.clone(),
                stats: stats.clone(),
            })
            .collect();
        serde_json::to_string(&lines).unwrap_or_else(|_| "[]".into())
    }

    /// Reads what [`write_jsonl`](Self::write_jsonl) wrote. A bad line is an error naming it.
    pub fn read_jsonl(input: impl BufRead) -> io::Result<Self> {
        let mut t = Self::default();
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let l: Line = serde_json::from_str(&line).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("line {}: {e}", i + 1))
            })?;
            t.edges.insert(l.edge, l.stats);
        }
        Ok(t)
    }

    /// Writes the table to `path` atomically: a temporary file beside it, synced, then renamed
    /// over it, so a crash leaves the old state or the new one, never half of one.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        {
            let f = std::fs::File::create(&tmp)?;
            let mut w = io::BufWriter::new(&f);
            self.write_jsonl(&mut w)?;
            w.flush()?;
            drop(w);
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }

    /// Loads the state file, or an empty table when there is none yet.
    pub fn load(path: &Path) -> io::Result<Self> {
        match std::fs::File::open(path) {
            Ok(f) => Self::read_jsonl(io::BufReader::new(f))
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Protocol;

    fn edge(port: u16) -> EdgeKey {
        EdgeKey {
            src: "shop/Deployment/web".into(),
            dst: "203.0.113.10".into(),
            protocol: Protocol::Tcp,
            port: Some(port),
        }
    }

    #[test]
    fn observe_counts_and_keeps_the_earliest_and_latest_times() {
        let mut t = EdgeTable::default();
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap();
        let t1 = DateTime::from_timestamp(2_000, 0).unwrap();
        assert!(t.observe(&edge(443), t1));
        assert!(!t.observe(&edge(443), t0));
        let s = t.get(&edge(443)).unwrap();
        assert_eq!((s.count, s.first_seen, s.last_seen), (2, t0, t1));
    }

    #[test]
    fn state_file_round_trips_through_atomic_replace() {
        let dir = std::env::temp_dir().join(format!("trustmap-edges-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("edges.jsonl");
        let mut t = EdgeTable::default();
        t.observe(&edge(443), Utc::now());
        t.observe(&edge(80), Utc::now());
        t.save(&path).unwrap();
        assert_eq!(EdgeTable::load(&path).unwrap(), t);
        assert!(!path.with_extension("tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_naming_the_line() {
        let err = EdgeTable::read_jsonl(io::Cursor::new("{}\n")).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}

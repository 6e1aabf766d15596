//! Scan detection. Pure: the detector is given each failed attempt and its time.
//!
//! A source that makes refused or unanswered attempts to at least `threshold` distinct
//! (peer, protocol, port) targets within one window raises one `scan` finding for that window.
//! Windows are tumbling per source: the first attempt after a window has ended opens the next.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::flow::{Outcome, Protocol};

/// Limits of the detector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScanConfig {
    /// Distinct targets within a window that make a scan.
    pub threshold: usize,
    /// Length of a window.
    pub window: Duration,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            threshold: 10,
            window: Duration::seconds(60),
        }
    }
}

/// One target of failed attempts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Target {
    pub dst: String,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A scan: what one source tried within one window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScanFinding {
    pub src: String,
    pub window_start: DateTime<Utc>,
    pub window_seconds: i64,
    /// Every distinct target so far in the window (at most [`MAX_TARGETS`]), sorted.
    pub targets: Vec<Target>,
    /// The distinct ports tried, sorted.
    pub ports: Vec<u16>,
    pub refused: u64,
    pub unanswered: u64,
}

/// Targets remembered per window: enough to name a scan, bounded against a flood.
pub const MAX_TARGETS: usize = 256;
/// Sources remembered at once; the oldest window is forgotten first.
pub const MAX_SOURCES: usize = 16_384;

#[derive(Debug)]
struct Window {
    start: DateTime<Utc>,
    targets: BTreeSet<Target>,
    refused: u64,
    unanswered: u64,
    alerted: bool,
}

#[derive(Debug, Default)]
pub struct ScanDetector {
    config: ScanConfig,
    sources: HashMap<String, Window>,
}

impl ScanDetector {
    pub fn new(config: ScanConfig) -> Self {
        Self {
            config,
            sources: HashMap::new(),
        }
    }

    /// Records one failed attempt of `src`. Returns the finding when this attempt makes the
    /// window a scan (once per source and window).
    pub fn observe(
        &mut self,
        src: &str,
        target: Target,
        outcome: Outcome,
        at: DateTime<Utc>,
    ) -> Option<ScanFinding> {
        if !outcome.is_attempt() {
            return None;
        }
        if !self.sources.contains_key(src) && self.sources.len() >= MAX_SOURCES {
            self.forget_oldest();
        }
        let window = self.config.window;
        let w = self
            .sources
            .entry(src.to_owned())
            .or_insert_with(|| Window::new(at));
        if at - w.start >= window {
            *w = Window::new(at);
        }
        if w.targets.len() < MAX_TARGETS {
            w.targets.insert(target);
        }
        match outcome {
            Outcome::Refused => w.refused += 1,
            _ => w.unanswered += 1,
        }
        if w.alerted || w.targets.len() < self.config.threshold {
            return None;
        }
        w.alerted = true;
        let ports: BTreeSet<u16> = w.targets.iter().filter_map(|t| t.port).collect();
        Some(ScanFinding {
            src: src.to_owned(),
            window_start: w.start,
            window_seconds: window.num_seconds(),
            targets: w.targets.iter().cloned().collect(),
            ports: ports.into_iter().collect(),
            refused: w.refused,
            unanswered: w.unanswered,
        })
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self
            .sources
            .iter()
            .min_by_key(|(_, w)| w.start)
            .map(|(k, _)| k.clone())
        {
            self.sources.remove(&oldest);
        }
    }
}

impl Window {
    fn new(start: DateTime<Utc>) -> Self {
        Self {
            start,
            targets: BTreeSet::new(),
            refused: 0,
            unanswered: 0,
            alerted: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    fn target(dst: &str, port: u16) -> Target {
        Target {
            dst: dst.into(),
            protocol: Protocol::Tcp,
            port: Some(port),
        }
    }

    fn detector(threshold: usize) -> ScanDetector {
        ScanDetector::new(ScanConfig {
            threshold,
            window: Duration::seconds(60),
        })
    }

    #[test]
    fn the_nth_distinct_target_raises_one_finding_per_window() {
        let mut d = detector(3);
        let src = "shop/Deployment/intruder";
        assert_eq!(d.observe(src, target("a", 1), Outcome::Refused, t(0)), None);
        // The same target again does not count twice.
        assert_eq!(d.observe(src, target("a", 1), Outcome::Refused, t(1)), None);
        assert_eq!(
            d.observe(src, target("a", 2), Outcome::Unanswered, t(2)),
            None
        );
        let f = d
            .observe(src, target("b", 2), Outcome::Refused, t(3))
            .expect("a scan");
        assert_eq!(f.src, src);
        assert_eq!(f.window_start, t(0));
        assert_eq!(f.ports, vec![1, 2]);
        assert_eq!(
            f.targets,
            vec![target("a", 1), target("a", 2), target("b", 2)]
        );
        assert_eq!((f.refused, f.unanswered), (3, 1));
        // Further attempts in the same window stay quiet.
        assert_eq!(d.observe(src, target("c", 9), Outcome::Refused, t(4)), None);
        // The next window can raise again.
        for (i, p) in [10, 11].iter().enumerate() {
            assert_eq!(
                d.observe(src, target("x", *p), Outcome::Refused, t(61 + i as i64)),
                None
            );
        }
        assert!(
            d.observe(src, target("x", 12), Outcome::Refused, t(63))
                .is_some()
        );
    }

    #[test]
    fn answered_and_one_way_connections_are_not_attempts() {
        let mut d = detector(1);
        assert_eq!(
            d.observe("s", target("a", 1), Outcome::Answered, t(0)),
            None
        );
        assert_eq!(d.observe("s", target("a", 2), Outcome::OneWay, t(0)), None);
        assert!(
            d.observe("s", target("a", 3), Outcome::Unanswered, t(0))
                .is_some()
        );
    }

    #[test]
    fn sources_are_counted_apart() {
        let mut d = detector(2);
        assert_eq!(
            d.observe("s1", target("a", 1), Outcome::Refused, t(0)),
            None
        );
        assert_eq!(
            d.observe("s2", target("a", 2), Outcome::Refused, t(0)),
            None
        );
        assert!(
            d.observe("s1", target("a", 3), Outcome::Refused, t(0))
                .is_some()
        );
    }
}

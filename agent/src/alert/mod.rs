//! Alerts: would-deny flags and unexpected-flow alerts, and the gate that keeps a storm of new
//! flows from flooding the sinks. Pure: the gate is given the time, it does not read a clock.
//!
//! Every alert is about an *edge* (source identity, destination identity, protocol, port). An
//! edge alerts once per kind; later connections on it only add to its count. Across edges, a
//! token bucket caps the rate; what it holds back is counted, never silently lost.

pub mod scan;
pub mod sinks;

use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::flow::Protocol;

/// What an alert says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Observed traffic that the cluster's current policies (NetworkPolicies and the admin tiers) would deny.
    WouldDeny,
    /// Traffic outside the accepted baseline of a namespace in `alert` mode.
    UnexpectedFlow,
    /// One source's refused or unanswered attempts to many targets within a window
    /// ([`scan::ScanDetector`]); raised in every mode but `off`.
    Scan,
    /// The alerts the rate limit held back since the last summary: their count and the first
    /// examples, sent once the bucket has a token again.
    Suppressed,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WouldDeny => "would_deny",
            Self::UnexpectedFlow => "unexpected_flow",
            Self::Scan => "scan",
            Self::Suppressed => "suppressed",
        }
    }
}

/// The edge an alert is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EdgeKey {
    /// Source identity, as the graph and FlowEdges name peers: `namespace/Kind/name` (a pod
    /// without owner: `namespace/Pod/name`), `node:<name>@<ip>`, `cluster-dns` or an address.
    pub src: String,
    pub dst: String,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// One alert, as every sink receives it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    #[serde(flatten)]
    pub edge: EdgeKey,
    /// The pod that initiated the connection, `namespace/name`, when it is a pod (for the
    /// Kubernetes Event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_pod: Option<String>,
    /// The DNS names the source pod resolved to the destination's address before the
    /// connection (see the flow record's `dst_names`); empty when none is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_names: Vec<String>,
    pub first_seen: DateTime<Utc>,
    /// Connections seen on the edge so far.
    pub count: u64,
    /// The policy engine's explanation of the verdict.
    pub explanation: serde_json::Value,
}

/// Limits of the gate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GateConfig {
    /// Alerts that may go out at once after a quiet period.
    pub burst: u32,
    /// Sustained alerts per second.
    pub per_second: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            burst: 50,
            per_second: 5.0,
        }
    }
}

/// What the gate decided for an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it.
    Send,
    /// This edge already alerted for this kind.
    Duplicate,
    /// Over the rate limit: counted in [`AlertGate::suppressed`], not sent.
    RateLimited,
}

/// Deduplicates per edge and kind, and rate-limits across edges.
#[derive(Debug, Clone)]
pub struct AlertGate {
    config: GateConfig,
    alerted: HashSet<(AlertKind, EdgeKey)>,
    tokens: f64,
    last: Option<Duration>,
    suppressed: u64,
    /// Held back since the last summary: how many, and the first [`SUMMARY_EXAMPLES`].
    held: u64,
    examples: Vec<(AlertKind, EdgeKey)>,
}

/// Examples a summary of held-back alerts names.
pub const SUMMARY_EXAMPLES: usize = 10;

/// What the rate limit held back since the last summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeldBack {
    pub count: u64,
    /// The first ones, in the order they were held back.
    pub examples: Vec<HeldExample>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeldExample {
    pub kind: AlertKind,
    #[serde(flatten)]
    pub edge: EdgeKey,
}

impl AlertGate {
    pub fn new(config: GateConfig) -> Self {
        Self {
            config,
            alerted: HashSet::new(),
            tokens: f64::from(config.burst),
            last: None,
            suppressed: 0,
            held: 0,
            examples: Vec::new(),
        }
    }

    fn refill(&mut self, now: Duration) {
        if let Some(last) = self.last {
            let elapsed = now.saturating_sub(last).as_secs_f64();
            self.tokens =
                (self.tokens + elapsed * self.config.per_second).min(f64::from(self.config.burst));
        }
        self.last = Some(now);
    }

    /// The summary of what was held back, once a token is free again (it takes that token).
    /// Nothing held back is ever lost: it is named here, or counted.
    pub fn summary_due(&mut self, now: Duration) -> Option<HeldBack> {
        if self.held == 0 {
            return None;
        }
        self.refill(now);
        if self.tokens < 1.0 {
            return None;
        }
        self.tokens -= 1.0;
        let examples = std::mem::take(&mut self.examples)
            .into_iter()
            .map(|(kind, edge)| HeldExample { kind, edge })
            .collect();
        Some(HeldBack {
            count: std::mem::take(&mut self.held),
            examples,
        })
    }

    /// Decides whether an alert of `kind` on `edge` goes out at `now` (any monotonic clock).
    /// An edge held back by the rate limit counts as alerted: it is in the suppressed count,
    /// and a later connection on it does not retry, which would let a storm through late.
    pub fn offer(&mut self, kind: AlertKind, edge: &EdgeKey, now: Duration) -> Decision {
        if !self.alerted.insert((kind, edge.clone())) {
            return Decision::Duplicate;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Decision::Send
        } else {
            self.suppressed += 1;
            self.held += 1;
            if self.examples.len() < SUMMARY_EXAMPLES {
                self.examples.push((kind, edge.clone()));
            }
            Decision::RateLimited
        }
    }

    /// Marks an edge as already alerted, for edges restored from the state of an earlier run.
    pub fn remember(&mut self, kind: AlertKind, edge: EdgeKey) {
        self.alerted.insert((kind, edge));
    }

    /// Alerts held back by the rate limit so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(n: u16) -> EdgeKey {
        EdgeKey {
            src: "shop/Deployment/web".into(),
            dst: "shop/Deployment/api".into(),
            protocol: Protocol::Tcp,
            port: Some(n),
        }
    }

    #[test]
    fn an_edge_alerts_once_per_kind() {
        let mut g = AlertGate::new(GateConfig::default());
        let t = Duration::ZERO;
        assert_eq!(g.offer(AlertKind::WouldDeny, &edge(80), t), Decision::Send);
        assert_eq!(
            g.offer(AlertKind::WouldDeny, &edge(80), t),
            Decision::Duplicate
        );
        assert_eq!(
            g.offer(AlertKind::UnexpectedFlow, &edge(80), t),
            Decision::Send
        );
        assert_eq!(g.offer(AlertKind::WouldDeny, &edge(81), t), Decision::Send);
    }

    #[test]
    fn a_storm_is_capped_at_the_burst_and_the_rest_is_counted() {
        let mut g = AlertGate::new(GateConfig {
            burst: 10,
            per_second: 1.0,
        });
        let sent = (0..1000)
            .filter(|n| g.offer(AlertKind::WouldDeny, &edge(*n), Duration::ZERO) == Decision::Send)
            .count();
        assert_eq!(sent, 10);
        assert_eq!(g.suppressed(), 990);
    }

    #[test]
    fn tokens_refill_with_time_up_to_the_burst() {
        let mut g = AlertGate::new(GateConfig {
            burst: 2,
            per_second: 1.0,
        });
        let mut n = 0;
        let mut offer = |g: &mut AlertGate, secs: u64| {
            n += 1;
            g.offer(AlertKind::WouldDeny, &edge(n), Duration::from_secs(secs))
        };
        assert_eq!(offer(&mut g, 0), Decision::Send);
        assert_eq!(offer(&mut g, 0), Decision::Send);
        assert_eq!(offer(&mut g, 0), Decision::RateLimited);
        assert_eq!(offer(&mut g, 1), Decision::Send);
        // A long quiet period refills only up to the burst.
        assert_eq!(offer(&mut g, 100), Decision::Send);
        assert_eq!(offer(&mut g, 100), Decision::Send);
        assert_eq!(offer(&mut g, 100), Decision::RateLimited);
        assert_eq!(g.suppressed(), 2);
    }

    #[test]
    fn held_back_alerts_become_one_summary_when_a_token_is_free() {
        let mut g = AlertGate::new(GateConfig {
            burst: 1,
            per_second: 1.0,
        });
        let t0 = Duration::ZERO;
        assert_eq!(g.offer(AlertKind::WouldDeny, &edge(1), t0), Decision::Send);
        for n in 2..=30 {
            assert_eq!(
                g.offer(AlertKind::WouldDeny, &edge(n), t0),
                Decision::RateLimited
            );
        }
        // No token yet: nothing.
        assert_eq!(g.summary_due(t0), None);
        let s = g
            .summary_due(Duration::from_secs(1))
            .expect("a summary once the bucket refills");
        assert_eq!(s.count, 29);
        assert_eq!(
            s.examples.iter().map(|e| e.edge.port).collect::<Vec<_>>(),
            (2..12).map(Some).collect::<Vec<_>>()
        );
        // Said once.
        assert_eq!(g.summary_due(Duration::from_secs(5)), None);
        assert_eq!(g.suppressed(), 29);
    }

    #[test]
    fn remembered_edges_do_not_alert_again_after_a_restart() {
        let mut g = AlertGate::new(GateConfig::default());
        g.remember(AlertKind::WouldDeny, edge(80));
        assert_eq!(
            g.offer(AlertKind::WouldDeny, &edge(80), Duration::ZERO),
            Decision::Duplicate
        );
    }
}

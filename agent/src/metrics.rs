//! The agent's Prometheus metrics (prometheus-client), served at `/metrics`.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

/// Handles to every metric; cheap to clone, shared with the HTTP server.
#[derive(Clone, Default)]
pub struct Metrics {
    pub flows_observed: Counter,
    pub unexpected_flows: Counter,
    pub would_deny_flows: Counter,
    pub failed_attempts: Counter,
    pub scans: Counter,
    pub events_dropped: Counter,
    pub malformed_packets: Counter,
    pub dns_responses: Counter,
    pub dns_malformed: Counter,
    pub dns_dropped: Counter,
    pub dns_names: Gauge,
    pub alerts_suppressed: Counter,
    pub alerts_dropped: Counter,
    pub alert_delivery_failures: Counter,
    pub publish_failures: Counter,
    pub inventory_refreshes: Counter,
    pub attached_interfaces: Gauge,
    pub one_direction_interfaces: Gauge,
    pub edges: Gauge,
}

impl Metrics {
    /// Registers the metrics. Counter names get `_total` appended by the encoder.
    pub fn register(&self) -> Registry {
        let mut r = Registry::default();
        r.register(
            "trustmap_flows_observed",
            "Connection starts observed",
            self.flows_observed.clone(),
        );
        r.register(
            "trustmap_unexpected_flows",
            "Edges outside the baseline of a namespace in alert mode",
            self.unexpected_flows.clone(),
        );
        r.register(
            "trustmap_would_deny_flows",
            "Edges the current policies (NetworkPolicies and admin tiers) would deny",
            self.would_deny_flows.clone(),
        );
        r.register(
            "trustmap_failed_attempts",
            "Connection starts refused or unanswered (never learned)",
            self.failed_attempts.clone(),
        );
        r.register(
            "trustmap_scans",
            "Scan alerts: one source's failed attempts to many targets within a window",
            self.scans.clone(),
        );
        r.register(
            "trustmap_events_dropped",
            "Connection starts lost because the ring buffer was full",
            self.events_dropped.clone(),
        );
        r.register(
            "trustmap_malformed_packets",
            "Packets whose headers were truncated or inconsistent (passed on, never trusted)",
            self.malformed_packets.clone(),
        );
        r.register(
            "trustmap_dns_responses",
            "DNS responses to pods read (with at least their question)",
            self.dns_responses.clone(),
        );
        r.register(
            "trustmap_dns_malformed",
            "DNS responses to pods that did not parse (cut in the header or question, looping or forward compression pointers, bad labels); never trusted",
            self.dns_malformed.clone(),
        );
        r.register(
            "trustmap_dns_dropped",
            "DNS responses lost because the DNS ring buffer was full",
            self.dns_dropped.clone(),
        );
        r.register(
            "trustmap_dns_names",
            "Names pods resolved that are remembered now (TTL plus grace)",
            self.dns_names.clone(),
        );
        r.register(
            "trustmap_alerts_suppressed",
            "Alerts held back by the rate limit",
            self.alerts_suppressed.clone(),
        );
        r.register(
            "trustmap_alerts_dropped",
            "Alerts lost because a sink's queue was full",
            self.alerts_dropped.clone(),
        );
        r.register(
            "trustmap_alert_delivery_failures",
            "Alerts a sink could not deliver (Kubernetes Events refused or unreachable)",
            self.alert_delivery_failures.clone(),
        );
        r.register(
            "trustmap_publish_failures",
            "FlowEdges publications or garbage collections that failed",
            self.publish_failures.clone(),
        );
        r.register(
            "trustmap_inventory_refreshes",
            "New inventory snapshots taken after the watched objects or manifests changed",
            self.inventory_refreshes.clone(),
        );
        r.register(
            "trustmap_attached_interfaces",
            "Interfaces the TC programs are attached to",
            self.attached_interfaces.clone(),
        );
        r.register(
            "trustmap_one_direction_interfaces",
            "Attached interfaces where capture sees packets in one direction only (see the log)",
            self.one_direction_interfaces.clone(),
        );
        r.register(
            "trustmap_edges",
            "Edges in the node's flow graph",
            self.edges.clone(),
        );
        r
    }
}

/// The text exposition of a registry.
pub fn render(registry: &Registry) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut s, registry);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_metrics_are_exposed() {
        let m = Metrics::default();
        let r = m.register();
        m.flows_observed.inc_by(3);
        m.edges.set(2);
        let text = render(&r);
        for line in [
            "trustmap_flows_observed_total 3",
            "trustmap_unexpected_flows_total 0",
            "trustmap_would_deny_flows_total 0",
            "trustmap_events_dropped_total 0",
            "trustmap_attached_interfaces 0",
            "trustmap_one_direction_interfaces 0",
            "trustmap_edges 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}

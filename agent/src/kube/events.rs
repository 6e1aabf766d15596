//! The Kubernetes Event sink: each alert that passed the gate becomes a `Warning` Event
//! (core/v1) on the pod that initiated the connection, so that `kubectl describe pod` and
//! `kubectl get events` show it. Reason `WouldDeny` or `UnexpectedFlow`; the message names the
//! edge and the deciding policy.
//!
//! Like the webhook, the sink never blocks the datapath loop: alerts go through a bounded queue
//! to a task of their own; a full queue and a refused or failed create are counted, never
//! retried in the loop. Alerts without a source pod (from a node or an external address) have
//! no object to be reported on and are skipped.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{Api, Client, api::PostParams};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::alert::{Alert, AlertKind};

/// The `source.component` and `reportingComponent` of the Events.
pub const COMPONENT: &str = "trustmap-agent";

/// Looks up a pod's UID by namespace and name (the inventory's store), for `involvedObject`:
/// `kubectl describe pod` matches Events on it.
pub type UidLookup = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

/// Settings of the sink.
#[derive(Clone, Debug)]
pub struct EventSinkConfig {
    /// This node's name: `source.host` and `reportingInstance`.
    pub node: String,
    /// Alerts waiting to be posted at most.
    pub queue: usize,
}

/// Creates Events from alerts, on a task of its own.
pub struct EventSink {
    queue: mpsc::Sender<Alert>,
}

/// The Event of one alert at `now`, or `None` when the alert has no source pod.
pub fn event_for(
    alert: &Alert,
    uid: Option<String>,
    node: &str,
    now: DateTime<Utc>,
) -> Option<Event> {
    let (namespace, pod) = alert.src_pod.as_deref()?.split_once('/')?;
    let reason = match alert.kind {
        AlertKind::WouldDeny => "WouldDeny",
        AlertKind::UnexpectedFlow => "UnexpectedFlow",
        AlertKind::Scan => "Scan",
        AlertKind::Suppressed => "AlertsSuppressed",
    };
    let port = alert.edge.port.map(|p| format!(":{p}")).unwrap_or_default();
    let what = match alert.kind {
        AlertKind::WouldDeny => "the current policies would deny",
        AlertKind::UnexpectedFlow => "outside the baseline",
        AlertKind::Scan | AlertKind::Suppressed => "",
    };
    let decided = deciding_policy(&alert.explanation)
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    let message = if alert.kind == AlertKind::Scan {
        let ports: Vec<String> = alert.explanation["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p.to_string())
            .collect();
        format!(
            "{} made refused or unanswered attempts to {} targets within {} s (ports {}); \
             none is learned as allowed",
            alert.edge.src,
            alert.count,
            alert.explanation["window_seconds"],
            ports.join(", ")
        )
    } else {
        let dst = if alert.dst_names.is_empty() {
            alert.edge.dst.clone()
        } else {
            format!("{} ({})", alert.edge.dst, alert.dst_names.join(", "))
        };
        format!(
            "{} -> {dst} {}{port}: {what}{decided}; first seen {}, {} connection(s)",
            alert.edge.src,
            alert.edge.protocol,
            alert
                .first_seen
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            alert.count,
        )
    };
    let time = Time(
        k8s_openapi::jiff::Timestamp::new(now.timestamp(), now.timestamp_subsec_nanos() as i32)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    );
    // Names must be unique in the namespace; the pod's name and the time in hex, as kubelet does.
    let name = format!(
        "{pod}.{:x}",
        now.timestamp_nanos_opt().unwrap_or_default() as u64
    );
    Some(Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace.to_owned()),
            name: Some(pod.to_owned()),
            uid,
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some("Warning".into()),
        action: Some("Observed".into()),
        count: Some(1),
        first_timestamp: Some(time.clone()),
        last_timestamp: Some(time),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.to_owned()),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.to_owned()),
        ..Event::default()
    })
}

/// The denying sides of an explanation (as the policy engine serializes it) with the policies
/// that isolate them: `ingress denied: isolated by shop/db-from-api`.
fn deciding_policy(v: &serde_json::Value) -> Option<String> {
    let sides: Vec<String> = ["egress", "ingress"]
        .into_iter()
        .filter_map(|side| {
            let s = &v[side];
            let decision = s["decision"].as_str()?;
            if decision == "allow" {
                return None;
            }
            if let Some(rule) = tier_rule(&s["tier_rule"]) {
                return Some(match decision {
                    "unknown" => format!("{side} unknown: {rule} names domains"),
                    "undefined" => format!(
                        "{side} undefined: {rule} and {} disagree at one priority",
                        tier_rule(&s["conflicting"]).unwrap_or_default()
                    ),
                    _ => format!("{side} denied by {rule}"),
                });
            }
            let policies: Vec<&str> = s["policies"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
                .unwrap_or_default();
            Some(if policies.is_empty() {
                format!("{side} denied")
            } else {
                format!("{side} denied: isolated by {}", policies.join(", "))
            })
        })
        .collect();
    (!sides.is_empty()).then(|| sides.join("; "))
}

/// An admin policy's rule as explanations serialize it: `Kind/name` rule `name` (or its index),
/// with its tier and action.
fn tier_rule(r: &serde_json::Value) -> Option<String> {
    let policy = r["policy"].as_str()?;
    let rule = match r["name"].as_str() {
        Some(n) => format!("rule {n}"),
        None => format!("rule {}", r["rule"]),
    };
    Some(format!(
        "{policy} {rule} ({} tier, {})",
        r["tier"].as_str().unwrap_or_default(),
        r["action"].as_str().unwrap_or_default()
    ))
}

impl EventSink {
    /// Starts the posting task; needs a tokio runtime. `failures` counts Events that could not
    /// be created (the API server refused them or could not be reached).
    pub fn start(
        client: Client,
        config: EventSinkConfig,
        uid_of: UidLookup,
        failures: Counter,
    ) -> Self {
        let (queue, mut rx) = mpsc::channel::<Alert>(config.queue);
        tokio::spawn(async move {
            while let Some(alert) = rx.recv().await {
                let uid = alert
                    .src_pod
                    .as_deref()
                    .and_then(|p| p.split_once('/'))
                    .and_then(|(ns, name)| uid_of(ns, name));
                let Some(event) = event_for(&alert, uid, &config.node, Utc::now()) else {
                    continue;
                };
                let namespace = event.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
                if let Err(e) = api.create(&PostParams::default(), &event).await {
                    failures.inc();
                    tracing::warn!(
                        error = %e,
                        event = event.metadata.name.as_deref().unwrap_or(""),
                        namespace,
                        "creating a Kubernetes Event failed"
                    );
                }
            }
        });
        Self { queue }
    }

    /// Queues an alert; returns false when the queue is full (the caller counts it).
    pub fn send(&self, alert: &Alert) -> bool {
        self.queue.try_send(alert.clone()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{alert::EdgeKey, flow::Protocol};

    fn alert(kind: AlertKind, src_pod: Option<&str>) -> Alert {
        Alert {
            kind,
            edge: EdgeKey {
                src: "shop/Deployment/web".into(),
                dst: "shop/Deployment/db".into(),
                protocol: Protocol::Tcp,
                port: Some(5432),
            },
            src_pod: src_pod.map(str::to_owned),
            dst_names: Vec::new(),
            first_seen: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            count: 3,
            explanation: serde_json::json!({"verdict": "deny",
                "egress": {"decision": "allow"},
                "ingress": {"decision": "deny", "policies": ["shop/db-from-api"]}}),
        }
    }

    #[test]
    fn an_event_is_a_warning_on_the_source_pod_naming_edge_and_policy() {
        let now = DateTime::from_timestamp(1_700_000_100, 5).unwrap();
        let e = event_for(
            &alert(AlertKind::WouldDeny, Some("shop/web-1")),
            Some("u-1".into()),
            "worker-1",
            now,
        )
        .expect("an event");
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
        assert!(e.metadata.name.as_deref().unwrap().starts_with("web-1."));
        let o = &e.involved_object;
        assert_eq!(
            (o.kind.as_deref(), o.namespace.as_deref(), o.name.as_deref()),
            (Some("Pod"), Some("shop"), Some("web-1"))
        );
        assert_eq!(o.uid.as_deref(), Some("u-1"));
        assert_eq!(e.reason.as_deref(), Some("WouldDeny"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        let m = e.message.unwrap();
        assert!(
            m.contains("shop/Deployment/web -> shop/Deployment/db TCP:5432"),
            "{m}"
        );
        assert!(
            m.contains("(ingress denied: isolated by shop/db-from-api)"),
            "{m}"
        );
    }

    #[test]
    fn an_admin_tier_denial_names_the_policy_rule_and_tier() {
        use crate::policy::{Action, SideExplanation, Tier, TierRuleExplanation};
        let side = |decision, tier_rule, conflicting| SideExplanation {
            decision,
            isolated: false,
            policies: vec![],
            exemption: None,
            allowed_by: None,
            misses: vec![],
            tier_rule,
            conflicting,
            passed_by: vec![],
            reason: String::new(),
        };
        let rule = |policy: &str, name: Option<&str>, action| TierRuleExplanation {
            tier: Tier::Admin,
            policy: policy.into(),
            priority: 10,
            rule: 1,
            name: name.map(str::to_owned),
            action,
        };
        let v = serde_json::json!({
            "egress": side("deny", Some(rule("ClusterNetworkPolicy/no-payments", Some("card-data"), Action::Deny)), None),
            "ingress": side("undefined", Some(rule("AdminNetworkPolicy/a", None, Action::Accept)),
                Some(rule("AdminNetworkPolicy/b", None, Action::Deny))),
        });
        assert_eq!(
            deciding_policy(&v).as_deref(),
            Some(
                "egress denied by ClusterNetworkPolicy/no-payments rule card-data (admin tier, \
                 deny); ingress undefined: AdminNetworkPolicy/a rule 1 (admin tier, accept) and \
                 AdminNetworkPolicy/b rule 1 (admin tier, deny) disagree at one priority"
            )
        );
    }

    #[test]
    fn an_external_destination_is_named_by_what_its_source_resolved() {
        let mut a = alert(AlertKind::UnexpectedFlow, Some("shop/web-1"));
        a.edge.dst = "203.0.113.10".into();
        a.edge.port = Some(443);
        a.dst_names = vec!["api.payments.example".into()];
        let e = event_for(&a, None, "n", Utc::now()).expect("an event");
        let m = e.message.unwrap();
        assert!(
            m.starts_with(
                "shop/Deployment/web -> 203.0.113.10 (api.payments.example) TCP:443: outside the baseline"
            ),
            "{m}"
        );
        assert_eq!(
            serde_json::to_value(&a).unwrap()["dst_names"],
            serde_json::json!(["api.payments.example"])
        );
    }

    #[test]
    fn an_alert_without_a_source_pod_makes_no_event() {
        let a = alert(AlertKind::UnexpectedFlow, None);
        assert!(event_for(&a, None, "n", Utc::now()).is_none());
    }
}

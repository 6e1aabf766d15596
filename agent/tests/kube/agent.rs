//! The agent's side of the API server, against the stub: the inventory feed syncs and takes a
//! new snapshot when a watch event changes the stores (so resolution changes), the publishing
//! loop applies the graph's edges and collects garbage, and the Event sink posts core/v1 Events.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use trustmap::{
    alert::{Alert, AlertKind, EdgeKey},
    daemon::Feed,
    flow::{FlowRecord, Protocol},
    graph::FlowGraph,
    identity::{Identities, IdentityError, IdentityOptions},
    kube::{
        EventSink, EventSinkConfig, KubeInventory, PodScope, PublishLoop, graph_to_records,
        peers::peer_to_string,
    },
};

use crate::{
    inventory::{PODS, pod, script_cluster},
    stub::{Stub, event, wait},
};

const FLOWEDGES: &str = "/apis/trustmap.dev/v1alpha1/namespaces/trustmap-system/flowedges";

fn record(src: &str, dst: &str, port: u16) -> FlowRecord {
    serde_json::from_value(serde_json::json!({
        "protocol": "TCP", "src": src, "src_port": 40000, "dst": dst, "port": port,
        "initiator": "syn",
    }))
    .expect("a record")
}

/// The source identity the agent gives a record under a snapshot, as its edges and alerts
/// name it.
fn source_of(
    loaded: &trustmap::inventory::Loaded,
    r: &FlowRecord,
) -> Result<String, IdentityError> {
    let ids = Identities::new(&loaded.inventory, IdentityOptions::default());
    Ok(peer_to_string(&ids.classify(r)?[0].src))
}

#[tokio::test]
async fn the_feed_syncs_and_a_pod_added_event_changes_resolution() {
    let stub = Stub::start().await;
    script_cluster(&stub);
    let inv = Arc::new(KubeInventory::start(stub.client(), PodScope::Cluster));
    tokio::time::timeout(Duration::from_secs(20), inv.wait_synced())
        .await
        .expect("synced within 20 s");
    let (mut feed, first) = Feed::kube(inv.clone());
    assert!(feed.synced(), "readiness follows the inventory's sync");
    assert!(feed.poll().is_none(), "no change, no new snapshot");
    let r = record("10.0.0.3", "10.0.0.2", 5432);
    // An address in the cluster's CIDRs that nothing holds yet: the agent parks such a record
    // until a snapshot knows it.
    assert!(
        matches!(
            source_of(&first, &r),
            Err(IdentityError::UnknownClusterAddress { .. })
        ),
        "{:?}",
        source_of(&first, &r)
    );

    stub.wait_watch(PODS).await;
    stub.push(PODS, event("ADDED", pod("cache", "10.0.0.3", "11")));
    let mut next = None;
    wait("a new snapshot after the ADDED event", || {
        next = feed.poll();
        next.is_some()
    })
    .await;
    let next = next.expect("a snapshot");
    assert_eq!(source_of(&next, &r).expect("resolves"), "shop/Pod/cache");
    let ids = Identities::new(&next.inventory, IdentityOptions::default());
    assert_eq!(ids.classify(&r).expect("classifies").len(), 1);
    assert_eq!(
        inv.pod_uid("shop", "cache"),
        None,
        "the stub's pods have no UID"
    );
}

#[tokio::test]
async fn the_publishing_loop_applies_the_graph_and_the_first_node_collects_garbage() {
    let stub = Stub::start().await;
    let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("time");
    let mut graph = FlowGraph::new();
    let manifests = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.1.0.1, podIPs: [{ip: 10.1.0.1}]}
"#;
    let mut m = trustmap::inventory::Manifests::new();
    m.add_text(std::path::Path::new("m.yaml"), manifests)
        .expect("manifests");
    let loaded = m.finish();
    let ids = Identities::new(&loaded.inventory, IdentityOptions::default());
    let mut r = record("10.1.0.1", "203.0.113.10", 443);
    r.first_seen = Some(t);
    for o in ids.classify(&r).expect("classifies") {
        graph.observe(&o);
    }
    let failures = Counter::default();
    let (tx, rx) = tokio::sync::watch::channel(Vec::new());
    let task = PublishLoop {
        client: stub.client(),
        namespace: "trustmap-system".into(),
        node: "worker-1".into(),
        known_nodes: Box::new(|| BTreeSet::from(["worker-1".to_owned(), "worker-2".to_owned()])),
        failures: failures.clone(),
    }
    .spawn(rx);
    tx.send_replace(graph_to_records(&graph, t));

    stub.wait_requests("the apply and the garbage collection's list", |reqs| {
        reqs.iter().any(|r| r.method == "PATCH")
            && reqs.iter().any(|r| {
                r.is_list() && r.path == FLOWEDGES && !r.query.contains_key("labelSelector")
            })
    })
    .await;
    let patch = stub
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("an apply");
    assert_eq!(patch.path, format!("{FLOWEDGES}/worker-1-0"));
    let body: Value = serde_json::from_slice(&patch.body).expect("JSON");
    let edges = &body["spec"]["edges"];
    assert_eq!(edges.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(edges[0]["src"], "shop/Pod/web");
    assert_eq!(edges[0]["dst"], "203.0.113.10");
    assert_eq!(edges[0]["port"], 443);
    assert_eq!(failures.get(), 0);
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop ends with its sender")
        .expect("no panic");
}

#[tokio::test]
async fn the_event_sink_posts_a_warning_event_on_the_source_pod() {
    let stub = Stub::start().await;
    let failures = Counter::default();
    let sink = EventSink::start(
        stub.client(),
        EventSinkConfig {
            node: "worker-1".into(),
            queue: 8,
        },
        Arc::new(|ns, name| Some(format!("uid-of-{ns}-{name}"))),
        failures.clone(),
    );
    let alert = Alert {
        kind: AlertKind::UnexpectedFlow,
        edge: EdgeKey {
            src: "shop/web".into(),
            dst: "shop/api".into(),
            protocol: Protocol::Tcp,
            port: Some(9000),
        },
        src_pod: Some("shop/web".into()),
        dst_names: Vec::new(),
        first_seen: Utc::now(),
        count: 1,
        explanation: serde_json::json!({"verdict": "deny", "egress": {"decision": "allow"},
            "ingress": {"decision": "deny", "policies": ["shop/default-deny"]}}),
    };
    assert!(sink.send(&alert));
    let path = "/api/v1/namespaces/shop/events";
    stub.wait_requests("the Event's POST", |reqs| {
        reqs.iter().any(|r| r.method == "POST" && r.path == path)
    })
    .await;
    let post = stub.requests_to(path).remove(0);
    let e: Value = serde_json::from_slice(&post.body).expect("JSON");
    assert_eq!(e["apiVersion"], "v1");
    assert_eq!(e["kind"], "Event");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "UnexpectedFlow");
    assert_eq!(e["involvedObject"]["kind"], "Pod");
    assert_eq!(e["involvedObject"]["namespace"], "shop");
    assert_eq!(e["involvedObject"]["name"], "web");
    assert_eq!(e["involvedObject"]["uid"], "uid-of-shop-web");
    assert_eq!(e["source"]["host"], "worker-1");
    let message = e["message"].as_str().expect("message");
    assert!(
        message.contains("shop/web -> shop/api TCP:9000"),
        "{message}"
    );
    assert!(message.contains("shop/default-deny"), "{message}");
    // The stub answers a POST it was not scripted for with a 404: counted as a failure.
    wait("the failure counted", || failures.get() == 1).await;
}

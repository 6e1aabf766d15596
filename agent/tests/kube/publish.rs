//! The FlowEdges publisher and garbage collection against the stub.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use trustmap::{
    flow::Protocol,
    kube::{EdgeRecord, FIELD_MANAGER, Publisher, collect_garbage},
};

use crate::stub::{Reply, Stub, list, status};

const NS: &str = "trustmap-system";
const FLOWEDGES: &str = "/apis/trustmap.dev/v1alpha1/namespaces/trustmap-system/flowedges";
/// The API server's limit on an object (etcd's request limit).
const OBJECT_LIMIT: usize = 1536 * 1024;

pub fn edge(src: &str, dst: &str, port: u16, count: u64) -> EdgeRecord {
    let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("time");
    EdgeRecord {
        src: src.into(),
        dst: dst.into(),
        protocol: Protocol::Tcp,
        port: Some(port),
        count,
        first_seen: t,
        last_seen: t,
        dst_names: Vec::new(),
    }
}

fn flowedges(name: &str, node: &str, label: &str) -> Value {
    json!({
        "apiVersion": "trustmap.dev/v1alpha1", "kind": "FlowEdges",
        "metadata": {"name": name, "namespace": NS, "labels": {"trustmap.dev/node": label}},
        "spec": {"node": node, "shard": 0, "shards": 1, "edgeCount": 0, "edges": []},
    })
}

#[tokio::test]
async fn publish_applies_every_shard_with_server_side_apply_under_one_field_manager() {
    let stub = Stub::start().await;
    let edges: Vec<_> = (0..3_000)
        .map(|i| {
            edge(
                &format!("shop/Deployment/client-{i}"),
                "shop/StatefulSet/db",
                5432,
                1,
            )
        })
        .collect();
    let budget = 64 * 1024;
    let publisher = Publisher::new(stub.client(), NS, "worker-1").with_budget(budget);
    let report = publisher.publish(edges).await.expect("publish");
    assert_eq!(report.edges, 3_000);
    assert!(report.applied.len() > 1, "{:?}", report.applied);
    assert!(report.deleted.is_empty());

    let patches: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), report.applied.len());
    let mut total = 0;
    for (i, p) in patches.iter().enumerate() {
        assert_eq!(p.path, format!("{FLOWEDGES}/worker-1-{i}"));
        assert_eq!(
            p.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(p.query["fieldManager"], FIELD_MANAGER);
        assert_eq!(p.query["force"], "true");
        assert!(
            p.body.len() < budget + 4096 && p.body.len() < OBJECT_LIMIT,
            "shard {i} is {} bytes",
            p.body.len()
        );
        let obj: Value = serde_json::from_slice(&p.body).expect("JSON body");
        assert_eq!(obj["apiVersion"], "trustmap.dev/v1alpha1");
        assert_eq!(obj["kind"], "FlowEdges");
        assert_eq!(obj["metadata"]["name"], format!("worker-1-{i}"));
        assert_eq!(obj["metadata"]["labels"]["trustmap.dev/node"], "worker-1");
        assert_eq!(obj["spec"]["node"], "worker-1");
        assert_eq!(obj["spec"]["shard"], i);
        assert_eq!(obj["spec"]["shards"], patches.len());
        total += obj["spec"]["edges"].as_array().expect("edges").len();
    }
    assert_eq!(total, 3_000);
    // Surplus shards are looked up by the node label.
    let lookup = stub
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && r.path == FLOWEDGES)
        .expect("a list of the node's shards");
    assert_eq!(lookup.query["labelSelector"], "trustmap.dev/node=worker-1");
}

#[tokio::test]
async fn publish_deletes_the_shards_a_smaller_graph_no_longer_needs() {
    let stub = Stub::start().await;
    stub.script(
        "GET",
        FLOWEDGES,
        false,
        Reply::Json(
            200,
            list(
                "FlowEdges",
                "7",
                vec![
                    flowedges("worker-1-0", "worker-1", "worker-1"),
                    flowedges("worker-1-1", "worker-1", "worker-1"),
                    flowedges("worker-1-2", "worker-1", "worker-1"),
                    // Not a name of ours, whatever its label says: left alone.
                    flowedges("hand-made", "worker-1", "worker-1"),
                ],
            ),
        ),
    );
    // One surplus shard is already gone (another agent's GC): not an error.
    stub.script(
        "DELETE",
        &format!("{FLOWEDGES}/worker-1-2"),
        false,
        Reply::Json(404, status(404, "NotFound")),
    );
    let publisher = Publisher::new(stub.client(), NS, "worker-1");
    let report = publisher
        .publish(vec![edge("a/b", "c/d", 80, 1)])
        .await
        .expect("publish");
    assert_eq!(report.applied, ["worker-1-0"]);
    assert_eq!(report.deleted, ["worker-1-1", "worker-1-2"]);
    let deletes: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        deletes,
        [
            format!("{FLOWEDGES}/worker-1-1"),
            format!("{FLOWEDGES}/worker-1-2")
        ]
    );
}

#[tokio::test]
async fn publish_reports_a_failed_apply_with_the_object_name() {
    let stub = Stub::start().await;
    stub.script(
        "PATCH",
        &format!("{FLOWEDGES}/worker-1-0"),
        false,
        Reply::Json(403, status(403, "Forbidden")),
    );
    let err = Publisher::new(stub.client(), NS, "worker-1")
        .publish(vec![edge("a/b", "c/d", 80, 1)])
        .await
        .expect_err("a 403 fails the publish");
    let message = err.to_string();
    assert!(
        message.contains("applying FlowEdges trustmap-system/worker-1-0"),
        "{message}"
    );
}

#[tokio::test]
async fn garbage_collection_deletes_only_the_objects_of_nodes_that_are_gone() {
    let stub = Stub::start().await;
    stub.script(
        "GET",
        FLOWEDGES,
        false,
        Reply::Json(
            200,
            list(
                "FlowEdges",
                "7",
                vec![
                    flowedges("known-0", "known", "known"),
                    flowedges("new-0", "new", "new"),
                    flowedges("gone-0", "gone", "gone"),
                    flowedges("gone-1", "gone", "gone"),
                ],
            ),
        ),
    );
    // "new" is missing from the inventory's (stale) node list but exists; "gone" does not.
    stub.script(
        "GET",
        "/api/v1/nodes/new",
        false,
        Reply::Json(
            200,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "new"}}),
        ),
    );
    let known = BTreeSet::from(["known".to_owned()]);
    let deleted = collect_garbage(stub.client(), NS, &known)
        .await
        .expect("garbage collection");
    assert_eq!(deleted, ["gone-0", "gone-1"]);
    let lookups: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/v1/nodes/"))
        .map(|r| r.path)
        .collect();
    assert_eq!(lookups, ["/api/v1/nodes/gone", "/api/v1/nodes/new"]);
    let deletes: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        deletes,
        [format!("{FLOWEDGES}/gone-0"), format!("{FLOWEDGES}/gone-1")]
    );
}

#[tokio::test]
async fn garbage_collection_deletes_nothing_when_the_node_lookup_fails() {
    let stub = Stub::start().await;
    stub.script(
        "GET",
        FLOWEDGES,
        false,
        Reply::Json(
            200,
            list("FlowEdges", "7", vec![flowedges("x-0", "x", "x")]),
        ),
    );
    stub.script(
        "GET",
        "/api/v1/nodes/x",
        false,
        // Not a 503: kube's client would retry that and get the stub's default 404.
        Reply::Json(500, status(500, "InternalError")),
    );
    let result = collect_garbage(stub.client(), NS, &BTreeSet::new()).await;
    assert!(result.is_err());
    assert!(!stub.requests().iter().any(|r| r.method == "DELETE"));
}

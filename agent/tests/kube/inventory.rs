//! `KubeInventory` against the stub: initial lists, watch events, watch restarts, 410 Gone,
//! API errors and backoff.

use std::time::Duration;

use serde_json::{Value, json};
use trustmap::kube::{KubeInventory, PodScope};

use crate::stub::{Reply, Stub, event, gone, list, status, wait};

pub const PODS: &str = "/api/v1/pods";
pub const NAMESPACES: &str = "/api/v1/namespaces";
const NODES: &str = "/api/v1/nodes";
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const POLICIES: &str = "/apis/networking.k8s.io/v1/networkpolicies";

pub fn pod(name: &str, ip: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": rv,
            "labels": {"app": name},
            "managedFields": [{"manager": "kubelet", "operation": "Update"}],
            "annotations": {"big": "x".repeat(1000)}},
        "spec": {"nodeName": "worker-1", "containers": [{"name": "c", "image": "img",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

fn policy(name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "3"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]},
    })
}

/// Scripts a first list of every kind: two pods, a namespace, a node, a service, a slice and a
/// policy.
pub fn script_cluster(stub: &Stub) {
    let ok = |kind: &str, items: Vec<Value>| Reply::Json(200, list(kind, "10", items));
    stub.script(
        "GET",
        PODS,
        false,
        ok(
            "Pod",
            vec![pod("web", "10.0.0.1", "5"), pod("db", "10.0.0.2", "6")],
        ),
    );
    stub.script(
        "GET",
        NAMESPACES,
        false,
        ok(
            "Namespace",
            vec![json!({"metadata": {"name": "shop", "labels": {"team": "a"}}})],
        ),
    );
    stub.script(
        "GET",
        NODES,
        false,
        ok(
            "Node",
            vec![json!({"metadata": {"name": "worker-1"}, "status": {
                "addresses": [{"type": "InternalIP", "address": "192.168.0.1"}],
                "images": [{"names": ["a"], "sizeBytes": 1}]}})],
        ),
    );
    stub.script(
        "GET",
        SERVICES,
        false,
        ok(
            "Service",
            vec![
                json!({"metadata": {"name": "db", "namespace": "shop"}, "spec": {
                "selector": {"app": "db"}, "clusterIP": "10.96.0.10",
                "ports": [{"port": 5432}]}}),
            ],
        ),
    );
    stub.script(
        "GET",
        SLICES,
        false,
        ok(
            "EndpointSlice",
            vec![json!({"metadata": {"name": "db-abc", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.2"]}],
                "ports": [{"port": 5432}]})],
        ),
    );
    stub.script(
        "GET",
        POLICIES,
        false,
        ok("NetworkPolicy", vec![policy("db-in")]),
    );
}

async fn synced(inv: &KubeInventory) {
    tokio::time::timeout(Duration::from_secs(20), inv.wait_synced())
        .await
        .expect("the inventory syncs within 20 s");
}

fn pod_names(inv: &KubeInventory) -> Vec<String> {
    let loaded = inv.snapshot();
    loaded
        .inventory
        .pods()
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

#[tokio::test]
async fn initial_lists_make_it_synced_and_fill_the_snapshot() {
    let stub = Stub::start().await;
    script_cluster(&stub);
    let inv = KubeInventory::start(stub.client(), PodScope::Cluster);
    synced(&inv).await;
    assert!(inv.synced());
    let loaded = inv.snapshot();
    assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);
    let inventory = &loaded.inventory;
    assert_eq!(pod_names(&inv), ["db", "web"]);
    let web = inventory
        .pod_by_ip("10.0.0.1".parse().expect("ip"))
        .expect("web by IP");
    assert_eq!(inventory.pod(web).name, "web");
    assert_eq!(inventory.nodes()[0].name, "worker-1");
    assert_eq!(inventory.services().len(), 1);
    assert_eq!(inventory.endpoint_slices().len(), 1);
    let shop = inventory.namespace_id("shop").expect("namespace");
    assert_eq!(inventory.namespace(shop).labels["team"], "a");
    assert_eq!(loaded.policies.len(), 1);
    assert_eq!(loaded.policies[0].name, "db-in");
    assert_eq!(inv.node_names(), ["worker-1"]);

    // The stores hold trimmed objects.
    let objects = inv.objects();
    let stored = &objects.pods[0];
    assert!(stored.metadata.managed_fields.is_none());
    assert!(stored.metadata.annotations.is_none());
    assert!(
        objects.nodes[0]
            .status
            .as_ref()
            .expect("status")
            .images
            .is_none()
    );

    // Each kind was listed once, then watched from the list's resourceVersion.
    for path in [PODS, NAMESPACES, NODES, SERVICES, SLICES, POLICIES] {
        stub.wait_requests("a watch of every kind", |r| {
            r.iter().any(|r| r.path == path && r.is_watch())
        })
        .await;
        let reqs = stub.requests_to(path);
        assert_eq!(reqs.iter().filter(|r| r.is_list()).count(), 1, "{path}");
        let watch = reqs.iter().find(|r| r.is_watch()).expect("watch");
        assert_eq!(watch.query["resourceVersion"], "10", "{path}");
    }
    assert!(inv.status().iter().all(|s| s.lists == 1 && s.errors == 0));
}

#[tokio::test]
async fn watch_events_update_the_store() {
    let stub = Stub::start().await;
    script_cluster(&stub);
    let inv = KubeInventory::start(stub.client(), PodScope::Cluster);
    synced(&inv).await;
    stub.wait_watch(PODS).await;

    stub.push(PODS, event("ADDED", pod("cache", "10.0.0.3", "11")));
    wait("the added pod", || {
        pod_names(&inv).contains(&"cache".to_owned())
    })
    .await;

    let mut moved = pod("cache", "10.0.0.4", "12");
    moved["metadata"]["labels"]["app"] = json!("redis");
    stub.push(PODS, event("MODIFIED", moved));
    wait("the modified pod", || {
        let loaded = inv.snapshot();
        loaded
            .inventory
            .pod_by_ip("10.0.0.4".parse().expect("ip"))
            .is_some_and(|p| loaded.inventory.pod(p).labels["app"] == "redis")
    })
    .await;

    stub.push(PODS, event("DELETED", pod("web", "10.0.0.1", "13")));
    wait("the deleted pod gone", || {
        !pod_names(&inv).contains(&"web".to_owned())
    })
    .await;
    // A bookmark moves the resourceVersion without changing the store.
    stub.push(
        PODS,
        event(
            "BOOKMARK",
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "20"}}),
        ),
    );
    stub.wait_watch(POLICIES).await;
    stub.push(POLICIES, event("ADDED", policy("web-out")));
    wait("the added policy", || inv.snapshot().policies.len() == 2).await;
    assert_eq!(pod_names(&inv), ["cache", "db"]);
}

#[tokio::test]
async fn a_watch_that_ends_resumes_from_the_last_resource_version_without_listing() {
    let stub = Stub::start().await;
    script_cluster(&stub);
    stub.script(
        "GET",
        PODS,
        true,
        Reply::Watch {
            events: vec![event("ADDED", pod("cache", "10.0.0.3", "17"))],
            close: true,
        },
    );
    let inv = KubeInventory::start(stub.client(), PodScope::Cluster);
    synced(&inv).await;
    stub.wait_requests("a second pod watch", |r| {
        r.iter().filter(|r| r.path == PODS && r.is_watch()).count() >= 2
    })
    .await;
    let watches: Vec<_> = stub
        .requests_to(PODS)
        .into_iter()
        .filter(|r| r.is_watch())
        .collect();
    assert_eq!(watches[0].query["resourceVersion"], "10");
    assert_eq!(watches[1].query["resourceVersion"], "17");
    let lists = stub
        .requests_to(PODS)
        .iter()
        .filter(|r| r.is_list())
        .count();
    assert_eq!(lists, 1, "a watch restart must not relist");
    assert!(pod_names(&inv).contains(&"cache".to_owned()));
}

#[tokio::test]
async fn gone_makes_it_list_again_and_forget_objects_deleted_meanwhile() {
    let stub = Stub::start().await;
    script_cluster(&stub);
    // The relist: web was deleted and cache created while the watch was down.
    stub.script(
        "GET",
        PODS,
        false,
        Reply::Json(
            200,
            list(
                "Pod",
                "40",
                vec![pod("db", "10.0.0.2", "6"), pod("cache", "10.0.0.3", "30")],
            ),
        ),
    );
    let inv = KubeInventory::start(stub.client(), PodScope::Cluster);
    synced(&inv).await;
    stub.wait_watch(PODS).await;
    stub.push(PODS, gone());
    wait("the relist", || pod_names(&inv) == ["cache", "db"]).await;
    let reqs = stub.requests_to(PODS);
    assert_eq!(reqs.iter().filter(|r| r.is_list()).count(), 2);
    stub.wait_requests("a watch from the relist", |r| {
        r.iter()
            .any(|r| r.path == PODS && r.is_watch() && r.query["resourceVersion"] == "40")
    })
    .await;
    let pods = inv
        .status()
        .into_iter()
        .find(|s| s.kind == "Pod")
        .expect("pod status");
    assert_eq!(pods.lists, 2);
    assert_eq!(pods.errors, 1);
    assert!(pods.last_error.expect("the 410").contains("too old"));
    assert!(inv.synced(), "a relist keeps the inventory ready");
}

/// Two kinds of retry meet here: kube's client retries 429, 503 and 504 itself, quickly (from
/// 5 ms); other errors reach the watcher, which retries after the default backoff (at least
/// 0.8 s, reset by the next success). Meanwhile the inventory is not ready.
#[tokio::test]
async fn api_errors_are_retried_with_backoff_until_the_server_recovers() {
    let stub = Stub::start().await;
    let fail = |code, reason| Reply::Json(code, status(code, reason));
    stub.script("GET", PODS, false, fail(500, "InternalError"));
    stub.script("GET", PODS, false, fail(500, "InternalError"));
    stub.script("GET", PODS, false, fail(503, "ServiceUnavailable"));
    script_cluster(&stub);
    let inv = KubeInventory::start(stub.client(), PodScope::Cluster);
    stub.wait_requests("two failed pod lists", |r| {
        r.iter().filter(|r| r.path == PODS && r.is_list()).count() >= 2
    })
    .await;
    assert!(!inv.synced(), "not ready while pods cannot be listed");
    synced(&inv).await;
    assert_eq!(pod_names(&inv), ["db", "web"]);

    let lists: Vec<_> = stub
        .requests_to(PODS)
        .into_iter()
        .filter(|r| r.is_list())
        .collect();
    assert_eq!(lists.len(), 4);
    let gaps: Vec<_> = lists.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[0] >= Duration::from_millis(750),
        "watcher backoff: {gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(750),
        "watcher backoff: {gaps:?}"
    );
    assert!(
        gaps[2] < Duration::from_millis(750),
        "client retry of a 503: {gaps:?}"
    );
    let pods = inv
        .status()
        .into_iter()
        .find(|s| s.kind == "Pod")
        .expect("pod status");
    assert_eq!(pods.errors, 2, "the 503 never reached the watcher");
    assert!(pods.last_error.expect("error").contains("500"));
    assert!(inv.status().iter().all(|s| s.synced));
}

#[tokio::test]
async fn node_scope_lists_and_watches_pods_with_a_node_field_selector() {
    let stub = Stub::start().await;
    script_cluster(&stub);
    let inv = KubeInventory::start(stub.client(), PodScope::Node("worker-1".into()));
    synced(&inv).await;
    stub.wait_requests("a pod watch", |r| {
        r.iter().any(|r| r.path == PODS && r.is_watch())
    })
    .await;
    for r in stub.requests_to(PODS) {
        assert_eq!(r.query["fieldSelector"], "spec.nodeName=worker-1");
    }
    for r in stub.requests_to(NODES) {
        assert!(!r.query.contains_key("fieldSelector"));
    }
}

const CNPS: &str = "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies";
const ANPS: &str = "/apis/policy.networking.k8s.io/v1alpha1/adminnetworkpolicies";

/// The admin tiers' CRDs are optional: a 404 (not installed) still syncs, without errors in
/// the log's sense; an installed kind is listed, watched and read into the snapshot.
#[tokio::test]
async fn admin_policy_kinds_are_read_when_installed_and_skipped_when_not() {
    let stub = Stub::start().await;
    script_cluster(&stub);
    stub.script(
        "GET",
        ANPS,
        false,
        Reply::Json(404, status(404, "NotFound")),
    );
    let cnp = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "guard", "resourceVersion": "4"},
        "spec": {"tier": "Admin", "priority": 3, "subject": {"namespaces": {}},
            "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"team": "b"}}}]}]},
    });
    // Two lists: the probe that finds the kind installed, then the watch's own.
    for _ in 0..2 {
        stub.script(
            "GET",
            CNPS,
            false,
            Reply::Json(200, list("ClusterNetworkPolicy", "10", vec![cnp.clone()])),
        );
    }
    let inv = KubeInventory::start(stub.client(), PodScope::Cluster);
    tokio::time::timeout(Duration::from_secs(20), inv.wait_synced())
        .await
        .expect("synced although AdminNetworkPolicy is not installed");
    let loaded = inv.snapshot();
    let names: Vec<String> = loaded.admin.iter().map(|p| p.key()).collect();
    assert_eq!(names, ["ClusterNetworkPolicy/guard"]);
    let anp = inv
        .status()
        .into_iter()
        .find(|s| s.kind == "AdminNetworkPolicy")
        .expect("a watch of AdminNetworkPolicy");
    assert!(anp.synced, "{anp:?}");
}

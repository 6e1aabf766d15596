//! Export: fetching and merging every node's FlowEdges, through the library and the CLI.

use std::process::Command;

use serde_json::{Value, json};
use trustmap::kube::{EdgeRecord, fetch_edges, write_json_lines};

use crate::{
    publish::edge,
    stub::{Reply, Stub},
};

const FLOWEDGES: &str = "/apis/trustmap.dev/v1alpha1/namespaces/trustmap-system/flowedges";

fn shard(node: &str, edges: &[EdgeRecord]) -> Value {
    json!({
        "apiVersion": "trustmap.dev/v1alpha1", "kind": "FlowEdges",
        "metadata": {"name": format!("{node}-0"), "namespace": "trustmap-system"},
        "spec": {"node": node, "shard": 0, "shards": 1, "edgeCount": edges.len(), "edges": edges},
    })
}

fn page(items: Vec<Value>, cont: Option<&str>) -> Reply {
    let mut metadata = json!({"resourceVersion": "9"});
    if let Some(c) = cont {
        metadata["continue"] = json!(c);
    }
    Reply::Json(
        200,
        json!({"apiVersion": "trustmap.dev/v1alpha1", "kind": "FlowEdgesList",
            "metadata": metadata, "items": items}),
    )
}

/// Two nodes saw web → api; only one saw web → cache. Served in two pages.
fn script_two_nodes(stub: &Stub) {
    stub.script(
        "GET",
        FLOWEDGES,
        false,
        page(
            vec![shard(
                "n1",
                &[
                    edge("shop/web", "shop/api", 8080, 2),
                    edge("shop/web", "shop/cache", 6379, 1),
                ],
            )],
            Some("page-2"),
        ),
    );
    stub.script(
        "GET",
        FLOWEDGES,
        false,
        page(
            vec![shard("n2", &[edge("shop/web", "shop/api", 8080, 3)])],
            None,
        ),
    );
}

#[tokio::test]
async fn fetch_edges_reads_every_page_and_merges_the_nodes_edges() {
    let stub = Stub::start().await;
    script_two_nodes(&stub);
    let edges = fetch_edges(stub.client(), "trustmap-system")
        .await
        .expect("fetch");
    assert_eq!(
        edges,
        [
            edge("shop/web", "shop/api", 8080, 5),
            edge("shop/web", "shop/cache", 6379, 1)
        ]
    );
    let lists = stub.requests_to(FLOWEDGES);
    assert_eq!(lists.len(), 2);
    assert!(!lists[0].query.contains_key("continue"));
    assert_eq!(lists[1].query["continue"], "page-2");
    let mut out = Vec::new();
    write_json_lines(&edges, &mut out).expect("write");
    let text = String::from_utf8(out).expect("utf-8");
    assert_eq!(text.lines().count(), 2);
    assert!(text.starts_with(
        r#"{"src":"shop/web","dst":"shop/api","protocol":"TCP","port":8080,"count":5,"#
    ));
}

#[tokio::test]
async fn export_from_cluster_uses_the_given_kubeconfig() {
    let stub = Stub::start().await;
    script_two_nodes(&stub);
    let dir = std::env::temp_dir().join(format!("trustmap-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: stub\n\
             clusters: [{{name: stub, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: nobody, user: {{}}}}]\n\
             contexts: [{{name: stub, context: {{cluster: stub, user: nobody}}}}]\n",
            stub.url
        ),
    )
    .expect("write kubeconfig");
    let out = dir.join("edges.jsonl");
    let bin = env!("CARGO_BIN_EXE_trustmap");
    let mut cmd = Command::new(bin);
    cmd.args(["export", "--from-cluster", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("-o")
        .arg(&out)
        .env_remove("KUBECONFIG");
    let status = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run trustmap");
    assert!(
        status.status.success(),
        "trustmap export failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = std::fs::read_to_string(&out).expect("output file");
    let edges: Vec<EdgeRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("an edge per line"))
        .collect();
    assert_eq!(
        edges,
        [
            edge("shop/web", "shop/api", 8080, 5),
            edge("shop/web", "shop/cache", 6379, 1)
        ]
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn export_without_a_source_says_what_to_pass() {
    let out = Command::new(env!("CARGO_BIN_EXE_trustmap"))
        .arg("export")
        .output()
        .expect("run trustmap");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--from-cluster"), "{stderr}");
}

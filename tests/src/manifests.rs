//! Manifests that describe the netns cluster to trustmap, since no API server runs here. Built
//! as JSON documents (valid YAML), so that no indentation can go wrong.

use serde_json::{Value, json};

use crate::Pod;

/// A container port: number, optional name, protocol.
pub type Port<'a> = (u16, Option<&'a str>, &'a str);

/// How a pod is described beyond what the cluster knows (name, labels, addresses, node).
#[derive(Default)]
pub struct PodOptions<'a> {
    /// The pod's owner: kind and name. A ReplicaSet owner adds a `pod-template-hash` label.
    pub owner: Option<(&'a str, &'a str)>,
    pub ports: &'a [Port<'a>],
}

fn ports_json(ports: &[Port<'_>]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|(p, name, proto)| {
                let mut v = json!({"containerPort": p, "protocol": proto});
                if let Some(n) = name {
                    v["name"] = json!(n);
                }
                v
            })
            .collect(),
    )
}

fn doc(v: &Value) -> String {
    format!("---\n{v}\n")
}

/// A running Pod with the netns pod's name, labels, node and both addresses.
pub fn pod(p: &Pod, namespace: &str, o: &PodOptions<'_>) -> String {
    let mut labels: serde_json::Map<String, Value> = p
        .spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut meta = json!({"name": p.spec.name, "namespace": namespace});
    if let Some((kind, name)) = o.owner {
        if kind == "ReplicaSet" {
            let hash = name.rsplit('-').next().unwrap_or(name);
            labels.insert("pod-template-hash".into(), json!(hash));
        }
        let api = if kind == "Job" { "batch/v1" } else { "apps/v1" };
        meta["ownerReferences"] = json!([{
            "apiVersion": api, "kind": kind, "name": name,
            "uid": "00000000-0000-0000-0000-000000000001", "controller": true
        }]);
    }
    meta["labels"] = Value::Object(labels);
    doc(&json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeName": format!("node{}", p.spec.node),
            "containers": [{"name": "main", "image": "example", "ports": ports_json(o.ports)}]
        },
        "status": {
            "phase": "Running",
            "podIP": p.ipv4.to_string(),
            "podIPs": [{"ip": p.ipv4.to_string()}, {"ip": p.ipv6.to_string()}]
        }
    }))
}

/// A Deployment whose selector and template labels are `labels`.
pub fn deployment(
    name: &str,
    namespace: &str,
    labels: &[(&str, &str)],
    ports: &[Port<'_>],
) -> String {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    doc(&json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "example", "ports": ports_json(ports)}]}
            }
        }
    }))
}

/// A Namespace with annotations.
pub fn namespace(name: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    doc(&json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "annotations": annotations}
    }))
}

//! Loader and builder tests: objects are applied as manifests text, never read from a cluster.

use std::path::Path;

use super::{InventoryError, Loaded, Manifests, NAMESPACE_NAME_LABEL, Resolved};
use crate::flow::Endpoint;

fn load(file: &str, text: &str) -> Result<Loaded, InventoryError> {
    let mut m = Manifests::new();
    m.add_text(Path::new(file), text)?;
    Ok(m.finish())
}

fn err(file: &str, text: &str) -> String {
    load(file, text).expect_err("should fail").to_string()
}

fn ep(s: &str) -> Endpoint {
    s.parse().unwrap()
}

#[test]
fn reads_multi_document_yaml_lists_and_typed_lists() {
    let text = r#"
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Namespace, metadata: {name: shop, labels: {tier: prod}}}
  - {apiVersion: v1, kind: Pod, metadata: {name: p1, namespace: shop}, status: {podIP: 10.1.0.1}}
---
apiVersion: v1
kind: PodList
items:
  - {metadata: {name: p2}, status: {podIP: 10.1.0.2}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
"#;
    let l = load("all.yaml", text).unwrap();
    let inv = &l.inventory;
    assert!(matches!(
        inv.resolve(&ep("10.1.0.1")).unwrap(),
        Resolved::Pod { .. }
    ));
    assert_eq!(
        inv.resolve(&ep("default/p2")).unwrap().ip(),
        Some("10.1.0.2".parse().unwrap())
    );
    let shop = inv.namespace(inv.namespace_id("shop").unwrap());
    assert_eq!(shop.labels.get("tier").map(String::as_str), Some("prod"));
    assert_eq!(
        shop.labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
        Some("shop")
    );
    assert_eq!(l.notes.len(), 1, "{:?}", l.notes);
    assert!(l.notes[0].contains("all.yaml: document 3") && l.notes[0].contains("ConfigMap"));
}

#[test]
fn reads_json_documents() {
    let text = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"status":{"podIP":"fd00::1"}}]}"#;
    let l = load("pods.json", text).unwrap();
    assert!(l.inventory.pod_by_ip("fd00::1".parse().unwrap()).is_some());
}

#[test]
fn errors_name_file_document_item_and_field() {
    let bad_cidr = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/99}}]}]\n";
    let msg = err("np.yaml", bad_cidr);
    for want in [
        "np.yaml: document 2",
        "NetworkPolicy p",
        "spec.ingress[0].from[0].ipBlock.cidr",
        "10.0.0.0/99",
    ] {
        assert!(msg.contains(want), "{want} not in {msg}");
    }
    let bad_type = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: a}}\n- {apiVersion: v1, kind: Pod, metadata: {name: b}, spec: {containers: [{name: c, ports: [{containerPort: x}]}]}}\n";
    let msg = err("l.yaml", bad_type);
    for want in [
        "l.yaml: document 1, item 2",
        "Pod b",
        "spec.containers[0].ports[0].containerPort",
    ] {
        assert!(msg.contains(want), "{want} not in {msg}");
    }
    let bad_port = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, ports: [{containerPort: 70000}]}]}\n";
    let msg = err("p.yaml", bad_port);
    assert!(
        msg.contains("spec.containers[0].ports[0].containerPort") && msg.contains("out of range"),
        "{msg}"
    );
    let msg = err("s.yaml", "a: [\n");
    assert!(msg.contains("s.yaml: document 1"), "{msg}");
}

#[test]
fn deployment_pods_resolve_to_the_deployment_through_pod_template_hash() {
    let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec: {selector: {}, template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c}]}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-5d8f9-abcde
  namespace: shop
  labels: {app: web, pod-template-hash: 5d8f9}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f9, uid: u, controller: true}]
status: {podIP: 10.1.0.5}
"#;
    let l = load("d.yaml", text).unwrap();
    let inv = &l.inventory;
    assert_eq!(inv.workloads().len(), 1);
    let w = inv.workload_by_ref("shop", "deployment", "web").unwrap();
    assert_eq!(inv.workload(w).pods.len(), 1);
    assert!(inv.workload(w).template.is_some());
    // A workload reference stands for the template pod.
    let r = inv.resolve(&ep("shop/Deployment/web")).unwrap();
    assert_eq!(r.ip(), None);
}

#[test]
fn replica_sets_and_jobs_owned_by_given_workloads_fold_into_them() {
    let text = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: report}
spec: {schedule: "* * * * *", jobTemplate: {spec: {template: {metadata: {labels: {app: r}}, spec: {containers: [{name: c}]}}}}}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: report-28000000
  ownerReferences: [{apiVersion: batch/v1, kind: CronJob, name: report, uid: u, controller: true}]
spec: {template: {metadata: {labels: {app: r}}, spec: {containers: [{name: c}]}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: report-28000000-xyz
  labels: {app: r}
  ownerReferences: [{apiVersion: batch/v1, kind: Job, name: report-28000000, uid: u, controller: true}]
"#;
    let l = load("c.yaml", text).unwrap();
    let inv = &l.inventory;
    assert_eq!(inv.workloads().len(), 1, "{:?}", inv.workloads());
    assert_eq!(inv.workloads()[0].kind, "CronJob");
    assert_eq!(inv.workloads()[0].pods.len(), 1);
}

#[test]
fn host_network_pods_and_host_ips_are_node_addresses() {
    let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: agent}
spec: {nodeName: n1, hostNetwork: true, containers: [{name: c}]}
status: {podIP: 192.168.1.1, hostIP: 192.168.1.1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 192.168.1.2}, {type: Hostname, address: n2}]}
"#;
    let l = load("n.yaml", text).unwrap();
    let inv = &l.inventory;
    assert!(inv.pod_by_ip("192.168.1.1".parse().unwrap()).is_none());
    for ip in ["192.168.1.1", "192.168.1.2"] {
        assert!(
            matches!(
                inv.resolve(&ep(ip)).unwrap(),
                Resolved::Host { node: Some(_), .. }
            ),
            "{ip}"
        );
    }
    assert!(matches!(
        inv.resolve(&ep("default/agent")).unwrap(),
        Resolved::Host { pod: Some(_), .. }
    ));
}

#[test]
fn finished_pods_keep_no_ip_and_unknown_references_are_errors() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: done}\nstatus: {phase: Succeeded, podIP: 10.1.0.9}\n";
    let l = load("f.yaml", text).unwrap();
    assert!(matches!(
        l.inventory.resolve(&ep("10.1.0.9")).unwrap(),
        Resolved::External(_)
    ));
    let e = l.inventory.resolve(&ep("default/nope")).unwrap_err();
    assert!(e.to_string().contains("unknown pod"), "{e}");
}

#[test]
fn a_later_policy_with_the_same_name_replaces_the_earlier() {
    let p = |t: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p}}\nspec: {{podSelector: {{}}, policyTypes: [{t}]}}\n"
        )
    };
    let l = load("p.yaml", &(p("Ingress") + &p("Egress"))).unwrap();
    assert_eq!(l.policies.len(), 1);
    assert!(l.policies[0].ingress.is_none());
    assert!(l.notes.iter().any(|n| n.contains("replaces")));
}

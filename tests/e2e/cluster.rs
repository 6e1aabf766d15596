//! The DaemonSet's whole path against a real control plane (etcd, kube-apiserver and
//! kube-controller-manager built from upstream source), with the test kubelet running pods as
//! network namespaces on three netns nodes.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use trustmap_e2e::{
    TcpServer, in_netns,
    k8s::ops::{
        NODES, deploy, deploy_after, json, reconfigure, repo, start_shop, trustmap_bin, wait,
        wait_agents_ready,
    },
    k8s::{ControlPlane, Kubelet, app, http_get, node::node_ipv4},
    require_root, tcp_connect,
};

const AGENT_USER: &str = "system:serviceaccount:trustmap-system:trustmap-agent";

/// Every node's published edges: node name → set of "src -> dst PROTO/port".
fn flowedges(cp: &ControlPlane) -> BTreeMap<String, BTreeSet<String>> {
    let list = json(cp, &["get", "flowedges", "-A"]);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let node = item["spec"]["node"].as_str().unwrap_or_default().to_owned();
        let set = out.entry(node).or_default();
        for e in item["spec"]["edges"].as_array().into_iter().flatten() {
            set.insert(edge_string(e));
        }
    }
    out
}

fn edge_string(e: &Value) -> String {
    format!(
        "{} -> {} {}/{}",
        e["src"].as_str().unwrap_or("?"),
        e["dst"].as_str().unwrap_or("?"),
        e["protocol"].as_str().unwrap_or("?"),
        e["port"].as_u64().map_or("-".into(), |p| p.to_string())
    )
}

/// The agent's metric `name` on node `i`, read from its /metrics on the node's address.
fn metric(kubelet: &Kubelet, i: u8, name: &str) -> f64 {
    let (code, body) = http_get(&kubelet.node_ns(i), node_ipv4(i), 9090, "/metrics")
        .unwrap_or_else(|| panic!("no /metrics answer from node-{i}"));
    assert_eq!(code, 200);
    body.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

fn metric_sum(kubelet: &Kubelet, name: &str) -> f64 {
    (1..=NODES).map(|i| metric(kubelet, i, name)).sum()
}

/// Events with `reason` on pods of `namespace`: (pod, message).
fn events(cp: &ControlPlane, namespace: &str, reason: &str) -> Vec<(String, String)> {
    let list = json(cp, &["get", "events", "-n", namespace]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == reason && e["involvedObject"]["kind"] == "Pod")
        .map(|e| {
            (
                e["involvedObject"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A webhook receiver on a simulated external host: counts the POSTs and keeps their bodies.
struct Receiver {
    bodies: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(netns: &str, addr: SocketAddr) -> Self {
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bodies.clone(), stop.clone());
        let listener = in_netns(netns, move || TcpListener::bind(addr)).expect("receiver bind");
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let started = Instant::now();
            while !s.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(1800) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                while let Ok(n) = conn.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())
                                    .flatten()
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            b.lock().expect("lock").push(body.to_owned());
                            break;
                        }
                    }
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        Self { bodies, stop }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The audit log's 403s for the agents' service account.
fn agent_403s(cp: &ControlPlane) -> Vec<String> {
    cp.audit_events_with_code(403)
        .into_iter()
        .filter(|e| {
            e["user"]["username"]
                .as_str()
                .is_some_and(|u| u.starts_with("system:serviceaccount:trustmap-system:"))
        })
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect()
}

/// `trustmap ARGS --from-cluster` with the admin's kubeconfig, which must succeed: its stdout
/// and stderr.
fn from_cluster(cp: &ControlPlane, args: &[&str]) -> (String, String) {
    let kc = cp.admin_kubeconfig.display().to_string();
    let mut a = args.to_vec();
    a.extend(["--from-cluster", "--kubeconfig", &kc]);
    let (ok, out, err) = trustmap_e2e::run_trustmap(&a);
    assert!(ok, "trustmap {args:?} --from-cluster failed: {err}");
    (out, err)
}

/// `kubectl trustmap lint` through the real kubectl, which finds `kubectl-trustmap` on PATH
/// and passes the flags after the plugin name through: `--kubeconfig`, `--context` and `-n`
/// reach trustmap, which reads the live cluster without `--from-cluster`. `-n shop` keeps
/// exactly the findings of `trustmap lint --from-cluster` about the shop namespace.
fn kubectl_plugin_lints_one_namespace(cp: &ControlPlane, all: &Value) {
    let dir = cp.dir.join("plugin-bin");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    let link = dir.join("kubectl-trustmap");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(trustmap_bin(), &link).expect("kubectl-trustmap link");
    let completer = dir.join("kubectl_complete-trustmap");
    let _ = std::fs::remove_file(&completer);
    std::os::unix::fs::symlink(trustmap_bin(), &completer).expect("completer link");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        std::process::Command::new(cp.kubectl_path())
            .arg("trustmap")
            .args(args)
            .env("PATH", &path)
            .env("RUST_LOG", "warn")
            .env_remove("KUBECONFIG")
            .output()
            .expect("running kubectl trustmap")
    };
    let kc = cp.admin_kubeconfig.display().to_string();
    let out = kubectl(&[
        "lint",
        "--kubeconfig",
        &kc,
        "--context",
        "admin@trustmap-test",
        "-n",
        "shop",
        "-o",
        "json",
        "--fail-on",
        "never",
    ]);
    assert!(
        out.status.success(),
        "kubectl trustmap lint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scoped: Value = serde_json::from_slice(&out.stdout).expect("plugin lint JSON");
    let key = |f: &Value| f.to_string();
    // The namespace a finding is about, from its object (`namespace shop`, `Service shop/api`,
    // `shop/Deployment/api`) or else its policy (`shop/name`).
    let in_shop = |f: &&Value| match f["object"].as_str() {
        Some(o) => {
            o == "namespace shop" || o.starts_with("Service shop/") || o.starts_with("shop/")
        }
        None => f["policy"].as_str().is_some_and(|p| p.starts_with("shop/")),
    };
    let want: BTreeSet<_> = all
        .as_array()
        .expect("findings")
        .iter()
        .filter(in_shop)
        .map(key)
        .collect();
    let got: BTreeSet<_> = scoped
        .as_array()
        .expect("findings")
        .iter()
        .map(key)
        .collect();
    assert!(!want.is_empty(), "the shop has findings: {all}");
    assert_eq!(got, want, "kubectl trustmap lint -n shop");
    // kubectl's own completion of the plugin's arguments, through kubectl_complete-trustmap.
    let complete = std::process::Command::new(cp.kubectl_path())
        .args(["__complete", "trustmap", "lint", "--cont"])
        .env("PATH", &path)
        .output()
        .expect("running kubectl __complete");
    let text = String::from_utf8_lossy(&complete.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("--context")) && text.contains(":4"),
        "kubectl __complete trustmap lint --cont: {text}"
    );
    // kubectl's usage, and a context the kubeconfig does not have: a clear error, exit 2.
    let help = kubectl(&["lint", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: kubectl trustmap lint"));
    let bad = kubectl(&["lint", "--kubeconfig", &kc, "--context", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nope"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn cluster_users_path_against_a_real_control_plane() {
    let d = deploy();
    let (cp, kubelet) = (&d.cp, &d.kubelet);
    // The agent pods: one per node, from the DaemonSet controller, bound by node affinity.
    for i in 1..=NODES {
        let p = kubelet
            .agent_pod(i)
            .unwrap_or_else(|| panic!("no agent on node-{i}"));
        assert!(p.host_network);
    }

    // A user configures a short publish interval and a webhook, then restarts the agents.
    let webhook_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 11)), 8088);
    let receiver = Receiver::start(&kubelet.fabric.externals_ns(), webhook_addr);
    reconfigure(
        cp,
        kubelet,
        &format!("webhook: http://{webhook_addr}/alerts\n"),
    );

    // The app, from the real controllers.
    let app_file = cp.dir.join("shop.yaml");
    std::fs::write(&app_file, app::MANIFEST).expect("app manifest");
    cp.kubectl_run(&["apply", "-f", &app_file.display().to_string()]);
    let shop = start_shop(cp, kubelet);
    shop.traffic();

    // Each node's edges, published by server-side apply under the agent's field manager.
    let expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        (
            "node-1",
            [
                "shop/Deployment/frontend -> cluster-dns UDP/53",
                "shop/Deployment/frontend -> shop/Deployment/api TCP/8080",
                "shop/Deployment/api -> shop/StatefulSet/db TCP/5432",
            ]
            .map(String::from)
            .into(),
        ),
        (
            "node-2",
            [
                "shop/Deployment/frontend -> shop/Deployment/api TCP/8080",
                "shop/Deployment/api -> cluster-dns UDP/53",
                "shop/Deployment/api -> shop/StatefulSet/db TCP/5432",
                "shop/Deployment/api -> 203.0.113.10 TCP/443",
            ]
            .map(String::from)
            .into(),
        ),
    ]);
    let published = wait("every node's FlowEdges", Duration::from_secs(60), || {
        let got = flowedges(cp);
        expected
            .iter()
            .all(|(n, e)| got.get(*n).is_some_and(|g| e.is_subset(g)))
            .then_some(got)
    });
    for (node, edges) in &expected {
        assert_eq!(&published[*node], edges, "edges of {node}");
    }
    let fe = json(cp, &["get", "flowedges", "-A", "--show-managed-fields"]);
    for item in fe["items"].as_array().expect("items") {
        let managers: Vec<&str> = item["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert_eq!(
            managers,
            ["trustmap-agent"],
            "field managers of {}",
            item["metadata"]["name"]
        );
        // Nothing pruned: every edge has every field the agent writes.
        for e in item["spec"]["edges"].as_array().expect("edges") {
            for f in ["src", "dst", "protocol", "count", "firstSeen", "lastSeen"] {
                assert!(!e[f].is_null(), "field {f} pruned from {e}");
            }
        }
        assert!(item["spec"]["edgeCount"].as_u64().is_some());
    }

    // Would-deny: the api's queries to the db, as Events on the api pod and in /metrics.
    let flagged = wait(
        "a WouldDeny Event on the api pod",
        Duration::from_secs(30),
        || {
            let ev = events(cp, "shop", "WouldDeny");
            ev.iter()
                .any(|(pod, _)| *pod == shop.api.name)
                .then_some(ev)
        },
    );
    assert!(
        flagged
            .iter()
            .any(|(_, m)| m.contains("shop/db-from-frontend")),
        "the Event names the policy: {flagged:?}"
    );
    assert!(metric(kubelet, 2, "trustmap_would_deny_flows_total") >= 1.0);

    // Export with a kubeconfig, validate with the API server, apply.
    let policies = cp.dir.join("learned");
    let out = std::process::Command::new(trustmap_bin())
        .args(["export", "--from-cluster", "--kubeconfig"])
        .arg(&cp.admin_kubeconfig)
        .arg("--policies")
        .arg(&policies)
        .output()
        .expect("export");
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(&policies)
        .expect("policies dir")
        .collect();
    assert!(files.len() >= 3, "learned policies: {files:?}");
    let dry = cp.kubectl_run(&[
        "apply",
        "--dry-run=server",
        "-k",
        &policies.display().to_string(),
    ]);
    let accepted = dry
        .lines()
        .filter(|l| l.contains("(server dry run)"))
        .count();
    assert!(accepted >= 3, "server dry run:\n{dry}");
    cp.kubectl_run(&["apply", "-k", &policies.display().to_string()]);
    let denied_before = metric_sum(kubelet, "trustmap_would_deny_flows_total");
    // The api's query to the db is now allowed; the db never opened a connection to the api.
    std::thread::sleep(Duration::from_secs(8));
    tcp_connect(
        &shop.api.netns,
        SocketAddr::new(IpAddr::V4(shop.db.ipv4()), 5432),
    );
    tcp_connect(
        &shop.db.netns,
        SocketAddr::new(IpAddr::V4(shop.api.ipv4()), 8080),
    );
    let probe = wait(
        "a WouldDeny Event for the db's probe",
        Duration::from_secs(30),
        || {
            events(cp, "shop", "WouldDeny")
                .into_iter()
                .find(|(pod, _)| *pod == shop.db.name)
        },
    );
    assert!(probe.1.contains("8080"), "{probe:?}");
    let denied_after = metric_sum(kubelet, "trustmap_would_deny_flows_total");

    // The offline commands read the live cluster: the policies just applied decide.
    let live = |args: &[&str]| from_cluster(cp, args).0;
    let verdict = |from: &str, to: &str, port: &str| -> String {
        let out = live(&[
            "explain", "--from", from, "--to", to, "--port", port, "-o", "json",
        ]);
        let v: Value = serde_json::from_str(&out).expect("explain JSON");
        v["verdict"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(
        verdict(
            "shop/Deployment/frontend",
            "shop/Deployment/api",
            "8080/TCP"
        ),
        "allow"
    );
    assert_eq!(
        verdict("shop/StatefulSet/db", "shop/Deployment/api", "8080/TCP"),
        "deny"
    );
    let matrix: Value = serde_json::from_str(&live(&["matrix", "-o", "json"])).expect("matrix");
    assert!(
        matrix["allowed"]
            .as_array()
            .expect("allowed")
            .iter()
            .any(|c| {
                c["src"] == "shop/Deployment/frontend" && c["dst"] == "shop/Deployment/api"
            }),
        "the live matrix allows the frontend to the api: {matrix}"
    );
    let lint: Value =
        serde_json::from_str(&live(&["lint", "-o", "json", "--fail-on", "never"])).expect("lint");
    let located = lint.to_string();
    assert!(
        located.contains("live-cluster.yaml"),
        "lint locates findings in the live objects: {lint}"
    );
    assert_eq!(
        denied_after - denied_before,
        1.0,
        "only the db's probe is flagged once the learned policies are applied"
    );
    kubectl_plugin_lints_one_namespace(cp, &lint);

    // Alert mode: an unexpected flow gives an Event, a webhook call and the metric.
    cp.kubectl_run(&["annotate", "namespace", "shop", "trustmap.dev/mode=alert"]);
    std::thread::sleep(Duration::from_secs(8));
    let side = TcpServer::start(
        &shop.api.netns,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9999),
    );
    tcp_connect(
        &shop.frontend.netns,
        SocketAddr::new(IpAddr::V4(shop.api.ipv4()), 9999),
    );
    wait("an UnexpectedFlow Event", Duration::from_secs(30), || {
        events(cp, "shop", "UnexpectedFlow")
            .into_iter()
            .find(|(_, m)| m.contains("9999"))
    });
    wait("the webhook call", Duration::from_secs(30), || {
        receiver
            .bodies()
            .into_iter()
            .find(|b| b.contains("unexpected_flow") && b.contains("9999"))
    });
    assert!(metric_sum(kubelet, "trustmap_unexpected_flows_total") >= 1.0);
    cp.kubectl_run(&[
        "annotate",
        "namespace",
        "shop",
        "trustmap.dev/mode=observe",
        "--overwrite",
    ]);
    std::thread::sleep(Duration::from_secs(8));
    let calls = receiver.bodies().len();
    let unexpected = metric_sum(kubelet, "trustmap_unexpected_flows_total");
    let side2 = TcpServer::start(
        &shop.api.netns,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9998),
    );
    tcp_connect(
        &shop.frontend.netns,
        SocketAddr::new(IpAddr::V4(shop.api.ipv4()), 9998),
    );
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        metric_sum(kubelet, "trustmap_unexpected_flows_total"),
        unexpected
    );
    assert!(
        !receiver.bodies()[calls..]
            .iter()
            .any(|b| b.contains("unexpected_flow")),
        "no unexpected-flow alert in observe mode"
    );
    drop((side, side2));

    // Pods deleted and recreated: the identity follows the new pod and its IP.
    cp.kubectl_run(&["delete", "pod", "-n", "shop", &shop.api.name, "--wait=true"]);
    let new_api = wait("a new api pod", Duration::from_secs(60), || {
        kubelet
            .pods_named("shop", "api-")
            .into_iter()
            .find(|p| p.uid != shop.api.uid)
    });
    tcp_connect(
        &new_api.netns,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), 443),
    );
    wait(
        "the new api pod's edge, named by its workload",
        Duration::from_secs(30),
        || {
            flowedges(cp)
                .get("node-2")
                .filter(|e| e.contains("shop/Deployment/api -> 203.0.113.10 TCP/443"))
                .map(|_| ())
        },
    );
    let events_total = json(cp, &["get", "events", "-n", "shop"])["items"]
        .as_array()
        .map_or(0, Vec::len);

    // RBAC: not one 403 for the agents, in the audit log or in their logs.
    let forbidden = agent_403s(cp);
    assert!(forbidden.is_empty(), "the agents met 403s: {forbidden:?}");
    let logs = kubelet.agent_logs();
    // Timestamps may contain "403": look for what a 403 looks like in an error.
    assert!(
        !logs.contains("Forbidden") && !logs.contains("forbidden") && !logs.contains("code: 403"),
        "agent logs mention a 403"
    );
    eprintln!(
        "figures: objects applied {}, edges published {}, learned policies {}, server-accepted \
         {accepted}, Events {events_total}, webhook calls {}, agent 403s 0",
        d.applied,
        published.values().map(BTreeSet::len).sum::<usize>(),
        files.len(),
        receiver.bodies().len()
    );
}

/// The platform team's layers, as a cluster serving the network-policy-api kinds has them: a
/// ClusterNetworkPolicy (v1alpha2) that denies the payment provider, and a
/// BaselineAdminNetworkPolicy (v1alpha1) that denies what no NetworkPolicy allowed into the
/// shop. The agents watch them, the Events name the tier rule, the offline commands read them
/// from the cluster, and a CiliumNetworkPolicy too (the agents, which do not watch that kind
/// yet, warn about it).
const LAYERS: &str = r#"apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-payments}
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}
  egress:
    - name: payments
      action: Deny
      to:
        - networks: [203.0.113.0/24]
      protocols:
        - tcp: {destinationPort: {number: 443}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: dns-from-everywhere}
spec:
  tier: Admin
  priority: 20
  subject:
    pods:
      namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
  ingress:
    - name: everyone
      action: Accept
      from:
        - namespaces: {}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject:
    namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}
  ingress:
    - name: default-deny
      action: Deny
      from:
        - namespaces: {}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: frontend-out, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: frontend}}
  egress:
  - toEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#;

#[test]
fn cluster_admin_tiers_are_watched_flagged_and_read_from_a_real_control_plane() {
    let d = deploy_after(|cp| {
        let file = cp.dir.join("crds.yaml");
        std::fs::write(&file, trustmap_e2e::k8s::crds::manifest()).expect("CRDs");
        cp.kubectl_run(&["apply", "-f", &file.display().to_string()]);
        for name in trustmap_e2e::k8s::crds::names() {
            cp.wait_crd_established(&name, Duration::from_secs(60));
        }
    });
    let (cp, kubelet) = (&d.cp, &d.kubelet);
    let app_file = cp.dir.join("shop.yaml");
    std::fs::write(&app_file, app::MANIFEST).expect("app manifest");
    cp.kubectl_run(&["apply", "-f", &app_file.display().to_string()]);
    let layers = cp.dir.join("layers.yaml");
    std::fs::write(&layers, LAYERS).expect("layers");
    let applied = cp.kubectl_run(&["apply", "-f", &layers.display().to_string()]);
    assert_eq!(
        applied.lines().filter(|l| l.ends_with(" created")).count(),
        4,
        "{applied}"
    );
    let shop = start_shop(cp, kubelet);
    // The agents' watches deliver the policies within a second or two; give them five.
    std::thread::sleep(Duration::from_secs(5));
    shop.traffic();

    // Each denial is an Event on the source pod naming what decided it.
    let want = [
        (
            &shop.api.name,
            "shop/Deployment/api -> 203.0.113.10 TCP:443: the current policies would deny \
             (egress denied by ClusterNetworkPolicy/no-payments rule payments (admin tier, deny))",
        ),
        (
            &shop.frontend.name,
            "shop/Deployment/frontend -> shop/Deployment/api TCP:8080: the current policies \
             would deny (ingress denied by BaselineAdminNetworkPolicy/default rule default-deny \
             (baseline tier, deny))",
        ),
        (
            &shop.api.name,
            "shop/Deployment/api -> shop/StatefulSet/db TCP:5432: the current policies would \
             deny (ingress denied: isolated by shop/db-from-frontend)",
        ),
    ];
    let flagged = wait("three WouldDeny Events", Duration::from_secs(60), || {
        let ev = events(cp, "shop", "WouldDeny");
        want.iter()
            .all(|(pod, m)| ev.iter().any(|(p, e)| p == *pod && e.starts_with(m)))
            .then_some(ev)
    });
    assert_eq!(flagged.len(), 3, "exactly the three denials: {flagged:?}");

    // The offline commands read the layers from the cluster, and warn about what they ignore.
    let live = |args: &[&str]| from_cluster(cp, args);
    let explain = |from: &str, to: &str, port: &str| -> (Value, String) {
        let (out, err) = live(&[
            "explain", "--from", from, "--to", to, "--port", port, "-o", "json",
        ]);
        (serde_json::from_str(&out).expect("explain JSON"), err)
    };
    let (v, err) = explain("shop/Deployment/api", "203.0.113.10", "443/TCP");
    assert_eq!(v["verdict"], "deny", "{v}");
    assert_eq!(
        v["egress"]["tier_rule"],
        serde_json::json!({"tier": "admin", "policy": "ClusterNetworkPolicy/no-payments",
            "priority": 10, "rule": 0, "name": "payments", "action": "deny"})
    );
    assert!(
        err.contains("CiliumNetworkPolicy read from the live cluster policy=shop/frontend-out")
            && !err.contains("not evaluated"),
        "the CiliumNetworkPolicy is read, not warned about: {err}"
    );
    // The Baseline denies what no NetworkPolicy allowed into the shop; the admin Accept into
    // the DNS pods decides before anything else.
    for (from, to, port, verdict, side, policy) in [
        (
            "shop/Deployment/frontend",
            "shop/Deployment/api",
            "8080/TCP",
            "deny",
            "ingress",
            "BaselineAdminNetworkPolicy/default",
        ),
        (
            "shop/Deployment/api",
            "kube-system/Deployment/coredns",
            "53/UDP",
            "allow",
            "ingress",
            "ClusterNetworkPolicy/dns-from-everywhere",
        ),
    ] {
        let (v, _) = explain(from, to, port);
        assert_eq!(v["verdict"], verdict, "{v}");
        assert_eq!(v[side]["tier_rule"]["policy"], policy, "{v}");
    }
    // The live CiliumNetworkPolicy decides the frontend's egress: 8080 to the api, nothing else.
    let (v, _) = explain(
        "shop/Deployment/frontend",
        "shop/Deployment/api",
        "8080/TCP",
    );
    assert_eq!(
        v["egress"]["allowed_by"]["policy"], "shop/frontend-out",
        "{v}"
    );
    let (v, _) = explain(
        "shop/Deployment/frontend",
        "shop/Deployment/api",
        "9090/TCP",
    );
    assert_eq!(v["egress"]["decision"], "deny", "{v}");

    // lint reads the layers from the cluster and locates its findings in them: at the broad
    // peer, in the objects it saves.
    let saved = cp.dir.join("live.yaml");
    let saved_arg = saved.display().to_string();
    let (out, _) = live(&[
        "lint",
        "-o",
        "json",
        "--fail-on",
        "never",
        "--save-objects",
        &saved_arg,
    ]);
    let lint: Value = serde_json::from_str(&out).expect("lint JSON");
    let broad: Vec<&Value> = lint
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["rule"] == "TM061")
        .collect();
    assert_eq!(broad.len(), 1, "{lint}");
    assert!(
        broad[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ClusterNetworkPolicy/dns-from-everywhere")),
        "{lint}"
    );
    assert_eq!(broad[0]["location"]["file"], saved_arg.as_str(), "{lint}");
    let line = broad[0]["location"]["line"].as_u64().expect("a line") as usize;
    let text = std::fs::read_to_string(&saved).expect("the saved objects");
    assert_eq!(
        text.lines().nth(line - 1).map(str::trim),
        Some("- namespaces: {}"),
        "line {line} of:\n{text}"
    );

    // The agents met no 403 listing or watching the admin kinds.
    let forbidden = agent_403s(cp);
    assert!(forbidden.is_empty(), "the agents met 403s: {forbidden:?}");
    assert!(
        kubelet
            .agent_logs()
            .contains("cilium.io/v2 CiliumNetworkPolicy"),
        "the agents warn that the cluster serves a kind they do not evaluate"
    );
}

/// Every node's FlowEdges objects: name → (node, edge count).
fn flowedges_objects(cp: &ControlPlane) -> BTreeMap<String, (String, u64)> {
    json(cp, &["get", "flowedges", "-A"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            (
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                (
                    o["spec"]["node"].as_str().unwrap_or_default().to_owned(),
                    o["spec"]["edgeCount"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

#[test]
fn cluster_rbac_without_a_verb_is_reported_without_a_crash_loop() {
    let d = deploy();
    let (cp, kubelet) = (&d.cp, &d.kubelet);
    // Take `list` away from the NetworkPolicy rule, as a hand-edited ClusterRole might.
    let role = json(cp, &["get", "clusterrole", "trustmap-agent"]);
    let index = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .position(|r| r["resources"][0] == "networkpolicies")
        .expect("a networkpolicies rule");
    let patch =
        format!(r#"[{{"op":"replace","path":"/rules/{index}/verbs","value":["get","watch"]}}]"#);
    cp.kubectl_run(&[
        "patch",
        "clusterrole",
        "trustmap-agent",
        "--type=json",
        "-p",
        &patch,
    ]);
    cp.kubectl_run(&[
        "rollout",
        "restart",
        "daemonset",
        "-n",
        "trustmap-system",
        "trustmap-agent",
    ]);
    let line = wait(
        "the agents to report the missing verb",
        Duration::from_secs(90),
        || {
            let logs = kubelet.agent_logs();
            logs.lines()
            .find(|l| l.contains("forbidden: the agent's ServiceAccount may not list and watch NetworkPolicy"))
            .map(str::to_owned)
        },
    );
    assert!(line.contains("ClusterRole trustmap-agent"), "{line}");
    // No crash loop: the new agent keeps running, unready, and is never restarted; the rolling
    // update stops there, so the other nodes keep their working agents.
    std::thread::sleep(Duration::from_secs(20));
    for i in 1..=NODES {
        let p = kubelet
            .agent_pod(i)
            .unwrap_or_else(|| panic!("no agent on node-{i}"));
        assert_eq!(p.restarts, 0, "the agent on node-{i} was restarted");
    }
    let ds = json(
        cp,
        &[
            "get",
            "daemonset",
            "-n",
            "trustmap-system",
            "trustmap-agent",
        ],
    );
    let st = &ds["status"];
    assert_eq!(
        st["updatedNumberScheduled"], 1,
        "the rollout stops at the unready agent: {st}"
    );
    assert_eq!(st["numberReady"], u64::from(NODES) - 1, "{st}");
    assert!(!agent_403s(cp).is_empty(), "the audit log shows the 403s");
    // Restoring the ClusterRole heals the agents without a restart.
    cp.kubectl_run(&["apply", "-k", &repo().join("deploy").display().to_string()]);
    wait_agents_ready(cp, kubelet);
    for i in 1..=NODES {
        assert_eq!(kubelet.agent_pod(i).map(|p| p.restarts), Some(0));
    }
}

#[test]
fn cluster_survives_an_api_server_outage_a_compaction_and_a_killed_agent() {
    let d = deploy();
    // The kubelet (and its agents) must go before the control plane: declared after it.
    let mut cp = d.cp;
    let kubelet = d.kubelet;
    reconfigure(&cp, &kubelet, "");
    let app_file = cp.dir.join("shop.yaml");
    std::fs::write(&app_file, app::MANIFEST).expect("app manifest");
    cp.kubectl_run(&["apply", "-f", &app_file.display().to_string()]);
    let shop = start_shop(&cp, &kubelet);
    shop.traffic();
    let before = wait("every node's FlowEdges", Duration::from_secs(60), || {
        let got = flowedges(&cp);
        (got.get("node-1").map_or(0, BTreeSet::len) == 3
            && got.get("node-2").map_or(0, BTreeSet::len) == 4)
            .then_some(got)
    });

    // The API server goes away for 60 s; meanwhile etcd is compacted and the app goes on.
    cp.stop_apiserver();
    let down = Instant::now();
    cp.compact_etcd();
    let side = TcpServer::start(
        &shop.frontend.netns,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8081),
    );
    tcp_connect(
        &shop.api.netns,
        SocketAddr::new(IpAddr::V4(shop.frontend.ipv4()), 8081),
    );
    std::thread::sleep(Duration::from_secs(60).saturating_sub(down.elapsed()));
    // Capture went on: the agents still serve the edge made during the outage.
    let (code, flows) =
        http_get(&kubelet.node_ns(2), node_ipv4(2), 9090, "/flows").expect("/flows");
    assert_eq!(code, 200);
    assert!(
        flows.contains("8081"),
        "node-2 kept capturing during the outage: {flows}"
    );
    cp.start_apiserver();
    let up = Instant::now();
    let new_edge = "shop/Deployment/api -> shop/Deployment/frontend TCP/8081";
    let after = wait(
        "the outage's edge, published",
        Duration::from_secs(120),
        || {
            let got = flowedges(&cp);
            got.get("node-2")
                .filter(|e| e.contains(new_edge))
                .map(|_| got.clone())
        },
    );
    let recovery = up.elapsed();
    for (node, edges) in &before {
        assert!(edges.is_subset(&after[node]), "no edge of {node} lost");
    }
    // Watches that resumed from a compacted revision met a 410 ("too old resource version")
    // and listed again.
    wait("a 410 and a relist", Duration::from_secs(90), || {
        let logs = kubelet.agent_logs();
        (logs.contains("too old resource version") && logs.contains("listing again")).then_some(())
    });
    for i in 1..=NODES {
        assert_eq!(
            kubelet.agent_pod(i).map(|p| p.restarts),
            Some(0),
            "node-{i} crashed"
        );
    }
    // And their inventory is whole: a policy created now is used for verdicts at once.
    let deny = cp.dir.join("deny-api-egress.yaml");
    std::fs::write(
        &deny,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: api-no-egress\n  \
         namespace: shop\nspec:\n  podSelector:\n    matchLabels: {app: api}\n  policyTypes: [Egress]\n",
    )
    .expect("policy");
    cp.kubectl_run(&["apply", "-f", &deny.display().to_string()]);
    // The watches resume with back-off (doubling to 30 s, as client-go's reflector does), so
    // the inventory may take a while to be whole again: connect until the verdict uses it.
    wait(
        "a WouldDeny naming the new policy",
        Duration::from_secs(120),
        || {
            tcp_connect(
                &shop.api.netns,
                SocketAddr::new(IpAddr::V4(shop.frontend.ipv4()), 8081),
            );
            std::thread::sleep(Duration::from_secs(4));
            events(&cp, "shop", "WouldDeny")
                .into_iter()
                .find(|(_, m)| m.contains("api-no-egress"))
        },
    );
    let inventory_recovered = up.elapsed();
    drop(side);

    // SIGKILL: the kubelet restarts the agent, which republishes the same objects.
    // Let every node publish what it saw (the interval is 3 s), then look at node-2's share.
    std::thread::sleep(Duration::from_secs(5));
    let node2 = |cp: &ControlPlane| {
        let objects: Vec<String> = flowedges_objects(cp)
            .into_iter()
            .filter(|(_, (node, _))| node == "node-2")
            .map(|(name, _)| name)
            .collect();
        (objects, flowedges(cp).remove("node-2").unwrap_or_default())
    };
    let before_kill = node2(&cp);
    assert!(!before_kill.1.is_empty());
    kubelet.kill_agent(2);
    wait(
        "the agent on node-2 restarted",
        Duration::from_secs(60),
        || (kubelet.agent_pod(2).is_some_and(|p| p.restarts == 1)).then_some(()),
    );
    // Ready by its own /readyz. (Not by the DaemonSet's status: after the outage and the
    // compaction, kube-controller-manager's DaemonSet controller may wait a long time for its
    // informer to catch up with its own last write, "read version ... is not as new as written
    // version", which is upstream's business, not the agent's.)
    wait("the restarted agent ready", Duration::from_secs(60), || {
        trustmap_e2e::k8s::kubelet::http_ok(&kubelet.node_ns(2), node_ipv4(2), 9090, "/readyz")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        node2(&cp),
        before_kill,
        "node-2's FlowEdges objects and edges: none duplicated or lost"
    );
    eprintln!(
        "figures: API server down {:?}, recovery (API server ready to the outage's edge \
         published) {recovery:?}, to a policy created after the outage in force \
         {inventory_recovered:?}",
        up.duration_since(down)
    );
}

/// `n` distinct edges of simulated node `node`, as its agent would publish them.
fn simulated_edges(node: usize, n: usize, round: u64) -> Vec<trustmap::kube::EdgeRecord> {
    let t = chrono::DateTime::from_timestamp(1_800_000_000 + round as i64 * 60, 0).expect("time");
    (0..n)
        .map(|k| trustmap::kube::EdgeRecord {
            src: format!("ns{:02}/Deployment/client-{node:02}-{}", k % 40, k / 40),
            dst: format!("ns{:02}/Deployment/server-{}", (k * 7) % 40, k % 97),
            protocol: trustmap::flow::Protocol::Tcp,
            port: Some(1024 + (k % 5000) as u16),
            // One edge in a hundred sees new connections each round.
            count: 1 + if k % 100 == 0 { round } else { 0 },
            first_seen: t,
            last_seen: t,
            dst_names: Vec::new(),
        })
        .collect()
}

#[test]
fn cluster_scale_fifty_nodes_of_two_thousand_edges() {
    const SIM_NODES: usize = 50;
    const EDGES: usize = 2_000;
    const ROUND: Duration = Duration::from_secs(10);
    const ROUNDS: u64 = 2;
    require_root();
    let cp = ControlPlane::start();
    let deploy = repo().join("deploy");
    for f in ["namespace.yaml", "crd.yaml", "rbac.yaml"] {
        cp.kubectl_run(&["apply", "-f", &deploy.join(f).display().to_string()]);
    }
    cp.wait_crd_established("flowedges.trustmap.dev", Duration::from_secs(60));
    // The publishers act as the agents do: the agent's ServiceAccount, the agent's code, one
    // relay that counts what crosses.
    let token = cp.kubectl_run(&[
        "create",
        "token",
        "trustmap-agent",
        "-n",
        "trustmap-system",
        "--duration=1h",
    ]);
    let relay = trustmap_e2e::k8s::proxy::ApiProxy::start(None, 0, cp.port);
    let kubeconfig = cp.dir.join("publishers.kubeconfig");
    trustmap_e2e::k8s::controlplane::write_token_kubeconfig(
        &kubeconfig,
        &format!("https://127.0.0.1:{}", relay.port),
        &cp.pki.ca_cert,
        &token,
    );
    let pids = (
        cp.apiserver
            .as_ref()
            .and_then(|p| p.pid())
            .expect("apiserver pid"),
        cp.etcd.as_ref().and_then(|p| p.pid()).expect("etcd pid"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (initial, steady) = rt.block_on(async {
        let client = trustmap::kube::client_for(Some(&kubeconfig), None)
            .await
            .expect("client");
        let publishers: Vec<trustmap::kube::Publisher> = (0..SIM_NODES)
            .map(|i| {
                trustmap::kube::Publisher::new(
                    client.clone(),
                    "trustmap-system",
                    &format!("sim-{i:02}"),
                )
            })
            .collect();
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (i, p) in publishers.iter().enumerate() {
            let p = p.clone();
            set.spawn(async move { p.publish(simulated_edges(i, EDGES, 0)).await });
        }
        while let Some(r) = set.join_next().await {
            r.expect("task").expect("initial publication");
        }
        let initial = t0.elapsed();
        // Steady state: every node publishes once per round, spread over the round.
        let before = (
            relay.counters.up.load(Ordering::Relaxed),
            relay.counters.down.load(Ordering::Relaxed),
            trustmap_e2e::k8s::controlplane::cpu_time(pids.0),
            trustmap_e2e::k8s::controlplane::cpu_time(pids.1),
            cp.audit_requests_by(AGENT_USER),
        );
        let t1 = Instant::now();
        for round in 1..=ROUNDS {
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for (i, p) in publishers.iter().enumerate() {
                let p = p.clone();
                let at = start + ROUND * i as u32 / SIM_NODES as u32;
                set.spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    p.publish(simulated_edges(i, EDGES, round)).await
                });
            }
            while let Some(r) = set.join_next().await {
                r.expect("task").expect("publication");
            }
            tokio::time::sleep_until((start + ROUND).into()).await;
        }
        let secs = t1.elapsed().as_secs_f64();
        let after = (
            relay.counters.up.load(Ordering::Relaxed),
            relay.counters.down.load(Ordering::Relaxed),
            trustmap_e2e::k8s::controlplane::cpu_time(pids.0),
            trustmap_e2e::k8s::controlplane::cpu_time(pids.1),
            cp.audit_requests_by(AGENT_USER),
        );
        (initial, (secs, before, after))
    });
    let (secs, before, after) = steady;
    let requests = (after.4 - before.4) as f64;
    let up = (after.0 - before.0) as f64;
    let down = (after.1 - before.1) as f64;
    let api_cpu = (after.2 - before.2).as_secs_f64() / secs;
    let etcd_cpu = (after.3 - before.3).as_secs_f64() / secs;
    let objects = flowedges_objects(&cp);
    assert_eq!(
        objects
            .values()
            .map(|(n, _)| n)
            .collect::<BTreeSet<_>>()
            .len(),
        SIM_NODES
    );
    assert_eq!(
        objects.values().map(|(_, c)| c).sum::<u64>(),
        (SIM_NODES * EDGES) as u64
    );
    // What a user runs: every node's edges, merged.
    let out = cp.dir.join("export.jsonl");
    let t = Instant::now();
    let (ok, _, stderr) = trustmap_e2e::run_trustmap(&[
        "export",
        "--from-cluster",
        "--kubeconfig",
        &cp.admin_kubeconfig.display().to_string(),
        "-o",
        &out.display().to_string(),
    ]);
    let export = t.elapsed();
    assert!(ok, "export failed: {stderr}");
    let lines = std::fs::read_to_string(&out)
        .expect("export")
        .lines()
        .count();
    assert_eq!(lines, SIM_NODES * EDGES, "every edge exported once");
    eprintln!(
        "figures: {SIM_NODES} nodes x {EDGES} edges, {} FlowEdges objects; initial publication \
         {initial:?}; steady state at one publication per node per {ROUND:?}: {:.1} requests/s \
         ({:.2} per node per publication), {:.0} KiB/s up and {:.0} KiB/s down ({:.1} KiB per node \
         per publication), API server {:.2} cores, etcd {:.2} cores; export of {lines} edges {export:?}",
        objects.len(),
        requests / secs,
        requests / (SIM_NODES as f64 * ROUNDS as f64),
        up / 1024.0 / secs,
        down / 1024.0 / secs,
        (up + down) / 1024.0 / (SIM_NODES as f64 * ROUNDS as f64),
        api_cpu,
        etcd_cpu,
    );
}

/// Pods, a node and the cluster DNS for the Cilium-format check below.
const CILIUM_FIXTURE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status: {podIP: 198.18.7.5}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {nodeName: n1, containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 198.18.7.6}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status: {podIP: 198.18.7.53}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 198.18.0.1}]}
"#;

#[test]
fn cluster_learned_cilium_policies_pass_ciliums_own_crd_schema() {
    let crd = std::env::var_os("TRUSTMAP_CILIUM_CRD")
        .map(std::path::PathBuf::from)
        .expect("TRUSTMAP_CILIUM_CRD is not set: run with `cargo xtask test` (setup fetches it)");
    let cp = ControlPlane::start();
    // Server-side: the CRD is too large for the last-applied annotation.
    cp.kubectl_run(&["apply", "--server-side", "-f", &crd.display().to_string()]);
    cp.wait_crd_established("ciliumnetworkpolicies.cilium.io", Duration::from_secs(60));
    let work = cp.dir.join("cilium");
    std::fs::create_dir_all(&work).expect("dir");
    std::fs::write(work.join("cluster.yaml"), CILIUM_FIXTURE).expect("manifests");
    cp.kubectl_run(&["create", "namespace", "shop"]);
    let flow = |src: &str, dst: &str, proto: &str, port: u16, names: &[&str]| {
        serde_json::json!({"protocol": proto, "src": src, "dst": dst, "port": port, "dst_names": names})
            .to_string()
    };
    let flows = [
        flow("198.18.7.5", "198.18.7.53", "UDP", 53, &[]),
        flow("198.18.7.5", "198.18.7.6", "TCP", 8080, &[]),
        flow(
            "198.18.7.5",
            "203.0.113.10",
            "TCP",
            443,
            &["api.pay.example"],
        ),
        flow(
            "198.18.7.5",
            "203.0.113.11",
            "TCP",
            443,
            &["api.pay.example"],
        ),
        flow("198.18.7.5", "203.0.113.99", "TCP", 8443, &[]),
        flow("198.18.0.1", "198.18.7.6", "TCP", 8080, &[]),
    ];
    std::fs::write(work.join("flows.jsonl"), flows.join("\n") + "\n").expect("flows");
    let out = work.join("learned");
    let (ok, _, err) = trustmap_e2e::run_trustmap(&[
        "learn",
        "--manifests",
        &work.join("cluster.yaml").display().to_string(),
        "--flows",
        &work.join("flows.jsonl").display().to_string(),
        "--policy-format",
        "cilium",
        "--namespace-default-deny",
        "--output",
        &out.display().to_string(),
    ]);
    assert!(ok, "learn: {err}");
    let dry = cp.kubectl_run(&[
        "apply",
        "--dry-run=server",
        "-k",
        &out.display().to_string(),
    ]);
    let accepted: BTreeSet<&str> = dry
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        accepted,
        BTreeSet::from([
            "ciliumnetworkpolicy.cilium.io/api-pod-learned",
            "ciliumnetworkpolicy.cilium.io/default-deny",
            "ciliumnetworkpolicy.cilium.io/web-pod-learned",
        ]),
        "{dry}"
    );
    // The schema is in force: a lowercase protocol is refused.
    let bad = work.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: bad, namespace: shop}\nspec:\n  endpointSelector: {}\n  egress:\n  - toPorts: [{ports: [{port: '53', protocol: udp}]}]\n",
    )
    .expect("bad policy");
    assert!(!cp.kubectl_ok(&[
        "apply",
        "--dry-run=server",
        "-f",
        &bad.display().to_string()
    ]));
}

//! `cargo xtask demo --cluster`: the same story as `cargo xtask demo`, with the DaemonSet on a
//! real control plane (etcd, kube-apiserver, kube-controller-manager built from source by
//! `cargo xtask setup`) and three netns nodes run by the test kubelet. It prints each command a
//! user would type, and what it answered.

use std::{path::Path, process::Command, time::Duration};

use trustmap_e2e::k8s::{
    ControlPlane, Kubelet,
    app::{self, Shop},
    ops::{NODES, reconfigure, repo, start_shop, trustmap_bin, wait, wait_agents_ready},
};

fn section(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

/// Prints `$ kubectl ARGS` and runs it as the admin, printing its output.
fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    println!("$ kubectl {}", args.join(" "));
    let out = cp.kubectl().args(args).output().expect("kubectl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    if !out.status.success() {
        print!("{}", String::from_utf8_lossy(&out.stderr));
    }
    text
}

/// Prints `$ trustmap ARGS` (with the kubeconfig flag a user would not need) and runs it.
fn trustmap(kubeconfig: &Path, args: &[&str]) -> String {
    println!("$ trustmap {}", args.join(" "));
    let out = Command::new(trustmap_bin())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .output()
        .expect("trustmap");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    if !out.status.success() {
        print!("{}", String::from_utf8_lossy(&out.stderr));
    }
    text
}

fn main() {
    trustmap_e2e::require_root();
    section("a control plane built from source, and three netns nodes");
    let cp = ControlPlane::start();
    let kubelet = Kubelet::start(&cp, NODES, 2, &trustmap_bin());
    println!("export KUBECONFIG={}", cp.admin_kubeconfig.display());
    kubectl(&cp, &["get", "nodes", "-o", "wide"]);

    section("install trustmap: the kustomize base, unchanged");
    kubectl(
        &cp,
        &["apply", "-k", &repo().join("deploy").display().to_string()],
    );
    wait_agents_ready(&cp, &kubelet);
    // A demo does not wait a minute for the first publication.
    reconfigure(&cp, &kubelet, "");
    kubectl(
        &cp,
        &[
            "get",
            "daemonset,pods",
            "-n",
            "trustmap-system",
            "-o",
            "wide",
        ],
    );

    section("the shop: Deployments, a StatefulSet, Services, and a NetworkPolicy wrong for the db");
    let app_file = cp.dir.join("shop.yaml");
    std::fs::write(&app_file, app::MANIFEST).expect("app manifest");
    kubectl(&cp, &["apply", "-f", &app_file.display().to_string()]);
    let shop: Shop = start_shop(&cp, &kubelet);
    kubectl(
        &cp,
        &["get", "pods,endpointslices", "-n", "shop", "-o", "wide"],
    );
    shop.traffic();

    section("observe: each node publishes its edges");
    wait("every node's FlowEdges", Duration::from_secs(60), || {
        let out = cp.kubectl_run(&["get", "flowedges", "-A", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let total: u64 = v["items"]
            .as_array()?
            .iter()
            .filter_map(|o| o["spec"]["edgeCount"].as_u64())
            .sum();
        (total >= 9).then_some(())
    });
    kubectl(&cp, &["get", "flowedges", "-A"]);

    section("would-deny: Events on the source pods");
    wait("a WouldDeny Event", Duration::from_secs(30), || {
        cp.kubectl_run(&[
            "get",
            "events",
            "-n",
            "shop",
            "--field-selector",
            "reason=WouldDeny",
        ])
        .contains("WouldDeny")
        .then_some(())
    });
    kubectl(
        &cp,
        &[
            "get",
            "events",
            "-n",
            "shop",
            "--field-selector",
            "reason=WouldDeny",
        ],
    );

    section("audit the live cluster, without exporting YAML");
    let kc = cp.admin_kubeconfig.clone();
    trustmap(&kc, &["lint", "--from-cluster", "--fail-on", "never"]);

    section("learn from every node's edges, and let the API server validate the policies");
    let learned = cp.dir.join("learned");
    let dir = learned.display().to_string();
    trustmap(
        &kc,
        &[
            "export",
            "--from-cluster",
            "--policies",
            &dir,
            "-o",
            "/dev/null",
        ],
    );
    kubectl(&cp, &["apply", "--dry-run=server", "-k", &dir]);
    trustmap(
        &kc,
        &[
            "diff",
            "--from-cluster",
            "--learned",
            &dir,
            "--fail-on-diff",
        ],
    );

    section("apply, then alert on anything new");
    kubectl(&cp, &["apply", "-k", &dir]);
    kubectl(
        &cp,
        &["annotate", "namespace", "shop", "trustmap.dev/mode=alert"],
    );
    println!("\nThe agents now raise UnexpectedFlow for anything outside the learned policies.");
    // Kubelet before the control plane.
    drop(kubelet);
    drop(cp);
}

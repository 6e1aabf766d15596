//! Steps of the cluster tests and of `cargo xtask demo --cluster`: a control plane, three
//! netns nodes, `kubectl apply -k deploy/`, the sample app.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{ControlPlane, Kubelet, app::Shop};
use crate::require_root;

/// Nodes of the cluster tests and the demo.
pub const NODES: u8 = 3;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn trustmap_bin() -> PathBuf {
    crate::agent_binary()
}

/// Polls `f` every 500 ms until it returns `Some`; panics with `what` after `timeout`.
pub fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn json(cp: &ControlPlane, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&cp.kubectl_run(&a)).expect("kubectl JSON")
}

/// A control plane, three nodes, and `kubectl apply -k deploy/` with every agent ready.
pub struct Deployed {
    // Drop order: the kubelet (agents, pods, network) before the control plane.
    pub kubelet: Kubelet,
    pub cp: ControlPlane,
    pub applied: usize,
}

pub fn deploy() -> Deployed {
    deploy_after(|_| {})
}

/// Like [`deploy`], with `prepare` run on the control plane before anything else is applied
/// (CRDs a test wants the agents to find when they start, for instance).
pub fn deploy_after(prepare: impl FnOnce(&ControlPlane)) -> Deployed {
    require_root();
    let cp = ControlPlane::start();
    prepare(&cp);
    let kubelet = Kubelet::start(&cp, NODES, 2, &trustmap_bin());
    let out = cp.kubectl_run(&["apply", "-k", &repo().join("deploy").display().to_string()]);
    let applied = out.lines().filter(|l| l.ends_with(" created")).count();
    assert_eq!(
        applied, 9,
        "kubectl apply -k deploy/ should create 9 objects:\n{out}"
    );
    wait_agents_ready(&cp, &kubelet);
    Deployed {
        kubelet,
        cp,
        applied,
    }
}

/// Waits until the DaemonSet reports one ready agent per node.
pub fn wait_agents_ready(cp: &ControlPlane, kubelet: &Kubelet) {
    let mut last = String::new();
    wait("one ready agent per node", Duration::from_secs(120), || {
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
        (st["desiredNumberScheduled"] == u64::from(NODES)
            && st["numberReady"] == u64::from(NODES)
            && st["updatedNumberScheduled"] == u64::from(NODES)
            && st["numberUnavailable"].as_u64().unwrap_or(0) == 0)
            .then_some(())
            .or_else(|| {
                let now = format!("daemonset status: {st}; kubelet: {}", kubelet.log_tail(1));
                if now != last {
                    eprintln!("{now}");
                    last = now;
                }
                None
            })
    });
}

/// Publishes every 3 s (plus `extra` configuration keys), and restarts the agents as a user
/// would after editing the ConfigMap.
pub fn reconfigure(cp: &ControlPlane, kubelet: &Kubelet, extra: &str) {
    let cm = json(
        cp,
        &[
            "get",
            "configmap",
            "-n",
            "trustmap-system",
            "trustmap-config",
        ],
    );
    let config = cm["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml")
        .replace("publishIntervalSeconds: 60", "publishIntervalSeconds: 3")
        + extra;
    let patch = serde_json::json!({"data": {"config.yaml": config}}).to_string();
    cp.kubectl_run(&[
        "patch",
        "configmap",
        "-n",
        "trustmap-system",
        "trustmap-config",
        "--type=merge",
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
    cp.kubectl_run(&[
        "rollout",
        "status",
        "daemonset",
        "-n",
        "trustmap-system",
        "trustmap-agent",
        "--timeout=180s",
    ]);
    wait_agents_ready(cp, kubelet);
}

/// The sample app's pods with their servers, once their EndpointSlices are in place.
pub fn start_shop(cp: &ControlPlane, kubelet: &Kubelet) -> Shop {
    let shop = Shop::start(kubelet);
    let api_pod = json(cp, &["get", "pod", "-n", "shop", &shop.api.name]);
    assert_eq!(
        api_pod["metadata"]["ownerReferences"][0]["kind"],
        "ReplicaSet"
    );
    assert!(api_pod["metadata"]["labels"]["pod-template-hash"].is_string());
    for (ns, svc, ip) in [
        ("shop", "api", shop.api.ipv4()),
        ("kube-system", "kube-dns", shop.dns.ipv4()),
    ] {
        wait(
            &format!("the {svc} EndpointSlice"),
            Duration::from_secs(60),
            || {
                let s = json(
                    cp,
                    &[
                        "get",
                        "endpointslices",
                        "-n",
                        ns,
                        "-l",
                        &format!("kubernetes.io/service-name={svc}"),
                    ],
                );
                let got = s["items"][0]["endpoints"][0]["addresses"][0]
                    .as_str()
                    .map(str::to_owned);
                (got == Some(ip.to_string())).then_some(())
            },
        );
    }
    // The kube-proxy stand-in syncs every second.
    std::thread::sleep(Duration::from_secs(2));
    shop
}

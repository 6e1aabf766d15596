//! A test kubelet for the netns nodes: the container runtime's stand-in and nothing more.
//!
//! - It registers one Node per netns node (labels, InternalIPs, capacity, `Ready`) under the
//!   node's own identity (`system:node:NAME`, so the Node authorizer and NodeRestriction apply),
//!   keeps its Lease and heartbeat fresh, and waits for the node IPAM controller's podCIDRs.
//! - No kube-scheduler runs: it binds pending pods itself (the `pods/binding` subresource, as
//!   `system:kube-scheduler`), honouring `nodeName`, the DaemonSet controller's node affinity on
//!   `metadata.name`, and a `kubernetes.io/hostname` node selector; other pods go round-robin.
//! - For each pod bound to a node: a network namespace and a veth on the node's bridge with an
//!   address from the node's podCIDRs (dual-stack), then the pod's status (IPs, `Running`,
//!   conditions, container statuses) so that the real EndpointSlice controller makes slices.
//!   Deleted pods lose their namespace, and the deletion is confirmed as a kubelet does.
//! - A container whose image is `trustmap:*` is the agent: the kubelet runs the real binary in
//!   the node's network namespace (hostNetwork) and in a mount namespace of its own, with the
//!   pod's args and env (downward API), its volumes mounted where the pod spec says (ConfigMap,
//!   hostPath, emptyDir, and the projected service-account token from the TokenRequest API), and
//!   `KUBERNETES_SERVICE_HOST/PORT` pointing at the API server through the node. It restarts the
//!   process with back-off when it exits, and runs the readiness probe.
//! - As kube-proxy's stand-in (as `system:kube-proxy`) it DNATs each Service ClusterIP port to
//!   one ready endpoint with nftables in every node's namespace. There is no masquerade, so a
//!   client must not share a node with the backend it reaches through a ClusterIP.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::{
    authentication::v1::TokenRequest,
    coordination::v1::Lease,
    core::v1::{Binding, ConfigMap, Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};

use super::{
    controlplane::{ControlPlane, KUBERNETES_VERSION},
    node::{Fabric, PodNet, node_ipv4, node_ipv6},
    proxy::ApiProxy,
};

const AGENT_IMAGE_PREFIX: &str = "trustmap:";
const FIELD_MANAGER: &str = "test-kubelet";
const TICK: Duration = Duration::from_millis(500);
const HEARTBEAT: Duration = Duration::from_secs(10);

/// What the test sees of a running pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: u8,
    /// The pod's network namespace; for a hostNetwork pod, its node's.
    pub netns: String,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    pub restarts: u32,
}

impl PodInfo {
    pub fn ipv4(&self) -> Ipv4Addr {
        super::node::first_v4(&self.ips).expect("every pod has an IPv4 address")
    }
}

struct AgentProc {
    child: Option<Child>,
    log: PathBuf,
    /// Starts (or restarts) the process.
    command: Box<dyn Fn() -> Command + Send>,
    restarts: u32,
    next_start: Option<Instant>,
    ready: bool,
    probe: Option<(String, u16)>,
    last_probe: Instant,
}

impl AgentProc {
    /// Starts the process; on failure (as a runtime's failed container start) the next
    /// attempt follows the back-off.
    fn start(&mut self) -> std::io::Result<()> {
        self.next_start = None;
        self.ready = false;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = (self.command)();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::controlplane::terminate(child, Duration::from_secs(15));
        }
    }
}

struct RunPod {
    info: PodInfo,
    ip_index: Option<u8>,
    agent: Option<AgentProc>,
    started: String,
    status_sent: Option<Value>,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, RunPod>,
    pod_nets: BTreeMap<u8, PodNet>,
    used_ips: BTreeMap<u8, BTreeSet<u8>>,
    /// Directories created in the host's filesystem as mount points, removed at the end.
    mount_points: BTreeSet<PathBuf>,
    proxy_rules: BTreeMap<u8, String>,
    log: Vec<String>,
    log_file: Option<PathBuf>,
    errors: u64,
}

/// Names of the nodes, `node-1` and up.
pub fn node_name(i: u8) -> String {
    format!("node-{i}")
}

/// The test kubelet of every node. Dropping it stops the agents, removes the pods' namespaces
/// and the network, and leaves the API objects to the control plane's teardown.
pub struct Kubelet {
    pub fabric: Arc<Fabric>,
    pub nodes: u8,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _proxies: Vec<ApiProxy>,
    pub root: PathBuf,
    /// The agent's "image": its binary, outside every path a pod volume may hide (the
    /// DaemonSet mounts an emptyDir on /tmp, where a test build may live).
    image: PathBuf,
}

struct Ctx {
    fabric: Arc<Fabric>,
    state: Arc<Mutex<State>>,
    nodes: u8,
    node_clients: Vec<Client>,
    scheduler: Client,
    proxy: Client,
    agent_bin: PathBuf,
    root: PathBuf,
    api_port: u16,
    stop: Arc<AtomicBool>,
}

async fn client(kubeconfig: &Path) -> Client {
    let file = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .expect("client config");
    Client::try_from(config).expect("client")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

impl Kubelet {
    /// Registers `nodes` nodes, waits for their podCIDRs, and starts running their pods.
    /// `externals` simulated external hosts sit behind the router (203.0.113.10 and up).
    pub fn start(cp: &ControlPlane, nodes: u8, externals: u8, agent_bin: &Path) -> Self {
        let fabric = Arc::new(Fabric::new(externals));
        let root = cp.dir.join("kubelet");
        fs::create_dir_all(&root).expect("kubelet dir");
        let image = PathBuf::from(format!("/var/tmp/trustmap-test-image-{}", fabric.prefix));
        fs::create_dir_all(&image).expect("image dir");
        let image_bin = image.join("trustmap");
        fs::copy(agent_bin, &image_bin)
            .unwrap_or_else(|e| panic!("copying {} into the image: {e}", agent_bin.display()));
        let mut proxies = Vec::new();
        let mut node_configs = Vec::new();
        for i in 1..=nodes {
            fabric.add_node(i);
            proxies.push(ApiProxy::start(Some(&fabric.node_ns(i)), cp.port, cp.port));
            node_configs.push(cp.kubeconfig_for(
                &format!("node-{i}"),
                &format!("system:node:{}", node_name(i)),
                Some("system:nodes"),
            ));
        }
        let scheduler_config = cp.kubeconfig_for("scheduler", "system:kube-scheduler", None);
        let proxy_config = cp.kubeconfig_for("kube-proxy", "system:kube-proxy", None);
        let state = Arc::new(Mutex::new(State {
            log_file: Some(cp.dir.join("kubelet.log")),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let rt = runtime();
        let ctx = rt.block_on(async {
            let mut node_clients = Vec::new();
            for c in &node_configs {
                node_clients.push(client(c).await);
            }
            Ctx {
                fabric: fabric.clone(),
                state: state.clone(),
                nodes,
                node_clients,
                scheduler: client(&scheduler_config).await,
                proxy: client(&proxy_config).await,
                agent_bin: image_bin,
                root: root.clone(),
                api_port: cp.port,
                stop: stop.clone(),
            }
        });
        rt.block_on(ctx.register_nodes());
        let thread = std::thread::spawn(move || rt.block_on(ctx.run()));
        Self {
            fabric,
            nodes,
            state,
            stop,
            thread: Some(thread),
            _proxies: proxies,
            root,
            image,
        }
    }

    /// The pods running now, by `namespace/name`.
    pub fn pods(&self) -> BTreeMap<String, PodInfo> {
        let st = self.state.lock().expect("lock");
        st.pods
            .values()
            .map(|p| {
                let mut info = p.info.clone();
                info.restarts = p.agent.as_ref().map_or(0, |a| a.restarts);
                (format!("{}/{}", info.namespace, info.name), info)
            })
            .collect()
    }

    /// Waits until `namespace/name` runs; panics after `timeout`.
    pub fn wait_pod(&self, key: &str, timeout: Duration) -> PodInfo {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.pods().remove(key) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "pod {key} not running after {timeout:?}; running: {:?}; kubelet log:\n{}",
                self.pods().keys().collect::<Vec<_>>(),
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The running pods of `namespace` whose names start with `prefix`.
    pub fn pods_named(&self, namespace: &str, prefix: &str) -> Vec<PodInfo> {
        self.pods()
            .into_values()
            .filter(|p| p.namespace == namespace && p.name.starts_with(prefix))
            .collect()
    }

    /// The agent pod of node `i`, if one runs.
    pub fn agent_pod(&self, i: u8) -> Option<PodInfo> {
        let st = self.state.lock().expect("lock");
        st.pods
            .values()
            .find(|p| p.agent.is_some() && p.info.node == i)
            .map(|p| {
                let mut info = p.info.clone();
                info.restarts = p.agent.as_ref().map_or(0, |a| a.restarts);
                info
            })
    }

    /// The agent's log on node `i` (every run of it).
    pub fn agent_log(&self, i: u8) -> String {
        let st = self.state.lock().expect("lock");
        st.pods
            .values()
            .find(|p| p.info.node == i && p.agent.is_some())
            .and_then(|p| p.agent.as_ref())
            .map(|a| fs::read_to_string(&a.log).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Every agent's log, concatenated.
    pub fn agent_logs(&self) -> String {
        let st = self.state.lock().expect("lock");
        st.pods
            .values()
            .filter_map(|p| p.agent.as_ref())
            .map(|a| fs::read_to_string(&a.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILLs the agent of node `i`, as an OOM kill would; the kubelet restarts it.
    pub fn kill_agent(&self, i: u8) {
        let mut st = self.state.lock().expect("lock");
        let agent = st
            .pods
            .values_mut()
            .find(|p| p.info.node == i && p.agent.is_some())
            .and_then(|p| p.agent.as_mut())
            .expect("an agent on that node");
        if let Some(child) = agent.child.as_mut() {
            let _ = child.kill();
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        let st = self.state.lock().expect("lock");
        st.log[st.log.len().saturating_sub(n)..].join("\n")
    }

    /// API errors the kubelet met (each is in its log).
    pub fn errors(&self) -> u64 {
        self.state.lock().expect("lock").errors
    }

    pub fn node_ns(&self, i: u8) -> String {
        self.fabric.node_ns(i)
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for pod in st.pods.values_mut() {
            if let Some(a) = pod.agent.as_mut() {
                a.stop();
            }
            if !pod.info.host_network {
                self.fabric.remove_netns(&pod.info.netns);
            }
        }
        let points: Vec<PathBuf> = st.mount_points.iter().rev().cloned().collect();
        for p in points {
            let _ = fs::remove_dir(&p);
        }
        let _ = fs::remove_dir_all(&self.image);
    }
}

fn note(state: &Mutex<State>, line: String) {
    let line = format!("{} {line}", Utc::now().format("%H:%M:%S%.3f"));
    let mut st = state.lock().expect("lock");
    if let Some(f) = &st.log_file {
        let _ = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .and_then(|mut f| writeln!(f, "{line}"));
    }
    st.log.push(line);
}

fn api_error(state: &Mutex<State>, what: &str, e: &kube::Error) {
    note(state, format!("error: {what}: {e}"));
    state.lock().expect("lock").errors += 1;
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Ctx {
    fn node_index(&self, name: &str) -> Option<u8> {
        (1..=self.nodes).find(|i| node_name(*i) == name)
    }

    async fn register_nodes(&self) {
        for i in 1..=self.nodes {
            let api: Api<Node> = Api::all(self.node_clients[usize::from(i) - 1].clone());
            let name = node_name(i);
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                }},
            }))
            .expect("node");
            if let Err(e) = api.create(&PostParams::default(), &node).await {
                panic!("registering {name}: {e}");
            }
            self.heartbeat(i).await;
        }
        // The node IPAM controller gives each node a /24 and a /64.
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 1..=self.nodes {
            let api: Api<Node> = Api::all(self.node_clients[usize::from(i) - 1].clone());
            let net = loop {
                let node = api.get(&node_name(i)).await.expect("reading the node");
                let cidrs = node.spec.and_then(|s| s.pod_cidrs).unwrap_or_default();
                let v4 = cidrs.iter().find_map(|c| c.parse().ok());
                let v6 = cidrs.iter().find_map(|c| c.parse().ok());
                if let Some(v4) = v4 {
                    break PodNet { v4, v6 };
                }
                assert!(
                    Instant::now() < deadline,
                    "{} got no podCIDRs from the node IPAM controller",
                    node_name(i)
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            self.fabric.node_pod_net(i, &net);
            self.state.lock().expect("lock").pod_nets.insert(i, net);
        }
    }

    async fn heartbeat(&self, i: u8) {
        let client = self.node_clients[usize::from(i) - 1].clone();
        let name = node_name(i);
        let t = now();
        let conditions: Vec<Value> = [
            ("Ready", "True", "KubeletReady"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ]
        .iter()
        .map(|(ty, status, reason)| {
            json!({"type": ty, "status": status, "reason": reason, "message": "test kubelet",
                   "lastHeartbeatTime": t, "lastTransitionTime": t})
        })
        .collect();
        let status = json!({"status": {
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": node_ipv4(i).to_string()},
                {"type": "InternalIP", "address": node_ipv6(i).to_string()},
                {"type": "Hostname", "address": name},
            ],
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"},
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "kubeletVersion": KUBERNETES_VERSION, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
                "containerRuntimeVersion": "netns://test-kubelet", "kernelVersion": "",
                "osImage": "trustmap test node", "machineID": "", "systemUUID": "", "bootID": "",
            },
        }});
        let api: Api<Node> = Api::all(client.clone());
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            api_error(&self.state, &format!("node status of {name}"), &e);
        }
        let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                     "renewTime": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)},
        });
        if let Err(e) = leases
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
        {
            api_error(&self.state, &format!("lease of {name}"), &e);
        }
    }

    async fn run(self) {
        let mut last_heartbeat = Instant::now();
        let mut last_proxy = Instant::now() - Duration::from_secs(10);
        let mut round_robin = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            if last_heartbeat.elapsed() >= HEARTBEAT {
                last_heartbeat = Instant::now();
                for i in 1..=self.nodes {
                    self.heartbeat(i).await;
                }
            }
            self.schedule(&mut round_robin).await;
            for i in 1..=self.nodes {
                self.sync_node(i).await;
            }
            self.supervise_agents().await;
            if last_proxy.elapsed() >= Duration::from_secs(1) {
                last_proxy = Instant::now();
                self.sync_proxy().await;
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// The scheduler's part: binds each pending pod to a node.
    async fn schedule(&self, round_robin: &mut usize) {
        let api: Api<Pod> = Api::all(self.scheduler.clone());
        let pending = match api
            .list(&ListParams::default().fields("spec.nodeName="))
            .await
        {
            Ok(l) => l.items,
            Err(e) => return api_error(&self.state, "listing pending pods", &e),
        };
        for pod in pending {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(spec) = pod.spec.as_ref() else {
                continue;
            };
            let wanted = required_node(&pod).or_else(|| {
                spec.node_selector
                    .as_ref()
                    .and_then(|s| s.get("kubernetes.io/hostname").cloned())
            });
            let node = match wanted {
                Some(n) if self.node_index(&n).is_some() => n,
                Some(_) => continue,
                None => {
                    *round_robin += 1;
                    node_name((*round_robin % usize::from(self.nodes)) as u8 + 1)
                }
            };
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let binding: Binding = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }))
            .expect("binding");
            let pods: Api<Pod> = Api::namespaced(self.scheduler.clone(), &ns);
            match pods
                .create_subresource::<_, Value>("binding", &name, &PostParams::default(), &binding)
                .await
            {
                Ok(_) => note(&self.state, format!("bound {ns}/{name} to {node}")),
                Err(e) => api_error(&self.state, &format!("binding {ns}/{name}"), &e),
            }
        }
    }

    /// Starts the node's new pods, and tears down the ones deleted.
    async fn sync_node(&self, i: u8) {
        let client = self.node_clients[usize::from(i) - 1].clone();
        let api: Api<Pod> = Api::all(client.clone());
        let fields = format!("spec.nodeName={}", node_name(i));
        let pods = match api.list(&ListParams::default().fields(&fields)).await {
            Ok(l) => l.items,
            Err(e) => {
                return api_error(
                    &self.state,
                    &format!("listing pods of {}", node_name(i)),
                    &e,
                );
            }
        };
        let mut seen = BTreeSet::new();
        for pod in &pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            seen.insert(uid.clone());
            let known = self.state.lock().expect("lock").pods.contains_key(&uid);
            if pod.metadata.deletion_timestamp.is_some() {
                if known {
                    self.teardown(&uid);
                }
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(kube::api::Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                if let Err(e) = pods.delete(&name, &dp).await
                    && !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
                {
                    api_error(
                        &self.state,
                        &format!("confirming deletion of {ns}/{name}"),
                        &e,
                    );
                }
                continue;
            }
            if !known && let Err(e) = self.start_pod(i, pod, &client).await {
                note(&self.state, format!("error: starting pod {uid}: {e}"));
                self.state.lock().expect("lock").errors += 1;
                continue;
            }
            self.report_status(pod, &client).await;
        }
        let gone: Vec<String> = {
            let st = self.state.lock().expect("lock");
            st.pods
                .iter()
                .filter(|(uid, p)| p.info.node == i && !seen.contains(*uid))
                .map(|(uid, _)| uid.clone())
                .collect()
        };
        for uid in gone {
            self.teardown(&uid);
        }
    }

    fn teardown(&self, uid: &str) {
        let removed = self.state.lock().expect("lock").pods.remove(uid);
        let Some(mut pod) = removed else { return };
        if let Some(a) = pod.agent.as_mut() {
            a.stop();
        }
        if !pod.info.host_network {
            self.fabric.remove_netns(&pod.info.netns);
        }
        if let Some(idx) = pod.ip_index {
            let mut st = self.state.lock().expect("lock");
            if let Some(used) = st.used_ips.get_mut(&pod.info.node) {
                used.remove(&idx);
            }
        }
        note(
            &self.state,
            format!("removed {}/{}", pod.info.namespace, pod.info.name),
        );
    }

    async fn start_pod(&self, i: u8, pod: &Pod, client: &Client) -> Result<(), String> {
        let spec = pod.spec.as_ref().ok_or("pod without spec")?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let host_network = spec.host_network.unwrap_or(false);
        let (netns, ips, ip_index) = if host_network {
            (
                self.fabric.node_ns(i),
                vec![IpAddr::V4(node_ipv4(i)), IpAddr::V6(node_ipv6(i))],
                None,
            )
        } else {
            let (net, idx) = {
                let mut st = self.state.lock().expect("lock");
                let net = *st.pod_nets.get(&i).ok_or("node without podCIDR")?;
                let used = st.used_ips.entry(i).or_default();
                // The lowest free address, so that a new pod may reuse a deleted pod's IP.
                let idx = (2..=250u8).find(|x| !used.contains(x)).ok_or("node full")?;
                used.insert(idx);
                (net, idx)
            };
            let pod_ns = format!("{}-{}", self.fabric.prefix, &uid[..8.min(uid.len())]);
            let host_if = format!("veth{}", &uid[..8.min(uid.len())]);
            let v4 = net.pod_v4(idx);
            let v6 = net.pod_v6(idx);
            self.fabric.add_pod(i, &pod_ns, &host_if, v4, v6, &net);
            let mut ips = vec![IpAddr::V4(v4)];
            ips.extend(v6.map(IpAddr::V6));
            (pod_ns, ips, Some(idx))
        };
        let info = PodInfo {
            namespace: ns.clone(),
            name: name.clone(),
            uid: uid.clone(),
            node: i,
            netns,
            ips,
            host_network,
            restarts: 0,
        };
        let agent = match spec.containers.iter().find(|c| {
            c.image
                .as_deref()
                .is_some_and(|im| im.starts_with(AGENT_IMAGE_PREFIX))
        }) {
            Some(c) => Some(self.agent_process(i, pod, c, client).await?),
            None => None,
        };
        note(
            &self.state,
            format!("started {ns}/{name} on {} ({:?})", node_name(i), info.ips),
        );
        self.state.lock().expect("lock").pods.insert(
            uid,
            RunPod {
                info,
                ip_index,
                agent,
                started: now(),
                status_sent: None,
            },
        );
        Ok(())
    }

    /// Prepares the agent container: volumes, env, args, and the command that runs it.
    async fn agent_process(
        &self,
        i: u8,
        pod: &Pod,
        c: &k8s_openapi::api::core::v1::Container,
        client: &Client,
    ) -> Result<AgentProc, String> {
        let spec = pod.spec.as_ref().expect("spec");
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pod_dir = self.root.join("pods").join(&uid);
        let node_root = self.root.join("nodes").join(node_name(i));
        fs::create_dir_all(&pod_dir).map_err(|e| e.to_string())?;
        // Volumes: name -> directory on the "host".
        let mut sources: BTreeMap<String, PathBuf> = BTreeMap::new();
        for v in spec.volumes.iter().flatten() {
            let dir = pod_dir.join("volumes").join(&v.name);
            if let Some(hp) = &v.host_path {
                sources.insert(v.name.clone(), host_path(&node_root, &hp.path));
                continue;
            }
            fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            if let Some(cm) = &v.config_map {
                let data = self.config_map(client, &ns, &cm.name).await?;
                for (k, val) in data {
                    fs::write(dir.join(&k), val).map_err(|e| e.to_string())?;
                }
            } else if let Some(projected) = &v.projected {
                for src in projected.sources.iter().flatten() {
                    if let Some(t) = &src.service_account_token {
                        let token = self
                            .token(client, pod, t.expiration_seconds, t.audience.clone())
                            .await?;
                        fs::write(dir.join(&t.path), token).map_err(|e| e.to_string())?;
                    }
                    if let Some(cm) = &src.config_map {
                        let data = self.config_map(client, &ns, &cm.name).await?;
                        for item in cm.items.iter().flatten() {
                            if let Some(val) = data.get(&item.key) {
                                fs::write(dir.join(&item.path), val).map_err(|e| e.to_string())?;
                            }
                        }
                    }
                    if let Some(d) = &src.downward_api {
                        for item in d.items.iter().flatten() {
                            if let Some(f) = &item.field_ref {
                                let val = field(pod, i, &f.field_path)?;
                                fs::write(dir.join(&item.path), val).map_err(|e| e.to_string())?;
                            }
                        }
                    }
                }
            }
            // emptyDir and anything else: an empty directory of the pod's own.
            sources.insert(v.name.clone(), dir);
        }
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let src = sources
                .get(&m.name)
                .ok_or_else(|| format!("volumeMount {} names no volume", m.name))?;
            fs::create_dir_all(src).map_err(|e| e.to_string())?;
            let target = PathBuf::from(&m.mount_path);
            self.mount_point(&target)?;
            mounts.push((src.clone(), target, m.read_only.unwrap_or(false)));
        }
        // A mount whose target hides another mount's source (an emptyDir on /tmp, where this
        // kubelet keeps its volumes) goes after it.
        let sources_all: Vec<PathBuf> = mounts.iter().map(|(s, _, _)| s.clone()).collect();
        mounts.sort_by_key(|(_, dst, _)| sources_all.iter().any(|s| s.starts_with(dst)));
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            // No kube-proxy and no Service routing on the nodes: the node reaches the API
            // server's loopback port through its proxy (super::proxy).
            ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), self.api_port.to_string()),
        ];
        for e in c.env.iter().flatten() {
            let val = if let Some(v) = &e.value {
                expand(v, &env)
            } else if let Some(f) = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) {
                field(pod, i, &f.field_path)?
            } else {
                return Err(format!(
                    "env {}: only value and fieldRef are supported",
                    e.name
                ));
            };
            env.push((e.name.clone(), val));
        }
        let args: Vec<String> = c.args.iter().flatten().map(|a| expand(a, &env)).collect();
        let probe = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| {
                let port = match &h.port {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p as u16,
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => c
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.as_deref() == Some(name))
                        .map_or(0, |p| p.container_port as u16),
                };
                (h.path.clone().unwrap_or_else(|| "/".into()), port)
            });
        let bin = self.agent_bin.clone();
        let netns = format!("/run/netns/{}", self.fabric.node_ns(i));
        let command = move || {
            let mut cmd = Command::new(&bin);
            cmd.args(&args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)));
            let netns = netns.clone();
            let mounts = mounts.clone();
            // SAFETY: the closure runs in the child between fork and exec; it only makes
            // syscalls (open, setns, unshare, mount) on data prepared before the fork.
            unsafe {
                cmd.pre_exec(move || enter_pod_sandbox(&netns, &mounts));
            }
            cmd
        };
        let mut proc = AgentProc {
            child: None,
            log: pod_dir.join(format!("{}.log", c.name)),
            command: Box::new(command),
            restarts: 0,
            next_start: None,
            ready: false,
            probe,
            last_probe: Instant::now(),
        };
        proc.start()
            .map_err(|e| format!("starting the agent container: {e}"))?;
        Ok(proc)
    }

    fn mount_point(&self, target: &Path) -> Result<(), String> {
        let mut missing = Vec::new();
        let mut p = target.to_path_buf();
        while !p.exists() {
            missing.push(p.clone());
            if !p.pop() {
                break;
            }
        }
        fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
        self.state
            .lock()
            .expect("lock")
            .mount_points
            .extend(missing);
        Ok(())
    }

    async fn config_map(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let cm = api
            .get(name)
            .await
            .map_err(|e| format!("configmap {ns}/{name}: {e}"))?;
        Ok(cm.data.unwrap_or_default())
    }

    /// A service-account token bound to the pod, from the TokenRequest API.
    async fn token(
        &self,
        client: &Client,
        pod: &Pod,
        expiration: Option<i64>,
        audience: Option<String>,
    ) -> Result<String, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let req: TokenRequest = serde_json::from_value(json!({
            "spec": {
                "audiences": audience.into_iter().collect::<Vec<_>>(),
                "expirationSeconds": expiration.unwrap_or(3607),
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                    "name": pod.metadata.name, "uid": pod.metadata.uid},
            }
        }))
        .expect("token request");
        let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &ns);
        let resp: TokenRequest = api
            .create_subresource("token", &sa, &PostParams::default(), &req)
            .await
            .map_err(|e| format!("token for {ns}/{sa}: {e}"))?;
        resp.status
            .map(|s| s.token)
            .ok_or_else(|| format!("token for {ns}/{sa}: no status"))
    }

    /// Restarts agents that exited (with CrashLoopBackOff's doubling delay) and probes them.
    async fn supervise_agents(&self) {
        let mut st = self.state.lock().expect("lock");
        let mut notes = Vec::new();
        for pod in st.pods.values_mut() {
            let node = pod.info.node;
            let Some(a) = pod.agent.as_mut() else {
                continue;
            };
            if let Some(status) = a.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                a.child = None;
                a.ready = false;
                let delay =
                    Duration::from_secs(10u64 << a.restarts.min(5)).min(Duration::from_secs(300));
                // The first restart is immediate: a test that kills the agent wants it back.
                a.next_start = Some(
                    Instant::now()
                        + if a.restarts == 0 {
                            Duration::ZERO
                        } else {
                            delay
                        },
                );
                a.restarts += 1;
                notes.push(format!(
                    "agent on {} exited with {status}; restart {}",
                    node_name(node),
                    a.restarts
                ));
            }
            if a.child.is_none()
                && a.next_start.is_some_and(|t| Instant::now() >= t)
                && let Err(e) = a.start()
            {
                a.restarts += 1;
                a.next_start = Some(Instant::now() + Duration::from_secs(10));
                notes.push(format!(
                    "error: starting the agent on {}: {e}",
                    node_name(node)
                ));
            }
            if a.child.is_some() && a.last_probe.elapsed() >= Duration::from_secs(1) {
                a.last_probe = Instant::now();
                a.ready = match &a.probe {
                    Some((path, port)) => http_ok(&pod.info.netns, node_ipv4(node), *port, path),
                    None => true,
                };
            }
        }
        drop(st);
        for n in notes {
            note(&self.state, n);
        }
    }

    async fn report_status(&self, pod: &Pod, client: &Client) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let status = {
            let st = self.state.lock().expect("lock");
            let Some(run) = st.pods.get(&uid) else { return };
            let (ready, restarts) = run
                .agent
                .as_ref()
                .map_or((true, 0), |a| (a.ready && a.child.is_some(), a.restarts));
            let containers: Vec<Value> = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .map(|c| {
                    json!({"name": c.name, "image": c.image, "imageID": "",
                           "containerID": format!("netns://{uid}/{}", c.name),
                           "ready": ready, "started": true, "restartCount": restarts,
                           "state": {"running": {"startedAt": run.started}}})
                })
                .collect();
            let cond = |ty: &str, ok: bool| {
                json!({"type": ty, "status": if ok {"True"} else {"False"},
                       "lastProbeTime": null, "lastTransitionTime": run.started})
            };
            json!({"status": {
                "phase": "Running",
                "hostIP": node_ipv4(run.info.node).to_string(),
                "hostIPs": [{"ip": node_ipv4(run.info.node).to_string()},
                            {"ip": node_ipv6(run.info.node).to_string()}],
                "podIP": run.info.ips[0].to_string(),
                "podIPs": run.info.ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
                "startTime": run.started,
                "conditions": [cond("PodReadyToStartContainers", true), cond("Initialized", true),
                               cond("ContainersReady", ready), cond("Ready", ready),
                               cond("PodScheduled", true)],
                "containerStatuses": containers,
            }})
        };
        if self
            .state
            .lock()
            .expect("lock")
            .pods
            .get(&uid)
            .and_then(|p| p.status_sent.as_ref())
            == Some(&status)
        {
            return;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => {
                if let Some(p) = self.state.lock().expect("lock").pods.get_mut(&uid) {
                    p.status_sent = Some(status);
                }
            }
            Err(e) => api_error(&self.state, &format!("status of {ns}/{name}"), &e),
        }
    }

    /// kube-proxy's part: each ClusterIP port DNATed to its first ready endpoint.
    async fn sync_proxy(&self) {
        let services: Api<Service> = Api::all(self.proxy.clone());
        let slices: Api<EndpointSlice> = Api::all(self.proxy.clone());
        let (svcs, eps) = match (
            services.list(&ListParams::default()).await,
            slices.list(&ListParams::default()).await,
        ) {
            (Ok(s), Ok(e)) => (s.items, e.items),
            (Err(e), _) | (_, Err(e)) => return api_error(&self.state, "proxy lists", &e),
        };
        let mut rules = Vec::new();
        for svc in &svcs {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let Some(spec) = &svc.spec else { continue };
            let Some(cip) = spec
                .cluster_ip
                .as_deref()
                .and_then(|c| c.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            for sp in spec.ports.iter().flatten() {
                let proto = sp.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                let target = eps
                    .iter()
                    .filter(|s| {
                        s.metadata.namespace.as_deref() == Some(&ns)
                            && s.metadata
                                .labels
                                .as_ref()
                                .and_then(|l| l.get("kubernetes.io/service-name"))
                                == Some(&name)
                            && s.address_type == "IPv4"
                    })
                    .find_map(|s| {
                        let port = s.ports.iter().flatten().find(|p| p.name == sp.name)?.port?;
                        let ep = s.endpoints.iter().find(|e| {
                            e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
                        })?;
                        Some((ep.addresses.first()?.clone(), port))
                    });
                if let Some((addr, port)) = target {
                    rules.push(format!(
                        "    ip daddr {cip} {proto} dport {} dnat to {addr}:{port}",
                        sp.port
                    ));
                }
            }
        }
        rules.sort();
        let ruleset = format!(
            "table ip trustmap_test_proxy {{\n  chain prerouting {{\n    type nat hook prerouting \
             priority dstnat; policy accept;\n{}\n  }}\n}}\n",
            rules.join("\n")
        );
        for i in 1..=self.nodes {
            let same = self.state.lock().expect("lock").proxy_rules.get(&i) == Some(&ruleset);
            if same {
                continue;
            }
            match self.fabric.nft(i, "trustmap_test_proxy", &ruleset) {
                Ok(()) => {
                    self.state
                        .lock()
                        .expect("lock")
                        .proxy_rules
                        .insert(i, ruleset.clone());
                }
                Err(e) => note(&self.state, format!("error: nft on {}: {e}", node_name(i))),
            }
        }
    }
}

/// The node the DaemonSet controller asked for: `nodeAffinity` on `metadata.name`, or
/// `nodeName`.
fn required_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

/// A hostPath as the node sees it: kernel filesystems and the netns directory are the machine's
/// own; anything else (state, config) is the node's private directory, as each real node has
/// its own disk.
fn host_path(node_root: &Path, path: &str) -> PathBuf {
    const SHARED: [&str; 5] = ["/sys", "/proc", "/dev", "/run/netns", "/lib/modules"];
    if SHARED
        .iter()
        .any(|s| path == *s || path.starts_with(&format!("{s}/")))
    {
        PathBuf::from(path)
    } else {
        node_root.join(path.trim_start_matches('/'))
    }
}

/// A downward-API field.
fn field(pod: &Pod, node: u8, path: &str) -> Result<String, String> {
    Ok(match path {
        "spec.nodeName" => node_name(node),
        "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
        "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.podIP" => node_ipv4(node).to_string(),
        other => return Err(format!("downward API field {other} is not supported")),
    })
}

/// `$(VAR)` expansion as the kubelet does for args and env.
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = s.to_owned();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// In the child, before exec: the node's network namespace, a mount namespace of its own, and
/// the pod's volumes bind-mounted at their mount paths.
fn enter_pod_sandbox(netns: &str, mounts: &[(PathBuf, PathBuf, bool)]) -> std::io::Result<()> {
    use nix::{
        mount::{MsFlags, mount},
        sched::{CloneFlags, setns, unshare},
    };
    let to_io = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
    let file = fs::File::open(netns)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(to_io)?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(to_io)?;
    mount::<str, str, str, str>(None, "/", None, MsFlags::MS_REC | MsFlags::MS_SLAVE, None)
        .map_err(to_io)?;
    for (src, dst, ro) in mounts {
        mount::<Path, Path, str, str>(
            Some(src),
            dst,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(to_io)?;
        if *ro {
            mount::<str, Path, str, str>(
                None,
                dst,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None,
            )
            .map_err(to_io)?;
        }
    }
    Ok(())
}

/// An HTTP GET from inside a namespace; true on a 2xx answer.
pub fn http_ok(netns: &str, ip: Ipv4Addr, port: u16, path: &str) -> bool {
    http_get(netns, ip, port, path).is_some_and(|(code, _)| (200..300).contains(&code))
}

/// An HTTP/1.0 GET from inside a namespace: the status code and the body.
pub fn http_get(netns: &str, ip: Ipv4Addr, port: u16, path: &str) -> Option<(u16, String)> {
    let path = path.to_owned();
    crate::traffic::spawn_in_netns(netns, move || {
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((code, body))
    })
    .join()
    .ok()
    .flatten()
}

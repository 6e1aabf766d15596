//! The inventory from the API server: one kube-rs `watcher` + `reflector` per kind (pods,
//! namespaces, services, endpoint slices, network policies, nodes), each trimmed with
//! `.modify()` and retried with the default backoff.
//!
//! Recovery is the watcher's: a watch that ends is resumed from the last resourceVersion; a
//! `410 Gone` (the version is too old, after a long outage) makes it list again, and the store
//! swaps the new list in whole at `InitDone`, so objects deleted meanwhile disappear. Errors
//! (5xx, connection refused) are retried after the default backoff (0.8 s doubling to 30 s,
//! jittered, reset after 2 minutes of health), while the stores keep serving their last state.

use std::{
    fmt::Debug,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::admin::{AdminNetworkPolicyRes, BaselineAdminNetworkPolicyRes, ClusterNetworkPolicyRes};
use super::snapshot::{
    Objects, trim_endpoint_slice, trim_namespace, trim_network_policy, trim_node, trim_pod,
    trim_service,
};
use crate::inventory::Loaded;

/// Which pods to watch.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PodScope {
    /// Every pod of the cluster: needed to name the remote end of a connection and to evaluate
    /// policies whose peers are pods on other nodes.
    #[default]
    Cluster,
    /// Only the pods of this node (field selector `spec.nodeName=<node>`): less memory and API
    /// traffic, but remote peers are then known by IP only.
    Node(String),
}

/// The state of one kind's watch, for readiness and metrics.
#[derive(Debug)]
struct WatchState {
    synced: tokio::sync::watch::Sender<bool>,
    lists: AtomicU64,
    errors: AtomicU64,
    /// Changes applied to the store: one per added, modified or deleted object, and one per
    /// completed list (the store is swapped whole then).
    changes: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// A kind whose CRD may be missing: `404 Not Found` then means "not installed", which
    /// counts as synced (nothing to list) while the watch keeps retrying.
    optional: bool,
    /// The last answer was `404 Not Found` (optional kinds only).
    missing: std::sync::atomic::AtomicBool,
}

/// A copy of a [`WatchState`] at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchStatus {
    pub kind: &'static str,
    /// The first list is complete: the store holds the whole (selected) collection.
    pub synced: bool,
    /// Lists started: 1 at start, one more per relist (after a `410 Gone`).
    pub lists: u64,
    /// Errors seen (each followed by a backoff and a retry).
    pub errors: u64,
    pub last_error: Option<String>,
}

/// The API server's status code of a watcher error, if it is one.
fn status_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

/// Whether a watcher error is the API server's `403 Forbidden`.
fn forbidden(e: &watcher::Error) -> bool {
    status_code(e) == Some(403)
}

impl Default for WatchState {
    fn default() -> Self {
        Self {
            synced: tokio::sync::watch::Sender::new(false),
            lists: AtomicU64::default(),
            errors: AtomicU64::default(),
            changes: AtomicU64::default(),
            last_error: Mutex::default(),
            optional: false,
            missing: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl WatchState {
    fn observe<K>(&self, kind: &'static str, item: &Result<Event<K>, watcher::Error>) {
        match item {
            Ok(Event::Init) => {
                let n = self.lists.fetch_add(1, Ordering::Relaxed) + 1;
                if n > 1 {
                    tracing::info!(kind, lists = n, "listing again");
                }
            }
            Ok(Event::Apply(_) | Event::Delete(_)) => {
                self.changes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::InitDone) => {
                if self.missing.swap(false, Ordering::Relaxed) {
                    tracing::info!(kind, "installed: its objects are now read");
                }
                self.changes.fetch_add(1, Ordering::Relaxed);
                if !self.synced.send_replace(true) {
                    tracing::info!(kind, "initial list done");
                }
            }
            Ok(_) => {}
            Err(e) if self.optional && status_code(e) == Some(404) => {
                if !self.missing.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        kind,
                        "not installed (no such API resource): verdicts are without it; \
                         looking again after backoff"
                    );
                    // Nothing to list: as good as synced. Objects seen before go with the
                    // next list, should the CRD come back.
                    self.changes.fetch_add(1, Ordering::Relaxed);
                }
                self.synced.send_replace(true);
            }
            Err(e) => {
                let first = self.errors.fetch_add(1, Ordering::Relaxed) == 0;
                if forbidden(e) {
                    // RBAC: retrying will not help until the ClusterRole changes. Say so plainly,
                    // once per kind and then at every tenth failure, and keep retrying (no crash
                    // loop: a fixed ClusterRole takes effect without a restart).
                    let n = self.errors.load(Ordering::Relaxed);
                    if first || n.is_multiple_of(10) {
                        tracing::error!(
                            kind,
                            error = %e,
                            "forbidden: the agent's ServiceAccount may not list and watch {kind}; \
                             the ClusterRole trustmap-agent needs get, list and watch on it \
                             (docs/deploy.md); retrying"
                        );
                    }
                } else {
                    tracing::warn!(kind, error = %e, "watch failed; retrying after backoff");
                }
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        }
    }

    fn status(&self, kind: &'static str) -> WatchStatus {
        WatchStatus {
            kind,
            synced: *self.synced.borrow(),
            lists: self.lists.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

struct Reflected<K: Resource<DynamicType = ()> + Clone + 'static> {
    kind: &'static str,
    store: Store<K>,
    state: Arc<WatchState>,
}

impl<K> Reflected<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts the watch task of one kind.
    fn start(
        kind: &'static str,
        api: Api<K>,
        config: watcher::Config,
        trim: fn(&mut K),
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Self {
        let (store, writer) = reflector::store();
        let state = Arc::new(WatchState::default());
        let stream = reflector::reflector(
            writer,
            watcher::watcher(api, config).default_backoff().modify(trim),
        );
        tasks.push(tokio::spawn(drive(kind, stream, state.clone())));
        Self { kind, store, state }
    }

    /// A kind whose CRD may not be installed: until a list succeeds, the API is probed once a
    /// minute (a 404 counts as synced and empty), and only then is it watched. Watching a
    /// missing kind would relist every second or so, on every node.
    fn start_optional(kind: &'static str, api: Api<K>, tasks: &mut Vec<JoinHandle<()>>) -> Self {
        let (store, writer) = reflector::store();
        let state = Arc::new(WatchState {
            optional: true,
            ..WatchState::default()
        });
        let st = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut warned = false;
            loop {
                match api.list(&kube::api::ListParams::default().limit(1)).await {
                    Ok(_) => break,
                    Err(e) => {
                        let missing = matches!(&e, kube::Error::Api(s) if s.code == 404);
                        if missing && !st.missing.swap(true, Ordering::Relaxed) {
                            tracing::info!(
                                kind,
                                "not installed (no such API resource): verdicts are without it; \
                             looking again every minute"
                            );
                            st.changes.fetch_add(1, Ordering::Relaxed);
                        } else if !missing && !warned {
                            warned = true;
                            tracing::warn!(
                                kind,
                                error = %e,
                                "cannot list this optional kind: verdicts are without it; trying \
                                 again every minute"
                            );
                        }
                        if !missing {
                            st.errors.fetch_add(1, Ordering::Relaxed);
                            *st.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(e.to_string());
                        }
                        // Optional: never what keeps the agent unready.
                        st.synced.send_replace(true);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            }
            let stream = reflector::reflector(
                writer,
                watcher::watcher(api, watcher::Config::default()).default_backoff(),
            );
            drive(kind, stream, st).await;
        }));
        Self { kind, store, state }
    }

    fn objects(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    fn status(&self) -> WatchStatus {
        self.state.status(self.kind)
    }
}

async fn drive<K>(
    kind: &'static str,
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    state: Arc<WatchState>,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        state.observe(kind, &item);
    }
    // The watcher never ends by itself; reaching here means the runtime is shutting down.
    tracing::debug!(kind, "watch ended");
}

/// The cluster's inventory, kept up to date by watches. Dropping it stops the watches.
pub struct KubeInventory {
    namespaces: Reflected<Namespace>,
    nodes: Reflected<Node>,
    pods: Reflected<Pod>,
    services: Reflected<Service>,
    endpoint_slices: Reflected<EndpointSlice>,
    network_policies: Reflected<NetworkPolicy>,
    cluster_network_policies: Reflected<ClusterNetworkPolicyRes>,
    admin_network_policies: Reflected<AdminNetworkPolicyRes>,
    baseline_admin_network_policies: Reflected<BaselineAdminNetworkPolicyRes>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeInventory {
    /// Starts the watches on `client`; must be called inside a tokio runtime. Returns at once:
    /// see [`synced`](Self::synced) and [`wait_synced`](Self::wait_synced).
    pub fn start(client: Client, pods: PodScope) -> Self {
        let mut tasks = Vec::new();
        let all = watcher::Config::default;
        let pod_config = match &pods {
            PodScope::Cluster => all(),
            PodScope::Node(node) => all().fields(&format!("spec.nodeName={node}")),
        };
        Self {
            namespaces: Reflected::start(
                "Namespace",
                Api::all(client.clone()),
                all(),
                trim_namespace,
                &mut tasks,
            ),
            nodes: Reflected::start(
                "Node",
                Api::all(client.clone()),
                all(),
                trim_node,
                &mut tasks,
            ),
            pods: Reflected::start(
                "Pod",
                Api::all(client.clone()),
                pod_config,
                trim_pod,
                &mut tasks,
            ),
            services: Reflected::start(
                "Service",
                Api::all(client.clone()),
                all(),
                trim_service,
                &mut tasks,
            ),
            endpoint_slices: Reflected::start(
                "EndpointSlice",
                Api::all(client.clone()),
                all(),
                trim_endpoint_slice,
                &mut tasks,
            ),
            network_policies: Reflected::start(
                "NetworkPolicy",
                Api::all(client.clone()),
                all(),
                trim_network_policy,
                &mut tasks,
            ),
            cluster_network_policies: Reflected::start_optional(
                "ClusterNetworkPolicy",
                Api::all(client.clone()),
                &mut tasks,
            ),
            admin_network_policies: Reflected::start_optional(
                "AdminNetworkPolicy",
                Api::all(client.clone()),
                &mut tasks,
            ),
            baseline_admin_network_policies: Reflected::start_optional(
                "BaselineAdminNetworkPolicy",
                Api::all(client),
                &mut tasks,
            ),
            tasks,
        }
    }

    /// Every watch has completed its first list (for `/readyz`). Stays true through later
    /// outages: the stores then serve their last state while the watches retry.
    pub fn synced(&self) -> bool {
        self.status().iter().all(|s| s.synced)
    }

    /// Waits until [`synced`](Self::synced).
    pub async fn wait_synced(&self) {
        let states = [
            &self.namespaces.state,
            &self.nodes.state,
            &self.pods.state,
            &self.services.state,
            &self.endpoint_slices.state,
            &self.network_policies.state,
            &self.cluster_network_policies.state,
            &self.admin_network_policies.state,
            &self.baseline_admin_network_policies.state,
        ];
        for state in states {
            // The sender lives as long as `self`: waiting cannot fail.
            let _ = state.synced.subscribe().wait_for(|synced| *synced).await;
        }
    }

    /// The state of each watch, in a fixed order.
    pub fn status(&self) -> Vec<WatchStatus> {
        vec![
            self.namespaces.status(),
            self.nodes.status(),
            self.pods.status(),
            self.services.status(),
            self.endpoint_slices.status(),
            self.network_policies.status(),
            self.cluster_network_policies.status(),
            self.admin_network_policies.status(),
            self.baseline_admin_network_policies.status(),
        ]
    }

    /// The stores' contents now.
    pub fn objects(&self) -> Objects {
        Objects {
            namespaces: self.namespaces.objects(),
            nodes: self.nodes.objects(),
            pods: self.pods.objects(),
            services: self.services.objects(),
            endpoint_slices: self.endpoint_slices.objects(),
            network_policies: self.network_policies.objects(),
            cluster_network_policies: self.cluster_network_policies.objects(),
            admin_network_policies: self.admin_network_policies.objects(),
            baseline_admin_network_policies: self.baseline_admin_network_policies.objects(),
        }
    }

    /// The inventory and policies of the stores now, with notes on objects left out.
    pub fn snapshot(&self) -> Loaded {
        self.objects().build()
    }

    /// A number that grows whenever a store changes: equal numbers mean equal stores, so a
    /// caller snapshots again only when it differs from the last one it took.
    pub fn generation(&self) -> u64 {
        [
            &self.namespaces.state,
            &self.nodes.state,
            &self.pods.state,
            &self.services.state,
            &self.endpoint_slices.state,
            &self.network_policies.state,
            &self.cluster_network_policies.state,
            &self.admin_network_policies.state,
            &self.baseline_admin_network_policies.state,
        ]
        .iter()
        .map(|s| s.changes.load(Ordering::Relaxed))
        .sum()
    }

    /// The UID of a pod in the store (for the `involvedObject` of Events).
    pub fn pod_uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.pods
            .store
            .get(&reflector::ObjectRef::new(name).within(namespace))
            .and_then(|p| p.metadata.uid.clone())
    }

    /// The names of the nodes in the store (for the garbage collection of `FlowEdges`).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .objects()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect()
    }
}

impl Drop for KubeInventory {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

//! `trustmap agent`: the DaemonSet's process (see `daemon`). This file parses the arguments and
//! the configuration file and wires the parts together; the loop runs one *generation* per
//! inventory snapshot: the flagger and identities borrow the snapshot, and a new snapshot (or a
//! baseline frozen or thawed) ends the generation and starts the next, keeping every state.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use chrono::Utc;
use serde::Deserialize;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};
use tracing::{info, warn};

use super::observe::{CaptureArgs, duration, sleep_until};
use crate::{
    alert::{
        AlertGate, GateConfig,
        scan::{ScanConfig, ScanDetector},
        sinks::{JsonLines, Webhook, WebhookConfig},
    },
    daemon::{
        Feed, Flagger, Mode, ModeConfig, Pipeline, Sinks,
        baseline::{self, FrozenSet},
        server, store,
    },
    graph,
    identity::{Identities, IdentityOptions, WorkloadSelectors},
    inventory::{Loaded, load_paths},
    kube::{
        DEFAULT_NAMESPACE, EventSink, EventSinkConfig, KubeInventory, PodScope, PublishLoop,
        client_from_kubeconfig, graph_to_records,
    },
    metrics::Metrics,
    policy::{Evaluator, Labels, Policy},
    reach,
    render::{self, GraphModel},
    synth::{self, SynthOptions},
};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// Where the inventory comes from: the API server, or static manifests. Default: static
    /// manifests when --manifests is given, else the API server.
    #[arg(long, value_enum)]
    pub inventory: Option<InventorySource>,
    /// Manifest files or directories, for `--inventory manifests`. Read again when they change,
    /// so a namespace's mode can be switched without a restart.
    #[arg(long, num_args = 1..)]
    pub manifests: Vec<PathBuf>,
    /// Kubeconfig for `--inventory kube`; default: in-cluster, else as kubectl finds it.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name: the FlowEdges objects it publishes and the source of its Events.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Namespace of the FlowEdges objects (where trustmap runs).
    #[arg(long, env = "POD_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Seconds between publications of the node's edges as FlowEdges (`--inventory kube`).
    /// Default: the configuration's `publishIntervalSeconds`, else 60.
    #[arg(long, value_name = "SECS")]
    pub publish_interval: Option<u64>,
    /// Seconds between checks for a changed inventory (a new snapshot is taken only then).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub refresh_interval: f64,
    /// Do not report alerts as Kubernetes Events (`--inventory kube` reports them by default).
    #[arg(long)]
    pub no_events: bool,
    /// Accepted policies (a directory or files of NetworkPolicies): the baseline of namespaces
    /// in `alert` mode. Without it, each namespace's learned policies are frozen as its
    /// baseline when its mode becomes `alert`.
    #[arg(long, num_args = 1..)]
    pub baseline: Vec<PathBuf>,
    /// Configuration file (the ConfigMap's `config.yaml`): modes per namespace, DNS, limits.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where learned state is kept across restarts.
    #[arg(long, default_value = "/var/lib/trustmap")]
    pub state_dir: PathBuf,
    /// JSON-lines alert sink: a file (appended to) or `-` for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub alerts: Option<String>,
    /// Webhook that receives each alert as a JSON POST (http or https), with a timeout and
    /// retries.
    #[arg(long)]
    pub webhook: Option<String>,
    /// Address of the HTTP endpoints (/metrics, /healthz, /readyz, /flows). With hostNetwork,
    /// 0.0.0.0 is the node's addresses.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,
    /// Stop after this many seconds (tests and demos); default: until SIGINT or SIGTERM.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InventorySource {
    Kube,
    Manifests,
}

/// The configuration file (deploy/configmap.yaml's `config.yaml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentConfig {
    /// The mode of namespaces neither annotated nor listed.
    #[serde(default)]
    pub default_mode: Mode,
    /// Namespace name → mode.
    #[serde(default)]
    pub namespaces: BTreeMap<String, Mode>,
    #[serde(default)]
    pub dns: DnsConfig,
    /// How often to publish the node's edges, in seconds.
    #[serde(default)]
    pub publish_interval_seconds: Option<u64>,
    /// Alerts that may go out at once after a quiet period.
    #[serde(default)]
    pub alert_burst: Option<u32>,
    /// Sustained alerts per second.
    #[serde(default)]
    pub alerts_per_second: Option<f64>,
    /// Webhook that receives each alert (`--webhook` takes precedence).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Scan alerts: distinct targets of one source's refused or unanswered attempts within a
    /// window that make a scan (default 10).
    #[serde(default)]
    pub scan_threshold: Option<usize>,
    /// Scan alerts: the window, in seconds (default 60).
    #[serde(default)]
    pub scan_window_seconds: Option<u64>,
}

/// The cluster DNS, which learned policies keep reachable.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DnsConfig {
    pub namespace: String,
    pub pod_labels: Labels,
}

impl Default for DnsConfig {
    fn default() -> Self {
        let d = IdentityOptions::default();
        Self {
            namespace: d.dns_namespace,
            pod_labels: d.dns_labels,
        }
    }
}

impl AgentConfig {
    fn modes(&self) -> ModeConfig {
        ModeConfig {
            default: self.default_mode,
            namespaces: self.namespaces.clone(),
        }
    }

    fn identity_options(&self) -> IdentityOptions {
        IdentityOptions {
            dns_namespace: self.dns.namespace.clone(),
            dns_labels: self.dns.pod_labels.clone(),
            ..IdentityOptions::default()
        }
    }

    fn synth_options(&self) -> SynthOptions {
        SynthOptions {
            dns_namespace: self.dns.namespace.clone(),
            dns_labels: self.dns.pod_labels.clone(),
            ..SynthOptions::default()
        }
    }
}

impl AgentArgs {
    fn inventory_source(&self) -> InventorySource {
        self.inventory.unwrap_or(if self.manifests.is_empty() {
            InventorySource::Kube
        } else {
            InventorySource::Manifests
        })
    }
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let config: AgentConfig = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_yaml::from_str(&text)
                .with_context(|| format!("{}: invalid agent configuration", p.display()))?
        }
        None => AgentConfig::default(),
    };
    match args.inventory_source() {
        InventorySource::Manifests if args.manifests.is_empty() => {
            anyhow::bail!("--inventory manifests needs --manifests PATH...")
        }
        InventorySource::Kube if args.node_name.as_deref().is_none_or(str::is_empty) => {
            anyhow::bail!(
                "--inventory kube needs this node's name: pass --node-name or set NODE_NAME \
                 (the DaemonSet sets it from spec.nodeName)"
            )
        }
        _ => {}
    }
    anyhow::ensure!(
        args.refresh_interval.is_finite() && args.refresh_interval > 0.0,
        "--refresh-interval must be a positive number of seconds"
    );
    let duration = duration(args.duration)?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    // The state (the node's connection map, frozen baselines) is for the agent alone.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&args.state_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", args.state_dir.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(agent(args, config, duration))?;
    Ok(ExitCode::SUCCESS)
}

/// Why the agent stops waiting or running.
async fn stop_signal(deadline: Option<Instant>) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
        _ = sleep_until(deadline) => {}
    }
    Ok(())
}

async fn agent(
    args: AgentArgs,
    config: AgentConfig,
    duration: Option<Duration>,
) -> anyhow::Result<()> {
    let deadline = duration.map(|d| Instant::now() + d);
    let modes = config.modes();
    let id_opts = config.identity_options();
    let synth_opts = config.synth_options();
    let accepted: Option<Vec<Policy>> = if args.baseline.is_empty() {
        None
    } else {
        Some(
            load_paths(&args.baseline)
                .context("reading --baseline")?
                .policies,
        )
    };
    let baseline_dir = args.state_dir.join("baseline");
    let mut frozen: FrozenSet = if accepted.is_some() {
        FrozenSet::new()
    } else {
        store::load_frozen(&baseline_dir)?
    };

    let metrics = Metrics::default();
    let shared = server::Shared::new(metrics.register());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    info!(address = %args.listen, "serving /metrics, /healthz, /readyz, /flows");
    let app = server::router(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The inventory, and with the API server, the publisher and the Event sink.
    let mut sinks = Sinks::default();
    let mut publish_tx = None;
    let (mut feed, first_loaded) = match args.inventory_source() {
        InventorySource::Manifests => {
            Feed::manifests(args.manifests.clone()).context("reading --manifests")?
        }
        InventorySource::Kube => {
            let node = args.node_name.clone().unwrap_or_default();
            let client = client_from_kubeconfig(args.kubeconfig.as_deref()).await?;
            let inventory = Arc::new(KubeInventory::start(client.clone(), PodScope::Cluster));
            info!("waiting for the first list of every watched kind");
            tokio::select! {
                _ = inventory.wait_synced() => {}
                r = stop_signal(deadline) => {
                    r?;
                    info!("stopped before the inventory synced");
                    return Ok(());
                }
            }
            info!("inventory synced");
            let discovery = client.clone();
            tokio::spawn(async move {
                for w in crate::kube::unevaluated::served_kinds_warnings(&discovery).await {
                    tracing::warn!("{w}");
                }
            });
            let (tx, rx) = tokio::sync::watch::channel(Vec::new());
            let nodes = inventory.clone();
            PublishLoop {
                client: client.clone(),
                namespace: args.namespace.clone(),
                node: node.clone(),
                known_nodes: Box::new(move || nodes.node_names().into_iter().collect()),
                failures: metrics.publish_failures.clone(),
            }
            .spawn(rx);
            publish_tx = Some(tx);
            if !args.no_events {
                let uids = inventory.clone();
                sinks.events = Some(EventSink::start(
                    client,
                    EventSinkConfig { node, queue: 1024 },
                    Arc::new(move |ns, name| uids.pod_uid(ns, name)),
                    metrics.alert_delivery_failures.clone(),
                ));
            }
            Feed::kube(inventory)
        }
    };
    if let Some(t) = &args.alerts {
        sinks.json = Some(JsonLines::open(t).with_context(|| format!("opening {t}"))?);
    }
    sinks.webhook = args
        .webhook
        .clone()
        .or_else(|| config.webhook.clone())
        .map(|url| {
            Webhook::start(
                WebhookConfig {
                    url,
                    timeout: Duration::from_secs(5),
                    attempts: 3,
                    first_retry: Duration::from_millis(200),
                    queue: 1024,
                },
                metrics.alert_delivery_failures.clone(),
            )
        });

    let graph_file = args.state_dir.join("graph.jsonl");
    let graph = graph::state::load(&graph_file).context("loading the graph state file")?;
    info!(edges = graph.len(), dir = %args.state_dir.display(), "state loaded");
    let gate = AlertGate::new(GateConfig {
        burst: config.alert_burst.unwrap_or(GateConfig::default().burst),
        per_second: config
            .alerts_per_second
            .unwrap_or(GateConfig::default().per_second),
    });
    let mut pipeline = Pipeline::new(graph, gate, metrics.clone(), sinks);
    let scan_defaults = ScanConfig::default();
    pipeline.scans = ScanDetector::new(ScanConfig {
        threshold: config
            .scan_threshold
            .unwrap_or(scan_defaults.threshold)
            .max(1),
        window: config
            .scan_window_seconds
            .map_or(scan_defaults.window, |s| {
                chrono::Duration::seconds(s.max(1) as i64)
            }),
    });
    let save = |p: &mut Pipeline| -> anyhow::Result<()> {
        if std::mem::take(&mut p.dirty) {
            graph::state::save(&graph_file, &p.graph).context("saving the graph state file")?;
        }
        Ok(())
    };

    let (mut capture, first) = args.capture.start().await?;
    let mut pending = first;
    let mut loaded = Arc::new(first_loaded);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut refresh = tokio::time::interval(Duration::from_secs_f64(args.refresh_interval));
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let publish_every = Duration::from_secs(
        args.publish_interval
            .or(config.publish_interval_seconds)
            .unwrap_or(60)
            .max(1),
    );
    let mut publish = tokio::time::interval(publish_every);
    publish.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stop = stop_signal(deadline);
    tokio::pin!(stop);
    let mut dropped_reported = 0;
    let mut malformed_reported = 0;
    let mut dns_reported = crate::datapath::DnsCounters::default();
    let mut dns_dropped_reported = 0;
    // Drawing the graph evaluates every pair of workloads: not on every tick.
    let mut draw = tokio::time::interval(Duration::from_secs(15));
    let node_title = args.node_name.clone().unwrap_or_else(|| "this node".into());
    // With the API server, each agent alerts only for the connections its node reports; a
    // static inventory has no node placement to go by.
    let local_node = match args.inventory_source() {
        InventorySource::Kube => args.node_name.as_deref(),
        InventorySource::Manifests => None,
    };
    draw.set_missed_tick_behavior(MissedTickBehavior::Delay);

    'generation: loop {
        let snapshot = loaded.clone();
        let ids = Identities::new(&snapshot.inventory, id_opts.clone());
        if accepted.is_none() && feed.synced() {
            apply_plan(
                &snapshot,
                &modes,
                &ids,
                &pipeline,
                &synth_opts,
                &baseline_dir,
                &mut frozen,
            );
        }
        let baseline_policies = match &accepted {
            Some(a) => Some(a.clone()),
            None if frozen.is_empty() => None,
            None => Some(baseline::union(&frozen)),
        };
        let current =
            Evaluator::new(&snapshot.inventory, &snapshot.policies).with_admin(&snapshot.admin);
        let base_eval = baseline_policies
            .as_ref()
            .map(|b| Evaluator::new(&snapshot.inventory, b).with_admin(&snapshot.admin));
        let mut flagger = Flagger::new(&snapshot.inventory, current, base_eval, &modes);
        if let Some(node) = local_node {
            flagger = flagger.on_node(node);
        }
        // Records that waited for this snapshot to know their addresses go first.
        let mut batch = pipeline.take_parked();
        batch.append(&mut pending);
        pipeline.handle(&flagger, &ids, &batch);
        if !shared.ready.load(Ordering::Relaxed) {
            metrics
                .attached_interfaces
                .set(capture.attached_count() as i64);
            publish_flows(&shared, &pipeline);
            shared.ready.store(feed.synced(), Ordering::Relaxed);
            info!(interfaces = capture.attached_count(), "ready");
        }
        loop {
            tokio::select! {
                batch = capture.next_batch() => pipeline.handle(&flagger, &ids, &batch?),
                _ = tick.tick() => {
                    let c = capture.counters();
                    metrics.events_dropped.inc_by(c.events_dropped.saturating_sub(dropped_reported));
                    dropped_reported = c.events_dropped;
                    metrics.malformed_packets.inc_by(c.malformed.saturating_sub(malformed_reported));
                    malformed_reported = c.malformed;
                    let d = capture.dns_counters();
                    metrics.dns_responses.inc_by(d.parsed.saturating_sub(dns_reported.parsed));
                    metrics.dns_malformed.inc_by(
                        (d.malformed + d.not_response)
                            .saturating_sub(dns_reported.malformed + dns_reported.not_response),
                    );
                    metrics.dns_dropped.inc_by(c.dns_dropped.saturating_sub(dns_dropped_reported));
                    dns_dropped_reported = c.dns_dropped;
                    metrics.dns_names.set(d.names as i64);
                    dns_reported = d;
                    metrics.attached_interfaces.set(capture.attached_count() as i64);
                    metrics
                        .one_direction_interfaces
                        .set(capture.one_direction_interfaces().len() as i64);
                    shared.ready.store(feed.synced(), Ordering::Relaxed);
                    pipeline.send_summary();
                    publish_flows(&shared, &pipeline);
                    save(&mut pipeline)?;
                }
                _ = refresh.tick() => {
                    if let Some(next) = feed.poll() {
                        metrics.inventory_refreshes.inc();
                        loaded = Arc::new(next);
                        continue 'generation;
                    }
                    if accepted.is_none() && feed.synced() {
                        let names: BTreeSet<String> = frozen.keys().cloned().collect();
                        if !baseline::plan(&snapshot.inventory, &modes, &names).is_empty() {
                            continue 'generation;
                        }
                    }
                }
                _ = draw.tick() => {
                    let observed = reach::observed_connections(&ids, &pipeline.graph);
                    let selectors = WorkloadSelectors::new(&ids);
                    let ctx = synth::Context {
                        identities: &ids,
                        selectors: &selectors,
                        cluster_cidrs: ids.cluster_cidrs(),
                    };
                    let learned = synth::learn(&ctx, &pipeline.graph, &synth_opts);
                    let model = GraphModel::build(flagger.current(), Some(&observed))
                        .with_policies(&learned);
                    let page = render::render_html(&model, &format!("trustmap: {node_title}"));
                    if let Ok(mut g) = shared.graph.write() {
                        *g = page;
                    }
                }
                _ = publish.tick(), if publish_tx.is_some() => {
                    if let Some(tx) = &publish_tx {
                        tx.send_replace(graph_to_records(&pipeline.graph, Utc::now()));
                    }
                }
                r = &mut stop => {
                    r?;
                    break 'generation;
                }
            }
        }
    }
    let last = capture.stop();
    {
        let ids = Identities::new(&loaded.inventory, id_opts.clone());
        let baseline_policies = accepted
            .clone()
            .or_else(|| (!frozen.is_empty()).then(|| baseline::union(&frozen)));
        let current = Evaluator::new(&loaded.inventory, &loaded.policies).with_admin(&loaded.admin);
        let base_eval = baseline_policies
            .as_ref()
            .map(|b| Evaluator::new(&loaded.inventory, b).with_admin(&loaded.admin));
        let mut flagger = Flagger::new(&loaded.inventory, current, base_eval, &modes);
        if let Some(node) = local_node {
            flagger = flagger.on_node(node);
        }
        pipeline.handle(&flagger, &ids, &last);
    }
    pipeline.dirty = true;
    save(&mut pipeline)?;
    info!(
        edges = pipeline.graph.len(),
        suppressed = pipeline.gate.suppressed(),
        "stopped"
    );
    Ok(())
}

/// Freezes the namespaces that entered `alert` mode and thaws those that left it, persisting
/// each change. A namespace whose freeze fails is retried at the next generation.
fn apply_plan(
    snapshot: &Loaded,
    modes: &ModeConfig,
    ids: &Identities<'_>,
    pipeline: &Pipeline,
    synth_opts: &SynthOptions,
    dir: &std::path::Path,
    frozen: &mut FrozenSet,
) {
    let names: BTreeSet<String> = frozen.keys().cloned().collect();
    let plan = baseline::plan(&snapshot.inventory, modes, &names);
    for ns in plan.freeze {
        let result = baseline::freeze(ids, &pipeline.graph, &ns, synth_opts)
            .map_err(anyhow::Error::from)
            .and_then(|f| {
                store::save_frozen(dir, &ns, &f)?;
                Ok(f)
            });
        match result {
            Ok(f) => {
                info!(
                    namespace = ns,
                    policies = f.policies.len(),
                    "alert mode: froze the learned policies as the baseline"
                );
                frozen.insert(ns, f);
            }
            Err(e) => warn!(namespace = ns, error = %e, "freezing the baseline failed"),
        }
    }
    for ns in plan.thaw {
        if let Err(e) = store::remove_frozen(dir, &ns) {
            warn!(namespace = ns, error = %e, "removing a thawed baseline failed");
        }
        info!(namespace = ns, "left alert mode: baseline dropped");
        frozen.remove(&ns);
    }
}

fn publish_flows(shared: &server::Shared, pipeline: &Pipeline) {
    if let Ok(mut f) = shared.flows.write() {
        *f = pipeline.flows_json();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployed_configmap_is_a_valid_agent_configuration() {
        let cm: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../../deploy/configmap.yaml")).expect("YAML");
        let text = cm["data"]["config.yaml"].as_str().expect("config.yaml key");
        let c: AgentConfig = serde_yaml::from_str(text).expect("valid agent configuration");
        let modes = c.modes();
        assert_eq!(modes.mode_of("kube-system", &Labels::new()), Mode::Off);
        assert_eq!(modes.mode_of("shop", &Labels::new()), Mode::Observe);
        assert_eq!(c.publish_interval_seconds, Some(60));
        assert_eq!(c.dns.namespace, "kube-system");
    }

    #[test]
    fn an_unknown_configuration_key_is_refused() {
        assert!(serde_yaml::from_str::<AgentConfig>("defaultMode: observe\nmodez: {}\n").is_err());
    }
}

//! `trustmap agent`: the DaemonSet's process (see `daemon`).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::atomic::Ordering,
    time::{Duration, Instant as StdInstant},
};

use anyhow::Context as _;
use chrono::Utc;
use serde::Deserialize;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::Instant,
};
use tracing::{info, warn};

use super::observe::{CaptureArgs, duration, sleep_until};
use crate::{
    alert::{
        Alert, AlertGate, AlertKind, Decision, GateConfig,
        sinks::{JsonLines, Webhook, WebhookConfig},
    },
    daemon::{EdgeTable, Flagger, ModeConfig, server},
    flow::FlowRecord,
    inventory::load_paths,
    metrics::Metrics,
    policy::Evaluator,
};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// Where the inventory comes from: the API server, or static manifests.
    #[arg(long, value_enum, default_value_t = InventorySource::Kube)]
    pub inventory: InventorySource,
    /// Manifest files or directories, for `--inventory manifests`.
    #[arg(long, num_args = 1..)]
    pub manifests: Vec<PathBuf>,
    /// Accepted policies (a directory or files of NetworkPolicies): the baseline of namespaces
    /// in `alert` mode.
    #[arg(long, num_args = 1..)]
    pub baseline: Vec<PathBuf>,
    /// Configuration file (the ConfigMap's `config.yaml`): modes per namespace, alert limits.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where learned state is kept across restarts.
    #[arg(long, default_value = "/var/lib/trustmap")]
    pub state_dir: PathBuf,
    /// JSON-lines alert sink: a file (appended to) or `-` for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub alerts: Option<String>,
    /// Webhook that receives each alert as a JSON POST (http only for now).
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

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentConfig {
    #[serde(default)]
    pub modes: ModeConfig,
    /// Alerts that may go out at once after a quiet period.
    #[serde(default)]
    pub alert_burst: Option<u32>,
    /// Sustained alerts per second.
    #[serde(default)]
    pub alerts_per_second: Option<f64>,
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
    if args.inventory == InventorySource::Kube {
        anyhow::bail!(
            "--inventory kube is not available in this build yet: use --inventory manifests \
             --manifests PATH..."
        );
    }
    if args.manifests.is_empty() {
        anyhow::bail!("--inventory manifests needs --manifests PATH...");
    }
    let duration = duration(args.duration)?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(agent(args, config, duration))?;
    Ok(ExitCode::SUCCESS)
}

async fn agent(
    args: AgentArgs,
    config: AgentConfig,
    duration: Option<Duration>,
) -> anyhow::Result<()> {
    let loaded = load_paths(&args.manifests).context("reading --manifests")?;
    let baseline = if args.baseline.is_empty() {
        None
    } else {
        Some(
            load_paths(&args.baseline)
                .context("reading --baseline")?
                .policies,
        )
    };
    let current = Evaluator::new(&loaded.inventory, &loaded.policies);
    let base_eval = baseline
        .as_ref()
        .map(|b| Evaluator::new(&loaded.inventory, b));
    if config.modes.default == crate::daemon::Mode::Alert && base_eval.is_none() {
        warn!("alert mode without --baseline: unexpected-flow alerts need a baseline");
    }
    let flagger = Flagger::new(&loaded.inventory, current, base_eval, &config.modes);

    let state_file = args.state_dir.join("edges.jsonl");
    let mut edges = EdgeTable::load(&state_file).context("loading the state file")?;
    let mut gate = AlertGate::new(GateConfig {
        burst: config.alert_burst.unwrap_or(GateConfig::default().burst),
        per_second: config
            .alerts_per_second
            .unwrap_or(GateConfig::default().per_second),
    });
    // Edges learned before a restart have already alerted.
    for (edge, _) in edges.iter() {
        gate.remember(AlertKind::WouldDeny, edge.clone());
        gate.remember(AlertKind::UnexpectedFlow, edge.clone());
    }
    info!(edges = edges.len(), path = %state_file.display(), "state loaded");

    let metrics = Metrics::default();
    let shared = server::Shared::new(metrics.register());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    info!(address = %args.listen, "serving /metrics, /healthz, /readyz, /flows");
    let app = server::router(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut json_sink = match &args.alerts {
        Some(t) => Some(JsonLines::open(t).with_context(|| format!("opening {t}"))?),
        None => None,
    };
    let webhook = args.webhook.clone().map(|url| {
        Webhook::start(WebhookConfig {
            url,
            timeout: Duration::from_secs(5),
            attempts: 3,
            queue: 1024,
        })
    });

    let (mut capture, first) = args.capture.start().await?;
    let mut loop_state = Loop {
        flagger: &flagger,
        edges: &mut edges,
        gate: &mut gate,
        metrics: &metrics,
        json_sink: json_sink.as_mut(),
        webhook: webhook.as_ref(),
        started: StdInstant::now(),
        suppressed_reported: 0,
    };
    loop_state.handle(&first);
    metrics
        .attached_interfaces
        .set(capture.attached_count() as i64);
    publish(&shared, loop_state.edges);
    shared.ready.store(true, Ordering::Relaxed);
    info!(interfaces = capture.attached_count(), "ready");

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = duration.map(|d| Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut dropped_reported = 0;
    loop {
        tokio::select! {
            batch = capture.next_batch() => loop_state.handle(&batch?),
            _ = tick.tick() => {
                let c = capture.counters();
                metrics.events_dropped.inc_by(c.events_dropped.saturating_sub(dropped_reported));
                dropped_reported = c.events_dropped;
                metrics.attached_interfaces.set(capture.attached_count() as i64);
                publish(&shared, loop_state.edges);
                loop_state.edges.save(&state_file).context("saving the state file")?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sleep_until(deadline) => break,
        }
    }
    let last = capture.stop();
    loop_state.handle(&last);
    loop_state
        .edges
        .save(&state_file)
        .context("saving the state file")?;
    info!(
        edges = loop_state.edges.len(),
        suppressed = loop_state.gate.suppressed(),
        "stopped"
    );
    Ok(())
}

fn publish(shared: &server::Shared, edges: &EdgeTable) {
    let mut buf = Vec::new();
    buf.push(b'[');
    let mut lines = Vec::new();
    let _ = edges.write_jsonl(&mut lines);
    let joined = String::from_utf8_lossy(&lines)
        .trim_end()
        .replace('\n', ",");
    buf.extend_from_slice(joined.as_bytes());
    buf.push(b']');
    if let Ok(mut f) = shared.flows.write() {
        *f = String::from_utf8_lossy(&buf).into_owned();
    }
}

struct Loop<'a, 'f> {
    flagger: &'a Flagger<'f>,
    edges: &'a mut EdgeTable,
    gate: &'a mut AlertGate,
    metrics: &'a Metrics,
    json_sink: Option<&'a mut JsonLines>,
    webhook: Option<&'a Webhook>,
    started: StdInstant,
    suppressed_reported: u64,
}

impl Loop<'_, '_> {
    fn handle(&mut self, records: &[FlowRecord]) {
        let now = Utc::now();
        for r in records {
            self.metrics.flows_observed.inc();
            let outcome = match self.flagger.process(r, now) {
                Ok(Some(o)) => o,
                Ok(None) => continue,
                Err(e) => {
                    warn!(error = %e, "flow not resolved");
                    continue;
                }
            };
            let new_edge = self.edges.observe(&outcome.edge, outcome.seen);
            if new_edge {
                self.metrics.edges.set(self.edges.len() as i64);
            }
            for (kind, explanation) in outcome.alerts {
                let decision = self.gate.offer(kind, &outcome.edge, self.started.elapsed());
                if decision != Decision::Send {
                    continue;
                }
                match kind {
                    AlertKind::WouldDeny => self.metrics.would_deny_flows.inc(),
                    AlertKind::UnexpectedFlow => self.metrics.unexpected_flows.inc(),
                };
                let stats = self.edges.get(&outcome.edge);
                let alert = Alert {
                    kind,
                    edge: outcome.edge.clone(),
                    src_pod: outcome.src_pod.clone(),
                    first_seen: stats.map_or(outcome.seen, |s| s.first_seen),
                    count: stats.map_or(1, |s| s.count),
                    explanation: serde_json::to_value(&explanation).unwrap_or_default(),
                };
                if let Some(sink) = self.json_sink.as_deref_mut()
                    && let Err(e) = sink.send(&alert)
                {
                    warn!(error = %e, "writing an alert failed");
                }
                if let Some(w) = self.webhook
                    && !w.send(&alert)
                {
                    self.metrics.alerts_dropped.inc();
                }
            }
        }
        let suppressed = self.gate.suppressed();
        self.metrics
            .alerts_suppressed
            .inc_by(suppressed - self.suppressed_reported);
        self.suppressed_reported = suppressed;
    }
}

//! `trustmap learn`: flow records (and saved graphs) to least-privilege NetworkPolicies.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use chrono::{TimeDelta, Utc};
use ipnet::IpNet;

use crate::{
    flow::FlowRecord,
    graph::{FlowGraph, state},
    identity::{Identities, IdentityOptions, WorkloadSelectors},
    policy::Labels,
    synth::{self, Learned, PolicyFormat, SynthOptions},
};

#[derive(Debug, clap::Args)]
pub struct LearnArgs {
    /// Manifest files or directories: the pods, workloads, services and nodes flows are
    /// resolved against.
    #[arg(long, required = true, num_args = 1..)]
    pub manifests: Vec<PathBuf>,
    /// JSON-lines flow records, as `trustmap observe` writes them; `-` for stdin.
    #[arg(long, num_args = 1..)]
    pub flows: Vec<String>,
    /// Flow graphs (JSON lines, as `-o graph` or a state file holds) to merge, e.g. one per node.
    #[arg(long, num_args = 1..)]
    pub graph: Vec<PathBuf>,
    /// State file: read if present, then replaced atomically with the merged graph.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Write one file per policy and a kustomization.yaml into this directory.
    #[arg(long = "output")]
    pub output_dir: Option<PathBuf>,
    /// What to print on stdout when no --output directory is given.
    #[arg(short = 'o', long = "format", value_enum, default_value_t = LearnFormat::Yaml)]
    pub format: LearnFormat,
    #[command(flatten)]
    pub synth: SynthArgs,
    /// Learn only workloads of these namespaces (repeatable).
    #[arg(long)]
    pub namespace: Vec<String>,
    /// Quiet period after a workload's last new edge before it counts as stable
    /// (`-o confidence`): seconds, or with a unit s, m, h, d.
    #[arg(long, default_value = "24h")]
    pub quiet_period: String,
    /// Also learn refused, unanswered and pending connection starts as allowed (the behaviour
    /// before trustmap knew outcomes). By default only answered and one-way (UDP) starts are
    /// learned: a scan must not write its own allow rules.
    #[arg(long)]
    pub include_unanswered: bool,
    /// Report fields a kind does not have (typos) as warnings instead of errors.
    #[arg(long)]
    pub lenient: bool,
    /// Also write the cluster layers (ClusterNetworkPolicy v1alpha2): a Baseline-tier policy
    /// that denies what nobody allowed in the learned namespaces, and an Admin-tier policy that
    /// always accepts DNS to the cluster DNS and scrapes from `--monitoring-namespace`.
    #[arg(long)]
    pub layers: bool,
    /// With `--layers`: the namespace whose pods may always connect in (metrics scrapers);
    /// empty for none.
    #[arg(long, default_value = "monitoring", requires = "layers")]
    pub monitoring_namespace: String,
}

/// How policies are learned: shared by `learn` and `export --from-cluster --policies`.
#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    /// Add a default-deny policy to every namespace that gets learned policies.
    #[arg(long)]
    pub namespace_default_deny: bool,
    /// Summarise external IPv4 peers to this prefix length (cluster CIDRs stay excluded).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=32))]
    pub cidr_prefix: Option<u8>,
    /// Summarise external IPv6 peers to this prefix length.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=128))]
    pub cidr_prefix_v6: Option<u8>,
    /// Pod and Service CIDRs (repeatable). Default: inferred from the manifests' pod and
    /// Service IPs (their /16 and /48).
    #[arg(long, num_args = 1..)]
    pub cluster_cidr: Vec<IpNet>,
    /// Namespace of the cluster DNS pods.
    #[arg(long, default_value = "kube-system")]
    pub dns_namespace: String,
    /// Label of the cluster DNS pods, `key=value` (repeatable).
    #[arg(long, default_values_t = vec!["k8s-app=kube-dns".to_owned()])]
    pub dns_label: Vec<String>,
    /// Namespaces whose workloads get no policy (repeatable).
    #[arg(long, default_values_t = vec!["kube-system".to_owned()])]
    pub skip_namespace: Vec<String>,
    /// The ephemeral port range, `low-high`.
    #[arg(long, default_value = "32768-60999")]
    pub ephemeral_ports: String,
    /// The kind of policy to write: NetworkPolicy (addresses known by DNS names get rules of
    /// their own, names in the evidence) or CiliumNetworkPolicy (toFQDNs for them).
    #[arg(long, value_enum, default_value_t = PolicyFormat::K8s)]
    pub policy_format: PolicyFormat,
    /// Cilium format: this many names or more one label below the same parent (a.cdn.example,
    /// b.cdn.example, ...) become one `matchPattern: "*.cdn.example"`; 0 never.
    #[arg(long, default_value_t = 4)]
    pub fqdn_pattern_threshold: usize,
    /// Cilium format: the cluster's DNS domain; the DNS rule lets pods look up any name under
    /// it (their services, and the resolver's search-list expansions).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
}

impl SynthArgs {
    /// The identity and synthesis options; `only` limits learning to these namespaces.
    pub(super) fn options(
        &self,
        only: &[String],
    ) -> anyhow::Result<(IdentityOptions, SynthOptions)> {
        let id_opts = identity_options(
            &self.cluster_cidr,
            &self.dns_namespace,
            &self.dns_label,
            &self.ephemeral_ports,
        )?;
        let synth_opts = SynthOptions {
            namespace_default_deny: self.namespace_default_deny,
            cidr_prefix_v4: self.cidr_prefix,
            cidr_prefix_v6: self.cidr_prefix_v6,
            dns_namespace: id_opts.dns_namespace.clone(),
            dns_labels: id_opts.dns_labels.clone(),
            skip_namespaces: self.skip_namespace.clone(),
            only_namespaces: only.to_vec(),
            format: self.policy_format,
            fqdn_pattern_threshold: self.fqdn_pattern_threshold,
            cluster_domain: self.cluster_domain.trim_matches('.').to_owned(),
        };
        Ok((id_opts, synth_opts))
    }
}

/// The policies learned from a graph, checked against the policy model, warnings logged.
pub(super) fn synthesize(
    ids: &Identities<'_>,
    graph: &FlowGraph,
    opts: &SynthOptions,
) -> anyhow::Result<Learned> {
    let selectors = WorkloadSelectors::new(ids);
    let ctx = synth::Context {
        identities: ids,
        selectors: &selectors,
        cluster_cidrs: ids.cluster_cidrs(),
    };
    let learned = synth::learn(&ctx, graph, opts);
    learned.to_policies()?;
    for w in &learned.warnings {
        tracing::warn!("{w}");
    }
    Ok(learned)
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LearnFormat {
    /// The policies, as a multi-document YAML stream.
    Yaml,
    /// The flow graph, one JSON edge per line.
    Graph,
    /// Learning confidence per workload, one JSON object per line.
    Confidence,
}

pub(super) fn parse_duration(s: &str) -> anyhow::Result<TimeDelta> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: i64 = num
        .parse()
        .with_context(|| format!("invalid duration {s:?}"))?;
    Ok(match unit {
        "" | "s" => TimeDelta::seconds(n),
        "m" => TimeDelta::minutes(n),
        "h" => TimeDelta::hours(n),
        "d" => TimeDelta::days(n),
        _ => bail!("invalid duration {s:?}: expected a number with s, m, h or d"),
    })
}

pub(super) fn identity_options(
    cluster_cidr: &[IpNet],
    dns_namespace: &str,
    dns_label: &[String],
    ephemeral: &str,
) -> anyhow::Result<IdentityOptions> {
    let mut dns_labels = Labels::new();
    for l in dns_label {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("invalid --dns-label {l:?}: expected key=value"))?;
        dns_labels.insert(k.to_owned(), v.to_owned());
    }
    let (lo, hi) = ephemeral
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .filter(|(a, b)| a <= b)
        .with_context(|| format!("invalid --ephemeral-ports {ephemeral:?}: expected low-high"))?;
    Ok(IdentityOptions {
        cluster_cidrs: cluster_cidr.iter().map(IpNet::trunc).collect(),
        dns_namespace: dns_namespace.to_owned(),
        dns_labels,
        ephemeral: (lo, hi),
    })
}

/// Reads JSON-lines flow records; a line that is not a record stops with its file and line.
pub(super) fn read_flows(sources: &[String]) -> anyhow::Result<Vec<FlowRecord>> {
    let mut out = Vec::new();
    for src in sources {
        let input: Box<dyn BufRead> = if src == "-" {
            Box::new(io::stdin().lock())
        } else {
            let f = File::open(src).with_context(|| format!("opening {src}"))?;
            let size = f.metadata().ok().map(|m| m.len());
            let counted = super::progress::reader(f, size, &format!("reading {src}"));
            Box::new(BufReader::with_capacity(1 << 16, counted))
        };
        for (i, line) in input.lines().enumerate() {
            let line = line.with_context(|| format!("reading {src}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let r: FlowRecord = serde_json::from_str(&line)
                .with_context(|| format!("{src}: line {}: not a flow record", i + 1))?;
            out.push(r);
        }
    }
    Ok(out)
}

/// Builds the graph from state, graphs and flows, logging what was skipped and why. Failed
/// attempts (refused, unanswered, pending) stay out of the graph unless `include_unanswered`;
/// they are returned beside it.
pub(super) fn build_graph(
    ids: &Identities<'_>,
    flows: &[String],
    graphs: &[PathBuf],
    state_file: Option<&Path>,
    include_unanswered: bool,
) -> anyhow::Result<(FlowGraph, Vec<FlowRecord>)> {
    let mut graph = match state_file {
        Some(p) => state::load(p)?,
        None => FlowGraph::new(),
    };
    for g in graphs {
        let f = File::open(g).with_context(|| format!("opening {}", g.display()))?;
        graph.read_json_lines(BufReader::new(f), &g.display().to_string())?;
    }
    let (records, attempts): (Vec<FlowRecord>, Vec<FlowRecord>) = read_flows(flows)?
        .into_iter()
        .partition(|r| r.learnable(include_unanswered));
    if !attempts.is_empty() {
        tracing::info!(
            records = attempts.len(),
            "refused or unanswered connection starts not learned (--include-unanswered learns them)"
        );
    }
    let batch = ids.classify_batch(&records);
    let mut new_edges = 0usize;
    for o in &batch.observations {
        new_edges += usize::from(graph.observe(o));
    }
    let mut skipped: BTreeMap<&'static str, (usize, String)> = BTreeMap::new();
    for (_, e) in &batch.skipped {
        let s = skipped.entry(e.kind()).or_insert((0, e.to_string()));
        s.0 += 1;
    }
    for (kind, (n, example)) in &skipped {
        tracing::warn!(
            reason = kind,
            records = n,
            "skipped flow records; for example: {example}"
        );
    }
    tracing::info!(
        records = records.len(),
        superseded_by_receiver = batch.superseded,
        skipped = batch.skipped.len(),
        new_edges,
        edges = graph.len(),
        "flow graph built"
    );
    if let Some(p) = state_file {
        state::save(p, &graph)?;
    }
    Ok((graph, attempts))
}

pub fn run(args: LearnArgs) -> anyhow::Result<ExitCode> {
    if args.flows.is_empty() && args.graph.is_empty() && args.state.is_none() {
        bail!("nothing to learn from: give --flows, --graph or --state");
    }
    let quiet = parse_duration(&args.quiet_period)?;
    let loaded = super::check::load_manifests(&args.manifests, args.lenient)?;
    let (id_opts, synth_opts) = args.synth.options(&args.namespace)?;
    let ids = Identities::new(&loaded.inventory, id_opts);
    let (graph, attempts) = build_graph(
        &ids,
        &args.flows,
        &args.graph,
        args.state.as_deref(),
        args.include_unanswered,
    )?;
    let mut learned = synthesize(&ids, &graph, &synth_opts)?;
    if args.layers {
        let mut namespaces: Vec<String> = learned
            .policies
            .iter()
            .map(|p| p.namespace.clone())
            .collect();
        namespaces.dedup();
        learned.layers =
            synth::layers::layers(&namespaces, &synth_opts, Some(&args.monitoring_namespace))?;
    }
    if let Some(dir) = &args.output_dir {
        write_dir(dir, &learned)?;
        tracing::info!(policies = learned.policies.len(), dir = %dir.display(), "policies written");
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = BufWriter::new(io::stdout().lock());
    match args.format {
        LearnFormat::Yaml => out.write_all(yaml_stream(&learned)?.as_bytes())?,
        LearnFormat::Graph => graph.write_json_lines(&mut out)?,
        LearnFormat::Confidence => {
            // Failed attempts per source workload: a workload that keeps trying what it never
            // gets is worth a look before its policy is trusted.
            let mut failed: BTreeMap<String, u64> = BTreeMap::new();
            for r in &attempts {
                for o in ids.classify(r).unwrap_or_default() {
                    if let crate::identity::Peer::Workload(w) = &o.src {
                        *failed.entry(w.to_string()).or_default() += 1;
                    }
                }
            }
            for c in graph.confidence(Utc::now(), quiet) {
                let mut v = serde_json::to_value(&c)?;
                v["failed_attempts"] = failed
                    .get(&c.workload.to_string())
                    .copied()
                    .unwrap_or(0)
                    .into();
                serde_json::to_writer(&mut out, &v)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// All policies as one YAML stream.
pub(super) fn yaml_stream(learned: &Learned) -> anyhow::Result<String> {
    let mut s = String::new();
    for l in &learned.layers {
        s.push_str("---\n");
        s.push_str(&l.to_yaml()?);
    }
    for p in &learned.policies {
        s.push_str("---\n");
        s.push_str(&synth::to_yaml(p)?);
    }
    Ok(s)
}

pub(super) fn write_dir(dir: &Path, learned: &Learned) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    for l in &learned.layers {
        let name = l.file_name();
        let path = dir.join(&name);
        fs::write(&path, l.to_yaml()?).with_context(|| format!("writing {}", path.display()))?;
        files.push(name);
    }
    for p in &learned.policies {
        let name = p.file_name();
        let path = dir.join(&name);
        fs::write(&path, synth::to_yaml(p)?)
            .with_context(|| format!("writing {}", path.display()))?;
        files.push(name);
    }
    let k = dir.join("kustomization.yaml");
    fs::write(&k, synth::kustomization(&files))
        .with_context(|| format!("writing {}", k.display()))?;
    Ok(())
}

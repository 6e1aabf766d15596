//! `trustmap lint`: reports policies that allow too much, isolate less than people assume, or
//! do nothing, with fixes; as a table, JSON or SARIF 2.1.0 for code scanning.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use ipnet::IpNet;

use super::learn::{build_graph, identity_options};
use crate::{
    identity::Identities,
    lint::{self, LintInput, LintOptions, Severity, Sources},
    reach::observed_connections,
};

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// JSON-lines flow records: report rules, ports and peers no observed traffic used.
    #[arg(long, num_args = 1..)]
    pub flows: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = LintFormat::Table)]
    pub output: LintFormat,
    /// Exit with code 1 when a finding has at least this severity.
    #[arg(long, value_enum, default_value_t = FailOn::Error)]
    pub fail_on: FailOn,
    /// A peer matching more than this share of the cluster's pods is too broad.
    #[arg(long, default_value_t = 0.5)]
    pub max_selector_share: f64,
    /// Pod CIDRs (repeatable). Default: inferred from pod and Service IPs (/16, /48).
    #[arg(long, num_args = 1..)]
    pub pod_cidr: Vec<IpNet>,
    /// Namespace of the cluster DNS pods.
    #[arg(long, default_value = "kube-system")]
    pub dns_namespace: String,
    /// Label of the cluster DNS pods, `key=value` (repeatable).
    #[arg(long, default_values_t = vec!["k8s-app=kube-dns".to_owned()])]
    pub dns_label: Vec<String>,
    /// Labels of the metrics scraper pods, `key=value[,key=value]` (repeatable; any matches).
    #[arg(long, default_values_t = vec!["app.kubernetes.io/name=prometheus".to_owned(), "app=prometheus".to_owned()])]
    pub scraper: Vec<String>,
    /// Namespaces whose own isolation is not checked (repeatable).
    #[arg(long, default_values_t = vec!["kube-system".to_owned(), "kube-public".to_owned(), "kube-node-lease".to_owned()])]
    pub skip_namespace: Vec<String>,
    /// With --from-cluster: write the live objects read (NetworkPolicies, admin policies,
    /// Services, Ingresses, pods) to this file, which the findings' lines refer to, and name it
    /// in the findings instead of `live-cluster.yaml`.
    #[arg(long, value_name = "FILE", requires = "from_cluster")]
    pub save_objects: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LintFormat {
    Table,
    Json,
    Sarif,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FailOn {
    Error,
    Warning,
    Note,
    Never,
}

/// The files `load_paths` reads, in its order: YAML and JSON files of directories, and every
/// file named explicitly.
fn files(path: &Path, explicit: bool, out: &mut Vec<PathBuf>) -> io::Result<()> {
    if fs::metadata(path)?.is_dir() {
        let mut entries = fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort();
        for e in entries {
            files(&e, false, out)?;
        }
    } else if explicit
        || matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
    {
        out.push(path.to_owned());
    }
    Ok(())
}

pub(super) fn read_sources(paths: &[PathBuf]) -> anyhow::Result<Sources> {
    let mut sources = Sources::new();
    for p in paths {
        let mut list = Vec::new();
        files(p, true, &mut list).with_context(|| format!("reading {}", p.display()))?;
        for f in list {
            let text =
                fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            sources.add_text(&f, &text);
        }
    }
    Ok(sources)
}

pub fn run(args: LintArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.source.load()?;
    let sources = match args.source.live_text()? {
        Some((path, text)) => {
            let path = match &args.save_objects {
                Some(file) => {
                    fs::write(file, &text)
                        .with_context(|| format!("writing {}", file.display()))?;
                    file.clone()
                }
                None => path,
            };
            let mut s = Sources::new();
            s.add_text(&path, &text);
            s
        }
        None => read_sources(args.source.manifests())?,
    };
    let id_opts = identity_options(
        &args.pod_cidr,
        &args.dns_namespace,
        &args.dns_label,
        "32768-60999",
    )?;
    let opts = LintOptions {
        max_selector_share: args.max_selector_share,
        pod_cidrs: args.pod_cidr.clone(),
        dns_namespace: args.dns_namespace.clone(),
        dns_labels: id_opts.dns_labels.clone(),
        scrapers: args
            .scraper
            .iter()
            .map(|s| LintOptions::parse_scraper(s))
            .collect::<Result<_, _>>()?,
        skip_namespaces: args.skip_namespace.clone(),
        ..LintOptions::default()
    };
    opts.validate()?;
    let ids = Identities::new(&loaded.inventory, id_opts);
    let graph = if args.flows.is_empty() {
        None
    } else {
        Some(build_graph(&ids, &args.flows, &[], None, false)?.0)
    };
    let observed = graph.as_ref().map(|g| observed_connections(&ids, g));
    let mut findings = lint::lint(&LintInput {
        inventory: &loaded.inventory,
        policies: &loaded.policies,
        admin: &loaded.admin,
        sources: &sources,
        observed: observed.as_deref(),
        options: &opts,
    });
    // -n: the findings about that namespace's policies and objects; cluster-scoped layers are
    // left out, as kubectl's -n leaves out cluster-scoped objects.
    if let Some(ns) = &args.source.namespace {
        findings.retain(|f| f.subject.namespace() == Some(ns.as_str()));
    }
    let text = match args.output {
        LintFormat::Table => lint::to_table(&findings),
        LintFormat::Json => lint::to_json(&findings) + "\n",
        LintFormat::Sarif => lint::to_sarif(&findings, env!("CARGO_PKG_VERSION")) + "\n",
    };
    io::stdout().lock().write_all(text.as_bytes())?;
    let threshold = match args.fail_on {
        FailOn::Error => Some(Severity::Error),
        FailOn::Warning => Some(Severity::Warning),
        FailOn::Note => Some(Severity::Note),
        FailOn::Never => None,
    };
    let fail = threshold.is_some_and(|t| findings.iter().any(|f| f.severity >= t));
    Ok(if fail {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

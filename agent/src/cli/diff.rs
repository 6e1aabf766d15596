//! `trustmap diff`: current policies against learned ones (or against flows, learned on the
//! fly), in connections rather than text.

use std::{
    io::{self, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use ipnet::IpNet;

use super::learn::{build_graph, synthesize};
use crate::{
    identity::{Identities, IdentityOptions, Peer},
    inventory::load_paths,
    synth::{SynthOptions, connectivity_diff},
};

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The cluster's pods, workloads, services and nodes: manifests, or the live cluster.
    /// NetworkPolicies in manifests are ignored (the current ones come from --current); with
    /// --from-cluster the live NetworkPolicies are the current ones unless --current is given.
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Directory (or files) of the NetworkPolicies in force.
    #[arg(long, num_args = 1.., required_unless_present = "from_cluster")]
    pub current: Vec<PathBuf>,
    /// Directory (or files) of learned NetworkPolicies, as `trustmap learn --output` writes.
    #[arg(long, num_args = 1.., conflicts_with = "flows")]
    pub learned: Vec<PathBuf>,
    /// Flow records to learn from instead of --learned.
    #[arg(long, num_args = 1..)]
    pub flows: Vec<String>,
    /// Pod and Service CIDRs, as for `learn`.
    #[arg(long, num_args = 1..)]
    pub cluster_cidr: Vec<IpNet>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = DiffFormat::Table)]
    pub output: DiffFormat,
    /// Exit with code 1 when the policy sets differ.
    #[arg(long)]
    pub fail_on_diff: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DiffFormat {
    Table,
    Json,
}

pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    if args.learned.is_empty() && args.flows.is_empty() {
        bail!("nothing to compare with: give --learned DIR or --flows FILE");
    }
    let loaded = args.source.load()?;
    if !loaded.policies.is_empty() && !args.current.is_empty() {
        tracing::info!(
            policies = loaded.policies.len(),
            "NetworkPolicies in --manifests are ignored; the current ones come from --current"
        );
    }
    let inv = &loaded.inventory;
    let current = if args.current.is_empty() {
        loaded.policies.clone()
    } else {
        load_paths(&args.current)
            .context("reading --current")?
            .policies
    };
    let ids = Identities::new(
        inv,
        IdentityOptions {
            cluster_cidrs: args.cluster_cidr.clone(),
            ..IdentityOptions::default()
        },
    );
    let mut extra = Vec::new();
    let reference = if args.flows.is_empty() {
        load_paths(&args.learned)
            .context("reading --learned")?
            .policies
    } else {
        let (graph, _attempts) = build_graph(&ids, &args.flows, &[], None, false)?;
        for e in graph.edges() {
            for p in [e.src, e.dst] {
                if let Peer::External(ip) | Peer::Node { ip, .. } = p {
                    extra.push((ip.to_string(), inv.resolve_ip(*ip)));
                }
            }
        }
        synthesize(&ids, &graph, &SynthOptions::default())?.to_policies()?
    };
    let diff = connectivity_diff(inv, &current, &reference, &extra);
    let mut out = BufWriter::new(io::stdout().lock());
    match args.output {
        DiffFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &diff)?;
            writeln!(out)?;
        }
        DiffFormat::Table => {
            let rows = diff
                .excess
                .iter()
                .map(|r| ("EXCESS", r))
                .chain(diff.denied.iter().map(|r| ("DENIED", r)));
            let w = diff
                .excess
                .iter()
                .chain(&diff.denied)
                .flat_map(|r| [r.src.len(), r.dst.len()])
                .max()
                .unwrap_or(3)
                .max(3);
            writeln!(out, "{:<6}  {:<w$}  {:<w$}  PORTS", "KIND", "SRC", "DST")?;
            for (kind, r) in rows {
                writeln!(out, "{kind:<6}  {:<w$}  {:<w$}  {}", r.src, r.dst, r.ports)?;
            }
        }
    }
    out.flush()?;
    let differs = !diff.excess.is_empty() || !diff.denied.is_empty();
    Ok(if args.fail_on_diff && differs {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

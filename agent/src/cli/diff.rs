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
    args.source
        .reject_namespace("diff", "compares the policy sets it is given")?;
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
    // The admin tiers in force: those of --manifests and of --current.
    let mut admin = loaded.admin.clone();
    let current = if args.current.is_empty() {
        loaded.policies.clone()
    } else {
        let c = load_paths(&args.current).context("reading --current")?;
        admin.extend(c.admin);
        c.policies
    };
    let ids = Identities::new(
        inv,
        IdentityOptions {
            cluster_cidrs: args.cluster_cidr.clone(),
            ..IdentityOptions::default()
        },
    );
    let mut extra = Vec::new();
    let mut attempts = Vec::new();
    let reference = if args.flows.is_empty() {
        load_paths(&args.learned)
            .context("reading --learned")?
            .policies
    } else {
        let (graph, failed) = build_graph(&ids, &args.flows, &[], None, false)?;
        attempts = failed_attempts(&ids, &failed);
        for e in graph.edges() {
            for (p, names) in [(e.src, &[][..]), (e.dst, &e.stats.names[..])] {
                if let Peer::External(ip) | Peer::Node { ip, .. } = p {
                    // An address known by names reads as them: `203.0.113.10 (api.example)`.
                    let name = match names {
                        [] => ip.to_string(),
                        n => format!("{ip} ({})", n.join(", ")),
                    };
                    extra.push((name, inv.resolve_ip(*ip), names.to_vec()));
                }
            }
        }
        synthesize(&ids, &graph, &SynthOptions::default())?.to_policies()?
    };
    let diff = connectivity_diff(inv, &current, &reference, &admin, &extra);
    let mut out = BufWriter::new(io::stdout().lock());
    match args.output {
        DiffFormat::Json => {
            let mut v = serde_json::to_value(&diff)?;
            v["attempts"] = serde_json::to_value(&attempts)?;
            serde_json::to_writer_pretty(&mut out, &v)?;
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
            // Attempts that were refused or never answered: not learned, shown for review.
            for a in &attempts {
                let port = a.port.map(|p| format!(":{p}")).unwrap_or_default();
                writeln!(
                    out,
                    "{:<6}  {:<w$}  {:<w$}  {}{port} ({} attempt(s))",
                    a.outcome.as_str().to_uppercase(),
                    a.src,
                    a.dst,
                    a.protocol,
                    a.count
                )?;
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

/// Failed attempts (refused, unanswered) of the flows, by their identities, counted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Attempt {
    pub src: String,
    pub dst: String,
    pub protocol: crate::flow::Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub outcome: crate::flow::Outcome,
    pub count: u64,
}

fn failed_attempts(ids: &Identities<'_>, records: &[crate::flow::FlowRecord]) -> Vec<Attempt> {
    let mut counts: std::collections::BTreeMap<Attempt, u64> = std::collections::BTreeMap::new();
    for r in records {
        let Some(outcome) = r.outcome else { continue };
        // A record the inventory cannot name keeps its addresses.
        let named = ids.classify(r).unwrap_or_default();
        let keys: Vec<(String, String, Option<u16>)> = if named.is_empty() {
            vec![(r.src.to_string(), r.dst.to_string(), r.port)]
        } else {
            named
                .iter()
                .map(|o| {
                    (
                        crate::kube::peers::peer_to_string(&o.src),
                        crate::kube::peers::peer_to_string(&o.dst),
                        o.port,
                    )
                })
                .collect()
        };
        for (src, dst, port) in keys {
            let key = Attempt {
                src,
                dst,
                protocol: r.protocol,
                port,
                outcome,
                count: 0,
            };
            *counts.entry(key).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(mut a, n)| {
            a.count = n;
            a
        })
        .collect()
}

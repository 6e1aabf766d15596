//! `trustmap blast-radius`: per workload, what it reaches directly and by hopping, and who
//! reaches it, under the current policies and, with flows, under the learned ones.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{self, BufWriter, Write},
    process::ExitCode,
};

use anyhow::bail;
use serde::Serialize;

use super::learn::{build_graph, synthesize};
use crate::{
    identity::{Identities, IdentityOptions, Peer},
    policy::Evaluator,
    reach::{BlastReport, BlastRow, ObservedConnection, blast_radius, observed_connections},
    synth::SynthOptions,
};

#[derive(Debug, clap::Args)]
pub struct BlastRadiusArgs {
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Flow records: also compute the blast radius under the policies learned from them.
    #[arg(long, num_args = 1..)]
    pub flows: Vec<String>,
    /// Only this workload (`namespace/Kind/name` or `namespace/pod`), with every workload it
    /// reaches and in how many hops.
    #[arg(long)]
    pub from: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = BlastFormat::Table)]
    pub output: BlastFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BlastFormat {
    Table,
    Json,
}

#[derive(Serialize)]
struct Both<'a> {
    current: &'a [BlastRow],
    #[serde(skip_serializing_if = "Option::is_none")]
    learned: Option<&'a [BlastRow]>,
}

/// Adds to each row the named outside destinations observed from it that `ev` allows.
fn name_externals(report: &mut BlastReport, ev: &Evaluator<'_>, observed: &[ObservedConnection]) {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for o in observed {
        let c = &o.connection;
        if c.dst_names.is_empty() || !matches!(o.dst_peer, Peer::External(_)) {
            continue;
        }
        let Peer::Workload(w) = &o.src_peer else {
            continue;
        };
        if !ev.evaluate(c).allowed() {
            continue;
        }
        let port = c
            .port
            .map_or_else(|| c.protocol.to_string(), |p| format!("{p}/{}", c.protocol));
        // A bare pod's row is `namespace/pod`; a workload's `namespace/Kind/name`.
        let row = if w.kind == "Pod" {
            format!("{}/{}", w.namespace, w.name)
        } else {
            w.to_string()
        };
        let set = names.entry(row).or_default();
        set.extend(c.dst_names.iter().map(|n| format!("{n}:{port}")));
    }
    for r in &mut report.rows {
        if let Some(n) = names.remove(&r.workload) {
            r.external_names = n.into_iter().collect();
        }
    }
}

pub fn run(args: BlastRadiusArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.source.load()?;
    let ev = Evaluator::new(&loaded.inventory, &loaded.policies).with_admin(&loaded.admin);
    let mut current = blast_radius(&ev);
    let ids = Identities::new(&loaded.inventory, IdentityOptions::default());
    let graph = if args.flows.is_empty() {
        None
    } else {
        Some(build_graph(&ids, &args.flows, &[], None, false)?.0)
    };
    let learned = match &graph {
        None => None,
        Some(graph) => {
            let observed = observed_connections(&ids, graph);
            name_externals(&mut current, &ev, &observed);
            let opts = SynthOptions {
                namespace_default_deny: true,
                ..SynthOptions::default()
            };
            let policies = synthesize(&ids, graph, &opts)?.to_policies()?;
            let lev = Evaluator::new(&loaded.inventory, &policies).with_admin(&loaded.admin);
            let mut report = blast_radius(&lev);
            name_externals(&mut report, &lev, &observed);
            Some(report)
        }
    };
    let pick = |r: &BlastReport| -> anyhow::Result<Vec<BlastRow>> {
        match &args.from {
            None => Ok(r
                .rows
                .iter()
                .filter(|row| args.source.in_scope(&row.workload))
                .cloned()
                .collect()),
            Some(w) => {
                let rows: Vec<BlastRow> = r
                    .rows
                    .iter()
                    .filter(|row| row.workload == *w)
                    .cloned()
                    .collect();
                if rows.is_empty() {
                    bail!(
                        "--from {w:?}: no such workload or pod in the manifests; expected namespace/Kind/name or namespace/pod"
                    );
                }
                Ok(rows)
            }
        }
    };
    let cur = pick(&current)?;
    let lrn = learned.as_ref().map(pick).transpose()?;
    let mut out = BufWriter::new(io::stdout().lock());
    match args.output {
        BlastFormat::Json => {
            serde_json::to_writer_pretty(
                &mut out,
                &Both {
                    current: &cur,
                    learned: lrn.as_deref(),
                },
            )?;
            writeln!(out)?;
        }
        BlastFormat::Table => {
            if lrn.is_some() {
                writeln!(out, "Under the current policies:")?;
            }
            table(&mut out, &cur, args.from.is_some())?;
            if let Some(l) = &lrn {
                writeln!(out, "\nUnder the policies learned from the flows:")?;
                table(&mut out, l, args.from.is_some())?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn table(out: &mut impl Write, rows: &[BlastRow], detail: bool) -> io::Result<()> {
    let w = rows
        .iter()
        .map(|r| r.workload.len())
        .max()
        .unwrap_or(8)
        .max(8);
    writeln!(
        out,
        "{:<w$}  {:>4}  {:>9}  {:>10}  {:>4}  {:>11}  {:>4}  {:>10}  HOPS",
        "WORKLOAD", "PODS", "REACH", "PORTS", "EXT", "REACHED-BY", "EXT", "TRANSITIVE"
    )?;
    let yn = |b: bool| if b { "yes" } else { "no" };
    for r in rows {
        let hops: Vec<String> = r
            .hops
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{}:{n}", i + 1))
            .collect();
        writeln!(
            out,
            "{:<w$}  {:>4}  {:>9}  {:>10}  {:>4}  {:>11}  {:>4}  {:>10}  {}",
            r.workload,
            r.pods,
            r.reach_pods,
            r.reach_ports,
            yn(r.reach_external),
            r.reached_by_pods,
            yn(r.reached_by_external),
            r.transitive_pods,
            hops.join(" ")
        )?;
        if !r.external_names.is_empty() {
            writeln!(out, "  outside, by name: {}", r.external_names.join(", "))?;
        }
        if detail {
            for x in &r.reached {
                writeln!(out, "  {} hop(s)  {}  ({})", x.hops, x.workload, x.ports)?;
            }
        }
    }
    Ok(())
}

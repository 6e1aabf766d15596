//! `trustmap check`: decide every flow record of a JSON-lines stream against the policies of
//! manifests, and write one verdict line per record, in input order, as it goes.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    flow::{Endpoint, FlowRecord},
    identity::{Identities, IdentityOptions},
    inventory::{Loaded, load_paths_with},
    policy::{Connection, Evaluator, Explanation, SideExplanation},
};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// JSON-lines flow records, as `trustmap observe` writes them; `-` for stdin. `src` and
    /// `dst` may also be a pod (`namespace/name`) or a workload (`namespace/Kind/name`).
    #[arg(long)]
    pub flows: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = CheckFormat::Json)]
    pub output: CheckFormat,
    /// Exit with code 1 when some connection is denied.
    #[arg(long)]
    pub fail_on_deny: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CheckFormat {
    /// One JSON object per record.
    Json,
    /// Aligned columns for people.
    Table,
}

/// Loads manifests for the offline commands, printing notes on what was skipped.
pub(super) fn load_manifests(paths: &[PathBuf], lenient: bool) -> anyhow::Result<Loaded> {
    let loaded = load_paths_with(paths, lenient).context("reading manifests")?;
    for note in &loaded.notes {
        tracing::info!("{note}");
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    tracing::debug!(
        pods = loaded.inventory.pods().len(),
        policies = loaded.policies.len(),
        "manifests loaded"
    );
    Ok(loaded)
}

#[derive(Serialize)]
struct Line<'a> {
    src: &'a Endpoint,
    dst: &'a Endpoint,
    #[serde(flatten)]
    explanation: &'a Explanation,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    line: u64,
    error: &'a str,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    args.source
        .reject_namespace("check", "reports on the flows it is given")?;
    let loaded = args.source.load()?;
    let ev = Evaluator::new(&loaded.inventory, &loaded.policies).with_admin(&loaded.admin);
    let ids = Identities::new(&loaded.inventory, IdentityOptions::default());
    let input: Box<dyn BufRead> = if args.flows == "-" {
        Box::new(io::stdin().lock())
    } else {
        let f = File::open(&args.flows).with_context(|| format!("opening {}", args.flows))?;
        let size = f.metadata().ok().map(|m| m.len());
        let what = format!("checking {}", args.flows);
        Box::new(BufReader::with_capacity(
            1 << 16,
            super::progress::reader(f, size, &what),
        ))
    };
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let (mut denied, mut errors, mut total) = (0u64, 0u64, 0u64);
    if matches!(args.output, CheckFormat::Table) {
        writeln!(
            out,
            "{:<7} {:<11} {:<40} {:<40} {:<34} INGRESS",
            "VERDICT", "PORT", "SRC", "DST", "EGRESS"
        )?;
    }
    let mut buf = String::new();
    let mut reader = input;
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if reader.read_line(&mut buf).context("reading flows")? == 0 {
            break;
        }
        line_no += 1;
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        total += 1;
        let result = serde_json::from_str::<FlowRecord>(text)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                // A UDP flow whose reply was seen first is turned around first, so that it is
                // judged on the server's port, never on the client's ephemeral one.
                let r = ids.orient(&r).unwrap_or(r);
                // To a Service ClusterIP: judged against a backend pod on its target port, as
                // NetworkPolicy sees the connection after DNAT.
                let judged = ids.through_service(&r);
                ev.connection(judged.as_ref().unwrap_or(&r))
                    .map(|c| (c.src, c.dst, c.protocol, c.port))
                    .map(|ends| (r, ends))
                    .map_err(|e| e.to_string())
            });
        let (record, (src, dst, protocol, port)) = match result {
            Ok(x) => x,
            Err(e) => {
                errors += 1;
                match args.output {
                    CheckFormat::Json => {
                        serde_json::to_writer(
                            &mut out,
                            &ErrorLine {
                                line: line_no,
                                error: &e,
                            },
                        )?;
                        out.write_all(b"\n")?;
                    }
                    CheckFormat::Table => writeln!(out, "{:<7} line {line_no}: {e}", "ERROR")?,
                }
                continue;
            }
        };
        // The names the source resolved to the destination, for toFQDNs and domainNames.
        let conn = Connection {
            src,
            dst,
            protocol,
            port,
            dst_names: &record.dst_names,
        };
        let explanation = ev.explain(&conn);
        if explanation.verdict == "deny" {
            denied += 1;
        }
        match args.output {
            CheckFormat::Json => {
                let line = Line {
                    src: &record.src,
                    dst: &record.dst,
                    explanation: &explanation,
                };
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            }
            CheckFormat::Table => write_row(&mut out, &record, &explanation)?,
        }
    }
    out.flush()?;
    tracing::info!(records = total, denied, errors, "check done");
    if errors > 0 {
        anyhow::bail!(
            "{errors} of {total} flow records could not be checked (see the error lines)"
        );
    }
    Ok(if args.fail_on_deny && denied > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn short(side: &SideExplanation) -> String {
    if let Some(e) = side.exemption {
        return format!("{} ({e})", side.decision);
    }
    if let Some(a) = &side.allowed_by {
        return format!("allow {}#{}", a.policy, a.rule);
    }
    if side.isolated {
        format!("deny ({})", side.policies.join(","))
    } else {
        "allow (not isolated)".into()
    }
}

fn write_row(out: &mut impl Write, r: &FlowRecord, e: &Explanation) -> io::Result<()> {
    let port = match r.port {
        Some(p) => format!("{p}/{}", r.protocol),
        None => r.protocol.to_string(),
    };
    writeln!(
        out,
        "{:<7} {:<11} {:<40} {:<40} {:<34} {}",
        e.verdict.to_uppercase(),
        port,
        // What the ends resolved to (pod or workload names), which says more than an address.
        e.source,
        e.destination,
        short(&e.egress),
        short(&e.ingress)
    )
}

//! `trustmap matrix`: the allowed connections between every pair of workloads (and external
//! addresses), with their ports: a connectivity truth table to diff.

use std::{
    io::{self, BufWriter, Write},
    process::ExitCode,
};

use crate::policy::Evaluator;

#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = MatrixFormat::Table)]
    pub output: MatrixFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MatrixFormat {
    Table,
    Json,
    Csv,
}

pub fn run(args: MatrixArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.source.load()?;
    let ev = Evaluator::new(&loaded.inventory, &loaded.policies).with_admin(&loaded.admin);
    let mut m = ev.matrix();
    // -n: the pairs with an end in that namespace.
    m.allowed
        .retain(|c| args.source.in_scope(&c.src) || args.source.in_scope(&c.dst));
    let mut out = BufWriter::new(io::stdout().lock());
    match args.output {
        MatrixFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &m)?;
            writeln!(out)?;
        }
        MatrixFormat::Csv => {
            writeln!(out, "src,dst,ports")?;
            for c in &m.allowed {
                writeln!(out, "{},{},\"{}\"", c.src, c.dst, c.ports)?;
            }
        }
        MatrixFormat::Table => {
            let w = m
                .entities
                .iter()
                .map(|e| e.name.len())
                .max()
                .unwrap_or(3)
                .max(3);
            writeln!(out, "{:<w$}  {:<w$}  PORTS", "SRC", "DST")?;
            for c in &m.allowed {
                writeln!(out, "{:<w$}  {:<w$}  {}", c.src, c.dst, c.ports)?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

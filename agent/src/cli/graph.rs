//! `trustmap graph`: the workloads, externals and nodes with allowed and observed edges,
//! coloured by verdict, as DOT, Mermaid or one self-contained HTML page.

use std::{
    io::{self, Write},
    process::ExitCode,
};

use super::learn::{build_graph, synthesize};
use crate::{
    identity::{Identities, IdentityOptions},
    policy::Evaluator,
    reach::observed_connections,
    render::{GraphModel, render_html, to_dot, to_mermaid},
    synth::SynthOptions,
};

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Flow records: draw observed edges with counts, and tell used from excess.
    #[arg(long, num_args = 1..)]
    pub flows: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = GraphFormat::Html)]
    pub output: GraphFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Html,
}

pub fn run(args: GraphArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.source.load()?;
    let ev = Evaluator::new(&loaded.inventory, &loaded.policies).with_admin(&loaded.admin);
    let ids = Identities::new(&loaded.inventory, IdentityOptions::default());
    let graph = if args.flows.is_empty() {
        None
    } else {
        Some(build_graph(&ids, &args.flows, &[], None, false)?.0)
    };
    let observed = graph.as_ref().map(|g| observed_connections(&ids, g));
    let mut model = GraphModel::build(&ev, observed.as_deref());
    if let (Some(g), GraphFormat::Html) = (&graph, args.output) {
        // The page shows each workload's learned policy, with learn's defaults.
        let learned = synthesize(&ids, g, &SynthOptions::default())?;
        model = model.with_policies(&learned);
    }
    if let Some(ns) = &args.source.namespace {
        model = model.scoped(ns);
    }
    let title = match &args.source.namespace {
        Some(ns) => format!("{} (namespace {ns})", args.source.describe()),
        None => args.source.describe(),
    };
    let text = match args.output {
        GraphFormat::Dot => to_dot(&model),
        GraphFormat::Mermaid => to_mermaid(&model),
        GraphFormat::Html => render_html(&model, &title),
    };
    io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

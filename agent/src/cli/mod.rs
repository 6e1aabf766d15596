//! Command-line interface: one file per subcommand. Each subcommand turns its arguments into
//! calls on the library and decides the exit code.

mod agent;
mod blast_radius;
mod check;
mod crd;
mod diff;
mod docs;
mod explain;
mod export;
mod graph;
mod learn;
mod lint;
mod matrix;
mod observe;
pub mod plugin;
mod progress;
mod source;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Learns least-privilege Kubernetes NetworkPolicies from the connections pods really make.
#[derive(Debug, Parser)]
#[command(name = "trustmap", version, about)]
pub struct Cli {
    /// Log format on stderr. The level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to pod veths and stream one JSON line per observed connection start.
    Observe(observe::ObserveArgs),
    /// Decide JSON-lines flow records against the NetworkPolicies of manifests.
    Check(check::CheckArgs),
    /// Explain the verdict on one connection.
    Explain(explain::ExplainArgs),
    /// Print the allowed connections between every pair of workloads.
    Matrix(matrix::MatrixArgs),
    /// Run as the node agent: observe, learn the node's edges, flag and alert.
    Agent(Box<agent::AgentArgs>),
    /// Learn least-privilege NetworkPolicies from flow records.
    Learn(learn::LearnArgs),
    /// Compare current policies with learned ones (or observed flows), in connections.
    Diff(diff::DiffArgs),
    /// Print the FlowEdges CustomResourceDefinition as YAML.
    Crd(crd::CrdArgs),
    /// Write the edges the agents learned, merged, as JSON lines.
    Export(export::ExportArgs),
    /// Report overly permissive, missing or dead policies, with fixes (table, JSON, SARIF).
    Lint(lint::LintArgs),
    /// Per workload: what a compromised pod reaches, directly and by hopping, and who reaches it.
    BlastRadius(blast_radius::BlastRadiusArgs),
    /// Draw workloads, externals and nodes with edges coloured by verdict (DOT, Mermaid, HTML).
    Graph(graph::GraphArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(docs::CompletionArgs),
    /// Write man pages for trustmap and each of its commands.
    Man(docs::ManArgs),
}

impl Command {
    /// Runs the subcommand. `Err` means exit code 2 with the error printed; subcommands that
    /// report findings choose their own code.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Observe(args) => observe::run(args),
            Self::Check(args) => check::run(args),
            Self::Explain(args) => explain::run(args),
            Self::Matrix(args) => matrix::run(args),
            Self::Agent(args) => agent::run(*args),
            Self::Learn(args) => learn::run(args),
            Self::Diff(args) => diff::run(args),
            Self::Crd(args) => crd::run(args),
            Self::Export(args) => export::run(args),
            Self::Lint(args) => lint::run(args),
            Self::BlastRadius(args) => blast_radius::run(args),
            Self::Graph(args) => graph::run(args),
            Self::Completion(args) => docs::completion(args),
            Self::Man(args) => docs::man(args),
        }
    }
}

/// Logs go to stderr so that stdout stays clean for records and reports.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    progress::init(matches!(format, LogFormat::Text));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(|| progress::LogWriter)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// An error and its causes, each said once: a cause whose text the message already holds (an
/// error that prints its source, as many do) is not repeated.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod error_chain_tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("spec.ingress[0].ports[0]: {source}")]
    struct Outer {
        #[source]
        source: Inner,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("port 99999 is out of range 1-65535")]
    struct Inner;

    #[test]
    fn each_cause_is_said_once() {
        let err = anyhow::Error::new(Outer { source: Inner }).context("reading policies.yaml");
        assert_eq!(
            error_chain(&err),
            "reading policies.yaml: spec.ingress[0].ports[0]: port 99999 is out of range 1-65535"
        );
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let err = anyhow::Error::new(io).context(text.clone());
        assert_eq!(error_chain(&err), text);
    }
}

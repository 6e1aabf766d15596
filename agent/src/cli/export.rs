//! `trustmap export --from-cluster`: fetch every node's `FlowEdges`, merge them, and write the
//! merged edges as JSON lines.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;

use crate::kube::{DEFAULT_NAMESPACE, client_from_kubeconfig, fetch_edges, write_json_lines};

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Read the edges the agents published in the cluster (FlowEdges objects).
    #[arg(long)]
    pub from_cluster: bool,
    /// Kubeconfig file; default as kubectl: KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, requires = "from_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the FlowEdges objects (where trustmap is installed).
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Where to write the JSON lines; `-` for stdout.
    #[arg(short = 'o', long, default_value = "-")]
    pub output: String,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.from_cluster,
        "export needs a source: pass --from-cluster to read the edges the agents published"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let edges = runtime.block_on(async {
        let client = client_from_kubeconfig(args.kubeconfig.as_deref()).await?;
        fetch_edges(client, &args.namespace).await
    })?;
    let out: Box<dyn Write> = if args.output == "-" {
        Box::new(io::stdout().lock())
    } else {
        let f = File::create(&args.output).with_context(|| format!("creating {}", args.output))?;
        Box::new(f)
    };
    write_json_lines(&edges, BufWriter::new(out))
        .with_context(|| format!("writing {}", args.output))?;
    tracing::info!(edges = edges.len(), "export done");
    Ok(ExitCode::SUCCESS)
}

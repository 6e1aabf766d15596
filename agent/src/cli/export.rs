//! `trustmap export --from-cluster`: fetch every node's `FlowEdges`, merge them, and write the
//! merged edges as JSON lines; with `--policies DIR`, also learn policies from them against the
//! cluster's own inventory, with the same synthesis as `trustmap learn`.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;

use super::learn::{SynthArgs, synthesize, write_dir};
use crate::{
    identity::Identities,
    kube::{
        DEFAULT_NAMESPACE, KubeInventory, PodScope, client_for, fetch_edges, records_to_graph,
        write_json_lines,
    },
};

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Read the edges the agents published in the cluster (FlowEdges objects).
    #[arg(long)]
    pub from_cluster: bool,
    /// Kubeconfig file; default as kubectl: KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, requires = "from_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; default: the current context.
    #[arg(long, requires = "from_cluster")]
    pub context: Option<String>,
    /// Namespace of the FlowEdges objects: where trustmap is installed.
    #[arg(long, value_name = "NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub trustmap_namespace: String,
    /// With --policies: learn only the workloads of this namespace, as kubectl's -n scopes a
    /// command (the edges of every namespace are still read).
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Where to write the JSON lines; `-` for stdout.
    #[arg(short = 'o', long, default_value = "-")]
    pub output: String,
    /// Also learn NetworkPolicies from the merged edges, against the cluster's pods, workloads
    /// and services, and write one file per policy and a kustomization.yaml into this directory.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Seconds to wait for the first list of the cluster's inventory (with --policies).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub sync_timeout: u64,
    #[command(flatten)]
    pub synth: SynthArgs,
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
    let (edges, loaded) = runtime.block_on(async {
        let client = client_for(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let listing =
            super::progress::spinner(&format!("listing FlowEdges in {}", args.trustmap_namespace));
        let edges = fetch_edges(client.clone(), &args.trustmap_namespace).await;
        listing.finish_and_clear();
        let edges = edges?;
        let loaded = match &args.policies {
            None => None,
            Some(_) => {
                let inv = KubeInventory::start(client, PodScope::Cluster);
                let listing = super::progress::spinner("listing the cluster's inventory");
                let synced =
                    tokio::time::timeout(Duration::from_secs(args.sync_timeout), inv.wait_synced())
                        .await;
                listing.finish_and_clear();
                synced.with_context(|| {
                    format!(
                        "the cluster's inventory did not list within {} s (--sync-timeout)",
                        args.sync_timeout
                    )
                })?;
                Some(inv.snapshot())
            }
        };
        anyhow::Ok((edges, loaded))
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
    if let (Some(dir), Some(loaded)) = (&args.policies, loaded) {
        let only: Vec<String> = args.namespace.iter().cloned().collect();
        let (id_opts, synth_opts) = args.synth.options(&only)?;
        let ids = Identities::new(&loaded.inventory, id_opts);
        let (graph, unreadable) = records_to_graph(&edges);
        if let Some(example) = unreadable.first() {
            tracing::warn!(
                edges = unreadable.len(),
                src = example.src,
                dst = example.dst,
                "skipped edges whose ends are not peers of the learning graph"
            );
        }
        let learned = synthesize(&ids, &graph, &synth_opts)?;
        write_dir(dir, &learned)?;
        tracing::info!(policies = learned.policies.len(), dir = %dir.display(), "policies written");
    }
    Ok(ExitCode::SUCCESS)
}

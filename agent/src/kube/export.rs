//! Reading every node's `FlowEdges` back, for `trustmap export --from-cluster`: fetch and merge
//! into one list of edges, then write it as JSON lines.

use std::{io::Write, path::Path};

use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};

use super::{
    KubeError,
    crd::{EdgeRecord, FlowEdges, merge_edges},
};

/// Objects per list request: shards are up to ~0.5 MiB, so a page stays around 10 MiB.
const PAGE_SIZE: u32 = 20;

/// A client configured as kubectl would be, in `context` (default: the current one): from
/// `kubeconfig` when given, else from `KUBECONFIG` or `~/.kube/config`, else (without a
/// context) the in-cluster service account.
pub async fn client_for(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Client, KubeError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let err = |message: String| KubeError::Kubeconfig {
                path: path.display().to_string(),
                message,
            };
            let file = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| err(e.to_string()))?
        }
        (None, Some(_)) => {
            Config::from_kubeconfig(&options)
                .await
                .map_err(|e| KubeError::InferConfig {
                    message: e.to_string(),
                })?
        }
        (None, None) => Config::infer().await.map_err(|e| KubeError::InferConfig {
            message: e.to_string(),
        })?,
    };
    Client::try_from(config).map_err(KubeError::Client)
}

/// A client configured as kubectl would be: from `kubeconfig` when given (its current
/// context), else from `KUBECONFIG`, `~/.kube/config`, or the in-cluster service account.
pub async fn client_from_kubeconfig(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    client_for(kubeconfig, None).await
}

/// Lists the `FlowEdges` of every node in `namespace` (page by page) and merges their edges:
/// the same edge seen on several nodes becomes one, with counts added and the widest time
/// range. Sorted by (src, dst, protocol, port).
#[tracing::instrument(skip(client))]
pub async fn fetch_edges(client: Client, namespace: &str) -> Result<Vec<EdgeRecord>, KubeError> {
    let api: Api<FlowEdges> = Api::namespaced(client, namespace);
    let mut edges = Vec::new();
    let mut params = ListParams::default().limit(PAGE_SIZE);
    let mut objects = 0usize;
    loop {
        let page = api.list(&params).await.map_err(|source| KubeError::List {
            what: format!("FlowEdges in {namespace}"),
            source,
        })?;
        objects += page.items.len();
        edges.extend(page.items.into_iter().flat_map(|o| o.spec.edges));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let merged = merge_edges(edges);
    tracing::info!(objects, edges = merged.len(), "fetched FlowEdges");
    Ok(merged)
}

/// Writes one JSON object per edge and line.
pub fn write_json_lines(edges: &[EdgeRecord], mut out: impl Write) -> std::io::Result<()> {
    for e in edges {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

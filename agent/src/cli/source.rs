//! Where the offline commands read the cluster from: manifests, or the live cluster
//! (`--from-cluster`), as kubectl reads it (kubeconfig, current context, `--context`).

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use k8s_openapi::api::{
    core::v1::{Pod, Service},
    networking::v1::{Ingress, NetworkPolicy},
};
use kube::{Api, Client, Resource, api::ListParams};
use serde::Serialize;

use crate::{
    inventory::Loaded,
    kube::{
        KubeInventory, PodScope,
        admin::{AdminNetworkPolicyRes, BaselineAdminNetworkPolicyRes, ClusterNetworkPolicyRes},
        client_for,
    },
};

#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Manifest files or directories (YAML, JSON, `kind: List`), read recursively.
    #[arg(
        long,
        num_args = 1..,
        required_unless_present = "from_cluster",
        conflicts_with = "from_cluster"
    )]
    pub manifests: Vec<PathBuf>,
    /// Read the live cluster instead of manifests: its pods, namespaces, Services,
    /// EndpointSlices and NetworkPolicies, with the credentials kubectl would use.
    #[arg(long)]
    pub from_cluster: bool,
    /// Kubeconfig file for --from-cluster; default: KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, requires = "from_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context for --from-cluster; default: the current context.
    #[arg(long, requires = "from_cluster")]
    pub context: Option<String>,
    /// Report only on this namespace, as kubectl's -n does. The whole cluster (or every
    /// manifest) is still read, because policies elsewhere decide this namespace's traffic.
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Report fields a kind does not have (typos such as `polcyTypes`) as warnings instead of
    /// errors.
    #[arg(long)]
    pub lenient: bool,
    /// Seconds to wait for the live cluster's first lists.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub sync_timeout: u64,
}

/// What `lint` locates findings in when it reads the live cluster: one virtual file.
pub const LIVE_FILE: &str = "live-cluster.yaml";

impl SourceArgs {
    /// The inventory and policies, from the manifests or the live cluster.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        if !self.from_cluster {
            return super::check::load_manifests(&self.manifests, self.lenient);
        }
        self.block_on(async {
            let client = self.client().await?;
            let inv = KubeInventory::start(client.clone(), PodScope::Cluster);
            if tokio::time::timeout(Duration::from_secs(self.sync_timeout), inv.wait_synced())
                .await
                .is_err()
            {
                let errors: Vec<String> = inv
                    .status()
                    .into_iter()
                    .filter(|s| !s.synced)
                    .map(|s| {
                        format!(
                            "{}: {}",
                            s.kind,
                            s.last_error.as_deref().unwrap_or("no answer yet")
                        )
                    })
                    .collect();
                anyhow::bail!(
                    "the live cluster did not list within {} s (--sync-timeout): {}",
                    self.sync_timeout,
                    errors.join("; ")
                );
            }
            let mut loaded = inv.snapshot();
            let live = crate::kube::unevaluated::live_policies(&client).await;
            for p in &live.cilium {
                tracing::info!(
                    policy = %p.key(),
                    "CiliumNetworkPolicy read from the live cluster"
                );
            }
            loaded.policies.extend(live.cilium);
            loaded.warnings.extend(live.warnings);
            for note in &loaded.notes {
                tracing::info!("{note}");
            }
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            Ok(loaded)
        })
    }

    /// For `lint`: the live objects it reads beyond the inventory (NetworkPolicies, Services,
    /// Ingresses, pods' annotations), as one YAML text named [`LIVE_FILE`]; `None` with
    /// manifests.
    pub fn live_text(&self) -> anyhow::Result<Option<(PathBuf, String)>> {
        if !self.from_cluster {
            return Ok(None);
        }
        self.block_on(async {
            let client = self.client().await?;
            let mut text = String::new();
            documents::<NetworkPolicy>(&client, &mut text).await?;
            documents::<Service>(&client, &mut text).await?;
            documents::<Ingress>(&client, &mut text).await?;
            documents::<Pod>(&client, &mut text).await?;
            optional_documents::<ClusterNetworkPolicyRes>(&client, &mut text).await?;
            optional_documents::<AdminNetworkPolicyRes>(&client, &mut text).await?;
            optional_documents::<BaselineAdminNetworkPolicyRes>(&client, &mut text).await?;
            Ok(Some((PathBuf::from(LIVE_FILE), text)))
        })
    }

    async fn client(&self) -> anyhow::Result<Client> {
        client_for(self.kubeconfig.as_deref(), self.context.as_deref())
            .await
            .context("connecting to the cluster")
    }

    fn block_on<T>(&self, f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(f)
    }

    /// How the source is named in messages.
    pub fn describe(&self) -> String {
        if self.from_cluster {
            match &self.context {
                Some(c) => format!("the live cluster (context {c})"),
                None => "the live cluster".into(),
            }
        } else {
            self.manifests
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Whether a name (`namespace/...`, or a bare namespace) is in the `-n` scope; everything
    /// is without `-n`.
    pub fn in_scope(&self, name: &str) -> bool {
        match &self.namespace {
            None => true,
            Some(ns) => name.split('/').next() == Some(ns.as_str()),
        }
    }

    /// For commands whose arguments already name what they report on: `-n` would change
    /// nothing, so it is refused rather than silently ignored.
    pub fn reject_namespace(&self, command: &str, why: &str) -> anyhow::Result<()> {
        match &self.namespace {
            Some(ns) => anyhow::bail!("-n/--namespace {ns}: `{command}` {why}; leave -n out"),
            None => Ok(()),
        }
    }

    pub fn manifests(&self) -> &[PathBuf] {
        &self.manifests
    }

    pub fn is_live(&self) -> bool {
        self.from_cluster
    }
}

/// Appends every object of kind `K` in the cluster as a YAML document, without the fields the
/// server manages.
async fn documents<K>(client: &Client, out: &mut String) -> anyhow::Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let list = Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing {}", K::plural(&())))?;
    append_documents(list.items, out)
}

/// Like [`documents`], for a cluster-scoped kind whose CRD may not be installed: none is
/// nothing to append.
async fn optional_documents<K>(client: &Client, out: &mut String) -> anyhow::Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    match Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => append_documents(list.items, out),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("listing {}", K::plural(&()))),
    }
}

fn append_documents<K>(items: Vec<K>, out: &mut String) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    for mut obj in items {
        let meta = obj.meta_mut();
        meta.managed_fields = None;
        meta.resource_version = None;
        meta.uid = None;
        let mut value = serde_json::to_value(&obj)?;
        value["apiVersion"] = K::api_version(&()).as_ref().into();
        value["kind"] = K::kind(&()).as_ref().into();
        if let Some(o) = value.as_object_mut() {
            o.remove("status");
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&value)?);
    }
    Ok(())
}

//! Where the agent's inventory comes from, and when to take a new snapshot of it (IO): the API
//! server's watches (`--inventory kube`), or static manifests read again when their files
//! change (`--inventory manifests`, so that a namespace's mode can be switched without a
//! restart).
//!
//! The agent polls [`Feed::poll`] every few seconds; a snapshot is taken only when something
//! changed, so an idle cluster costs nothing, and a busy one at most one snapshot per poll.

use std::{path::PathBuf, sync::Arc, time::SystemTime};

use super::store::fingerprint;
use crate::{
    inventory::{InventoryError, Loaded, load_paths},
    kube::KubeInventory,
};

/// The inventory's source.
pub enum Feed {
    Manifests {
        paths: Vec<PathBuf>,
        last: Vec<(PathBuf, Option<SystemTime>, u64)>,
    },
    Kube {
        inventory: Arc<KubeInventory>,
        last: u64,
    },
}

impl Feed {
    /// Reads the manifests once; later changes are seen by [`poll`](Self::poll).
    pub fn manifests(paths: Vec<PathBuf>) -> Result<(Self, Loaded), InventoryError> {
        let last = fingerprint(&paths);
        let loaded = load_paths(&paths)?;
        Ok((Self::Manifests { paths, last }, loaded))
    }

    /// The watches' stores now (call once they are synced).
    pub fn kube(inventory: Arc<KubeInventory>) -> (Self, Loaded) {
        let last = inventory.generation();
        let loaded = inventory.snapshot();
        (Self::Kube { inventory, last }, loaded)
    }

    /// Every watch listed once (manifests: always).
    pub fn synced(&self) -> bool {
        match self {
            Self::Manifests { .. } => true,
            Self::Kube { inventory, .. } => inventory.synced(),
        }
    }

    /// A new snapshot when the source changed since the last one. Manifests that no longer
    /// parse are reported and the previous snapshot stays in force.
    pub fn poll(&mut self) -> Option<Loaded> {
        match self {
            Self::Manifests { paths, last } => {
                let now = fingerprint(paths);
                if now == *last {
                    return None;
                }
                *last = now;
                match load_paths(paths) {
                    Ok(l) => {
                        tracing::info!(
                            pods = l.inventory.pods().len(),
                            "manifests changed: reloaded"
                        );
                        Some(l)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "manifests changed but do not load; keeping the previous inventory");
                        None
                    }
                }
            }
            Self::Kube { inventory, last } => {
                let now = inventory.generation();
                if now == *last {
                    return None;
                }
                *last = now;
                Some(inventory.snapshot())
            }
        }
    }
}

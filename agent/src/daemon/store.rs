//! The agent's files (IO): frozen baselines under `<state-dir>/baseline/<namespace>.yaml`, and
//! the fingerprint of `--manifests` that tells the agent to read them again.
//!
//! Writes are atomic (a temporary file beside the target, synced, then renamed), so a crash
//! leaves the old baseline or the new one.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::baseline::{Frozen, FrozenSet};
use crate::inventory::{InventoryError, load_paths};

/// Why a file of the agent could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A persisted baseline does not parse as NetworkPolicies: fix or delete the file (the
    /// namespace then freezes again from the current graph).
    #[error("frozen baseline {}: {source}", path.display())]
    Baseline {
        path: PathBuf,
        source: InventoryError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The frozen baselines kept in `dir` (a missing directory holds none).
pub fn load_frozen(dir: &Path) -> Result<FrozenSet, StoreError> {
    let mut out = FrozenSet::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        let Some(ns) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".yaml"))
        else {
            continue;
        };
        let yaml = fs::read_to_string(&path).map_err(io_err(&path))?;
        let policies = load_paths(std::slice::from_ref(&path))
            .map_err(|source| StoreError::Baseline {
                path: path.clone(),
                source,
            })?
            .policies;
        out.insert(ns.to_owned(), Frozen { yaml, policies });
    }
    Ok(out)
}

/// Persists one namespace's frozen baseline.
pub fn save_frozen(dir: &Path, namespace: &str, frozen: &Frozen) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(format!("{namespace}.yaml"));
    let tmp = dir.join(format!(".{namespace}.yaml.tmp"));
    let write = || -> io::Result<()> {
        let mut f = crate::graph::state::create_private(&tmp)?;
        f.write_all(frozen.yaml.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(io_err(&path))
}

/// Forgets one namespace's frozen baseline.
pub fn remove_frozen(dir: &Path, namespace: &str) -> Result<(), StoreError> {
    let path = dir.join(format!("{namespace}.yaml"));
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
        _ => Ok(()),
    }
}

/// Path, modification time and size of every file under `paths` (directories walked, sorted):
/// equal fingerprints mean the manifests did not change. Unreadable paths count as absent.
pub fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    fn walk(p: &Path, out: &mut Vec<(PathBuf, Option<SystemTime>, u64)>) {
        let Ok(meta) = fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = fs::read_dir(p)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out);
            }
        } else {
            out.push((p.to_owned(), meta.modified().ok(), meta.len()));
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
        metadata: {name: default-deny, namespace: shop}\n\
        spec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n";

    #[test]
    fn a_frozen_baseline_survives_a_restart_and_can_be_forgotten() {
        let dir = std::env::temp_dir().join(format!("trustmap-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(load_frozen(&dir).unwrap().is_empty());
        let f = Frozen {
            yaml: POLICY.into(),
            policies: Vec::new(),
        };
        save_frozen(&dir, "shop", &f).unwrap();
        let back = load_frozen(&dir).unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), ["shop"]);
        // A baseline says what each workload may reach: the agent's alone to read.
        let mode = {
            use std::os::unix::fs::PermissionsExt as _;
            fs::metadata(dir.join("shop.yaml"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode, 0o600);
        assert_eq!(back["shop"].policies.len(), 1);
        assert_eq!(back["shop"].yaml, POLICY);
        remove_frozen(&dir, "shop").unwrap();
        remove_frozen(&dir, "shop").unwrap();
        assert!(load_frozen(&dir).unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_fingerprint_changes_when_a_file_does() {
        let dir = std::env::temp_dir().join(format!("trustmap-fp-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("a.yaml"), "a").unwrap();
        let before = fingerprint(std::slice::from_ref(&dir));
        assert_eq!(before, fingerprint(std::slice::from_ref(&dir)));
        fs::write(dir.join("a.yaml"), "ab").unwrap();
        assert_ne!(before, fingerprint(std::slice::from_ref(&dir)));
        fs::remove_dir_all(&dir).unwrap();
    }
}

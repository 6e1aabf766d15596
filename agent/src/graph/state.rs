//! The state file: the graph saved so that a restart keeps what was learned. The only IO of
//! the graph module. Saving writes a temporary file next to the target, syncs it and renames
//! it over the target, so a crash leaves the old state or the new one, never half of one. The file
//! is the node's connection map, so it is readable by its owner only (mode 0600).

use std::{
    fs::{self, File},
    io::{BufReader, BufWriter, Write as _},
    path::Path,
};

use super::{FlowGraph, GraphError};

/// Reads a state file; a missing file is an empty graph.
pub fn load(path: &Path) -> Result<FlowGraph, GraphError> {
    let io = |source| GraphError::Io {
        path: path.to_owned(),
        source,
    };
    let mut g = FlowGraph::new();
    match File::open(path) {
        Ok(f) => g.read_json_lines(BufReader::new(f), &path.display().to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    Ok(g)
}

/// Creates (or truncates) `path` readable and writable by its owner only: mode 0600 from the
/// start, and again if the file existed with another mode.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let f = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Replaces the state file atomically.
pub fn save(path: &Path, graph: &FlowGraph) -> Result<(), GraphError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| GraphError::Io { path: p, source }
    };
    let result = (|| {
        let f = create_private(&tmp).map_err(io(&tmp))?;
        let mut w = BufWriter::new(f);
        graph.write_json_lines(&mut w).map_err(io(&tmp))?;
        w.flush().map_err(io(&tmp))?;
        w.get_ref().sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))?;
        // Make the rename itself durable.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_state_file_is_readable_by_its_owner_only() {
        let dir = std::env::temp_dir().join(format!("trustmap-state-mode-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("graph.jsonl");
        // An older file with a wider mode is replaced by a private one.
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        save(&path, &FlowGraph::new()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode, 0o600);
    }
}

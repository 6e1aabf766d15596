//! Builds the eBPF programs of `agent-ebpf` for the BPF target and leaves the object in OUT_DIR,
//! where `datapath` embeds it.
//!
//! bpf-linker is installed by `cargo xtask setup` under the tools directory, keyed by the name of
//! the nightly toolchain's libLLVM; it is put on PATH here so that a plain `cargo build` works too.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=TRUSTMAP_TOOLS_DIR");
    if let Some(dir) = bpf_linker_dir()
        && let Some(path) = env::var_os("PATH")
    {
        let mut paths = vec![dir];
        paths.extend(env::split_paths(&path));
        let joined = env::join_paths(paths).context("joining PATH")?;
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { env::set_var("PATH", joined) };
    }
    let metadata = cargo_manifest_dir()?;
    let ebpf_dir = metadata
        .parent()
        .ok_or_else(|| anyhow!("agent/ has no parent"))?
        .join("agent-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}

fn cargo_manifest_dir() -> anyhow::Result<PathBuf> {
    env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))
}

/// `<tools>/bpf-linker/<libLLVM file name>/bin`, as `cargo xtask setup` lays it out.
fn bpf_linker_dir() -> Option<PathBuf> {
    let tools = env::var_os("TRUSTMAP_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/trustmap-tools")))?;
    let out = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let lib = std::fs::read_dir(sysroot.join("lib"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))?;
    Some(tools.join("bpf-linker").join(lib).join("bin"))
}

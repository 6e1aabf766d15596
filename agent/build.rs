//! Builds the eBPF programs of `agent-ebpf` for the BPF target and leaves the object in OUT_DIR,
//! where `datapath` embeds it.
//!
//! bpf-linker is installed by `cargo xtask setup` under the tools directory, keyed by the name of
//! the eBPF toolchain's libLLVM (nightly, or stable with RUSTC_BOOTSTRAP=1); it is put on PATH
//! here so that a plain `cargo build` works too.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=TRUSTMAP_TOOLS_DIR");
    println!("cargo:rerun-if-env-changed=TRUSTMAP_EBPF_TOOLCHAIN");
    let toolchain = ebpf_toolchain();
    if toolchain != "nightly" && env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // Lets a stable toolchain take `-Z build-std`, as EBPF-BUILD.md describes; aya-build
        // reads it and passes it on to the eBPF build.
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    if let Some(dir) = bpf_linker_dir(&toolchain)
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
        aya_build::Toolchain::Custom(&toolchain),
    )
}

/// `TRUSTMAP_EBPF_TOOLCHAIN`, else nightly when installed, else stable (as `cargo xtask setup`
/// decides).
fn ebpf_toolchain() -> String {
    if let Ok(t) = env::var("TRUSTMAP_EBPF_TOOLCHAIN")
        && !t.is_empty()
    {
        return t;
    }
    // Ask rustup rather than `rustc +nightly`, which may try to install a missing toolchain.
    let nightly = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("nightly"))
        });
    if nightly { "nightly" } else { "stable" }.to_owned()
}

fn cargo_manifest_dir() -> anyhow::Result<PathBuf> {
    env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))
}

/// `<tools>/bpf-linker/<libLLVM file name>/bin`, as `cargo xtask setup` lays it out.
fn bpf_linker_dir(toolchain: &str) -> Option<PathBuf> {
    let tools = env::var_os("TRUSTMAP_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/trustmap-tools")))?;
    let out = Command::new("rustc")
        .args([&format!("+{toolchain}"), "--print", "sysroot"])
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

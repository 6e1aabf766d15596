//! `cargo xtask fuzz TARGET`: the coverage-guided fuzz targets of agent/fuzz (cargo-fuzz and
//! libFuzzer, with AddressSanitizer, on the eBPF toolchain: nightly, or stable with
//! RUSTC_BOOTSTRAP=1), and the bounded run of each that `cargo xtask test` makes.
//!
//! Seeds are checked in under agent/fuzz/seeds/TARGET and only read; what a run discovers goes
//! to a scratch corpus under target/fuzz/, and a crash to target/fuzz/artifacts/TARGET/. A crash
//! found becomes a seed once fixed, so that every later run replays it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{run, setup::BuildTools};

/// Every target, in agent/fuzz/fuzz_targets/.
pub const TARGETS: &[&str] = &[
    "dns",
    "flow_records",
    "manifests",
    "flowedges",
    "datapath_event",
];

/// `cargo fuzz …` in agent/ with the eBPF toolchain (which the agent's build script needs
/// anyway) and cargo-fuzz on PATH.
fn cargo_fuzz(tools: &BuildTools, cargo_fuzz_bin: &Path) -> Command {
    let mut cmd = tools.ebpf_cargo();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![
        cargo_fuzz_bin
            .parent()
            .expect("cargo-fuzz lives in a directory")
            .to_path_buf(),
    ];
    paths.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(paths).expect("PATH entries"));
    cmd.arg("fuzz");
    cmd
}

/// Builds every target once.
pub fn build(root: &Path, tools: &BuildTools, cargo_fuzz_bin: &Path) -> anyhow::Result<()> {
    run(
        &root.join("agent"),
        cargo_fuzz(tools, cargo_fuzz_bin).args(["build", "--sanitizer", "address"]),
    )
}

/// Runs `target` for `seconds` (forever with `None`) from its seeds; fails on a crash, a leak,
/// a timeout or running out of memory, naming the input that did it.
pub fn run_target(
    root: &Path,
    tools: &BuildTools,
    cargo_fuzz_bin: &Path,
    target: &str,
    seconds: Option<u64>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        TARGETS.contains(&target),
        "no fuzz target {target}; the targets are {}",
        TARGETS.join(", ")
    );
    let scratch = root.join("target/fuzz/corpus").join(target);
    let artifacts: PathBuf = root.join("target/fuzz/artifacts").join(target);
    for dir in [&scratch, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let seeds = root.join("agent/fuzz/seeds").join(target);
    let mut cmd = cargo_fuzz(tools, cargo_fuzz_bin);
    cmd.args(["run", "--sanitizer", "address", target])
        .arg(&scratch)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // An input that takes a second, or half a GiB, is a finding too: the agent parses
        // these on its event loop.
        .args(["-timeout=1", "-rss_limit_mb=512", "-max_len=65536"]);
    if let Some(s) = seconds {
        cmd.arg(format!("-max_total_time={s}"));
    }
    run(&root.join("agent"), &mut cmd).with_context(|| {
        format!(
            "fuzz target {target} failed: the input is under {}; fix the bug, then copy the \
             input to agent/fuzz/seeds/{target}/ as a regression seed",
            artifacts.display()
        )
    })
}

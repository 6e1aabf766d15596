//! Project automation: `cargo xtask setup | test | demo | bench | image`.
//!
//! xtask depends on nothing that needs the eBPF toolchain, so that `setup` can run on a machine
//! that does not have it yet. `test`, `demo` and `bench` run `setup` first.

mod deploy;
mod fuzz;
mod image;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks, idempotently: what building needs (iproute2, rust-src,
    /// bpf-linker) and what the tests need (Chromium, podman, the control plane, helm, ...).
    Setup {
        /// Only what building the agent, its image and the demo needs.
        #[arg(long)]
        build: bool,
    },
    /// Every check and test: fmt, clippy (userspace and eBPF), unit tests, privileged e2e tests.
    Test {
        /// Only the tests whose names contain this string (unit and e2e alike).
        filter: Option<String>,
    },
    /// The product on an embedded example app: a netns mini-cluster, observed and learned.
    Demo {
        /// Tell the story with the DaemonSet on a real control plane, printing the kubectl and
        /// trustmap commands a user would type.
        #[arg(long)]
        cluster: bool,
    },
    /// Benchmarks: criterion (evaluator) and the datapath figures of BENCHMARKS.md.
    Bench,
    /// The agent's OCI image, as an OCI archive under target/image/, with its SBOM; prints its
    /// size and digest. The same commit gives the same digest.
    Image,
    /// Runs one fuzz target (dns, flow_records, manifests, flowedges, datapath_event) from its
    /// seeds, until it finds a crash or is stopped.
    Fuzz {
        target: String,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Cmd::Setup { build: true } => setup::build(&root).map(|_| ()),
        Cmd::Setup { build: false } => setup::run(&root).map(|_| ()),
        Cmd::Test { filter } => test(&root, filter.as_deref()),
        Cmd::Demo { cluster } => demo(&root, cluster),
        Cmd::Bench => bench(&root),
        Cmd::Image => image(&root).map(|_| ()),
        Cmd::Fuzz { target, seconds } => {
            let tools = setup::build(&root)?;
            let cargo_fuzz = setup::cargo_fuzz(&root)?;
            fuzz::run_target(&root, &tools, &cargo_fuzz, &target, seconds)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, echoing it, and fails if it fails.
pub fn run(root: &Path, cmd: &mut Command) -> anyhow::Result<()> {
    cmd.current_dir(root);
    eprintln!("xtask: $ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("running {}", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", describe(cmd));
    }
    Ok(())
}

/// Whether long builds show a spinner: stderr is a terminal, `CI` is unset and `TERM` is not
/// `dumb`.
fn progress_on_terminal() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal()
        && std::env::var("CI").map_or(true, |v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// [`run`] for a long build. On a terminal, the build's output goes to `log` and a spinner shows
/// what runs and for how long; if the build fails, the log's last lines are printed. Elsewhere
/// (CI, pipes) the output streams as with [`run`].
pub fn run_long(root: &Path, cmd: &mut Command, what: &str, log: &Path) -> anyhow::Result<()> {
    if !progress_on_terminal() {
        return run(root, cmd);
    }
    cmd.current_dir(root);
    eprintln!("xtask: $ {}", describe(cmd));
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdout(file.try_clone()?).stderr(file);
    let bar = indicatif::ProgressBar::new_spinner()
        .with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .expect("a valid template"),
        )
        .with_message(format!("{what}; log: {}", log.display()));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let status = cmd.status();
    let elapsed = bar.elapsed();
    bar.finish_and_clear();
    let status = status.with_context(|| format!("running {}", describe(cmd)))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("{}", lines[lines.len().saturating_sub(40)..].join("\n"));
        bail!(
            "`{}` failed with {status} (log: {})",
            describe(cmd),
            log.display()
        );
    }
    eprintln!("xtask: {what}: done in {} s", elapsed.as_secs());
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// How long `cargo xtask test` runs each fuzz target.
const FUZZ_SECONDS: u64 = 20;

fn test(root: &Path, filter: Option<&str>) -> anyhow::Result<()> {
    let tools = setup::run(root)?;
    run(root, cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(
        root,
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // The eBPF crate, for the BPF target, with the same lints.
    run(
        &root.join("agent-ebpf"),
        tools
            .ebpf_cargo()
            .args(["clippy", "--release", "--", "-D", "warnings"]),
    )?;
    run(root, cargo().args(["build", "-p", "trustmap", "--bins"]))?;
    deploy::validate(root, &tools.go_tools, &tools.actionlint)?;
    // The image the container tests run, built as `cargo xtask image` builds it.
    let image = image::build(root, &tools.build, &tools.cyclonedx)?;
    eprintln!(
        "xtask: image {} ({})",
        image.digest,
        image.archive.display()
    );
    let mut unit = cargo();
    unit.args(["test", "--workspace", "--exclude", "trustmap-e2e"]);
    if let Some(f) = filter {
        unit.args(["--", f]);
    }
    run(root, &mut unit)?;
    // Every fuzz target for a bounded time: a crash fails the run.
    let targets: Vec<&str> = fuzz::TARGETS
        .iter()
        .copied()
        .filter(|t| filter.is_none_or(|f| t.contains(f) || "fuzz".contains(f)))
        .collect();
    if !targets.is_empty() {
        fuzz::build(root, &tools.build, &tools.cargo_fuzz)?;
        for t in targets {
            fuzz::run_target(root, &tools.build, &tools.cargo_fuzz, t, Some(FUZZ_SECONDS))?;
        }
    }
    // The privileged tests never skip: without root they fail, here, loudly.
    if !is_root() {
        bail!(
            "the end-to-end tests need root (network namespaces, eBPF); rerun `cargo xtask test` \
             as root"
        );
    }
    let mut e2e = cargo();
    e2e.args([
        "test",
        "-p",
        "trustmap-e2e",
        "--test",
        "e2e",
        "--",
        "--test-threads=1",
    ])
    .env("TRUSTMAP_BIN", root.join("target/debug/trustmap"))
    .env("TRUSTMAP_IMAGE", &image.archive)
    .env("TRUSTMAP_K8S_BIN_DIR", &tools.k8s_bin)
    .env("TRUSTMAP_CILIUM_CRD", &tools.cilium_crd);
    if let Some(f) = filter {
        e2e.arg(f);
    }
    run(root, &mut e2e)
}

fn image(root: &Path) -> anyhow::Result<image::Image> {
    let tools = setup::build(root)?;
    let cyclonedx = setup::cyclonedx(root)?;
    let image = image::build(root, &tools, &cyclonedx)?;
    println!(
        "image {} ({:.1} MiB): {}\n  digest {}\n  SBOM {}",
        image.reference,
        image.size as f64 / (1024.0 * 1024.0),
        image.archive.display(),
        image.digest,
        image.sbom.display()
    );
    Ok(image)
}

fn demo(root: &Path, cluster: bool) -> anyhow::Result<()> {
    // The demo needs only what building needs; its cluster variant adds the control plane.
    let k8s_bin = if cluster {
        Some(setup::run(root)?.k8s_bin)
    } else {
        setup::build(root)?;
        None
    };
    if !is_root() {
        bail!("the demo builds network namespaces and loads eBPF: run it as root");
    }
    run(root, cargo().args(["build", "-p", "trustmap", "--bins"]))?;
    let mut cmd = cargo();
    cmd.args(["run", "-q", "-p", "trustmap-e2e", "--bin"])
        .arg(if cluster {
            "trustmap-demo-cluster"
        } else {
            "trustmap-demo"
        })
        .env("TRUSTMAP_BIN", root.join("target/debug/trustmap"));
    if let Some(dir) = k8s_bin {
        cmd.env("TRUSTMAP_K8S_BIN_DIR", dir);
    }
    run(root, &mut cmd)
}

fn bench(root: &Path) -> anyhow::Result<()> {
    setup::run(root)?;
    if !is_root() {
        bail!("the datapath benchmarks load eBPF and build network namespaces: run as root");
    }
    run(
        root,
        cargo().args(["build", "--release", "-p", "trustmap", "--bins"]),
    )?;
    run(
        root,
        cargo()
            .args([
                "run",
                "--release",
                "-p",
                "trustmap-e2e",
                "--bin",
                "trustmap-datapath-bench",
            ])
            .env("TRUSTMAP_BIN", root.join("target/release/trustmap")),
    )?;
    run(root, cargo().args(["bench", "-p", "trustmap"]))
}

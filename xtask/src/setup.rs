//! `cargo xtask setup`: installs what the build and the tests need, idempotently, and quickly when
//! nothing is missing. It has two parts.
//!
//! [`build`], what building the agent, its image and the demo need (`cargo xtask setup --build`;
//! the image's builder stage and `cargo xtask demo` run only this). The recipe is
//! ../shared/toolchain/EBPF-BUILD.md:
//! - the Debian packages iproute2 (ip, tc: the demo's network namespaces) and ca-certificates
//!   (the bundle the image carries);
//! - an eBPF toolchain: nightly when installed, else stable with RUSTC_BOOTSTRAP=1;
//! - rust-src for it (from rustup, or from the tarball named by TRUSTMAP_RUST_SRC_TARBALL);
//! - bpf-linker 0.13 built against that toolchain's own libLLVM, under the tools directory, in a
//!   folder named after the libLLVM file, so that a toolchain update rebuilds it.
//!
//! [`test_stack`], what the tests and benchmarks add:
//! - Debian packages: bpftool, iperf3 (benchmarks), chromium (HTML graph test), nftables and curl
//!   (cluster tests), podman and runc (the agent's image run as a container);
//! - cargo-cyclonedx, which writes the image's SBOM, and cargo-fuzz, for the fuzz targets;
//! - the control plane the cluster tests run: kube-apiserver, kube-controller-manager and kubectl
//!   from `k8s.io/kubernetes`, and etcd from `go.etcd.io/etcd/server/v3`, built with Go from the
//!   module in `tests/controlplane/` into a folder named after both versions (see
//!   docs/testing.md);
//! - actionlint, which checks the release workflow;
//! - the deploy checks' Go tools: helm (`helm lint`, `helm template` of the chart) and krew's
//!   `validate-krew-manifest`, by `go install` of their pinned versions, into a folder named
//!   after both.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run as sh;

/// What building and the demo need from Debian.
/// (ca-certificates: the image's CA bundle.)
const BUILD_APT_PACKAGES: &[&str] = &["iproute2", "ca-certificates"];
/// What the tests and benchmarks add.
const TEST_APT_PACKAGES: &[&str] = &[
    "bpftool", "iperf3", "chromium", // programs' stats, benchmarks, the graph page's test
    "nftables", "curl", // the cluster tests: kube-proxy's stand-in, etcd's HTTP API
    "podman",
    "runc", // the image's container test: podman picks crun, which refuses hybrid cgroups
];
/// The Kubernetes release the cluster tests run, and the etcd its kubeadm pins. Both must match
/// `tests/controlplane/go.mod`.
pub const KUBERNETES_VERSION: &str = "v1.36.3";
pub const ETCD_VERSION: &str = "v3.6.8";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The eBPF toolchain that setup's first part prepared.
pub struct BuildTools {
    /// `nightly` or `stable`.
    pub toolchain: String,
    /// Directory holding the `bpf-linker` binary.
    pub bpf_linker_bin: PathBuf,
}

/// Everything setup prepared: the build tools and the test stack.
pub struct Tools {
    pub build: BuildTools,
    /// Directory holding etcd, kube-apiserver, kube-controller-manager and kubectl.
    pub k8s_bin: PathBuf,
    /// Cilium's CiliumNetworkPolicy CRD, which the tests install to validate learned policies.
    pub cilium_crd: PathBuf,
    /// Directory holding helm and validate-krew-manifest.
    pub go_tools: PathBuf,
    /// The `cargo-cyclonedx` binary, which writes the image's SBOM.
    pub cyclonedx: PathBuf,
    /// The `actionlint` binary, which checks the release workflow.
    pub actionlint: PathBuf,
    /// The `cargo-fuzz` binary, which builds and runs the fuzz targets.
    pub cargo_fuzz: PathBuf,
}

impl Tools {
    pub fn ebpf_cargo(&self) -> Command {
        self.build.ebpf_cargo()
    }
}

impl BuildTools {
    /// `cargo +<toolchain>` with bpf-linker on PATH and, on stable, RUSTC_BOOTSTRAP=1.
    pub fn ebpf_cargo(&self) -> Command {
        let mut cmd = Command::new("cargo");
        cmd.arg(format!("+{}", self.toolchain));
        // Run the toolchain's own cargo and rustc, not the ones of the outer `cargo xtask`.
        cmd.env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("RUSTUP_TOOLCHAIN");
        let path = env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.bpf_linker_bin.clone()];
        paths.extend(env::split_paths(&path));
        cmd.env("PATH", env::join_paths(paths).expect("PATH entries"));
        if self.toolchain == "stable" {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        cmd
    }
}

/// Both parts: what `cargo xtask setup` and `cargo xtask test` run.
pub fn run(root: &Path) -> anyhow::Result<Tools> {
    let build = build(root)?;
    test_stack(root, build)
}

/// The first part: what building the agent (and so its image and the demo) needs.
pub fn build(root: &Path) -> anyhow::Result<BuildTools> {
    apt_packages(root, BUILD_APT_PACKAGES)?;
    let toolchain = ebpf_toolchain()?;
    let sysroot = sysroot(&toolchain)?;
    rust_src(root, &toolchain, &sysroot)?;
    let bpf_linker_bin = bpf_linker(root, &toolchain, &sysroot)?;
    Ok(BuildTools {
        toolchain,
        bpf_linker_bin,
    })
}

/// The second part: the tests' and benchmarks' tools.
pub fn test_stack(root: &Path, build: BuildTools) -> anyhow::Result<Tools> {
    apt_packages(root, TEST_APT_PACKAGES)?;
    let cyclonedx = cyclonedx(root)?;
    let k8s_bin = control_plane(root)?;
    let cilium_crd = cilium_crd()?;
    let go_tools = go_tools()?;
    let actionlint = actionlint()?;
    let cargo_fuzz = cargo_fuzz(root)?;
    Ok(Tools {
        build,
        cargo_fuzz,
        cyclonedx,
        actionlint,
        k8s_bin,
        cilium_crd,
        go_tools,
    })
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn apt_packages(root: &Path, packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| s != "install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages {}", missing.join(" "));
    sh(root, Command::new("apt-get").args(["update", "-qq"]))?;
    sh(
        root,
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn ebpf_toolchain() -> anyhow::Result<String> {
    if let Ok(t) = env::var("TRUSTMAP_EBPF_TOOLCHAIN") {
        return Ok(t);
    }
    let list = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to build the eBPF programs")?;
    if list.lines().any(|l| l.starts_with("nightly")) {
        Ok("nightly".into())
    } else {
        Ok("stable".into())
    }
}

fn sysroot(toolchain: &str) -> anyhow::Result<PathBuf> {
    output(Command::new("rustc").args([&format!("+{toolchain}"), "--print", "sysroot"]))
        .map(PathBuf::from)
        .with_context(|| format!("no sysroot for toolchain {toolchain}"))
}

fn rust_src(root: &Path, toolchain: &str, sysroot: &Path) -> anyhow::Result<()> {
    let marker = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if marker.exists() {
        return Ok(());
    }
    let via_rustup = sh(
        root,
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", toolchain]),
    );
    if via_rustup.is_ok() && marker.exists() {
        return Ok(());
    }
    let tarball = env::var_os("TRUSTMAP_RUST_SRC_TARBALL")
        .map(PathBuf::from)
        .or_else(|| shared_tarball(root, toolchain));
    let Some(tarball) = tarball else {
        bail!(
            "rust-src for {toolchain} could not be installed with rustup; set \
             TRUSTMAP_RUST_SRC_TARBALL to an offline rust-src component tarball"
        );
    };
    eprintln!(
        "xtask: unpacking {} into {}",
        tarball.display(),
        sysroot.display()
    );
    sh(
        root,
        Command::new("tar")
            .arg("xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(sysroot),
    )?;
    if !marker.exists() {
        bail!("{} did not provide rust-src", tarball.display());
    }
    Ok(())
}

/// The offline copy kept beside the repository, if there is one for this toolchain.
fn shared_tarball(root: &Path, toolchain: &str) -> Option<PathBuf> {
    let dir = root.parent()?.join("shared/toolchain");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("rust-src-{toolchain}")))
        })
}

const CYCLONEDX_VERSION: &str = "0.5.9";
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Builds cargo-cyclonedx (the SBOM of the image) once per version into the tools directory.
pub fn cyclonedx(root: &Path) -> anyhow::Result<PathBuf> {
    cargo_install(root, "cargo-cyclonedx", CYCLONEDX_VERSION)
}

/// Builds cargo-fuzz (the fuzz targets) once per version into the tools directory.
pub fn cargo_fuzz(root: &Path) -> anyhow::Result<PathBuf> {
    cargo_install(root, "cargo-fuzz", CARGO_FUZZ_VERSION)
}

/// `cargo install --locked NAME@VERSION` into `TOOLS/NAME-VERSION`, unless it is there.
fn cargo_install(root: &Path, name: &str, version: &str) -> anyhow::Result<PathBuf> {
    let prefix = tools_dir().join(format!("{name}-{version}"));
    let bin = prefix.join("bin").join(name);
    if bin.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&prefix)?;
    crate::run_long(
        root,
        Command::new("cargo")
            .args([
                "install",
                &format!("{name}@{version}"),
                "--locked",
                "--root",
            ])
            .arg(&prefix)
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("RUSTUP_TOOLCHAIN"),
        &format!("building {name} {version}"),
        &prefix.join("build.log"),
    )?;
    Ok(bin)
}

/// Tools directory: TRUSTMAP_TOOLS_DIR or ~/.cache/trustmap-tools (agent/build.rs agrees).
fn tools_dir() -> PathBuf {
    env::var_os("TRUSTMAP_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/trustmap-tools")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/trustmap-tools"))
}

fn bpf_linker(root: &Path, toolchain: &str, sysroot: &Path) -> anyhow::Result<PathBuf> {
    let lib = std::fs::read_dir(sysroot.join("lib"))
        .context("reading the toolchain's lib directory")?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .with_context(|| format!("toolchain {toolchain} ships no libLLVM.so.*-rust-*"))?;
    let prefix = tools_dir().join("bpf-linker").join(&lib);
    let bin = prefix.join("bin");
    if bin.join("bpf-linker").exists() {
        return Ok(bin);
    }
    // libLLVM.so.22.1-rust-... → LLVM 22 → bpf-linker's feature llvm-22.
    let major = lib
        .trim_start_matches("libLLVM.so.")
        .split(['.', '-'])
        .next()
        .unwrap_or_default()
        .to_owned();
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against {lib} (about a minute)");
    let libdir = prefix.join("lib");
    std::fs::create_dir_all(&libdir)?;
    for name in ["libLLVM.so", lib.as_str()] {
        let link = libdir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(sysroot.join("lib").join(&lib), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{toolchain}"))
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .arg("--root")
        .arg(&prefix)
        .env("LLVM_PREFIX", &prefix)
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    if toolchain == "stable" {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    crate::run_long(
        root,
        &mut cmd,
        &format!("building bpf-linker {BPF_LINKER_VERSION}"),
        &prefix.join("build.log"),
    )?;
    Ok(bin)
}

/// The Cilium release whose CiliumNetworkPolicy CRD the tests validate learned policies with.
const CILIUM_VERSION: &str = "v1.20.2";
const CILIUM_MODULE: &str = "github.com/cilium/cilium";
const CILIUM_CRD: &str = "pkg/k8s/apis/cilium.io/client/crds/v2/ciliumnetworkpolicies.yaml";

/// Fetches Cilium's module with the Go tool (checked against the checksum database, cached in
/// the tools directory) and keeps its CiliumNetworkPolicy CRD, once per version.
fn cilium_crd() -> anyhow::Result<PathBuf> {
    let tools = tools_dir();
    let dir = tools.join(format!("cilium-{CILIUM_VERSION}"));
    let file = dir.join("ciliumnetworkpolicies.yaml");
    if file.exists() {
        return Ok(file);
    }
    eprintln!("xtask: fetching {CILIUM_MODULE}@{CILIUM_VERSION} for its CRD (about 36 MiB)");
    let modcache = tools.join("go/mod");
    std::fs::create_dir_all(&tools)?;
    sh(
        &tools,
        go_command(&tools).args([
            "mod",
            "download",
            &format!("{CILIUM_MODULE}@{CILIUM_VERSION}"),
        ]),
    )?;
    let src = modcache
        .join(format!("{CILIUM_MODULE}@{CILIUM_VERSION}"))
        .join(CILIUM_CRD);
    std::fs::create_dir_all(&dir)?;
    let partial = dir.join("ciliumnetworkpolicies.yaml.partial");
    std::fs::copy(&src, &partial).with_context(|| format!("copying {}", src.display()))?;
    std::fs::rename(&partial, &file)?;
    Ok(file)
}

/// What `go build` makes for the cluster tests: (binary, package).
const CONTROL_PLANE: &[(&str, &str)] = &[
    ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
    (
        "kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
    ),
    ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
    ("etcd", "go.etcd.io/etcd/server/v3"),
];

/// Builds the control plane from upstream source, once per pair of versions. The module and
/// build caches live in the tools directory, so a rebuild after a version bump is incremental.
fn control_plane(root: &Path) -> anyhow::Result<PathBuf> {
    let tools = tools_dir();
    let dir = tools.join(format!("k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}"));
    if CONTROL_PLANE.iter().all(|(b, _)| dir.join(b).exists()) {
        return Ok(dir);
    }
    let go = output(Command::new("go").arg("version")).context(
        "Go (1.26 or newer) is needed to build the control plane the cluster tests run; install \
         it and rerun `cargo xtask setup`",
    )?;
    eprintln!(
        "xtask: building Kubernetes {KUBERNETES_VERSION} and etcd {ETCD_VERSION} with {go} \
         (about 15 minutes on 2 cores when cold)"
    );
    let partial = tools.join(format!(
        "k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}.partial"
    ));
    std::fs::create_dir_all(&partial)?;
    let module = root.join("tests/controlplane");
    // Version stamps, as the upstream release build sets them: kubectl and the API server
    // compare versions, and a server that says v0.0.0 would make kubectl warn about skew.
    let minor = KUBERNETES_VERSION.split('.').nth(1).unwrap_or_default();
    let ldflags = [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ]
    .iter()
    .map(|p| {
        format!(
            "-X {p}.gitVersion={KUBERNETES_VERSION} -X {p}.gitMajor=1 -X {p}.gitMinor={minor} \
                 -X {p}.gitTreeState=clean"
        )
    })
    .collect::<Vec<_>>()
    .join(" ");
    for (bin, pkg) in CONTROL_PLANE {
        if partial.join(bin).exists() {
            continue;
        }
        crate::run_long(
            &module,
            go_command(&tools)
                .args([
                    "build",
                    "-trimpath",
                    "-ldflags",
                    &format!("-s -w {ldflags}"),
                    "-o",
                ])
                .arg(partial.join(bin))
                .arg(pkg)
                .env("GOFLAGS", "-modcacherw -mod=readonly"),
            &format!("building {bin}"),
            &partial.join(format!("{bin}.log")),
        )?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("moving {} into place", partial.display()))?;
    Ok(dir)
}

/// helm, for the chart's lint and renders.
const HELM_VERSION: &str = "v3.22.0";
/// krew, whose manifest validator checks deploy/krew/trustmap.yaml.
const KREW_VERSION: &str = "v0.4.3";

/// Builds helm and validate-krew-manifest with `go install` at their pinned versions, once per
/// pair of versions, sharing the module and build caches of the control plane's build.
fn go_tools() -> anyhow::Result<PathBuf> {
    go_install(
        &format!("go-tools-helm-{HELM_VERSION}-krew-{KREW_VERSION}"),
        &[
            (
                "helm",
                format!("helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"),
                format!("-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"),
            ),
            (
                "validate-krew-manifest",
                format!("sigs.k8s.io/krew/cmd/validate-krew-manifest@{KREW_VERSION}"),
                "-s -w".to_owned(),
            ),
        ],
        "about 5 minutes on 2 cores when cold",
    )
}

/// actionlint, for the release workflow.
const ACTIONLINT_VERSION: &str = "v1.7.12";

/// Builds actionlint at its pinned version into a folder of its own (so that adding it did not
/// rebuild helm's).
fn actionlint() -> anyhow::Result<PathBuf> {
    let dir = go_install(
        &format!("actionlint-{ACTIONLINT_VERSION}"),
        &[(
            "actionlint",
            format!("github.com/rhysd/actionlint/cmd/actionlint@{ACTIONLINT_VERSION}"),
            "-s -w".to_owned(),
        )],
        "seconds when cold",
    )?;
    Ok(dir.join("actionlint"))
}

/// `go install`s `builds` (binary, package@version, ldflags) into `TOOLS/NAME`, once: they go
/// to `NAME.partial` first, which is moved into place when all are built, so an interrupted
/// setup resumes where it stopped and never leaves a half-filled folder in place.
fn go_install(
    name: &str,
    builds: &[(&str, String, String)],
    cold: &str,
) -> anyhow::Result<PathBuf> {
    let tools = tools_dir();
    let dir = tools.join(name);
    if builds.iter().all(|(b, ..)| dir.join(b).exists()) {
        return Ok(dir);
    }
    let what = builds
        .iter()
        .map(|(_, pkg, _)| pkg.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!("xtask: building {what} with Go ({cold})");
    let partial = tools.join(format!("{name}.partial"));
    std::fs::create_dir_all(&partial)?;
    for (bin, pkg, ldflags) in builds {
        if partial.join(bin).exists() {
            continue;
        }
        crate::run_long(
            &tools,
            go_command(&tools)
                .args(["install", "-trimpath", "-ldflags", ldflags, pkg])
                .env("GOBIN", &partial),
            &format!("building {bin}"),
            &partial.join(format!("{bin}.log")),
        )?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("moving {} into place", partial.display()))?;
    Ok(dir)
}

/// `go` with the module and build caches in the tools directory, read-write modules, the
/// machine's own toolchain and module mode: what every Go step of setup shares.
fn go_command(tools: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.env("GOMODCACHE", tools.join("go/mod"))
        .env("GOCACHE", tools.join("go/cache"))
        .env("GOFLAGS", "-modcacherw")
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "on");
    cmd
}

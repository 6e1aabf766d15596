//! Validation of the Kubernetes manifests in deploy/, offline: render the kustomize base, then
//! check every object against the Kubernetes OpenAPI schemas of [`K8S_VERSION`] with the PyPI
//! package `kubernetes-validate` (strict: unknown fields are errors).
//!
//! Rendering: deploy/ is a single base of plain `resources` (no patches, generators or
//! transformers, which [`render`] refuses), so concatenating the listed files in order is a
//! faithful render, and no kustomize binary is needed. When `kubectl` is on PATH, its
//! `kubectl kustomize` output is compared with that render (as sets of objects), which keeps
//! the claim honest. The validator lives in a virtualenv under the tools directory
//! (TRUSTMAP_TOOLS_DIR, default ~/.cache/trustmap-tools), installed once.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The Kubernetes version whose schemas the manifests must satisfy.
pub const K8S_VERSION: &str = "1.34.0";
/// The validator, pinned so that a new release cannot change what passes.
const VALIDATOR: &str = "kubernetes-validate==1.37.0";
/// Top-level kustomization keys under which concatenation is a faithful render.
const PLAIN_KEYS: &[&str] = &["apiVersion", "kind", "resources"];

/// Renders deploy/ and validates every object; fails with the validator's message.
pub fn validate(root: &Path) -> anyhow::Result<()> {
    let deploy = root.join("deploy");
    let rendered = render(&deploy)?;
    let out_dir = root.join("target").join("deploy");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let rendered_path = out_dir.join("rendered.yaml");
    fs::write(&rendered_path, &rendered)
        .with_context(|| format!("writing {}", rendered_path.display()))?;
    let python = validator()?;

    if let Some(kubectl) = which("kubectl") {
        let output = Command::new(kubectl)
            .arg("kustomize")
            .arg(&deploy)
            .output()
            .context("running kubectl kustomize")?;
        if !output.status.success() {
            bail!(
                "kubectl kustomize deploy/ failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let kubectl_path = out_dir.join("kubectl-kustomize.yaml");
        fs::write(&kubectl_path, &output.stdout)?;
        check(
            Command::new(&python)
                .args(["-c", SAME_OBJECTS])
                .arg(&rendered_path)
                .arg(&kubectl_path),
            "the concatenated render differs from kubectl kustomize",
        )?;
    } else {
        eprintln!("xtask: kubectl not found: validating the concatenated render only");
    }

    let bin = python.parent().expect("venv bin directory");
    check(
        Command::new(bin.join("kubernetes-validate"))
            .args(["--kubernetes-version", K8S_VERSION, "--strict", "--quiet"])
            .arg(&rendered_path),
        &format!("deploy/ does not validate against Kubernetes {K8S_VERSION}"),
    )?;
    eprintln!("xtask: deploy/ validates against Kubernetes {K8S_VERSION}");
    Ok(())
}

/// Concatenates the files listed under `resources:` in deploy/kustomization.yaml, in order.
fn render(deploy: &Path) -> anyhow::Result<String> {
    let path = deploy.join("kustomization.yaml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut resources = Vec::new();
    let mut in_resources = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with([' ', '-']) {
            let key = trimmed.split(':').next().unwrap_or_default();
            if !PLAIN_KEYS.contains(&key) {
                bail!(
                    "{}: key `{key}` makes a plain concatenation of the resources unfaithful; \
                     teach xtask/src/deploy.rs to render it (or use kustomize)",
                    path.display()
                );
            }
            in_resources = key == "resources";
        } else if in_resources && let Some(item) = trimmed.strip_prefix("- ") {
            resources.push(item.trim().trim_matches(['"', '\'']).to_owned());
        }
    }
    if resources.is_empty() {
        bail!("{}: no resources listed", path.display());
    }
    let mut out = String::new();
    for r in resources {
        let file = deploy.join(&r);
        if file.is_dir() {
            bail!(
                "{}: resource {r} is a directory: only files are supported",
                path.display()
            );
        }
        let body = fs::read_to_string(&file).with_context(|| {
            format!("reading {} (listed in {})", file.display(), path.display())
        })?;
        out.push_str("---\n");
        out.push_str(body.trim_start_matches("---\n"));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Compares two YAML streams as sets of objects (kustomize orders objects by kind).
const SAME_OBJECTS: &str = r#"
import sys, yaml
def objects(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    key = lambda o: (o.get("apiVersion", ""), o.get("kind", ""),
                     o.get("metadata", {}).get("namespace", ""), o.get("metadata", {}).get("name", ""))
    return sorted(docs, key=key)
a, b = objects(sys.argv[1]), objects(sys.argv[2])
if a != b:
    names = lambda docs: [(d.get("kind"), d.get("metadata", {}).get("name")) for d in docs]
    print("concatenated:", names(a))
    print("kubectl:     ", names(b))
    for x, y in zip(a, b):
        if x != y:
            print("first difference:", x.get("kind"), x.get("metadata", {}).get("name"))
            break
    sys.exit(1)
"#;

/// The virtualenv's python, with kubernetes-validate installed (once).
fn validator() -> anyhow::Result<PathBuf> {
    let venv = tools_dir().join("kubernetes-validate-venv");
    let python = venv.join("bin").join("python3");
    let installed = venv.join(".installed");
    if fs::read_to_string(&installed).is_ok_and(|v| v == VALIDATOR) {
        return Ok(python);
    }
    eprintln!("xtask: installing {VALIDATOR} into {}", venv.display());
    let mut create = Command::new("python3");
    create.args(["-m", "venv", "--clear"]).arg(&venv);
    if !create.status().is_ok_and(|s| s.success()) {
        // Debian's python3 ships venv in a package of its own.
        crate::run(
            Path::new("/"),
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "python3-venv",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("installing python3-venv for the manifest validator")?;
        crate::run(Path::new("/"), &mut create)?;
    }
    crate::run(
        Path::new("/"),
        Command::new(&python).args(["-m", "pip", "install", "--quiet", VALIDATOR]),
    )?;
    fs::write(&installed, VALIDATOR)?;
    Ok(python)
}

/// Runs a check; on failure, the error carries what it printed.
fn check(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{what}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn which(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// TRUSTMAP_TOOLS_DIR or ~/.cache/trustmap-tools, as in setup.rs.
fn tools_dir() -> PathBuf {
    env::var_os("TRUSTMAP_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/trustmap-tools")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/trustmap-tools"))
}

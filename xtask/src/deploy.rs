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

/// Renders deploy/ and validates every object; then the Helm chart and the krew manifest.
/// Fails with the failing tool's message.
pub fn validate(root: &Path, go_tools: &Path, actionlint: &Path) -> anyhow::Result<()> {
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
    helm_chart(root, go_tools, &python, &rendered_path)?;
    krew_manifest(root, go_tools)?;
    workflows(root, actionlint)
}

/// The Helm chart in deploy/helm/trustmap: `helm lint --strict`; rendered with its defaults,
/// the same objects as the kustomize base (Helm's own labels aside); rendered with other
/// values, the values land where they should and the objects still validate; and a bad mode
/// is refused with a message naming the value.
fn helm_chart(root: &Path, go_tools: &Path, python: &Path, kustomize: &Path) -> anyhow::Result<()> {
    let helm = go_tools.join("helm");
    let chart = root.join("deploy/helm/trustmap");
    let out_dir = root.join("target").join("deploy");
    check(
        Command::new(&helm).args(["lint", "--strict"]).arg(&chart),
        "helm lint --strict deploy/helm/trustmap",
    )?;
    // As docs/deploy.md gives it: no cluster and no --kube-version, as GitOps tools render
    // charts (the chart must not need either).
    let template = |name: &str, sets: &[&str]| -> anyhow::Result<PathBuf> {
        let mut cmd = Command::new(&helm);
        cmd.args(["template", "trustmap"]).arg(&chart).args([
            "--namespace",
            "trustmap-system",
            "--include-crds",
        ]);
        for s in sets {
            cmd.args(["--set", s]);
        }
        let output = cmd.output().context("running helm template")?;
        if !output.status.success() {
            bail!(
                "helm template ({name}) failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let path = out_dir.join(format!("helm-{name}.yaml"));
        fs::write(&path, &output.stdout)?;
        Ok(path)
    };
    let defaults = template("defaults", &[])?;
    check(
        Command::new(python)
            .args(["-c", SAME_AS_KUSTOMIZE])
            .arg(kustomize)
            .arg(&defaults),
        "the Helm chart's defaults render other objects than the kustomize base",
    )?;
    let custom = template("custom", CUSTOM_VALUES)?;
    check(
        Command::new(python)
            .args(["-c", CUSTOM_VALUES_LANDED])
            .arg(&custom),
        "the Helm chart's values do not land where they should",
    )?;
    let bin = python.parent().expect("venv bin directory");
    for rendered in [&defaults, &custom] {
        check(
            Command::new(bin.join("kubernetes-validate"))
                .args(["--kubernetes-version", K8S_VERSION, "--strict", "--quiet"])
                .arg(rendered),
            &format!(
                "{} does not validate against Kubernetes {K8S_VERSION}",
                rendered.display()
            ),
        )?;
    }
    let bad = Command::new(&helm)
        .args(["template", "trustmap"])
        .arg(&chart)
        .args(["--set", "mode.default=watch"])
        .output()
        .context("running helm template")?;
    let err = String::from_utf8_lossy(&bad.stderr);
    if bad.status.success()
        || !err.contains("mode.default: \"watch\" is not one of observe, alert, off")
    {
        bail!("helm template with mode.default=watch should fail naming the value; it said: {err}");
    }
    eprintln!(
        "xtask: the Helm chart lints, renders the kustomize base's objects with its defaults, \
         and validates with other values"
    );
    Ok(())
}

/// Values unlike the defaults, for [`CUSTOM_VALUES_LANDED`].
const CUSTOM_VALUES: &[&str] = &[
    "mode.default=alert",
    "mode.namespaces.payments=observe",
    "webhook.url=https://alerts.example/hook",
    "image.repository=registry.example/trustmap",
    "image.tag=1.2.3",
    "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "image.pullPolicy=Always",
    "resources.limits.memory=1Gi",
    "tolerations[0].key=dedicated",
    "tolerations[0].operator=Equal",
    "tolerations[0].value=edge",
    "tolerations[0].effect=NoSchedule",
    "nodeSelector.kubernetes\\.io/os=linux",
    "namespace.create=false",
    "port=9191",
    "seccompProfile.type=Localhost",
    "seccompProfile.localhostProfile=trustmap-agent.json",
];

/// Compares the kustomize base with the chart's default render as sets of objects, keyed by
/// (apiVersion, kind, namespace, name). Helm's own labels are dropped wherever labels are, and
/// the agent's config.yaml is compared as the YAML it is (the agent parses it), not as text.
const SAME_AS_KUSTOMIZE: &str = r#"
import sys, yaml
HELM = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}
def strip(o):
    if isinstance(o, dict):
        out = {}
        for k, v in o.items():
            if k == "labels" and isinstance(v, dict):
                v = {lk: lv for lk, lv in v.items() if lk not in HELM}
            out[k] = strip(v)
        return out
    if isinstance(o, list):
        return [strip(x) for x in o]
    return o
def objects(path):
    with open(path) as f:
        docs = [strip(d) for d in yaml.safe_load_all(f) if d]
    for d in docs:
        if d.get("kind") == "ConfigMap" and "config.yaml" in d.get("data", {}):
            d["data"]["config.yaml"] = yaml.safe_load(d["data"]["config.yaml"])
    key = lambda o: (o.get("apiVersion", ""), o.get("kind", ""),
                     o.get("metadata", {}).get("namespace", ""), o.get("metadata", {}).get("name", ""))
    return {key(d): d for d in docs}
a, b = objects(sys.argv[1]), objects(sys.argv[2])
ok = True
for k in sorted(set(a) | set(b)):
    if k not in a:
        print("only in the chart:", k); ok = False
    elif k not in b:
        print("only in the kustomize base:", k); ok = False
    elif a[k] != b[k]:
        ok = False
        print("differs:", k)
        print("  kustomize:", yaml.safe_dump(a[k], sort_keys=True))
        print("  chart:    ", yaml.safe_dump(b[k], sort_keys=True))
sys.exit(0 if ok else 1)
"#;

/// Checks that every value of [`CUSTOM_VALUES`] landed in the render.
const CUSTOM_VALUES_LANDED: &str = r#"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {d["kind"]: d for d in docs}
fail = []
def want(what, got, expected):
    if got != expected:
        fail.append(f"{what}: {got!r}, expected {expected!r}")
want("no Namespace object", "Namespace" in kinds, False)
cfg = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])
want("defaultMode", cfg["defaultMode"], "alert")
want("namespaces", cfg["namespaces"], {"kube-system": "off", "trustmap-system": "off", "payments": "observe"})
want("webhook", cfg.get("webhook"), "https://alerts.example/hook")
pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
c = pod["containers"][0]
want("image", c["image"], "registry.example/trustmap:1.2.3@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
want("pullPolicy", c["imagePullPolicy"], "Always")
want("memory limit", c["resources"]["limits"]["memory"], "1Gi")
want("cpu request", c["resources"]["requests"]["cpu"], "50m")
want("tolerations", pod["tolerations"], [{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}])
want("nodeSelector", pod["nodeSelector"], {"kubernetes.io/os": "linux"})
want("listen", c["args"][c["args"].index("--listen") + 1], "0.0.0.0:9191")
want("containerPort", c["ports"][0]["containerPort"], 9191)
want("seccompProfile", c["securityContext"]["seccompProfile"], {"type": "Localhost", "localhostProfile": "trustmap-agent.json"})
want("capabilities", c["securityContext"]["capabilities"], {"drop": ["ALL"], "add": ["BPF", "NET_ADMIN", "PERFMON"]})
if fail:
    print("\n".join(fail)); sys.exit(1)
"#;

/// The krew plugin manifest, checked by krew's own validator.
fn krew_manifest(root: &Path, go_tools: &Path) -> anyhow::Result<()> {
    check(
        Command::new(go_tools.join("validate-krew-manifest"))
            .arg("-manifest")
            .arg(root.join("deploy/krew/trustmap.yaml"))
            .arg("-skip-install"),
        "deploy/krew/trustmap.yaml is not a valid krew manifest",
    )?;
    eprintln!("xtask: deploy/krew/trustmap.yaml is a valid krew manifest");
    Ok(())
}

/// The release workflow, which cannot run here (no forge, no registry), checked by actionlint:
/// its syntax, expressions, action inputs and the shell of its `run` steps.
fn workflows(root: &Path, actionlint: &Path) -> anyhow::Result<()> {
    check(
        Command::new(actionlint)
            .current_dir(root)
            .args(["-no-color", ".github/workflows/release.yml"]),
        ".github/workflows/release.yml does not pass actionlint",
    )?;
    eprintln!("xtask: .github/workflows/release.yml passes actionlint");
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

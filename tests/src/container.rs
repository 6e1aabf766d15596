//! The agent's image, run by podman with runc exactly as the DaemonSet asks a runtime to run it:
//! the securityContext (capabilities, no new privileges, read-only root, seccomp) and the
//! hostPath mounts are read from deploy/daemonset.yaml, so the test follows the manifest.
//!
//! The image is the OCI archive `cargo xtask image` writes, named by `TRUSTMAP_IMAGE`; it is
//! loaded once per test process. Containers are removed in `Drop`, also after a panic.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

/// podman with what this machine needs: runc (crun refuses hybrid cgroups), the cgroupfs
/// manager (no systemd), and events in a file.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args([
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
    ]);
    cmd
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman().args(args).output().expect("running podman");
    assert!(
        out.status.success(),
        "podman {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image's ID in podman's store, loaded from `TRUSTMAP_IMAGE` on first use.
pub fn image() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let archive = std::env::var_os("TRUSTMAP_IMAGE")
            .map(PathBuf::from)
            .expect(
                "TRUSTMAP_IMAGE is not set: run with `cargo xtask test`, which builds the image",
            );
        let out = podman_ok(&["load", "-q", "-i", &archive.display().to_string()]);
        // "Loaded image: localhost/trustmap:0.1.0" or "Loaded image(s): sha256:…".
        let name = out
            .lines()
            .find_map(|l| l.split_once(": ").map(|(_, n)| n.trim().to_owned()))
            .unwrap_or_else(|| panic!("podman load said {out:?}"));
        podman_ok(&["image", "inspect", "--format", "{{.Id}}", &name])
            .trim()
            .to_owned()
    })
}

/// The agent container's securityContext and mounts, as deploy/daemonset.yaml gives them.
#[derive(Debug, Clone)]
pub struct SecurityContext {
    /// `capabilities.add`, as Kubernetes names them (`BPF`, `NET_ADMIN`, …).
    pub add: Vec<String>,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    /// (host path, container path, read-only).
    pub mounts: Vec<(String, String, bool)>,
}

impl SecurityContext {
    /// Reads the agent container of deploy/daemonset.yaml.
    pub fn of_daemonset() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml");
        let ds: serde_yaml::Value =
            serde_yaml::from_str(&fs::read_to_string(&path).expect("deploy/daemonset.yaml"))
                .expect("deploy/daemonset.yaml is YAML");
        let pod = &ds["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(
            sc["capabilities"]["drop"][0].as_str(),
            Some("ALL"),
            "the DaemonSet must drop all capabilities first"
        );
        assert_eq!(sc["privileged"].as_bool(), Some(false));
        assert_eq!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault")
        );
        let add = sc["capabilities"]["add"]
            .as_sequence()
            .expect("capabilities.add")
            .iter()
            .map(|v| v.as_str().expect("a capability name").to_owned())
            .collect();
        let volumes = pod["volumes"].as_sequence().expect("volumes");
        let mounts = c["volumeMounts"]
            .as_sequence()
            .expect("volumeMounts")
            .iter()
            .filter_map(|m| {
                let name = m["name"].as_str()?;
                let vol = volumes.iter().find(|v| v["name"].as_str() == Some(name))?;
                let host = vol["hostPath"]["path"].as_str()?;
                Some((
                    host.to_owned(),
                    m["mountPath"].as_str()?.to_owned(),
                    m["readOnly"].as_bool().unwrap_or(false),
                ))
            })
            .collect();
        Self {
            add,
            read_only_root: sc["readOnlyRootFilesystem"].as_bool() == Some(true),
            no_new_privileges: sc["allowPrivilegeEscalation"].as_bool() == Some(false),
            mounts,
        }
    }

    /// The same, without one capability.
    pub fn without(&self, cap: &str) -> Self {
        let mut s = self.clone();
        s.add.retain(|c| c != cap);
        s
    }
}

/// Which seccomp profile the container runs under.
#[derive(Debug, Clone)]
pub enum Seccomp {
    /// podman's default (/usr/share/containers/seccomp.json), its RuntimeDefault.
    RuntimeDefault,
    /// A profile file, as a `Localhost` seccompProfile gives one.
    Localhost(PathBuf),
}

/// A `trustmap` container. Dropping it removes the container and its files.
pub struct Container {
    name: String,
    dir: PathBuf,
    /// The records file, when the command writes one to `/out/flows.jsonl`.
    pub output: PathBuf,
}

impl Container {
    /// Starts `trustmap <args>` in the image with `sc` and `seccomp`, in the host's network
    /// namespace (as `hostNetwork: true`), with the test's directory at `/out` and the state
    /// directory under it. Does not wait for anything.
    pub fn start(name: &str, sc: &SecurityContext, seccomp: &Seccomp, args: &[&str]) -> Self {
        let name = format!("trustmap-e2e-{name}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let state = dir.join("state");
        fs::create_dir_all(&state).expect("container dir");
        let _ = podman().args(["rm", "-f", "-t", "0", &name]).output();
        let mut cmd = podman();
        cmd.args(["run", "-d", "--name", &name, "--pull", "never"])
            .args(["--network", "host", "--user", "0:0"])
            // Below this machine's hard limits: root here lacks CAP_SYS_RESOURCE, so a runtime
            // that asks for more fails (podman's default nproc is above it).
            .args([
                "--ulimit",
                "nofile=10000:20000",
                "--ulimit",
                "nproc=4096:4096",
            ])
            .args(["--cap-drop", "ALL"]);
        for cap in &sc.add {
            cmd.args(["--cap-add", cap]);
        }
        if sc.no_new_privileges {
            cmd.args(["--security-opt", "no-new-privileges"]);
        }
        if sc.read_only_root {
            cmd.arg("--read-only");
        }
        if let Seccomp::Localhost(profile) = seccomp {
            cmd.arg("--security-opt")
                .arg(format!("seccomp={}", profile.display()));
        }
        for (host, path, ro) in &sc.mounts {
            // The state directory is the test's own; the rest are the host's, as hostPath.
            let host = if path == "/var/lib/trustmap" {
                state.display().to_string()
            } else {
                host.clone()
            };
            let mode = if *ro { "ro" } else { "rw" };
            cmd.arg("-v").arg(format!("{host}:{path}:{mode}"));
        }
        // The emptyDir at /tmp, and the test's directory for the records.
        cmd.args(["--tmpfs", "/tmp:size=16m"])
            .arg("-v")
            .arg(format!("{}:/out:rw", dir.display()));
        cmd.arg(image()).args(args).env("RUST_LOG", "info");
        let out = cmd.output().expect("running podman run");
        assert!(
            out.status.success(),
            "podman run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            name,
            output: dir.join("flows.jsonl"),
            dir,
        }
    }

    /// What the agent logged (the container's stderr and stdout).
    pub fn logs(&self) -> String {
        let out = podman()
            .args(["logs", &self.name])
            .output()
            .expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The exit code, once the container has exited.
    pub fn exit_code(&self) -> Option<i64> {
        let out = podman()
            .args([
                "inspect",
                "--format",
                "{{.State.Running}} {{.State.ExitCode}}",
                &self.name,
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (running, code) = text.trim().split_once(' ')?;
        (running == "false").then(|| code.parse().ok())?
    }

    /// Waits until the log contains `needle`; panics with the log if the container exits first
    /// or the time runs out.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return;
            }
            if let Some(code) = self.exit_code() {
                panic!("the container exited ({code}) before logging {needle:?}:\n{logs}");
            }
            assert!(
                Instant::now() < deadline,
                "the container did not log {needle:?} within {timeout:?}:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the container to exit on its own: its exit code and log.
    pub fn wait_exit(&self, timeout: Duration) -> (i64, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.exit_code() {
                return (code, self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "the container did not exit within {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the container as the kubelet does (SIGTERM, then SIGKILL after 10 s), asserts a
    /// clean exit and returns the records written.
    pub fn stop(&self) -> Vec<serde_json::Value> {
        podman_ok(&["stop", "-t", "10", &self.name]);
        let (code, logs) = self.wait_exit(Duration::from_secs(15));
        assert_eq!(code, 0, "the agent did not exit cleanly:\n{logs}");
        fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

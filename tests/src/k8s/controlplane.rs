//! etcd, kube-apiserver and kube-controller-manager, built from upstream source by
//! `cargo xtask setup`, run on loopback with the flags a kubeadm cluster uses.
//!
//! Everything lives in one temporary directory; [`ControlPlane`]'s `Drop` stops the processes
//! (also after a panic) and removes it, unless the test failed, in which case the logs stay and
//! their path is printed.

use std::{
    fs,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::pki::{CertFiles, Pki};

/// The Kubernetes release the harness runs; `cargo xtask setup` builds it.
pub const KUBERNETES_VERSION: &str = "v1.36.3";

/// Where `cargo xtask setup` put the binaries: `TRUSTMAP_K8S_BIN_DIR` (xtask sets it).
pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("TRUSTMAP_K8S_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "TRUSTMAP_K8S_BIN_DIR is not set: run the control-plane tests with `cargo xtask test`, \
             which builds kube-apiserver, kube-controller-manager, etcd and kubectl first"
        )
    });
    for b in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: run `cargo xtask setup`",
            dir.join(b).display()
        );
    }
    dir
}

/// A port free on loopback right now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process with its log file; dropping it stops it (SIGTERM, then SIGKILL after 10 s).
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Self {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            name: name.into(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Panics with the log's tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!(
                "{} exited with {status}; its log ends with:\n{}",
                self.name,
                tail(&self.log, 40)
            );
        }
    }

    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Stops the process: SIGTERM, and SIGKILL if it is still there after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(child) = self.child.take() {
            terminate(child, grace);
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// SIGTERM, then SIGKILL if the process is still there after `grace`; reaps it.
pub fn terminate(mut child: Child, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A kubeconfig for a bearer token (a ServiceAccount's), against `server`.
pub fn write_token_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
         certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {}\ncontexts:\n- name: \
         u@c\n  context:\n    cluster: c\n    user: u\ncurrent-context: u@c\n",
        ca.display(),
        token.trim()
    );
    fs::write(path, text).expect("kubeconfig");
}

/// CPU time (user and system) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(f.iter().sum::<u64>() * 1000 / hz)
}

/// A kubeconfig for one client-certificate identity, with file references.
pub fn write_kubeconfig(path: &Path, server: &str, ca: &Path, id: &CertFiles, user: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: trustmap-test\n  cluster:\n    server: \
         {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    \
         client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: {user}@trustmap-test\n  \
         context:\n    cluster: trustmap-test\n    user: {user}\ncurrent-context: \
         {user}@trustmap-test\n",
        ca = ca.display(),
        cert = id.cert.display(),
        key = id.key.display(),
    );
    fs::write(path, text).expect("kubeconfig");
}

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: \
                            [RequestReceived]\nrules:\n- level: Metadata\n";

/// The ClusterIP range of Services; the first address is the `kubernetes` Service.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The pod networks the node IPAM controller hands out, a /24 and a /64 per node.
pub const CLUSTER_CIDRS: &str = "198.18.0.0/17,fd00:0:0:100::/56";

/// A running control plane.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub pki: Pki,
    pub server: String,
    pub port: u16,
    /// Admin (system:masters) kubeconfig, for the test and for kubectl.
    pub admin_kubeconfig: PathBuf,
    pub audit_log: PathBuf,
    pub etcd_url: String,
    bins: PathBuf,
    apiserver_args: Vec<String>,
    // Drop order: the controller manager, then the API server, then etcd.
    pub kcm: Option<Proc>,
    pub apiserver: Option<Proc>,
    pub etcd: Option<Proc>,
    keep: bool,
}

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager, and waits until the API server
    /// is ready and the controllers have published the root CA into `default`.
    pub fn start() -> Self {
        let bins = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "trustmap-cp-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("control-plane dir");
        let pki = Pki::new(&dir.join("pki"));
        let serving = pki.serving(Ipv4Addr::new(10, 96, 0, 1));
        let admin = pki.client("admin", "kubernetes-admin", Some("system:masters"));
        let kcm_id = pki.client("kcm", "system:kube-controller-manager", None);
        let (etcd_port, peer_port, port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let server = format!("https://127.0.0.1:{port}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&admin_kubeconfig, &server, &pki.ca_cert, &admin, "admin");
        let kcm_kubeconfig = dir.join("kcm.kubeconfig");
        write_kubeconfig(&kcm_kubeconfig, &server, &pki.ca_cert, &kcm_id, "kcm");
        fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY).expect("audit policy");
        let audit_log = dir.join("audit.log");

        let peer = format!("http://127.0.0.1:{peer_port}");
        let etcd = Proc::spawn(
            "etcd",
            Command::new(bins.join("etcd")).args([
                "--name=cp",
                &format!("--data-dir={}", dir.join("etcd").display()),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer}"),
                &format!("--initial-advertise-peer-urls={peer}"),
                &format!("--initial-cluster=cp={peer}"),
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ]),
            &dir.join("etcd.log"),
        );
        let p = |f: &Path| f.display().to_string();
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", p(&serving.cert)),
            format!("--tls-private-key-file={}", p(&serving.key)),
            format!("--client-ca-file={}", p(&pki.ca_cert)),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p(&pki.sa_pub)),
            format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--allow-privileged=true".into(),
            format!(
                "--audit-policy-file={}",
                dir.join("audit-policy.yaml").display()
            ),
            format!("--audit-log-path={}", p(&audit_log)),
            "--audit-log-maxsize=0".into(),
            "--v=1".into(),
        ];
        let mut cp = Self {
            dir: dir.clone(),
            server,
            port,
            admin_kubeconfig,
            audit_log,
            etcd_url,
            bins: bins.clone(),
            apiserver_args,
            kcm: None,
            apiserver: None,
            etcd: Some(etcd),
            keep: false,
            pki,
        };
        cp.wait_etcd(Duration::from_secs(60));
        cp.start_apiserver();
        cp.kcm = Some(Proc::spawn(
            "kube-controller-manager",
            Command::new(bins.join("kube-controller-manager")).args([
                format!("--kubeconfig={}", p(&kcm_kubeconfig)),
                format!("--authentication-kubeconfig={}", p(&kcm_kubeconfig)),
                format!("--authorization-kubeconfig={}", p(&kcm_kubeconfig)),
                format!("--service-account-private-key-file={}", p(&cp.pki.sa_key)),
                format!("--root-ca-file={}", p(&cp.pki.ca_cert)),
                "--use-service-account-credentials=true".into(),
                "--controllers=*".into(),
                "--leader-elect=false".into(),
                "--allocate-node-cidrs=true".into(),
                format!("--cluster-cidr={CLUSTER_CIDRS}"),
                "--node-cidr-mask-size-ipv4=24".into(),
                "--node-cidr-mask-size-ipv6=64".into(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()),
                "--v=1".into(),
            ]),
            &dir.join("kube-controller-manager.log"),
        ));
        // The root CA publisher writes kube-root-ca.crt into every namespace once the
        // controllers run: the sign that service-account tokens can be mounted.
        cp.wait_for(
            "the controllers (kube-root-ca.crt in default)",
            Duration::from_secs(120),
            |cp| cp.kubectl_ok(&["get", "configmap", "kube-root-ca.crt", "-n", "default"]),
        );
        cp
    }

    fn wait_etcd(&mut self, timeout: Duration) {
        let url = format!("{}/health", self.etcd_url);
        self.wait_for("etcd /health", timeout, |_| {
            Command::new("curl")
                .args(["-sf", "--max-time", "2", &url])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.windows(4).any(|w| w == b"true"))
        });
    }

    /// Starts (or restarts) the API server with the same flags and port, and waits for `/readyz`.
    pub fn start_apiserver(&mut self) {
        self.apiserver = Some(Proc::spawn(
            "kube-apiserver",
            Command::new(self.bins.join("kube-apiserver")).args(&self.apiserver_args),
            &self.dir.join("kube-apiserver.log"),
        ));
        self.wait_for("kube-apiserver /readyz", Duration::from_secs(120), |cp| {
            cp.kubectl_ok(&["get", "--raw", "/readyz"])
        });
    }

    pub fn stop_apiserver(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.stop(Duration::from_secs(15));
        }
    }

    /// Polls `ready` until it holds; panics after `timeout`, or as soon as a component exits,
    /// with that component's log.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Self) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            for p in [&mut self.etcd, &mut self.apiserver, &mut self.kcm]
                .into_iter()
                .flatten()
            {
                p.assert_running();
            }
            if ready(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not ready after {timeout:?}; logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `kubectl` (the built one) as the admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bins.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.admin_kubeconfig);
        cmd
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> bool {
        self.kubectl()
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Runs kubectl as the admin; panics with its stderr if it fails. Returns stdout.
    pub fn kubectl_run(&self, args: &[&str]) -> String {
        let out = self.kubectl().args(args).output().expect("running kubectl");
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until a CRD is Established and its kind is served, by polling: `kubectl wait
    /// --for=condition=Established` fails at once (`.status.conditions accessor error: <nil>`)
    /// on a CRD the API server has not given conditions yet, and Established comes a moment
    /// before discovery lists the kind.
    pub fn wait_crd_established(&self, crd: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let jsonpath = "jsonpath={.status.conditions[?(@.type==\"Established\")].status}";
        loop {
            let established = self
                .kubectl()
                .args(["get", &format!("crd/{crd}"), "-o", jsonpath])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"True");
            if established && self.kubectl_ok(&["get", crd, "-A", "--request-timeout=5s"]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "crd/{crd} is not Established and served after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn kubectl_path(&self) -> PathBuf {
        self.bins.join("kubectl")
    }

    /// A kubeconfig for another client-certificate identity.
    pub fn kubeconfig_for(&self, file: &str, user: &str, group: Option<&str>) -> PathBuf {
        let id = self.pki.client(file, user, group);
        let path = self.dir.join(format!("{file}.kubeconfig"));
        write_kubeconfig(&path, &self.server, &self.pki.ca_cert, &id, file);
        path
    }

    /// The audit log's events that the API server answered with `code`, as JSON values.
    pub fn audit_events_with_code(&self, code: u16) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["responseStatus"]["code"].as_u64() == Some(u64::from(code)))
            .collect()
    }

    /// How many requests `user` made, from the audit log.
    pub fn audit_requests_by(&self, user: &str) -> usize {
        fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["user"]["username"] == user)
            .count()
    }

    /// Compacts etcd to its current revision, so that every watch older than now gets a 410.
    pub fn compact_etcd(&self) {
        let status = Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "5",
                "-X",
                "POST",
                "-d",
                // Any key: the answer's header carries the store's revision.
                r#"{"key":"Lw=="}"#,
                &format!("{}/v3/kv/range", self.etcd_url),
            ])
            .output()
            .expect("curl");
        let header: serde_json::Value =
            serde_json::from_slice(&status.stdout).expect("etcd range answer");
        let rev = header["header"]["revision"]
            .as_str()
            .expect("etcd revision")
            .to_owned();
        let out = Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "30",
                "-X",
                "POST",
                "-d",
                &format!("{{\"revision\":\"{rev}\",\"physical\":true}}"),
                &format!("{}/v3/kv/compaction", self.etcd_url),
            ])
            .output()
            .expect("curl");
        assert!(out.status.success(), "etcd compaction failed");
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kcm.take();
        self.apiserver.take();
        self.etcd.take();
        if std::thread::panicking() || self.keep {
            eprintln!("control-plane logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

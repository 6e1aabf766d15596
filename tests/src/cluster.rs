//! Building and tearing down the namespaces, bridges and veths.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
};

/// A pod to create.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    /// 1-based node number.
    pub node: u8,
    pub labels: BTreeMap<String, String>,
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct ClusterSpec {
    pub nodes: u8,
    pub pods: Vec<PodSpec>,
    /// External hosts, by name, each given 203.0.113.(10 + index).
    pub externals: Vec<String>,
}

impl ClusterSpec {
    pub fn new(nodes: u8) -> Self {
        Self {
            nodes,
            ..Self::default()
        }
    }

    pub fn pod(mut self, node: u8, name: &str, labels: &[(&str, &str)]) -> Self {
        self.pods.push(PodSpec {
            name: name.into(),
            node,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        });
        self
    }

    pub fn external(mut self, name: &str) -> Self {
        self.externals.push(name.into());
        self
    }

    /// One node with two pods, `client` and `server`, labelled `app: <name>`.
    pub fn client_and_server() -> Self {
        Self::new(1)
            .pod(1, "client", &[("app", "client")])
            .pod(1, "server", &[("app", "server")])
    }
}

/// A pod that exists.
#[derive(Debug, Clone)]
pub struct Pod {
    pub spec: PodSpec,
    pub netns: String,
    /// Host-side veth, the interface trustmap attaches to.
    pub host_if: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

/// The running cluster. Dropping it removes everything it created.
pub struct Cluster {
    /// Prefix of every name the cluster creates: `t` and three random characters.
    pub prefix: String,
    pub nodes: u8,
    pods: Vec<Pod>,
    externals: Vec<(String, String, Ipv4Addr)>,
    netns: Vec<String>,
    links: Vec<String>,
    /// One process living in each pod's namespace, as a pod's pause container does: what the
    /// agent finds a pod's sockets through (`/proc/PID/net/tcp`).
    pause: Vec<std::process::Child>,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) {
    let mut v = vec!["ip"];
    v.extend_from_slice(args);
    if let Err(e) = run(&v) {
        panic!("{e}");
    }
}

/// `first` and three random characters: names that do not collide with another run's.
pub(crate) fn random_prefix_with(first: char) -> String {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()) << 20;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::from(first);
    for _ in 0..3 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push(alphabet[(seed >> 33) as usize % alphabet.len()] as char);
    }
    s
}

impl Cluster {
    /// Builds the cluster. Panics with the failing command if anything cannot be created; what
    /// was created until then is removed.
    pub fn start(spec: &ClusterSpec) -> Self {
        let mut c = Self {
            prefix: random_prefix_with('t'),
            nodes: spec.nodes,
            pods: Vec::new(),
            externals: Vec::new(),
            netns: Vec::new(),
            links: Vec::new(),
            pause: Vec::new(),
        };
        c.build_router(spec);
        for pod in &spec.pods {
            c.add_pod(pod.clone());
        }
        c
    }

    fn router(&self) -> String {
        format!("{}-router", self.prefix)
    }

    fn add_netns(&mut self, name: &str) {
        ip(&["netns", "add", name]);
        self.netns.push(name.into());
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    fn add_bridge(&mut self, name: &str) {
        ip(&["link", "add", name, "type", "bridge"]);
        self.links.push(name.into());
        ip(&["link", "set", name, "up"]);
    }

    fn build_router(&mut self, spec: &ClusterSpec) {
        let router = self.router();
        self.add_netns(&router);
        for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            if let Err(e) = run(&["ip", "netns", "exec", &router, "sysctl", "-qw", sysctl]) {
                panic!("{e}");
            }
        }
        for node in 1..=spec.nodes {
            let bridge = format!("{}n{node}", self.prefix);
            self.add_bridge(&bridge);
            let host = format!("{}r{node}", self.prefix);
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &router,
            ]);
            self.links.push(host.clone());
            let inner = format!("n{node}");
            ip(&["-n", &router, "link", "set", "eth0", "name", &inner]);
            ip(&["link", "set", &host, "master", &bridge, "up"]);
            ip(&["-n", &router, "link", "set", &inner, "up"]);
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("198.18.{node}.1/24"),
                "dev",
                &inner,
            ]);
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("fd00:0:0:{node:x}::1/64"),
                "dev",
                &inner,
                "nodad",
            ]);
        }
        let bridge = format!("{}x", self.prefix);
        self.add_bridge(&bridge);
        let host = format!("{}rx", self.prefix);
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "ext", "netns", &router,
        ]);
        self.links.push(host.clone());
        ip(&["link", "set", &host, "master", &bridge, "up"]);
        ip(&["-n", &router, "link", "set", "ext", "up"]);
        ip(&["-n", &router, "addr", "add", "203.0.113.1/24", "dev", "ext"]);
        // A destination that swallows packets: for connections whose server never answers.
        ip(&[
            "-n",
            &router,
            "route",
            "add",
            "blackhole",
            "203.0.113.99/32",
        ]);
        for (k, name) in spec.externals.iter().enumerate() {
            let ns = format!("{}-ext-{name}", self.prefix);
            self.add_netns(&ns);
            let host = format!("{}e{k}", self.prefix);
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            self.links.push(host.clone());
            ip(&["link", "set", &host, "master", &bridge, "up"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            let addr = Ipv4Addr::new(203, 0, 113, 10 + k as u8);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "route", "add", "default", "via", "203.0.113.1"]);
            self.externals.push((name.clone(), ns, addr));
        }
    }

    /// Adds a pod; usable while an agent runs, to test discovery of new interfaces.
    pub fn add_pod(&mut self, spec: PodSpec) -> Pod {
        assert!(
            spec.node >= 1 && spec.node <= self.nodes,
            "pod {} on unknown node {}",
            spec.name,
            spec.node
        );
        let index = self.pods.len();
        let on_node = self
            .pods
            .iter()
            .filter(|p| p.spec.node == spec.node)
            .count();
        let host_octet = 10 + on_node as u8;
        let netns = format!("{}-{}", self.prefix, spec.name);
        self.add_netns(&netns);
        // The pod's "pause" process: bounded (an hour at most, should the test process die
        // without running Drop), killed in Drop before the namespace goes.
        let pause = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["--", "sleep", "3600"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the pause process of {netns}: {e}"));
        self.pause.push(pause);
        let host_if = format!("{}p{index}", self.prefix);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        self.links.push(host_if.clone());
        let bridge = format!("{}n{}", self.prefix, spec.node);
        ip(&["link", "set", &host_if, "master", &bridge, "up"]);
        let ipv4 = Ipv4Addr::new(198, 18, spec.node, host_octet);
        let ipv6: Ipv6Addr = format!("fd00:0:0:{:x}::{:x}", spec.node, host_octet)
            .parse()
            .expect("valid IPv6");
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ipv4}/24"),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ipv6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&[
            "-n",
            &netns,
            "route",
            "add",
            "default",
            "via",
            &format!("198.18.{}.1", spec.node),
        ]);
        ip(&[
            "-n",
            &netns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd00:0:0:{:x}::1", spec.node),
        ]);
        let pod = Pod {
            spec,
            netns,
            host_if,
            ipv4,
            ipv6,
        };
        self.pods.push(pod.clone());
        pod
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.spec.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Network namespace and address of an external host.
    pub fn external(&self, name: &str) -> (&str, IpAddr) {
        self.externals
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, ns, a)| (ns.as_str(), IpAddr::V4(*a)))
            .unwrap_or_else(|| panic!("no external host {name}"))
    }

    /// MAC address of the router's interface on `node`: a unicast destination that only the
    /// router's port of the bridge receives.
    pub fn router_mac(&self, node: u8) -> [u8; 6] {
        let path = format!("/sys/class/net/n{node}/address");
        let text = crate::in_netns(&self.router(), move || std::fs::read_to_string(path));
        // /sys shows the namespace of the process that mounted it, so read it through `ip`.
        let text = text.ok().filter(|t| t.len() >= 17).unwrap_or_else(|| {
            let out = Command::new("ip")
                .args([
                    "-n",
                    &self.router(),
                    "-br",
                    "link",
                    "show",
                    &format!("n{node}"),
                ])
                .output()
                .expect("ip link show");
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_owned()
        });
        let bytes: Vec<u8> = text
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("MAC byte"))
            .collect();
        bytes.try_into().expect("6-byte MAC")
    }

    /// Glob of the host-side pod veths, for `trustmap observe --interface`.
    pub fn pod_interface_pattern(&self) -> String {
        format!("{}p*", self.prefix)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it and so their peers; bridges and
        // any veth left in the root namespace go explicitly. Errors are ignored: a link may
        // already be gone with its peer. The pause processes go first: a namespace lives as
        // long as a process is in it.
        for mut p in self.pause.drain(..) {
            let _ = p.kill();
            let _ = p.wait();
        }
        for ns in self.netns.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        for link in self.links.iter().rev() {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

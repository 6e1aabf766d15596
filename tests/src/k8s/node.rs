//! The machines of the test cluster: each node is a network namespace of its own (its host
//! network), with a bridge for its pods and an uplink to a router namespace that joins the nodes
//! and a namespace of simulated external hosts. Pods are network namespaces with a veth whose
//! host side sits in the node's namespace, where the node's agent attaches to it.
//!
//! ```text
//!  pod netns ─eth0══vethX─┐ node netns              router netns            externals netns
//!  pod netns ─eth0══vethY─┴ br0 ─ up0 ══════ nI ─ fab bridge ── ext ══════ eth0 203.0.113.x
//!                                198.18.250.I     198.18.250.254   203.0.113.1
//! ```
//!
//! Addresses exist only inside these namespaces; nothing is added to the root namespace.
//! [`Fabric`]'s `Drop` removes every namespace it created, also after a panic.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
    sync::Mutex,
};

use ipnet::{Ipv4Net, Ipv6Net};

pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = run(args) {
        panic!("{e}");
    }
}

/// `ip -n NS ...`
fn ipn(ns: &str, args: &[&str]) {
    let mut v = vec!["ip", "-n", ns];
    v.extend_from_slice(args);
    must(&v);
}

/// Runs a command inside a namespace (for sysctl and nft).
pub fn netns_exec(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    run(&v)
}

fn forwarding(ns: &str) {
    netns_exec(
        ns,
        &[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The simulated external hosts: 203.0.113.10 and up.
pub fn external_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 10 + index)
}

/// The address of node `i` (1-based) on the fabric: its InternalIP.
pub fn node_ipv4(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 250, i)
}

pub fn node_ipv6(i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0xfa00, 0, 0, 0, u16::from(i))
}

/// One node's pod network, once the node IPAM controller has given it its CIDRs.
#[derive(Debug, Clone, Copy)]
pub struct PodNet {
    pub v4: Ipv4Net,
    pub v6: Option<Ipv6Net>,
}

impl PodNet {
    pub fn gateway_v4(&self) -> Ipv4Addr {
        self.v4.hosts().next().expect("a /24 has hosts")
    }

    pub fn gateway_v6(&self) -> Option<Ipv6Addr> {
        self.v6.map(|n| {
            let base = u128::from(n.network());
            Ipv6Addr::from(base + 1)
        })
    }

    /// The `index`-th pod address (index ≥ 2; .1 is the gateway).
    pub fn pod_v4(&self, index: u8) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.v4.network()) + u32::from(index))
    }

    pub fn pod_v6(&self, index: u8) -> Option<Ipv6Addr> {
        self.v6
            .map(|n| Ipv6Addr::from(u128::from(n.network()) + u128::from(index)))
    }
}

/// The namespaces and links of the whole test network.
pub struct Fabric {
    pub prefix: String,
    namespaces: Mutex<Vec<String>>,
    pub externals: Vec<Ipv4Addr>,
}

impl Fabric {
    /// The router and `externals` external hosts.
    pub fn new(externals: u8) -> Self {
        let f = Self {
            prefix: crate::cluster::random_prefix_with('k'),
            namespaces: Mutex::new(Vec::new()),
            externals: (0..externals).map(external_ip).collect(),
        };
        let r = f.router();
        f.add_netns(&r);
        ipn(&r, &["link", "set", "lo", "up"]);
        ipn(&r, &["link", "add", "fab", "type", "bridge"]);
        ipn(&r, &["addr", "add", "198.18.250.254/24", "dev", "fab"]);
        ipn(
            &r,
            &["addr", "add", "fd00:0:0:fa00::fe/64", "dev", "fab", "nodad"],
        );
        ipn(&r, &["link", "set", "fab", "up"]);
        forwarding(&r);
        let x = f.externals_ns();
        f.add_netns(&x);
        ipn(&x, &["link", "set", "lo", "up"]);
        ipn(
            &r,
            &[
                "link", "add", "ext", "type", "veth", "peer", "name", "eth0", "netns", &x,
            ],
        );
        ipn(&r, &["addr", "add", "203.0.113.1/24", "dev", "ext"]);
        ipn(&r, &["link", "set", "ext", "up"]);
        for ip in &f.externals {
            ipn(&x, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        }
        ipn(&x, &["link", "set", "eth0", "up"]);
        ipn(&x, &["route", "add", "default", "via", "203.0.113.1"]);
        f
    }

    pub fn router(&self) -> String {
        format!("{}-r", self.prefix)
    }

    /// The namespace holding every simulated external host.
    pub fn externals_ns(&self) -> String {
        format!("{}-x", self.prefix)
    }

    pub fn node_ns(&self, i: u8) -> String {
        format!("{}-n{i}", self.prefix)
    }

    fn add_netns(&self, name: &str) {
        must(&["ip", "netns", "add", name]);
        self.namespaces.lock().expect("lock").push(name.into());
    }

    /// Node `i`'s namespace and uplink; its bridge gets addresses in [`Fabric::node_pod_net`].
    pub fn add_node(&self, i: u8) {
        let n = self.node_ns(i);
        let r = self.router();
        self.add_netns(&n);
        ipn(&n, &["link", "set", "lo", "up"]);
        ipn(
            &n,
            &[
                "link",
                "add",
                "up0",
                "type",
                "veth",
                "peer",
                "name",
                &format!("n{i}"),
                "netns",
                &r,
            ],
        );
        ipn(
            &r,
            &["link", "set", &format!("n{i}"), "master", "fab", "up"],
        );
        ipn(
            &n,
            &["addr", "add", &format!("{}/24", node_ipv4(i)), "dev", "up0"],
        );
        ipn(
            &n,
            &[
                "addr",
                "add",
                &format!("{}/64", node_ipv6(i)),
                "dev",
                "up0",
                "nodad",
            ],
        );
        ipn(&n, &["link", "set", "up0", "up"]);
        ipn(&n, &["route", "add", "default", "via", "198.18.250.254"]);
        ipn(
            &n,
            &["-6", "route", "add", "default", "via", "fd00:0:0:fa00::fe"],
        );
        ipn(&n, &["link", "add", "br0", "type", "bridge"]);
        ipn(&n, &["link", "set", "br0", "up"]);
        forwarding(&n);
    }

    /// Gives node `i`'s bridge its gateway addresses and tells the router the way to its pods.
    pub fn node_pod_net(&self, i: u8, net: &PodNet) {
        let n = self.node_ns(i);
        let r = self.router();
        ipn(
            &n,
            &[
                "addr",
                "add",
                &format!("{}/{}", net.gateway_v4(), net.v4.prefix_len()),
                "dev",
                "br0",
            ],
        );
        ipn(
            &r,
            &[
                "route",
                "replace",
                &net.v4.to_string(),
                "via",
                &node_ipv4(i).to_string(),
            ],
        );
        if let (Some(v6), Some(gw)) = (net.v6, net.gateway_v6()) {
            ipn(
                &n,
                &[
                    "addr",
                    "add",
                    &format!("{gw}/{}", v6.prefix_len()),
                    "dev",
                    "br0",
                    "nodad",
                ],
            );
            ipn(
                &r,
                &[
                    "-6",
                    "route",
                    "replace",
                    &v6.to_string(),
                    "via",
                    &node_ipv6(i).to_string(),
                ],
            );
        }
    }

    /// A pod's namespace and veth on node `i`. Returns the host-side interface name.
    pub fn add_pod(
        &self,
        i: u8,
        pod_ns: &str,
        host_if: &str,
        v4: Ipv4Addr,
        v6: Option<Ipv6Addr>,
        net: &PodNet,
    ) {
        let n = self.node_ns(i);
        self.add_netns(pod_ns);
        ipn(pod_ns, &["link", "set", "lo", "up"]);
        ipn(
            &n,
            &[
                "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", pod_ns,
            ],
        );
        ipn(&n, &["link", "set", host_if, "master", "br0", "up"]);
        ipn(
            pod_ns,
            &[
                "addr",
                "add",
                &format!("{v4}/{}", net.v4.prefix_len()),
                "dev",
                "eth0",
            ],
        );
        if let (Some(v6), Some(n6)) = (v6, net.v6) {
            ipn(
                pod_ns,
                &[
                    "addr",
                    "add",
                    &format!("{v6}/{}", n6.prefix_len()),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            );
        }
        ipn(pod_ns, &["link", "set", "eth0", "up"]);
        ipn(
            pod_ns,
            &[
                "route",
                "add",
                "default",
                "via",
                &net.gateway_v4().to_string(),
            ],
        );
        if let Some(gw) = net.gateway_v6() {
            ipn(
                pod_ns,
                &["-6", "route", "add", "default", "via", &gw.to_string()],
            );
        }
    }

    /// Removes a pod's namespace (its veth goes with it).
    pub fn remove_netns(&self, name: &str) {
        let _ = run(&["ip", "netns", "del", name]);
        self.namespaces.lock().expect("lock").retain(|n| n != name);
    }

    /// Loads an nftables ruleset into a node's namespace, replacing the table of the same name.
    pub fn nft(&self, i: u8, table: &str, ruleset: &str) -> Result<(), String> {
        let ns = self.node_ns(i);
        let _ = netns_exec(&ns, &["nft", "delete", "table", "ip", table]);
        let path = std::env::temp_dir().join(format!("{}-{table}-{i}.nft", self.prefix));
        std::fs::write(&path, ruleset).map_err(|e| e.to_string())?;
        let r = netns_exec(&ns, &["nft", "-f", &path.display().to_string()]).map(|_| ());
        let _ = std::fs::remove_file(&path);
        r
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.namespaces.lock().unwrap_or_else(|e| e.into_inner()));
        for name in names.iter().rev() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// An address family-agnostic helper for tests: the first IPv4 of a list of pod IPs.
pub fn first_v4(ips: &[IpAddr]) -> Option<Ipv4Addr> {
    ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    })
}

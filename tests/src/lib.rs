//! A mini-cluster of network namespaces for trustmap's privileged tests and its demo.
//!
//! Nodes are bridges in the root namespace; pods are network namespaces with a veth to their
//! node's bridge, the host side of which is what trustmap attaches to, exactly as on a real node.
//! A router namespace joins the nodes and an "internet" bridge of simulated external hosts.
//!
//! ```text
//!   pod netns ─eth0══veth {p}pN─┐                    ┌─ {p}x bridge ─ external host netns
//!                               ├─ {p}nI bridge ── router netns
//!   pod netns ─eth0══veth {p}pM─┘   (node I)
//! ```
//!
//! Addresses stay inside namespaces the cluster creates: pods in 198.18.I.0/24 and
//! fd00:0:0:I::/64, external hosts in 203.0.113.0/24, no address and no route in the root
//! namespace. Everything is removed in `Drop`, also after a panic.

mod agent;
mod cluster;
pub mod container;
mod dns;
pub mod k8s;
mod kernel;
pub mod manifests;
mod traffic;

pub use agent::{Agent, binary as agent_binary, run_trustmap};
pub use cluster::{Cluster, ClusterSpec, Pod, PodSpec};
pub use dns::{DnsAnswer, DnsServer, dns_query};
pub use kernel::{CniStandin, attached_programs};
pub use traffic::{
    TcpServer, UdpServer, craft_malformed_frames, icmp_echo, in_netns, sctp_init, tcp_connect,
    tcp_connect_unanswered, udp_request,
};

/// Fails loudly when the privileged tests cannot run where they must (CI), and says why.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "the end-to-end tests need root (network namespaces, eBPF); run them with \
             `cargo xtask test` as root"
        );
    }
}

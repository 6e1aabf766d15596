//! Reads the TCP socket tables of the pods the agent watches (IO): the namespaces holding the
//! peer of an attached host-side veth.
//!
//! Nothing here enters a namespace or opens a namespace file, so the scan needs neither
//! CAP_SYS_ADMIN (`setns(2)`) nor CAP_SYS_PTRACE (`/proc/PID/ns/net` of other users): the
//! pods' addresses come from netlink by namespace id (CAP_NET_ADMIN, which attaching needs
//! anyway), and their sockets from `/proc/PID/net/tcp{,6}`, which the kernel shows without a
//! capability. See [`scan_pod_namespaces`].
//!
//! In a container without the host's PID namespace, the host's processes are under a mounted
//! copy of the host's /proc (the DaemonSet mounts it at /host/proc): see [`set_proc_root`].

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::NamespaceSockets;
use crate::privileges::{self, Capability};

static PROC_ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sets, once per process, where the scan looks for `<pid>/ns/net` (default `/proc`). Returns
/// false when it was already set. A process-wide setting because the scan runs deep inside the
/// capture's start, and one process watches one host.
pub fn set_proc_root(root: PathBuf) -> bool {
    PROC_ROOT.set(root).is_ok()
}

fn proc_root() -> &'static Path {
    PROC_ROOT.get().map_or(Path::new("/proc"), PathBuf::as_path)
}

/// Failures of the scan. A namespace or process that vanishes mid-scan is skipped, not an error.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("reading the agent's own socket table {path}")]
    HostNamespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused to list a pod namespace's addresses: the message names the
    /// capability (see [`crate::privileges`]). The scan would otherwise miss every connection
    /// that pre-dates the agent, silently.
    #[error("{message}")]
    Refused {
        message: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listing the host's interfaces over netlink")]
    Links(#[source] std::io::Error),
}

/// What listing another namespace's addresses over netlink (`IFA_TARGET_NETNSID`) needs.
const ADDRESS_NEEDS: &[(Capability, &str)] = &[(
    Capability::NetAdmin,
    "listing the addresses of pod network namespaces, to find their connections that \
     pre-date the agent",
)];

/// Scans the network namespaces of the pods behind `host_ifindexes` (the host-side veths the
/// agent attached to). Returns the tables of the namespaces that could be read.
///
/// Without entering any namespace (no `setns(2)`, so no CAP_SYS_ADMIN) and without opening
/// `/proc/PID/ns/net` (no CAP_SYS_PTRACE):
/// 1. each attached veth names its peer's namespace by id (`IFLA_LINK_NETNSID`), whose addresses
///    netlink lists from here (`IFA_TARGET_NETNSID`, with CAP_NET_ADMIN);
/// 2. every process's `PROC/PID/net/tcp` and `tcp6` show the sockets of its namespace, with no
///    capability; the file's inode number is the namespace's own, so each is read once;
/// 3. a namespace whose connections start from a pod's address is that pod's.
pub fn scan_pod_namespaces(
    host_ifindexes: &HashSet<u32>,
) -> Result<Vec<NamespaceSockets>, ScanError> {
    let pods = pod_addresses(host_ifindexes)?;
    if pods.is_empty() {
        return Ok(Vec::new());
    }
    let own = Path::new("/proc/self/net/tcp");
    let host = std::fs::metadata(own).map_err(|source| ScanError::HostNamespace {
        path: own.to_owned(),
        source,
    })?;
    let mut seen = HashSet::from([host.ino()]);
    let mut tables = Vec::new();
    let pids = std::fs::read_dir(proc_root())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        });
    for pid in pids {
        let net = pid.path().join("net");
        let Ok(meta) = std::fs::metadata(net.join("tcp")) else {
            continue;
        };
        if !seen.insert(meta.ino()) {
            continue;
        }
        let mut table = NamespaceSockets::default();
        for file in ["tcp", "tcp6"] {
            if let Ok(text) = std::fs::read_to_string(net.join(file)) {
                super::parse_proc_net_tcp(&text, &mut table);
            }
        }
        if table
            .established
            .iter()
            .any(|(local, ..)| pods.contains(&super::unmap(*local)))
        {
            tables.push(table);
        }
    }
    Ok(tables)
}

/// The addresses of the namespaces behind the attached veths, listed over netlink by the
/// namespace ids the host gives them.
fn pod_addresses(host_ifindexes: &HashSet<u32>) -> Result<HashSet<IpAddr>, ScanError> {
    let links = dump(
        NETLINK_ROUTE,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        false,
    )
    .map_err(ScanError::Links)?;
    let nsids: BTreeSet<i32> = links
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) if host_ifindexes.contains(&l.header.index) => {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::LinkNetNsId(id) => Some(*id),
                    _ => None,
                })
            }
            _ => None,
        })
        .collect();
    let mut out = HashSet::new();
    for nsid in nsids {
        let mut request = AddressMessage::default();
        request
            .attributes
            .push(AddressAttribute::TargetNetNsId(nsid));
        let answers = match dump(
            NETLINK_ROUTE,
            RouteNetlinkMessage::GetAddress(request),
            true,
        ) {
            Ok(a) => a,
            Err(e) if privileges::is_refusal(&e) => {
                return Err(ScanError::Refused {
                    message: privileges::refusal(
                        "listing a pod namespace's addresses",
                        ADDRESS_NEEDS,
                        privileges::Status::current(),
                    ),
                    source: e,
                });
            }
            // The namespace went away meanwhile.
            Err(_) => continue,
        };
        for m in answers {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            for attr in a.attributes {
                if let AddressAttribute::Address(ip) | AddressAttribute::Local(ip) = attr
                    && !ip.is_loopback()
                {
                    out.insert(super::unmap(ip));
                }
            }
        }
    }
    Ok(out)
}

/// Sends one dump request on a fresh netlink socket of `protocol` and collects the answers.
/// `strict` turns on the kernel's strict checking of the request, without which it ignores a
/// dump's attributes (such as a target namespace). An error answer keeps its errno.
fn dump<M>(protocol: isize, request: M, strict: bool) -> std::io::Result<Vec<M>>
where
    M: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
{
    let mut socket = Socket::new(protocol)?;
    if strict {
        socket.set_netlink_get_strict_chk(true)?;
    }
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = NetlinkMessage::<M>::deserialize(&rx[offset..size])
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(match e.code {
                        Some(code) => std::io::Error::from_raw_os_error(-code.get()),
                        None => std::io::Error::other(format!("netlink error {e:?}")),
                    });
                }
                _ => {}
            }
            if len == 0 {
                return Ok(out);
            }
            offset += len;
        }
    }
}

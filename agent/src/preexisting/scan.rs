//! Reads TCP socket tables with sock_diag in the network namespaces of the pods the agent watches
//! (IO): those holding the peer of an attached host-side veth.
//!
//! Namespaces are found through /run/netns (named ones, as `ip netns` and some runtimes make)
//! and /proc/*/ns/net (those of running processes: every pod has at least its pause process).
//! Each is entered on a short-lived thread, since setns changes only the calling thread.
//!
//! In a container without the host's PID namespace, the host's processes are under a mounted
//! copy of the host's /proc (the DaemonSet mounts it at /host/proc): see [`set_proc_root`].

use std::{
    collections::HashSet,
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage},
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, TCP_ESTABLISHED, TCP_LISTEN},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{
    Socket, SocketAddr,
    protocols::{NETLINK_ROUTE, NETLINK_SOCK_DIAG},
};

use super::NamespaceSockets;

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

/// Failures of the scan. A namespace that vanishes mid-scan is skipped, not an error.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("reading the host's network namespace {path}")]
    HostNamespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Scans the network namespaces of the pods behind `host_ifindexes` (the host-side veths the
/// agent attached to). Returns the tables of the namespaces that could be read.
pub fn scan_pod_namespaces(
    host_ifindexes: &HashSet<u32>,
) -> Result<Vec<NamespaceSockets>, ScanError> {
    let own = Path::new("/proc/self/ns/net");
    let host = std::fs::metadata(own).map_err(|source| ScanError::HostNamespace {
        path: own.to_owned(),
        source,
    })?;
    let mut seen = HashSet::from([(host.dev(), host.ino())]);
    let mut paths: Vec<PathBuf> = Vec::new();
    let named = std::fs::read_dir("/run/netns").into_iter().flatten();
    let procs = std::fs::read_dir(proc_root())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| Ok(e.path().join("ns/net")));
    for entry in named.map(|e| e.map(|e| e.path())).chain(procs) {
        let Ok(path) = entry else { continue };
        if let Ok(meta) = std::fs::metadata(&path)
            && seen.insert((meta.dev(), meta.ino()))
        {
            paths.push(path);
        }
    }
    let mut tables = Vec::with_capacity(paths.len());
    for path in paths {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let wanted = host_ifindexes.clone();
        let table = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            let peers = peer_ifindexes().ok()?;
            if !peers.iter().any(|i| wanted.contains(i)) {
                return None;
            }
            dump_tcp().ok()
        })
        .join()
        .ok()
        .flatten();
        if let Some(t) = table {
            tables.push(t);
        }
    }
    Ok(tables)
}

/// Sends one dump request on a fresh netlink socket of `protocol` and collects the answers.
fn dump<M>(protocol: isize, request: M) -> std::io::Result<Vec<M>>
where
    M: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
{
    let mut socket = Socket::new(protocol)?;
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
                    return Err(std::io::Error::other(format!("netlink error {e:?}")));
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

/// Host-side interface indexes of this namespace's veths: a veth whose peer lives in another
/// namespace carries the peer's index (IFLA_LINK) and that namespace's id (IFLA_LINK_NETNSID).
fn peer_ifindexes() -> std::io::Result<Vec<u32>> {
    let links = dump(
        NETLINK_ROUTE,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
    )?;
    Ok(links
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .filter(|l| {
            l.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)))
        })
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Link(peer) => Some(*peer),
                _ => None,
            })
        })
        .collect())
}

/// Listening and established TCP sockets of the current thread's namespace, IPv4 and IPv6.
fn dump_tcp() -> std::io::Result<NamespaceSockets> {
    let mut out = NamespaceSockets::default();
    for family in [AF_INET, AF_INET6] {
        let request = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::ESTABLISHED | StateFlags::LISTEN,
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        });
        for msg in dump(NETLINK_SOCK_DIAG, request)? {
            let SockDiagMessage::InetResponse(r) = msg else {
                continue;
            };
            let id = &r.header.socket_id;
            match r.header.state {
                TCP_LISTEN => {
                    out.listening.insert(id.source_port);
                }
                TCP_ESTABLISHED => out.established.push((
                    id.source_address,
                    id.source_port,
                    id.destination_address,
                    id.destination_port,
                )),
                _ => {}
            }
        }
    }
    Ok(out)
}

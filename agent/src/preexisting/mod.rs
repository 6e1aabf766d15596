//! Connections that existed before the agent started: their SYN went by unseen, so the TC
//! programs never report them. They are read from the kernel's socket tables (sock_diag) in each
//! pod's network namespace and reported once, as `"initiator": "pre_existing"`.
//!
//! The scan (IO) lives in `scan`; deciding who initiated each connection is pure and lives here.

mod scan;

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
};

use chrono::{DateTime, Utc};
pub use scan::{ScanError, scan_pod_namespaces, set_proc_root};

use crate::flow::{Endpoint, FlowRecord, Initiator, Protocol};

/// What one network namespace's TCP table says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceSockets {
    /// Ports with a listening socket (any address).
    pub listening: HashSet<u16>,
    /// Established connections as (local address, local port, remote address, remote port).
    pub established: Vec<(IpAddr, u16, IpAddr, u16)>,
}

/// Turns the socket tables of several namespaces into one record per connection. A connection
/// whose local port has a listener in its namespace was accepted there, so the remote end
/// initiated it; otherwise the local end did. Both ends of a connection between two scanned
/// namespaces give the same record, reported once. Loopback connections are not pod traffic.
pub fn records(tables: &[NamespaceSockets], seen_at: DateTime<Utc>) -> Vec<FlowRecord> {
    let mut keys = BTreeSet::new();
    for t in tables {
        for &(laddr, lport, raddr, rport) in &t.established {
            let (laddr, raddr) = (unmap(laddr), unmap(raddr));
            if laddr.is_loopback() || raddr.is_loopback() {
                continue;
            }
            let key = if t.listening.contains(&lport) {
                (raddr, rport, laddr, lport)
            } else {
                (laddr, lport, raddr, rport)
            };
            keys.insert(key);
        }
    }
    keys.into_iter()
        .map(|(src, sport, dst, dport)| {
            let mut r = FlowRecord::new(
                Protocol::Tcp,
                Endpoint::Ip(src),
                Endpoint::Ip(dst),
                Some(dport),
            );
            r.src_port = Some(sport);
            r.first_seen = Some(seen_at);
            r.initiator = Some(Initiator::PreExisting);
            r
        })
        .collect()
}

/// `::ffff:a.b.c.d` as the IPv4 address it stands for.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn keys(recs: &[FlowRecord]) -> Vec<String> {
        recs.iter()
            .map(|r| {
                format!(
                    "{}:{} -> {}:{}",
                    r.src,
                    r.src_port.unwrap(),
                    r.dst,
                    r.port.unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn listener_side_names_the_remote_end_as_initiator() {
        let server = NamespaceSockets {
            listening: [8080].into(),
            established: vec![(ip("198.18.1.11"), 8080, ip("198.18.1.10"), 40000)],
        };
        let recs = records(&[server], Utc::now());
        assert_eq!(keys(&recs), ["198.18.1.10:40000 -> 198.18.1.11:8080"]);
        assert_eq!(recs[0].initiator, Some(Initiator::PreExisting));
    }

    #[test]
    fn both_ends_scanned_give_one_record() {
        let client = NamespaceSockets {
            listening: HashSet::new(),
            established: vec![(ip("198.18.1.10"), 40000, ip("198.18.1.11"), 8080)],
        };
        let server = NamespaceSockets {
            listening: [8080].into(),
            established: vec![(
                ip("::ffff:198.18.1.11"),
                8080,
                ip("::ffff:198.18.1.10"),
                40000,
            )],
        };
        let recs = records(&[client, server], Utc::now());
        assert_eq!(keys(&recs), ["198.18.1.10:40000 -> 198.18.1.11:8080"]);
    }

    #[test]
    fn client_side_without_listener_names_itself_and_loopback_is_skipped() {
        let client = NamespaceSockets {
            listening: [9090].into(),
            established: vec![
                (ip("fd00::1:a"), 51000, ip("203.0.113.10"), 443),
                (ip("127.0.0.1"), 9090, ip("127.0.0.1"), 50000),
            ],
        };
        let recs = records(&[client], Utc::now());
        assert_eq!(keys(&recs), ["fd00::1:a:51000 -> 203.0.113.10:443"]);
    }
}

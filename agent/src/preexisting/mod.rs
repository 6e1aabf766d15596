//! Connections that existed before the agent started: their SYN went by unseen, so the TC
//! programs never report them. They are read from the kernel's socket tables of each pod's
//! network namespace (`/proc/PID/net/tcp{,6}`) and reported once, as
//! `"initiator": "pre_existing"`.
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

/// Adds the sockets of one `/proc/PID/net/tcp` or `tcp6` text to `into`: LISTEN (`0A`) local
/// ports, and ESTABLISHED (`01`) connections. The kernel prints each address as 32-bit words in
/// the machine's byte order (`%08X` of the network-order bytes), and ports in host order. Lines
/// it cannot read are skipped: the file is the kernel's, but a short read must not stop the scan.
pub fn parse_proc_net_tcp(text: &str, into: &mut NamespaceSockets) {
    fn addr(hex: &str) -> Option<IpAddr> {
        let word = |i: usize| -> Option<[u8; 4]> {
            Some(
                u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                    .ok()?
                    .to_ne_bytes(),
            )
        };
        match hex.len() {
            8 => Some(IpAddr::from(word(0)?)),
            32 => {
                let mut b = [0u8; 16];
                for i in 0..4 {
                    b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
                }
                Some(IpAddr::from(b))
            }
            _ => None,
        }
    }
    fn endpoint(field: &str) -> Option<(IpAddr, u16)> {
        let (a, p) = field.split_once(':')?;
        Some((addr(a)?, u16::from_str_radix(p, 16).ok()?))
    }
    for line in text.lines().skip(1) {
        let mut fields = line.split_whitespace().skip(1);
        let (Some(local), Some(remote), Some(state)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Some((laddr, lport)), Some((raddr, rport))) = (endpoint(local), endpoint(remote))
        else {
            continue;
        };
        match state {
            "0A" => {
                into.listening.insert(lport);
            }
            "01" => into.established.push((laddr, lport, raddr, rport)),
            _ => {}
        }
    }
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

    /// The layout of Documentation/networking/proc_net_tcp.rst: a header, then `sl local rem st
    /// …`, addresses as native-endian 32-bit words (this test runs on little-endian machines).
    #[test]
    #[cfg(target_endian = "little")]
    fn proc_net_tcp_lines_give_listeners_and_established_connections() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0B0112C6:1F90 0A0112C6:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n\
   2: 0B0112C6:1F90 0C0112C6:9C41 06 00000000:00000000 03:00000000 00000000     0        0 0 3\n\
   3: garbage\n";
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0000000000000000FFFF00000B0112C6:1538 0000000000000000FFFF00000A0112C6:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n\
   1: 000000FD000000000000010001000000:0050 000000FD000000000000010002000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 4 1\n";
        let mut s = NamespaceSockets::default();
        parse_proc_net_tcp(tcp, &mut s);
        parse_proc_net_tcp(tcp6, &mut s);
        assert_eq!(s.listening, [8080].into());
        assert_eq!(
            s.established,
            vec![
                (ip("198.18.1.11"), 8080, ip("198.18.1.10"), 40000),
                (
                    ip("::ffff:198.18.1.11"),
                    5432,
                    ip("::ffff:198.18.1.10"),
                    50000
                ),
                (ip("fd00::1:0:0:1"), 80, ip("fd00::1:0:0:2"), 54321),
            ]
        );
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

//! Turns a [`FlowEvent`] from the kernel into a [`FlowRecord`], and a [`DnsEvent`] into the
//! answers it carries. Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_ebpf::{DnsEvent, FlowEvent, event_kind, family, origin, outcome, proto};
use chrono::{DateTime, Utc};

use crate::flow::{Endpoint, FlowRecord, Initiator, Outcome, Protocol};

/// Converts `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct ClockOffset {
    /// Wall-clock nanoseconds since the epoch minus monotonic nanoseconds, taken at one instant.
    pub wall_minus_mono_ns: i128,
}

impl ClockOffset {
    /// Reads both clocks now.
    pub fn now() -> Self {
        let mono = nix_monotonic_ns();
        let wall = Utc::now().timestamp_nanos_opt().unwrap_or(0) as i128;
        Self {
            wall_minus_mono_ns: wall - mono,
        }
    }

    pub fn to_wall(self, mono_ns: u64) -> DateTime<Utc> {
        let ns = mono_ns as i128 + self.wall_minus_mono_ns;
        DateTime::from_timestamp_nanos(ns.clamp(0, i64::MAX as i128) as i64)
    }
}

fn nix_monotonic_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

fn addr(words: [u32; 4], fam: u8) -> Option<IpAddr> {
    let mut bytes = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    match fam {
        family::IPV4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        family::IPV6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => None,
    }
}

/// A DNS response to a pod, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsReport {
    /// The pod that received it.
    pub client: IpAddr,
    pub at: DateTime<Utc>,
    pub answers: Result<crate::dns::Answers, crate::dns::DnsError>,
}

/// Reads a DNS event: the copied payload as a DNS message (over TCP, after its two-octet
/// length). `None` for an event with an unknown address family or protocol, or a length
/// beyond its buffer: the programs never write one, and a corrupt event is not trusted.
pub fn dns_report(ev: &DnsEvent, clock: ClockOffset) -> Option<DnsReport> {
    let client = addr(ev.client, ev.family)?;
    let data = ev.data.get(..usize::from(ev.captured))?;
    // A copy cut short of the payload cuts the message: the parser keeps the answer records
    // read before the cut and says so.
    let cut = ev.captured < ev.len;
    let answers = match ev.proto {
        proto::UDP if cut => crate::dns::parse_cut_response(data),
        proto::UDP => crate::dns::parse_response(data),
        proto::TCP => crate::dns::parse_tcp_response(data, cut),
        _ => return None,
    };
    Some(DnsReport {
        client,
        at: clock.to_wall(ev.timestamp_ns),
        answers,
    })
}

/// The record for one connection start, or `None` for an event that names an unknown protocol
/// or address family (the programs never write one; a corrupt event is dropped, not trusted).
pub fn event_to_record(
    ev: &FlowEvent,
    interface: Option<&str>,
    clock: ClockOffset,
) -> Option<FlowRecord> {
    let protocol = Protocol::from_number(ev.proto)?;
    let src = addr(ev.src, ev.family)?;
    let dst = addr(ev.dst, ev.family)?;
    let mut rec = FlowRecord::new(
        protocol,
        Endpoint::Ip(src),
        Endpoint::Ip(dst),
        protocol.has_ports().then_some(ev.dst_port),
    );
    if protocol.has_ports() {
        rec.src_port = Some(ev.src_port);
    } else {
        rec.icmp_type = Some(ev.icmp_type);
        rec.icmp_code = Some(ev.icmp_code);
    }
    rec.interface = interface.map(str::to_owned);
    rec.first_seen = Some(clock.to_wall(ev.timestamp_ns));
    rec.initiator = Some(match ev.origin {
        origin::TCP_SYN => Initiator::Syn,
        origin::SCTP_INIT => Initiator::SctpInit,
        origin::ICMP_ECHO => Initiator::EchoRequest,
        _ => Initiator::FirstSeen,
    });
    rec.outcome = match ev.outcome {
        outcome::ANSWERED => Some(Outcome::Answered),
        outcome::REFUSED => Some(Outcome::Refused),
        _ => None,
    };
    Some(rec)
}

/// What an event reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A connection start. Its outcome is set when the programs already know it (a reply seen
    /// first), else it waits for an [`Report::Outcome`] or the answer timeout.
    Start(FlowRecord),
    /// The outcome of a start reported earlier; the record carries the connection (and, if
    /// its start was lost, stands in for it).
    Outcome(FlowRecord),
}

/// The report of one event, or `None` for an event that names an unknown protocol, family or
/// kind.
pub fn event_to_report(
    ev: &FlowEvent,
    interface: Option<&str>,
    clock: ClockOffset,
) -> Option<Report> {
    let rec = event_to_record(ev, interface, clock)?;
    match ev.kind {
        event_kind::START => Some(Report::Start(rec)),
        event_kind::OUTCOME if rec.outcome.is_some() => Some(Report::Outcome(rec)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_ebpf::proto;

    fn v4(a: [u8; 4]) -> [u32; 4] {
        [u32::from_ne_bytes(a), 0, 0, 0]
    }

    #[test]
    fn tcp_syn_event_becomes_record_with_server_port() {
        let ev = FlowEvent {
            src: v4([198, 18, 1, 2]),
            dst: v4([198, 18, 1, 3]),
            timestamp_ns: 1_000,
            ifindex: 7,
            src_port: 40_000,
            dst_port: 8080,
            proto: proto::TCP,
            family: family::IPV4,
            origin: origin::TCP_SYN,
            ..Default::default()
        };
        let clock = ClockOffset {
            wall_minus_mono_ns: 1_700_000_000_000_000_000,
        };
        let rec = event_to_record(&ev, Some("veth1"), clock).unwrap();
        assert_eq!(
            serde_json::to_string(&rec).unwrap(),
            r#"{"protocol":"TCP","src":"198.18.1.2","src_port":40000,"dst":"198.18.1.3","port":8080,"interface":"veth1","first_seen":"2023-11-14T22:13:20.000001Z","initiator":"syn"}"#
        );
    }

    #[test]
    fn icmpv6_event_has_no_ports_but_type_and_code() {
        let mut dst = [0u8; 16];
        dst[0] = 0xfd;
        dst[15] = 2;
        let mut words = [0u32; 4];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u32::from_ne_bytes(dst[i * 4..i * 4 + 4].try_into().unwrap());
        }
        let ev = FlowEvent {
            dst: words,
            proto: proto::ICMPV6,
            family: family::IPV6,
            origin: origin::ICMP_ECHO,
            icmp_type: 128,
            src_port: 9,
            dst_port: 9,
            ..Default::default()
        };
        let rec = event_to_record(
            &ev,
            None,
            ClockOffset {
                wall_minus_mono_ns: 0,
            },
        )
        .unwrap();
        assert_eq!(rec.dst, Endpoint::Ip("fd00::2".parse().unwrap()));
        assert_eq!((rec.port, rec.src_port), (None, None));
        assert_eq!((rec.icmp_type, rec.icmp_code), (Some(128), Some(0)));
        assert_eq!(rec.initiator, Some(Initiator::EchoRequest));
    }

    #[test]
    fn corrupt_event_is_dropped_not_trusted() {
        let ev = FlowEvent {
            proto: 47,
            family: family::IPV4,
            ..Default::default()
        };
        assert!(
            event_to_record(
                &ev,
                None,
                ClockOffset {
                    wall_minus_mono_ns: 0
                }
            )
            .is_none()
        );
        let ev = FlowEvent {
            proto: proto::TCP,
            family: 9,
            ..Default::default()
        };
        assert!(
            event_to_record(
                &ev,
                None,
                ClockOffset {
                    wall_minus_mono_ns: 0
                }
            )
            .is_none()
        );
    }
}

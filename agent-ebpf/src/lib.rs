//! Types shared by trustmap's TC programs and the userspace agent.
//!
//! Every type here is `#[repr(C)]` with explicit padding, so that the bytes the kernel writes are the
//! bytes userspace reads: no `bool`, no implicit holes. The `user` feature implements `aya::Pod` for
//! them; the eBPF side never turns it on.
#![no_std]

/// IP protocol numbers the programs understand.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

/// Address family of a flow. IPv4 addresses sit in the first word of the 16-byte address fields.
pub mod family {
    pub const IPV4: u8 = 4;
    pub const IPV6: u8 = 6;
}

/// How the programs decided who initiated a connection.
pub mod origin {
    /// A TCP SYN without ACK: the sender is the client, the destination port the server port.
    pub const TCP_SYN: u8 = 1;
    /// An SCTP packet carrying an INIT chunk: the sender is the client.
    pub const SCTP_INIT: u8 = 2;
    /// An ICMP or ICMPv6 echo request: the sender is the client.
    pub const ICMP_ECHO: u8 = 3;
    /// The first packet seen for a connectionless 5-tuple (UDP, SCTP without INIT, ICMP
    /// informational messages) after the idle timeout: its sender is taken as the initiator.
    pub const FIRST_SEEN: u8 = 4;
}

/// How a connection start ended, as far as the programs can tell. The programs only ever write
/// `ANSWERED` and `REFUSED`; userspace decides `UNANSWERED` (TCP, SCTP, ICMP) and `ONE_WAY`
/// (UDP) when no answer came within its timeout.
pub mod outcome {
    /// Nothing from the responder yet.
    pub const PENDING: u8 = 0;
    /// The responder answered: a TCP SYN-ACK (or any packet but a RST), an SCTP INIT-ACK, any
    /// UDP packet back, an ICMP echo reply.
    pub const ANSWERED: u8 = 1;
    /// The responder refused: a TCP RST, an SCTP ABORT, or an ICMP/ICMPv6 destination
    /// unreachable (port, host, network, protocol or administratively prohibited) for that
    /// 5-tuple.
    pub const REFUSED: u8 = 2;
}

/// What a [`FlowEvent`] reports.
pub mod event_kind {
    /// A connection start: the first packet of a connection (or a later packet of a connection
    /// whose start the full ring buffer could not take).
    pub const START: u8 = 0;
    /// The outcome of a connection start reported earlier: `FlowEvent::outcome` says which.
    pub const OUTCOME: u8 = 1;
}

/// Which hook of the host-side veth saw the packet.
pub mod direction {
    /// TC ingress of the host-side veth: the packet comes *from* the pod.
    pub const FROM_POD: u8 = 0;
    /// TC egress of the host-side veth: the packet goes *to* the pod.
    pub const TO_POD: u8 = 1;
}

/// Indices of the per-CPU `COUNTERS` array.
pub mod counter {
    /// Packets the programs ran on, counted only with `--flow-stats` (`FLOW_STATS`): counting
    /// is a map operation, which the fast path otherwise avoids.
    pub const PACKETS: u32 = 0;
    /// Connection-start events written to the ring buffer.
    pub const EVENTS: u32 = 1;
    /// Connection-start events lost because the ring buffer was full.
    pub const EVENTS_DROPPED: u32 = 2;
    /// Packets whose headers were truncated or inconsistent; never trusted, always passed on.
    pub const MALFORMED: u32 = 3;
    /// Packets that are not IPv4 or IPv6 (ARP, for example).
    pub const NON_IP: u32 = 4;
    /// Non-first IP fragments, which carry no transport header.
    pub const FRAGMENTS: u32 = 5;
    /// TCP packets with FIN, RST or SYN-ACK (every TCP packet with `--flow-stats`, or while a
    /// lost start waits) of a connection the programs do not know: it predates the agent, or
    /// its entry was evicted.
    pub const TCP_MIDSTREAM: u32 = 6;
    /// ICMP errors, neighbour discovery and other control messages, which are not connections.
    pub const ICMP_CONTROL: u32 = 7;
    /// Packets of other IP protocols (GRE, ESP, ...).
    pub const OTHER_PROTOCOL: u32 = 8;
    /// DNS responses (UDP or TCP from port 53, to a pod) copied to the `DNS_EVENTS` ring.
    pub const DNS_RESPONSES: u32 = 9;
    /// DNS responses not copied because the `DNS_EVENTS` ring was full.
    pub const DNS_DROPPED: u32 = 10;
    /// Number of counters.
    pub const COUNT: u32 = 11;
}

/// Slots of the `SYN_SEEN` array: an interface counts in slot `ifindex % SYN_SEEN_SLOTS`.
/// Two interfaces alive at once share a slot only when their indices differ by a multiple of
/// it.
pub const SYN_SEEN_SLOTS: u32 = 65_536;

/// Octets of a DNS response the programs copy to userspace: the classic UDP maximum. A longer
/// response is cut there; userspace keeps the answer records read before the cut.
pub const DNS_CAPTURE: usize = 512;

/// Key of the `FLOWS` LRU map. Both directions of a connection map to the same key: the endpoint
/// `a` is the smaller of the two `(address, port)` pairs. For ICMP echo both ports hold the
/// identifier.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub addr_a: [u32; 4],
    pub addr_b: [u32; 4],
    pub port_a: u16,
    pub port_b: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Value of the `FLOWS` LRU map: what the programs know of one connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE, a tick's resolution) of the packet
    /// that started the connection.
    pub first_seen_ns: u64,
    /// The same clock for the latest packet that took the slow path: not a TCP packet without
    /// SYN, FIN or RST, nor a packet the flow cache settled (it lags by at most 100 jiffies);
    /// every packet with `--flow-stats`.
    pub last_seen_ns: u64,
    /// Packets and octets both ways, with `--flow-stats` only (0 otherwise).
    pub packets: u64,
    pub bytes: u64,
    /// 1 when endpoint `a` of the key initiated the connection.
    pub initiator_is_a: u8,
    /// One of [`origin`].
    pub origin: u8,
    /// 1 once a TCP FIN or RST was seen: the next SYN starts a new connection.
    pub closing: u8,
    /// One of [`outcome`]: `PENDING` until the responder's first packet.
    pub outcome: u8,
    /// 1 when the start could not be reported (full ring buffer): the next packet of the
    /// connection reports it.
    pub unreported: u8,
    pub _pad: [u8; 3],
}

/// A connection start, as written to the `EVENTS` ring buffer. `src` is always the initiator and
/// `dst_port` the server port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEvent {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC, a tick's resolution) of the packet.
    pub timestamp_ns: u64,
    pub ifindex: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub family: u8,
    /// One of [`direction`].
    pub direction: u8,
    /// One of [`origin`].
    pub origin: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// One of [`event_kind`].
    pub kind: u8,
    /// For an `OUTCOME` event, one of [`outcome`].
    pub outcome: u8,
}

/// A DNS response to a pod, as written to the `DNS_EVENTS` ring buffer: the start of its
/// payload (the DNS message; over TCP, the segment's payload, which starts with the two-octet
/// length when it is the first of the response).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsEvent {
    /// The pod that receives the response (the packet's destination).
    pub client: [u32; 4],
    /// The DNS server (the packet's source).
    pub server: [u32; 4],
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC, a tick's resolution) of the packet.
    pub timestamp_ns: u64,
    pub ifindex: u32,
    /// Octets of payload in the packet.
    pub len: u16,
    /// Octets copied to `data`: at most [`DNS_CAPTURE`].
    pub captured: u16,
    pub family: u8,
    /// UDP or TCP.
    pub proto: u8,
    pub _pad: [u8; 6],
    pub data: [u8; DNS_CAPTURE],
}

/// Names the userspace agent looks up in the object file.
pub mod names {
    pub const PROG_INGRESS: &str = "trustmap_ing";
    pub const PROG_EGRESS: &str = "trustmap_egr";
    /// The same programs for devices without a link-layer header (netkit in L3 mode).
    pub const PROG_INGRESS_L3: &str = "trustmap_ing_l3";
    pub const PROG_EGRESS_L3: &str = "trustmap_egr_l3";
    pub const MAP_FLOWS: &str = "FLOWS";
    pub const MAP_EVENTS: &str = "EVENTS";
    pub const MAP_DNS_EVENTS: &str = "DNS_EVENTS";
    pub const MAP_COUNTERS: &str = "COUNTERS";
    pub const MAP_SYN_SEEN: &str = "SYN_SEEN";
    pub const GLOBAL_IDLE_TIMEOUT_NS: &str = "IDLE_TIMEOUT_NS";
    /// A `u8`: 1 for per-connection packet and byte counters (`--flow-stats`).
    pub const GLOBAL_FLOW_STATS: &str = "FLOW_STATS";
    /// The writable global section, which holds only `START_LOST` (a `u32`).
    pub const MAP_BSS: &str = ".bss";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: these are #[repr(C)], made only of integers and integer arrays, with explicit
    // padding fields, so every bit pattern is valid and there are no implicit holes.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::FlowEvent {}
    // SAFETY: as above: integers and integer arrays, explicit padding.
    unsafe impl aya::Pod for super::DnsEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn shared_types_have_no_implicit_padding() {
        assert_eq!(size_of::<FlowKey>(), 16 + 16 + 2 + 2 + 1 + 1 + 2);
        assert_eq!(size_of::<FlowStats>(), 8 * 4 + 3 + 5);
        assert_eq!(size_of::<FlowEvent>(), 16 + 16 + 8 + 4 + 2 + 2 + 6 + 2);
        assert_eq!(
            size_of::<DnsEvent>(),
            16 + 16 + 8 + 4 + 2 + 2 + 1 + 1 + 6 + DNS_CAPTURE
        );
        assert_eq!(
            size_of::<DnsEvent>() % 8,
            0,
            "ring buffer records are 8-aligned"
        );
    }
}

use agent_ebpf::{
    DNS_CAPTURE, DnsEvent, FlowEvent, FlowKey, FlowStats, SYN_SEEN_SLOTS, counter, direction,
    event_kind, family, origin, outcome, proto,
};
use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_skb_load_bytes},
    macros::{classifier, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};

/// Idle time after which a connectionless 5-tuple (or a TCP connection without FIN or RST) counts
/// as a new connection. Set by userspace at load time.
#[unsafe(no_mangle)]
static IDLE_TIMEOUT_NS: u64 = 60_000_000_000;

/// 1 to keep per-connection packet and byte counters in `FLOWS` and to count every packet
/// (`--flow-stats`). Set by userspace at load time; read-only, so that the verifier removes the
/// counting code when it is 0.
#[unsafe(no_mangle)]
static FLOW_STATS: u8 = 0;

/// 1 while a connection start lost to a full ring buffer may wait in `FLOWS` to be reported:
/// TCP packets without SYN, FIN or RST then take the slow path, so that the connection's next
/// packet reports it. Set here; cleared by userspace once no entry waits. A global variable:
/// reading it is one load, not a map lookup.
#[unsafe(no_mangle)]
static mut START_LOST: u32 = 0;

#[map]
static FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(131_072, 0);

/// The flow cache: for each slot (picked by a hash of the key), the last connection of another
/// protocol than TCP whose entry in `FLOWS` was settled and refreshed, and the jiffies of that
/// refresh. A packet of that connection within [`CACHE_FRESH_JIFFIES`] changes nothing `FLOWS`
/// would keep (its `last_seen_ns` is at most that old), so it is done after one array index
/// and a compare: no hash map lookup, no clock read. Shared by all CPUs; written only when a
/// packet takes the slow path.
#[map]
static FLOW_CACHE: Array<CacheSlot> = Array::with_max_entries(CACHE_SLOTS, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct CacheSlot {
    key: FlowKey,
    /// `bpf_jiffies64` when the connection's `FLOWS` entry was last refreshed.
    refreshed: u64,
    /// Which packets the slot serves: bit 0 those sent by endpoint `a` of the key, bit 1 those
    /// sent by `b`. Both once the connection is settled; while it waits for its answer, only
    /// the initiator's (the responder's first packet must reach `FLOWS`).
    senders: u64,
}

/// Slots of [`FLOW_CACHE`]: a power of two.
const CACHE_SLOTS: u32 = 8_192;
/// How long a cached connection skips `FLOWS`: 100 jiffies, at most a second (HZ is at least
/// 100). Idle timeouts are therefore measured to within a second.
const CACHE_FRESH_JIFFIES: u64 = 100;
/// The shortest idle timeout the cache is used with: below it, a second of lag matters.
const CACHE_MIN_IDLE_NS: u64 = 2_000_000_000;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// DNS responses to pods (see [`DnsEvent`]). A ring of its own: a burst of DNS never takes the
/// room of a connection start.
#[map]
static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Per interface (the slot of its index, see [`SYN_SEEN_SLOTS`]), TCP packets with SYN set (SYN
/// and SYN-ACK) by direction: `[from the pod, to the pod]`. Userspace warns about an interface
/// that only ever sees one of the two. Written on SYN packets only, never on the common
/// packet. An array, so that counting is an index, not a hash lookup.
#[map]
static SYN_SEEN: Array<[u32; 2]> = Array::with_max_entries(SYN_SEEN_SLOTS, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const BPF_NOEXIST: u64 = 1;
/// Extension headers walked before giving up on an IPv6 packet.
const MAX_IPV6_EXT_HEADERS: usize = 6;

#[classifier]
pub fn trustmap_ing(ctx: TcContext) -> i32 {
    observe::<ETH_HLEN>(&ctx, direction::FROM_POD);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn trustmap_egr(ctx: TcContext) -> i32 {
    observe::<ETH_HLEN>(&ctx, direction::TO_POD);
    TC_ACT_UNSPEC
}

/// For devices without a link-layer header (netkit in L3 mode): the packet starts with its IP
/// header.
#[classifier]
pub fn trustmap_ing_l3(ctx: TcContext) -> i32 {
    observe::<0>(&ctx, direction::FROM_POD);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn trustmap_egr_l3(ctx: TcContext) -> i32 {
    observe::<0>(&ctx, direction::TO_POD);
    TC_ACT_UNSPEC
}

/// Why a packet was not followed further: the index of the counter that counts it. Every reason
/// is counted; none changes the verdict.
type Skip = u32;

/// What the programs keep of one packet's headers.
struct Packet {
    src: [u32; 4],
    dst: [u32; 4],
    src_port: u16,
    dst_port: u16,
    proto: u8,
    family: u8,
    tcp_flags: u8,
    /// For ICMP: type and code. For SCTP: the type of the first chunk.
    icmp_type: u8,
    icmp_code: u8,
    starts: Option<u8>,
    /// An ICMP error about another flow: the addresses and ports above are those of the packet
    /// it quotes (sent by that flow's initiator), and the error refuses that flow.
    refuses: bool,
    /// TCP and UDP: where the payload starts, and (UDP) its length by the UDP header.
    payload_off: usize,
    udp_payload_len: usize,
}

/// What every program here does with a packet: reads it, never changes it. The benchmark
/// object calls it too (agent-ebpf/src/bench.rs).
#[inline(always)]
pub(crate) fn observe<const L2: usize>(ctx: &TcContext, dir: u8) {
    if flow_stats() {
        bump(counter::PACKETS);
    } else if fast_path::<L2>(ctx, dir) {
        return;
    }
    match parse::<L2>(ctx) {
        Ok(pkt) => {
            if dir == direction::TO_POD && pkt.src_port == 53 && !pkt.refuses {
                copy_dns(ctx, &pkt);
            }
            track(ctx, &pkt, dir)
        }
        Err(c) => bump(c),
    }
}

/// The fast path, checked before anything else with as little code as can be, for a packet in
/// an IPv4 header without options or an IPv6 header without extension headers, whose headers
/// lie in the linear data, and that is not a DNS response to a pod (true: nothing to do):
/// - TCP without SYN, FIN or RST;
/// - UDP of a conversation the flow cache holds for its sender.
///
/// Anything else (false) takes the full parse, which decides these packets the same way
/// ([`track`]'s first checks). Measured under real traffic, the full parse costs several
/// times what it costs in a benchmark loop (more code to fetch), hence this short one.
#[inline(always)]
fn fast_path<const L2: usize>(ctx: &TcContext, dir: u8) -> bool {
    if start_lost() {
        return false;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    // SAFETY: the context's skb pointer is valid for the whole program run.
    let eth_proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    let (mut src, mut dst) = ([0u32; 4], [0u32; 4]);
    let (l4, proto, family) = match eth_proto {
        ETH_P_IP => {
            if start + L2 + 20 + 14 > end {
                return false;
            }
            // SAFETY: inside the packet, by the check above.
            let ip: Ipv4Hdr = unsafe { *((start + L2) as *const Ipv4Hdr) };
            // Version 4 without options, no fragment offset.
            if ip.ver_ihl != 0x45 || u16::from_be(ip.frag_off) & 0x1fff != 0 {
                return false;
            }
            (src[0], dst[0]) = (ip.src, ip.dst);
            (L2 + 20, ip.proto, family::IPV4)
        }
        ETH_P_IPV6 => {
            if start + L2 + 40 + 14 > end {
                return false;
            }
            // SAFETY: inside the packet, by the check above.
            let ip: Ipv6Hdr = unsafe { *((start + L2) as *const Ipv6Hdr) };
            if u32::from_be(ip.ver_tc_flow) >> 28 != 6 {
                return false;
            }
            (src, dst) = (ip.src, ip.dst);
            (L2 + 40, ip.next_hdr, family::IPV6)
        }
        _ => return false,
    };
    // SAFETY: inside the packet: both bounds checks above cover 14 octets from `l4`.
    let h: L4Hdr = unsafe { *((start + l4) as *const L4Hdr) };
    let (sport, dport) = (u16::from_be(h.src_port), u16::from_be(h.dst_port));
    if dir == direction::TO_POD && sport == 53 {
        return false;
    }
    match proto {
        proto::TCP => h.byte12 >> 4 >= 5 && h.byte13 & (TCP_SYN | TCP_FIN | TCP_RST) == 0,
        proto::UDP if cache_on() => {
            // The UDP length is the first half of word1, in network order.
            if (u32::from_be(h.word1) >> 16) < 8 {
                return false;
            }
            let (key, a_is_src) = flow_key(&src, sport, &dst, dport, proto, family);
            // SAFETY: the helper has no preconditions.
            let jiffies = unsafe { bpf_jiffies64() };
            cache_hit(cache_index(&key), &key, a_is_src, jiffies)
        }
        _ => false,
    }
}

/// Copies a DNS response to a pod (its first [`DNS_CAPTURE`] octets) to the `DNS_EVENTS` ring.
/// Reads only: the packet goes on unchanged whatever happens here.
#[inline(always)]
fn copy_dns(ctx: &TcContext, pkt: &Packet) {
    let off = pkt.payload_off;
    let in_skb = (ctx.len() as usize).saturating_sub(off);
    let len = match pkt.proto {
        proto::UDP => pkt.udp_payload_len.min(in_skb),
        proto::TCP => in_skb,
        _ => return,
    };
    if len == 0 || off == 0 {
        return;
    }
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsEvent>(0) else {
        bump(counter::DNS_DROPPED);
        return;
    };
    let ev = entry.as_mut_ptr();
    let n = if len > DNS_CAPTURE { DNS_CAPTURE } else { len };
    // SAFETY: `ev` points at a reserved, writable record of the right size; `n` is between 1
    // and the size of `data`, which is what the helper writes.
    let copied = unsafe {
        (*ev).client = pkt.dst;
        (*ev).server = pkt.src;
        (*ev).timestamp_ns = bpf_ktime_get_coarse_ns();
        (*ev).ifindex = (*ctx.skb.skb).ifindex;
        (*ev).len = len.min(usize::from(u16::MAX)) as u16;
        (*ev).captured = n as u16;
        (*ev).family = pkt.family;
        (*ev).proto = pkt.proto;
        (*ev)._pad = [0; 6];
        (1..=DNS_CAPTURE).contains(&n)
            && bpf_skb_load_bytes(
                ctx.skb.skb as *const _,
                off as u32,
                (*ev).data.as_mut_ptr() as *mut _,
                n as u32,
            ) == 0
    };
    if copied {
        entry.submit(0);
        bump(counter::DNS_RESPONSES);
    } else {
        entry.discard(0);
        bump(counter::MALFORMED);
    }
}

#[inline(always)]
fn flow_stats() -> bool {
    // SAFETY: the global is written only by the loader, before the program runs.
    unsafe { core::ptr::read_volatile(&FLOW_STATS) != 0 }
}

#[inline(always)]
fn start_lost() -> bool {
    // SAFETY: a u32 global; a stale read only sends a packet down the slow path, or not.
    unsafe { core::ptr::read_volatile(&raw const START_LOST) != 0 }
}

#[inline(always)]
fn mark_start_lost() {
    // SAFETY: as above; every writer here writes the same value.
    unsafe { core::ptr::write_volatile(&raw mut START_LOST, 1) }
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, valid for the life of the program run.
        unsafe { *p += 1 };
    }
}

/// Reads a header at `off`: straight from the linear packet data when it is there (the common
/// case, and much cheaper), through `bpf_skb_load_bytes` when the skb is not linear that far.
#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, off: usize) -> Result<T, Skip> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() <= end {
        // SAFETY: the bounds check above keeps the read inside the packet. A plain load, not
        // `read_unaligned`, which the BPF backend splits into single-byte loads: the verifier
        // assumes the IP header 4-aligned (NET_IP_ALIGN) and, where the CPU has no efficient
        // unaligned access, rejects a misaligned packet load at load time, never at run time.
        return Ok(unsafe { ((start + off) as *const T).read() });
    }
    ctx.load(off).map_err(|_| counter::MALFORMED)
}

#[inline(always)]
fn parse<const L2: usize>(ctx: &TcContext) -> Result<Packet, Skip> {
    // SAFETY: the context's skb pointer is valid for the whole program run.
    let eth_proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    let mut pkt = Packet {
        src: [0; 4],
        dst: [0; 4],
        src_port: 0,
        dst_port: 0,
        proto: 0,
        family: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        starts: None,
        refuses: false,
        payload_off: 0,
        udp_payload_len: 0,
    };
    let l4 = match eth_proto {
        ETH_P_IP => parse_ipv4::<L2>(ctx, &mut pkt)?,
        ETH_P_IPV6 => parse_ipv6::<L2>(ctx, &mut pkt)?,
        _ => return Err(counter::NON_IP),
    };
    parse_l4(ctx, l4, &mut pkt)?;
    Ok(pkt)
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    ver_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    src: u32,
    dst: u32,
}

#[inline(always)]
fn parse_ipv4<const L2: usize>(ctx: &TcContext, pkt: &mut Packet) -> Result<usize, Skip> {
    let ip: Ipv4Hdr = read(ctx, L2)?;
    let ihl = ((ip.ver_ihl & 0x0f) as usize) * 4;
    if ip.ver_ihl >> 4 != 4 || ihl < 20 || (u16::from_be(ip.tot_len) as usize) < ihl {
        return Err(counter::MALFORMED);
    }
    // A fragment offset other than zero means no transport header in this packet.
    if u16::from_be(ip.frag_off) & 0x1fff != 0 {
        return Err(counter::FRAGMENTS);
    }
    pkt.family = family::IPV4;
    pkt.proto = ip.proto;
    pkt.src[0] = ip.src;
    pkt.dst[0] = ip.dst;
    Ok(L2 + ihl)
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Hdr {
    ver_tc_flow: u32,
    payload_len: u16,
    next_hdr: u8,
    hop_limit: u8,
    src: [u32; 4],
    dst: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6ExtHdr {
    next_hdr: u8,
    len: u8,
    /// For a fragment header: fragment offset and flags.
    frag_off: u16,
}

#[inline(always)]
fn parse_ipv6<const L2: usize>(ctx: &TcContext, pkt: &mut Packet) -> Result<usize, Skip> {
    let ip: Ipv6Hdr = read(ctx, L2)?;
    if u32::from_be(ip.ver_tc_flow) >> 28 != 6 {
        return Err(counter::MALFORMED);
    }
    pkt.family = family::IPV6;
    pkt.src = ip.src;
    pkt.dst = ip.dst;
    let mut next = ip.next_hdr;
    let mut off = L2 + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units, not counting
            // the first 8.
            0 | 43 | 60 => {
                let ext: Ipv6ExtHdr = read(ctx, off)?;
                next = ext.next_hdr;
                off += (ext.len as usize + 1) * 8;
            }
            // Fragment header: fixed 8 octets; only the first fragment has a transport header.
            44 => {
                let ext: Ipv6ExtHdr = read(ctx, off)?;
                if u16::from_be(ext.frag_off) & 0xfff8 != 0 {
                    return Err(counter::FRAGMENTS);
                }
                next = ext.next_hdr;
                off += 8;
            }
            // Authentication header: length in 4-octet units, minus 2.
            51 => {
                let ext: Ipv6ExtHdr = read(ctx, off)?;
                next = ext.next_hdr;
                off += (ext.len as usize + 2) * 4;
            }
            _ => {
                pkt.proto = next;
                return Ok(off);
            }
        }
    }
    Err(counter::MALFORMED)
}

#[repr(C)]
#[derive(Clone, Copy)]
struct L4Hdr {
    src_port: u16,
    dst_port: u16,
    /// TCP: sequence number; SCTP: verification tag; UDP: length and checksum.
    word1: u32,
    /// TCP: acknowledgement number; SCTP: checksum.
    word2: u32,
    /// TCP: data offset; SCTP: first chunk type.
    byte12: u8,
    /// TCP: flags.
    byte13: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IcmpHdr {
    ty: u8,
    code: u8,
    check: u16,
    id: u16,
    seq: u16,
}

#[inline(always)]
fn parse_l4(ctx: &TcContext, off: usize, pkt: &mut Packet) -> Result<(), Skip> {
    match pkt.proto {
        proto::TCP => {
            let h: L4Hdr = read(ctx, off)?;
            if (h.byte12 >> 4) < 5 {
                return Err(counter::MALFORMED);
            }
            pkt.src_port = u16::from_be(h.src_port);
            pkt.dst_port = u16::from_be(h.dst_port);
            pkt.tcp_flags = h.byte13;
            pkt.payload_off = off + (h.byte12 >> 4) as usize * 4;
            if h.byte13 & (TCP_SYN | TCP_ACK) == TCP_SYN {
                pkt.starts = Some(origin::TCP_SYN);
            }
        }
        proto::UDP => {
            let h: [u16; 4] = read(ctx, off)?;
            if (u16::from_be(h[2]) as usize) < 8 {
                return Err(counter::MALFORMED);
            }
            pkt.payload_off = off + 8;
            pkt.udp_payload_len = u16::from_be(h[2]) as usize - 8;
            pkt.src_port = u16::from_be(h[0]);
            pkt.dst_port = u16::from_be(h[1]);
            pkt.starts = Some(origin::FIRST_SEEN);
        }
        proto::SCTP => {
            // Common header (12 octets) and at least one chunk header (4 octets).
            let h: L4Hdr = read(ctx, off)?;
            pkt.src_port = u16::from_be(h.src_port);
            pkt.dst_port = u16::from_be(h.dst_port);
            pkt.icmp_type = h.byte12;
            pkt.starts = Some(if h.byte12 == 1 {
                origin::SCTP_INIT
            } else {
                origin::FIRST_SEEN
            });
        }
        proto::ICMP | proto::ICMPV6 => {
            let h: IcmpHdr = read(ctx, off)?;
            pkt.icmp_type = h.ty;
            pkt.icmp_code = h.code;
            let (request, reply) = if pkt.proto == proto::ICMP {
                (8, 0)
            } else {
                (128, 129)
            };
            if h.ty == request || h.ty == reply {
                // Echo: the identifier ties request and reply together; it stands in both ports.
                let id = u16::from_be(h.id);
                pkt.src_port = id;
                pkt.dst_port = id;
                pkt.starts = Some(if h.ty == request {
                    origin::ICMP_ECHO
                } else {
                    origin::FIRST_SEEN
                });
            } else if is_icmp_informational(pkt.proto, h.ty) {
                pkt.starts = Some(origin::FIRST_SEEN);
            } else if is_refusal(pkt.proto, h.ty, h.code) {
                bump(counter::ICMP_CONTROL);
                parse_quoted(ctx, off + 8, pkt)?;
                pkt.refuses = true;
            } else {
                return Err(counter::ICMP_CONTROL);
            }
        }
        _ => return Err(counter::OTHER_PROTOCOL),
    }
    Ok(())
}

/// ICMP messages that are exchanges of their own (timestamp, for instance), as opposed to errors
/// about another flow or neighbour-discovery chatter, which are not connections.
#[inline(always)]
fn is_icmp_informational(p: u8, ty: u8) -> bool {
    if p == proto::ICMP {
        matches!(ty, 13 | 15 | 17)
    } else {
        false
    }
}

/// Destination unreachable for a network, host, protocol or port, or administratively
/// prohibited: the answer of a host or firewall that refuses the quoted packet's flow.
#[inline(always)]
fn is_refusal(p: u8, ty: u8, code: u8) -> bool {
    if p == proto::ICMP {
        ty == 3 && matches!(code, 0 | 1 | 2 | 3 | 9 | 10 | 13)
    } else {
        ty == 1 && matches!(code, 1 | 3 | 4)
    }
}

/// The packet an ICMP error quotes (its IP header and the first 8 octets of its payload), at
/// `off`: its addresses and ports replace the error's own in `pkt`.
#[inline(always)]
fn parse_quoted(ctx: &TcContext, off: usize, pkt: &mut Packet) -> Result<(), Skip> {
    let l4 = if pkt.family == family::IPV4 {
        let ip: Ipv4Hdr = read(ctx, off)?;
        let ihl = ((ip.ver_ihl & 0x0f) as usize) * 4;
        if ip.ver_ihl >> 4 != 4 || ihl < 20 {
            return Err(counter::MALFORMED);
        }
        pkt.proto = ip.proto;
        pkt.src = [ip.src, 0, 0, 0];
        pkt.dst = [ip.dst, 0, 0, 0];
        off + ihl
    } else {
        let ip: Ipv6Hdr = read(ctx, off)?;
        if u32::from_be(ip.ver_tc_flow) >> 28 != 6 {
            return Err(counter::MALFORMED);
        }
        pkt.proto = ip.next_hdr;
        pkt.src = ip.src;
        pkt.dst = ip.dst;
        off + 40
    };
    match pkt.proto {
        proto::TCP | proto::UDP | proto::SCTP => {
            let ports: [u16; 2] = read(ctx, l4)?;
            pkt.src_port = u16::from_be(ports[0]);
            pkt.dst_port = u16::from_be(ports[1]);
        }
        proto::ICMP | proto::ICMPV6 => {
            let h: IcmpHdr = read(ctx, l4)?;
            let id = u16::from_be(h.id);
            pkt.src_port = id;
            pkt.dst_port = id;
        }
        _ => return Err(counter::OTHER_PROTOCOL),
    }
    Ok(())
}

/// What a packet from the responder says of a pending connection: `ANSWERED`, `REFUSED`, or
/// `PENDING` for nothing yet.
#[inline(always)]
fn responder_outcome(pkt: &Packet) -> u8 {
    match pkt.proto {
        proto::TCP if pkt.tcp_flags & TCP_RST != 0 => outcome::REFUSED,
        // SCTP: an ABORT chunk refuses; anything else (INIT-ACK first) answers.
        proto::SCTP if pkt.icmp_type == 6 => outcome::REFUSED,
        _ => outcome::ANSWERED,
    }
}

/// Counts a SYN-flagged packet for its interface and direction (approximate: not atomic).
#[inline(always)]
fn count_syn(ctx: &TcContext, dir: u8) {
    // SAFETY: the context's skb pointer is valid for the whole program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if let Some(seen) = SYN_SEEN.get_ptr_mut(ifindex % SYN_SEEN_SLOTS) {
        // SAFETY: the pointer came from the map and stays valid during this run.
        unsafe { (*seen)[(dir & 1) as usize] += 1 };
    }
}

#[inline(always)]
fn track(ctx: &TcContext, pkt: &Packet, dir: u8) {
    let tcp = pkt.proto == proto::TCP;
    // The fast path: a TCP packet without SYN, FIN or RST changes nothing the programs keep,
    // unless counters are on or a lost start waits for its connection's next packet.
    if tcp && pkt.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 && !flow_stats() && !start_lost() {
        return;
    }
    if tcp && pkt.tcp_flags & TCP_SYN != 0 {
        count_syn(ctx, dir);
    }
    let (key, a_is_src) = flow_key(
        &pkt.src,
        pkt.src_port,
        &pkt.dst,
        pkt.dst_port,
        pkt.proto,
        pkt.family,
    );
    // SAFETY: the global is written only by the loader, before the program runs.
    let idle = unsafe { core::ptr::read_volatile(&IDLE_TIMEOUT_NS) };
    // The flow cache, for the common packet of other protocols than TCP: its slot and the
    // time, read only when it is in play.
    let cache = (!tcp && !pkt.refuses && cache_on()).then(|| {
        // SAFETY: the helper has no preconditions.
        (cache_index(&key), unsafe { bpf_jiffies64() })
    });
    if let Some((slot, jiffies)) = cache
        && cache_hit(slot, &key, a_is_src, jiffies)
    {
        return;
    }
    // The coarse clock (a tick, a few ms) is plenty for idle timeouts and event times, and
    // costs a fraction of the precise one.
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let len = ctx.len() as u64;

    if pkt.refuses {
        // The quoted packet came from the flow's initiator; the error answers it.
        if let Some(stats) = FLOWS.get_ptr_mut(key) {
            // SAFETY: the pointer came from the map and stays valid during this run.
            let stats = unsafe { &mut *stats };
            if stats.outcome == outcome::PENDING && (stats.initiator_is_a != 0) == a_is_src {
                settle(ctx, &key, stats, dir, outcome::REFUSED, now);
            }
        }
        return;
    }

    // A SYN is almost always a new connection: insert first, and look up only when the
    // 5-tuple is known (a retransmitted SYN, or a port used again).
    let syn = pkt.starts == Some(origin::TCP_SYN);
    if syn {
        let stats = new_stats(now, len, a_is_src, origin::TCP_SYN);
        if FLOWS.insert(key, stats, BPF_NOEXIST).is_ok() {
            start(ctx, pkt, &key, dir, origin::TCP_SYN, true, now);
            return;
        }
    }

    if let Some(stats) = FLOWS.get_ptr_mut(key) {
        // SAFETY: the pointer came from the map and stays valid during this run.
        let stats = unsafe { &mut *stats };
        let restart = match pkt.starts {
            Some(origin::TCP_SYN) => {
                stats.closing != 0 || now.saturating_sub(stats.last_seen_ns) >= idle
            }
            Some(_) if !tcp => now.saturating_sub(stats.last_seen_ns) >= idle,
            _ => false,
        };
        if !restart {
            if flow_stats() {
                // Not atomic: the BPF target has no fetch-add in core. Two CPUs updating one
                // connection at the same instant may lose an increment; the counts are
                // evidence, not accounting, and connection starts never depend on them.
                stats.packets = stats.packets.wrapping_add(1);
                stats.bytes = stats.bytes.wrapping_add(len);
            }
            // Written only when it changes (once a tick at most), to keep the entry's cache
            // line clean on most packets.
            if stats.last_seen_ns != now {
                stats.last_seen_ns = now;
            }
            if pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
                stats.closing = 1;
            }
            let from_initiator = (stats.initiator_is_a != 0) == a_is_src;
            if stats.outcome == outcome::PENDING && !from_initiator {
                settle(ctx, &key, stats, dir, responder_outcome(pkt), now);
            } else if stats.unreported != 0 {
                // The start was lost to a full ring buffer: this packet reports it, with the
                // outcome known so far, in the initiator's direction.
                let start_dir = if from_initiator { dir } else { dir ^ 1 };
                if report(
                    ctx,
                    &key,
                    stats,
                    start_dir,
                    event_kind::START,
                    stats.outcome,
                    now,
                ) {
                    stats.unreported = 0;
                }
            }
            if let Some((slot, jiffies)) = cache {
                // Reported, and settled or waiting for the responder: the next packets that
                // cannot change the entry need nothing from `FLOWS` for a while.
                let initiator = if stats.initiator_is_a != 0 { 1 } else { 2 };
                let senders = match (stats.unreported, stats.outcome) {
                    (0, outcome::PENDING) => initiator,
                    (0, _) => 3,
                    _ => 0,
                };
                cache_set(slot, &key, jiffies, senders);
            }
            return;
        }
        let Some(how) = pkt.starts else { return };
        *stats = new_stats(now, len, a_is_src, how);
        if !emit(ctx, pkt, dir, how, true, now) {
            stats.unreported = 1;
            mark_start_lost();
        }
        return;
    }

    let Some(how) = pkt.starts else {
        if tcp {
            bump(counter::TCP_MIDSTREAM);
        }
        return;
    };
    if syn {
        // The insert above failed and the entry is gone again: evicted in between.
        return;
    }
    // A reply seen first names its destination as the initiator.
    let reply_first = how == origin::FIRST_SEEN && pkt.icmp_is_echo_reply();
    let initiator_is_a = a_is_src != reply_first;
    let mut stats = new_stats(now, len, initiator_is_a, how);
    if reply_first {
        // The reply is its own answer.
        stats.outcome = outcome::ANSWERED;
    }
    // NOEXIST: when the same packet races on two CPUs (or the two veths of one bridge), only the
    // first insert reports the connection.
    if FLOWS.insert(key, stats, BPF_NOEXIST).is_ok() {
        start(ctx, pkt, &key, dir, how, !reply_first, now);
    }
}

/// The table key of a packet from `src` to `dst`, and whether `src` is the key's endpoint `a`.
#[inline(always)]
fn flow_key(
    src: &[u32; 4],
    src_port: u16,
    dst: &[u32; 4],
    dst_port: u16,
    proto: u8,
    family: u8,
) -> (FlowKey, bool) {
    let a_is_src = endpoint_le(src, src_port, dst, dst_port);
    let ((addr_a, port_a), (addr_b, port_b)) = if a_is_src {
        ((*src, src_port), (*dst, dst_port))
    } else {
        ((*dst, dst_port), (*src, src_port))
    };
    let key = FlowKey {
        addr_a,
        addr_b,
        port_a,
        port_b,
        proto,
        family,
        _pad: [0; 2],
    };
    (key, a_is_src)
}

/// Whether the flow cache is in use: not with `--flow-stats` (every packet counts), nor with
/// idle timeouts under [`CACHE_MIN_IDLE_NS`].
#[inline(always)]
fn cache_on() -> bool {
    // SAFETY: the global is written only by the loader, before the program runs.
    let idle = unsafe { core::ptr::read_volatile(&IDLE_TIMEOUT_NS) };
    idle >= CACHE_MIN_IDLE_NS && !flow_stats()
}

/// Whether slot `slot` of the flow cache holds `key`, fresh, for the packets its endpoint `a`
/// sends (`a_is_src`) or those of `b`.
#[inline(always)]
fn cache_hit(slot: u32, key: &FlowKey, a_is_src: bool, jiffies: u64) -> bool {
    let Some(s) = FLOW_CACHE.get_ptr(slot) else {
        return false;
    };
    // SAFETY: the pointer came from the map and stays valid during this run.
    let s = unsafe { &*s };
    let sender = if a_is_src { 1 } else { 2 };
    jiffies.wrapping_sub(s.refreshed) < CACHE_FRESH_JIFFIES
        && s.senders & sender != 0
        && same_key(&s.key, key)
}

/// A key's five 64-bit words.
#[inline(always)]
fn words(key: &FlowKey) -> [u64; 5] {
    // SAFETY: FlowKey is 40 bytes of integers, with explicit padding: five u64 words.
    unsafe { core::mem::transmute_copy(key) }
}

#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    let (a, b) = (words(a), words(b));
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) == 0
}

/// The flow cache slot of `key`: a multiplicative hash of its words.
#[inline(always)]
fn cache_index(key: &FlowKey) -> u32 {
    let w = words(key);
    let h = (w[0] ^ w[1].rotate_left(13) ^ w[2].rotate_left(29) ^ w[3].rotate_left(43) ^ w[4])
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 32) as u32 & (CACHE_SLOTS - 1)
}

/// Caches `key` as refreshed at `jiffies` for the packets of `senders`; no senders takes the
/// slot's connection out of the cache.
/// Stores are not atomic: two CPUs filling one slot at once may leave a key that matches
/// nothing, and a fill racing with a removal may keep a connection that just restarted
/// cached: its packets then skip `FLOWS` for at most [`CACHE_FRESH_JIFFIES`].
#[inline(always)]
fn cache_set(slot: u32, key: &FlowKey, jiffies: u64, senders: u64) {
    if let Some(s) = FLOW_CACHE.get_ptr_mut(slot) {
        // SAFETY: the pointer came from the map and stays valid during this run.
        unsafe {
            if senders == 0 {
                if same_key(&(*s).key, key) {
                    (*s).senders = 0;
                }
            } else {
                (*s).key = *key;
                (*s).refreshed = jiffies;
                (*s).senders = senders;
            }
        }
    }
}

/// Reports the start of the connection just inserted under `key`. When the ring buffer is
/// full, marks its entry, so that its next packet reports it.
#[inline(always)]
fn start(
    ctx: &TcContext,
    pkt: &Packet,
    key: &FlowKey,
    dir: u8,
    how: u8,
    sender_initiated: bool,
    now: u64,
) {
    if !emit(ctx, pkt, dir, how, sender_initiated, now) {
        if let Some(stats) = FLOWS.get_ptr_mut(key) {
            // SAFETY: the pointer came from the map and stays valid during this run.
            unsafe { (*stats).unreported = 1 };
        }
        mark_start_lost();
    }
}

/// Records and reports the outcome of a pending connection, from a packet of the responder
/// (direction `dir`). If the report cannot be written, the entry stays pending, so that the
/// responder's next packet tries again. A start that was never reported goes out now, carrying
/// its outcome; if that fails too, the outcome is kept and a later packet reports both.
#[inline(always)]
fn settle(ctx: &TcContext, key: &FlowKey, stats: &mut FlowStats, dir: u8, how: u8, now: u64) {
    if stats.unreported != 0 {
        stats.outcome = how;
        if report(ctx, key, stats, dir ^ 1, event_kind::START, how, now) {
            stats.unreported = 0;
        }
    } else if report(ctx, key, stats, dir, event_kind::OUTCOME, how, now) {
        stats.outcome = how;
    }
}

/// Writes an event about the connection of `key`, oriented from its initiator. True when it
/// was written.
#[inline(always)]
fn report(
    ctx: &TcContext,
    key: &FlowKey,
    stats: &FlowStats,
    dir: u8,
    kind: u8,
    how: u8,
    now: u64,
) -> bool {
    let (src, dst, src_port, dst_port) = if stats.initiator_is_a != 0 {
        (key.addr_a, key.addr_b, key.port_a, key.port_b)
    } else {
        (key.addr_b, key.addr_a, key.port_b, key.port_a)
    };
    let ev = FlowEvent {
        src,
        dst,
        // A late start keeps the time its first packet was seen.
        timestamp_ns: if kind == event_kind::START {
            stats.first_seen_ns
        } else {
            now
        },
        // SAFETY: the context's skb pointer is valid for the whole program run.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        src_port,
        dst_port,
        proto: key.proto,
        family: key.family,
        direction: dir,
        origin: stats.origin,
        icmp_type: 0,
        icmp_code: 0,
        kind,
        outcome: how,
    };
    output(&ev)
}

#[inline(always)]
fn output(ev: &FlowEvent) -> bool {
    if EVENTS.output::<FlowEvent>(ev, 0).is_ok() {
        bump(counter::EVENTS);
        true
    } else {
        bump(counter::EVENTS_DROPPED);
        false
    }
}

impl Packet {
    #[inline(always)]
    fn icmp_is_echo_reply(&self) -> bool {
        (self.proto == proto::ICMP && self.icmp_type == 0)
            || (self.proto == proto::ICMPV6 && self.icmp_type == 129)
    }
}

#[inline(always)]
fn new_stats(now: u64, len: u64, initiator_is_a: bool, how: u8) -> FlowStats {
    let counted = flow_stats();
    FlowStats {
        first_seen_ns: now,
        last_seen_ns: now,
        packets: counted as u64,
        bytes: if counted { len } else { 0 },
        initiator_is_a: initiator_is_a as u8,
        origin: how,
        closing: 0,
        outcome: outcome::PENDING,
        unreported: 0,
        _pad: [0; 3],
    }
}

/// Reports a connection start; true when the event was written.
#[inline(always)]
fn emit(ctx: &TcContext, pkt: &Packet, dir: u8, how: u8, sender_initiated: bool, now: u64) -> bool {
    let (src, dst, src_port, dst_port) = if sender_initiated {
        (pkt.src, pkt.dst, pkt.src_port, pkt.dst_port)
    } else {
        (pkt.dst, pkt.src, pkt.dst_port, pkt.src_port)
    };
    let ev = FlowEvent {
        src,
        dst,
        timestamp_ns: now,
        // SAFETY: the context's skb pointer is valid for the whole program run.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        src_port,
        dst_port,
        proto: pkt.proto,
        family: pkt.family,
        direction: dir,
        origin: how,
        icmp_type: pkt.icmp_type,
        icmp_code: pkt.icmp_code,
        kind: event_kind::START,
        outcome: if sender_initiated {
            outcome::PENDING
        } else {
            outcome::ANSWERED
        },
    };
    output(&ev)
}

/// Orders two endpoints so that both directions of a connection give the same key.
#[inline(always)]
fn endpoint_le(a: &[u32; 4], pa: u16, b: &[u32; 4], pb: u16) -> bool {
    for i in 0..4 {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    pa <= pb
}

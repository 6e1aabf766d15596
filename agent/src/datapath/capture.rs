//! Capture: the datapath, its ring buffer and interface discovery wired together, yielding flow
//! records. Shared by `trustmap observe` and `trustmap agent`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

use super::{ClockOffset, Config, Counters, Datapath, Report, dns_report, drain, event_to_report};
use crate::{
    dns::{DnsError, NameMap},
    flow::{Endpoint, FlowRecord, Outcome, Protocol},
    netif::{InterfaceFilter, Link, LinkChange, LinkWatcher},
    preexisting,
};

/// A running capture. Dropping it detaches everything.
pub struct Capture {
    dp: Datapath,
    ring: AsyncFd<RingBuf<MapData>>,
    watcher: LinkWatcher,
    filter: InterfaceFilter,
    /// Names of every interface attached since the start, also after it went away, so that
    /// late events still name it.
    names: HashMap<u32, String>,
    clock: ClockOffset,
    /// Connection starts waiting for their outcome, and since when.
    pending: HashMap<FlowId, (FlowRecord, Instant)>,
    /// The same starts in the order they arrived, which is the order they time out in (one
    /// timeout for all): expiry looks at the front only. An entry whose start was settled or
    /// replaced since is skipped when it comes up.
    deadlines: VecDeque<(Instant, FlowId)>,
    answer_timeout: Duration,
    /// Interfaces already warned about as seen one way.
    one_way_warned: HashSet<u32>,
    dns_ring: AsyncFd<RingBuf<MapData>>,
    /// What each pod resolved, to name the destinations of its connections.
    resolved: NameMap,
    dns: DnsCounters,
    last_prune: Instant,
    /// When to look next whether lost connection starts still wait in the flow map.
    next_rearm: Instant,
}

/// How often the capture looks whether lost connection starts still wait (see
/// [`Datapath::rearm_lost_starts`]).
const REARM_EVERY: Duration = Duration::from_secs(1);

/// What became of the DNS responses read from the ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsCounters {
    /// Read, with at least the question.
    pub parsed: u64,
    /// Of those, cut short before their last answer record (the copy is bounded).
    pub truncated: u64,
    /// Not a DNS message the parser accepts: cut in the header or question, a compression
    /// pointer that loops or points forward, a bad label, a length that lies.
    pub malformed: u64,
    /// DNS messages that are not responses to a standard query.
    pub not_response: u64,
    /// Names remembered now, over all pods, and names dropped because a pod had too many.
    pub names: u64,
    pub names_evicted: u64,
}

/// How often remembered names are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// A connection, oriented from its initiator: protocol, source, destination.
type FlowId = (
    Protocol,
    Option<IpAddr>,
    Option<u16>,
    Option<IpAddr>,
    Option<u16>,
);

fn flow_id(r: &FlowRecord) -> FlowId {
    let ip = |e: &Endpoint| match e {
        Endpoint::Ip(ip) => Some(*ip),
        _ => None,
    };
    (r.protocol, ip(&r.src), r.src_port, ip(&r.dst), r.port)
}

/// What a start that got no answer in time is: one-way for UDP, unanswered otherwise.
fn timed_out(r: &FlowRecord) -> Outcome {
    if r.protocol == Protocol::Udp {
        Outcome::OneWay
    } else {
        Outcome::Unanswered
    }
}

/// A TCP connection as (initiator, server) socket addresses.
type TcpKey = (SocketAddr, SocketAddr);

fn tcp_key(r: &FlowRecord) -> Option<TcpKey> {
    match (r.protocol, &r.src, r.src_port, &r.dst, r.port) {
        (Protocol::Tcp, Endpoint::Ip(s), Some(sp), Endpoint::Ip(d), Some(dp)) => {
            Some((SocketAddr::new(*s, sp), SocketAddr::new(*d, dp)))
        }
        _ => None,
    }
}

impl Capture {
    /// Loads the programs and attaches them to every matching interface. Needs a tokio
    /// runtime.
    pub async fn start(filter: InterfaceFilter, config: &Config) -> anyhow::Result<Self> {
        let (dp, ring, dns_ring) = Datapath::load(config)?;
        let clock = ClockOffset::now();
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long as
        // the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| e.into_parts().1)
            .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
        // SAFETY: as above.
        let dns_ring = unsafe { AsyncFd::register(dns_ring) }
            .map_err(|e| e.into_parts().1)
            .map_err(|e| anyhow::anyhow!("watching the DNS ring buffer: {e}"))?;
        let (watcher, links) = LinkWatcher::start().await?;
        let mut capture = Self {
            dp,
            ring,
            watcher,
            filter,
            names: HashMap::new(),
            clock,
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            answer_timeout: config.answer_timeout,
            one_way_warned: HashSet::new(),
            dns_ring,
            resolved: NameMap::default(),
            dns: DnsCounters::default(),
            last_prune: Instant::now(),
            next_rearm: Instant::now() + REARM_EVERY,
        };
        for link in links {
            if capture.filter.matches(&link) {
                capture.attach(&link, true)?;
            }
        }
        Ok(capture)
    }

    /// Attaches to one interface. A failure of that interface alone is logged and the others go
    /// on; a refusal for lack of privilege would refuse every interface, so it is returned, and
    /// ends the capture rather than leave it silently partial.
    fn attach(&mut self, link: &Link, existed_before_start: bool) -> Result<(), super::Error> {
        let name = link.name.as_str();
        match self
            .dp
            .attach(link.index, name, existed_before_start, link.l3)
        {
            Ok(()) => {
                self.names.insert(link.index, name.to_owned());
                Ok(())
            }
            Err(err) if err.is_refusal() => Err(err),
            Err(err) => {
                warn!(interface = name, error = %anyhow::Error::from(err), "not attached");
                Ok(())
            }
        }
    }

    /// Reads the DNS responses waiting, into the names each pod resolved.
    fn drain_dns(&mut self) {
        let clock = self.clock;
        let mut reports = Vec::new();
        drain(self.dns_ring.get_mut(), |ev: agent_ebpf::DnsEvent| {
            reports.extend(dns_report(&ev, clock))
        });
        for r in reports {
            match r.answers {
                Ok(a) => {
                    self.dns.parsed += 1;
                    self.dns.truncated += u64::from(a.truncated);
                    self.resolved.record(r.client, &a.resolutions, r.at);
                }
                Err(DnsError::NotAResponse) => self.dns.not_response += 1,
                Err(DnsError::Malformed(_)) => self.dns.malformed += 1,
            }
        }
        if self.last_prune.elapsed() >= PRUNE_EVERY {
            self.last_prune = Instant::now();
            self.resolved.prune(chrono::Utc::now());
        }
    }

    /// Names a record's destination by what its source resolved to that address before the
    /// connection started.
    fn name_destination(&self, r: &mut FlowRecord) {
        if let (Endpoint::Ip(src), Endpoint::Ip(dst)) = (&r.src, &r.dst) {
            let at = r.first_seen.unwrap_or_else(chrono::Utc::now);
            r.dst_names = self.resolved.names(*src, *dst, at);
        }
    }

    /// What became of the DNS responses read so far.
    pub fn dns_counters(&self) -> DnsCounters {
        DnsCounters {
            names: self.resolved.len() as u64,
            names_evicted: self.resolved.evicted,
            ..self.dns
        }
    }

    /// The records whose outcome is known: answered or refused now, or past the answer
    /// timeout. Starts without an outcome wait in `pending`. Names their destinations.
    fn drain(&mut self) -> Vec<FlowRecord> {
        // Answers come before the connections they name.
        self.drain_dns();
        let mut out = self.drain_settled();
        for r in &mut out {
            self.name_destination(r);
        }
        out
    }

    fn drain_settled(&mut self) -> Vec<FlowRecord> {
        let mut out = Vec::new();
        let (names, clock) = (&self.names, self.clock);
        let mut reports = Vec::new();
        drain(self.ring.get_mut(), |ev: agent_ebpf::FlowEvent| {
            let name = names.get(&ev.ifindex).map(String::as_str);
            if let Some(r) = event_to_report(&ev, name, clock) {
                reports.push(r);
            }
        });
        let now = Instant::now();
        for r in reports {
            match r {
                Report::Start(rec) if rec.outcome.is_some() => out.push(rec),
                Report::Start(rec) => {
                    let id = flow_id(&rec);
                    self.deadlines.push_back((now, id));
                    // A new start of the same 5-tuple settles the old one as timed out.
                    if let Some((mut old, _)) = self.pending.insert(id, (rec, now)) {
                        old.outcome = Some(timed_out(&old));
                        out.push(old);
                    }
                }
                Report::Outcome(rec) => match self.pending.remove(&flow_id(&rec)) {
                    Some((mut start, _)) => {
                        start.outcome = rec.outcome;
                        out.push(start);
                    }
                    // Its start was lost or already timed out: the outcome event stands in.
                    None => out.push(rec),
                },
            }
        }
        out.extend(self.expire(now, false));
        out
    }

    /// Starts past the answer timeout (all of them when `all`, as pending), settled. Costs
    /// the number of starts settled, not the number waiting.
    fn expire(&mut self, now: Instant, all: bool) -> Vec<FlowRecord> {
        let timeout = self.answer_timeout;
        let mut out = Vec::new();
        while let Some(&(since, id)) = self.deadlines.front() {
            if !all && now.duration_since(since) < timeout {
                break;
            }
            self.deadlines.pop_front();
            // Stale: settled meanwhile, or replaced by a newer start with its own entry.
            if self.pending.get(&id).is_none_or(|(_, s)| *s != since) {
                continue;
            }
            if let Some((mut r, _)) = self.pending.remove(&id) {
                r.outcome = Some(if now.duration_since(since) >= timeout {
                    timed_out(&r)
                } else {
                    Outcome::Pending
                });
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.first_seen);
        out
    }

    /// When the oldest pending start times out, if any.
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&(since, id)) = self.deadlines.front() {
            if self.pending.get(&id).is_some_and(|(_, s)| *s == since) {
                return Some(since + self.answer_timeout);
            }
            self.deadlines.pop_front();
        }
        None
    }

    /// Connections established before the programs were attached, read from the watched pods'
    /// socket tables, preceded by the events that arrived meanwhile. A connection that started
    /// between attaching and scanning shows both as an event and in a socket table: the event
    /// wins, so it is reported once.
    pub fn pre_existing(&mut self) -> anyhow::Result<Vec<FlowRecord>> {
        let attached: HashSet<u32> = self.names.keys().copied().collect();
        let tables = preexisting::scan_pod_namespaces(&attached)?;
        let mut out = self.drain();
        let seen: HashSet<TcpKey> = out
            .iter()
            .chain(self.pending.values().map(|(r, _)| r))
            .filter_map(tcp_key)
            .collect();
        out.extend(
            preexisting::records(&tables, chrono::Utc::now())
                .into_iter()
                .filter(|r| tcp_key(r).is_none_or(|k| !seen.contains(&k)))
                .map(|mut r| {
                    // Established: answered long ago.
                    r.outcome = Some(Outcome::Answered);
                    r
                }),
        );
        info!(
            namespaces = tables.len(),
            "scanned for pre-existing connections"
        );
        Ok(out)
    }

    /// Waits for connection starts, attaching to and detaching from interfaces as they come
    /// and go meanwhile. Cancel-safe: nothing is lost when the future is dropped.
    pub async fn next_batch(&mut self) -> anyhow::Result<Vec<FlowRecord>> {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let mut records = self.expire(Instant::now(), false);
                    for r in &mut records {
                        self.name_destination(r);
                    }
                    if !records.is_empty() {
                        return Ok(records);
                    }
                }
                _ = tokio::time::sleep_until(self.next_rearm.into()) => {
                    self.next_rearm = Instant::now() + REARM_EVERY;
                    match self.dp.rearm_lost_starts() {
                        Ok(0) => {}
                        Ok(waiting) => debug!(waiting, "lost connection starts wait for their next packet"),
                        Err(err) => warn!(error = %err, "reading the flow map for lost starts"),
                    }
                }
                guard = self.dns_ring.readable_mut() => {
                    let mut guard = guard?;
                    guard.clear_ready();
                    drop(guard);
                    self.drain_dns();
                }
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    guard.clear_ready();
                    drop(guard);
                    let records = self.drain();
                    if !records.is_empty() {
                        return Ok(records);
                    }
                }
                change = self.watcher.next() => match change {
                    Some(LinkChange::Present(link))
                        if self.dp.interface_name(link.index).is_some() =>
                    {
                        // Already attached: only a rename to a name we do not watch detaches.
                        // Other changes (up, down, a bridge port's state) keep it attached.
                        if !self.filter.name_matches(&link.name) {
                            self.dp.detach(link.index);
                        }
                    }
                    Some(LinkChange::Present(link)) if self.filter.matches(&link) => {
                        self.attach(&link, false)?;
                    }
                    Some(LinkChange::Present(_)) => {}
                    Some(LinkChange::Gone { index }) => self.dp.detach(index),
                    None => anyhow::bail!("the rtnetlink socket closed"),
                },
            }
        }
    }

    /// Attached interfaces where capture sees packets in one direction only, by their TCP
    /// SYN and SYN-ACK packets: many one way and none the other. Healthy capture sees both on
    /// the pod's veth (the SYN out, the SYN-ACK back, or the reverse for inbound connections);
    /// only a pod all of whose connections go unanswered looks the same. Warns once per
    /// interface when it turns one-way.
    pub fn one_direction_interfaces(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (ifindex, name) in self.dp.attached_interfaces() {
            let seen = self.dp.syn_directions(ifindex).unwrap_or_default();
            if !one_way(seen) {
                self.one_way_warned.remove(&ifindex);
                continue;
            }
            if self.one_way_warned.insert(ifindex) {
                let [from_pod, to_pod] = seen;
                warn!(
                    interface = name,
                    from_pod,
                    to_pod,
                    "capture sees TCP handshakes in one direction only: the CNI probably moves \
                     the other direction past this device's hook (Cilium with BPF host routing, \
                     netkit with BPF redirects), so answers and inbound connections here go \
                     unseen (docs/capture.md)"
                );
            }
            out.push(name);
        }
        out.sort();
        out
    }

    pub fn attached_count(&self) -> usize {
        self.dp.attached_count()
    }

    pub fn counters(&self) -> Counters {
        self.dp.counters()
    }

    /// Detaches everything, then returns what the kernel had already written.
    /// Starts still waiting for an answer are reported as `pending` (or as timed out when
    /// their time is up).
    pub fn stop(&mut self) -> Vec<FlowRecord> {
        self.dp.detach_all();
        let mut out = self.drain();
        let mut rest = self.expire(Instant::now(), true);
        for r in &mut rest {
            self.name_destination(r);
        }
        out.extend(rest);
        out
    }
}

/// SYN-flagged packets seen one way, none the other, after which capture of an interface is
/// reported as one-way.
const ONE_DIRECTION_AFTER: u64 = 16;

/// Whether SYN-flagged packet counts `[from the pod, to the pod]` look one-way.
fn one_way([from_pod, to_pod]: [u64; 2]) -> bool {
    from_pod.max(to_pod) >= ONE_DIRECTION_AFTER && from_pod.min(to_pod) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_is_one_way_after_many_handshakes_with_nothing_back() {
        assert!(!one_way([ONE_DIRECTION_AFTER - 1, 0]));
        assert!(one_way([ONE_DIRECTION_AFTER, 0]));
        assert!(one_way([0, ONE_DIRECTION_AFTER]));
        assert!(!one_way([ONE_DIRECTION_AFTER * 10, 1]));
        assert!(!one_way([0, 0]));
    }
}

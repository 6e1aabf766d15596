//! Loads the TC programs, attaches them to host-side veths and drains connection starts (IO).
//!
//! Attachment prefers TCX (Linux 6.6+), where our programs go first and hand every packet on to
//! the next, so those of a CNI on the same hook keep running; it falls back to a `clsact` qdisc
//! and a direct-action filter of priority 1 on older kernels.
//! TCX links belong to this process's file descriptors, so even a SIGKILL leaves nothing behind;
//! clsact filters outlive the process, so every attach first removes filters of ours left by a
//! killed predecessor (recognised by program name).

mod capture;
mod event;

use std::{collections::BTreeMap, io};

use agent_ebpf::{FlowKey, FlowStats, SYN_SEEN_SLOTS, counter, names};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
    },
};
pub use capture::{Capture, DnsCounters};
pub use event::{ClockOffset, DnsReport, Report, dns_report, event_to_record, event_to_report};
use tracing::{debug, info, warn};

use crate::privileges::{self, Capability};

/// The eBPF object built by agent/build.rs (public for the datapath benchmark).
#[doc(hidden)]
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/trustmap-tc"));

/// The benchmark and test programs (`nop`, `cni_standin`); see agent-ebpf/src/bench.rs.
#[doc(hidden)]
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/trustmap-bench"));

/// How to attach the programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// TCX where the kernel has it, clsact otherwise.
    Auto,
    /// TCX links only.
    Tcx,
    /// A clsact qdisc and direct-action filters (kernels before 6.6).
    Clsact,
}

/// Settings fixed at load time.
#[derive(Debug, Clone)]
pub struct Config {
    /// After this long without a packet, a 5-tuple starts a new connection.
    pub idle_timeout_ns: u64,
    /// Capacity of the per-connection LRU map.
    pub max_flows: u32,
    /// Size of the event ring buffer in bytes: a power of two, at least a page.
    pub ring_bytes: u32,
    pub attach_mode: AttachMode,
    /// How long a connection start waits for its answer before it is reported unanswered
    /// (one-way for UDP).
    pub answer_timeout: std::time::Duration,
    /// Per-connection packet and byte counters in the flow map (`--flow-stats`).
    pub flow_stats: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_timeout_ns: 60_000_000_000,
            max_flows: 131_072,
            ring_bytes: 4 << 20,
            attach_mode: AttachMode::Auto,
            answer_timeout: std::time::Duration::from_secs(5),
            flow_stats: false,
        }
    }
}

/// Failures of the datapath.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object could not be loaded, for another reason than privileges.
    #[error("loading the eBPF object failed")]
    Load(#[source] aya::EbpfError),
    /// The kernel refused an operation for lack of privilege: the message names the capability
    /// missing, or the seccomp profile or LSM that refused it (see [`crate::privileges`]).
    #[error("{message}")]
    Refused {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A program or map the object must contain is missing or of the wrong type.
    #[error("the eBPF object has no usable {0}")]
    Missing(&'static str),
    #[error("loading program {name} failed")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name} is unusable")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// Attaching to one interface failed; the others are not affected.
    #[error("attaching to interface {interface} failed")]
    Attach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
}

/// Totals of the per-CPU counters the programs keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub packets: u64,
    pub events: u64,
    pub events_dropped: u64,
    pub malformed: u64,
    pub non_ip: u64,
    pub fragments: u64,
    pub tcp_midstream: u64,
    pub icmp_control: u64,
    pub other_protocol: u64,
    /// DNS responses to pods copied to userspace, and those lost to a full DNS ring.
    pub dns_responses: u64,
    pub dns_dropped: u64,
}

struct Attachment {
    name: String,
    links: Vec<SchedClassifierLink>,
    /// The clsact qdisc was added by us, so it goes when our filters go (unless other filters
    /// have appeared on it since).
    added_clsact: bool,
}

/// The loaded programs, their maps and the interfaces they are attached to.
pub struct Datapath {
    ebpf: Ebpf,
    mode: AttachMode,
    attached: BTreeMap<u32, Attachment>,
    counters: PerCpuArray<MapData, u64>,
    syn_seen: Array<MapData, [u32; 2]>,
    flows: HashMap<MapData, FlowKey, FlowStats>,
    /// The programs' writable globals: `START_LOST`.
    bss: Array<MapData, u32>,
}

/// What creating the maps and loading the programs needs.
const LOAD_NEEDS: &[(Capability, &str)] = &[(Capability::Bpf, "bpf(2): maps and programs")];
/// What loading the TC programs needs: the kernel loads networking programs (SCHED_CLS) only
/// with CAP_NET_ADMIN beside CAP_BPF, and without CAP_PERFMON the verifier applies its Spectre
/// hardening, which refuses the programs' variable-offset header reads.
const PROGRAM_NEEDS: &[(Capability, &str)] = &[
    (Capability::Bpf, "bpf(2): maps and programs"),
    (
        Capability::NetAdmin,
        "the kernel loads networking (SCHED_CLS) programs only with it",
    ),
    (
        Capability::Perfmon,
        "the verifier refuses the programs' variable-offset header reads without it",
    ),
];
/// What attaching to a veth needs.
const ATTACH_NEEDS: &[(Capability, &str)] = &[(
    Capability::NetAdmin,
    "attaching TCX links or clsact filters to pod veths",
)];

/// `err` as [`Error::Refused`] when the kernel refused it for lack of privilege, else as
/// `other(err)`.
fn refused_or<E>(
    err: E,
    what: &str,
    needs: &[(Capability, &str)],
    other: impl FnOnce(E) -> Error,
) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    if privileges::is_refusal(&err) {
        Error::Refused {
            message: privileges::refusal(what, needs, privileges::Status::current()),
            source: Box::new(err),
        }
    } else {
        other(err)
    }
}

impl Error {
    /// Whether this is a refusal for lack of privilege, which no other interface would escape
    /// either.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

/// Takes the map `name` out of the loaded object, as the typed map `T`.
fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(Error::Missing(name))?;
    T::try_from(map).map_err(|source| Error::Map { name, source })
}

/// clsact filter priority: 1, the first to run.
const CLSACT_PRIORITY: u16 = 1;

const HOOKS: [(&str, TcAttachType); 2] = [
    (names::PROG_INGRESS, TcAttachType::Ingress),
    (names::PROG_EGRESS, TcAttachType::Egress),
];

/// The programs for devices whose packets start at the IP header (netkit in L3 mode).
const HOOKS_L3: [(&str, TcAttachType); 2] = [
    (names::PROG_INGRESS_L3, TcAttachType::Ingress),
    (names::PROG_EGRESS_L3, TcAttachType::Egress),
];

fn hooks(l3: bool) -> [(&'static str, TcAttachType); 2] {
    if l3 { HOOKS_L3 } else { HOOKS }
}

impl Datapath {
    /// Loads the programs into the kernel and returns them with the event ring buffers
    /// (connection events, DNS responses), which the caller drains.
    pub fn load(config: &Config) -> Result<(Self, RingBuf<MapData>, RingBuf<MapData>), Error> {
        bump_memlock_rlimit();
        let mut ebpf = EbpfLoader::new()
            .override_global(names::GLOBAL_IDLE_TIMEOUT_NS, &config.idle_timeout_ns, true)
            .override_global(names::GLOBAL_FLOW_STATS, &u8::from(config.flow_stats), true)
            .map_max_entries(names::MAP_FLOWS, config.max_flows)
            .map_max_entries(names::MAP_EVENTS, config.ring_bytes)
            .load(OBJECT)
            .map_err(|e| refused_or(e, "loading the eBPF object", LOAD_NEEDS, Error::Load))?;
        for (name, _) in HOOKS.into_iter().chain(HOOKS_L3) {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(Error::Missing("program"))?
                .try_into()
                .map_err(|source| Error::Program { name, source })?;
            prog.load().map_err(|e| {
                refused_or(
                    e,
                    &format!("loading program {name}"),
                    PROGRAM_NEEDS,
                    |source| Error::Program { name, source },
                )
            })?;
        }
        let events = take_map(&mut ebpf, names::MAP_EVENTS)?;
        let dns = take_map(&mut ebpf, names::MAP_DNS_EVENTS)?;
        let counters = take_map(&mut ebpf, names::MAP_COUNTERS)?;
        let syn_seen = take_map(&mut ebpf, names::MAP_SYN_SEEN)?;
        let flows = take_map(&mut ebpf, names::MAP_FLOWS)?;
        let bss = take_map(&mut ebpf, names::MAP_BSS)?;
        let mode = config.attach_mode;
        Ok((
            Self {
                ebpf,
                mode,
                attached: BTreeMap::new(),
                counters,
                syn_seen,
                flows,
                bss,
            },
            events,
            dns,
        ))
    }

    /// Attaches both programs to `interface` (index `ifindex`). Attaching twice is a no-op.
    /// `existed_before_start` asks to look for filters a killed predecessor left behind first;
    /// an interface that appeared while we run cannot have any, and skipping the look keeps new
    /// pods' attach latency low. `l3` picks the programs for a device without a link-layer
    /// header.
    pub fn attach(
        &mut self,
        ifindex: u32,
        interface: &str,
        existed_before_start: bool,
        l3: bool,
    ) -> Result<(), Error> {
        if self.attached.contains_key(&ifindex) {
            return Ok(());
        }
        // A predecessor's leftover filters mean its clsact qdisc is ours to remove later too.
        let inherited_clsact = existed_before_start && remove_orphans(interface);
        let ((links, added_clsact), mode) = match self.mode {
            AttachMode::Tcx | AttachMode::Clsact => {
                (self.attach_links(interface, self.mode, l3)?, self.mode)
            }
            AttachMode::Auto => match self.attach_links(interface, AttachMode::Tcx, l3) {
                Ok(links) => (links, AttachMode::Tcx),
                Err(e) => {
                    debug!(interface, error = %e, "TCX unavailable, falling back to clsact");
                    (
                        self.attach_links(interface, AttachMode::Clsact, l3)?,
                        AttachMode::Clsact,
                    )
                }
            },
        };
        if l3 {
            info!(
                interface,
                ifindex,
                ?mode,
                "attached (no link-layer header: netkit L3)"
            );
        } else {
            info!(interface, ifindex, ?mode, "attached");
        }
        self.attached.insert(
            ifindex,
            Attachment {
                name: interface.to_owned(),
                links,
                added_clsact: added_clsact || inherited_clsact,
            },
        );
        Ok(())
    }

    fn attach_links(
        &mut self,
        interface: &str,
        mode: AttachMode,
        l3: bool,
    ) -> Result<(Vec<SchedClassifierLink>, bool), Error> {
        let err = |source: aya::programs::ProgramError| {
            refused_or(
                source,
                &format!("attaching to interface {interface}"),
                ATTACH_NEEDS,
                |source| Error::Attach {
                    interface: interface.to_owned(),
                    source,
                },
            )
        };
        let mut added_clsact = false;
        if mode == AttachMode::Clsact {
            match tc::qdisc_add_clsact(interface) {
                Ok(()) => added_clsact = true,
                Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(err(e.into())),
            }
        }
        let mut links = Vec::with_capacity(2);
        for (name, hook) in hooks(l3) {
            let prog: &mut SchedClassifier = self
                .ebpf
                .program_mut(name)
                .ok_or(Error::Missing("program"))?
                .try_into()
                .map_err(|source| Error::Program { name, source })?;
            // First in line, so that a CNI's verdict (TC_ACT_OK ends the hook) cannot hide
            // packets from us; we return "next", so the CNI's programs run right after.
            let options = match mode {
                AttachMode::Clsact => TcAttachOptions::Netlink(NlOptions {
                    priority: CLSACT_PRIORITY,
                    ..NlOptions::default()
                }),
                _ => TcAttachOptions::TcxOrder(LinkOrder::first()),
            };
            // On error, the links already in `links` are dropped, which detaches them.
            let id = prog
                .attach_with_options(interface, hook, options)
                .map_err(err)?;
            links.push(prog.take_link(id).map_err(err)?);
        }
        Ok((links, added_clsact))
    }

    /// Detaches from the interface with index `ifindex`, if attached. When the interface is
    /// already gone the kernel has dropped the attachment with it, and this only forgets it.
    pub fn detach(&mut self, ifindex: u32) {
        if let Some(Attachment {
            name,
            links,
            added_clsact,
        }) = self.attached.remove(&ifindex)
        {
            // Dropping a link detaches it.
            drop(links);
            // The index may be reused by an unrelated interface.
            let _ = self.syn_seen.set(ifindex % SYN_SEEN_SLOTS, [0, 0], 0);
            if added_clsact {
                remove_clsact_if_unused(&name);
            }
            info!(interface = name, ifindex, "detached");
        }
    }

    /// Detaches from every interface.
    pub fn detach_all(&mut self) {
        let indices: Vec<u32> = self.attached.keys().copied().collect();
        for ifindex in indices {
            self.detach(ifindex);
        }
    }

    /// Name of an attached interface, for flow records.
    pub fn interface_name(&self, ifindex: u32) -> Option<&str> {
        self.attached.get(&ifindex).map(|a| a.name.as_str())
    }

    pub fn attached_count(&self) -> usize {
        self.attached.len()
    }

    /// Index and name of every attached interface.
    pub fn attached_interfaces(&self) -> Vec<(u32, String)> {
        self.attached
            .iter()
            .map(|(i, a)| (*i, a.name.clone()))
            .collect()
    }

    /// TCP packets with SYN set seen on an interface: `[from the pod, to the pod]`.
    pub fn syn_directions(&self, ifindex: u32) -> Option<[u64; 2]> {
        self.syn_seen
            .get(&(ifindex % SYN_SEEN_SLOTS), 0)
            .ok()
            .map(|seen| seen.map(u64::from))
    }

    /// After a connection start was lost to a full ring buffer, the programs send every TCP
    /// packet down the slow path, so that the connection's next packet reports its start.
    /// This ends that once no entry of the flow map waits any more: it clears the programs'
    /// flag, looks through the map, and sets the flag again if an entry still waits. Costs
    /// one map read when nothing was lost; a walk of the map (a syscall per entry) otherwise.
    /// Returns the number of entries still waiting.
    pub fn rearm_lost_starts(&mut self) -> Result<usize, MapError> {
        if self.bss.get(&0, 0)? == 0 {
            return Ok(0);
        }
        // Cleared before the walk: a start lost during it sets the flag again itself.
        self.bss.set(0, 0, 0)?;
        let waiting = self
            .flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, stats)| stats.unreported != 0)
            .count();
        if waiting > 0 {
            self.bss.set(0, 1, 0)?;
        }
        Ok(waiting)
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Counters {
        let sum = |index: u32| -> u64 {
            self.counters
                .get(&index, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        Counters {
            packets: sum(counter::PACKETS),
            events: sum(counter::EVENTS),
            events_dropped: sum(counter::EVENTS_DROPPED),
            malformed: sum(counter::MALFORMED),
            non_ip: sum(counter::NON_IP),
            fragments: sum(counter::FRAGMENTS),
            tcp_midstream: sum(counter::TCP_MIDSTREAM),
            icmp_control: sum(counter::ICMP_CONTROL),
            other_protocol: sum(counter::OTHER_PROTOCOL),
            dns_responses: sum(counter::DNS_RESPONSES),
            dns_dropped: sum(counter::DNS_DROPPED),
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Removes clsact filters running a program of ours, left by a process that was killed. Returns
/// whether there were any.
fn remove_orphans(interface: &str) -> bool {
    let mut found = false;
    for (name, hook) in HOOKS.into_iter().chain(HOOKS_L3) {
        match tc::qdisc_detach_program(interface, hook, name) {
            Ok(()) => {
                found = true;
                warn!(
                    interface,
                    program = name,
                    ?hook,
                    "removed a filter left by an earlier run"
                );
            }
            Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => debug!(interface, error = %e, "no clsact filters to inspect"),
        }
    }
    found
}

/// Removes the clsact qdisc we added, unless someone else's filters now use it. aya has no call
/// for deleting a qdisc, so this asks tc(8), which the agent's image ships.
fn remove_clsact_if_unused(interface: &str) {
    let filters = |hook: &str| {
        std::process::Command::new("tc")
            .args(["filter", "show", "dev", interface, hook])
            .output()
            // An emptied priority still prints a header line; real filters carry a handle.
            .map(|o| o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("handle"))
            .unwrap_or(false)
    };
    if filters("ingress") && filters("egress") {
        let _ = std::process::Command::new("tc")
            .args(["qdisc", "del", "dev", interface, "clsact"])
            .status();
    } else {
        debug!(interface, "leaving the clsact qdisc: other filters use it");
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn bump_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        debug!("could not raise RLIMIT_MEMLOCK; fine on kernels 5.11 and later");
    }
}

/// Reads every record waiting in a ring buffer as a `T` (an `agent_ebpf::FlowEvent` from `EVENTS`, a
/// `DnsEvent` from `DNS_EVENTS`); a record too short for `T` is skipped.
pub fn drain<T: aya::Pod>(ring: &mut RingBuf<MapData>, mut f: impl FnMut(T)) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        if let Some(ev) = decode(&item) {
            f(ev);
            n += 1;
        }
    }
    n
}

/// One ring-buffer record as a `T`, or `None` when it is too short. Public for the fuzz
/// target that feeds it arbitrary bytes (agent/fuzz).
pub fn decode<T: aya::Pod>(record: &[u8]) -> Option<T> {
    (record.len() >= size_of::<T>()).then(|| {
        // SAFETY: T is Pod (any bit pattern is valid), the record holds at least
        // size_of::<T>() bytes, and read_unaligned copes with any alignment.
        unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<T>()) }
    })
}

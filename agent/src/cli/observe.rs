//! `trustmap observe`: attach, stream connection starts as JSON lines, detach on exit.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, BufWriter, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::Instant,
};
use tracing::{info, warn};

use crate::{
    datapath::{self, AttachMode, ClockOffset, Config, Datapath},
    flow::{Endpoint, FlowRecord, Protocol},
    netif::{InterfaceFilter, LinkChange, LinkWatcher},
    preexisting,
};

#[derive(Debug, clap::Args)]
pub struct ObserveArgs {
    /// Glob pattern of host-side pod interfaces to attach to; repeatable. Without it: veth*,
    /// cali*, lxc*, cni*, gke*, eni*, azv*, vnet*. Only veth and netkit devices are attached.
    #[arg(long = "interface", short = 'i', value_name = "PATTERN")]
    pub interfaces: Vec<String>,
    /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Where to write the JSON lines: a file, or - for stdout.
    #[arg(long, short = 'o', value_name = "FILE|-", default_value = "-")]
    pub output: String,
    /// Seconds without a packet after which a UDP, SCTP or ICMP 5-tuple is a new connection.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub idle_timeout: u64,
    /// Capacity of the in-kernel connection table (an LRU map).
    #[arg(long, default_value_t = 131_072)]
    pub max_flows: u32,
    /// How to attach: TCX where available (auto), TCX only, or clsact filters.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach_mode: AttachMode,
    /// Do not report TCP connections that were already established when the agent started
    /// (read from each pod network namespace's socket table).
    #[arg(long)]
    pub no_pre_existing: bool,
}

pub fn run(args: ObserveArgs) -> anyhow::Result<ExitCode> {
    let filter = InterfaceFilter::new(&args.interfaces)?;
    let output: Box<dyn Write> = if args.output == "-" {
        Box::new(io::stdout().lock())
    } else {
        let path = PathBuf::from(&args.output);
        Box::new(File::create(&path).with_context(|| format!("creating {}", path.display()))?)
    };
    let config = Config {
        idle_timeout_ns: args.idle_timeout.saturating_mul(1_000_000_000),
        max_flows: args.max_flows,
        attach_mode: args.attach_mode,
    };
    let duration = match args.duration {
        Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--duration must be a non-negative number of seconds, not {s}"),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let pre_existing = !args.no_pre_existing;
    runtime.block_on(observe(
        filter,
        config,
        duration,
        pre_existing,
        BufWriter::new(output),
    ))?;
    Ok(ExitCode::SUCCESS)
}

async fn observe(
    filter: InterfaceFilter,
    config: Config,
    duration: Option<Duration>,
    pre_existing: bool,
    mut out: BufWriter<Box<dyn Write>>,
) -> anyhow::Result<()> {
    let (mut dp, ring) = Datapath::load(&config)?;
    let clock = ClockOffset::now();
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long as the
    // AsyncFd owns the RingBuf.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| e.into_parts().1)
        .context("watching the ring buffer")?;
    let mut names: HashMap<u32, String> = HashMap::new();

    let (mut watcher, links) = LinkWatcher::start().await?;
    for link in links.iter().filter(|l| filter.matches(l)) {
        attach(&mut dp, &mut names, link.index, &link.name);
    }
    let mut written: u64 = 0;
    if pre_existing {
        written += report_pre_existing(ring.get_mut(), &names, clock, &mut out)?;
    }
    info!(interfaces = dp.attached_count(), "ready");

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = duration.map(|d| Instant::now() + d);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                written += write_events(guard.get_inner_mut(), &names, clock, &mut out, None)?;
                guard.clear_ready();
            }
            change = watcher.next() => match change {
                Some(LinkChange::Present(link)) if filter.matches(&link) => {
                    attach(&mut dp, &mut names, link.index, &link.name);
                }
                Some(LinkChange::Present(link)) => {
                    // Renamed to something we do not watch.
                    if dp.interface_name(link.index).is_some() {
                        dp.detach(link.index);
                    }
                }
                Some(LinkChange::Gone { index }) => dp.detach(index),
                None => anyhow::bail!("the rtnetlink socket closed"),
            },
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sleep_until(deadline) => break,
        }
    }

    // Detach first, so that nothing new arrives, then flush what the kernel already wrote.
    dp.detach_all();
    written += write_events(ring.get_mut(), &names, clock, &mut out, None)?;
    out.flush().context("flushing the output")?;
    let c = dp.counters();
    info!(
        records = written,
        packets = c.packets,
        events = c.events,
        events_dropped = c.events_dropped,
        malformed = c.malformed,
        fragments = c.fragments,
        tcp_midstream = c.tcp_midstream,
        "stopped"
    );
    if c.events_dropped > 0 {
        warn!(
            events_dropped = c.events_dropped,
            "the ring buffer was full: some connection starts were counted but not reported"
        );
    }
    Ok(())
}

fn attach(dp: &mut Datapath, names: &mut HashMap<u32, String>, index: u32, name: &str) {
    match dp.attach(index, name) {
        Ok(()) => {
            names.insert(index, name.to_owned());
        }
        Err(err) => warn!(interface = name, error = %anyhow::Error::from(err), "not attached"),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
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

/// Reports connections established before the programs were attached. Connections that started
/// between attaching and scanning show both as an event (their SYN) and in the socket tables;
/// draining the ring buffer first lets the event win.
fn report_pre_existing(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    names: &HashMap<u32, String>,
    clock: ClockOffset,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let attached: HashSet<u32> = names.keys().copied().collect();
    let tables = preexisting::scan_pod_namespaces(&attached)?;
    let mut seen = HashSet::new();
    let mut n = write_events(ring, names, clock, out, Some(&mut seen))?;
    for rec in preexisting::records(&tables, chrono::Utc::now()) {
        if tcp_key(&rec).is_some_and(|k| seen.contains(&k)) {
            continue;
        }
        serde_json::to_writer(&mut *out, &rec)?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.flush().context("flushing flow records")?;
    info!(
        namespaces = tables.len(),
        "scanned for pre-existing connections"
    );
    Ok(n)
}

fn write_events(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    names: &HashMap<u32, String>,
    clock: ClockOffset,
    out: &mut impl Write,
    mut keys: Option<&mut HashSet<TcpKey>>,
) -> anyhow::Result<u64> {
    let mut result = Ok(());
    let mut n = 0;
    datapath::drain(ring, |ev| {
        if result.is_err() {
            return;
        }
        let name = names.get(&ev.ifindex).map(String::as_str);
        if let Some(rec) = datapath::event_to_record(&ev, name, clock) {
            if let (Some(keys), Some(k)) = (keys.as_deref_mut(), tcp_key(&rec)) {
                keys.insert(k);
            }
            result = serde_json::to_writer(&mut *out, &rec)
                .map_err(anyhow::Error::from)
                .and_then(|()| out.write_all(b"\n").map_err(anyhow::Error::from));
            n += 1;
        }
    });
    result.context("writing flow records")?;
    out.flush().context("flushing flow records")?;
    Ok(n)
}

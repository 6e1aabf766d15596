//! `trustmap observe`: attach, stream connection starts as JSON lines, detach on exit.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::Instant,
};
use tracing::{info, warn};

use crate::{
    datapath::{AttachMode, Capture, Config},
    flow::FlowRecord,
    netif::InterfaceFilter,
};

#[derive(Debug, clap::Args)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Where to write the JSON lines: a file, or - for stdout.
    #[arg(long, short = 'o', value_name = "FILE|-", default_value = "-")]
    pub output: String,
}

/// Capture options shared by `observe` and `agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct CaptureArgs {
    /// Glob pattern of host-side pod interfaces to attach to; repeatable. Without it: veth*,
    /// cali*, lxc*, cni*, gke*, eni*, azv*, vnet*. Only veth and netkit devices are attached.
    #[arg(long = "interface", short = 'i', value_name = "PATTERN")]
    pub interfaces: Vec<String>,
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
    /// Where the host's /proc is mounted, to find the network namespaces of pods' processes
    /// for the pre-existing scan (the DaemonSet mounts it at /host/proc).
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Seconds a connection start waits for its answer (SYN-ACK, a UDP reply, INIT-ACK, echo
    /// reply) before it is reported `unanswered` (`one_way` for UDP). Answered and refused
    /// starts are reported as soon as the answer is seen.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub answer_timeout: f64,
    /// Size of the ring buffer that carries events to userspace, in KiB: a power of two, at
    /// least one page. When it is full, a connection is reported by its next packet and the
    /// loss is counted (`events_dropped`).
    #[arg(long, value_name = "KIB", default_value_t = 4096)]
    pub ring_buffer_kib: u32,
    /// Keep per-connection packet and byte counters in the in-kernel flow table, and count
    /// every packet. Off by default: it costs every packet a map lookup, where an established
    /// TCP packet otherwise costs none (docs/capture.md).
    #[arg(long)]
    pub flow_stats: bool,
}

impl CaptureArgs {
    /// Loads, attaches and reports pre-existing connections (unless disabled).
    pub async fn start(&self) -> anyhow::Result<(Capture, Vec<FlowRecord>)> {
        crate::preexisting::set_proc_root(self.proc_root.clone());
        let filter = InterfaceFilter::new(&self.interfaces)?;
        // SAFETY: sysconf has no preconditions.
        let page_kib = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) / 1024) as u32;
        anyhow::ensure!(
            self.ring_buffer_kib.is_power_of_two() && self.ring_buffer_kib >= page_kib,
            "--ring-buffer-kib must be a power of two of at least {page_kib} (one page), not {}",
            self.ring_buffer_kib
        );
        let config = Config {
            ring_bytes: self.ring_buffer_kib.saturating_mul(1024),
            idle_timeout_ns: self.idle_timeout.saturating_mul(1_000_000_000),
            max_flows: self.max_flows,
            attach_mode: self.attach_mode,
            answer_timeout: std::time::Duration::try_from_secs_f64(self.answer_timeout)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    anyhow::anyhow!("--answer-timeout must be a positive number of seconds")
                })?,
            flow_stats: self.flow_stats,
        };
        let mut capture = Capture::start(filter, &config).await?;
        let first = if self.no_pre_existing {
            Vec::new()
        } else {
            capture.pre_existing()?
        };
        Ok((capture, first))
    }
}

/// Parses `--duration`.
pub fn duration(secs: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match secs {
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => anyhow::bail!("--duration must be a non-negative number of seconds, not {s}"),
        None => Ok(None),
    }
}

/// Completes at the deadline, or never.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub fn run(args: ObserveArgs) -> anyhow::Result<ExitCode> {
    let output: Box<dyn Write> = if args.output == "-" {
        Box::new(io::stdout().lock())
    } else {
        let path = PathBuf::from(&args.output);
        Box::new(File::create(&path).with_context(|| format!("creating {}", path.display()))?)
    };
    let duration = duration(args.duration)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(observe(&args.capture, duration, BufWriter::new(output)))?;
    Ok(ExitCode::SUCCESS)
}

async fn observe(
    args: &CaptureArgs,
    duration: Option<Duration>,
    mut out: BufWriter<Box<dyn Write>>,
) -> anyhow::Result<()> {
    let (mut capture, first) = args.start().await?;
    let mut written = write(&mut out, &first)?;
    info!(interfaces = capture.attached_count(), "ready");

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = duration.map(|d| Instant::now() + d);
    loop {
        tokio::select! {
            batch = capture.next_batch() => written += write(&mut out, &batch?)?,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sleep_until(deadline) => break,
        }
    }
    // Detach first, so that nothing new arrives, then flush what the kernel already wrote.
    let one_direction = capture.one_direction_interfaces().len();
    let last = capture.stop();
    written += write(&mut out, &last)?;
    let c = capture.counters();
    let d = capture.dns_counters();
    info!(
        records = written,
        packets = c.packets,
        events = c.events,
        events_dropped = c.events_dropped,
        malformed = c.malformed,
        fragments = c.fragments,
        tcp_midstream = c.tcp_midstream,
        one_direction,
        dns_responses = d.parsed,
        dns_truncated = d.truncated,
        dns_malformed = d.malformed,
        dns_not_response = d.not_response,
        dns_dropped = c.dns_dropped,
        dns_names = d.names,
        "stopped"
    );
    if c.events_dropped > 0 {
        warn!(
            events_dropped = c.events_dropped,
            "the ring buffer was full: each connection whose event was lost is reported by its \
             next packet; one that sent none since is missing"
        );
    }
    Ok(())
}

fn write(out: &mut impl Write, records: &[FlowRecord]) -> anyhow::Result<u64> {
    for rec in records {
        serde_json::to_writer(&mut *out, rec).context("writing flow records")?;
        out.write_all(b"\n").context("writing flow records")?;
    }
    out.flush().context("flushing flow records")?;
    Ok(records.len() as u64)
}

//! `cargo xtask bench`, datapath part: the figures of BENCHMARKS.md. Each part can run alone:
//! `trustmap-datapath-bench <part>...` (see [`PARTS`]); without one, all run.
//!
//! - `per-packet`: ns per packet of a known flow (established TCP, answered UDP), by
//!   BPF_PROG_TEST_RUN, beside the empty pass-through program `nop` in alternating rounds.
//! - `starts`: ns per connection start, distinct 5-tuples, one per call and in a burst.
//! - `memory`: the flow table's memory by the kernel's count, at the default and at 1 M.
//! - `small-packets`: UDP 64-byte rate and TCP request/response between two pods, with
//!   nothing, the empty program, trustmap's programs and `trustmap observe` attached.
//! - `per-run`: the programs' own cost per run under that traffic (`bpf_stats_enabled`).
//! - `throughput`: iperf3 TCP between two pods, without and with the agent, alternating.
//! - `burst`: new connections captured against generated, with the drop counter.
//! - `agent`: the whole agent (`trustmap agent`) under 10 000 new connections per second, its
//!   CPU and its memory once it tracks 100 000 flows and holds 20 000 edges.
//! - `attach`: from a new veth to the programs attached.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use aya::{
    EbpfLoader,
    maps::RingBuf,
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use trustmap::datapath::{BENCH_OBJECT, OBJECT};
use trustmap_e2e::{Agent, Cluster, ClusterSpec, in_netns, require_root};

const ROUNDS: usize = 7;

/// The parts, by the names that pick them on the command line (all of them without one).
const PARTS: [(&str, fn()); 9] = [
    ("per-packet", per_packet),
    ("starts", starts),
    ("memory", memory),
    ("small-packets", small_packets),
    ("per-run", per_run),
    ("throughput", throughput),
    ("burst", burst),
    ("agent", agent_load),
    ("attach", attach_latency),
];

fn main() {
    require_root();
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    for w in &wanted {
        assert!(
            PARTS.iter().any(|(name, _)| name == w),
            "unknown part {w:?}: the parts are {:?}",
            PARTS.map(|(name, _)| name)
        );
    }
    println!("## trustmap datapath benchmark\n");
    machine();
    for (name, part) in PARTS {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            part();
        }
    }
}

/// The kernel, the CPU model and the load average the figures were taken with.
fn machine() {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease");
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let loadavg = read("/proc/loadavg");
    let load: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    println!(
        "kernel {}, {cpus} × {model}, load average {} (1, 5, 15 min) at the start\n",
        kernel.trim(),
        load.join(" ")
    );
}

/// One field of /proc/PID/status, in kB.
fn status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / hz
}

fn agent_load() {
    const RATE: u32 = 10_000;
    const FLOWS: u32 = 100_000;
    const PORTS: u32 = 20_000;
    let cluster = Cluster::start(&ClusterSpec::client_and_server());
    let (client, server) = (cluster.pod("client"), cluster.pod("server"));
    // No port unreachables from the server: every datagram is a one-way connection, which the
    // agent learns as an edge (one per port).
    let nft = "table inet bench { chain out { type filter hook output priority 0; \
               icmp type destination-unreachable drop; \
               icmpv6 type destination-unreachable drop; }; }";
    let ok = Command::new("ip")
        .args(["netns", "exec", &server.netns, "nft", nft])
        .status()
        .expect("nft")
        .success();
    assert!(ok, "nft in the server's namespace");
    let dir = std::env::temp_dir().join(format!("trustmap-bench-agent-{}", cluster.prefix));
    std::fs::create_dir_all(dir.join("state")).expect("dirs");
    let mut text = trustmap_e2e::manifests::namespace("bench", &[]);
    for p in [client, server] {
        text += &trustmap_e2e::manifests::pod(p, "bench", &Default::default());
    }
    std::fs::write(dir.join("cluster.yaml"), text).expect("manifests");
    let pattern = cluster.pod_interface_pattern();
    let (manifests, state) = (
        dir.join("cluster.yaml").display().to_string(),
        dir.join("state").display().to_string(),
    );
    let mut agent = Agent::start_in(
        "agent-load",
        &[
            "agent",
            "--inventory",
            "manifests",
            "--manifests",
            &manifests,
            "--state-dir",
            &state,
            "--interface",
            &pattern,
            "--listen",
            "127.0.0.1:0",
            "--answer-timeout",
            "1",
            "--max-flows",
            "262144",
        ],
        false,
    );
    let pid = agent.pid();
    let rss_idle = status_kb(pid, "VmRSS:");
    let cpu0 = cpu_seconds(pid);
    let dst = IpAddr::V4(server.ipv4);
    // FLOWS distinct 5-tuples: FLOWS / PORTS sockets, each to every port once.
    let (sent, elapsed) = in_netns(&client.netns, move || {
        let socks: Vec<UdpSocket> = (0..FLOWS / PORTS)
            .map(|_| UdpSocket::bind("0.0.0.0:0").expect("bind"))
            .collect();
        let started = Instant::now();
        let mut sent = 0u32;
        while sent < FLOWS && started.elapsed() < Duration::from_secs(60) {
            let due = (started.elapsed().as_micros() as u64 * u64::from(RATE) / 1_000_000) as u32;
            while sent < due.min(FLOWS) {
                let sock = &socks[(sent / PORTS) as usize];
                let port = 10_000 + (sent % PORTS) as u16;
                let _ = sock.send_to(b"x", SocketAddr::new(dst, port));
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        (sent, started.elapsed())
    });
    let cpu_load = cpu_seconds(pid) - cpu0;
    // Let the last starts time out (one-way after 1 s) and reach the graph.
    std::thread::sleep(Duration::from_secs(3));
    let cpu_total = cpu_seconds(pid) - cpu0;
    let (rss, peak) = (status_kb(pid, "VmRSS:"), status_kb(pid, "VmHWM:"));
    let stopped = agent.signal_and_wait(libc::SIGTERM);
    assert!(stopped, "{}", agent.log_text());
    // The graph the agent saved when it stopped: one edge per line.
    let edges_saved = std::fs::read_to_string(dir.join("state").join("graph.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    let secs = elapsed.as_secs_f64();
    println!("### the whole agent under new connections (UDP, one-way, distinct 5-tuples)\n");
    println!(
        "| connections | in | rate | CPU during the load | CPU incl. 3 s settling | RSS idle | RSS after | peak RSS | edges |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {sent} | {secs:.1} s | {:.0}/s | {:.3} cores | {:.3} cores | {:.1} MiB | {:.1} MiB | {:.1} MiB | {edges_saved} |\n",
        f64::from(sent) / secs,
        cpu_load / secs,
        cpu_total / (secs + 3.0),
        rss_idle as f64 / 1024.0,
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
}

/// Time from `ip link add` of a new veth, its peer in a pod's network namespace as a CNI
/// creates it, to the agent's "attached" log line, whose timestamp the agent writes when the
/// TC programs are in place.
fn attach_latency() {
    let cluster = Cluster::start(&ClusterSpec::new(1).pod(1, "a", &[("app", "a")]));
    let pod_ns = cluster.pod("a").netns.clone();
    let pattern = cluster.pod_interface_pattern();
    let mut agent = Agent::start("attach", &["observe", "--interface", &pattern]);
    let mut samples = Vec::new();
    for i in 0..10 {
        let name = format!("{}p9{i}", cluster.prefix);
        let t0 = chrono::Utc::now();
        let ok = Command::new("ip")
            .args([
                "link",
                "add",
                &name,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{name}x"),
                "netns",
                &pod_ns,
            ])
            .status()
            .expect("ip link add")
            .success();
        assert!(ok, "ip link add {name}");
        let needle = format!("attached interface=\"{name}\"");
        agent.wait_for_log(&needle, Duration::from_secs(5));
        let log = agent.log_text();
        let line = log
            .lines()
            .find(|l| l.contains(&needle))
            .expect("attach line");
        let ts: chrono::DateTime<chrono::Utc> = line
            .split_whitespace()
            .next()
            .and_then(|t| t.parse().ok())
            .expect("log timestamp");
        samples.push((ts - t0).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        let _ = Command::new("ip").args(["link", "del", &name]).status();
    }
    agent.stop();
    let max = samples.iter().copied().fold(0.0, f64::max);
    println!(
        "### attach latency: new veth (peer in a pod namespace) to programs attached (10 interfaces)\n"
    );
    println!("| median | max |");
    println!("| ---: | ---: |");
    println!("| {:.1} ms | {max:.1} ms |\n", median(samples));
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn tcp(flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40_000u16.to_be_bytes());
    t[2..4].copy_from_slice(&8080u16.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t.extend_from_slice(&[0u8; 64]);
    t
}

fn udp_from(src_port: u16) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&src_port.to_be_bytes());
    u[2..4].copy_from_slice(&53u16.to_be_bytes());
    u[4..6].copy_from_slice(&72u16.to_be_bytes());
    u.extend_from_slice(&[0u8; 64]);
    u
}

fn ipv4(proto: u8, l4: Vec<u8>) -> Vec<u8> {
    let mut f = eth(0x0800);
    let total = 20 + l4.len() as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[
        0, 0, 0x40, 0, 64, proto, 0, 0, 198, 18, 1, 10, 198, 18, 1, 11,
    ]);
    f.extend(l4);
    f
}

fn ipv6(proto: u8, l4: Vec<u8>) -> Vec<u8> {
    let mut f = eth(0x86DD);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[proto, 64]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x0a]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x0b]);
    f.extend(l4);
    f
}

/// `p` (Ethernet, IPv4 or IPv6, then TCP or UDP) sent the other way: addresses and ports
/// swapped.
fn swapped(p: &[u8]) -> Vec<u8> {
    let mut q = p.to_vec();
    let (addr, len, l4) = if p[12..14] == [0x86, 0xDD] {
        (14 + 8, 16, 14 + 40)
    } else {
        (14 + 12, 4, 14 + 20)
    };
    q[addr..addr + len].copy_from_slice(&p[addr + len..addr + 2 * len]);
    q[addr + len..addr + 2 * len].copy_from_slice(&p[addr..addr + len]);
    q[l4..l4 + 2].copy_from_slice(&p[l4 + 2..l4 + 4]);
    q[l4 + 2..l4 + 4].copy_from_slice(&p[l4..l4 + 2]);
    q
}

/// Runs `base` and `ours` one after the other, [`ROUNDS`] times: their medians, and the median
/// of the rounds' ratios.
fn alternate(mut base: impl FnMut() -> f64, mut ours: impl FnMut() -> f64) -> (f64, f64, f64) {
    summarize(
        (0..ROUNDS)
            .map(|_| {
                let b = base();
                (b, ours())
            })
            .collect(),
    )
}

/// Rounds of (empty program, trustmap) figures: their medians, and the median of the rounds'
/// ratios.
fn summarize(rounds: Vec<(f64, f64)>) -> (f64, f64, f64) {
    let ratios = rounds.iter().map(|(b, o)| o / b).collect();
    let (b, o) = rounds.into_iter().unzip();
    (median(b), median(o), median(ratios))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run_ns(prog: &SchedClassifier, data: &[u8], repeat: u32) -> f64 {
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(data),
            repeat,
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_TEST_RUN");
    res.duration.as_nanos() as f64
}

/// Loads the empty program of the bench object, and trustmap's ingress program with an idle
/// timeout of `idle_ns` (its object stays alive in the returned `Ebpf`).
fn programs(idle_ns: u64) -> (aya::Ebpf, aya::Ebpf) {
    let mut bench = EbpfLoader::new().load(BENCH_OBJECT).expect("bench object");
    let nop: &mut SchedClassifier = bench
        .program_mut("nop")
        .expect("nop")
        .try_into()
        .expect("classifier");
    nop.load().expect("load nop");
    let mut ours = EbpfLoader::new()
        .override_global("IDLE_TIMEOUT_NS", &idle_ns, true)
        .load(OBJECT)
        .expect("trustmap object");
    let ing: &mut SchedClassifier = ours
        .program_mut("trustmap_ing")
        .expect("trustmap_ing")
        .try_into()
        .expect("classifier");
    ing.load().expect("load trustmap_ing");
    (bench, ours)
}

fn classifier<'a>(ebpf: &'a aya::Ebpf, name: &str) -> &'a SchedClassifier {
    ebpf.program(name)
        .expect("program")
        .try_into()
        .expect("classifier")
}

/// Packets of a flow the programs already track, each repeated a million times in one
/// BPF_PROG_TEST_RUN call, against the empty program in the same run.
fn per_packet() {
    const REPEAT: u32 = 1_000_000;
    // A long idle timeout: the flow never restarts during the run.
    let (bench, ours) = programs(u64::MAX / 4);
    let (nop, ing) = (classifier(&bench, "nop"), classifier(&ours, "trustmap_ing"));
    println!("### ns per packet of a known flow (BPF_PROG_TEST_RUN, median of {ROUNDS} runs)\n");
    println!("| packet | path | nop ns | trustmap ns | ratio |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let rows = [
        (
            "IPv4 TCP",
            "established (ACK)",
            ipv4(6, tcp(0x02)),
            ipv4(6, tcp(0x10)),
        ),
        (
            "IPv6 TCP",
            "established (ACK)",
            ipv6(6, tcp(0x02)),
            ipv6(6, tcp(0x10)),
        ),
        (
            "IPv4 UDP",
            "known flow",
            ipv4(17, udp_from(40_000)),
            ipv4(17, udp_from(40_000)),
        ),
        (
            "IPv6 UDP",
            "known flow",
            ipv6(17, udp_from(40_000)),
            ipv6(17, udp_from(40_000)),
        ),
    ];
    for (name, path, first, next) in rows {
        run_ns(ing, &first, 1);
        // The answer: the same packet with addresses and ports swapped.
        run_ns(ing, &swapped(&first), 1);
        // Alternating, round by round: the ratio is the median of each round's ratio.
        let (base, ours, ratio) =
            alternate(|| run_ns(nop, &next, REPEAT), || run_ns(ing, &next, REPEAT));
        println!("| {name} | {path} | {base:.1} | {ours:.1} | {ratio:.2} |");
    }
    println!();
}

/// Connection starts: a packet of a 5-tuple never seen before for every run, so that each one
/// inserts a flow, measured two ways:
/// - one packet per BPF_PROG_TEST_RUN call, for both programs, so that the kernel's timing of
///   one run is in both figures, and each insert meets caches the syscall has cooled;
/// - in a burst: one call repeats the packet, and the bench object's `*_next_tuple` programs
///   write a new source address and port into it before each run (both programs do the
///   writing), so that every run inserts. The flow map is filled first: every insert evicts, as
///   on a busy node.
fn starts() {
    const STARTS: usize = 20_000;
    let (bench, mut ours) = programs(60_000_000_000);
    let mut ring = RingBuf::try_from(ours.take_map("EVENTS").expect("EVENTS")).expect("ring");
    let (nop, ing) = (classifier(&bench, "nop"), classifier(&ours, "trustmap_ing"));
    println!(
        "### ns per connection start (BPF_PROG_TEST_RUN, distinct 5-tuples, median of {ROUNDS} rounds)\n"
    );
    println!("| packet | path | nop ns | trustmap ns | ratio |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let distinct = |v6: bool, syn: bool, round: usize| -> Vec<Vec<u8>> {
        (0..STARTS)
            .map(|i| {
                let port = 1024 + (i % 60_000) as u16;
                let l4 = if syn {
                    let mut t = tcp(0x02);
                    t[0..2].copy_from_slice(&port.to_be_bytes());
                    t
                } else {
                    udp_from(port)
                };
                let proto = if syn { 6 } else { 17 };
                let mut p = if v6 { ipv6(proto, l4) } else { ipv4(proto, l4) };
                // The source address's last octets: the round, and which 60 000 block.
                let at = if v6 { 14 + 8 + 14 } else { 14 + 12 + 2 };
                let tag = ((round as u16) << 4) | (i / 60_000) as u16;
                p[at..at + 2].copy_from_slice(&tag.to_be_bytes());
                p
            })
            .collect()
    };
    let rows = [
        ("IPv4 TCP", false, true),
        ("IPv6 TCP", true, true),
        ("IPv4 UDP", false, false),
        ("IPv6 UDP", true, false),
    ];
    let mut round_tag = 0;
    for (name, v6, syn) in rows {
        let mut runs = Vec::new();
        for _ in 0..ROUNDS {
            round_tag += 1;
            let pkts = distinct(v6, syn, round_tag);
            let mut b = 0.0;
            let mut o = 0.0;
            for (i, p) in pkts.iter().enumerate() {
                b += run_ns(nop, p, 1);
                o += run_ns(ing, p, 1);
                if i % 1_000 == 999 {
                    while ring.next().is_some() {}
                }
            }
            while ring.next().is_some() {}
            runs.push((b / STARTS as f64, o / STARTS as f64));
        }
        let (base, ours, ratio) = summarize(runs);
        let path = if syn { "SYN" } else { "first datagram" };
        println!("| {name} | {path}, one per call | {base:.1} | {ours:.1} | {ratio:.2} |");
    }
    drop((ring, ours));

    let mut burst = EbpfLoader::new().load(BENCH_OBJECT).expect("bench object");
    for name in ["nop_next_tuple", "trustmap_next_tuple"] {
        let p: &mut SchedClassifier = burst
            .program_mut(name)
            .expect(name)
            .try_into()
            .expect("classifier");
        p.load().expect(name);
    }
    let mut ring = RingBuf::try_from(burst.take_map("EVENTS").expect("EVENTS")).expect("ring");
    let (nop, ing) = (
        classifier(&burst, "nop_next_tuple"),
        classifier(&burst, "trustmap_next_tuple"),
    );
    let mut run = |prog: &SchedClassifier, p: &[u8]| {
        let ns = run_ns(prog, p, STARTS as u32);
        while ring.next().is_some() {}
        ns
    };
    // Fill the flow map (131 072 entries) first.
    let first = ipv4(17, udp_from(1024));
    for _ in 0..8 {
        run(ing, &first);
    }
    for (name, v6, syn) in rows {
        let l4 = if syn { tcp(0x02) } else { udp_from(1024) };
        let proto = if syn { 6 } else { 17 };
        let p = if v6 { ipv6(proto, l4) } else { ipv4(proto, l4) };
        let runs = (0..ROUNDS).map(|_| (run(nop, &p), run(ing, &p))).collect();
        let (base, ours, ratio) = summarize(runs);
        let path = if syn { "SYN" } else { "first datagram" };
        println!(
            "| {name} | {path}, in a burst of {STARTS}, map full | {base:.1} | {ours:.1} | {ratio:.2} |"
        );
    }
    println!();
}

/// The kernel's own count of a map's memory (`memlock` in its fdinfo, `map_mem_usage`).
fn memlock(map: &aya::maps::Map) -> u64 {
    use std::os::fd::{AsFd, AsRawFd};
    let data = match map {
        aya::maps::Map::LruHashMap(d)
        | aya::maps::Map::HashMap(d)
        | aya::maps::Map::Array(d)
        | aya::maps::Map::PerCpuArray(d)
        | aya::maps::Map::RingBuf(d) => d,
        other => panic!("unexpected map type {other:?}"),
    };
    let fd = data.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("memlock in fdinfo")
}

/// The flow table's memory as the kernel counts it, at the default `--max-flows` and at a
/// million, and every map of the programs.
fn memory() {
    use agent_ebpf::{FlowKey, FlowStats};
    let (key, value) = (size_of::<FlowKey>(), size_of::<FlowStats>());
    println!("### memory (the kernel's count, `memlock` in each map's fdinfo)\n");
    println!(
        "A flow entry holds a {key}-byte key and a {value}-byte value; the kernel adds its own \
         element header (hash and LRU list links).\n"
    );
    println!("| --max-flows | flow table | per entry | every map of the programs |");
    println!("| ---: | ---: | ---: | ---: |");
    for n in [131_072u32, 1 << 20] {
        let ebpf = EbpfLoader::new()
            .map_max_entries("FLOWS", n)
            .load(OBJECT)
            .expect("trustmap object");
        let flows = memlock(ebpf.map("FLOWS").expect("FLOWS"));
        let all: u64 = ebpf.maps().map(|(_, m)| memlock(m)).sum();
        println!(
            "| {n} | {:.1} MiB | {:.0} bytes | {:.1} MiB |",
            flows as f64 / 1048576.0,
            flows as f64 / f64::from(n),
            all as f64 / 1048576.0
        );
    }
    println!();
}

/// Seconds each small-packet measurement runs, and rounds of the three set-ups.
const SMALL_SECONDS: f64 = 2.0;
const SMALL_ROUNDS: usize = 9;
/// UDP payload of the small-packet flood: 64 bytes, as netperf's `UDP_STREAM -m 64`.
const SMALL_PAYLOAD: usize = 64;
/// The small-packet set-ups: nothing attached, the empty program, trustmap's programs attached
/// directly (no agent process), `trustmap observe`.
const ARMS: usize = 4;

/// Programs of `object` on both hooks of the given interfaces by TCX, `ingress` on ingress and
/// `egress` on egress (FLOWS and the rings of trustmap's object are its own, unread). Detached
/// when dropped.
struct AttachedEverywhere {
    // Held for their Drop: the links detach, then the programs are unloaded.
    _links: Vec<aya::programs::tc::SchedClassifierLink>,
    _ebpf: aya::Ebpf,
}

impl AttachedEverywhere {
    fn attach(object: &[u8], ingress: &str, egress: &str, interfaces: &[&str]) -> Self {
        use aya::programs::TcAttachType;
        let mut ebpf = EbpfLoader::new().load(object).expect("object");
        let mut links = Vec::new();
        for (name, hook) in [
            (ingress, TcAttachType::Ingress),
            (egress, TcAttachType::Egress),
        ] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .expect(name)
                .try_into()
                .expect("classifier");
            if prog.fd().is_err() {
                prog.load().expect(name);
            }
            for interface in interfaces {
                let id = prog.attach(interface, hook).expect("attach");
                links.push(prog.take_link(id).expect("take link"));
            }
        }
        Self {
            _links: links,
            _ebpf: ebpf,
        }
    }

    /// The empty program.
    fn nop(interfaces: &[&str]) -> Self {
        Self::attach(BENCH_OBJECT, "nop", "nop", interfaces)
    }

    /// trustmap's programs, as the agent attaches them.
    fn trustmap(interfaces: &[&str]) -> Self {
        Self::attach(OBJECT, "trustmap_ing", "trustmap_egr", interfaces)
    }
}

/// `kernel.bpf_stats_enabled` on while it lives, as it was after.
struct BpfStats(String);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn on() -> Self {
        let was = std::fs::read_to_string(Self::PATH).unwrap_or_default();
        std::fs::write(Self::PATH, "1").expect("enabling bpf_stats");
        Self(was.trim().to_owned())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, if self.0 == "1" { "1" } else { "0" });
    }
}

/// Mean ns per run of the loaded programs named `names`, by the kernel's own accounting
/// (`kernel.bpf_stats_enabled`), and their runs.
fn run_stats(names: &[&str]) -> (f64, u64) {
    let (mut ns, mut runs) = (0u128, 0u64);
    for info in aya::programs::loaded_programs().filter_map(Result::ok) {
        if info.name_as_str().is_some_and(|n| names.contains(&n)) {
            ns += info.run_time().as_nanos();
            runs += info.run_count();
        }
    }
    (ns as f64 / runs.max(1) as f64, runs)
}

/// Small packets pod to pod across the bridge: a UDP flood of 64-byte datagrams (the rate the
/// server receives), and TCP request/response of one byte each way on one connection
/// (transactions per second, and the latency of each). Four set-ups, alternating round by
/// round, each round starting with the next: nothing attached, the empty program on both
/// hooks of both veths, trustmap's programs attached the same way (no agent process), and
/// `trustmap observe`. The client's threads run on CPU 0, the server's on CPU 1.
fn small_packets() {
    small(true);
}

/// Only the programs' cost per run under small-packet traffic (the second table of
/// [`small_packets`]).
fn per_run() {
    small(false);
}

fn small(rates: bool) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let pin = |cpu: usize| {
        let mut set = nix::sched::CpuSet::new();
        if set.set(cpu).is_ok() {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
        }
    };
    let cluster = Cluster::start(&ClusterSpec::client_and_server());
    let (client, server) = (cluster.pod("client"), cluster.pod("server"));
    let pattern = cluster.pod_interface_pattern();
    let veths = [client.host_if.as_str(), server.host_if.as_str()];
    let udp_addr = SocketAddr::new(IpAddr::V4(server.ipv4), 9000);
    let tcp_addr = SocketAddr::new(IpAddr::V4(server.ipv4), 9001);
    let stop = Arc::new(AtomicBool::new(false));
    // The servers, in the server's namespace, for the whole run (bounded: they stop with the
    // flag, or after ten minutes).
    let sink = {
        let stop = stop.clone();
        let sock = in_netns(&server.netns, move || {
            UdpSocket::bind(udp_addr).expect("bind")
        });
        sock.set_read_timeout(Some(Duration::from_millis(50))).ok();
        std::thread::spawn(move || {
            pin(1);
            let started = Instant::now();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                let _ = sock.recv(&mut buf);
            }
        })
    };
    let echo = {
        let stop = stop.clone();
        let listener = in_netns(&server.netns, move || {
            TcpListener::bind(tcp_addr).expect("bind")
        });
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            pin(1);
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                s.set_nonblocking(false).ok();
                s.set_nodelay(true).ok();
                s.set_read_timeout(Some(Duration::from_secs(3))).ok();
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {}
            }
        })
    };
    let client_ns = client.netns.clone();
    // Datagrams that reached the server's UDP layer, whether its socket took them or its full
    // buffer dropped them: every one crossed both veths and the bridge (the sender's CPU does
    // that work, ours included), unlike what the one receiving thread manages to read.
    let server_ns = server.netns.clone();
    let arrived = move || -> u64 {
        in_netns(&server_ns, || {
            let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
            let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
            let (names, values) = (
                udp.next().expect("Udp header"),
                udp.next().expect("Udp values"),
            );
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .filter(|(n, _)| matches!(*n, "InDatagrams" | "RcvbufErrors"))
                .map(|(_, v)| v.parse::<u64>().expect("counter"))
                .sum()
        })
    };
    let udp_rate = || -> f64 {
        let before = arrived();
        let secs = in_netns(&client_ns, move || {
            pin(0);
            let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let payload = [0u8; SMALL_PAYLOAD];
            let started = Instant::now();
            while started.elapsed().as_secs_f64() < SMALL_SECONDS {
                for _ in 0..64 {
                    let _ = sock.send_to(&payload, udp_addr);
                }
            }
            started.elapsed().as_secs_f64()
        });
        std::thread::sleep(Duration::from_millis(100));
        (arrived() - before) as f64 / secs
    };
    let tcp_rr = || -> (f64, f64, f64) {
        let mut lat = in_netns(&client_ns, move || {
            pin(0);
            let mut s =
                TcpStream::connect_timeout(&tcp_addr, Duration::from_secs(3)).expect("connect");
            s.set_nodelay(true).ok();
            s.set_read_timeout(Some(Duration::from_secs(3))).ok();
            let mut lat = Vec::with_capacity(200_000);
            let mut b = [0u8; 1];
            let started = Instant::now();
            while started.elapsed().as_secs_f64() < SMALL_SECONDS && lat.len() < 5_000_000 {
                let t = Instant::now();
                s.write_all(b"x").expect("request");
                s.read_exact(&mut b).expect("response");
                lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
            }
            lat
        });
        let tps = lat.len() as f64 / SMALL_SECONDS;
        lat.sort_by(f64::total_cmp);
        let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
        (tps, at(0.5), at(0.99))
    };
    let start_agent = || {
        let agent = Agent::start(
            "small-packets",
            &["observe", "--interface", &pattern, "--no-pre-existing"],
        );
        // Past its start-up work: the figures are those of the attached programs.
        std::thread::sleep(Duration::from_secs(1));
        agent
    };
    // Per round and set-up (nothing, empty program, trustmap): UDP packets/s, TCP
    // transactions/s, p50 µs, p99 µs.
    let mut rounds: Vec<[[f64; 4]; ARMS]> = Vec::new();
    // The agent's CPU time per second of its arm, per round.
    let mut agent_cpu = Vec::new();
    for r in 0..if rates { SMALL_ROUNDS } else { 0 } {
        let mut round = [[0.0; 4]; ARMS];
        // Each round starts with another set-up, so that none always comes first or last.
        for j in 0..ARMS {
            let i = (r + j) % ARMS;
            let slot = &mut round[i];
            let attached = match i {
                1 => Some(AttachedEverywhere::nop(&veths)),
                2 => Some(AttachedEverywhere::trustmap(&veths)),
                _ => None,
            };
            let agent = (i == 3).then(start_agent);
            let cpu0 = agent.as_ref().map(|a| cpu_seconds(a.pid()));
            let t0 = Instant::now();
            let pps = udp_rate();
            let (tps, p50, p99) = tcp_rr();
            *slot = [pps, tps, p50, p99];
            if let (Some(a), Some(c)) = (&agent, cpu0) {
                agent_cpu.push((cpu_seconds(a.pid()) - c) / t0.elapsed().as_secs_f64());
            }
            drop(attached);
            if let Some(mut agent) = agent {
                agent.stop();
            }
        }
        rounds.push(round);
    }
    // The programs' own cost per run under this traffic, by the kernel's accounting of every
    // run while bpf_stats is on (which adds its own two clock reads to each): the empty
    // program and trustmap's, attached directly, alternating round by round.
    let delta = |names: &[&str], before: (f64, u64)| {
        let (ns, runs) = run_stats(names);
        let total = ns * runs as f64 - before.0 * before.1 as f64;
        (total / (runs - before.1).max(1) as f64, runs - before.1)
    };
    // Per round: (empty, trustmap) ns per run under the UDP flood, then under TCP
    // request/response.
    let mut per_run: Vec<[(f64, f64); 2]> = Vec::new();
    if !rates {
        let _stats = BpfStats::on();
        for _ in 0..SMALL_ROUNDS {
            let mut round = [(0.0, 0.0); 2];
            for ours in [false, true] {
                let (_attached, names): (_, &[&str]) = if ours {
                    (
                        AttachedEverywhere::trustmap(&veths),
                        &["trustmap_ing", "trustmap_egr"],
                    )
                } else {
                    (AttachedEverywhere::nop(&veths), &["nop"])
                };
                let b = run_stats(names);
                udp_rate();
                let udp = delta(names, b).0;
                let b = run_stats(names);
                tcp_rr();
                let tcp = delta(names, b).0;
                for (slot, ns) in round.iter_mut().zip([udp, tcp]) {
                    if ours {
                        slot.1 = ns;
                    } else {
                        slot.0 = ns;
                    }
                }
            }
            per_run.push(round);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = (sink.join(), echo.join());
    if rates {
        print_rates(&rounds);
        println!(
            "The agent used {:.3} cores during its measurements (median of its rounds).\n",
            median(agent_cpu)
        );
        return;
    }
    println!(
        "### ns per program run under small-packet traffic (the kernel's accounting, `bpf_stats_enabled`, which adds two clock reads to every run; programs attached directly, alternating; median of {SMALL_ROUNDS} rounds)\n"
    );
    println!("| traffic | empty program | trustmap | added |");
    println!("| --- | ---: | ---: | ---: |");
    for (k, what) in ["UDP flood", "TCP request/response"]
        .into_iter()
        .enumerate()
    {
        let nop = median(per_run.iter().map(|r| r[k].0).collect());
        let ours = median(per_run.iter().map(|r| r[k].1).collect());
        let added = median(per_run.iter().map(|r| r[k].1 - r[k].0).collect());
        println!("| {what} | {nop:.0} | {ours:.0} | {added:+.0} |");
    }
    println!();
}

/// The small-packet rates: per round and set-up (nothing, empty program, trustmap), UDP
/// packets/s, TCP transactions/s, p50 µs, p99 µs.
fn print_rates(rounds: &[[[f64; 4]; ARMS]]) {
    let col = |arm: usize, k: usize| median(rounds.iter().map(|r| r[arm][k]).collect());
    let ratio = |arm: usize, k: usize| median(rounds.iter().map(|r| r[arm][k] / r[0][k]).collect());
    let added = |arm: usize, k: usize| median(rounds.iter().map(|r| r[arm][k] - r[0][k]).collect());
    println!(
        "### small packets pod to pod across the bridge ({SMALL_SECONDS} s each; the four set-ups alternating; median of {SMALL_ROUNDS} rounds, ratios and differences to nothing attached per round)\n"
    );
    println!(
        "| measure | nothing attached | empty program | trustmap's programs | trustmap observe | empty | programs | observe |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (k, what) in [
        (0, format!("UDP {SMALL_PAYLOAD}-byte datagrams delivered/s")),
        (1, "TCP 1-byte request/response transactions/s".to_owned()),
    ] {
        println!(
            "| {what} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} % | {:.1} % | {:.1} % |",
            col(0, k),
            col(1, k),
            col(2, k),
            col(3, k),
            100.0 * ratio(1, k),
            100.0 * ratio(2, k),
            100.0 * ratio(3, k)
        );
    }
    for (k, q) in [(2, "p50"), (3, "p99")] {
        println!(
            "| TCP request/response {q} latency | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:+.2} µs | {:+.2} µs | {:+.2} µs |",
            col(0, k),
            col(1, k),
            col(2, k),
            col(3, k),
            added(1, k),
            added(2, k),
            added(3, k)
        );
    }
    println!();
}

fn iperf(client_ns: &str, server: IpAddr) -> f64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            client_ns,
            "iperf3",
            "-c",
            &server.to_string(),
            "-t",
            "3",
            "-J",
        ])
        .output()
        .expect("iperf3");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in iperf3 output: {v}"))
}

fn throughput() {
    let cluster = Cluster::start(&ClusterSpec::client_and_server());
    let (client, server) = (cluster.pod("client"), cluster.pod("server"));
    let mut daemon = Command::new("ip")
        .args(["netns", "exec", &server.netns, "iperf3", "-s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 -s");
    std::thread::sleep(Duration::from_millis(300));
    let pattern = cluster.pod_interface_pattern();
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        without.push(iperf(&client.netns, IpAddr::V4(server.ipv4)));
        let mut agent = Agent::start("iperf", &["observe", "--interface", &pattern]);
        with.push(iperf(&client.netns, IpAddr::V4(server.ipv4)));
        agent.stop();
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let (a, b) = (median(without), median(with));
    println!(
        "### iperf3 TCP throughput, pod to pod across veth and bridge (3 s runs, alternating, median of 3)\n"
    );
    println!("| without agent | with agent | ratio |");
    println!("| ---: | ---: | ---: |");
    println!(
        "| {:.2} Gbit/s | {:.2} Gbit/s | {:.1} % |\n",
        a / 1e9,
        b / 1e9,
        100.0 * b / a
    );
}

fn burst() {
    const RATE: u32 = 20_000;
    const SECONDS: u32 = 5;
    let cluster = Cluster::start(&ClusterSpec::client_and_server());
    let (client, server) = (cluster.pod("client"), cluster.pod("server"));
    let pattern = cluster.pod_interface_pattern();
    let mut agent = Agent::start(
        "burst",
        &["observe", "--interface", &pattern, "--max-flows", "262144"],
    );
    let dst = IpAddr::V4(server.ipv4);
    // Each datagram goes to a new (socket, port) pair: a new 5-tuple, so a new connection.
    let (sent, elapsed) = in_netns(&client.netns, move || {
        let socks: Vec<UdpSocket> = (0..2)
            .map(|_| UdpSocket::bind("0.0.0.0:0").expect("bind"))
            .collect();
        let total = RATE * SECONDS;
        let started = Instant::now();
        let mut sent = 0u32;
        while sent < total && started.elapsed() < Duration::from_secs(u64::from(SECONDS) * 3) {
            // Pace in 1 ms slices of RATE/1000 datagrams.
            let due = (started.elapsed().as_micros() as u64 * u64::from(RATE) / 1_000_000) as u32;
            while sent < due.min(total) {
                let sock = &socks[(sent / 50_000) as usize];
                let port = 10_000 + (sent % 50_000) as u16;
                let _ = sock.send_to(b"x", SocketAddr::new(dst, port));
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        (sent, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let records = agent.stop();
    let captured = records
        .iter()
        .filter(|r| r["protocol"] == "UDP" && r["dst"] == dst.to_string())
        .count();
    let dropped = agent.final_counter("events_dropped");
    println!("### burst of new connections (UDP, distinct 5-tuples)\n");
    println!("| generated | in | rate | captured | dropped (counted) | unaccounted |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {sent} | {:.2} s | {:.0}/s | {captured} | {dropped} | {} |\n",
        elapsed.as_secs_f64(),
        f64::from(sent) / elapsed.as_secs_f64(),
        i64::from(sent) - captured as i64 - dropped as i64
    );
}

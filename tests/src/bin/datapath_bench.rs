//! `cargo xtask bench`, datapath part: the figures of BENCHMARKS.md.
//!
//! 1. ns per packet of the TC programs, by BPF_PROG_TEST_RUN, beside the empty pass-through
//!    program `nop` measured in the same run: an established TCP packet repeated; connection
//!    starts as distinct 5-tuples, one per run, so that every packet inserts a flow.
//! 2. iperf3 TCP throughput between two pods across veth and bridge, without and with the agent,
//!    alternating.
//! 3. A burst of new connections: captured against generated, with the drop counter.
//! 4. The whole agent (`trustmap agent`) under 10 000 new connections per second: its CPU and
//!    its memory once it tracks 100 000 flows and holds 20 000 edges.

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

const ROUNDS: usize = 5;

fn main() {
    require_root();
    println!("## trustmap datapath benchmark\n");
    machine();
    per_packet();
    throughput();
    burst();
    agent_load();
    attach_latency();
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

fn per_packet() {
    const REPEAT: u32 = 1_000_000;
    let mut bench = EbpfLoader::new().load(BENCH_OBJECT).expect("bench object");
    let nop: &mut SchedClassifier = bench
        .program_mut("nop")
        .expect("nop")
        .try_into()
        .expect("classifier");
    nop.load().expect("load nop");
    // Established path: a long idle timeout, the SYN once, then the ACKs.
    let never = u64::MAX / 4;
    let mut est = EbpfLoader::new()
        .override_global("IDLE_TIMEOUT_NS", &never, true)
        .load(OBJECT)
        .expect("trustmap object");
    let ing: &mut SchedClassifier = est
        .program_mut("trustmap_ing")
        .expect("trustmap_ing")
        .try_into()
        .expect("classifier");
    ing.load().expect("load trustmap_ing");
    // Connection-start path: the default idle timeout, and a packet of a 5-tuple never seen
    // before for every run, so that each one inserts a flow.
    let mut start = EbpfLoader::new().load(OBJECT).expect("trustmap object");
    let mut ring = RingBuf::try_from(start.take_map("EVENTS").expect("EVENTS")).expect("ring");
    let start_prog: &mut SchedClassifier = start
        .program_mut("trustmap_ing")
        .expect("trustmap_ing")
        .try_into()
        .expect("classifier");
    start_prog.load().expect("load");

    println!("### ns per packet (BPF_PROG_TEST_RUN, median of {ROUNDS} runs)\n");
    println!("| packet | path | nop ns | trustmap ns | ratio |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let nop = &*nop;
    let ing = &*ing;
    let start_prog = &*start_prog;
    for (name, syn, ack) in [
        ("IPv4 TCP", ipv4(6, tcp(0x02)), ipv4(6, tcp(0x10))),
        ("IPv6 TCP", ipv6(6, tcp(0x02)), ipv6(6, tcp(0x10))),
    ] {
        run_ns(ing, &syn, 1);
        let base = median((0..ROUNDS).map(|_| run_ns(nop, &ack, REPEAT)).collect());
        let ours = median((0..ROUNDS).map(|_| run_ns(ing, &ack, REPEAT)).collect());
        println!(
            "| {name} | established | {base:.1} | {ours:.1} | {:.2} |",
            ours / base
        );
    }
    // One packet per BPF_PROG_TEST_RUN call, for both programs: the kernel's timing of one
    // run is in both figures. Source ports and addresses differ in every packet of a run.
    const STARTS: usize = 20_000;
    let distinct = |v6: bool, round: usize| -> Vec<Vec<u8>> {
        (0..STARTS)
            .map(|i| {
                let port = 1024 + (i % 60_000) as u16;
                let mut p = if v6 {
                    ipv6(17, udp_from(port))
                } else {
                    ipv4(17, udp_from(port))
                };
                // The source address's last octets: the round, and which 60 000 block.
                let (at, len) = if v6 {
                    (14 + 8 + 14, 2)
                } else {
                    (14 + 12 + 2, 2)
                };
                let tag = ((round as u16) << 4) | (i / 60_000) as u16;
                p[at..at + len].copy_from_slice(&tag.to_be_bytes());
                p
            })
            .collect()
    };
    for (name, v6) in [("IPv4 UDP", false), ("IPv6 UDP", true)] {
        let mut base_runs = Vec::new();
        let mut our_runs = Vec::new();
        for round in 0..ROUNDS {
            let pkts = distinct(v6, round + if v6 { ROUNDS } else { 0 });
            let mut b = Vec::with_capacity(STARTS);
            let mut o = Vec::with_capacity(STARTS);
            for (i, p) in pkts.iter().enumerate() {
                b.push(run_ns(nop, p, 1));
                o.push(run_ns(start_prog, p, 1));
                if i % 1_000 == 999 {
                    while ring.next().is_some() {}
                }
            }
            while ring.next().is_some() {}
            base_runs.push(b.iter().sum::<f64>() / STARTS as f64);
            our_runs.push(o.iter().sum::<f64>() / STARTS as f64);
        }
        let (base, ours) = (median(base_runs), median(our_runs));
        println!(
            "| {name} | connection start (distinct 5-tuples) | {base:.1} | {ours:.1} | {:.2} |",
            ours / base
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

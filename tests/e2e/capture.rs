//! Capture has no silent blind spots: a full ring buffer, a device without a link-layer header
//! (netkit in L3 mode), an LRU eviction in the middle of a UDP conversation, and an interface
//! whose CNI hides one direction from our hook.

use std::{
    fs,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use agent_ebpf::{FlowEvent, event_kind, outcome};
use aya::programs::TcAttachType;
use etherparse::PacketBuilder;
use trustmap::datapath::{Config, Datapath, drain};
use trustmap_e2e::{
    Agent, Cluster, ClusterSpec, CniStandin, TcpServer, UdpServer, in_netns,
    manifests::{self, PodOptions},
    require_root, run_trustmap, tcp_connect,
};

use crate::{
    learn::verdicts,
    observe::{assert_exact, expect},
};

const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// One byte from the client, one back from the server.
fn round_trip(client: &mut TcpStream, server: &mut TcpStream) {
    let mut b = [0u8; 1];
    client.write_all(b"x").expect("write");
    server.read_exact(&mut b).expect("read");
    server.write_all(b"y").expect("write back");
    client.read_exact(&mut b).expect("read back");
}

fn outcomes(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or("none").to_owned())
        .collect()
}

/// What a test expects of one event: kind, outcome, protocol, source, destination and ports.
type EventKey = (u8, u8, u8, IpAddr, u16, IpAddr, u16);

fn event_key(ev: &FlowEvent) -> EventKey {
    let ip = |w: [u32; 4]| -> IpAddr {
        let mut b = [0u8; 16];
        for (i, x) in w.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&x.to_ne_bytes());
        }
        if ev.family == 4 {
            IpAddr::from([b[0], b[1], b[2], b[3]])
        } else {
            IpAddr::from(b)
        }
    };
    (
        ev.kind,
        ev.outcome,
        ev.proto,
        ip(ev.src),
        ev.src_port,
        ip(ev.dst),
        ev.dst_port,
    )
}

/// A TCP SYN as an IP packet, checksums included.
fn syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    let builder = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let builder = builder.tcp(sport, dport, 1000, 64_240).syn();
    let mut out = Vec::with_capacity(builder.size(0));
    builder.write(&mut out, &[]).expect("build SYN");
    out
}

/// Opens a TUN device (no packet information header) in the calling thread's namespace.
fn open_tun(name: &str) -> fs::File {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    // struct ifreq: the name, then the flags of the union.
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which the 40-byte buffer holds.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            TUNSETIFF as _,
            ifr.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    file
}

/// netkit in L3 mode hands the programs packets that start at the IP header. This kernel is
/// built without netkit (CONFIG_NETKIT is not set), so the L3 programs are tested on the other
/// device of that kind at hand, a TUN device: SYNs written into it arrive on its ingress hook,
/// the kernel's SYN-ACKs and RSTs leave through its egress hook.
#[test]
fn capture_parses_packets_without_a_link_layer_header() {
    require_root();
    let cluster = Cluster::start(&ClusterSpec::new(1).pod(1, "l3", &[("app", "l3")]));
    let netns = cluster.pod("l3").netns.clone();
    let ns = netns.clone();
    let (events, counters) = in_netns(&netns, move || {
        let tun = open_tun("tl3");
        for args in [
            &["addr", "add", "198.18.20.1/24", "dev", "tl3"][..],
            &["addr", "add", "fd00:20::1/64", "dev", "tl3", "nodad"],
            &["link", "set", "tl3", "up"],
        ] {
            let ok = std::process::Command::new("ip")
                .args(["-n", &ns])
                .args(args)
                .status()
                .expect("ip");
            assert!(ok.success(), "ip {args:?}");
        }
        let listener = TcpListener::bind("198.18.20.1:80").expect("bind");
        let (mut dp, mut ring, _dns) = Datapath::load(&Config::default()).expect("load programs");
        // SAFETY: if_nametoindex reads a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c"tl3".as_ptr()) };
        dp.attach(ifindex, "tl3", false, true)
            .expect("attach L3 programs");
        let mut tun = &tun;
        let (v4, peer4): (IpAddr, IpAddr) = (
            "198.18.20.1".parse().unwrap(),
            "198.18.20.2".parse().unwrap(),
        );
        let (v6, peer6): (IpAddr, IpAddr) =
            ("fd00:20::1".parse().unwrap(), "fd00:20::2".parse().unwrap());
        for pkt in [
            syn(peer4, v4, 40_000, 80),
            syn(peer4, v4, 40_001, 81),
            syn(peer6, v6, 40_002, 81),
        ] {
            tun.write_all(&pkt).expect("write into the TUN device");
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut events = Vec::new();
        drain(&mut ring, |ev: agent_ebpf::FlowEvent| {
            events.push(event_key(&ev))
        });
        let counters = dp.counters();
        drop(listener);
        (events, counters)
    });
    let (peer4, v4): (IpAddr, IpAddr) = (
        "198.18.20.2".parse().unwrap(),
        "198.18.20.1".parse().unwrap(),
    );
    let (peer6, v6): (IpAddr, IpAddr) =
        ("fd00:20::2".parse().unwrap(), "fd00:20::1".parse().unwrap());
    let (start, settled) = (event_kind::START, event_kind::OUTCOME);
    let (pending, answered, refused) = (outcome::PENDING, outcome::ANSWERED, outcome::REFUSED);
    let tcp = 6;
    let mut got = events.clone();
    got.sort();
    let mut want = vec![
        (start, pending, tcp, peer4, 40_000, v4, 80),
        (settled, answered, tcp, peer4, 40_000, v4, 80),
        (start, pending, tcp, peer4, 40_001, v4, 81),
        (settled, refused, tcp, peer4, 40_001, v4, 81),
        (start, pending, tcp, peer6, 40_002, v6, 81),
        (settled, refused, tcp, peer6, 40_002, v6, 81),
    ];
    want.sort();
    assert_eq!(got, want, "{counters:?}");
    assert_eq!(
        (counters.malformed, counters.non_ip),
        (0, 0),
        "{counters:?}"
    );
}

#[test]
fn capture_reports_each_connection_a_full_ring_buffer_lost_by_its_next_packet() {
    require_root();
    let cluster = Cluster::start(&ClusterSpec::client_and_server());
    let (client, server) = (cluster.pod("client"), cluster.pod("server"));
    let pattern = cluster.pod_interface_pattern();
    // One page of ring buffer holds 64 events; each connection below writes two (start and
    // answer) while the agent cannot read them.
    let mut agent = Agent::start(
        "ring-full",
        &[
            "observe",
            "--interface",
            &pattern,
            "--ring-buffer-kib",
            "4",
            "--answer-timeout",
            "60",
            "--no-pre-existing",
        ],
    );
    let addr = SocketAddr::new(IpAddr::V4(server.ipv4), 7000);
    let listener = in_netns(&server.netns, move || {
        TcpListener::bind(addr).expect("bind")
    });
    let pid = nix::unistd::Pid::from_raw(agent.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    const N: usize = 40;
    let mut pairs: Vec<(TcpStream, TcpStream)> = Vec::with_capacity(N);
    for _ in 0..N {
        let stream = in_netns(&client.netns, move || {
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect")
        });
        let (accepted, _) = listener.accept().expect("accept");
        pairs.push((stream, accepted));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    std::thread::sleep(Duration::from_millis(300));
    // Each connection's next packets, both ways.
    for (stream, accepted) in &mut pairs {
        stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
        accepted.set_read_timeout(Some(IO_TIMEOUT)).ok();
        round_trip(stream, accepted);
    }
    std::thread::sleep(Duration::from_millis(300));
    let records = agent.stop();
    let expected = pairs
        .iter()
        .map(|(s, _)| {
            let local = s.local_addr().expect("local addr");
            expect(
                "TCP",
                IpAddr::V4(client.ipv4),
                Some(local.port()),
                IpAddr::V4(server.ipv4),
                Some(7000),
                &client.host_if,
                "syn",
            )
        })
        .collect();
    assert_exact(&records, expected);
    assert_eq!(outcomes(&records), vec!["answered"; N], "{records:#?}");
    let dropped = agent.final_counter("events_dropped");
    assert!(
        dropped >= (2 * N - 64) as u64,
        "only {dropped} events were dropped: the ring buffer was not full\n{}",
        agent.log_text()
    );
    drop((pairs, listener));
}

#[test]
fn capture_keeps_a_udp_conversation_oriented_after_its_entry_is_evicted() {
    require_root();
    let cluster = Cluster::start(
        &ClusterSpec::new(1)
            .pod(1, "client", &[("app", "client")])
            .pod(1, "server", &[("app", "server")])
            .pod(1, "filler", &[("app", "filler")]),
    );
    let (client, server, filler) = (
        cluster.pod("client"),
        cluster.pod("server"),
        cluster.pod("filler"),
    );
    let pattern = cluster.pod_interface_pattern();
    let mut agent = Agent::start(
        "lru-udp",
        &[
            "observe",
            "--interface",
            &pattern,
            "--max-flows",
            "64",
            "--answer-timeout",
            "1",
            "--no-pre-existing",
        ],
    );
    let server_addr = SocketAddr::new(IpAddr::V4(server.ipv4), 5353);
    let srv = in_netns(&server.netns, move || {
        UdpSocket::bind(server_addr).expect("bind")
    });
    let cli = in_netns(&client.netns, || {
        UdpSocket::bind("0.0.0.0:0").expect("bind")
    });
    for s in [&srv, &cli] {
        s.set_read_timeout(Some(IO_TIMEOUT)).ok();
    }
    let mut buf = [0u8; 16];
    cli.send_to(b"q1", server_addr).expect("send");
    let (_, client_addr) = srv.recv_from(&mut buf).expect("server receives");
    srv.send_to(b"a1", client_addr).expect("answer");
    cli.recv_from(&mut buf).expect("client receives");

    // Newer conversations, each answered (so as recently used as ours), push the live one out
    // of the 64-entry table. The kernel's LRU keeps per-CPU lists of new entries, so the
    // filler runs on every CPU in turn: a packet is handled on the CPU of its sender.
    let echo = SocketAddr::new(IpAddr::V4(server.ipv4), 6000);
    let _echo = UdpServer::start(&server.netns, echo);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for cpu in 0..cpus {
        in_netns(&filler.netns, move || {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu).expect("cpu index");
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin");
            for _ in 0..200 {
                let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                s.set_read_timeout(Some(IO_TIMEOUT)).ok();
                s.send_to(b"f", echo).expect("send");
                let mut b = [0u8; 4];
                s.recv_from(&mut b).expect("echo");
            }
        });
    }
    // Past the flow cache's freshness (100 jiffies, at most a second): until then the
    // conversation's packets skip the flow table, evicted entry or not.
    std::thread::sleep(Duration::from_millis(1_100));
    // The server speaks first now, as a DNS server sending a late second answer would.
    srv.send_to(b"a2", client_addr).expect("late answer");
    cli.recv_from(&mut buf)
        .expect("client receives the late answer");
    cli.send_to(b"q2", server_addr).expect("send");
    srv.recv_from(&mut buf).expect("server receives");
    std::thread::sleep(Duration::from_millis(300));
    let records = agent.stop();

    let ours: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| {
            [&r["src"], &r["dst"]]
                .iter()
                .any(|a| a.as_str() == Some(&client.ipv4.to_string()))
        })
        .cloned()
        .collect();
    let c = (IpAddr::V4(client.ipv4), client_addr.port());
    let s = (IpAddr::V4(server.ipv4), 5353);
    // The second start is the eviction's trace: capture cannot know who began it, says so
    // (`first_seen`), and reports it as it saw it.
    assert_exact(
        &ours,
        vec![
            expect(
                "UDP",
                c.0,
                Some(c.1),
                s.0,
                Some(s.1),
                &client.host_if,
                "first_seen",
            ),
            expect(
                "UDP",
                s.0,
                Some(s.1),
                c.0,
                Some(c.1),
                &server.host_if,
                "first_seen",
            ),
        ],
    );

    // Learning orients it by the server port: the policies allow the client to the server's
    // port, and nothing from the server to the client's ephemeral port.
    let dir = std::env::temp_dir().join(format!("trustmap-e2e-lru-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let flows = dir.join("flows.jsonl");
    fs::write(
        &flows,
        ours.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .unwrap();
    let manifests_file = dir.join("cluster.yaml");
    let mut m = manifests::namespace("e2e", &[]);
    let no_ports = PodOptions {
        owner: None,
        ports: &[],
    };
    m += &manifests::pod(client, "e2e", &no_ports);
    m += &manifests::pod(
        server,
        "e2e",
        &PodOptions {
            owner: None,
            ports: &[(5353, Some("dns"), "UDP")],
        },
    );
    fs::write(&manifests_file, m).unwrap();
    let learned = dir.join("learned");
    let (ok, _, stderr) = run_trustmap(&[
        "learn",
        "--manifests",
        manifests_file.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "--output",
        learned.to_str().unwrap(),
    ]);
    assert!(ok, "learn failed: {stderr}");
    let probe = |src: IpAddr, dst: IpAddr, port: u16| {
        format!(r#"{{"protocol":"UDP","src":"{src}","dst":"{dst}","port":{port}}}"#)
    };
    let probes = dir.join("probes.jsonl");
    fs::write(
        &probes,
        [probe(c.0, s.0, 5353), probe(s.0, c.0, c.1)].join("\n") + "\n",
    )
    .unwrap();
    let verdicts: Vec<String> = verdicts(&manifests_file, &learned, &probes)
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(verdicts, ["allow", "deny"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn capture_warns_about_an_interface_it_sees_one_way() {
    require_root();
    let cluster = Cluster::start(&ClusterSpec::client_and_server());
    let (client, server) = (cluster.pod("client"), cluster.pod("server"));
    let pattern = cluster.pod_interface_pattern();
    let mut agent = Agent::start("one-way", &["observe", "--interface", &pattern]);
    // A "CNI" in front of us on the way into the client pod ends the hook there, as a redirect
    // to the pod's peer does: our program never sees those packets.
    let standin = CniStandin::attach_first(&client.host_if, TcAttachType::Egress);
    let _server = TcpServer::start(&server.netns, SocketAddr::new(IpAddr::V4(server.ipv4), 80));
    for _ in 0..20 {
        tcp_connect(&client.netns, SocketAddr::new(IpAddr::V4(server.ipv4), 80));
    }
    std::thread::sleep(Duration::from_millis(200));
    agent.stop();
    assert!(standin.packets() >= 20, "the stand-in saw nothing");
    let log = agent.log_text();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("one direction only"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].contains(&format!("interface=\"{}\"", client.host_if))
            && warned[0].contains("to_pod=0"),
        "{}",
        warned[0]
    );
    assert_eq!(agent.final_counter("one_direction"), 1, "{log}");
}

#[test]
fn capture_counts_packets_only_with_flow_stats() {
    require_root();
    let cluster = Cluster::start(&ClusterSpec::client_and_server());
    let (client, server) = (cluster.pod("client"), cluster.pod("server"));
    let pattern = cluster.pod_interface_pattern();
    let addr = SocketAddr::new(IpAddr::V4(server.ipv4), 7001);
    let listener = in_netns(&server.netns, move || {
        TcpListener::bind(addr).expect("bind")
    });
    const ROUND_TRIPS: u64 = 50;
    for flow_stats in [false, true] {
        let mut args = vec!["observe", "--interface", &pattern, "--no-pre-existing"];
        if flow_stats {
            args.push("--flow-stats");
        }
        let mut agent = Agent::start("flow-stats", &args);
        let mut stream = in_netns(&client.netns, move || {
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect")
        });
        let (mut accepted, _) = listener.accept().expect("accept");
        for s in [&stream, &accepted] {
            s.set_read_timeout(Some(IO_TIMEOUT)).ok();
        }
        for _ in 0..ROUND_TRIPS {
            round_trip(&mut stream, &mut accepted);
        }
        let local = stream.local_addr().expect("local addr");
        drop((stream, accepted));
        std::thread::sleep(Duration::from_millis(200));
        let records = agent.stop();
        // The same single connection either way: counting changes no record.
        assert_exact(
            &records,
            vec![expect(
                "TCP",
                IpAddr::V4(client.ipv4),
                Some(local.port()),
                IpAddr::V4(server.ipv4),
                Some(7001),
                &client.host_if,
                "syn",
            )],
        );
        assert_eq!(outcomes(&records), vec!["answered"], "{records:#?}");
        let packets = agent.final_counter("packets");
        if flow_stats {
            // Each data packet passes two of our hooks: the sender's veth, the receiver's.
            assert!(
                packets >= 4 * ROUND_TRIPS,
                "only {packets} packets counted with --flow-stats"
            );
        } else {
            assert_eq!(packets, 0, "packets counted without --flow-stats");
        }
    }
}

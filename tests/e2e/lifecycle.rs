//! Attachment lifecycle: coexistence with other filters, nothing left behind after a clean stop,
//! SIGKILL recovery, and traffic that never stops flowing through any of it.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use trustmap_e2e::{
    Agent, Cluster, ClusterSpec, CniStandin, UdpServer, attached_programs, in_netns, require_root,
    udp_request,
};

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn ours(interface: &str) -> Vec<String> {
    attached_programs(interface)
        .into_iter()
        .filter(|p| p.contains("trustmap"))
        .collect()
}

fn assert_nothing_of_ours(cluster: &Cluster) {
    for pod in cluster.pods() {
        let left = ours(&pod.host_if);
        assert!(
            left.is_empty(),
            "left attached on {}: {left:?}",
            pod.host_if
        );
        let q = sh(&["tc", "qdisc", "show", "dev", &pod.host_if]);
        assert!(
            !q.contains("clsact"),
            "clsact qdisc left on {}:\n{q}",
            pod.host_if
        );
    }
}

fn two_pods() -> Cluster {
    Cluster::start(&ClusterSpec::client_and_server())
}

#[test]
fn clean_stop_leaves_nothing_attached_in_either_mode() {
    require_root();
    let cluster = two_pods();
    let pattern = cluster.pod_interface_pattern();
    for mode in ["tcx", "clsact"] {
        let mut agent = Agent::start(
            &format!("clean-{mode}"),
            &["observe", "--interface", &pattern, "--attach-mode", mode],
        );
        let a = ours(&cluster.pod("client").host_if);
        assert_eq!(a.len(), 2, "{mode}: not attached to both hooks: {a:?}");
        assert!(
            a.iter()
                .all(|p| p.starts_with(if mode == "tcx" { "tcx/" } else { "clsact/" }))
        );
        agent.stop();
        assert_nothing_of_ours(&cluster);
    }
}

#[test]
fn a_cni_filter_already_on_the_interface_keeps_running_beside_the_agent() {
    require_root();
    let cluster = two_pods();
    let (client, server) = (cluster.pod("client"), cluster.pod("server"));
    let pattern = cluster.pod_interface_pattern();
    let _udp = UdpServer::start(
        &server.netns,
        SocketAddr::new(IpAddr::V4(server.ipv4), 7000),
    );
    for (mode, clsact) in [("tcx", false), ("clsact", true)] {
        // The stand-in returns TC_ACT_OK, which ends the hook: whoever runs after it sees nothing.
        let standin = CniStandin::attach(&client.host_if, clsact);
        let mut agent = Agent::start(
            &format!("coexist-{mode}"),
            &["observe", "--interface", &pattern, "--attach-mode", mode],
        );
        let before = standin.packets();
        for _ in 0..5 {
            udp_request(
                &client.netns,
                SocketAddr::new(IpAddr::V4(server.ipv4), 7000),
            );
        }
        let after = standin.packets();
        let records = agent.stop();
        assert!(
            after >= before + 5,
            "{mode}: the CNI's filter stopped seeing packets: {before} -> {after}"
        );
        assert_eq!(
            records.len(),
            5,
            "{mode}: the agent missed flows: {records:#?}"
        );
        // Ours is gone, theirs is still there.
        let left = attached_programs(&client.host_if);
        assert!(
            left.iter().all(|p| !p.contains("trustmap"))
                && left.iter().any(|p| p.contains("cni_standin")),
            "{mode}: {left:?}"
        );
        drop(standin);
    }
}

/// Sends UDP datagrams from client to an echo server every few milliseconds until stopped or
/// bounded out, and counts the answers.
struct Ping {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u32, u32, Vec<u32>)>>,
}

impl Ping {
    fn start(netns: &str, dst: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = netns.to_owned();
        let thread = std::thread::spawn(move || {
            in_netns(&ns, move || {
                let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
                sock.set_read_timeout(Some(Duration::from_millis(5))).ok();
                let mut sent = 0u32;
                let mut echoed = std::collections::HashSet::new();
                let started = Instant::now();
                let mut buf = [0u8; 16];
                let mut collect =
                    |sock: &UdpSocket, echoed: &mut std::collections::HashSet<u32>| {
                        while let Ok((4, _)) = sock.recv_from(&mut buf) {
                            echoed.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                        }
                    };
                while !flag.load(Ordering::Relaxed)
                    && sent < 20_000
                    && started.elapsed() < Duration::from_secs(60)
                {
                    sock.send_to(&sent.to_be_bytes(), dst).expect("send");
                    sent += 1;
                    collect(&sock, &mut echoed);
                }
                // Late answers still count: a slow machine is not a lost packet.
                sock.set_read_timeout(Some(Duration::from_secs(1))).ok();
                collect(&sock, &mut echoed);
                let missing: Vec<u32> = (0..sent).filter(|n| !echoed.contains(n)).collect();
                (sent, echoed.len() as u32, missing)
            })
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u32, u32, Vec<u32>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("thread")
            .join()
            .expect("ping thread")
    }
}

impl Drop for Ping {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn sigkill_leaves_no_orphan_and_tcx_traffic_flows_through_start_stop_and_kill() {
    require_root();
    let cluster = two_pods();
    let (client, server) = (cluster.pod("client"), cluster.pod("server"));
    let pattern = cluster.pod_interface_pattern();
    let _echo = UdpServer::start(
        &server.netns,
        SocketAddr::new(IpAddr::V4(server.ipv4), 7001),
    );
    // Continuity is asserted over the TCX cycles: attaching a TCX link changes no qdisc. Adding
    // or deleting a clsact qdisc (needed on kernels before 6.6) can itself drop a packet in
    // flight; we measured that with `tc qdisc add/del` alone, without trustmap.
    let mut ping = Some(Ping::start(
        &client.netns,
        SocketAddr::new(IpAddr::V4(server.ipv4), 7001),
    ));
    let mut continuity = None;

    for mode in ["tcx", "clsact"] {
        if mode == "clsact"
            && let Some(p) = ping.take()
        {
            continuity = Some(p.finish());
        }
        // Start, then SIGKILL: TCX links die with the process; clsact filters stay behind.
        let mut killed = Agent::start(
            &format!("kill-{mode}"),
            &["observe", "--interface", &pattern, "--attach-mode", mode],
        );
        std::thread::sleep(Duration::from_millis(150));
        killed.signal_and_wait(libc::SIGKILL);
        let left = ours(&client.host_if);
        if mode == "tcx" {
            assert!(left.is_empty(), "TCX link outlived SIGKILL: {left:?}");
        }
        // The next start replaces whatever was left: exactly one attachment of ours per hook.
        let mut next = Agent::start(
            &format!("restart-{mode}"),
            &["observe", "--interface", &pattern, "--attach-mode", mode],
        );
        if mode == "clsact" {
            assert_eq!(
                left.len(),
                2,
                "clsact filters should outlive SIGKILL: {left:?}"
            );
            assert!(
                next.log_text()
                    .contains("removed a filter left by an earlier run")
            );
        }
        let now = ours(&client.host_if);
        assert_eq!(now.len(), 2, "{mode}: double attachment: {now:?}");
        next.stop();
        assert_nothing_of_ours(&cluster);
    }
    let (sent, got, missing) = continuity.expect("ping ran over the TCX cycles");
    assert!(sent > 20, "too little traffic to judge: {sent}");
    assert_eq!(
        got, sent,
        "packets lost while the agent started, stopped and was killed: {missing:?}"
    );
}

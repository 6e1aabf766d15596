//! Real traffic between the cluster's namespaces, bounded in count and time.
//!
//! A socket belongs to the network namespace of the thread that creates it, so each helper runs
//! on a fresh thread that first enters the pod's namespace.

use std::{
    fs::File,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// No server thread lives longer than this, whatever the test does.
const SERVER_LIFETIME: Duration = Duration::from_secs(600);

/// Runs `f` on a thread inside the network namespace `netns` and returns its result.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_netns(netns, f)
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

pub(crate) fn spawn_in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

/// A TCP server in a namespace: accepts, reads what the client sends, answers `ok`.
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl TcpServer {
    pub fn start(netns: &str, addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = spawn_in_netns(netns, move || {
            let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            listener.set_nonblocking(true).expect("nonblocking");
            tx.send(()).expect("signal ready");
            let started = Instant::now();
            let mut served = 0;
            while !flag.load(Ordering::Relaxed) && started.elapsed() < SERVER_LIFETIME {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).ok();
                        s.set_read_timeout(Some(IO_TIMEOUT)).ok();
                        let mut buf = [0u8; 64];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(b"ok");
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            served
        });
        rx.recv_timeout(IO_TIMEOUT)
            .expect("TCP server did not start");
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the server and returns how many connections it served.
    pub fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP echo server in a namespace.
pub struct UdpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    pub fn start(netns: &str, addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = spawn_in_netns(netns, move || {
            let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            sock.set_read_timeout(Some(Duration::from_millis(20))).ok();
            tx.send(()).expect("signal ready");
            let started = Instant::now();
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) && started.elapsed() < SERVER_LIFETIME {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        });
        rx.recv_timeout(IO_TIMEOUT)
            .expect("UDP server did not start");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from `netns` to `dst`, sends a greeting, reads the answer and closes. Returns the
/// client's address, whose port the flow record must carry as `src_port`.
pub fn tcp_connect(netns: &str, dst: SocketAddr) -> SocketAddr {
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&dst, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {dst}: {e}"));
        s.set_read_timeout(Some(IO_TIMEOUT)).ok();
        s.write_all(b"hello").expect("write");
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).expect("read answer");
        assert_eq!(&buf, b"ok");
        s.local_addr().expect("local addr")
    })
}

/// Tries to connect to a destination that never answers; returns the client port after the
/// attempt times out (the kernel retransmits the SYN meanwhile).
pub fn tcp_connect_unanswered(netns: &str, dst: SocketAddr, wait: Duration) -> u16 {
    in_netns(netns, move || {
        let domain = Domain::for_address(dst);
        let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        let any: SocketAddr = match dst {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("addr"),
            SocketAddr::V6(_) => "[::]:0".parse().expect("addr"),
        };
        s.bind(&any.into()).expect("bind");
        let port = s
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .expect("local port");
        let res = s.connect_timeout(&SockAddr::from(dst), wait);
        assert!(res.is_err(), "connection to {dst} was answered");
        port
    })
}

/// Sends one datagram from `netns` to `dst` and waits for the echo. Returns the client address.
pub fn udp_request(netns: &str, dst: SocketAddr) -> SocketAddr {
    in_netns(netns, move || {
        let any: SocketAddr = match dst {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("addr"),
            SocketAddr::V6(_) => "[::]:0".parse().expect("addr"),
        };
        let sock = UdpSocket::bind(any).expect("bind");
        sock.set_read_timeout(Some(IO_TIMEOUT)).ok();
        sock.send_to(b"ping", dst).expect("send");
        let mut buf = [0u8; 16];
        let (n, from) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no UDP answer from {dst}: {e}"));
        assert_eq!((&buf[..n], from), (&b"ping"[..], dst));
        sock.local_addr().expect("local addr")
    })
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one ICMP or ICMPv6 echo request with identifier `id` and waits for the reply.
pub fn icmp_echo(netns: &str, dst: IpAddr, id: u16) {
    in_netns(netns, move || {
        let (domain, proto, ty) = match dst {
            IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8),
            IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8),
        };
        let sock = Socket::new(domain, Type::RAW, Some(proto)).expect("raw ICMP socket");
        sock.set_read_timeout(Some(IO_TIMEOUT)).ok();
        let mut pkt = vec![ty, 0, 0, 0];
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(&1u16.to_be_bytes());
        pkt.extend_from_slice(b"trustmap");
        if dst.is_ipv4() {
            let c = checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        }
        // ICMPv6 raw sockets get their checksum from the kernel.
        sock.send_to(&pkt, &SocketAddr::new(dst, 0).into())
            .expect("send echo");
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
        while Instant::now() < deadline {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            // SAFETY: recv_from initialised the first n bytes.
            let bytes: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            // IPv4 raw sockets include the IP header; IPv6 ones do not.
            let icmp = if dst.is_ipv4() {
                &bytes[usize::from(bytes[0] & 0x0f) * 4..]
            } else {
                &bytes[..]
            };
            let reply = if dst.is_ipv4() { 0 } else { 129 };
            if icmp.len() >= 6 && icmp[0] == reply && icmp[4..6] == id.to_be_bytes() {
                return;
            }
        }
        panic!("no echo reply from {dst}");
    })
}

fn crc32c(data: &[u8]) -> u32 {
    let mut crc: u32 = !0;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Sends an SCTP INIT, built by hand on a raw IP socket (there is no SCTP module on the test
/// machines). Nothing answers it.
pub fn sctp_init(netns: &str, dst: IpAddr, src_port: u16, dst_port: u16) {
    in_netns(netns, move || {
        let domain = if dst.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let sock = Socket::new(domain, Type::RAW, Some(Protocol::from(132))).expect("raw socket");
        let mut pkt = Vec::new();
        pkt.extend_from_slice(&src_port.to_be_bytes());
        pkt.extend_from_slice(&dst_port.to_be_bytes());
        pkt.extend_from_slice(&0u32.to_be_bytes()); // verification tag: 0 in an INIT
        pkt.extend_from_slice(&0u32.to_be_bytes()); // checksum, below
        // INIT chunk: type 1, flags 0, length 20, initiate tag, a_rwnd, streams, initial TSN.
        pkt.extend_from_slice(&[1, 0, 0, 20]);
        pkt.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        pkt.extend_from_slice(&65_535u32.to_be_bytes());
        pkt.extend_from_slice(&1u16.to_be_bytes());
        pkt.extend_from_slice(&1u16.to_be_bytes());
        pkt.extend_from_slice(&1u32.to_be_bytes());
        let crc = crc32c(&pkt);
        pkt[8..12].copy_from_slice(&crc.to_le_bytes());
        sock.send_to(&pkt, &SocketAddr::new(dst, 0).into())
            .expect("send SCTP INIT");
    })
}

/// Sends hand-made malformed Ethernet frames out of the pod's eth0 to `dst_mac`. Returns how
/// many were sent; each must be counted as malformed and none may become a flow.
pub fn craft_malformed_frames(netns: &str, dst_mac: [u8; 6]) -> usize {
    in_netns(netns, move || {
        let frames = malformed_frames(dst_mac);
        // SAFETY: plain socket syscalls on values we own.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            );
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let ifindex = libc::if_nametoindex(c"eth0".as_ptr());
            assert!(
                ifindex > 0,
                "no eth0 in {}",
                std::thread::current().name().unwrap_or("")
            );
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&dst_mac);
            for f in &frames {
                let n = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(n, f.len() as isize, "{}", std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
        frames.len()
    })
}

fn malformed_frames(dst_mac: [u8; 6]) -> Vec<Vec<u8>> {
    let eth = |ethertype: u16| -> Vec<u8> {
        let mut f = dst_mac.to_vec();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    };
    let ipv4 = |ver_ihl: u8, proto: u8, payload: &[u8]| -> Vec<u8> {
        let mut f = eth(0x0800);
        let total = 20 + payload.len() as u16;
        f.extend_from_slice(&[ver_ihl, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&[198, 18, 1, 250, 198, 18, 1, 251]);
        f.extend_from_slice(payload);
        f
    };
    let ipv6 = |next: u8, payload: &[u8]| -> Vec<u8> {
        let mut f = eth(0x86DD);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&[next, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xfa]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xfb]);
        f.extend_from_slice(payload);
        f
    };
    let mut truncated_ip = eth(0x0800);
    truncated_ip.extend_from_slice(&[0x45, 0, 0, 40, 0, 0]);
    let mut tcp_doff_2 = [0u8; 20];
    tcp_doff_2[12] = 2 << 4;
    tcp_doff_2[13] = 0x02;
    // Seven chained destination-options headers: more than the programs walk.
    let mut ext_chain = Vec::new();
    for _ in 0..7 {
        ext_chain.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
    }
    vec![
        truncated_ip,                                // IPv4 header cut short
        ipv4(0x43, 6, &[0; 20]),                     // IHL of 3 words
        ipv4(0x65, 6, &[0; 20]),                     // version 6 inside an IPv4 frame
        ipv4(0x45, 6, &[0x30, 0x39, 0x1f]),          // TCP header cut short
        ipv4(0x45, 6, &tcp_doff_2),                  // TCP data offset of 2 words
        ipv4(0x45, 17, &[0, 53, 0, 53, 0, 3, 0, 0]), // UDP length below 8
        ipv6(0, &[17, 9, 0, 0]),                     // hop-by-hop header running off the end
        ipv6(60, &ext_chain),                        // extension-header chain too long
    ]
}

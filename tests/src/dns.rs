//! A DNS server for the tests, over UDP and TCP in a namespace, and a client. It answers A
//! queries from a table it can be told to change (a provider moving its service), and answers
//! some names with a malformed response (a compression pointer to itself). Messages follow
//! RFC 1035 section 4; nothing else of DNS is implemented.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::traffic::{in_netns, spawn_in_netns};

const IO_TIMEOUT: Duration = Duration::from_secs(3);
const SERVER_LIFETIME: Duration = Duration::from_secs(600);

/// What the server answers for a name.
#[derive(Clone, Debug)]
pub enum DnsAnswer {
    /// One A record, with this TTL.
    A(Ipv4Addr, u32),
    /// An answer record whose owner name is a compression pointer to itself.
    PointerLoop,
}

/// Names (lower case) → answers. Unknown names get NXDOMAIN.
pub type Zone = Arc<Mutex<HashMap<String, DnsAnswer>>>;

pub struct DnsServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The table it answers from; change it to move a name.
    pub zone: Zone,
}

impl DnsServer {
    /// Serves `zone` on UDP and TCP `addr` in `netns`.
    pub fn start(netns: &str, addr: SocketAddr, zone: HashMap<String, DnsAnswer>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let zone: Zone = Arc::new(Mutex::new(zone));
        let (tx, rx) = std::sync::mpsc::channel();
        let (flag, z, ready) = (stop.clone(), zone.clone(), tx.clone());
        let udp = spawn_in_netns(netns, move || {
            let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            sock.set_read_timeout(Some(Duration::from_millis(20))).ok();
            ready.send(()).expect("signal ready");
            let started = Instant::now();
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) && started.elapsed() < SERVER_LIFETIME {
                if let Ok((n, peer)) = sock.recv_from(&mut buf)
                    && let Some(resp) = respond(&buf[..n], &z)
                {
                    let _ = sock.send_to(&resp, peer);
                }
            }
        });
        let (flag, z) = (stop.clone(), zone.clone());
        let tcp = spawn_in_netns(netns, move || {
            let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            listener.set_nonblocking(true).expect("nonblocking");
            tx.send(()).expect("signal ready");
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < SERVER_LIFETIME {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).ok();
                        s.set_read_timeout(Some(IO_TIMEOUT)).ok();
                        if let Some(q) = read_framed(&mut s)
                            && let Some(resp) = respond(&q, &z)
                        {
                            let mut framed = (resp.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&resp);
                            let _ = s.write_all(&framed);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        for _ in 0..2 {
            rx.recv_timeout(IO_TIMEOUT)
                .expect("DNS server did not start");
        }
        Self {
            stop,
            threads: vec![udp, tcp],
            zone,
        }
    }

    /// Answers `name` with `answer` from now on.
    pub fn set(&self, name: &str, answer: DnsAnswer) {
        self.zone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_lowercase(), answer);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn read_framed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg).ok()?;
    Some(msg)
}

/// The question's name, its end offset.
fn question_name(q: &[u8]) -> Option<(String, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            return Some((labels.join(".").to_lowercase(), i + 1));
        }
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + len)?).into_owned());
        i += 1 + len;
    }
}

fn respond(query: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    let (name, end) = question_name(query)?;
    // The question: name, type and class.
    let question = query.get(12..end + 4)?;
    let answer = zone
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name)
        .cloned();
    let (rcode, count) = if answer.is_some() { (0, 1) } else { (3, 0) };
    let mut m = query[..2].to_vec();
    m.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes());
    for v in [1u16, count, 0, 0] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m.extend_from_slice(question);
    match answer {
        Some(DnsAnswer::A(ip, ttl)) => {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&[0, 4]);
            m.extend_from_slice(&ip.octets());
        }
        Some(DnsAnswer::PointerLoop) => {
            let at = m.len() as u8;
            m.extend_from_slice(&[0xc0, at, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 99]);
        }
        None => {}
    }
    Some(m)
}

fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x4d, 0x2a, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Asks `server` for the A record of `name` from `netns`, over UDP or TCP, and returns the
/// response as received (the test does not read it: trustmap does).
pub fn dns_query(netns: &str, server: SocketAddr, name: &str, tcp: bool) -> Vec<u8> {
    let q = query(name);
    in_netns(netns, move || {
        if tcp {
            let mut s = TcpStream::connect_timeout(&server, IO_TIMEOUT)
                .unwrap_or_else(|e| panic!("DNS over TCP to {server}: {e}"));
            s.set_read_timeout(Some(IO_TIMEOUT)).ok();
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            s.write_all(&framed).expect("send query");
            read_framed(&mut s).expect("DNS response over TCP")
        } else {
            let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
            sock.set_read_timeout(Some(IO_TIMEOUT)).ok();
            sock.send_to(&q, server).expect("send query");
            let mut buf = [0u8; 512];
            let (n, _) = sock
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("no DNS answer from {server}: {e}"));
            buf[..n].to_vec()
        }
    })
}

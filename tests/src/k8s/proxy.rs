//! The node's way to the API server: the control plane listens on the machine's loopback, and
//! each node has a network namespace of its own, so a small TCP relay listens on the node's
//! loopback and connects to the API server's. (On a real cluster the node reaches the API server
//! through its network, or kube-proxy's `kubernetes` Service.)
//!
//! A socket keeps the namespace it was made in: the listener is created on a thread that entered
//! the node's namespace, and the relay's outgoing connections on threads that stayed in the root
//! namespace.

use std::{
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

pub struct ApiProxy {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Bytes relayed: to the API server, and back.
    pub counters: Arc<Counters>,
    /// The port it listens on.
    pub port: u16,
}

/// What a relay carried.
#[derive(Debug, Default)]
pub struct Counters {
    pub up: AtomicU64,
    pub down: AtomicU64,
    pub connections: AtomicU64,
}

impl ApiProxy {
    /// Relays `127.0.0.1:listen_port` in `netns` (the root namespace for `None`; port 0 for
    /// any free one) to `127.0.0.1:target_port` in the root namespace, counting the bytes.
    pub fn start(netns: Option<&str>, listen_port: u16, target_port: u16) -> Self {
        let bind = move || TcpListener::bind((Ipv4Addr::LOCALHOST, listen_port));
        let listener = match netns {
            Some(ns) => crate::traffic::in_netns(ns, bind),
            None => bind(),
        }
        .unwrap_or_else(|e| panic!("API relay in {netns:?}: {e}"));
        let port = listener.local_addr().expect("relay address").port();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        let _ = inbound.set_nonblocking(false);
                        c.connections.fetch_add(1, Ordering::Relaxed);
                        let c = c.clone();
                        std::thread::spawn(move || relay(inbound, target_port, &c));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
            counters,
            port,
        }
    }
}

fn relay(inbound: TcpStream, target_port: u16, counters: &Arc<Counters>) {
    // While the API server is down the connection is refused, as it would be on a real node.
    let Ok(outbound) = TcpStream::connect((Ipv4Addr::LOCALHOST, target_port)) else {
        return;
    };
    let (Ok(mut in_r), Ok(mut out_w)) = (inbound.try_clone(), outbound.try_clone()) else {
        return;
    };
    let c = counters.clone();
    let up = std::thread::spawn(move || {
        copy_counting(&mut in_r, &mut out_w, &c.up);
        let _ = out_w.shutdown(Shutdown::Write);
    });
    let (mut out_r, mut in_w) = (outbound, inbound);
    copy_counting(&mut out_r, &mut in_w, &counters.down);
    let _ = in_w.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// Copies until the end of `from`, adding each chunk to `count` as it passes (connections are
/// long-lived: counting at the end would miss what a test measures meanwhile).
fn copy_counting(from: &mut TcpStream, to: &mut TcpStream, count: &AtomicU64) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

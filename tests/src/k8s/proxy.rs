//! The node's way to the API server: the control plane listens on the machine's loopback, and
//! each node has a network namespace of its own, so a small TCP relay listens on the node's
//! loopback and connects to the API server's. (On a real cluster the node reaches the API server
//! through its network, or kube-proxy's `kubernetes` Service.)
//!
//! A socket keeps the namespace it was made in: the listener is created on a thread that entered
//! the node's namespace, and the relay's outgoing connections on threads that stayed in the root
//! namespace.

use std::{
    io,
    net::{Ipv4Addr, Shutdown, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

pub struct ApiProxy {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ApiProxy {
    /// Relays `127.0.0.1:listen_port` in `netns` to `127.0.0.1:target_port` in the root namespace.
    pub fn start(netns: &str, listen_port: u16, target_port: u16) -> Self {
        let listener = crate::traffic::in_netns(netns, move || {
            TcpListener::bind((Ipv4Addr::LOCALHOST, listen_port))
        })
        .unwrap_or_else(|e| panic!("API relay in {netns}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        let _ = inbound.set_nonblocking(false);
                        std::thread::spawn(move || relay(inbound, target_port));
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
        }
    }
}

fn relay(inbound: TcpStream, target_port: u16) {
    // While the API server is down the connection is refused, as it would be on a real node.
    let Ok(outbound) = TcpStream::connect((Ipv4Addr::LOCALHOST, target_port)) else {
        return;
    };
    let (Ok(mut in_r), Ok(mut out_w)) = (inbound.try_clone(), outbound.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut in_r, &mut out_w);
        let _ = out_w.shutdown(Shutdown::Write);
    });
    let (mut out_r, mut in_w) = (outbound, inbound);
    let _ = io::copy(&mut out_r, &mut in_w);
    let _ = in_w.shutdown(Shutdown::Write);
    let _ = up.join();
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

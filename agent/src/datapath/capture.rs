//! Capture: the datapath, its ring buffer and interface discovery wired together, yielding flow
//! records. Shared by `trustmap observe` and `trustmap agent`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

use super::{ClockOffset, Config, Counters, Datapath, drain, event_to_record};
use crate::{
    flow::{Endpoint, FlowRecord, Protocol},
    netif::{InterfaceFilter, LinkChange, LinkWatcher},
    preexisting,
};

/// A running capture. Dropping it detaches everything.
pub struct Capture {
    dp: Datapath,
    ring: AsyncFd<RingBuf<MapData>>,
    watcher: LinkWatcher,
    filter: InterfaceFilter,
    /// Names of every interface attached since the start, also after it went away, so that
    /// late events still name it.
    names: HashMap<u32, String>,
    clock: ClockOffset,
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

impl Capture {
    /// Loads the programs and attaches them to every matching interface. Needs a tokio
    /// runtime.
    pub async fn start(filter: InterfaceFilter, config: &Config) -> anyhow::Result<Self> {
        let (dp, ring) = Datapath::load(config)?;
        let clock = ClockOffset::now();
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long as
        // the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| e.into_parts().1)
            .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
        let (watcher, links) = LinkWatcher::start().await?;
        let mut capture = Self {
            dp,
            ring,
            watcher,
            filter,
            names: HashMap::new(),
            clock,
        };
        for link in links {
            if capture.filter.matches(&link) {
                capture.attach(link.index, &link.name, true);
            }
        }
        Ok(capture)
    }

    fn attach(&mut self, index: u32, name: &str, existed_before_start: bool) {
        match self.dp.attach(index, name, existed_before_start) {
            Ok(()) => {
                self.names.insert(index, name.to_owned());
            }
            Err(err) => warn!(interface = name, error = %anyhow::Error::from(err), "not attached"),
        }
    }

    fn drain(&mut self) -> Vec<FlowRecord> {
        let mut out = Vec::new();
        let (names, clock) = (&self.names, self.clock);
        drain(self.ring.get_mut(), |ev| {
            let name = names.get(&ev.ifindex).map(String::as_str);
            if let Some(rec) = event_to_record(&ev, name, clock) {
                out.push(rec);
            }
        });
        out
    }

    /// Connections established before the programs were attached, read from the watched pods'
    /// socket tables, preceded by the events that arrived meanwhile. A connection that started
    /// between attaching and scanning shows both as an event and in a socket table: the event
    /// wins, so it is reported once.
    pub fn pre_existing(&mut self) -> anyhow::Result<Vec<FlowRecord>> {
        let attached: HashSet<u32> = self.names.keys().copied().collect();
        let tables = preexisting::scan_pod_namespaces(&attached)?;
        let mut out = self.drain();
        let seen: HashSet<TcpKey> = out.iter().filter_map(tcp_key).collect();
        out.extend(
            preexisting::records(&tables, chrono::Utc::now())
                .into_iter()
                .filter(|r| tcp_key(r).is_none_or(|k| !seen.contains(&k))),
        );
        info!(
            namespaces = tables.len(),
            "scanned for pre-existing connections"
        );
        Ok(out)
    }

    /// Waits for connection starts, attaching to and detaching from interfaces as they come
    /// and go meanwhile. Cancel-safe: nothing is lost when the future is dropped.
    pub async fn next_batch(&mut self) -> anyhow::Result<Vec<FlowRecord>> {
        loop {
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    guard.clear_ready();
                    drop(guard);
                    let records = self.drain();
                    if !records.is_empty() {
                        return Ok(records);
                    }
                }
                change = self.watcher.next() => match change {
                    Some(LinkChange::Present(link)) if self.filter.matches(&link) => {
                        self.attach(link.index, &link.name, false);
                    }
                    Some(LinkChange::Present(link)) => {
                        // Renamed to something we do not watch.
                        if self.dp.interface_name(link.index).is_some() {
                            self.dp.detach(link.index);
                        }
                    }
                    Some(LinkChange::Gone { index }) => self.dp.detach(index),
                    None => anyhow::bail!("the rtnetlink socket closed"),
                },
            }
        }
    }

    pub fn attached_count(&self) -> usize {
        self.dp.attached_count()
    }

    pub fn counters(&self) -> Counters {
        self.dp.counters()
    }

    /// Detaches everything, then returns what the kernel had already written.
    pub fn stop(&mut self) -> Vec<FlowRecord> {
        self.dp.detach_all();
        self.drain()
    }
}

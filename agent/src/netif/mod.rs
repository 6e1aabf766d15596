//! Interface discovery: lists and watches host-side pod interfaces over rtnetlink (IO).
//!
//! Only veth and netkit devices are candidates, whatever the name patterns say: a CNI bridge
//! such as `cni0` matches `cni*` but carries every pod's traffic a second time.

use futures::TryStreamExt as _;
use futures::{StreamExt as _, channel::mpsc::UnboundedReceiver};
use globset::{Glob, GlobSet, GlobSetBuilder};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoData, InfoKind, InfoNetkit, LinkAttribute, LinkInfo, LinkMessage, NetkitMode},
};
use rtnetlink::{MulticastGroup, new_multicast_connection};

/// Name patterns of host-side pod interfaces used by common CNIs.
pub const DEFAULT_PATTERNS: &[&str] = &[
    "veth*", // bridge, flannel, kindnet, weave, many others
    "cali*", // Calico
    "lxc*",  // Cilium
    "cni*",  // plugins that name veths cni<hash>
    "gke*",  // GKE dataplane v1
    "eni*",  // AWS VPC CNI
    "azv*",  // Azure CNI
    "vnet*", // kube-ovn and libvirt-style
];

/// Failures of interface discovery.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An `--interface` pattern is not a valid glob.
    #[error("invalid interface pattern {pattern:?}")]
    Pattern {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("opening the rtnetlink socket failed")]
    Socket(#[source] std::io::Error),
    #[error("listing links over rtnetlink failed")]
    Dump(#[source] rtnetlink::Error),
}

/// Which interfaces to attach to.
#[derive(Debug, Clone)]
pub struct InterfaceFilter {
    set: GlobSet,
}

impl InterfaceFilter {
    /// A filter from glob patterns; no pattern means [`DEFAULT_PATTERNS`].
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, Error> {
        let mut builder = GlobSetBuilder::new();
        let defaults: Vec<&str> = DEFAULT_PATTERNS.to_vec();
        let chosen: Vec<&str> = if patterns.is_empty() {
            defaults
        } else {
            patterns.iter().map(AsRef::as_ref).collect()
        };
        for p in chosen {
            builder.add(Glob::new(p).map_err(|source| Error::Pattern {
                pattern: p.to_owned(),
                source,
            })?);
        }
        let set = builder.build().map_err(|source| Error::Pattern {
            pattern: "(set)".into(),
            source,
        })?;
        Ok(Self { set })
    }

    pub fn matches(&self, link: &Link) -> bool {
        link.pod_side_kind && self.name_matches(&link.name)
    }

    /// Whether the name alone matches (notifications of a bridge port's state carry no link
    /// kind, so only a rename can tell that an attached interface is no longer ours).
    pub fn name_matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }
}

/// What trustmap needs to know of a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// A veth or netkit device, the kinds that connect a pod to its node.
    pub pod_side_kind: bool,
    /// Packets carry no link-layer header: a netkit device in L3 mode.
    pub l3: bool,
}

/// A change in the set of interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// A link appeared or changed (renamed, went up).
    Present(Link),
    /// A link went away.
    Gone { index: u32 },
}

fn link_from_message(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut pod_side_kind = false;
    let mut l3 = false;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::LinkInfo(infos) => {
                pod_side_kind = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth | InfoKind::Netkit)));
                l3 = infos.iter().any(|i| match i {
                    LinkInfo::Data(InfoData::Netkit(nk)) => nk
                        .iter()
                        .any(|a| matches!(a, InfoNetkit::Mode(NetkitMode::L3))),
                    _ => false,
                });
            }
            _ => {}
        }
    }
    Some(Link {
        index: msg.header.index,
        name: name?,
        pod_side_kind,
        l3,
    })
}

/// Watches link changes in the current network namespace.
pub struct LinkWatcher {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, netlink_sys::SocketAddr)>,
}

impl LinkWatcher {
    /// Subscribes to link notifications, then lists the links that exist, so that no link
    /// created in between is missed. Must run inside a tokio runtime.
    pub async fn start() -> Result<(Self, Vec<Link>), Error> {
        let (conn, handle, messages) =
            new_multicast_connection(&[MulticastGroup::Link]).map_err(Error::Socket)?;
        tokio::spawn(conn);
        let links: Vec<Link> = handle
            .link()
            .get()
            .execute()
            .try_filter_map(|msg| async move { Ok(link_from_message(&msg)) })
            .try_collect()
            .await
            .map_err(Error::Dump)?;
        Ok((Self { messages }, links))
    }

    /// The next change, or `None` when the socket closed.
    pub async fn next(&mut self) -> Option<LinkChange> {
        loop {
            let (msg, _) = self.messages.next().await?;
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                match inner {
                    RouteNetlinkMessage::NewLink(link) => {
                        if let Some(l) = link_from_message(&link) {
                            return Some(LinkChange::Present(l));
                        }
                    }
                    RouteNetlinkMessage::DelLink(link) => {
                        return Some(LinkChange::Gone {
                            index: link.header.index,
                        });
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, pod_side_kind: bool) -> Link {
        Link {
            index: 1,
            name: name.into(),
            pod_side_kind,
            l3: false,
        }
    }

    fn message(kind: InfoKind, data: Option<InfoData>) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.attributes.push(LinkAttribute::IfName("nk0".into()));
        let mut info = vec![LinkInfo::Kind(kind)];
        info.extend(data.map(LinkInfo::Data));
        msg.attributes.push(LinkAttribute::LinkInfo(info));
        msg
    }

    #[test]
    fn netkit_in_l3_mode_is_told_apart_from_l2_and_veth() {
        let l3 = message(
            InfoKind::Netkit,
            Some(InfoData::Netkit(vec![InfoNetkit::Mode(NetkitMode::L3)])),
        );
        let l2 = message(
            InfoKind::Netkit,
            Some(InfoData::Netkit(vec![InfoNetkit::Mode(NetkitMode::L2)])),
        );
        let veth = message(InfoKind::Veth, None);
        let got: Vec<(bool, bool)> = [l3, l2, veth]
            .iter()
            .map(|m| {
                link_from_message(m)
                    .map(|l| (l.pod_side_kind, l.l3))
                    .unwrap()
            })
            .collect();
        assert_eq!(got, vec![(true, true), (true, false), (true, false)]);
    }

    #[test]
    fn default_patterns_match_common_cni_veths_only() {
        let f = InterfaceFilter::new::<&str>(&[]).unwrap();
        for name in ["veth1a2b", "cali12345", "lxc9f8e", "eni0a1b"] {
            assert!(f.matches(&link(name, true)), "{name}");
        }
        assert!(!f.matches(&link("eth0", true)));
        // cni0 is a bridge on flannel: the name matches, the kind does not.
        assert!(!f.matches(&link("cni0", false)));
    }

    #[test]
    fn explicit_patterns_replace_the_defaults() {
        let f = InterfaceFilter::new(&["tm*"]).unwrap();
        assert!(f.matches(&link("tmab1", true)));
        assert!(!f.matches(&link("veth1", true)));
    }

    #[test]
    fn invalid_pattern_is_an_error_naming_it() {
        let err = InterfaceFilter::new(&["veth[", "x"]).unwrap_err();
        assert!(err.to_string().contains("veth["), "{err}");
    }
}

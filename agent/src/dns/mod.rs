//! DNS-aware egress: the names pods resolve, so that external peers can be named by the
//! service they are (`api.payments.example`) rather than by an address that changes. Pure.
//!
//! ```text
//!   DNS response copied by the datapath ──answers──▶ Resolutions ──names──▶ NameMap (per pod)
//!   connection from that pod to an external address ◀── names it resolved to that address
//! ```

pub mod answers;
pub mod names;

pub use answers::{
    Answers, DnsError, Resolution, parse_cut_response, parse_response, parse_tcp_response,
};
pub use names::NameMap;

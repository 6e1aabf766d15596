//! trustmap's TC programs, attached to both hooks of the host side of every pod veth.
//!
//! They observe only: every path returns `TC_ACT_UNSPEC`, which is "next program" under TCX and
//! "next filter" under clsact, so the packet goes on unchanged and programs of a CNI on the same
//! hook still run. (`TC_ACT_PIPE` would also pass under TCX, but under clsact it ends the filter
//! chain, hiding the packet from filters after ours.)
//! Only connection starts reach userspace; per-connection counters live in the `FLOWS` LRU map.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod prog;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // The programs exist only for the BPF target; agent/build.rs builds them with aya-build.
}

//! trustmap's TC programs, attached to both hooks of the host side of every pod veth.
//!
//! They observe only: every path returns `TC_ACT_UNSPEC`, which is "next program" under TCX and
//! "next filter" under clsact, so the packet goes on unchanged and programs of a CNI on the same
//! hook still run. (`TC_ACT_PIPE` would also pass under TCX, but under clsact it ends the filter
//! chain, hiding the packet from filters after ours.)
//! Only connection starts (and their outcomes) reach userspace; what the programs know of each
//! connection lives in the `FLOWS` LRU map. A TCP packet without SYN, FIN or RST, the common
//! packet, takes no map operation at all (unless `--flow-stats` asks for per-connection
//! counters).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod prog;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // The programs exist only for the BPF target; agent/build.rs builds them with aya-build.
}

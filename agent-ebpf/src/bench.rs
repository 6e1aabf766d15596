//! Programs for benchmarks and tests, never loaded by the agent:
//! - `nop`, the empty pass-through program the benchmark measures trustmap's programs against;
//! - `nop_next_tuple` and `trustmap_next_tuple`, the same pair for connection starts in a
//!   burst: each run first writes a source address and port never used before into the packet
//!   (so that a `repeat` of BPF_PROG_TEST_RUN is a burst of distinct 5-tuples), then does
//!   nothing, or what trustmap's ingress program does;
//! - `cni_standin`, a stand-in for a CNI's filter: it counts packets and returns `TC_ACT_OK`,
//!   which ends processing on its hook, as a real CNI's verdict does.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

/// trustmap's programs, for `trustmap_next_tuple`: this object gets maps of its own.
#[cfg(target_arch = "bpf")]
#[path = "prog.rs"]
mod prog;

#[cfg(target_arch = "bpf")]
mod progs {
    use agent_ebpf::direction;
    use aya_ebpf::{
        bindings::{TC_ACT_OK, TC_ACT_UNSPEC},
        macros::{classifier, map},
        maps::Array,
        programs::TcContext,
    };

    #[map]
    static STANDIN_PACKETS: Array<u64> = Array::with_max_entries(1, 0);

    /// The next 5-tuple's number: its low 16 bits go to the source port, its high 16 bits to
    /// the last two octets of the source address.
    #[unsafe(no_mangle)]
    static mut NEXT_TUPLE: u32 = 0;

    #[classifier]
    pub fn nop(_ctx: TcContext) -> i32 {
        TC_ACT_UNSPEC
    }

    #[classifier]
    pub fn nop_next_tuple(ctx: TcContext) -> i32 {
        next_tuple(&ctx);
        TC_ACT_UNSPEC
    }

    #[classifier]
    pub fn trustmap_next_tuple(ctx: TcContext) -> i32 {
        next_tuple(&ctx);
        super::prog::observe::<14>(&ctx, direction::FROM_POD);
        TC_ACT_UNSPEC
    }

    /// Writes the next 5-tuple into an Ethernet frame carrying IPv4 or IPv6 (without extension
    /// headers), then TCP or UDP. Checksums are left alone: the programs never check them.
    #[inline(always)]
    fn next_tuple(ctx: &TcContext) {
        // SAFETY: one program run at a time in a benchmark; a lost increment only repeats a
        // tuple.
        let n = unsafe {
            let n = core::ptr::read_volatile(&raw const NEXT_TUPLE);
            core::ptr::write_volatile(&raw mut NEXT_TUPLE, n.wrapping_add(1));
            n
        };
        let (start, end) = (ctx.data(), ctx.data_end());
        if start + 14 > end {
            return;
        }
        // SAFETY: inside the packet, by the check above.
        let ethertype = unsafe { *((start + 12) as *const [u8; 2]) };
        let (addr_end, l4) = match ethertype {
            [0x08, 0x00] => (14 + 16, 14 + 20),
            [0x86, 0xDD] => (14 + 24, 14 + 40),
            _ => return,
        };
        if start + l4 + 2 > end {
            return;
        }
        // SAFETY: both writes are inside the packet (addr_end < l4), by the check above.
        unsafe {
            *((start + addr_end - 2) as *mut [u8; 2]) = ((n >> 16) as u16).to_be_bytes();
            *((start + l4) as *mut [u8; 2]) = (n as u16).to_be_bytes();
        }
    }

    #[classifier]
    pub fn cni_standin(_ctx: TcContext) -> i32 {
        if let Some(p) = STANDIN_PACKETS.get_ptr_mut(0) {
            // SAFETY: the slot is valid for the program run; a lost increment under a race is
            // harmless for a test that looks for "more than zero".
            unsafe { *p += 1 };
        }
        TC_ACT_OK
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

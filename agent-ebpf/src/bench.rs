//! Programs for benchmarks and tests, never loaded by the agent:
//! - `nop`, the empty pass-through program the benchmark measures trustmap's programs against;
//! - `cni_standin`, a stand-in for a CNI's filter: it counts packets and returns `TC_ACT_OK`,
//!   which ends processing on its hook, as a real CNI's verdict does.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod progs {
    use aya_ebpf::{
        bindings::{TC_ACT_OK, TC_ACT_UNSPEC},
        macros::{classifier, map},
        maps::Array,
        programs::TcContext,
    };

    #[map]
    static STANDIN_PACKETS: Array<u64> = Array::with_max_entries(1, 0);

    #[classifier]
    pub fn nop(_ctx: TcContext) -> i32 {
        TC_ACT_UNSPEC
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

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

//! The core's clock at this minute, from a chain of dependent multiplies (an `imul`
//! waits for the one before it: 3 cycles on the x86-64 cores measured here). The VM the
//! figures in BENCHMARKS.md come from runs anywhere between about 3.4 and 4.1 GHz from
//! one stretch of minutes to the next, and every benchmark moves with it:
//! `cargo bench --bench clock` before and after a run of the pipeline benchmarks says
//! which stretch the run had.

use std::hint::black_box;
use std::time::Instant;

/// Multiplies in the chain: about a quarter of a second.
const CHAIN: u64 = 300_000_000;

/// Cycles a 64-bit `imul` takes before its result can be used (Intel since Sandy Bridge,
/// AMD since Zen).
const IMUL_LATENCY: f64 = 3.0;

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        let mut x = black_box(3u64);
        let start = Instant::now();
        for _ in 0..CHAIN {
            // SAFETY: one multiply of a register by itself: no memory, no stack.
            unsafe { std::arch::asm!("imul {0}, {0}", inout(reg) x, options(nomem, nostack)) };
        }
        let secs = start.elapsed().as_secs_f64();
        black_box(x);
        println!(
            "core clock: {:.2} GHz ({CHAIN} dependent multiplies in {secs:.3} s)",
            IMUL_LATENCY * CHAIN as f64 / secs / 1e9
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("core clock: measured on x86-64 only");
}

//! What the machine gives at this minute, for reading the pipeline benchmarks:
//!
//! - **The core's clock**, from a chain of dependent multiplies (an `imul` waits for the
//!   one before it: 3 cycles on the x86-64 cores measured here). The VM the figures in
//!   BENCHMARKS.md come from runs anywhere between about 3.4 and 4.1 GHz from one
//!   stretch of minutes to the next, and every benchmark moves with it.
//! - **Two cores at once**: a loop of independent adds that shares nothing (no memory,
//!   no lock), on one thread alone and then on two threads started together, and each
//!   thread's rate as a share of the one alone. Twice that share is the most any
//!   two-thread benchmark can scale on the machine (`workers/2` over `workers/1`): on a
//!   VM whose two vCPUs are not two idle cores of their own, it is under 2 before any
//!   program shares a byte.
//!
//! `cargo bench --bench clock` before and after a run of the pipeline benchmarks says
//! which stretch the run had.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Instant;

/// Multiplies in the chain: about a quarter of a second.
const CHAIN: u64 = 300_000_000;

/// Cycles a 64-bit `imul` takes before its result can be used (Intel since Sandy Bridge,
/// AMD since Zen).
const IMUL_LATENCY: f64 = 3.0;

/// Rounds of the add loop (eight adds each): about a quarter of a second.
const ROUNDS: u64 = 250_000_000;

/// Rounds of the two-core comparison, alone and together in turn.
const PAIRS: usize = 5;

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
        two_cores();
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("core clock: measured on x86-64 only");
}

/// Adds per nanosecond of [`ROUNDS`] rounds of eight independent adds: bound by the
/// core's ALUs alone.
#[cfg(target_arch = "x86_64")]
fn adds_per_ns() -> f64 {
    let mut r = black_box([0u64; 8]);
    let start = Instant::now();
    for _ in 0..ROUNDS {
        // SAFETY: eight register adds: no memory, no stack.
        unsafe {
            std::arch::asm!(
                "add {0}, 1", "add {1}, 1", "add {2}, 1", "add {3}, 1",
                "add {4}, 1", "add {5}, 1", "add {6}, 1", "add {7}, 1",
                inout(reg) r[0], inout(reg) r[1], inout(reg) r[2], inout(reg) r[3],
                inout(reg) r[4], inout(reg) r[5], inout(reg) r[6], inout(reg) r[7],
                options(nomem, nostack),
            )
        };
    }
    let secs = start.elapsed().as_secs_f64();
    black_box(r);
    (8 * ROUNDS) as f64 / secs / 1e9
}

/// The add loop on one thread, then on two at once, [`PAIRS`] times in turn; prints each
/// pair and the median share.
#[cfg(target_arch = "x86_64")]
fn two_cores() {
    let mut shares = Vec::with_capacity(PAIRS);
    for _ in 0..PAIRS {
        let alone = adds_per_ns();
        let start = Barrier::new(2);
        let both: Vec<f64> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        adds_per_ns()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let share = both.iter().sum::<f64>() / 2.0 / alone;
        println!(
            "two cores: alone {alone:.2} adds/ns; together {:.2} and {:.2}: {:.0}% each",
            both[0],
            both[1],
            share * 100.0
        );
        shares.push(share);
    }
    shares.sort_by(f64::total_cmp);
    let median = shares[PAIRS / 2];
    println!(
        "two cores: each runs at {:.0}% of its rate alone (median); two threads that share \
         nothing scale {:.2}x",
        median * 100.0,
        2.0 * median
    );
}

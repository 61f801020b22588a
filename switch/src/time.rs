//! Time on the caller's clock: nanoseconds, virtual in the simulator, monotonic on a
//! host. The core never reads a clock of its own.

/// One second in nanoseconds.
pub const SECOND: u64 = 1_000_000_000;

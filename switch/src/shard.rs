//! A thread's shard: which of the per-worker parts of a structure the workers of one
//! switch share the calling thread uses.
//!
//! The counters of a node or port and the node's buffer pool are each split in
//! [`SHARDS`] parts, and a thread works in the part of its shard. Threads take the shards
//! in turn, the first time one asks, so that up to [`SHARDS`] workers started together
//! never write the same counter line and never use neighbouring buffers
//! ([`crate::counters`], [`crate::buffer`] say what each costs when they do).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Parts per sharded structure: as many workers as this work apart.
pub(crate) const SHARDS: usize = 4;

/// The calling thread's shard, below [`SHARDS`]. (Shard 0 for a thread whose
/// thread-locals are already gone: it is exiting.)
#[inline]
pub(crate) fn current() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS);
    SHARD.try_with(|s| *s).unwrap_or(0)
}

//! Packet buffers: a pool of preallocated buffers with headroom.
//!
//! A packet lives in one buffer from its arrival to its departure. The bytes sit at
//! `data[start..end]`, with at least [`HEADROOM`] bytes free in front when the buffer is
//! handed out, so that encapsulation prepends its outer headers in place (as DPDK's mbuf
//! does) and decapsulation just moves `start` forward.
//!
//! The free lists are lock-free bounded queues (crossbeam's `ArrayQueue`). A buffer goes
//! back to its pool when it is dropped, from whichever thread drops it.
//!
//! A pool is split in [`SHARDS`] shards, each a block of memory holding its buffers side by
//! side, cache-line aligned, and a queue of its free ones. A thread takes buffers from the
//! shard of its [`shard`] first (from the others only when that one has none left), and a
//! buffer goes home to the shard its memory is in, so that workers started together use
//! buffers of separate blocks. Two workers using neighbouring buffers slow each other down
//! though they never touch the same byte. With one queue, the two threads of `workers/2`
//! took buffers from it in turn, and in the samples where one thread's buffers lay between
//! the other's each ran at 0.6-0.8 of one worker's rate; with separate blocks, 0.93-0.98.
//! (A C loop writing and reading a header in each of 64 buffers per thread shows it without
//! the switch: 64 buffers 9,360 bytes apart, each thread's every other one, ran at
//! 0.65-0.85 of one thread's rate, in runs of four at 0.37, in two blocks at 0.8-1.0. The
//! hardware's prefetchers, following one core's strided walk into the next buffers, are the
//! likely cause; this VM has no counters to show it.) A buffer a thread frees is kept in
//! its cache whatever its shard: a worker frees the buffers it took, and a buffer another
//! worker took comes back to its shard when a cache sends buffers home.
//!
//! In front of the queue each thread keeps a small cache of the buffers it dropped last,
//! as DPDK's mempool keeps one per lcore: a worker that takes buffers for a batch and
//! drops them after transmit then touches no line another worker writes. Without it every
//! packet cost four read-modify-writes on lines all workers share (the queue's head and
//! tail, and the pool's reference count on take and on drop), and two workers sharing one
//! switch scaled 1.57x where two apart scaled 1.86x. A cached buffer keeps its reference
//! to the pool, so moving it between the cache and a packet counts nothing. The cache
//! holds buffers of one pool at a time: a buffer of another pool sends the cached ones
//! home first, so a thread driving many pools (the simulator's nodes) caches whichever it
//! used last. [`Pool::alloc`] looks in the calling thread's cache before the queue, so a
//! pool used from one thread runs dry exactly when all its buffers are in use; with
//! several threads, up to [`CACHE`] of a pool's free buffers may sit in each other
//! thread's cache (size pools with that slack, as DPDK asks). The cache also keeps its
//! pool alive until the thread exits or moves on to another pool.
//!
//! No allocation per packet in the steady state: a shard's memory is allocated when its
//! first buffer is made, and a buffer is made (its bytes zeroed) the first time the pool
//! has none free and fewer than its `count` exist, and lives from then on. The memory is
//! taken from the OS page by page as buffers are made, so a pool sized for bursts costs
//! only what it has used: a simulated cluster of thousands of mostly idle nodes does not
//! hold 512 buffers per node. (With the whole block zeroed by the allocator instead, 1,000
//! simulated nodes took 145 MiB more, and twice the time.) `alloc` pops one from a queue
//! and `Drop` pushes it back. When all `count` are in use `alloc` returns `None` and the
//! caller counts a `no_buffer` drop — the pool never grows past its count. (How this was
//! checked: `tests::steady_state_allocates_nothing` runs the pool under a counting global
//! allocator, and the pipeline's hot path only moves `PacketBuf`s.)
//!
//! A buffer may hold a super-frame: a TCP segment of up to 64 KiB that a pod's kernel
//! handed over whole (TSO), with its [`Offload`] metadata — the GSO kind, the segment size
//! it is to be cut at, and whether its transport checksum is left partial. The core
//! forwards it whole where the egress takes it and cuts it ([`crate::gso`]) where the
//! frame must leave as MTU-sized packets. The metadata is the buffer's, not the bytes':
//! a fresh or reset buffer has none.

use crossbeam_queue::ArrayQueue;
use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::shard::{self, SHARDS};

/// Bytes kept free in front of a fresh buffer for headers to be prepended.
pub const HEADROOM: usize = 128;

/// Default room for packet data after the headroom: a 9000-byte jumbo frame plus headers.
pub const DEFAULT_DATA_ROOM: usize = 9216;

/// The kind of generic segmentation offload a super-frame asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gso {
    /// A plain frame: it leaves as it is.
    #[default]
    None,
    /// A TCP/IPv4 super-segment, to be cut into segments of `gso_size` payload bytes
    /// (Linux's `SKB_GSO_TCPV4`, virtio-net's `GSO_TCPV4`).
    Tcp4,
}

/// Offload metadata of the frame in a buffer: what a `virtio_net_hdr` says of it, without
/// the header's OS-specific layout (which stays with the TAP runtime).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    pub gso: Gso,
    /// Payload bytes per segment (the sender's MSS); meaningful with [`Gso::Tcp4`].
    pub gso_size: u16,
    /// The transport checksum is partial (Linux's `CHECKSUM_PARTIAL`): the TCP or UDP
    /// checksum field holds the folded pseudo-header sum, not complemented, and whoever
    /// finally needs it complete sums the transport header and payload onto it. Its start
    /// and offset follow from the IPv4 header (the transport header; 16 for TCP, 6 for
    /// UDP). Address rewrites must update the field as a pseudo-header sum
    /// ([`crate::services::nat::PartialChecksum`]); port rewrites leave it alone.
    pub csum_partial: bool,
}

impl Offload {
    /// A plain frame with a complete checksum.
    pub const NONE: Offload = Offload {
        gso: Gso::None,
        gso_size: 0,
        csum_partial: false,
    };

    /// True for a plain frame with a complete checksum: nothing to do at egress.
    #[inline]
    pub fn is_none(&self) -> bool {
        *self == Offload::NONE
    }
}

/// A pool of equally sized packet buffers.
pub struct Pool {
    shards: [Shard; SHARDS],
    /// Bytes of a buffer: the headroom and the data room.
    size: usize,
    /// Bytes from one buffer to the next in a shard's memory ([`stride`]).
    stride: usize,
    count: usize,
}

/// A pool's shard: its buffers' memory and a queue of the free ones. On lines of its
/// own, as the shards' queues are used by different workers.
#[repr(align(128))]
struct Shard {
    free: ArrayQueue<Raw>,
    /// Buffers made so far: the first `made` of the memory's buffers.
    made: AtomicUsize,
    /// Buffers the shard holds.
    count: usize,
    /// `count` buffers' memory, allocated when the first is made.
    memory: OnceLock<Memory>,
}

/// A free buffer's first byte, in a shard's queue.
struct Raw(NonNull<u8>);

// SAFETY: a `Raw` in a queue stands for a free buffer, which nobody else uses.
unsafe impl Send for Raw {}

/// A shard's block of memory, freed when dropped.
struct Memory {
    base: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the memory is only ever reached through the buffers made in it, each owned by
// one `Block` or queued as one `Raw` at a time.
unsafe impl Send for Memory {}
unsafe impl Sync for Memory {}

impl Memory {
    /// Memory of `layout`, its bytes not initialised: each buffer's are zeroed when the
    /// buffer is made ([`Shard::take`]).
    fn new(layout: Layout) -> Memory {
        // SAFETY: the layout's size is not zero (a shard with buffers has some bytes).
        let base = unsafe { alloc::alloc(layout) };
        let base = NonNull::new(base).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Memory { base, layout }
    }

    fn holds(&self, p: NonNull<u8>) -> bool {
        let start = self.base.as_ptr() as usize;
        (start..start + self.layout.size()).contains(&(p.as_ptr() as usize))
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the pool owning it is going, and
        // with it every buffer (each holds the pool).
        unsafe { alloc::dealloc(self.base.as_ptr(), self.layout) }
    }
}

impl Shard {
    fn new(count: usize) -> Shard {
        Shard {
            free: ArrayQueue::new(count.max(1)),
            made: AtomicUsize::new(0),
            count,
            memory: OnceLock::new(),
        }
    }

    /// A free buffer of this shard, or a new one while fewer than `count` exist.
    fn take(&self, stride: usize) -> Option<NonNull<u8>> {
        if let Some(Raw(p)) = self.free.pop() {
            return Some(p);
        }
        // Claim one of the buffers not made yet, if any is left.
        let i = self
            .made
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                (m < self.count).then_some(m + 1)
            })
            .ok()?;
        let memory = self.memory.get_or_init(|| {
            let layout = stride
                .checked_mul(self.count)
                .and_then(|n| Layout::from_size_align(n, LINE).ok())
                .expect("a pool's shard fits in memory");
            Memory::new(layout)
        });
        // SAFETY: `i < count`, so the buffer's `stride` bytes are in the shard's memory,
        // and this caller, who claimed buffer `i`, is the only one to reach them.
        unsafe {
            let p = memory.base.add(i * stride);
            p.write_bytes(0, stride);
            Some(p)
        }
    }

    fn holds(&self, p: NonNull<u8>) -> bool {
        self.memory.get().is_some_and(|m| m.holds(p))
    }
}

/// A cache line: a shard's buffers each start on one.
const LINE: usize = 64;

/// The bytes from one buffer of `size` bytes to the next in a shard's memory: whole cache
/// lines, and an odd number of them. With an even number, buffers 32 or fewer apart lie a
/// multiple of 4 KiB apart, so that a load from one waits on a store to the other (the
/// core compares the low 12 bits of the addresses first); DPDK's mempool pads its
/// objects for the same reason.
fn stride(size: usize) -> usize {
    let lines = size.div_ceil(LINE);
    (lines | 1) * LINE
}

impl Pool {
    /// A pool of up to `count` buffers, each with [`HEADROOM`] plus
    /// `data_room` bytes, allocated as they are first needed.
    ///
    /// # Panics
    /// When a buffer would be 4 GiB or more (a packet's offsets are 32-bit).
    pub fn new(count: usize, data_room: usize) -> Arc<Pool> {
        let size = HEADROOM + data_room;
        assert!(
            size <= u32::MAX as usize,
            "a packet buffer is smaller than 4 GiB"
        );
        Arc::new(Pool {
            shards: std::array::from_fn(|s| {
                Shard::new(count / SHARDS + usize::from(s < count % SHARDS))
            }),
            size,
            stride: stride(size),
            count,
        })
    }

    /// Takes an empty buffer, or `None` when all are in use.
    pub fn alloc(self: &Arc<Self>) -> Option<PacketBuf> {
        let block = match Cache::take(self) {
            Some(block) => block,
            None => Block {
                bytes: self.take()?,
                pool: Arc::clone(self),
            },
        };
        Some(PacketBuf {
            block: ManuallyDrop::new(block),
            start: HEADROOM as u32,
            end: HEADROOM as u32,
            checksum_known_good: false,
            offload: Offload::NONE,
        })
    }

    /// A free buffer from the calling thread's shard, or else from the others in turn.
    fn take(&self) -> Option<NonNull<u8>> {
        let mine = shard::current();
        (0..SHARDS).find_map(|i| self.shards[(mine + i) % SHARDS].take(self.stride))
    }

    /// Puts a free buffer back in the queue of the shard it belongs to.
    fn give_back(&self, p: NonNull<u8>) {
        let home = self.shards.iter().find(|s| s.holds(p));
        debug_assert!(home.is_some(), "a buffer of this pool");
        if let Some(home) = home {
            // The queue has room for every buffer of its shard, so this cannot fail.
            let _ = home.free.push(Raw(p));
        }
    }

    /// A buffer holding a copy of `bytes`, or `None` when the pool is empty or the bytes
    /// do not fit.
    pub fn alloc_from(self: &Arc<Self>, bytes: &[u8]) -> Option<PacketBuf> {
        let mut buf = self.alloc()?;
        buf.append(bytes.len())?.copy_from_slice(bytes);
        Some(buf)
    }

    /// Buffers currently free: in the queues, in the calling thread's cache, or not made
    /// yet. (Free buffers in other threads' caches are not counted.)
    pub fn available(self: &Arc<Self>) -> usize {
        let shards: usize = self
            .shards
            .iter()
            .map(|s| s.free.len() + s.count - s.made.load(Ordering::Relaxed))
            .sum();
        shards + Cache::holding(self)
    }

    /// Buffers in the pool, free or in use.
    pub fn capacity(&self) -> usize {
        self.count
    }

    /// Bytes of packet data one buffer can hold after the headroom.
    pub fn data_room(&self) -> usize {
        self.size - HEADROOM
    }
}

/// A buffer's memory (the pool's `size` bytes, in one of its shards) and the pool it
/// belongs to, held as a bare pointer and the pool, so that a [`PacketBuf`] is 32 bytes,
/// half a cache line: the pipeline moves it from stage to stage, and at 48 bytes each move
/// was three 16-byte loads and three stores. Dropped, a block puts its memory back in its
/// shard's queue.
struct Block {
    bytes: NonNull<u8>,
    pool: Arc<Pool>,
}

// SAFETY: a block owns its buffer's memory alone, as a `Box<[u8]>` would, and that box
// would be `Send` and `Sync`.
unsafe impl Send for Block {}
unsafe impl Sync for Block {}

impl Drop for Block {
    /// Puts the memory back in its shard's queue.
    fn drop(&mut self) {
        self.pool.give_back(self.bytes);
    }
}

/// Buffers a thread's cache holds at most; when it is full, the older half go home.
pub const CACHE: usize = 256;

/// The buffers this thread dropped last, all of one pool (see the module doc).
struct Cache {
    blocks: Vec<Block>,
}

thread_local!(static CACHED: RefCell<Cache> = const { RefCell::new(Cache { blocks: Vec::new() }) });

impl Cache {
    fn holds(&self, pool: &Arc<Pool>) -> bool {
        self.blocks
            .first()
            .is_some_and(|b| Arc::ptr_eq(&b.pool, pool))
    }

    /// A buffer of `pool` from this thread's cache, if it has one.
    #[inline]
    fn take(pool: &Arc<Pool>) -> Option<Block> {
        CACHED
            .try_with(|c| {
                let mut c = c.try_borrow_mut().ok()?;
                if c.holds(pool) {
                    c.blocks.pop()
                } else {
                    None
                }
            })
            .ok()
            .flatten()
    }

    /// How many buffers of `pool` this thread's cache holds.
    fn holding(pool: &Arc<Pool>) -> usize {
        CACHED
            .try_with(|c| match c.try_borrow() {
                Ok(c) if c.holds(pool) => c.blocks.len(),
                _ => 0,
            })
            .unwrap_or(0)
    }

    /// Keeps a dropped buffer in this thread's cache, or sends it home (drops the block)
    /// when there is no cache (the thread is exiting) or it is busy.
    #[inline]
    fn park(block: Block) {
        let _ = CACHED.try_with(move |c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c.put(block);
            }
        });
    }

    /// Keeps `block`. The common case, room in a cache that holds buffers of the same
    /// pool, is a handful of instructions and no call, inlined into every drop of a
    /// buffer; the rest is out of line ([`Cache::make_room_and_put`]), so that the drop
    /// saves no registers for it. A drop is 41 instructions: 64 with all of it inline,
    /// 51 with only the flushes out of line (`Vec::push`'s growth, inline, made the drop
    /// save registers and pass the block through the stack).
    #[inline(always)]
    fn put(&mut self, block: Block) {
        let len = self.blocks.len();
        let same = |b: &Block| Arc::ptr_eq(&b.pool, &block.pool);
        if len < CACHE && self.blocks.first().is_none_or(same) {
            if let Some(slot) = self.blocks.spare_capacity_mut().first_mut() {
                slot.write(block);
                // SAFETY: the element at `len` was just written.
                unsafe { self.blocks.set_len(len + 1) };
                return;
            }
        }
        self.make_room_and_put(block);
    }

    /// [`Cache::put`] of a block that needs room first: the cache's first buffers (it
    /// grows to [`CACHE`] at once), or room made by sending cached buffers home: all of
    /// them if they are another pool's, else the older half.
    #[cold]
    #[inline(never)]
    fn make_room_and_put(&mut self, block: Block) {
        if !self.holds(&block.pool) {
            self.flush(self.blocks.len());
        } else if self.blocks.len() == CACHE {
            self.flush(CACHE / 2);
        }
        self.blocks.reserve_exact(CACHE - self.blocks.len());
        self.blocks.push(block);
    }

    /// Sends the `n` oldest cached buffers home.
    fn flush(&mut self, n: usize) {
        self.blocks.drain(..n).for_each(drop);
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.flush(self.blocks.len());
    }
}

/// One packet in a pooled buffer. Returns to its pool when dropped.
pub struct PacketBuf {
    /// Taken only by `drop`, which hands it back.
    block: ManuallyDrop<Block>,
    /// The packet is `start..end` of the block's bytes: `start <= end <= pool.size`,
    /// which every method keeps (the reads and writes of the bytes rely on it).
    start: u32,
    end: u32,
    /// See [`PacketBuf::checksum_known_good`].
    checksum_known_good: bool,
    /// See [`PacketBuf::offload`].
    offload: Offload,
}

// Half a cache line (see [`Block`]): a field added here should not undo that unnoticed.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<PacketBuf>() == 32);

impl PacketBuf {
    /// True when whoever filled the buffer computed the packet's TCP/UDP checksum itself
    /// (the TAP runtime cutting a pod's super-segment), so a later stage that must know
    /// the checksum is right need not sum the packet again. The core keeps every checksum
    /// valid as it rewrites, so the mark survives it; a buffer from the wire is unmarked.
    pub fn checksum_known_good(&self) -> bool {
        self.checksum_known_good
    }

    /// Marks the packet's TCP/UDP checksum as computed here ([`Self::checksum_known_good`]).
    pub fn mark_checksum_known_good(&mut self) {
        self.checksum_known_good = true;
    }

    /// The frame's offload metadata: [`Offload::NONE`] unless whoever filled the buffer
    /// said otherwise (a super-frame or a partial checksum from an offloading TAP).
    #[inline]
    pub fn offload(&self) -> Offload {
        self.offload
    }

    /// Sets the frame's offload metadata (the runtime, from a `virtio_net_hdr`).
    pub fn set_offload(&mut self, offload: Offload) {
        self.offload = offload;
    }

    /// The packet's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: `start <= end <= pool.size` (the field's invariant): in the block's
        // memory, which this buffer owns.
        unsafe { std::slice::from_raw_parts(self.bytes().add(self.start as usize), self.len()) }
    }

    /// The packet's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.bytes().add(self.start as usize), self.len()) }
    }

    /// Packet length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// True when the packet holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Free bytes in front of the packet.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start as usize
    }

    /// Free bytes after the packet.
    pub fn tailroom(&self) -> usize {
        self.block.pool.size - self.end as usize
    }

    /// Grows the packet at the front by `n` bytes and returns them, or `None` when the
    /// headroom is too small.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.headroom() {
            return None;
        }
        self.start -= n as u32;
        Some(&mut self.data_mut()[..n])
    }

    /// Removes `n` bytes from the front (a decapsulated header). `None` when the packet is
    /// shorter than `n`.
    #[inline]
    pub fn strip(&mut self, n: usize) -> Option<()> {
        if n > self.len() {
            return None;
        }
        self.start += n as u32;
        Some(())
    }

    /// Grows the packet at the back by `n` bytes and returns them, or `None` when the
    /// tailroom is too small.
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.tailroom() {
            return None;
        }
        let old = self.len();
        self.end += n as u32;
        Some(&mut self.data_mut()[old..])
    }

    /// Cuts the packet to `len` bytes (no-op when it is not longer).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len as u32;
        }
    }

    /// Empties the packet and restores the full headroom, for reuse; the marks and the
    /// offload metadata go with the bytes.
    pub fn reset(&mut self) {
        self.start = HEADROOM as u32;
        self.end = HEADROOM as u32;
        self.checksum_known_good = false;
        self.offload = Offload::NONE;
    }

    /// Sets the packet to `len` bytes from the default headroom; the bytes are whatever
    /// the buffer held. For drivers that read into [`PacketBuf::spare_mut`] first.
    pub fn set_len(&mut self, len: usize) -> Option<()> {
        if len > self.block.pool.size - HEADROOM {
            return None;
        }
        self.start = HEADROOM as u32;
        self.end = (HEADROOM + len) as u32;
        Some(())
    }

    /// All room after the default headroom, for a driver to read a packet into before
    /// [`PacketBuf::set_len`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let room = self.block.pool.size - HEADROOM;
        // SAFETY: `HEADROOM..pool.size` is in the block's memory, which this buffer owns
        // (`&mut self` makes the borrow unique).
        unsafe { std::slice::from_raw_parts_mut(self.bytes().add(HEADROOM), room) }
    }

    /// The pool this buffer belongs to.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.block.pool
    }

    /// The first of the block's bytes.
    #[inline]
    fn bytes(&self) -> *mut u8 {
        self.block.bytes.as_ptr()
    }
}

impl Drop for PacketBuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the block is taken once, here, and the buffer is not used after.
        let block = unsafe { ManuallyDrop::take(&mut self.block) };
        Cache::park(block);
    }
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("len", &self.len())
            .field("headroom", &self.headroom())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Pool {
        /// Buffers in the shards' queues.
        fn queued(&self) -> usize {
            self.shards.iter().map(|s| s.free.len()).sum()
        }

        /// Buffers made so far.
        fn made(&self) -> usize {
            self.shards
                .iter()
                .map(|s| s.made.load(Ordering::Relaxed))
                .sum()
        }

        /// The shard whose memory holds `buf`.
        fn shard_of(&self, buf: &PacketBuf) -> usize {
            self.shards
                .iter()
                .position(|s| s.holds(buf.block.bytes))
                .unwrap()
        }
    }

    #[test]
    fn buffers_return_to_the_pool() {
        let pool = Pool::new(2, 64);
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        assert!(pool.alloc().is_none());
        drop(a);
        assert_eq!(pool.available(), 1);
        drop(b);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn buffers_are_made_on_demand_up_to_the_count() {
        let pool = Pool::new(3, 64);
        assert_eq!(pool.made(), 0);
        let a = pool.alloc().unwrap();
        drop(a);
        let b = pool.alloc().unwrap();
        // The freed one is reused rather than a second made.
        assert_eq!(pool.made(), 1);
        let c = pool.alloc().unwrap();
        let d = pool.alloc().unwrap();
        assert!(pool.alloc().is_none());
        assert_eq!(pool.available(), 0);
        drop((b, c, d));
        assert_eq!(pool.available(), 3);
        assert_eq!(pool.capacity(), 3);
    }

    #[test]
    fn a_thread_takes_the_buffers_of_its_shard_first_and_they_go_home_there() {
        let pool = Pool::new(8 * SHARDS, 64);
        // A thread whose shard is not the first, so that a pool taking from the first
        // shard whatever the thread fails here. Threads take the shards in turn, so one
        // of a few new threads has such a shard.
        let (mine, bufs) = (0..4 * SHARDS)
            .find_map(|_| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    let mine = shard::current();
                    (mine != 0).then(|| {
                        let bufs: Vec<PacketBuf> = (0..9).map(|_| pool.alloc().unwrap()).collect();
                        (mine, bufs)
                    })
                })
                .join()
                .unwrap()
            })
            .expect("a thread of a shard other than the first");
        let shards: Vec<usize> = bufs.iter().map(|b| pool.shard_of(b)).collect();
        // Its shard's eight, then one of the next shard's.
        assert_eq!(shards[..8], [mine; 8]);
        assert_eq!(shards[8], (mine + 1) % SHARDS);
        let lines: Vec<usize> = bufs
            .iter()
            .map(|b| b.block.bytes.as_ptr() as usize % LINE)
            .collect();
        assert_eq!(lines, [0; 9], "each buffer starts a cache line");
        // Dropped on a thread of whatever shard, each goes home to its own.
        std::thread::spawn(move || drop(bufs)).join().unwrap();
        let queued: Vec<usize> = pool.shards.iter().map(|s| s.free.len()).collect();
        let mut want = vec![0; SHARDS];
        want[mine] = 8;
        want[(mine + 1) % SHARDS] = 1;
        assert_eq!(queued, want);
        assert_eq!(pool.available(), 8 * SHARDS);
    }

    #[test]
    fn prepend_uses_headroom_without_moving_data() {
        let pool = Pool::new(1, 64);
        let mut buf = pool.alloc_from(&[1, 2, 3]).unwrap();
        assert_eq!(buf.headroom(), HEADROOM);
        buf.prepend(2).unwrap().copy_from_slice(&[9, 8]);
        assert_eq!(buf.data(), &[9, 8, 1, 2, 3]);
        buf.strip(2).unwrap();
        assert_eq!(buf.data(), &[1, 2, 3]);
        assert!(buf.prepend(HEADROOM + 1).is_none());
        assert!(buf.append(65).is_none());
        assert!(buf.strip(4).is_none());
    }

    #[test]
    fn offload_metadata_does_not_outlive_its_packet() {
        let pool = Pool::new(1, 64);
        let mut buf = pool.alloc().unwrap();
        let tso = Offload {
            gso: Gso::Tcp4,
            gso_size: 1398,
            csum_partial: true,
        };
        buf.set_offload(tso);
        assert_eq!(buf.offload(), tso);
        buf.reset();
        assert!(buf.offload().is_none());
        buf.set_offload(tso);
        drop(buf);
        // The same storage, recycled through the pool: a plain frame again.
        assert!(pool.alloc().unwrap().offload().is_none());
    }

    #[test]
    fn a_buffer_dropped_on_another_thread_comes_home_when_that_thread_exits() {
        let pool = Pool::new(2, 64);
        let a = pool.alloc().unwrap();
        std::thread::spawn(move || drop(a)).join().unwrap();
        assert_eq!(pool.queued(), 1, "the exiting thread's cache sent it home");
        assert_eq!(pool.available(), 2);
        let _both = (pool.alloc().unwrap(), pool.alloc().unwrap());
        assert!(pool.alloc().is_none());
    }

    /// A buffer dropped after its thread's cache is gone (held by another thread-local,
    /// destroyed later) still goes home: its block's own drop sends it.
    #[test]
    fn a_buffer_dropped_after_the_threads_cache_is_gone_comes_home() {
        use std::sync::atomic::AtomicBool;
        // Whether the cache was gone when the holder dropped its buffer (recorded, not
        // asserted there: a panic in a thread-local's destructor aborts the process).
        static CACHE_GONE: AtomicBool = AtomicBool::new(false);
        struct Holder(RefCell<Option<PacketBuf>>);
        thread_local!(static HELD: Holder = const { Holder(RefCell::new(None)) });
        impl Drop for Holder {
            fn drop(&mut self) {
                // Thread-locals are destroyed in the reverse order of their first use:
                // `HELD` was used before the cache, so the cache is gone by now.
                CACHE_GONE.store(CACHED.try_with(|_| ()).is_err(), Ordering::SeqCst);
                self.0.borrow_mut().take();
            }
        }
        let pool = Pool::new(1, 64);
        let p = Arc::clone(&pool);
        std::thread::spawn(move || {
            HELD.with(|_| ());
            let buf = p.alloc().unwrap(); // first use of the cache
            HELD.with(|h| *h.0.borrow_mut() = Some(buf));
        })
        .join()
        .unwrap();
        assert!(
            CACHE_GONE.load(Ordering::SeqCst),
            "the cache outlived the holder"
        );
        assert_eq!(pool.queued(), 1, "sent home by the block's drop");
        assert!(pool.alloc().is_some());
    }

    #[test]
    fn the_cache_holds_one_pool_and_lets_the_last_one_go() {
        let (p, q) = (Pool::new(2, 64), Pool::new(2, 64));
        drop(p.alloc().unwrap());
        assert_eq!((p.queued(), p.available()), (0, 2), "cached, still free");
        let gone = Arc::downgrade(&p);
        drop(p);
        assert!(gone.upgrade().is_some(), "its cached buffer keeps the pool");
        // A buffer of another pool sends the cached one home, and with it the pool's
        // last reference.
        drop(q.alloc().unwrap());
        assert!(gone.upgrade().is_none(), "the pool was freed");
        assert_eq!((q.queued(), q.available()), (0, 2));
    }

    #[test]
    fn a_full_cache_sends_its_older_half_home() {
        let pool = Pool::new(CACHE + 1, 64);
        let bufs: Vec<PacketBuf> = (0..=CACHE).map(|_| pool.alloc().unwrap()).collect();
        assert!(pool.alloc().is_none());
        drop(bufs);
        assert_eq!(pool.queued(), CACHE / 2);
        assert_eq!(pool.available(), CACHE + 1);
        let again: Vec<PacketBuf> = (0..=CACHE).map(|_| pool.alloc().unwrap()).collect();
        assert!(pool.alloc().is_none());
        assert_eq!(again.len(), CACHE + 1);
    }

    #[test]
    fn steady_state_allocates_nothing() {
        let pool = Pool::new(4, 64);
        drop(pool.alloc());
        let before = alloc_count::get();
        for _ in 0..1000 {
            let mut buf = pool.alloc().unwrap();
            buf.append(10).unwrap().fill(7);
            buf.prepend(8).unwrap().fill(1);
            drop(buf);
        }
        assert_eq!(alloc_count::get(), before);
    }

    /// A global allocator that counts allocations made on this thread, so the test above
    /// is not disturbed by other tests running at the same time.
    mod alloc_count {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local!(static COUNT: Cell<u64> = const { Cell::new(0) });

        struct Counting;

        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
                System.alloc(layout)
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                System.dealloc(ptr, layout)
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        pub fn get() -> u64 {
            COUNT.with(|c| c.get())
        }
    }
}

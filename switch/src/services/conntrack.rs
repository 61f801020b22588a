//! Connection tracking: the flows the service stage translated, in a bounded lock-free
//! table, with TCP and UDP state and per-state timeouts.
//!
//! # The concurrency rule
//!
//! Workers share one table and never take a lock. The table is a fixed array of slots
//! grouped in buckets of [`BUCKET`]; a flow lives in the bucket its client side hashes to.
//! Each slot has one **state word** (phase, two 16-bit tags, a version) and a few data
//! words. The data words of a slot change only while its state is `BUSY`, and only the
//! worker whose compare-and-swap put it in `BUSY` writes them; everyone else reads them
//! as a seqlock: load the state, read the words, load the state again, use the words only
//! if the state did not change. A slot goes
//!
//! ```text
//! FREE/expired/evicted --CAS--> BUSY --write words, take an order number--> PENDING
//!     PENDING --no earlier insert of the same flow in the bucket--> LIVE (readers use it)
//!     PENDING --an earlier insert of the same flow exists--> FREE (the loser uses the winner's)
//!     LIVE --CAS (flush)--> FREE
//! ```
//!
//! The `PENDING` step is what makes two workers inserting the same new flow at the same
//! instant (glibc's parallel A and AAAA queries from one socket) agree: each takes an
//! order number from its bucket's counter after claiming its slot, then rescans the
//! bucket; the insert with the lowest number wins and the other retracts and uses the
//! winner's translation, so both packets go to one endpoint and neither is dropped. (The
//! rescan is sequentially consistent: of two concurrent inserts, the later one to take its
//! number always sees the earlier one's claimed slot.)
//!
//! The one place a worker waits is there: an insert that meets a slot of the same flow in
//! `BUSY` or `PENDING` spins until that worker has written a handful of words — no
//! system call, no allocation, no other wait in between. Waits never chain into a cycle:
//! a `BUSY` writer waits for nobody, a `PENDING` one only for `BUSY` ones.
//!
//! (The unit test `insert_races_and_reply_lookup` shows a worker's use of the table.)
//!
//! Bounded: the table never grows. A key has two candidate buckets (its home); a new
//! flow takes a free or expired slot there; when there is none it evicts the oldest flow
//! of the home that is not yet assured (TCP before the handshake completes or after a
//! close, UDP not yet answered) and the caller counts `conntrack_evicted`; when every flow
//! there is assured the new flow's packet is dropped as `table_full`, as Linux's
//! `early_drop` does. With two choices a table holds flows up to half its slots without
//! a home overflowing.
//!
//! Reply tuples are unique: a flow whose reply tuple another flow already has gets a new
//! source port, drawn per (translated source, destination) tuple as Linux's NAT draws
//! them, from 1024-65535 without the node-port range ([`SnatPorts`]). Replies of flows
//! whose source was translated are found through a second table, the reply index. Time
//! is always the caller's `now`.

use std::net::Ipv4Addr;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use serde::Serialize;

use crate::time::SECOND;
use crate::wire::mac::Mac;
use crate::wire::tcp::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::wire::{PROTO_TCP, PROTO_UDP};

/// Slots per bucket: the probe window of a flow.
pub(crate) const BUCKET: usize = 16;

/// Free slots a key's first bucket keeps before its inserts go to the emptier of its two
/// buckets. Until then the first bucket takes them, so that most flows are found in the
/// bucket a lookup reads first (at a million flows in a host's table, the emptier of the
/// two put half of them in the second, and their lookups read both buckets: about 70
/// more instructions a packet); from there on the choice is the emptier, which keeps homes
/// from overflowing as "power of two choices" does. Random flows filled 85% of a table's
/// slots before the first eviction, against 88% with the emptier bucket always.
const SPARE: u32 = 6;

/// Default number of slots, for about 32,000 flows: a simulated node or a test. Memory
/// is taken only as slots are used (the tables come zeroed from the allocator).
pub(crate) const DEFAULT_SIZE: usize = 1 << 16;

/// Slots for a node on a real host: 2,097,152, for 1,048,576 flows and more (kube-proxy's
/// default `nf_conntrack_max` is 131,072); about 150 MiB when full.
pub const HOST_SIZE: usize = 1 << 21;

// ---- the state word ---------------------------------------------------------------------

const FREE: u64 = 0;
const BUSY: u64 = 1;
const PENDING: u64 = 2;
const LIVE: u64 = 3;
const VERSION_BITS: u32 = 30;

/// A slot's state word: the orig tag in bits 0-15, the reply tag in bits 16-31, the
/// version in bits 32-61, the phase in bits 62-63. The tags are the low 32 bits, in
/// 16-bit halves, so that the scans of a bucket's 16 words for a tag
/// ([`matching`]) compile to whole-vector moves and compares of 16-bit lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State(u64);

impl State {
    const PHASE_SHIFT: u32 = 62;

    fn new(phase: u64, otag: u16, rtag: u16, version: u64) -> State {
        State(
            otag as u64
                | (rtag as u64) << 16
                | (version & ((1 << VERSION_BITS) - 1)) << 32
                | phase << State::PHASE_SHIFT,
        )
    }
    fn phase(self) -> u64 {
        self.0 >> State::PHASE_SHIFT
    }
    fn otag(self) -> u16 {
        self.0 as u16
    }
    fn rtag(self) -> u16 {
        (self.0 >> 16) as u16
    }
    fn version(self) -> u64 {
        self.0 >> 32 & ((1 << VERSION_BITS) - 1)
    }
    fn with_phase(self, phase: u64) -> State {
        State(self.0 & !(3 << State::PHASE_SHIFT) | phase << State::PHASE_SHIFT)
    }
}

/// Spins until `word` no longer holds `seen`: the wait the module documentation allows.
fn wait_change(word: &AtomicU64, seen: u64) {
    let mut spins = 0u32;
    while word.load(Ordering::SeqCst) == seen {
        if spins < 128 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            // The other worker was preempted mid-write; let it run.
            std::thread::yield_now();
        }
    }
}

// ---- the generic slot table -------------------------------------------------------------

/// One slot: `W` data words under the seqlock, plus two words that change per packet.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct Slot<const W: usize> {
    words: [AtomicU64; W],
    /// When a packet of the entry was last seen (ns, the caller's clock).
    pub seen: AtomicU64,
    /// Per-entry state that changes while the entry is live (TCP state, replied bit).
    pub aux: AtomicU64,
    /// The insert's order number within its home (see the module documentation).
    order: AtomicU64,
}

impl<const W: usize> Slot<W> {
    /// Data word `i`, read outside the seqlock: for an insert's judgement of an occupied
    /// slot ([`Victim`]), which the compare-and-swap that takes the slot confirms (it
    /// fails if the entry changed since its state was read, torn words and all).
    pub fn word(&self, i: usize) -> u64 {
        self.words[i].load(Ordering::Relaxed)
    }
}

/// A live slot as a reader saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found<const W: usize> {
    pub idx: usize,
    state: State,
    pub words: [u64; W],
}

pub(crate) enum Inserted<const W: usize> {
    /// The key was live already (or another worker inserted it at the same time).
    Existing(Found<W>),
    /// Inserted; `evicted` when a live, unassured entry made room.
    New { found: Found<W>, evicted: bool },
    /// Both buckets of the home are full of entries that may not be evicted.
    Full,
}

/// What an insert may do with an occupied slot, as a rank: of a full home, the slot of
/// the smallest rank goes (the first of them on a tie). A number, not an enum, so that
/// judging the 32 slots of a full home is a compare and a conditional move a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Victim(u64);

impl Victim {
    /// Expired: free to take.
    pub const EXPIRED: Victim = Victim(0);
    /// Keep.
    pub const KEEP: Victim = Victim(u64::MAX);

    /// Live but evictable, last seen at `seen`: the oldest goes first. (A clock of
    /// nanoseconds reaches `u64::MAX - 1` after 584 years; a flow seen at that instant
    /// would rank as kept, and one seen at the next as expired.)
    pub fn evictable(seen: u64) -> Victim {
        Victim(seen.wrapping_add(1))
    }
}

/// How a lookup scans a bucket's 16 state words for its tag.
#[derive(Clone, Copy)]
pub(crate) enum Scan {
    /// Slot by slot, stopping at the first with the tag: a lookup that usually finds its
    /// entry (a packet of an established flow) reads only the slots up to it. Only in a
    /// home's first bucket: [`SlotTable::find_slot`] scans the second as a miss.
    Hit,
    /// All 16 compared in one branch-free [`matching`] pass first: a lookup that usually
    /// finds nothing (a new flow's reply tuple, an insert's check for its key) would visit
    /// every slot, and the pass costs less than the loop over 16 slots that do not match.
    Miss,
}

/// The slots of a bucket in use with a lookup's tag, in order, with the state read
/// (with `order`: `Acquire` for lookups, `SeqCst` for an insert's check for its key).
struct Tagged<'a> {
    states: &'a [AtomicU64; BUCKET],
    tag_of: TagOf,
    tag: u16,
    order: Ordering,
    /// [`Scan::Hit`]: the next slot to read.
    from: usize,
    /// [`Scan::Miss`]: the slots the pass found with the tag, not yet read again.
    mask: Option<u32>,
}

impl<'a> Tagged<'a> {
    #[inline(always)]
    fn new(
        states: &'a [AtomicU64; BUCKET],
        tag_of: TagOf,
        tag: u16,
        scan: Scan,
        order: Ordering,
    ) -> Self {
        let mask = match scan {
            Scan::Hit => None,
            Scan::Miss => Some(matching(states, order, |s| tag_of.of(s) == tag)),
        };
        Tagged {
            states,
            tag_of,
            tag,
            order,
            from: 0,
            mask,
        }
    }
}

impl Iterator for Tagged<'_> {
    type Item = (usize, State);

    #[inline(always)]
    fn next(&mut self) -> Option<(usize, State)> {
        let read = |i: usize| State(self.states[i].load(self.order));
        match &mut self.mask {
            None => {
                let (i, s) = (self.from..BUCKET).find_map(|i| {
                    let s = read(i);
                    self.tag_of.in_use_with(s, self.tag).then_some((i, s))
                })?;
                self.from = i + 1;
                Some((i, s))
            }
            Some(m) => {
                while *m != 0 {
                    let i = m.trailing_zeros() as usize;
                    *m &= *m - 1;
                    let s = read(i);
                    if self.tag_of.in_use_with(s, self.tag) {
                        return Some((i, s));
                    }
                }
                None
            }
        }
    }
}

/// Which tag of the state word a lookup compares.
#[derive(Clone, Copy)]
pub(crate) enum TagOf {
    Orig,
    Reply,
}

impl TagOf {
    /// The tag of this kind in state `s`.
    #[inline(always)]
    fn of(self, s: State) -> u16 {
        match self {
            TagOf::Orig => s.otag(),
            TagOf::Reply => s.rtag(),
        }
    }

    /// Whether state `s` is a slot in use whose tag of this kind is `tag`: a slot a
    /// lookup of that tag reads.
    #[inline(always)]
    fn in_use_with(self, s: State, tag: u16) -> bool {
        s.phase() != FREE && self.of(s) == tag
    }
}

/// The two buckets a key may live in ("power of two choices"): with two candidate
/// buckets of 16 slots a table holds flows up to half its size without a bucket
/// overflowing, where one bucket per key overflows somewhere long before. Inserts order
/// themselves by the counter of the first bucket, whichever bucket they land in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Home {
    first: usize,
    second: usize,
}

impl Home {
    /// The buckets, the first first. (Scans loop over these and then over a bucket's
    /// slots: two plain loops, which compile to far less than one flattened iterator.)
    fn buckets(self) -> impl Iterator<Item = usize> {
        let n = if self.second == self.first { 1 } else { 2 };
        [self.first, self.second].into_iter().take(n)
    }
}

/// A boxed slice of `n` values whose all-zero bytes are a valid value, from
/// `alloc_zeroed`: an allocator that maps large zeroed blocks as untouched pages (the
/// `podnet` binary's) makes a table cost memory only for the parts that are used.
fn zeroed<T: Zeroable>(n: usize) -> Box<[T]> {
    let layout = std::alloc::Layout::array::<T>(n).expect("table size");
    if layout.size() == 0 {
        return (0..n).map(|_| T::zero()).collect();
    }
    // SAFETY: `layout` is non-zero in size; the block is checked for null; `T: Zeroable`
    // promises that all-zero bytes are a valid `T`, so the `n` values are initialised;
    // the box frees it with the same layout (that of `[T]` of length `n`).
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut T;
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n))
    }
}

/// Types made only of atomic integers, for which all-zero bytes are a valid value.
///
/// # Safety
/// Implement only for such types.
unsafe trait Zeroable {
    fn zero() -> Self;
}

// SAFETY: an AtomicU64 of zero bytes is 0.
unsafe impl Zeroable for AtomicU64 {
    fn zero() -> Self {
        AtomicU64::new(0)
    }
}

// SAFETY: a bucket is AtomicU64s and slots (and padding).
unsafe impl<const W: usize> Zeroable for Bucket<W> {
    fn zero() -> Self {
        Bucket {
            first: Slot::zero(),
            states: std::array::from_fn(|_| AtomicU64::new(0)),
            rest: std::array::from_fn(|_| Slot::zero()),
        }
    }
}

// SAFETY: a slot is W + 3 AtomicU64s (and padding).
unsafe impl<const W: usize> Zeroable for Slot<W> {
    fn zero() -> Self {
        Slot {
            words: std::array::from_fn(|_| AtomicU64::new(0)),
            seen: AtomicU64::new(0),
            aux: AtomicU64::new(0),
            order: AtomicU64::new(0),
        }
    }
}

/// A fixed array of slots in buckets, with the insert protocol of the module
/// documentation. Used for conntrack entries, their reply index, and session affinity.
///
/// Memory is taken as the table is used, a segment of [`SEGMENT`] slots at a time: a
/// segment is allocated by the first insert that lands in it, so a table that tracks a
/// handful of flows (most nodes of a large simulated cluster) costs a few segments, not
/// its full size, and lookups in a segment never written find nothing without touching
/// memory. The geometry (size, buckets, homes) is the full table's from the start, so
/// where a flow lives does not depend on what was allocated. Allocating a segment runs
/// once (a `OnceLock`: workers racing for the same new segment wait for that one
/// allocation, the only time they do).
///
/// A table of [`ONE_BLOCK`] slots or more (a host's) is one segment. Its memory still
/// comes as it is used: a block that large is mapped by the OS on demand, page by page.
/// And one block can lie on 2 MiB pages (the `podnet` binary's allocator asks the OS for
/// them, `podnet_tap::hugepages`), where 72 KiB segments could not: a lookup in a table
/// of 150 MiB on 4 KiB pages missed the TLB nearly every time and walked the page tables
/// first (with 2 MiB pages, `pipeline/dnat_est_1m` 2.8 -> 4.2 Mpps, `dnat_est_10k`
/// 4.3 -> 5.0, medians of twelve alternating runs; BENCHMARKS.md). (With
/// Rust's `System` allocator instead, which zeroes a block aligned as a bucket with a
/// `memset`, such a table is written whole when its one segment is allocated.)
pub(crate) struct SlotTable<const W: usize> {
    /// Slots, a power of two of at least one bucket.
    size: usize,
    /// log2 of the slots per segment (a power of two too), so that finding a slot's
    /// segment is a shift and a mask, not a division.
    segment_shift: u32,
    segments: Box<[OnceLock<Segment<W>>]>,
}

/// Slots per segment: 64 buckets.
const SEGMENT: usize = 64 * BUCKET;

/// Slots from which a table is one segment: 1,048,576 (72 MiB of conntrack's buckets).
const ONE_BLOCK: usize = 1 << 20;

/// The state word of a slot in a segment not allocated yet: free. Only ever read.
static UNUSED: AtomicU64 = AtomicU64::new(FREE);

/// The state words of a bucket in a segment not allocated yet: all free. Only ever read.
static UNUSED_BUCKET: [AtomicU64; BUCKET] = [const { AtomicU64::new(FREE) }; BUCKET];

struct Segment<const W: usize> {
    buckets: Box<[Bucket<W>]>,
    /// Per bucket: the next insert order number of the inserts whose home starts there.
    orders: Box<[AtomicU64]>,
}

impl<const W: usize> Segment<W> {
    /// The bucket of the slot at `offset` within the segment, and the slot's place in it.
    fn at(&self, offset: usize) -> (&Bucket<W>, usize) {
        (&self.buckets[offset / BUCKET], offset % BUCKET)
    }
}

/// A bucket's state words and its slots, in one block (1,152 bytes): a lookup scans the
/// state words and then reads one slot of the same bucket, and with both in one block
/// they usually share a page, so the lookup takes one TLB entry (one page walk in a large
/// table) where separate arrays took two.
///
/// The first slot comes first, then the state words, then the other slots: the first
/// slot and the first eight state words are one 128-byte line pair, which the core
/// fetches together. An insert takes the first free slot, so in a table not near full
/// most flows are in the first slot, and a lookup of one touches one line pair, not two
/// as with the state words first (`dnat_est_10k`, whose 10,000 flows in a host's table
/// outgrow the L2 cache: 14.4-14.9 -> 15.3-15.4 Mpps by the median of alternated
/// launches). The state words are still two lines, not three.
#[repr(C, align(128))]
struct Bucket<const W: usize> {
    /// Slot 0.
    first: Slot<W>,
    states: [AtomicU64; BUCKET],
    /// Slots 1 to 15.
    rest: [Slot<W>; BUCKET - 1],
}

// The first slot and the first eight state words make one 128-byte pair (see above).
const _: () = assert!(std::mem::offset_of!(Bucket<5>, states) == 64);
const _: () = assert!(std::mem::size_of::<Bucket<5>>() == 18 * 64);

impl<const W: usize> Bucket<W> {
    #[inline]
    fn slot(&self, i: usize) -> &Slot<W> {
        match i.checked_sub(1) {
            None => &self.first,
            Some(r) => &self.rest[r],
        }
    }

    fn slots(&self) -> impl Iterator<Item = &Slot<W>> {
        std::iter::once(&self.first).chain(&self.rest)
    }
}

impl<const W: usize> SlotTable<W> {
    /// A table of `size` slots, rounded up to a power of two of at least one bucket.
    pub fn new(size: usize) -> SlotTable<W> {
        let size = size.max(BUCKET).next_power_of_two();
        let segment = if size >= ONE_BLOCK {
            size
        } else {
            size.min(SEGMENT)
        };
        const { assert!(FREE == 0) };
        SlotTable {
            size,
            segment_shift: segment.trailing_zeros(),
            segments: (0..size / segment).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Slots per segment (fewer in a table smaller than one).
    fn segment_len(&self) -> usize {
        1 << self.segment_shift
    }

    /// Slot `idx`'s position within its segment.
    fn offset(&self, idx: usize) -> usize {
        idx & (self.segment_len() - 1)
    }

    /// The segment of slot `idx`, allocated (all free) if it was not yet.
    fn segment(&self, idx: usize) -> &Segment<W> {
        let n = self.segment_len();
        self.segments[idx >> self.segment_shift].get_or_init(|| Segment {
            buckets: zeroed(n / BUCKET),
            orders: zeroed(n / BUCKET),
        })
    }

    /// Slot `idx`'s state word to read: [`UNUSED`] (free) in a segment not allocated.
    fn state(&self, idx: usize) -> &AtomicU64 {
        self.segments[idx >> self.segment_shift]
            .get()
            .map_or(&UNUSED, |s| {
                let (b, i) = s.at(self.offset(idx));
                &b.states[i]
            })
    }

    /// Bucket `bucket`, or `None` (all its slots free) in a segment not allocated. A
    /// scan resolves the segment once per bucket (a bucket lies within one segment)
    /// instead of once per slot, and reads the slot it settles on from the bucket it
    /// holds: lookups and inserts scan up to 32 slots, several times for a new flow.
    fn bucket(&self, bucket: usize) -> Option<&Bucket<W>> {
        let idx = bucket * BUCKET;
        self.segments[idx >> self.segment_shift]
            .get()
            .map(|s| s.at(self.offset(idx)).0)
    }

    /// The state words of `bucket`'s slots, to scan: [`UNUSED_BUCKET`] (all free) in a
    /// segment not allocated.
    fn bucket_states(&self, bucket: usize) -> &[AtomicU64; BUCKET] {
        self.bucket(bucket).map_or(&UNUSED_BUCKET, |b| &b.states)
    }

    /// Slot `idx`'s state word to write (allocating its segment).
    fn state_mut(&self, idx: usize) -> &AtomicU64 {
        let (b, i) = self.segment(idx).at(self.offset(idx));
        &b.states[i]
    }

    /// Slot `idx`'s state word and slot, to write (allocating its segment).
    fn entry_mut(&self, idx: usize) -> (&AtomicU64, &Slot<W>) {
        let (b, i) = self.segment(idx).at(self.offset(idx));
        (&b.states[i], b.slot(i))
    }

    /// The insert order counter of `bucket`.
    fn order(&self, bucket: usize) -> &AtomicU64 {
        let idx = bucket * BUCKET;
        &self.segment(idx).orders[self.offset(idx) / BUCKET]
    }

    /// The two buckets a hash selects (from its two halves).
    pub fn home(&self, hash: u64) -> Home {
        let mask = self.size / BUCKET - 1;
        Home {
            first: ((hash >> 32) as usize) & mask,
            second: (mix(hash) as usize) & mask,
        }
    }

    pub fn slot(&self, idx: usize) -> &Slot<W> {
        let (b, i) = self.segment(idx).at(self.offset(idx));
        b.slot(i)
    }

    /// The slot of an entry found live, whose segment is allocated: [`SlotTable::slot`]
    /// without the allocation, whose call made every caller save registers around it.
    fn found_slot(&self, idx: usize) -> &Slot<W> {
        let seg = self.segments[idx >> self.segment_shift]
            .get()
            .expect("a found entry's segment is allocated");
        let (b, i) = seg.at(self.offset(idx));
        b.slot(i)
    }

    /// Starts fetching the state words of `home`'s first bucket into the cache, without
    /// waiting for them: the first half of [`Conntrack::prefetch`]. Only the first: a
    /// flow is there unless its first bucket was short of [`SPARE`] free slots when it
    /// came (more than nine in ten at 40% of the slots used), and fetching the second
    /// bucket's two lines as well, and scanning them for the slot, cost every packet two
    /// line fetches and about 60 instructions for the few that are there
    /// (`dnat_est_10k`). Returns the bucket, if allocated, for
    /// [`SlotTable::prefetch_slot`], which then need not find it again.
    ///
    /// Of the bucket's 16 words (128 bytes, two cache lines, see [`Bucket`]) only the
    /// first line: an insert takes the first free slot, so in a table not near full a
    /// flow is nearly always in the first eight, and a lookup stops at its slot. The
    /// second line is fetched by `prefetch_slot` when the first holds no match. Fetched
    /// with the first, it took a line-fill buffer for nothing for most packets, and a
    /// batch's prefetches waited for free buffers (`perf annotate` put 72% of the
    /// prefetch's samples on that instruction; dnat_est_10k about 14.1 -> 15.0 Mpps).
    fn prefetch_states(&self, home: Home) -> Option<&Bucket<W>> {
        let b = self.bucket(home.first)?;
        prefetch(&b.states[0]);
        Some(b)
    }

    /// Starts fetching the first slot of `bucket` whose state has orig tag `tag` among
    /// the first eight, or else the bucket's second line of state words: the second half
    /// of [`Conntrack::prefetch`], once the first line is in the cache.
    fn prefetch_slot(bucket: Option<&Bucket<W>>, tag: u16) {
        // The tag alone: a free slot keeps its last flow's tag, and a match there only
        // costs a useless prefetch; one compare a slot keeps the scan short, which
        // matters for a new flow's packet (no match: all eight slots).
        if let Some(b) = bucket {
            let first =
                (0..BUCKET / 2).find(|&i| State(b.states[i].load(Ordering::Relaxed)).otag() == tag);
            match first {
                Some(i) => prefetch(b.slot(i)),
                None => prefetch(&b.states[BUCKET / 2]),
            }
        }
    }

    /// Starts fetching the slots of `bucket` (none in a segment not allocated).
    fn prefetch_bucket_slots(&self, bucket: usize) {
        if let Some(b) = self.bucket(bucket) {
            b.slots().for_each(prefetch);
        }
    }

    /// Reads `slot`'s words if its state word `state` still holds `s` afterwards (the
    /// seqlock read). Scans pass the slot and state word they hold rather than finding
    /// them again.
    fn read_at(slot: &Slot<W>, state: &AtomicU64, s: State) -> Option<[u64; W]> {
        let words = std::array::from_fn(|i| slot.words[i].load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        (state.load(Ordering::Relaxed) == s.0).then_some(words)
    }

    /// Slot `idx` if it is live.
    pub fn read(&self, idx: usize) -> Option<Found<W>> {
        if idx >= self.size {
            return None;
        }
        loop {
            let s = State(self.state(idx).load(Ordering::Acquire));
            if s.phase() != LIVE {
                return None;
            }
            if let Some(words) = SlotTable::read_at(self.slot(idx), self.state(idx), s) {
                return Some(Found {
                    idx,
                    state: s,
                    words,
                });
            }
        }
    }

    /// The live entry of `home` whose tag matches and whose words satisfy `key`. With
    /// `wait`, first waits out inserts in progress that may be of the same key.
    pub fn find(
        &self,
        home: Home,
        tag_of: TagOf,
        tag: u16,
        key: impl Fn(&[u64; W]) -> bool,
        wait: bool,
    ) -> Option<Found<W>> {
        self.find_slot(home, tag_of, tag, key, wait, Scan::Hit)
            .map(|(f, _)| f)
    }

    /// [`SlotTable::find`], with the entry's slot, for callers that read its `seen` or
    /// `aux` next (finding the slot again from its index takes as much as the scan), each
    /// bucket scanned as `scan` says.
    #[inline(always)]
    pub fn find_slot(
        &self,
        home: Home,
        tag_of: TagOf,
        tag: u16,
        key: impl Fn(&[u64; W]) -> bool,
        wait: bool,
        scan: Scan,
    ) -> Option<(Found<W>, &Slot<W>)> {
        // An entry is nearly always in its first bucket ([`SPARE`]), so a lookup that
        // reaches the second will usually find nothing there either: that one is
        // scanned as a miss. (Two calls, not one loop with the scan chosen per bucket:
        // each call's scan is a constant and compiles to its own loop.)
        let second = (home.second != home.first).then_some(home.second);
        self.find_in(home.first, tag_of, tag, &key, wait, scan)
            .or_else(|| self.find_in(second?, tag_of, tag, &key, wait, Scan::Miss))
    }

    /// [`SlotTable::find_slot`] in one bucket.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn find_in(
        &self,
        bucket: usize,
        tag_of: TagOf,
        tag: u16,
        key: &impl Fn(&[u64; W]) -> bool,
        wait: bool,
        scan: Scan,
    ) -> Option<(Found<W>, &Slot<W>)> {
        let b = self.bucket(bucket)?;
        // The scan for a slot with the tag is a loop of its own ([`Tagged`]), and what is
        // done with one comes after it: written as one loop, the compiler computed the
        // slot's address (for the read) on every slot, 26 instructions a slot instead of
        // a load and a compare, and a lookup that misses visits all 16.
        for (i, s) in Tagged::new(&b.states, tag_of, tag, scan, Ordering::Acquire) {
            let (state, slot) = (&b.states[i], b.slot(i));
            let idx = bucket * BUCKET + i;
            if let Some(f) = SlotTable::candidate(idx, slot, state, s, tag_of, tag, key, wait) {
                return Some((f, slot));
            }
        }
        None
    }

    /// A slot of [`SlotTable::find`]'s scan whose state `s` has the wanted tag: the
    /// live entry there if its words satisfy `key` (waiting out an insert in progress
    /// when `wait`, reading again when a writer got in the way).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn candidate(
        idx: usize,
        slot: &Slot<W>,
        state: &AtomicU64,
        mut s: State,
        tag_of: TagOf,
        tag: u16,
        key: &impl Fn(&[u64; W]) -> bool,
        wait: bool,
    ) -> Option<Found<W>> {
        // Inserts in progress are waited out only by lookups of original tuples.
        let wait = wait && matches!(tag_of, TagOf::Orig);
        loop {
            if s.phase() != LIVE {
                if !wait {
                    return None;
                }
                wait_change(state, s.0);
            } else {
                match SlotTable::read_at(slot, state, s) {
                    Some(words) if key(&words) => {
                        return Some(Found {
                            idx,
                            state: s,
                            words,
                        })
                    }
                    Some(_) => return None,
                    None => {}
                }
            }
            s = State(state.load(Ordering::Acquire));
            if !tag_of.in_use_with(s, tag) {
                return None;
            }
        }
    }

    /// Renews a live entry in place (the same words under a new version), unless it
    /// changed since it was found. Another worker that judged the entry stale on an
    /// earlier read and is about to replace it then fails its compare-exchange and looks
    /// again, so keeping an entry and replacing it cannot both succeed.
    pub fn renew(&self, f: &Found<W>) -> bool {
        let s = f.state;
        let next = State::new(LIVE, s.otag(), s.rtag(), s.version() + 1);
        self.state_mut(f.idx)
            .compare_exchange(s.0, next.0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Frees a live entry, unless it changed since it was found.
    pub fn remove(&self, f: &Found<W>) -> bool {
        self.remove_at(f.idx, f.state)
    }

    /// Frees the live entry of slot `idx` found in state `s`, unless it changed since.
    fn remove_at(&self, idx: usize, s: State) -> bool {
        self.state_mut(idx)
            .compare_exchange(
                s.0,
                s.with_phase(FREE).0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Inserts the entry `make()` under `key` (whose orig tag is `otag`) into `home`,
    /// unless it is there: see the module documentation. `victim` judges occupied
    /// slots; `make` is called once per attempt and returns the words and the reply
    /// tag; `init` sets the new slot's `seen` and `aux` (given the entry's state, whose
    /// version tells this entry of the slot from the others).
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        home: Home,
        otag: u16,
        key: impl Fn(&[u64; W]) -> bool,
        victim: impl Fn(&Slot<W>) -> Victim,
        mut make: impl FnMut() -> ([u64; W], u16),
        init: impl Fn(&Slot<W>, State),
    ) -> Inserted<W> {
        loop {
            // 1. Already there (waiting out inserts in progress of the same tag)? An
            // expired entry of the same key is the slot to reuse, so that every worker
            // renewing it competes for that one slot.
            let mut target = None;
            if let Some((f, slot)) = self.find_slot(home, TagOf::Orig, otag, &key, true, Scan::Miss)
            {
                if victim(slot) != Victim::EXPIRED {
                    return Inserted::Existing(f);
                }
                target = Some((f.idx, f.state, false));
            }
            // 2. A free, expired or evictable slot.
            let Some((idx, old, evicted)) = target.or_else(|| self.pick(home, &victim)) else {
                return Inserted::Full;
            };
            let (words, rtag) = make();
            let version = old.version() + 1;
            let busy = State::new(BUSY, otag, rtag, version);
            let (state, slot) = self.entry_mut(idx);
            if state
                .compare_exchange(old.0, busy.0, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            fence(Ordering::Release);
            for (w, v) in slot.words.iter().zip(words) {
                w.store(v, Ordering::Relaxed);
            }
            init(slot, busy);
            let order = self.order(home.first).fetch_add(1, Ordering::SeqCst);
            slot.order.store(order, Ordering::Relaxed);
            let pending = busy.with_phase(PENDING);
            state.store(pending.0, Ordering::SeqCst);
            // 3. Did an earlier insert of the same key get there first?
            if self.first_of_key(home, idx, otag, order, &key, &victim) {
                let live = busy.with_phase(LIVE);
                state.store(live.0, Ordering::SeqCst);
                return Inserted::New {
                    found: Found {
                        idx,
                        state: live,
                        words,
                    },
                    evicted,
                };
            }
            state.store(busy.with_phase(FREE).0, Ordering::SeqCst);
        }
    }

    /// True when no other slot of `home` holds the same key from an earlier insert.
    fn first_of_key(
        &self,
        home: Home,
        me: usize,
        otag: u16,
        order: u64,
        key: &impl Fn(&[u64; W]) -> bool,
        victim: &impl Fn(&Slot<W>) -> Victim,
    ) -> bool {
        for bucket in home.buckets() {
            let Some(b) = self.bucket(bucket) else {
                continue;
            };
            let first = bucket * BUCKET;
            // As in `find`: the scan for other slots with the tag is a pass of its own.
            let others = Tagged::new(&b.states, TagOf::Orig, otag, Scan::Miss, Ordering::SeqCst)
                .filter(|&(i, _)| first + i != me);
            for (i, s) in others {
                let (state, slot) = (&b.states[i], b.slot(i));
                if SlotTable::earlier_of_key(slot, state, s, otag, order, key, victim) {
                    return false;
                }
            }
        }
        true
    }

    /// For [`SlotTable::first_of_key`]: whether slot `idx`, whose state `s` has the
    /// tag `otag`, holds the same key live (and not expired) or from an insert that
    /// took an earlier order number than `order` (waiting out a writer in `BUSY`).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn earlier_of_key(
        slot: &Slot<W>,
        state: &AtomicU64,
        mut s: State,
        otag: u16,
        order: u64,
        key: &impl Fn(&[u64; W]) -> bool,
        victim: &impl Fn(&Slot<W>) -> Victim,
    ) -> bool {
        loop {
            if s.phase() == BUSY {
                wait_change(state, s.0);
            } else {
                let theirs = slot.order.load(Ordering::Relaxed);
                if let Some(words) = SlotTable::read_at(slot, state, s) {
                    if !key(&words) {
                        return false;
                    }
                    if s.phase() == LIVE {
                        return victim(slot) != Victim::EXPIRED;
                    }
                    return theirs < order;
                }
            }
            s = State(state.load(Ordering::SeqCst));
            if s.phase() == FREE || s.otag() != otag {
                return false;
            }
        }
    }

    /// The slot a new entry of `home` takes: a free one of the first bucket while it has
    /// [`SPARE`] free, else of the bucket with more free slots (the first on a tie); then
    /// an expired one, then the oldest evictable one (flagged `true`).
    fn pick(
        &self,
        home: Home,
        victim: &impl Fn(&Slot<W>) -> Victim,
    ) -> Option<(usize, State, bool)> {
        // The free slots of each bucket, as masks: the first of the bucket with more. When
        // it was taken since the pass (by another worker), the pass runs again.
        loop {
            let mut free = [(0, 0); 2];
            for (f, bucket) in free.iter_mut().zip(home.buckets()) {
                let states = self.bucket_states(bucket);
                *f = (
                    bucket,
                    matching(states, Ordering::Acquire, |s| s.phase() == FREE),
                );
            }
            let (first, second) = (free[0].1.count_ones(), free[1].1.count_ones());
            let (bucket, m) = if first < SPARE && second > first {
                free[1]
            } else {
                free[0]
            };
            if m == 0 {
                break;
            }
            let i = m.trailing_zeros() as usize;
            let s = State(self.bucket_states(bucket)[i].load(Ordering::Acquire));
            if s.phase() == FREE {
                return Some((bucket * BUCKET + i, s, false));
            }
        }
        // No slot is free, so the scan below reads all 32 slots, a cache line each: ask
        // for them all first, so that their misses overlap instead of coming one by one.
        for bucket in home.buckets() {
            self.prefetch_bucket_slots(bucket);
        }
        // The first expired slot goes; failing that, the oldest evictable one (the first
        // of the oldest on a tie). The state words are read relaxed: the slot is judged
        // from words that change outside the seqlock anyway, and the compare-and-swap
        // from the state read confirms the choice (this lets the compiler keep what the
        // judgement needs in registers across the 32 slots).
        let mut best = (Victim::KEEP, 0, State(FREE));
        'home: for bucket in home.buckets() {
            // No slot is free: the bucket's segment is allocated.
            let Some(b) = self.bucket(bucket) else {
                continue;
            };
            for i in 0..BUCKET {
                let s = State(b.states[i].load(Ordering::Relaxed));
                let rank = if s.phase() == LIVE {
                    victim(b.slot(i))
                } else {
                    Victim::KEEP
                };
                if rank < best.0 {
                    best = (rank, bucket * BUCKET + i, s);
                    if rank == Victim::EXPIRED {
                        break 'home;
                    }
                }
            }
        }
        let (rank, idx, s) = best;
        (rank != Victim::KEEP).then_some((idx, s, rank != Victim::EXPIRED))
    }

    /// Every live slot.
    pub fn live(&self) -> impl Iterator<Item = Found<W>> + '_ {
        let n = self.segment_len();
        self.segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.get().is_some())
            .flat_map(move |(i, _)| i * n..(i + 1) * n)
            .filter_map(|idx| self.read(idx))
    }

    /// Frees every slot. Only for a restart: entries being inserted meanwhile may survive.
    pub fn clear(&self) {
        for s in self
            .segments
            .iter()
            .filter_map(OnceLock::get)
            .flat_map(|seg| seg.buckets.iter().flat_map(|b| b.states.iter()))
        {
            let cur = State(s.load(Ordering::Acquire));
            if cur.phase() == LIVE {
                let _ = s.compare_exchange(
                    cur.0,
                    cur.with_phase(FREE).0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        }
    }
}

/// The slots of a bucket whose state word satisfies `pred`, as bit `i` for slot `i`: one
/// pass over the 16 words with no branch. A loop that stopped at each match took twice the
/// instructions a slot, and the scans of a new flow (which match nothing) visit every
/// slot of their home, several times. Callers walk the bits, loading each slot's state
/// again.
#[inline(always)]
fn matching(states: &[AtomicU64; BUCKET], order: Ordering, pred: impl Fn(State) -> bool) -> u32 {
    let mut m = 0;
    for (i, s) in states.iter().enumerate() {
        m |= u32::from(pred(State(s.load(order)))) << i;
    }
    m
}

/// Asks the CPU to bring the cache line of `p` in, without waiting for it: a hint that
/// never faults and changes nothing, whatever `p` points at; a useless one costs an
/// instruction and a line of cache.
#[inline(always)]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache; it reads nothing the program sees and
    // does not fault (here `p` is a valid reference anyway).
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const T as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// splitmix64's finaliser.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---- flows ------------------------------------------------------------------------------

/// A transport 5-tuple: protocol, source and destination address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

impl Tuple {
    pub fn new(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Tuple {
        Tuple {
            proto,
            src,
            sport,
            dst,
            dport,
        }
    }

    /// The tuple of a packet going the other way.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }

    /// The tuple's tag in a state word: 16 bits of a hash of the whole tuple, so that
    /// a scan passes over other flows' slots without reading them.
    fn tag(&self) -> u16 {
        self.tag_from(side_hash(self.proto, self.src, self.sport))
    }

    /// [`Tuple::tag`] from the hash of the source side, `side_hash(proto, src, sport)`:
    /// the low 16 bits of that hash, which pick no bucket ([`SlotTable::home`] takes the
    /// first from its high half and the second from the hash mixed again), against the
    /// top bits of the destination side times an odd constant (which depend on all of
    /// it). A lookup of an original tuple has the side's hash already, so its tag costs
    /// a multiply; mixing the hash again for the tag cost about ten instructions in each
    /// of the batch's prefetch and the packet's lookup.
    fn tag_from(&self, side: u64) -> u16 {
        let dst = (u32::from(self.dst) as u64) << 16 | self.dport as u64;
        side as u16 ^ (dst.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as u16
    }
}

/// The hash of one side of a flow, which picks its bucket: the client side of the
/// original direction, which is also the destination of replies that were not SNATed.
fn side_hash(proto: u8, ip: Ipv4Addr, port: u16) -> u64 {
    mix((u32::from(ip) as u64) << 24 | (port as u64) << 8 | proto as u64)
}

/// The two key words of a tuple in the reply index.
fn reply_key(t: &Tuple) -> (u64, u64) {
    let ip = |a: Ipv4Addr| u32::from(a) as u64;
    (
        ip(t.src) << 32 | ip(t.dst),
        (t.sport as u64) << 48 | (t.dport as u64) << 32 | (t.proto as u64) << 24 | 1,
    )
}

/// The hash of a whole tuple, which picks its home in the reply index.
fn tuple_hash(t: &Tuple) -> u64 {
    let (a, b) = reply_key(t);
    mix(a ^ mix(b))
}

/// Where the client of a flow is, which decides where its replies go after translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Client {
    /// A pod, here or on another node: replies take the route lookup.
    Routed,
    /// The node's own stack, through the host port.
    Host,
    /// A host on the underlay whose frames came from this MAC.
    Underlay(Mac),
}

/// A tracked flow: the tuple the client sent and what the switch turned it into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flow {
    /// The original direction as the client sent it (to a VIP or a node port).
    pub orig: Tuple,
    /// The original direction as it leaves (to the endpoint, maybe from a node address).
    pub xlat: Tuple,
    pub client: Client,
    /// The session-affinity slot that chose the endpoint, if any.
    pub affinity: Option<u32>,
}

impl Flow {
    #[cfg(test)]
    pub fn new(orig: Tuple, xlat: Tuple, client: Client) -> Flow {
        Flow {
            orig,
            xlat,
            client,
            affinity: None,
        }
    }

    /// The tuple replies arrive with.
    pub fn reply(&self) -> Tuple {
        self.xlat.reversed()
    }

    pub fn is_dnat(&self) -> bool {
        (self.orig.dst, self.orig.dport) != (self.xlat.dst, self.xlat.dport)
    }

    pub fn is_snat(&self) -> bool {
        (self.orig.src, self.orig.sport) != (self.xlat.src, self.xlat.sport)
    }

    /// A flow tracked only because the policy stage allowed it: a pod's, untranslated.
    /// (A service flow always changes its destination; the node stack's are `Host`.)
    pub fn is_allowed_only(&self) -> bool {
        self.client == Client::Routed && self.orig == self.xlat
    }

    fn encode(&self) -> [u64; 5] {
        let ip = |a: Ipv4Addr| u32::from(a) as u64;
        let (kind, mac) = match self.client {
            Client::Routed => (0u64, 0),
            Client::Host => (1, 0),
            Client::Underlay(m) => (2, m.to_u64()),
        };
        [
            ip(self.orig.src) << 32 | ip(self.orig.dst),
            (self.orig.sport as u64) << 48
                | (self.orig.dport as u64) << 32
                | (self.orig.proto as u64) << 24
                | kind << 16,
            ip(self.xlat.src) << 32 | ip(self.xlat.dst),
            (self.xlat.sport as u64) << 48
                | (self.xlat.dport as u64) << 32
                | self.affinity.map_or(0, |a| a as u64 + 1),
            mac,
        ]
    }

    /// The flow whose words [`Flow::encode`] made `w`. Always inlined: [`Hit::flow`]'s
    /// callers read a field or two, and only those are then unpacked.
    #[inline(always)]
    fn decode(w: &[u64; 5]) -> Flow {
        let ip = |v: u64| Ipv4Addr::from(v as u32);
        let proto = (w[1] >> 24) as u8;
        let client = match (w[1] >> 16) & 0xff {
            1 => Client::Host,
            2 => Client::Underlay(Mac::from_u64(w[4])),
            _ => Client::Routed,
        };
        let affinity = (w[3] as u32).checked_sub(1);
        Flow {
            orig: Tuple::new(
                proto,
                ip(w[0] >> 32),
                (w[1] >> 48) as u16,
                ip(w[0]),
                (w[1] >> 32) as u16,
            ),
            xlat: Tuple::new(
                proto,
                ip(w[2] >> 32),
                (w[3] >> 48) as u16,
                ip(w[2]),
                (w[3] >> 32) as u16,
            ),
            client,
            affinity,
        }
    }

    /// True when `w` is the encoding of a flow whose original tuple is `t`.
    fn orig_is(w: &[u64; 5], t: &Tuple) -> bool {
        let ip = |a: Ipv4Addr| u32::from(a) as u64;
        w[0] == ip(t.src) << 32 | ip(t.dst)
            && w[1] >> 24 == (t.sport as u64) << 24 | (t.dport as u64) << 8 | t.proto as u64
    }
}

// ---- protocol state and timeouts --------------------------------------------------------

/// TCP connection states, as Linux's conntrack names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum TcpState {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    TimeWait,
    Close,
}

impl TcpState {
    fn from_bits(b: u64) -> TcpState {
        match b & CLASS {
            0 => TcpState::SynSent,
            1 => TcpState::SynRecv,
            2 => TcpState::Established,
            3 => TcpState::FinWait,
            4 => TcpState::TimeWait,
            _ => TcpState::Close,
        }
    }

    fn bits(self) -> u64 {
        self as u64
    }
}

// aux word: bits 0-2 the flow's class, then TCP's FIN flags, then the mark of
// [`Conntrack::checked`].

/// The low three bits of the aux word, the flow's **class**: what its timeout and its
/// eviction depend on. A TCP flow's state ([`TcpState`], 0-5), or for UDP whether it was
/// answered. One index for both protocols, so that judging a slot (an insert into a full
/// home judges all 32) reads neither the protocol from the flow's words nor branches on
/// it: a table lookup by class gives the timeout, a bit of [`ASSURED`] whether it is kept.
const CLASS: u64 = 0b111;
/// The class of a UDP flow not answered yet.
const UDP_UNREPLIED: u64 = 6;
/// The class of a UDP flow answered.
const UDP_REPLIED: u64 = 7;
/// The classes the table keeps when it needs room, one bit each: TCP established or
/// closing politely, UDP answered (as Linux's `IPS_ASSURED`).
const ASSURED: u8 =
    1 << TcpState::Established as u8 | 1 << TcpState::FinWait as u8 | 1 << UDP_REPLIED;
const FIN_ORIG: u64 = 1 << 5;
const FIN_REPLY: u64 = 1 << 6;
/// Bits 7-63 of the aux word: the mark that the flow was found valid against a service
/// table ([`Conntrack::checked`]), or none (all zero).
const MARK: u64 = !((1 << 7) - 1);

/// The mark that the entry in state `s` was found valid against service table
/// `generation`: a set bit 7, the entry's version (30 bits) and the generation's low 26
/// bits. The version ties the mark to the entry, not the slot: a mark written through a
/// stale lookup after the slot went to another flow names the old entry and vouches for
/// nothing (as the seqlock, it relies on the version not wrapping meanwhile). The
/// generation is cut to 26 bits: two tables 67 million changes apart would look alike.
fn mark(s: State, generation: u64) -> u64 {
    1 << 7 | s.version() << 8 | generation << 38
}

/// The direction of a packet within its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// From the client, as the flow was created.
    Orig,
    /// From the endpoint back to the client.
    Reply,
}

/// The aux word of a new flow whose first packet had TCP flags `flags`.
fn initial_aux(proto: u8, flags: u8) -> u64 {
    if proto != PROTO_TCP {
        return UDP_UNREPLIED;
    }
    if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
        TcpState::SynSent.bits()
    } else {
        // Picked up mid-stream, as Linux does by default (nf_conntrack_tcp_loose).
        TcpState::Established.bits()
    }
}

/// The aux word after a packet with TCP flags `flags` went `dir`.
fn next_aux(proto: u8, aux: u64, dir: Dir, flags: u8) -> u64 {
    if proto != PROTO_TCP {
        return match dir {
            Dir::Reply => aux & !CLASS | UDP_REPLIED,
            Dir::Orig => aux,
        };
    }
    let mut f = aux & !CLASS;
    let mut st = TcpState::from_bits(aux);
    if flags & TCP_RST != 0 {
        return f | TcpState::Close.bits();
    }
    if flags & TCP_FIN != 0 {
        f |= if dir == Dir::Orig {
            FIN_ORIG
        } else {
            FIN_REPLY
        };
    }
    st = match (st, dir) {
        (TcpState::SynSent, Dir::Reply) if flags & TCP_SYN != 0 && flags & TCP_ACK != 0 => {
            TcpState::SynRecv
        }
        (TcpState::SynRecv, Dir::Orig) if flags & TCP_ACK != 0 && flags & TCP_SYN == 0 => {
            TcpState::Established
        }
        (s, _) => s,
    };
    if st != TcpState::Close {
        if f & FIN_ORIG != 0 && f & FIN_REPLY != 0 {
            st = TcpState::TimeWait;
        } else if f & (FIN_ORIG | FIN_REPLY) != 0 && st != TcpState::TimeWait {
            st = TcpState::FinWait;
        }
    }
    f | st.bits()
}

/// How long a flow lives without packets, per state (ns). The defaults are Linux's,
/// with kube-proxy's one-day established timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    pub tcp_syn_sent: u64,
    pub tcp_syn_recv: u64,
    pub tcp_established: u64,
    pub tcp_fin_wait: u64,
    pub tcp_time_wait: u64,
    /// After a RST.
    pub tcp_close: u64,
    /// UDP before a reply.
    pub udp: u64,
    /// UDP once answered.
    pub udp_stream: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn_sent: 120 * SECOND,
            tcp_syn_recv: 60 * SECOND,
            tcp_established: 86_400 * SECOND,
            tcp_fin_wait: 120 * SECOND,
            tcp_time_wait: 120 * SECOND,
            tcp_close: 10 * SECOND,
            udp: 30 * SECOND,
            udp_stream: 120 * SECOND,
        }
    }
}

impl Timeouts {
    /// The timeout of a flow whose aux word is `aux`.
    fn of(&self, aux: u64) -> u64 {
        match aux & CLASS {
            0 => self.tcp_syn_sent,
            1 => self.tcp_syn_recv,
            2 => self.tcp_established,
            3 => self.tcp_fin_wait,
            4 => self.tcp_time_wait,
            5 => self.tcp_close,
            UDP_UNREPLIED => self.udp,
            _ => self.udp_stream,
        }
    }
}

/// [`Timeouts`] by class of flow (the low bits of a slot's aux word, [`CLASS`]), as the
/// table reads them: a flow's timeout is one indexed load, where [`Timeouts`]' fields
/// took a jump table (ten instructions and an indirect branch on every lookup that
/// finds a flow). Made once per control snapshot, which keeps only this form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassTimeouts([u64; 8]);

impl From<&Timeouts> for ClassTimeouts {
    fn from(t: &Timeouts) -> ClassTimeouts {
        ClassTimeouts(std::array::from_fn(|class| t.of(class as u64)))
    }
}

impl Default for ClassTimeouts {
    fn default() -> ClassTimeouts {
        ClassTimeouts::from(&Timeouts::default())
    }
}

impl ClassTimeouts {
    /// The timeout of a flow whose aux word is `aux`.
    #[inline]
    fn of(&self, aux: u64) -> u64 {
        self.0[(aux & CLASS) as usize]
    }
}

// ---- the table ---------------------------------------------------------------------------

/// A tracked flow as a lookup found it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hit<'a> {
    /// The entry's words as the lookup read them, decoded by [`Hit::flow`] where they are
    /// used: decoded whole in the lookup, every field was unpacked and stored for every
    /// packet (30 instructions), though a packet of an established flow reads few.
    words: [u64; 5],
    /// The entry: its slot and its state when found.
    idx: usize,
    /// The slot itself, which the lookup had at hand: what [`Conntrack::touch`] writes
    /// on every packet of the flow, and finding it again from `idx` took 25 instructions.
    slot: &'a Slot<5>,
    state: State,
    /// The slot's aux word as the lookup read it (0 when it did not).
    aux: u64,
}

impl Hit<'_> {
    /// The flow. Inlined, so a caller computes only the fields it reads.
    #[inline(always)]
    pub fn flow(&self) -> Flow {
        Flow::decode(&self.words)
    }

    /// The slot the flow lives in.
    #[cfg(test)]
    pub fn slot(&self) -> usize {
        self.idx
    }
}

/// Slots above which [`Conntrack::worth_prefetching`]: such a table spans more pages than
/// the TLB maps (a 2,048-entry second-level TLB maps 8 MiB) and more than the L2 cache
/// holds, so its lookups miss. In a smaller one they mostly hit, and the prefetch's hashes
/// and scans are pure cost (320 instructions a packet in the pipeline's chain benchmark,
/// whose 65,536-slot tables gain nothing from it).
const PREFETCH_ABOVE: usize = 1 << 17;

/// A lookup begun by [`Conntrack::prefetch`]: the bucket it fetches (if allocated) and
/// the tag whose slot [`Conntrack::prefetch_slot`] fetches.
#[derive(Clone, Copy)]
pub(crate) struct Prefetch<'a> {
    bucket: Option<&'a Bucket<5>>,
    tag: u16,
}

/// What [`Conntrack::insert`] did.
#[derive(Debug)]
pub(crate) enum Insert<'a> {
    /// The flow was tracked already (maybe inserted by another worker just now).
    Existing(Hit<'a>),
    /// A new entry; `evicted` when an unassured flow was pushed out to make room.
    New { hit: Hit<'a>, evicted: bool },
    /// No room: the flow's buckets hold only assured flows, or no source port is left
    /// that would make its reply tuple unique.
    Full,
}

/// A flow as [`Conntrack::entries`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConntrackEntry {
    pub protocol: &'static str,
    /// TCP state, or `UNREPLIED` / `REPLIED` for UDP.
    pub state: &'static str,
    /// The original direction as the client sent it.
    pub src: String,
    pub dst: String,
    /// The original direction as it left, translated.
    pub to_src: String,
    pub to_dst: String,
    /// Nanoseconds until it expires without further packets.
    pub expires_in_ns: u64,
}

/// The source ports a flow may be given when its reply tuple must be made unique:
/// 1024-65535 without the node-port range, so that no masqueraded flow ever holds a port
/// a NodePort listens on (kube-proxy's IPVS masquerade once picked one,
/// kubernetes#139276).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnatPorts {
    /// The node-port range, first and last.
    excluded: (u16, u16),
}

impl SnatPorts {
    /// The lowest port SNAT gives out: below it are the well-known ports.
    pub const FIRST: u16 = 1024;

    /// Every port from [`SnatPorts::FIRST`] up but those in `first..=last`.
    pub fn excluding(first: u16, last: u16) -> SnatPorts {
        SnatPorts {
            excluded: (first.max(SnatPorts::FIRST), last.max(first)),
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        port >= SnatPorts::FIRST && !(self.excluded.0..=self.excluded.1).contains(&port)
    }

    /// How many ports there are.
    fn count(&self) -> u32 {
        let (a, b) = self.excluded;
        65536 - SnatPorts::FIRST as u32 - (b as u32 - a as u32 + 1)
    }

    /// The `k`-th port, in order, `k < count()`.
    fn nth(&self, k: u32) -> u16 {
        let (a, b) = self.excluded;
        let p = SnatPorts::FIRST as u32 + k;
        if p < a as u32 {
            p as u16
        } else {
            (p + (b as u32 - a as u32 + 1)) as u16
        }
    }
}

impl Default for SnatPorts {
    /// Without Kubernetes' default node-port range, 30000-32767.
    fn default() -> SnatPorts {
        SnatPorts::excluding(30000, 32767)
    }
}

/// The source ports one new flow tries, in a fixed order of its own: a walk over every
/// port of the range from a start and with a stride (coprime with the range's size, so it
/// visits each port once) both hashed from the flow. Deterministic, so a simulated run
/// gives every flow the same port each time; spread, so that a nearly full range still
/// finds a free port in few steps, where a linear walk would crawl along runs of taken
/// ones.
struct PortWalk {
    ports: SnatPorts,
    next: u32,
    stride: u32,
    left: u32,
}

impl PortWalk {
    fn new(flow: &Flow, ports: SnatPorts) -> PortWalk {
        let n = ports.count();
        let h = mix(side_hash(flow.orig.proto, flow.orig.src, flow.orig.sport)
            ^ side_hash(flow.xlat.proto, flow.xlat.dst, flow.xlat.dport).rotate_left(17));
        let mut stride = 1 + (h >> 32) as u32 % (n - 1).max(1);
        while gcd(stride, n) != 1 {
            stride += 1;
        }
        PortWalk {
            ports,
            next: h as u32 % n,
            stride,
            left: n,
        }
    }
}

impl Iterator for PortWalk {
    type Item = u16;
    fn next(&mut self) -> Option<u16> {
        self.left = self.left.checked_sub(1)?;
        let p = self.ports.nth(self.next);
        self.next = ((self.next as u64 + self.stride as u64) % self.ports.count() as u64) as u32;
        Some(p)
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The connection tracking table.
///
/// A flow lives in the home of its client side, which is also where its replies look
/// when they come back to the client's own address and port. A flow whose source was
/// translated (SNAT: masquerade, hairpin, a port moved to keep its reply unique) has
/// replies addressed elsewhere; for those, `replies` maps the reply tuple to the flow's
/// slot, as Linux keeps a second hash entry per connection for its reply direction. An
/// index entry is valid while the slot it names holds a live flow with that reply tuple;
/// a stale one counts as expired and is reused.
pub(crate) struct Conntrack {
    table: SlotTable<5>,
    /// words: reply src << 32 | dst, sport << 48 | dport << 32 | proto << 24 | 1, slot.
    replies: SlotTable<3>,
    used: AtomicBool,
    snat_used: AtomicBool,
}

impl Conntrack {
    /// A table of `size` slots (rounded up to a power of two), for up to about half as
    /// many flows.
    pub fn new(size: usize) -> Conntrack {
        Conntrack {
            table: SlotTable::new(size),
            replies: SlotTable::new(size),
            used: AtomicBool::new(false),
            snat_used: AtomicBool::new(false),
        }
    }

    /// True once any flow was inserted: until then lookups can be skipped.
    pub fn is_used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    fn expired(&self, idx: usize, now: u64, to: &ClassTimeouts) -> bool {
        Conntrack::slot_expired(self.table.slot(idx), now, to)
    }

    /// [`Conntrack::expired`] for a slot at hand.
    fn slot_expired(slot: &Slot<5>, now: u64, to: &ClassTimeouts) -> bool {
        let seen = slot.seen.load(Ordering::Relaxed);
        now.saturating_sub(seen) > to.of(slot.aux.load(Ordering::Relaxed))
    }

    #[inline]
    fn hit(&self, found: Found<5>) -> Hit<'_> {
        Conntrack::hit_in(found, self.table.found_slot(found.idx), 0)
    }

    /// The hit of `found` in `slot`, whose aux word read `aux`.
    fn hit_in(found: Found<5>, slot: &Slot<5>, aux: u64) -> Hit<'_> {
        Hit {
            words: found.words,
            idx: found.idx,
            slot,
            state: found.state,
            aux,
        }
    }

    /// The hit of `found` in `slot`, unless the flow expired; [`Conntrack::expired`]
    /// from the slot at hand.
    fn unexpired<'a>(
        &self,
        found: Found<5>,
        slot: &'a Slot<5>,
        now: u64,
        to: &ClassTimeouts,
    ) -> Option<Hit<'a>> {
        let seen = slot.seen.load(Ordering::Relaxed);
        let aux = slot.aux.load(Ordering::Relaxed);
        (now.saturating_sub(seen) <= to.of(aux)).then(|| Conntrack::hit_in(found, slot, aux))
    }

    /// True when a batch's lookups are worth fetching ahead ([`Conntrack::prefetch`]):
    /// in a table of more than [`PREFETCH_ABOVE`] slots.
    pub fn worth_prefetching(&self) -> bool {
        self.table.size > PREFETCH_ABOVE
    }

    /// The first half of a lookup of original tuple `t` done ahead of time: starts
    /// fetching the state words [`Conntrack::find_orig`] will scan, and returns what
    /// [`Conntrack::prefetch_slot`] needs to fetch the slot. Called over a batch before
    /// its packets are processed, so the misses of all of them overlap instead of each
    /// packet waiting for its own in turn (a lookup in the host table misses the cache
    /// on its bucket and then on its slot). It changes nothing; when wrong (a tuple
    /// guessed from an odd frame, a flow that is not there), it cost a hash and a few
    /// useless cache lines. Inlined into the batch's loop
    /// ([`crate::services::balancer::Balancer::prefetch`]): 11 instructions a packet of
    /// call, return and saved registers.
    #[inline]
    pub fn prefetch(&self, t: &Tuple) -> Prefetch<'_> {
        let side = side_hash(t.proto, t.src, t.sport);
        Prefetch {
            bucket: self.table.prefetch_states(self.table.home(side)),
            tag: t.tag_from(side),
        }
    }

    /// The second half: once the state words are in (a batch's other prefetches later),
    /// starts fetching the slot whose tag matches, the one `find_orig` will read.
    pub fn prefetch_slot(&self, p: Prefetch) {
        SlotTable::prefetch_slot(p.bucket, p.tag);
    }

    /// The live flow whose original tuple is `t`. With `wait`, waits out inserts of it in
    /// progress on other workers (for callers about to insert it otherwise).
    pub fn find_orig(
        &self,
        t: &Tuple,
        now: u64,
        to: &ClassTimeouts,
        wait: bool,
    ) -> Option<Hit<'_>> {
        let side = side_hash(t.proto, t.src, t.sport);
        let (f, slot) = self.table.find_slot(
            self.table.home(side),
            TagOf::Orig,
            t.tag_from(side),
            |w| Flow::orig_is(w, t),
            wait,
            Scan::Hit,
        )?;
        self.unexpired(f, slot, now, to)
    }

    /// The live flow whose reply tuple is `t`.
    pub fn find_reply(&self, t: &Tuple, now: u64, to: &ClassTimeouts) -> Option<Hit<'_>> {
        if self.snat_used.load(Ordering::Relaxed) {
            let (k0, k1) = reply_key(t);
            let home = self.replies.home(tuple_hash(t));
            if let Some(f) = self.replies.find(
                home,
                TagOf::Orig,
                t.tag(),
                |w| w[0] == k0 && w[1] == k1,
                false,
            ) {
                if let Some(hit) = self.indexed(f.words[2] as usize, t, now, to) {
                    return Some(hit);
                }
            }
        }
        let home = self.table.home(side_hash(t.proto, t.dst, t.dport));
        let (f, slot) = self.table.find_slot(
            home,
            TagOf::Reply,
            t.tag(),
            |w| Flow::decode(w).reply() == *t,
            false,
            Scan::Miss,
        )?;
        self.unexpired(f, slot, now, to)
    }

    /// The flow in slot `idx` if it is live and its reply tuple is `t`.
    fn indexed(&self, idx: usize, t: &Tuple, now: u64, to: &ClassTimeouts) -> Option<Hit<'_>> {
        let hit = self.hit(self.table.read(idx)?);
        (hit.flow().reply() == *t && !Conntrack::slot_expired(hit.slot, now, to)).then_some(hit)
    }

    /// Tracks `flow`, whose first packet had TCP flags `flags`, unless its original tuple
    /// is tracked already (then the flow found is returned, maybe one another worker
    /// inserted at the same instant). Reply tuples are unique, as Linux's NAT makes them:
    /// when another flow already has this one's reply tuple (two clients masqueraded to
    /// one address, or one client socket reaching one endpoint through two services), or
    /// when the flow is masqueraded from a port outside `ports`, its source port moves to
    /// a free one of `ports`; a masqueraded flow keeps its client's port when it can.
    pub fn insert(
        &self,
        flow: Flow,
        ports: SnatPorts,
        now: u64,
        to: &ClassTimeouts,
        flags: u8,
    ) -> Insert<'_> {
        self.insert_checked(flow, ports, now, to, flags, None)
    }

    /// [`Conntrack::insert`]; a new entry is marked valid against service table
    /// generation `checked` if given ([`Conntrack::checked`]): the caller has just
    /// chosen the flow's endpoint from that table.
    pub fn insert_checked(
        &self,
        mut flow: Flow,
        ports: SnatPorts,
        now: u64,
        to: &ClassTimeouts,
        flags: u8,
        checked: Option<u64>,
    ) -> Insert<'_> {
        self.used.store(true, Ordering::Relaxed);
        let orig = flow.orig;
        let side = side_hash(orig.proto, orig.src, orig.sport);
        let home = self.table.home(side);
        // [`Conntrack::expired`], then assured or not, from one read of the slot's
        // `seen` and `aux`: a full home judges all 32 of its flows for every insert. A
        // flow of class `c` expired when it was last seen before `oldest[c]` (the same
        // as `now - seen > timeout`, with the subtraction done once per class instead of
        // once per slot).
        let oldest = to.0.map(|timeout| now.saturating_sub(timeout));
        let victim = move |slot: &Slot<5>| {
            let seen = slot.seen.load(Ordering::Relaxed);
            let class = slot.aux.load(Ordering::Relaxed) & CLASS;
            if seen < oldest[class as usize] {
                Victim::EXPIRED
            } else if ASSURED >> class & 1 != 0 {
                Victim::KEEP
            } else {
                Victim::evictable(seen)
            }
        };
        let aux = initial_aux(orig.proto, flags);
        // The walk is set up (a few divisions) only when a port must move, which most
        // flows never do. It depends on the flow's tuples but not on its source port.
        let mut walk = None;
        let mut next_port = |flow: &Flow| {
            walk.get_or_insert_with(|| PortWalk::new(flow, ports))
                .next()
        };
        if flow.is_snat() && !ports.contains(flow.xlat.sport) {
            match next_port(&flow) {
                Some(p) => flow.xlat.sport = p,
                None => return Insert::Full,
            }
        }
        loop {
            if self.find_reply(&flow.reply(), now, to).is_some() {
                match next_port(&flow) {
                    Some(p) => flow.xlat.sport = p,
                    None => return Insert::Full,
                }
                continue;
            }
            let r = self.table.insert(
                home,
                orig.tag_from(side),
                |w| Flow::orig_is(w, &orig),
                victim,
                || (flow.encode(), flow.reply().tag()),
                |slot, state| {
                    let mark = checked.map_or(0, |g| mark(state, g));
                    slot.seen.store(now, Ordering::Relaxed);
                    slot.aux.store(aux | mark, Ordering::Relaxed);
                },
            );
            let (found, evicted) = match r {
                Inserted::Existing(f) => return Insert::Existing(self.hit(f)),
                Inserted::Full => return Insert::Full,
                Inserted::New { found, evicted } => (found, evicted),
            };
            let hit = self.hit(found);
            // The check at the top of the loop and the insert are not one step: a flow of
            // another worker with the same reply tuple may have come in between, one
            // masqueraded (in the reply index) while this one is not, or the other way
            // round. Each side looks again once its own entry is in, so that at least
            // one of two such flows sees the other; that one moves its source port, as
            // Linux's NAT does on a clash.
            if !flow.is_snat() {
                if !self.reply_indexed(&flow.reply(), now, to) {
                    return Insert::New { hit, evicted };
                }
                self.table.remove(&found);
                match next_port(&flow) {
                    Some(p) => flow.xlat.sport = p,
                    None => return Insert::Full,
                }
                continue;
            }
            match self.index(&flow.reply(), found.idx, now, to) {
                Inserted::New { .. } if self.reply_in_table(&flow, now, to) => {
                    self.table.remove(&found);
                    match next_port(&flow) {
                        Some(p) => flow.xlat.sport = p,
                        None => return Insert::Full,
                    }
                }
                Inserted::New { .. } => return Insert::New { hit, evicted },
                // An entry left from an earlier flow of this slot with the same reply
                // tuple: it names this flow now, once renewed (a worker that read it as
                // stale before this flow was in the slot may be replacing it).
                Inserted::Existing(f) if f.words[2] as usize == found.idx => {
                    if self.replies.renew(&f) {
                        return Insert::New { hit, evicted };
                    }
                    // Replaced a moment ago: start again with the same port.
                    self.table.remove(&found);
                }
                // Another worker's new flow took this reply tuple a moment ago.
                Inserted::Existing(_) => {
                    self.table.remove(&found);
                    match next_port(&flow) {
                        Some(p) => flow.xlat.sport = p,
                        None => return Insert::Full,
                    }
                }
                Inserted::Full => {
                    self.table.remove(&found);
                    return Insert::Full;
                }
            }
        }
    }

    /// True when a live masqueraded flow holds reply tuple `t` in the reply index.
    fn reply_indexed(&self, t: &Tuple, now: u64, to: &ClassTimeouts) -> bool {
        if !self.snat_used.load(Ordering::SeqCst) {
            return false;
        }
        let (k0, k1) = reply_key(t);
        self.replies
            .find(
                self.replies.home(tuple_hash(t)),
                TagOf::Orig,
                t.tag(),
                |w| w[0] == k0 && w[1] == k1 && self.indexed(w[2] as usize, t, now, to).is_some(),
                false,
            )
            .is_some()
    }

    /// True when a live flow other than `flow` has `flow`'s reply tuple as its own,
    /// untranslated reply (found where the table keeps flows by their reply side).
    fn reply_in_table(&self, flow: &Flow, now: u64, to: &ClassTimeouts) -> bool {
        let t = flow.reply();
        self.table
            .find_slot(
                self.table.home(side_hash(t.proto, t.dst, t.dport)),
                TagOf::Reply,
                t.tag(),
                |w| {
                    let other = Flow::decode(w);
                    other.reply() == t && other.orig != flow.orig
                },
                false,
                Scan::Hit,
            )
            .is_some_and(|(_, slot)| !Conntrack::slot_expired(slot, now, to))
    }

    /// Enters reply tuple `t` of the flow in slot `idx` into the reply index.
    fn index(&self, t: &Tuple, idx: usize, now: u64, to: &ClassTimeouts) -> Inserted<3> {
        self.snat_used.store(true, Ordering::Relaxed);
        let (k0, k1) = reply_key(t);
        let valid = |w: &[u64; 3]| {
            let t = Tuple::new(
                (w[1] >> 24) as u8,
                Ipv4Addr::from((w[0] >> 32) as u32),
                (w[1] >> 48) as u16,
                Ipv4Addr::from(w[0] as u32),
                (w[1] >> 32) as u16,
            );
            self.indexed(w[2] as usize, &t, now, to).is_some()
        };
        self.replies.insert(
            self.replies.home(tuple_hash(t)),
            t.tag(),
            |w| w[0] == k0 && w[1] == k1,
            |slot| {
                if valid(&std::array::from_fn(|i| slot.word(i))) {
                    Victim::KEEP
                } else {
                    Victim::EXPIRED
                }
            },
            || ([k0, k1, idx as u64], 0),
            |_, _| {},
        )
    }

    /// Records a packet of `hit`'s flow going `dir` with TCP flags `flags` at `now`.
    pub fn touch(&self, hit: &Hit, dir: Dir, flags: u8, now: u64) {
        let slot = hit.slot;
        if slot.seen.load(Ordering::Relaxed) < now {
            slot.seen.fetch_max(now, Ordering::Relaxed);
        }
        let proto = hit.flow().orig.proto;
        let cur = slot.aux.load(Ordering::Relaxed);
        // What [`next_aux`] leaves as it is for UDP: all but a first reply.
        if proto != PROTO_TCP && (dir == Dir::Orig || cur & CLASS == UDP_REPLIED) {
            return;
        }
        Conntrack::record(&slot.aux, proto, cur, dir, flags);
    }

    /// The rest of [`Conntrack::touch`]: moves the aux word `aux`, last seen holding
    /// `cur`, on by a packet. Out of line, so that the usual packet's call is short.
    #[inline(never)]
    fn record(aux: &AtomicU64, proto: u8, mut cur: u64, dir: Dir, flags: u8) {
        loop {
            let next = next_aux(proto, cur, dir, flags);
            if next == cur {
                return;
            }
            match aux.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }

    /// True when `hit`'s flow was found valid against service table `generation` (by
    /// [`Conntrack::mark_checked`] or at its insert), as far as its lookup read.
    pub fn checked(&self, hit: &Hit, generation: u64) -> bool {
        hit.aux & MARK == mark(hit.state, generation)
    }

    /// Marks `hit`'s flow as found valid against service table `generation`, unless its
    /// aux word changed since the lookup read it (then the next packet checks again).
    pub fn mark_checked(&self, hit: &Hit, generation: u64) {
        let aux = hit.aux & !MARK | mark(hit.state, generation);
        let _ = hit
            .slot
            .aux
            .compare_exchange(hit.aux, aux, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The TCP state of a flow (None for UDP).
    pub fn tcp_state(&self, hit: &Hit) -> Option<TcpState> {
        (hit.flow().orig.proto == PROTO_TCP)
            .then(|| TcpState::from_bits(hit.slot.aux.load(Ordering::Relaxed)))
    }

    /// Forgets a flow (unless its slot changed since the lookup).
    pub fn remove(&self, hit: &Hit) -> bool {
        self.table.remove_at(hit.idx, hit.state)
    }

    /// Removes every live flow for which `stale` holds; returns how many.
    pub fn flush(&self, stale: impl Fn(&Flow) -> bool) -> usize {
        let mut n = 0;
        for f in self.table.live() {
            if stale(&Flow::decode(&f.words)) && self.table.remove(&f) {
                n += 1;
            }
        }
        n
    }

    /// Live flows at `now`.
    pub fn count(&self, now: u64, to: &ClassTimeouts) -> usize {
        self.table
            .live()
            .filter(|f| !self.expired(f.idx, now, to))
            .count()
    }

    /// Live flows at `now`, sorted by protocol and original tuple.
    pub fn entries(&self, now: u64, to: &ClassTimeouts) -> Vec<ConntrackEntry> {
        let mut out: Vec<(Tuple, ConntrackEntry)> = self
            .table
            .live()
            .filter_map(|f| {
                let flow = Flow::decode(&f.words);
                let proto = flow.orig.proto;
                let slot = self.table.slot(f.idx);
                let aux = slot.aux.load(Ordering::Relaxed);
                let age = now.saturating_sub(slot.seen.load(Ordering::Relaxed));
                let timeout = to.of(aux);
                if age > timeout {
                    return None;
                }
                let state = if proto == PROTO_TCP {
                    match TcpState::from_bits(aux) {
                        TcpState::SynSent => "SYN_SENT",
                        TcpState::SynRecv => "SYN_RECV",
                        TcpState::Established => "ESTABLISHED",
                        TcpState::FinWait => "FIN_WAIT",
                        TcpState::TimeWait => "TIME_WAIT",
                        TcpState::Close => "CLOSE",
                    }
                } else if aux & CLASS == UDP_REPLIED {
                    "REPLIED"
                } else {
                    "UNREPLIED"
                };
                let ep = |ip: Ipv4Addr, port: u16| format!("{ip}:{port}");
                Some((
                    flow.orig,
                    ConntrackEntry {
                        protocol: match proto {
                            PROTO_TCP => "tcp",
                            PROTO_UDP => "udp",
                            _ => "other",
                        },
                        state,
                        src: ep(flow.orig.src, flow.orig.sport),
                        dst: ep(flow.orig.dst, flow.orig.dport),
                        to_src: ep(flow.xlat.src, flow.xlat.sport),
                        to_dst: ep(flow.xlat.dst, flow.xlat.dport),
                        expires_in_ns: timeout - age,
                    },
                ))
            })
            .collect();
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, e)| e).collect()
    }

    /// Forgets every flow, as a restart does.
    pub fn clear(&self) {
        self.table.clear();
        self.replies.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Barrier};

    /// A worker that meets a new flow inserts it; one that races it gets the same flow.
    #[test]
    fn insert_races_and_reply_lookup() {
        use std::net::Ipv4Addr;
        let ct = Conntrack::new(1024);
        let to = ClassTimeouts::default();
        let client = Tuple::new(
            17,
            Ipv4Addr::new(10, 0, 1, 33),
            40000,
            Ipv4Addr::new(10, 3, 0, 10),
            53,
        );
        let ep = Ipv4Addr::new(10, 0, 2, 7);
        // A worker that meets a new flow inserts it; one that races it gets the same flow back.
        let flow = Flow::new(client, Tuple { dst: ep, ..client }, Client::Routed);
        let ports = SnatPorts::default();
        let Insert::New { hit, .. } = ct.insert(flow, ports, 0, &to, 0) else {
            panic!()
        };
        let Insert::Existing(again) = ct.insert(flow, ports, 0, &to, 0) else {
            panic!()
        };
        assert_eq!(hit.flow(), again.flow());
        // Replies are found by their own tuple.
        assert!(ct.find_reply(&hit.flow().reply(), 1, &to).is_some());
    }

    fn ip(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 1, d)
    }

    fn vip() -> Ipv4Addr {
        Ipv4Addr::new(10, 3, 0, 10)
    }

    fn udp(sport: u16) -> Tuple {
        Tuple::new(PROTO_UDP, ip(33), sport, vip(), 53)
    }

    fn to_ep(t: Tuple, ep: Ipv4Addr) -> Flow {
        Flow::new(t, Tuple { dst: ep, ..t }, Client::Routed)
    }

    #[test]
    fn flow_encoding_round_trips() {
        let f = Flow {
            orig: Tuple::new(PROTO_TCP, ip(33), 40000, vip(), 80),
            xlat: Tuple::new(PROTO_TCP, ip(1), 32770, ip(34), 8080),
            client: Client::Underlay("02:00:ac:10:09:09".parse().unwrap()),
            affinity: Some(7),
        };
        assert_eq!(Flow::decode(&f.encode()), f);
        assert!(Flow::orig_is(&f.encode(), &f.orig));
        assert!(!Flow::orig_is(&f.encode(), &f.orig.reversed()));
        assert!(f.is_dnat() && f.is_snat());
    }

    #[test]
    fn tcp_states_follow_the_handshake_and_close() {
        let t = PROTO_TCP;
        let mut a = initial_aux(t, TCP_SYN);
        assert_eq!(TcpState::from_bits(a), TcpState::SynSent);
        a = next_aux(t, a, Dir::Reply, TCP_SYN | TCP_ACK);
        assert_eq!(TcpState::from_bits(a), TcpState::SynRecv);
        a = next_aux(t, a, Dir::Orig, TCP_ACK);
        assert_eq!(TcpState::from_bits(a), TcpState::Established);
        a = next_aux(t, a, Dir::Orig, TCP_FIN | TCP_ACK);
        assert_eq!(TcpState::from_bits(a), TcpState::FinWait);
        a = next_aux(t, a, Dir::Reply, TCP_FIN | TCP_ACK);
        assert_eq!(TcpState::from_bits(a), TcpState::TimeWait);
        let b = next_aux(t, initial_aux(t, TCP_SYN), Dir::Reply, TCP_RST | TCP_ACK);
        assert_eq!(TcpState::from_bits(b), TcpState::Close);
        let to = ClassTimeouts::default();
        assert_eq!(to.of(b), 10 * SECOND);
        assert_eq!(to.of(initial_aux(PROTO_UDP, 0)), 30 * SECOND);
        assert_eq!(
            to.of(next_aux(
                PROTO_UDP,
                initial_aux(PROTO_UDP, 0),
                Dir::Reply,
                0
            )),
            120 * SECOND
        );
    }

    /// The mark that a flow was found valid names the table's generation and the entry:
    /// it vouches for neither another generation nor the slot's next entry (a mark
    /// written through a lookup made before the slot changed hands).
    #[test]
    fn validity_marks_name_their_generation_and_entry() {
        let ct = Conntrack::new(64);
        let to = ClassTimeouts::default();
        let t = udp(40000);
        let flow = to_ep(t, ip(40));
        let ports = SnatPorts::default();
        assert!(matches!(
            ct.insert_checked(flow, ports, 0, &to, 0, Some(7)),
            Insert::New { .. }
        ));
        let hit = ct.find_orig(&t, 0, &to, false).unwrap();
        assert!(ct.checked(&hit, 7) && !ct.checked(&hit, 8));
        ct.mark_checked(&hit, 8);
        ct.touch(&hit, Dir::Reply, 0, 1);
        let hit = ct.find_orig(&t, 1, &to, false).unwrap();
        assert!(ct.checked(&hit, 8) && !ct.checked(&hit, 7), "kept by touch");
        assert!(ct.remove(&hit));

        let Insert::New { hit: first, .. } = ct.insert(flow, ports, 0, &to, 0) else {
            panic!()
        };
        let stale = ct.find_orig(&t, 0, &to, false).unwrap();
        assert!(!ct.checked(&stale, 8), "a new entry starts unmarked");
        assert!(ct.remove(&first));
        let Insert::New { hit: next, .. } = ct.insert(flow, ports, 0, &to, 0) else {
            panic!()
        };
        assert_eq!(next.slot(), stale.slot());
        // The slot's aux word is as the stale lookup read it, so the mark goes in.
        ct.mark_checked(&stale, 9);
        let fresh = ct.find_orig(&t, 0, &to, false).unwrap();
        assert_ne!(fresh.aux & MARK, 0, "the stale mark went in");
        assert!(!ct.checked(&fresh, 9), "the mark names the entry before");
    }

    #[test]
    fn udp_expires_and_replies_refresh() {
        let ct = Conntrack::new(64);
        let to = ClassTimeouts::default();
        let t = udp(40000);
        let Insert::New { hit, .. } = ct.insert(to_ep(t, ip(40)), SnatPorts::default(), 0, &to, 0)
        else {
            panic!()
        };
        assert!(ct.find_orig(&t, 30 * SECOND, &to, false).is_some());
        assert!(ct.find_orig(&t, 31 * SECOND, &to, false).is_none(), "30 s");
        ct.touch(&hit, Dir::Reply, 0, 20 * SECOND);
        assert!(
            ct.find_orig(&t, 139 * SECOND, &to, false).is_some(),
            "stream"
        );
        assert!(ct
            .find_reply(&hit.flow().reply(), 139 * SECOND, &to)
            .is_some());
        assert_eq!(ct.count(139 * SECOND, &to), 1);
        assert_eq!(ct.count(141 * SECOND, &to), 0);
    }

    /// A host's table is one block, allocated whole at its first insert (so that the
    /// binary's allocator can put it on huge pages); a simulated node's keeps its small
    /// segments, allocated one at a time.
    #[test]
    fn host_table_is_one_block_and_small_tables_are_segmented() {
        let host = SlotTable::<5>::new(HOST_SIZE);
        assert_eq!(host.segments.len(), 1);
        assert_eq!(
            host.segment(HOST_SIZE - 1).buckets.len(),
            HOST_SIZE / BUCKET
        );
        assert!(host.segments[0].get().is_some());

        let node = SlotTable::<5>::new(DEFAULT_SIZE);
        assert_eq!(node.segments.len(), DEFAULT_SIZE / SEGMENT);
        assert_eq!(
            node.segment(DEFAULT_SIZE - 1).buckets.len(),
            SEGMENT / BUCKET
        );
        let allocated = node.segments.iter().filter(|s| s.get().is_some()).count();
        assert_eq!(allocated, 1, "only the segment written to");
    }

    #[test]
    fn full_bucket_evicts_unassured_then_refuses() {
        // One bucket: every flow lands in it.
        let ct = Conntrack::new(BUCKET);
        let to = ClassTimeouts::default();
        for p in 0..BUCKET as u16 {
            let t = udp(1000 + p);
            assert!(matches!(
                ct.insert(to_ep(t, ip(40)), SnatPorts::default(), p as u64, &to, 0),
                Insert::New { evicted: false, .. }
            ));
        }
        // Unanswered: the oldest goes.
        let t = udp(2000);
        assert!(matches!(
            ct.insert(to_ep(t, ip(40)), SnatPorts::default(), 100, &to, 0),
            Insert::New { evicted: true, .. }
        ));
        assert!(ct.find_orig(&udp(1000), 100, &to, false).is_none());
        // Answer everything: nothing may go.
        for f in ct.table.live().collect::<Vec<_>>() {
            ct.touch(&ct.hit(f), Dir::Reply, 0, 100);
        }
        let t = udp(3000);
        assert!(matches!(
            ct.insert(to_ep(t, ip(40)), SnatPorts::default(), 100, &to, 0),
            Insert::Full
        ));
        // Expired ones make room again.
        assert!(matches!(
            ct.insert(
                to_ep(t, ip(40)),
                SnatPorts::default(),
                1000 * SECOND,
                &to,
                0
            ),
            Insert::New { evicted: false, .. }
        ));
    }

    /// TCP's classes when a home is full: an established flow and one closing from one
    /// side are kept, one whose handshake is not done or that closed from both sides may
    /// go, the oldest of those first.
    #[test]
    fn full_bucket_keeps_established_tcp_and_evicts_the_oldest_unassured() {
        let ct = Conntrack::new(BUCKET);
        let to = ClassTimeouts::default();
        let tcp = |sport| Tuple::new(PROTO_TCP, ip(33), sport, vip(), 80);
        let insert = |sport, now, flags| {
            ct.insert(
                to_ep(tcp(sport), ip(40)),
                SnatPorts::default(),
                now,
                &to,
                flags,
            )
        };
        let find = |sport| ct.find_orig(&tcp(sport), 100, &to, false);
        // Seen at 0..16 in turn: established (picked up mid-stream) at even times,
        // SYN_SENT at odd ones.
        for p in 0..BUCKET as u16 {
            let flags = if p % 2 == 0 { TCP_ACK } else { TCP_SYN };
            let r = insert(1000 + p, p as u64, flags);
            assert!(matches!(r, Insert::New { evicted: false, .. }));
        }
        // 1000 is the oldest, but established: 1001, the oldest SYN_SENT, goes.
        assert!(matches!(
            insert(2000, 100, TCP_SYN),
            Insert::New { evicted: true, .. }
        ));
        assert!(find(1000).is_some() && find(1003).is_some());
        assert!(find(1001).is_none());
        // 1000 closes from one side (FIN_WAIT), 1002 from both (TIME_WAIT); packets at
        // time 0 leave when they were last seen as it was.
        let half = find(1000).unwrap();
        ct.touch(&half, Dir::Orig, TCP_FIN | TCP_ACK, 0);
        assert_eq!(ct.tcp_state(&half), Some(TcpState::FinWait));
        let closed = find(1002).unwrap();
        ct.touch(&closed, Dir::Orig, TCP_FIN | TCP_ACK, 0);
        ct.touch(&closed, Dir::Reply, TCP_FIN | TCP_ACK, 0);
        assert_eq!(ct.tcp_state(&closed), Some(TcpState::TimeWait));
        // 1000 is still the oldest and kept; 1002 is now the oldest that may go.
        assert!(matches!(
            insert(2001, 100, TCP_SYN),
            Insert::New { evicted: true, .. }
        ));
        assert!(find(1002).is_none());
        assert!(find(1000).is_some() && find(1003).is_some());
    }

    #[test]
    fn snat_replies_are_found_through_the_index() {
        let ct = Conntrack::new(1024);
        let to = ClassTimeouts::default();
        let t = Tuple::new(PROTO_TCP, Ipv4Addr::new(172, 16, 9, 9), 5555, ip(1), 30080);
        let masq = |t: Tuple| {
            Flow::new(
                t,
                Tuple::new(PROTO_TCP, ip(1), t.sport, ip(34), 8080),
                Client::Routed,
            )
        };
        let Insert::New { hit, .. } = ct.insert(masq(t), SnatPorts::default(), 0, &to, TCP_SYN)
        else {
            panic!()
        };
        // The client's own port is kept while it is unique.
        assert_eq!(hit.flow().xlat.sport, 5555);
        let r = ct.find_reply(&hit.flow().reply(), 0, &to).unwrap();
        assert_eq!(r.flow(), hit.flow());
        // A second client with the same port, masqueraded to the same address and
        // endpoint, gets another port; both replies find their own flow.
        let u = Tuple {
            src: Ipv4Addr::new(172, 16, 9, 10),
            ..t
        };
        let Insert::New { hit: other, .. } =
            ct.insert(masq(u), SnatPorts::default(), 0, &to, TCP_SYN)
        else {
            panic!()
        };
        assert_ne!(other.flow().xlat.sport, 5555);
        assert!(SnatPorts::default().contains(other.flow().xlat.sport));
        assert_eq!(
            ct.find_reply(&other.flow().reply(), 0, &to)
                .unwrap()
                .flow()
                .orig,
            u
        );
        assert_eq!(
            ct.find_reply(&hit.flow().reply(), 0, &to)
                .unwrap()
                .flow()
                .orig,
            t
        );
        // Unanswered (SYN_SENT), a flow lives 120 s: its reply is found through the
        // index until then, and not after.
        assert!(ct
            .find_reply(&hit.flow().reply(), 120 * SECOND, &to)
            .is_some());
        assert!(ct
            .find_reply(&hit.flow().reply(), 121 * SECOND, &to)
            .is_none());
        // Once the first flow is gone its reply tuple is free again: the index entry
        // that named it is stale and neither found nor in the way.
        assert!(ct.remove(&hit));
        assert!(ct.find_reply(&hit.flow().reply(), 0, &to).is_none());
        let Insert::New { hit: again, .. } =
            ct.insert(masq(t), SnatPorts::default(), 0, &to, TCP_SYN)
        else {
            panic!()
        };
        assert_eq!(again.flow().xlat.sport, 5555);
    }

    #[test]
    fn snat_ports_skip_the_node_port_range_and_well_known_ports() {
        let ports = SnatPorts::default();
        assert_eq!(ports.count(), 65536 - 1024 - 2768);
        let all: Vec<u16> = (0..ports.count()).map(|k| ports.nth(k)).collect();
        assert_eq!(all[0], 1024);
        assert_eq!(*all.last().unwrap(), 65535);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert!(all
            .iter()
            .all(|&p| ports.contains(p) && !(30000..=32767).contains(&p)));
        // A walk visits every port once.
        let f = to_ep(udp(9), ip(40));
        let mut walked: Vec<u16> = PortWalk::new(&f, ports).collect();
        walked.sort();
        assert_eq!(walked, all);
        // A masqueraded client whose own port is a node port leaves from another one.
        let ct = Conntrack::new(64);
        let to = ClassTimeouts::default();
        let t = Tuple::new(PROTO_UDP, ip(33), 30080, vip(), 53);
        let flow = Flow::new(
            t,
            Tuple::new(PROTO_UDP, ip(1), 30080, ip(40), 53),
            Client::Routed,
        );
        let Insert::New { hit, .. } = ct.insert(flow, ports, 0, &to, 0) else {
            panic!()
        };
        assert!(
            ports.contains(hit.flow().xlat.sport),
            "{}",
            hit.flow().xlat.sport
        );
    }

    /// Flows go to their first bucket while it has room to spare, so that a lookup mostly
    /// reads one bucket; the table still fills far past half its slots before it evicts.
    #[test]
    fn flows_fill_their_first_bucket_and_the_table_before_evicting() {
        let ct = Conntrack::new(1 << 16);
        let to = ClassTimeouts::default();
        let flow = |n: u32| {
            let i = n.wrapping_mul(2_654_435_761);
            let t = Tuple::new(
                PROTO_UDP,
                Ipv4Addr::from(0x0a00_0000 | (i >> 8)),
                1024 + (i & 255) as u16,
                vip(),
                80,
            );
            to_ep(t, ip(40))
        };
        let (mut n, mut first) = (0u32, 0u32);
        while n < 1 << 16 {
            let f = flow(n);
            let home = ct
                .table
                .home(side_hash(f.orig.proto, f.orig.src, f.orig.sport));
            match ct.insert(f, SnatPorts::default(), 0, &to, 0) {
                Insert::New {
                    hit,
                    evicted: false,
                } => {
                    first += (hit.slot() / BUCKET == home.first) as u32;
                    n += 1;
                }
                _ => break,
            }
            if n == 26_214 {
                // 40% of the slots: most flows are where a lookup looks first.
                assert!(first * 10 > n * 9, "{first} of {n} in their first bucket");
            }
        }
        assert!(
            n * 5 > 4 << 16,
            "evicted at {n} flows, before 80% of the slots"
        );
    }

    /// The scale the table is built for: a million flows, every one found again with its
    /// translation, in both directions; and 60,000 flows masqueraded to one address and
    /// one endpoint at once, each with its own source port.
    #[test]
    fn a_million_flows_and_sixty_thousand_snat_ports() {
        let ct = Conntrack::new(HOST_SIZE);
        let to = ClassTimeouts::default();
        let client = |i: u32| {
            Tuple::new(
                PROTO_TCP,
                Ipv4Addr::from(0x0a00_0000 | (i >> 4)),
                40000 + (i & 15) as u16,
                vip(),
                80,
            )
        };
        let ep = |i: u32| Ipv4Addr::new(10, 1, (i % 7) as u8, 2 + (i % 5) as u8);
        const FLOWS: u32 = 1_000_000;
        for i in 0..FLOWS {
            let t = client(i);
            let r = ct.insert(to_ep(t, ep(i)), SnatPorts::default(), 0, &to, TCP_SYN);
            assert!(matches!(r, Insert::New { evicted: false, .. }), "flow {i}");
        }
        for i in 0..FLOWS {
            let t = client(i);
            let hit = ct.find_orig(&t, 1, &to, false).expect("found");
            assert_eq!(hit.flow().xlat.dst, ep(i));
            assert_eq!(
                ct.find_reply(&hit.flow().reply(), 1, &to).unwrap().slot(),
                hit.slot()
            );
        }

        let ct = Conntrack::new(1 << 18);
        const SNAT: u32 = 60_000;
        let mut ports = std::collections::HashSet::new();
        let from = |i: u32| {
            Tuple::new(
                PROTO_TCP,
                Ipv4Addr::from(0xac10_0000 | i),
                5555,
                ip(1),
                30080,
            )
        };
        for i in 0..SNAT {
            let t = from(i);
            let flow = Flow::new(
                t,
                Tuple::new(PROTO_TCP, ip(1), t.sport, ip(34), 8080),
                Client::Routed,
            );
            let Insert::New { hit, .. } = ct.insert(flow, SnatPorts::default(), 0, &to, TCP_SYN)
            else {
                panic!("flow {i}")
            };
            assert!(SnatPorts::default().contains(hit.flow().xlat.sport));
            assert!(ports.insert(hit.flow().xlat.sport), "port given twice");
        }
        for i in 0..SNAT {
            let hit = ct.find_orig(&from(i), 1, &to, false).unwrap();
            let back = ct.find_reply(&hit.flow().reply(), 1, &to).unwrap();
            assert_eq!(back.flow().orig, from(i));
        }
    }

    /// Two inserts of one key caught between publishing and confirming (both PENDING):
    /// the one with the lower order number wins, the other sees it and loses; a live
    /// entry of the key beats any pending insert; an entry of another key is no rival.
    #[test]
    fn earlier_insert_of_the_same_key_wins() {
        let ct = Conntrack::new(BUCKET);
        let t = udp(7);
        let w = to_ep(t, ip(40)).encode();
        let key = |x: &[u64; 5]| Flow::orig_is(x, &t);
        let victim = |_: &Slot<5>| Victim::KEEP;
        let table = &ct.table;
        let one = table.home(0);
        let put = |idx: usize, phase: u64, words: [u64; 5], order: u64| {
            for (a, v) in table.slot(idx).words.iter().zip(words) {
                a.store(v, Ordering::Relaxed);
            }
            table.slot(idx).order.store(order, Ordering::Relaxed);
            let s = State::new(phase, t.tag(), 0, 1);
            table.state_mut(idx).store(s.0, Ordering::SeqCst);
        };
        put(3, PENDING, w, 5);
        put(9, PENDING, w, 6);
        assert!(table.first_of_key(one, 3, t.tag(), 5, &key, &victim));
        assert!(!table.first_of_key(one, 9, t.tag(), 6, &key, &victim));
        // Another key with the same tag does not count.
        put(3, PENDING, to_ep(udp(8), ip(40)).encode(), 5);
        assert!(table.first_of_key(one, 9, t.tag(), 6, &key, &victim));
        // A live entry of the key wins over a pending insert with any number.
        put(3, LIVE, w, 99);
        assert!(!table.first_of_key(one, 9, t.tag(), 6, &key, &victim));
        // ... unless it expired.
        let expired = |_: &Slot<5>| Victim::EXPIRED;
        assert!(table.first_of_key(one, 9, t.tag(), 6, &key, &expired));
    }

    /// Many threads insert, look up and remove flows at once. Every thread's own flows
    /// are all found, with the translation it made (nothing lost, nothing mixed up); the
    /// flows all threads insert together (each round released by a barrier, so that the
    /// inserts really race) exist exactly once, with one translation that every thread got
    /// back (nothing duplicated).
    #[test]
    fn many_threads_lose_and_duplicate_nothing() {
        const THREADS: usize = 8;
        const OWN: u16 = 400;
        const SHARED: u16 = 200;
        let ct = Arc::new(Conntrack::new(1 << 14));
        let to = ClassTimeouts::default();
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|w| {
                let ct = Arc::clone(&ct);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut shared = HashMap::new();
                    for i in 0..SHARED {
                        // Every thread: the same tuple, each proposing its own endpoint.
                        let t = udp(10_000 + i);
                        barrier.wait();
                        let r =
                            ct.insert(to_ep(t, ip(100 + w as u8)), SnatPorts::default(), 0, &to, 0);
                        let flow = match r {
                            Insert::New { hit, .. } | Insert::Existing(hit) => hit.flow(),
                            Insert::Full => panic!("full"),
                        };
                        shared.insert(i, flow.xlat.dst);
                    }
                    let own = |i: u16| Tuple::new(PROTO_TCP, ip(w as u8), 20_000 + i, vip(), 80);
                    let make = |t: Tuple| {
                        Flow::new(
                            t,
                            Tuple::new(PROTO_TCP, ip(1), t.sport, ip(200), 8080),
                            Client::Routed,
                        )
                    };
                    for i in 0..OWN {
                        let t = own(i);
                        let r = ct.insert(make(t), SnatPorts::default(), 0, &to, TCP_SYN);
                        assert!(matches!(r, Insert::New { evicted: false, .. }));
                        // Remove every fourth again, re-insert it.
                        if i % 4 == 0 {
                            let hit = ct.find_orig(&t, 0, &to, false).unwrap();
                            assert!(ct.remove(&hit));
                            let r = ct.insert(make(t), SnatPorts::default(), 0, &to, TCP_SYN);
                            assert!(matches!(r, Insert::New { .. }));
                        }
                    }
                    shared
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for i in 0..SHARED {
            let t = udp(10_000 + i);
            let hit = ct.find_orig(&t, 0, &to, false).unwrap();
            for r in &results {
                assert_eq!(r[&i], hit.flow().xlat.dst, "flow {i}: one endpoint for all");
            }
        }
        let live: Vec<Flow> = ct.table.live().map(|f| Flow::decode(&f.words)).collect();
        assert_eq!(live.len(), THREADS * OWN as usize + SHARED as usize);
        let mut origs: Vec<Tuple> = live.iter().map(|f| f.orig).collect();
        origs.sort();
        origs.dedup();
        assert_eq!(origs.len(), live.len(), "no flow twice");
        let mut ports: Vec<u16> = live
            .iter()
            .filter(|f| f.orig.proto == PROTO_TCP)
            .map(|f| f.xlat.sport)
            .collect();
        ports.sort();
        let dups: Vec<u16> = ports
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        for d in &dups {
            for f in live
                .iter()
                .filter(|f| f.orig.proto == PROTO_TCP && f.xlat.sport == *d)
            {
                eprintln!(
                    "DUP port {d}: orig {:?} xlat {:?} idx {:?}",
                    f.orig,
                    f.xlat,
                    ct.find_orig(&f.orig, 0, &to, false).map(|h| h.idx)
                );
            }
            let r = Tuple::new(PROTO_TCP, ip(200), 8080, ip(1), *d);
            eprintln!(
                "  find_reply -> {:?}",
                ct.find_reply(&r, 0, &to).map(|h| (h.flow().orig, h.idx))
            );
        }
        ports.dedup();
        assert_eq!(ports.len(), THREADS * OWN as usize, "SNAT ports unique");
        for w in 0..THREADS {
            for i in 0..OWN {
                let t = Tuple::new(PROTO_TCP, ip(w as u8), 20_000 + i, vip(), 80);
                let hit = ct.find_orig(&t, 0, &to, false).expect("not lost");
                assert_eq!(hit.flow().orig, t);
                let r = ct.find_reply(&hit.flow().reply(), 0, &to).unwrap();
                assert_eq!(r.flow(), hit.flow());
            }
        }
    }
}

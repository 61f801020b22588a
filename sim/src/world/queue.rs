//! The event queue: events in (time, sequence number) order.
//!
//! Most events are scheduled a fixed delay after now: a frame on a virtual cable
//! ([`VETH_NS`](super::VETH_NS)), a request's timeout, a traffic's next request, a
//! switch's timer. Time only moves forward and sequence numbers only grow, so the events
//! of one such delay are scheduled in the order they are due: a FIFO keeps them sorted
//! for the price of a push and a pop, where a binary heap of every pending event (a
//! million timeouts of a busy run among them) pays a sift through cache-cold memory
//! for each. Events at other times (underlay arrivals, stack timers, faults) go to a
//! heap. `pop` takes the earliest head of all, so the order is exactly that of one heap.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};

use super::Event;

/// Most fixed delays given a FIFO of their own; events of further delays go to the heap.
const MAX_FIFOS: usize = 32;

pub(super) struct Queued {
    pub at: u64,
    pub seq: u64,
    pub event: Event,
}

impl Queued {
    fn key(&self) -> (u64, u64) {
        (self.at, self.seq)
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Reversed, so that the max-heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.key().cmp(&self.key())
    }
}

/// Events due a fixed delay after they were scheduled, in order.
struct Fifo {
    delay: u64,
    events: VecDeque<Queued>,
}

/// Pending events; see the module's documentation.
#[derive(Default)]
pub(super) struct EventQueue {
    heap: BinaryHeap<Queued>,
    fifos: Vec<Fifo>,
}

/// Where the earliest event is.
#[derive(Clone, Copy)]
enum Head {
    Heap,
    Fifo(usize),
}

impl EventQueue {
    /// Adds an event due at `q.at`.
    pub fn push(&mut self, q: Queued) {
        self.heap.push(q);
    }

    /// Adds an event due `delay` after `now` (`q.at == now + delay`). Kept in that
    /// delay's FIFO when it sorts after the FIFO's last event (always, as long as time
    /// and sequence numbers do not go back), else in the heap.
    pub fn push_after(&mut self, delay: u64, q: Queued) {
        let i = match self.fifos.iter().position(|f| f.delay == delay) {
            Some(i) => i,
            None if self.fifos.len() < MAX_FIFOS => {
                self.fifos.push(Fifo {
                    delay,
                    events: VecDeque::new(),
                });
                self.fifos.len() - 1
            }
            None => return self.heap.push(q),
        };
        let fifo = &mut self.fifos[i].events;
        if fifo.back().is_none_or(|b| b.key() < q.key()) {
            fifo.push_back(q);
        } else {
            self.heap.push(q);
        }
    }

    fn head(&self) -> Option<(Head, (u64, u64))> {
        let mut best = self.heap.peek().map(|q| (Head::Heap, q.key()));
        for (i, f) in self.fifos.iter().enumerate() {
            if let Some(q) = f.events.front() {
                if best.is_none_or(|(_, k)| q.key() < k) {
                    best = Some((Head::Fifo(i), q.key()));
                }
            }
        }
        best
    }

    /// When the earliest event is due.
    pub fn peek_at(&self) -> Option<u64> {
        self.head().map(|(_, (at, _))| at)
    }

    /// Takes the earliest event.
    pub fn pop(&mut self) -> Option<Queued> {
        match self.head()?.0 {
            Head::Heap => self.heap.pop(),
            Head::Fifo(i) => self.fifos[i].events.pop_front(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at: u64, seq: u64) -> Queued {
        Queued {
            at,
            seq,
            event: Event::SwitchPoll { node: seq as usize },
        }
    }

    /// The queue gives the order of one heap, whatever mix of delays and times.
    #[test]
    fn same_order_as_one_heap() {
        let mut rng = 5u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            rng >> 33
        };
        let mut q = EventQueue::default();
        let mut heap = BinaryHeap::new();
        let (mut now, mut seq) = (0u64, 0u64);
        let mut popped = 0;
        while popped < 50_000 {
            for _ in 0..next() % 3 {
                seq += 1;
                match next() % 4 {
                    0 => {
                        let at = now + next() % 5000;
                        q.push(ev(at, seq));
                        heap.push(ev(at, seq));
                    }
                    _ => {
                        // A few fixed delays, more than the FIFOs, and some zero.
                        let delay =
                            [0, 1000, 7, 1_000_000][next() as usize % 4] + (next() % 40) * 13;
                        q.push_after(delay, ev(now + delay, seq));
                        heap.push(ev(now + delay, seq));
                    }
                }
            }
            assert_eq!(q.peek_at(), heap.peek().map(|e| e.at));
            let (Some(a), Some(b)) = (q.pop(), heap.pop()) else {
                assert!(q.pop().is_none());
                seq += 1;
                q.push_after(10, ev(now + 10, seq));
                heap.push(ev(now + 10, seq));
                continue;
            };
            assert_eq!(a.key(), b.key());
            now = a.at;
            popped += 1;
        }
    }
}

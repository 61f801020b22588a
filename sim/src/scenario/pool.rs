//! Allocation in order from a range, skipping what was given explicitly.
//!
//! SCENARIO.md fixes the order of every allocation (node IPs upward from `.2`, pod IPs
//! upward from `.2` of the node's subnet, cluster IPs downward from the top of the service
//! CIDR, NodePorts upward from the start of the range), so the same file always yields the
//! same addresses. Explicit values are taken first, then the rest are handed out around
//! them.

use std::collections::BTreeSet;

/// Numbers (IPv4 addresses as `u32`, or ports) handed out one by one from `first` towards
/// `last`, upward or downward, skipping any already taken.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    /// The next candidate; `i64` so stepping past either end of `u32` cannot overflow.
    cursor: i64,
    last: i64,
    step: i64,
    taken: BTreeSet<u32>,
}

impl Pool {
    /// Hands out `first`, `first + 1`, ... up to `last`.
    pub(crate) fn upward(first: u32, last: u32) -> Pool {
        Pool {
            cursor: i64::from(first),
            last: i64::from(last),
            step: 1,
            taken: BTreeSet::new(),
        }
    }

    /// Hands out `first`, `first - 1`, ... down to `last`.
    pub(crate) fn downward(first: u32, last: u32) -> Pool {
        Pool {
            cursor: i64::from(first),
            last: i64::from(last),
            step: -1,
            taken: BTreeSet::new(),
        }
    }

    /// Marks `value` as used (given explicitly, or reserved). Returns false if it already
    /// was.
    pub(crate) fn take(&mut self, value: u32) -> bool {
        self.taken.insert(value)
    }

    /// The next free value, or `None` when the range is used up.
    pub(crate) fn next_free(&mut self) -> Option<u32> {
        while (self.cursor - self.last) * self.step <= 0 {
            let candidate = u32::try_from(self.cursor).ok()?;
            self.cursor += self.step;
            if self.taken.insert(candidate) {
                return Some(candidate);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upward_skips_taken() {
        let mut pool = Pool::upward(2, 6);
        assert!(pool.take(3));
        assert!(!pool.take(3));
        let got: Vec<_> = std::iter::from_fn(|| pool.next_free()).collect();
        assert_eq!(got, [2, 4, 5, 6]);
    }

    #[test]
    fn downward_skips_taken() {
        let mut pool = Pool::downward(254, 250);
        pool.take(253);
        let got: Vec<_> = std::iter::from_fn(|| pool.next_free()).collect();
        assert_eq!(got, [254, 252, 251, 250]);
    }

    #[test]
    fn ends_of_u32() {
        let mut pool = Pool::upward(u32::MAX - 1, u32::MAX);
        assert_eq!(pool.next_free(), Some(u32::MAX - 1));
        assert_eq!(pool.next_free(), Some(u32::MAX));
        assert_eq!(pool.next_free(), None);
        let mut pool = Pool::downward(0, 0);
        assert_eq!(pool.next_free(), Some(0));
        assert_eq!(pool.next_free(), None);
    }
}

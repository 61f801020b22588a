//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624), for every
//! header in [`crate::wire`].

/// Adds `data` as big-endian 16-bit words to `sum` (odd length padded with zero).
///
/// It sums the bytes as little-endian 64-bit words into a 128-bit accumulator (an add
/// and an add-with-carry per 8 bytes) and folds the carries in once at the end, then
/// swaps the folded 16 bits into network order: RFC 1071 2(A) (the sum does not depend
/// on byte order: swapping every word swaps the sum), (B) (deferred carries) and (C)
/// (wider words). That gives the same one's-complement sum as adding big-endian 16-bit
/// words one by one: congruent to it modulo 0xffff, at most 0xffff, and zero only when
/// every word is. It is on every packet's path (every header the switch writes, the
/// UDP checksum of flannel's UDP encapsulation, the simulator's segments).
#[inline]
pub fn add(sum: u32, data: &[u8]) -> u32 {
    let mut acc = 0u128;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        acc += u64::from_le_bytes(w.try_into().expect("8 bytes")) as u128;
    }
    // The rest, under 8 bytes, at an even offset: little-endian 32- and 16-bit words
    // are sums of little-endian 16-bit words too, and a last odd byte is the word
    // (byte, 0).
    let mut rest = words.remainder();
    if let Some((w, tail)) = rest.split_first_chunk::<4>() {
        acc += u32::from_le_bytes(*w) as u128;
        rest = tail;
    }
    if let Some((w, tail)) = rest.split_first_chunk::<2>() {
        acc += u16::from_le_bytes(*w) as u128;
        rest = tail;
    }
    if let [last] = rest {
        acc += *last as u128;
    }
    // Fold 128 -> 64 -> 16 bits with end-around carries (each fold of a non-zero value
    // stays non-zero), then into network order and onto `sum`.
    let (s, carry) = (acc as u64).overflowing_add((acc >> 64) as u64);
    let s = fold(s + carry as u64);
    fold(sum as u64 + s.swap_bytes() as u64) as u32
}

/// Folds a sum of 16-bit words to at most 0xffff with end-around carries: congruent to it
/// modulo 0xffff, and zero only when it is. 64 -> 32 bits with an add and an
/// add-with-carry, then 32 -> 16 as Linux's `csum_fold` does, adding the sum to itself
/// rotated by 16 bits: the high half of that is high + low + the carry out of the low
/// half, the end-around carry. Eight instructions where folding 16 bits at a time, as
/// RFC 1071 writes it, took four rounds of three, and every packet folds a few times
/// (its header's check at ingress, a NAT rewrite's two checksums, an encapsulation's).
#[inline]
fn fold(s: u64) -> u16 {
    let (lo, carry) = (s as u32).overflowing_add((s >> 32) as u32);
    // No overflow: with a carry out, `lo` is at most 2^32 - 2.
    let s = lo + carry as u32;
    (s.wrapping_add(s.rotate_right(16)) >> 16) as u16
}

/// [`add`] for an IPv4 header without options, the one every packet's ingress check
/// sums: five 32-bit words and a fixed number of folds, no loop. The same value as
/// `add(sum, h)`: congruent modulo 0xffff, at most 0xffff, zero only when every word is.
#[inline]
pub fn add_header(sum: u32, h: &[u8; 20]) -> u32 {
    let w = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as u64;
    fold(sum as u64 + w(0) + w(4) + w(8) + w(12) + w(16)) as u32
}

/// Folds a running sum into the one's-complement checksum field value.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !fold(sum as u64)
}

/// The checksum of `data`.
pub fn of(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// The pseudo-header sum of TCP and UDP over IPv4.
///
/// Six 16-bit words added without folding (below 2^19): [`add`] and [`finish`] fold
/// any `u32` sum, and a sum of words is zero only when every word is.
#[inline]
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], protocol: u8, len: u16) -> u32 {
    let words = |a: [u8; 4]| {
        u16::from_be_bytes([a[0], a[1]]) as u32 + u16::from_be_bytes([a[2], a[3]]) as u32
    };
    words(src) + words(dst) + protocol as u32 + len as u32
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word changed from `old` to `new`:
/// `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    Delta::default().word16(old, new).apply(check)
}

/// The new checksum after a 32-bit field (an IPv4 address) changed.
#[inline]
pub fn update32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    Delta::default().word32(old, new).apply(check)
}

/// Changes to fields a checksum covers, summed once and folded once when applied: RFC
/// 1624 eqn. 3 for several fields, `HC' = ~(~HC + ~m1 + m1' + ~m2 + m2' + ...)`. A NAT
/// rewrite changes two addresses and two ports, and both the IPv4 header checksum and
/// the transport checksum cover the addresses: the addresses' delta is summed once and
/// applied to both. The same value as updating field by field with [`update16`]: each
/// is congruent modulo 0xffff and at most 0xffff, and each is zero only when every term
/// is (a 32-bit word is the sum of its two 16-bit halves modulo 0xffff, and zero only
/// when both are).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta(u64);

impl Delta {
    /// A 16-bit word changed from `old` to `new`.
    #[inline]
    #[must_use]
    pub fn word16(self, old: u16, new: u16) -> Delta {
        Delta(self.0 + (!old) as u64 + new as u64)
    }

    /// A 32-bit word (big-endian bytes: an IPv4 address) changed from `old` to `new`.
    #[inline]
    #[must_use]
    pub fn word32(self, old: [u8; 4], new: [u8; 4]) -> Delta {
        Delta(self.0 + (!u32::from_be_bytes(old)) as u64 + u32::from_be_bytes(new) as u64)
    }

    /// The checksum field `check` after the changes.
    #[inline]
    pub fn apply(self, check: u16) -> u16 {
        !fold((!check) as u64 + self.0)
    }
}

/// The new value of a checksum field that holds a partial sum (a sender's
/// `CHECKSUM_PARTIAL`: the folded pseudo-header sum, not complemented) after a 32-bit
/// field the pseudo-header covers (an IPv4 address) changed: RFC 1624's update on the
/// uncomplemented sum, `S' = S + ~m + m'`, which is Linux's
/// `inet_proto_csum_replace4(..., pseudohdr = true)` on a `CHECKSUM_PARTIAL` skb. (A
/// field outside the pseudo-header, a port, needs nothing: the receiver sums it when it
/// completes the checksum.)
pub fn update32_partial(partial: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    !update32(!partial, old, new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // The example words of RFC 1071 section 3: sum ddf2, checksum 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(of(&data), !0xddf2);
    }

    #[test]
    fn ipv4_header_checks_to_zero() {
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(of(&hdr), 0);
    }

    /// The definition: 16-bit words one at a time, folded as they go.
    fn add_by_words(start: u32, data: &[u8]) -> u32 {
        let mut sum = start as u64;
        for c in data.chunks(2) {
            sum += (c[0] as u64) << 8 | c.get(1).copied().unwrap_or(0) as u64;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u32
    }

    /// Linux's `inet_proto_csum_replace4` with `pseudohdr` on a `CHECKSUM_PARTIAL` skb,
    /// word for word: `*sum = ~csum_fold(csum_partial(diff, 8, csum_unfold(*sum)))`, with
    /// `diff = { ~from, to }`.
    fn linux_replace4_partial(sum: u16, from: [u8; 4], to: [u8; 4]) -> u16 {
        let mut diff = [0u8; 8];
        diff[..4].copy_from_slice(&(!u32::from_be_bytes(from)).to_be_bytes());
        diff[4..].copy_from_slice(&to);
        // csum_partial: a 32-bit one's-complement sum starting from the unfolded field.
        let folded = add(sum as u32, &diff);
        // ~csum_fold(x) is the folded sum itself.
        !finish(folded)
    }

    #[test]
    fn a_partial_sum_follows_an_address_change_as_linux_updates_it() {
        // The pseudo-header sum of 10.0.1.11 -> 10.3.0.50, TCP, 1440 bytes, as a sender
        // leaves it in the field; the service stage DNATs to 10.0.1.10.
        let (src, vip, ep) = ([10, 0, 1, 11], [10, 3, 0, 50], [10, 0, 1, 10]);
        let field = !finish(pseudo_header(src, vip, 6, 1440));
        let after = update32_partial(field, vip, ep);
        assert_eq!(after, linux_replace4_partial(field, vip, ep));
        // The same as the sender would have left for the new destination.
        assert_eq!(after, !finish(pseudo_header(src, ep, 6, 1440)));
        assert_ne!(
            after,
            update32(field, vip, ep),
            "not the complete-checksum update"
        );
    }

    /// RFC 1624 eqn. 3 for one 16-bit word, folded as it goes: the definition
    /// [`Delta`] must agree with, field by field.
    fn eqn3(check: u16, old: u16, new: u16) -> u16 {
        let mut sum = (!check) as u32 + (!old) as u32 + new as u32;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// 16-bit values with the edges (0 and 0xffff, the two zeros) drawn often.
    fn word() -> impl Strategy<Value = u16> {
        prop_oneof![Just(0u16), Just(0xffff), any::<u16>()]
    }

    proptest! {
        /// Against Linux's arithmetic and against a pseudo-header summed afresh: the
        /// updated partial sum completes to the same checksum as the new addresses'
        /// (0x0000 and 0xffff being one value).
        #[test]
        fn partial_update_matches_linux_and_a_fresh_sum(src in any::<[u8; 4]>(),
                dst in any::<[u8; 4]>(), new in any::<[u8; 4]>(), len in 8u16..65000,
                payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let field = !finish(pseudo_header(src, dst, 6, len));
            let after = update32_partial(field, dst, new);
            prop_assert_eq!(after, linux_replace4_partial(field, dst, new));
            let fresh = !finish(pseudo_header(src, new, 6, len));
            let done = |f: u16| finish(add(f as u32, &payload));
            let (a, b) = (done(after), done(fresh));
            prop_assert!(a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0));
        }

        /// The wide, deferred-carry sum is the word-by-word one, start value included.
        #[test]
        fn wide_sum_matches_word_sum(data in proptest::collection::vec(any::<u8>(), 0..200),
                                     start in any::<u32>()) {
            prop_assert_eq!(add(start, &data), add_by_words(start, &data));
            prop_assert_eq!(of(&data), finish(add_by_words(0, &data)));
        }

        #[test]
        fn header_sum_matches_add(h in any::<[u8; 20]>(), start in any::<u32>()) {
            prop_assert_eq!(add_header(start, &h), add(start, &h));
        }

        /// Two addresses and two ports changed, summed once: bit for bit the checksum
        /// that updating them one 16-bit word at a time gives (the zero it ends in
        /// included, 0x0000 or 0xffff).
        #[test]
        fn delta_matches_word_by_word_updates(check in word(), a in [word(), word(), word(), word()],
                b in [word(), word(), word(), word()], p in [word(), word()], q in [word(), word()]) {
            let be = |h: u16, l: u16| {
                let (h, l) = (h.to_be_bytes(), l.to_be_bytes());
                [h[0], h[1], l[0], l[1]]
            };
            let delta = Delta::default()
                .word32(be(a[0], a[1]), be(b[0], b[1]))
                .word32(be(a[2], a[3]), be(b[2], b[3]))
                .word16(p[0], q[0])
                .word16(p[1], q[1]);
            let mut c = check;
            for (old, new) in [(a[0], b[0]), (a[1], b[1]), (a[2], b[2]), (a[3], b[3]), (p[0], q[0]), (p[1], q[1])] {
                c = eqn3(c, old, new);
            }
            prop_assert_eq!(delta.apply(check), c);
        }

        #[test]
        fn incremental_matches_full(mut data in proptest::collection::vec(any::<u8>(), 4..64),
                                    at in 0usize..30, new in any::<u16>()) {
            let at = (at % (data.len() / 2)) * 2;
            data[0] = 0; data[1] = 0;
            let at = at.max(2);
            prop_assume!(at + 1 < data.len());
            let check = of(&data);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let full = of(&data);
            let inc = update16(check, old, new);
            // 0x0000 and 0xffff are the same one's-complement value.
            prop_assert!(full == inc || (full == 0 && inc == 0xffff) || (full == 0xffff && inc == 0));
        }
    }
}

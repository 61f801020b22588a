//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// Adds `data` as big-endian 16-bit words to `sum` (odd length padded with zero).
///
/// Summed 32 bits at a time into a 64-bit accumulator and folded once at the end: the
/// one's-complement sum does not depend on the word size it is taken in (RFC 1071,
/// "parallel summation"), and a 64-bit sum of 32-bit words cannot overflow for any
/// packet. This is the cost of every checksum the TAP runtime completes or recomputes.
pub fn add(sum: u32, data: &[u8]) -> u32 {
    let mut acc = sum as u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as u64;
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u32::from_be_bytes(tail) as u64;
    // Fold 64 -> 32 -> 16 bits (with the carries).
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut s = (acc & 0xffff) + (acc >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u32
}

/// Folds a running sum into the one's-complement checksum field value.
pub fn finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of `data`.
pub fn of(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// The pseudo-header sum of TCP and UDP over IPv4.
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], protocol: u8, len: u16) -> u32 {
    let sum = add(0, &src);
    let sum = add(sum, &dst);
    sum + protocol as u32 + len as u32
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word changed from `old` to `new`:
/// `HC' = ~(~HC + ~m + m')`.
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u32 + (!old) as u32 + new as u32;
    finish(sum)
}

/// The new checksum after a 32-bit field (an IPv4 address) changed.
pub fn update32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let c = update16(
        check,
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    );
    update16(
        c,
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
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

    /// The plain statement: 16-bit words, one at a time.
    fn reference(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for c in data.chunks(2) {
            sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    proptest! {
        #[test]
        fn wide_summation_matches_the_reference(data in proptest::collection::vec(any::<u8>(), 0..3000),
                                                start in any::<u16>()) {
            prop_assert_eq!(of(&data), reference(&data));
            let with_start = finish(add(start as u32, &data));
            let want = finish(start as u32 + (!reference(&data)) as u32);
            prop_assert_eq!(with_start, want);
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

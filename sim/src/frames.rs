//! Recycled frame buffers.
//!
//! Every frame in flight is a `Vec<u8>` of its own: a stack's transmit token makes one,
//! a switch's output is copied into one, and each is dropped where it is delivered. A
//! busy run makes and frees millions; this keeps the freed ones of this thread for the
//! next frames (malloc and free, and the page faults of fresh memory, otherwise cost
//! more than moving a small frame). What a frame holds is always written in full before
//! it is used ([`zeroed`], [`copy_of`]), so recycling changes no byte of any run.

use std::cell::RefCell;

/// Capacity of a recycled buffer: any Ethernet frame of a 1500-byte underlay and its
/// encapsulation. Larger frames (jumbo MTUs) get buffers of their own.
const CAPACITY: usize = 2048;
/// Buffers kept at most.
const KEEP: usize = 4096;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn buffer() -> Vec<u8> {
    FREE.with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(CAPACITY))
}

/// A frame of `len` zero bytes.
pub fn zeroed(len: usize) -> Vec<u8> {
    let mut v = buffer();
    v.resize(len, 0);
    v
}

/// A frame holding a copy of `bytes`.
pub fn copy_of(bytes: &[u8]) -> Vec<u8> {
    let mut v = buffer();
    v.extend_from_slice(bytes);
    v
}

/// Gives back a frame that is no longer needed.
pub fn recycle(mut v: Vec<u8>) {
    if v.capacity() == CAPACITY {
        v.clear();
        FREE.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < KEEP {
                f.push(v);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_frames_are_written_in_full() {
        let mut a = copy_of(&[0xaa; 1500]);
        a.truncate(1000);
        recycle(a);
        let z = zeroed(1200);
        assert_eq!(z, vec![0; 1200]);
        recycle(z);
        let c = copy_of(&[1, 2, 3]);
        assert_eq!(c, [1, 2, 3]);
        recycle(vec![9; 5000]);
        assert_eq!(zeroed(3000), vec![0; 3000]);
    }
}

//! The `podnet` binary's memory allocator: the system's, with large zeroed blocks on
//! 2 MiB pages.
//!
//! A host node's conntrack is one zeroed block of about 150 MiB
//! (`podnet_switch::services::conntrack::HOST_SIZE` slots), and its lookups land anywhere
//! in it. On 4 KiB pages that is 37,000 pages: each lookup misses the TLB and walks the
//! page tables first. On 2 MiB pages the whole table takes 75 TLB entries, which the
//! second-level TLB holds. So, as VPP puts its heap on huge pages, a block of 4 MiB or more
//! is a mapping of its own, advised to the kernel as `MADV_HUGEPAGE`: with transparent
//! huge pages in `madvise` mode or `always`, the kernel maps it in 2 MiB pages as it is
//! touched. The cost: a page is taken whole, so a table spread over by a few hundred
//! flows holds its full size in memory, not a few hundred 4 KiB pages. Where transparent
//! huge pages are off (`never`) the advice changes nothing. Smaller blocks go to
//! [`System`].
//!
//! Why not `System` for large blocks too: its `alloc_zeroed` of a block aligned to more
//! than 16 bytes (a conntrack bucket is aligned to 128) is an aligned `malloc` and then a
//! `memset` of the whole block, which touches every page at once, in 4 KiB pages, before
//! any advice could apply; and a table that should cost memory only as it fills would
//! cost its full size from the first flow. A fresh mapping is zero and untouched.
//!
//! A library's tables reach this only where the binary installs it:
//! `#[global_allocator] static ALLOC: HugePages = HugePages;` (the `podnet` binary and
//! `benches/pipeline.rs`, which measures the switch as the binary runs it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::null_mut;

/// The size of a huge page on x86-64 and arm64 (with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// Blocks of this size or more are mappings of their own, on huge pages.
const LARGE: usize = 2 * HUGE_PAGE;

/// A mapping's alignment: a base page.
const PAGE: usize = 4096;

/// [`System`], with blocks of at least two huge pages mapped on their own and advised to
/// use huge pages.
pub struct HugePages;

/// Whether a block of `size` bytes and alignment `align` is mapped on its own. Decided by
/// the size alone (and the alignment, which never changes), so that `dealloc` and
/// `realloc`, given the block's layout, know where it came from.
fn mapped(size: usize, align: usize) -> bool {
    size >= LARGE && align <= PAGE
}

/// Advises the huge pages wholly inside `len` bytes at `p` (its ragged ends stay small).
/// If the kernel refuses the advice, the block works as it is.
///
/// # Safety
/// `p..p + len` is a mapping this allocator made.
unsafe fn advise(p: *mut u8, len: usize) {
    let start = (p as usize).next_multiple_of(HUGE_PAGE);
    let end = (p as usize + len) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
    }
}

/// A new private anonymous mapping of `len` bytes (zero, untouched), or null.
fn map(len: usize) -> *mut u8 {
    // SAFETY: a new anonymous mapping at an address of the kernel's choosing touches
    // nothing that exists; the result is checked.
    unsafe {
        let p = libc::mmap(
            null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return null_mut();
        }
        advise(p as *mut u8, len);
        p as *mut u8
    }
}

// SAFETY: blocks for which `mapped` holds are whole mappings, page-aligned (so aligned to
// any alignment `mapped` admits), zero when new, unmapped with the length they were given
// (the layout's size); every other call goes to `System` with the same arguments.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(layout.size(), layout.align()) {
            return map(layout.size());
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout.size(), layout.align()) {
            return map(layout.size());
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if mapped(layout.size(), layout.align()) {
            libc::munmap(ptr as *mut libc::c_void, layout.size());
            return;
        }
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        if !mapped(layout.size(), align) && !mapped(new_size, align) {
            return System.realloc(ptr, layout, new_size);
        }
        // A new block and the bytes copied (not `mremap`: the advice splits a mapping
        // into up to three, and `mremap` moves one).
        let new = Layout::from_size_align_unchecked(new_size, align);
        let p = self.alloc(new);
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks small and large, zeroed or not, are zero where asked, aligned, writable
    /// throughout, and keep their bytes when they grow and shrink across the line between
    /// `System`'s blocks and mappings.
    #[test]
    fn blocks_are_zeroed_aligned_and_resizable() {
        for size in [64, HUGE_PAGE, LARGE, 5 * HUGE_PAGE + 4096 + 8] {
            let layout = Layout::from_size_align(size, 128).unwrap();
            // SAFETY: non-zero sizes; each block is read and written within its size and
            // freed (or resized) with its layout.
            unsafe {
                let p = HugePages.alloc_zeroed(layout);
                assert!(!p.is_null() && (p as usize).is_multiple_of(128));
                let block = std::slice::from_raw_parts_mut(p, size);
                assert!(block.iter().all(|&b| b == 0), "{size} bytes zeroed");
                block.fill(0xa5);
                HugePages.dealloc(p, layout);

                let p = HugePages.alloc(layout);
                assert!(!p.is_null() && (p as usize).is_multiple_of(128));
                for at in (0..size).step_by(4096) {
                    p.add(at).write(at as u8 ^ (at >> 12) as u8);
                }
                // Up across the line (or within mappings), then back down below it.
                let up = 3 * LARGE + 100;
                let p = HugePages.realloc(p, layout, up);
                assert!(!p.is_null() && (p as usize).is_multiple_of(128));
                p.add(up - 1).write(7);
                let down = size.min(LARGE - 64);
                let q = HugePages.realloc(p, Layout::from_size_align(up, 128).unwrap(), down);
                assert!(!q.is_null() && (q as usize).is_multiple_of(128));
                for at in (0..down).step_by(4096) {
                    assert_eq!(
                        q.add(at).read(),
                        at as u8 ^ (at >> 12) as u8,
                        "byte {at} of {size}"
                    );
                }
                HugePages.dealloc(q, Layout::from_size_align(down, 128).unwrap());
            }
        }
    }

    /// A large zeroed block, once touched, is mapped in huge pages where the kernel has
    /// transparent huge pages on (`madvise` or `always`).
    #[test]
    fn large_zeroed_block_is_on_huge_pages() {
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        if !mode.as_deref().is_ok_and(|m| !m.contains("[never]")) {
            eprintln!("skipped: transparent huge pages are off or absent ({mode:?})");
            return;
        }
        let size = 8 * HUGE_PAGE;
        // A conntrack bucket's alignment.
        let layout = Layout::from_size_align(size, 128).unwrap();
        // SAFETY: as above.
        let huge_kib = unsafe {
            let p = HugePages.alloc_zeroed(layout);
            assert!(!p.is_null());
            // Touch every 4 KiB page, as a table does as it fills.
            for at in (0..size).step_by(4096) {
                p.add(at).write_volatile(1);
            }
            // The advice split the block's mapping: its huge part is a mapping of its own,
            // starting at the first huge page boundary.
            let kib = anon_huge_kib((p as usize).next_multiple_of(HUGE_PAGE));
            HugePages.dealloc(p, layout);
            kib
        };
        // The 6 or 7 huge pages wholly inside the block; the kernel may fall back to small
        // pages for one it cannot find free memory for, not for all.
        assert!(
            huge_kib >= 2 * HUGE_PAGE as u64 / 1024,
            "{huge_kib} KiB of the {} KiB block on huge pages",
            size / 1024
        );
    }

    /// `AnonHugePages` of the mapping holding `addr`, from `/proc/self/smaps`.
    fn anon_huge_kib(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split(' ').next().unwrap_or("");
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
            if let Some(kib) = line.strip_prefix("AnonHugePages:").filter(|_| inside) {
                return kib.trim().trim_end_matches(" kB").trim().parse().unwrap();
            }
        }
        panic!("no mapping holds {addr:#x}")
    }
}

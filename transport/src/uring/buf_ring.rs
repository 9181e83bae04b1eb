//! The provided-buffer ring of the io_uring receive path.
//!
//! One anonymous mapping holds the ring of `io_uring_buf` entries (page-aligned, as the kernel
//! requires) followed by the buffers themselves. After registration the kernel takes a buffer
//! from the ring's head for each datagram the multishot receive completes; user space gives a
//! buffer back by writing an entry at the tail and publishing the tail with a release store.
//!
//! Guarantees: the mapping lives as long as this value; [`ProvidedBufferRing::leak`] keeps it
//! mapped forever for the case where the kernel might still write into it (a teardown that did
//! not see the receive end). Trusts: the kernel only writes into buffers it took from the ring,
//! and never more than the length written in the entry.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// Page size assumed for alignment of the ring (the kernel wants a page-aligned ring address;
/// 4 KiB divides every larger page size, and `mmap` returns page-aligned memory anyway).
const PAGE_BYTES: usize = 4096;

/// Largest number of entries a buffer ring may have (kernel limit, and the ring index is u16).
pub const BUF_RING_ENTRIES_MAX: usize = 32768;

/// A registered-or-not provided-buffer ring and its buffers, in one mapping.
pub struct ProvidedBufferRing {
    base: NonNull<u8>,
    mapping_bytes: usize,
    entries: u16,
    buffer_bytes: usize,
    buffers_offset: usize,
    /// Local copy of the tail; published to the kernel by [`ProvidedBufferRing::publish`].
    tail: u16,
    leaked: bool,
}

// SAFETY: the mapping is owned by this value alone (no aliasing Rust references escape except
// through `&self`/`&mut self` borrows), so moving it to another thread is sound.
unsafe impl Send for ProvidedBufferRing {}

impl ProvidedBufferRing {
    /// Maps a ring of `entries` buffers of `buffer_bytes` each, every buffer already in the
    /// ring (tail = entries). `entries` must be a power of two in 1..=32768.
    pub fn new(entries: usize, buffer_bytes: usize) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > BUF_RING_ENTRIES_MAX || buffer_bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("buffer ring of {entries} entries x {buffer_bytes} B"),
            ));
        }
        let ring_bytes = entries * std::mem::size_of::<BufRingEntry>();
        let buffers_offset = ring_bytes.div_ceil(PAGE_BYTES) * PAGE_BYTES;
        let mapping_bytes = buffers_offset + entries * buffer_bytes;
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory;
        // the result is checked for MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapping_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap null"))?;
        let mut ring = ProvidedBufferRing {
            base,
            mapping_bytes,
            entries: entries as u16, // <= 32768 after the check above
            buffer_bytes,
            buffers_offset,
            tail: 0,
            leaked: false,
        };
        for bid in 0..entries {
            ring.push(bid as u16);
        }
        ring.publish();
        Ok(ring)
    }

    /// Address of the ring of entries, for `register_buf_ring_with_flags`.
    pub fn ring_addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    pub fn entries(&self) -> u16 {
        self.entries
    }

    fn entry_ptr(&self, index: u16) -> *mut BufRingEntry {
        let slot = (index & (self.entries - 1)) as usize;
        // SAFETY: slot < entries and the ring occupies entries * size_of::<BufRingEntry>()
        // bytes at the start of the mapping, so the pointer stays inside it.
        unsafe { self.base.as_ptr().cast::<BufRingEntry>().add(slot) }
    }

    /// The bytes of buffer `bid` the kernel filled (`len` as reported by its completion).
    /// Returns None for a buffer id or length outside the ring (a kernel or caller bug).
    pub fn filled(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.entries || len > self.buffer_bytes {
            return None;
        }
        let offset = self.buffers_offset + bid as usize * self.buffer_bytes;
        // SAFETY: bid < entries and len <= buffer_bytes keep the slice inside the mapping. The
        // buffer is not in the ring while its completion is being processed (the kernel took it
        // and it is only given back by `push` after the caller has finished with the slice,
        // which the `&self` borrow enforces against `push(&mut self)`), so the kernel does not
        // write it concurrently.
        Some(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(offset), len) })
    }

    /// Gives buffer `bid` back to the ring (visible to the kernel after [`Self::publish`]).
    pub fn push(&mut self, bid: u16) {
        debug_assert!(bid < self.entries);
        let addr = self.base.as_ptr() as u64
            + self.buffers_offset as u64
            + bid as u64 * self.buffer_bytes as u64;
        let entry = self.entry_ptr(self.tail);
        // SAFETY: the entry at the tail is not owned by the kernel (it only reads entries
        // between its head and the published tail), and `entry` points inside the mapping.
        unsafe {
            (*entry).set_addr(addr);
            (*entry).set_len(self.buffer_bytes as u32);
            (*entry).set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the tail so the kernel sees every buffer pushed so far.
    pub fn publish(&mut self) {
        // SAFETY: the tail field overlays the `resv` field of entry 0 inside the mapping, is
        // 2-byte aligned, and is shared with the kernel only through atomic accesses.
        unsafe {
            let tail = BufRingEntry::tail(self.base.as_ptr().cast::<BufRingEntry>()) as *mut u16;
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }

    /// Keeps the mapping forever: used when the kernel may still own some buffers.
    pub fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for ProvidedBufferRing {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: the owner (UringTransport's Drop) unregisters the ring and ends the multishot
        // receive before this runs, or calls `leak`; nothing else references the mapping.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.mapping_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_with_every_buffer_in_the_ring_and_rejects_bad_sizes() {
        let ring = ProvidedBufferRing::new(8, 100).unwrap();
        assert_eq!(ring.tail, 8);
        assert_eq!(ring.ring_addr() % PAGE_BYTES as u64, 0);
        assert!(ring.filled(7, 100).is_some());
        assert!(ring.filled(8, 1).is_none());
        assert!(ring.filled(0, 101).is_none());
        assert!(ProvidedBufferRing::new(6, 100).is_err());
        assert!(ProvidedBufferRing::new(65536, 100).is_err());
    }
}

//! A bounded **single-producer, single-consumer byte ring** in shared memory: the
//! application thread's lock-free hand-off of bytes to the poller, as Aeron's publications
//! write into a term buffer the sender reads.
//!
//! The producer writes in place into the free space past the tail and publishes with one
//! release store of the tail; the consumer reads the published bytes in place and hands
//! them back with one release store of the head. No lock, no read-modify-write. Positions
//! count bytes and only grow, so full and empty are never confused; a byte's place is its
//! position masked by the size (a power of two). Every region handed out is contiguous: it
//! never runs past the end of the array, and the caller decides how to lay its data out
//! around the end ([`Producer::room_before_wrap`]).
//!
//! The ring knows nothing of what the bytes mean. Exclusivity is in the types: one
//! [`Producer`] and one [`Consumer`] per ring, each `!Clone`, and a region borrowed from
//! either borrows its handle (a consumer must let go of what it reads before it hands it
//! back).

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Keeps each position on a cache line of its own (the producer writes one, the consumer
/// the other).
#[repr(align(64))]
#[derive(Debug, Default)]
struct Padded(AtomicU64);

struct Shared {
    /// The bytes; `UnsafeCell` because the two sides write them through shared references
    /// (never the same byte at once: see the `SAFETY` notes).
    buf: Box<[UnsafeCell<u8>]>,
    mask: u64,
    /// Bytes the consumer has read and handed back.
    head: Padded,
    /// Bytes the producer has published.
    tail: Padded,
}

// SAFETY: the only shared mutable state outside atomics is `buf`, and the protocol of
// `head` and `tail` gives each byte one side at a time: the producer writes only bytes in
// `[tail, head + capacity)` (free: the consumer released them, acquired by the producer's
// load of `head`) and the consumer reads only bytes in `[head, tail)` (published: the
// producer's writes happen before its release store of `tail`, acquired by the consumer).
// The two ranges never overlap, and each handle is unique (`!Clone`, `&mut` to move a
// position).
unsafe impl Sync for Shared {}

impl Shared {
    #[inline]
    fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// A pointer to the byte at position `at`.
    #[inline]
    fn ptr(&self, at: u64) -> *mut u8 {
        UnsafeCell::raw_get(&self.buf[(at & self.mask) as usize])
    }
}

/// Makes a ring of at least `bytes` bytes (rounded up to a power of two, at least 64).
pub fn byte_ring(bytes: usize) -> (Producer, Consumer) {
    let n = bytes.max(64).next_power_of_two();
    let shared = Arc::new(Shared {
        buf: (0..n).map(|_| UnsafeCell::new(0)).collect(),
        mask: n as u64 - 1,
        head: Padded::default(),
        tail: Padded::default(),
    });
    (
        Producer {
            // Writable through a shared borrow: the bytes are `UnsafeCell`s.
            base: NonNull::from(&shared.buf[..]).cast::<u8>(),
            mask: shared.mask,
            shared: shared.clone(),
            tail: 0,
            limit: n as u64,
        },
        Consumer { shared, head: 0 },
    )
}

/// Where the two sides are, readable by anyone (for waits that watch the ring).
#[derive(Clone)]
pub struct RingPositions {
    shared: Arc<Shared>,
}

impl RingPositions {
    /// Bytes published so far.
    #[inline]
    pub fn tail(&self) -> u64 {
        self.shared.tail.0.load(Ordering::Acquire)
    }

    /// Bytes handed back so far.
    #[inline]
    pub fn head(&self) -> u64 {
        self.shared.head.0.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for RingPositions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingPositions")
            .field("head", &self.head())
            .field("tail", &self.tail())
            .finish()
    }
}

/// The writing side.
pub struct Producer {
    shared: Arc<Shared>,
    /// The array's first byte and its size less one, copied out of `shared` so that a
    /// reservation reads no pointer but its own.
    /// (`NonNull`: the compiler then knows a reservation's slice is never null, and a
    /// reservation's `Option` needs no test of its pointer.)
    base: NonNull<u8>,
    mask: u64,
    /// Its own position (it alone moves the tail).
    tail: u64,
    /// How far the tail may go: the head when last looked at plus the capacity (the consumer
    /// is at least there).
    limit: u64,
}

// SAFETY: `base` points into the array `shared` keeps alive (a boxed slice: it does not
// move), and the producer touches the bytes only as the ring's protocol allows (see
// `Shared`'s `Sync` note); a `Producer` is a unique handle, so moving it to another thread
// moves the producer role with it.
unsafe impl Send for Producer {}

// SAFETY: through `&Producer` only its own fields are read (`capacity`, `room_before_wrap`,
// `positions`); every access to the ring's bytes or a move of the tail takes `&mut self`.
// (The handle was `Sync` before it cached `base`; a `Publisher` stays `Sync` with it.)
unsafe impl Sync for Producer {}

impl Producer {
    /// The ring's size in bytes.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Bytes from the tail to the end of the array: the largest region that can start here.
    #[inline]
    pub fn room_before_wrap(&self) -> usize {
        (self.capacity() - (self.tail & self.mask)) as usize
    }

    /// The `len` bytes past the tail to write in place, if they are free now and do not run
    /// past the end of the array (`len <= room_before_wrap()`); not visible to the consumer
    /// until [`Producer::publish`]. Their old contents are whatever was there.
    #[inline]
    pub fn reserve(&mut self, len: usize) -> Option<&mut [u8]> {
        let offset = self.tail & self.mask;
        if offset + len as u64 > self.mask + 1 {
            return None;
        }
        let end = self.tail + len as u64;
        if end > self.limit {
            self.limit = self.shared.head.0.load(Ordering::Acquire) + self.capacity();
            if end > self.limit {
                return None;
            }
        }
        // SAFETY: `[offset, offset + len)` lies within the array (checked above), so the
        // pointer arithmetic stays in the allocation `shared` keeps alive. The bytes are free:
        // the consumer released everything before `limit - capacity >= end - capacity`
        // (acquire load above or earlier), so it reads none of them until the release store
        // in `publish` covers them. Only this producer writes past the tail, and the slice
        // borrows it mutably, so no other reference to these bytes exists while it lives.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(offset as usize), len)
        })
    }

    /// The `len` bytes past the tail as [`Producer::reserve`] last granted them (read-only),
    /// if they are still known free: within this lap and below the cached limit. Never
    /// looks at the consumer, so it may say `None` where `reserve` would grant them.
    #[inline]
    pub fn reserved(&self, len: usize) -> Option<&[u8]> {
        let offset = self.tail & self.mask;
        if offset + len as u64 > self.mask + 1 || self.tail + len as u64 > self.limit {
            return None;
        }
        // SAFETY: as in `reserve`: the bytes lie within the array and are free (below the
        // limit the consumer's head allowed), so the consumer does not read them; the producer
        // writes them only through `&mut self`, which this shared borrow excludes while the
        // slice lives.
        Some(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(offset as usize), len) })
    }

    /// Publishes the next `len` bytes (written through [`Producer::reserve`], or skipped:
    /// the consumer sees whatever they hold), at most what is free.
    #[inline]
    pub fn publish(&mut self, len: usize) {
        debug_assert!(self.tail + len as u64 <= self.limit);
        self.tail += len as u64;
        self.shared.tail.0.store(self.tail, Ordering::Release);
    }

    /// Who is where, for others to watch.
    pub fn positions(&self) -> RingPositions {
        RingPositions {
            shared: self.shared.clone(),
        }
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("tail", &self.tail)
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The reading side.
pub struct Consumer {
    shared: Arc<Shared>,
    /// Its own position (it alone moves the head).
    head: u64,
}

impl Consumer {
    /// Bytes handed back so far (the next readable byte's position).
    #[inline]
    pub fn position(&self) -> u64 {
        self.head
    }

    /// The published bytes from the head to the tail or to the end of the array, whichever
    /// comes first (the rest, if any, starts the array: read it after handing these back).
    #[inline]
    pub fn readable(&self) -> &[u8] {
        self.readable_until(u64::MAX)
    }

    /// [`Consumer::readable`], but none at or past position `until` (a tail the caller read
    /// earlier, say).
    #[inline]
    pub fn readable_until(&self, until: u64) -> &[u8] {
        let tail = self
            .shared
            .tail
            .0
            .load(Ordering::Acquire)
            .min(until)
            .max(self.head);
        let before_wrap = self.shared.capacity() - (self.head & self.shared.mask);
        let len = (tail - self.head).min(before_wrap) as usize;
        // SAFETY: `[head, head + len)` is published (below the tail just acquired, so the
        // producer's writes to it happened before) and within one lap of the array. The
        // producer writes only free bytes, and these are not free until `release` moves the
        // head past them, which needs `&mut self`: not while this borrow of `self` lives.
        unsafe { std::slice::from_raw_parts(self.shared.ptr(self.head), len) }
    }

    /// Hands the next `len` bytes back to the producer (at most what was readable).
    #[inline]
    pub fn release(&mut self, len: usize) {
        debug_assert!(self.head + len as u64 <= self.shared.tail.0.load(Ordering::Acquire));
        self.head += len as u64;
        self.shared.head.0.store(self.head, Ordering::Release);
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("head", &self.head)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_stay_within_the_array_and_the_ring_is_bounded() {
        let (mut p, mut c) = byte_ring(100);
        let w = p.positions();
        assert_eq!(p.capacity(), 128, "rounded up to a power of two");
        assert!(p.reserve(129).is_none(), "never more than the ring");
        p.reserve(100).unwrap().copy_from_slice(&[7; 100]);
        p.publish(100);
        assert_eq!(p.room_before_wrap(), 28);
        assert!(p.reserve(29).is_none(), "a region never wraps");
        assert!(p.reserve(28).is_some(), "28 bytes are free before the end");
        p.publish(28); // skipped: the consumer sees whatever they hold
        assert!(
            p.reserve(1).is_none(),
            "full until the consumer hands bytes back"
        );
        assert_ne!(w.head(), w.tail(), "not drained");
        assert_eq!(c.readable().len(), 128);
        assert_eq!(&c.readable()[..100], &[7; 100][..]);
        c.release(60);
        assert_eq!(c.readable().len(), 68);
        assert_eq!(
            c.readable_until(110).len(),
            50,
            "bounded by the position asked for"
        );
        assert!(c.readable_until(10).is_empty());
        assert!(p.reserve(61).is_none(), "60 free");
        p.reserve(60).unwrap().copy_from_slice(&[9; 60]);
        p.publish(60);
        c.release(68);
        assert_eq!(c.readable(), &[9; 60][..], "the next lap starts the array");
        c.release(60);
        assert!(c.readable().is_empty());
        assert_eq!(c.position(), 188);
        assert_eq!((w.head(), w.tail()), (188, 188), "drained");
    }

    #[test]
    fn the_consumer_reads_exactly_what_the_producer_wrote_on_another_thread() {
        let (mut p, mut c) = byte_ring(256);
        const N: u64 = 50_000;
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                // Messages of 1..=40 bytes: a length byte, then the bytes of `i`.
                let len = 1 + (i % 40) as usize;
                if p.room_before_wrap() < len {
                    let skip = p.room_before_wrap();
                    while p.reserve(skip).is_none() {
                        std::thread::yield_now();
                    }
                    p.reserve(skip).unwrap().fill(0); // 0: skip to the end
                    p.publish(skip);
                }
                let region = loop {
                    if let Some(r) = p.reserve(len) {
                        break r;
                    }
                    std::thread::yield_now();
                };
                region[0] = len as u8;
                for (k, b) in region[1..].iter_mut().enumerate() {
                    *b = (i as u8).wrapping_add(k as u8);
                }
                p.publish(len);
            }
        });
        let mut next = 0u64;
        while next < N {
            let r = c.readable();
            if r.is_empty() {
                std::thread::yield_now();
                continue;
            }
            if r[0] == 0 {
                let n = r.len();
                c.release(n);
                continue;
            }
            let len = r[0] as usize;
            assert_eq!(len, 1 + (next % 40) as usize);
            for (k, &b) in r[1..len].iter().enumerate() {
                assert_eq!(b, (next as u8).wrapping_add(k as u8));
            }
            c.release(len);
            next += 1;
        }
        producer.join().unwrap();
        assert!(c.readable().is_empty());
    }
}

//! A doorbell that ends a transport's [`Transport::wait_readable`](crate::Transport::wait_readable) early,
//! rung from any thread: an application thread that queues a send wakes the poller thread
//! instead of waiting out its poll timeout.
//!
//! A [`Waker`] is a cheap cloneable handle on one transport's doorbell (every call of
//! [`Transport::waker`](crate::Transport::waker) on a transport gives a handle on the same
//! one). Semantics, the same for every driver:
//!
//! * [`Waker::wake`] never blocks and never panics;
//! * a wake is never lost: if nobody waits, the *next* `wait_readable` returns at once;
//! * wakes coalesce: any number of wakes before the waiter runs is one wake-up;
//! * a `wait_readable` that returns because of a wake consumes it (and returns `Ok(false)`
//!   unless a datagram is readable too); the wait after that blocks again. A wake that
//!   arrives while the waiter is busy may also end its next wait early (a spurious, harmless
//!   extra return), never a later one.
//!
//! Kernel drivers ring an `eventfd` (one `write` syscall per wake; the waiter polls it with
//! the sockets: `poll()` for sendmmsg, a one-shot `PollAdd` for io_uring). The in-memory
//! driver sets a flag under the endpoint's queue lock and notifies its condition variable.
//! Callers should wake only a waiter they know may be sleeping: each wake costs a syscall (or a
//! lock) even when the doorbell already rings.
//!
//! The eventfd is owned by an `Arc` shared by the transport and every handle: it stays open
//! as long as either lives, so a handle outliving its transport rings nothing harmful.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::memory::Endpoint;
use crate::TransportError;

/// A handle on a transport's doorbell; see the [module documentation](self).
#[derive(Clone)]
pub struct Waker {
    shared: Arc<WakerShared>,
}

struct WakerShared {
    /// Calls of [`Waker::wake`] so far (all handles): lets a wrapping transport tell a wake
    /// from a timeout of the transport it wraps.
    wakes: AtomicU64,
    /// `write` calls on the eventfd that failed for a reason other than a full counter.
    errors: AtomicU64,
    doorbell: Doorbell,
}

enum Doorbell {
    /// Non-blocking, close-on-exec eventfd polled by a kernel driver.
    EventFd(OwnedFd),
    /// An endpoint of the in-memory network: flag and condition variable.
    Memory(Arc<Endpoint>),
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.shared.doorbell {
            Doorbell::EventFd(fd) => format!("eventfd {}", fd.as_raw_fd()),
            Doorbell::Memory(_) => "memory endpoint".to_string(),
        };
        f.debug_struct("Waker")
            .field("doorbell", &kind)
            .field("wakes", &self.wakes())
            .finish()
    }
}

impl Waker {
    /// A new doorbell on a fresh `eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)`.
    pub(crate) fn eventfd() -> Result<Self, TransportError> {
        // SAFETY: eventfd takes no pointer; it returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(TransportError::io(
                "eventfd (waker)",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` was just returned by eventfd, is open, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self::with(Doorbell::EventFd(fd)))
    }

    /// A doorbell on an in-memory endpoint.
    pub(crate) fn memory(endpoint: Arc<Endpoint>) -> Self {
        Self::with(Doorbell::Memory(endpoint))
    }

    fn with(doorbell: Doorbell) -> Self {
        Waker {
            shared: Arc::new(WakerShared {
                wakes: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                doorbell,
            }),
        }
    }

    /// Rings the doorbell: the transport's current `wait_readable` returns, or, if none is
    /// waiting, the next one returns at once. Never blocks, never panics; wakes before the
    /// waiter runs coalesce into one. Costs one `write` syscall on the kernel drivers (a lock
    /// and a notify in memory), so wake only a waiter that may be sleeping.
    pub fn wake(&self) {
        self.shared.wakes.fetch_add(1, Ordering::AcqRel);
        match &self.shared.doorbell {
            Doorbell::EventFd(fd) => {
                let one: u64 = 1;
                // SAFETY: writes the 8 bytes of `one`, which lives on this frame; the fd is
                // owned by `shared`, alive while `self` is.
                let rc = unsafe {
                    libc::write(
                        fd.as_raw_fd(),
                        (&one as *const u64).cast::<libc::c_void>(),
                        std::mem::size_of::<u64>(),
                    )
                };
                // EAGAIN: the counter is saturated, so the doorbell already rings.
                if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                    self.shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Doorbell::Memory(endpoint) => endpoint.ring_doorbell(),
        }
    }

    /// How many times any handle on this doorbell called [`Waker::wake`].
    pub fn wakes(&self) -> u64 {
        self.shared.wakes.load(Ordering::Acquire)
    }

    /// Wakes whose eventfd `write` failed (other than a full counter, which already rings).
    /// Always 0 in practice; counted rather than panicking.
    pub fn wake_errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// The eventfd a kernel driver polls; None for an in-memory doorbell.
    pub(crate) fn eventfd_raw(&self) -> Option<RawFd> {
        match &self.shared.doorbell {
            Doorbell::EventFd(fd) => Some(fd.as_raw_fd()),
            Doorbell::Memory(_) => None,
        }
    }

    /// Resets an eventfd doorbell (reads its counter without blocking); returns whether it
    /// rang. An in-memory doorbell is reset by its endpoint's `wait_readable`.
    pub(crate) fn drain(&self) -> bool {
        let Some(fd) = self.eventfd_raw() else {
            return false;
        };
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into `count`, which lives on this frame; the fd is
        // owned by `shared` and non-blocking (EAGAIN when the counter is 0).
        let rc = unsafe {
            libc::read(
                fd,
                (&mut count as *mut u64).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
        rc == std::mem::size_of::<u64>() as isize && count > 0
    }
}

/// The eventfd doorbell kept in `slot`, opened on the first call (the kernel drivers' `waker()`).
pub(crate) fn waker_of(slot: &mut Option<Waker>) -> Result<Waker, TransportError> {
    if let Some(w) = slot {
        return Ok(w.clone());
    }
    let w = Waker::eventfd()?;
    *slot = Some(w.clone());
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eventfd_doorbell_rings_once_for_many_wakes_and_drains_to_silence() {
        let waker = Waker::eventfd().expect("eventfd opens");
        assert!(!waker.drain(), "a new doorbell is silent");
        let other = waker.clone();
        for _ in 0..1000 {
            other.wake();
        }
        assert_eq!(waker.wakes(), 1000);
        assert!(waker.drain(), "the wakes rang");
        assert!(!waker.drain(), "one drain consumes every wake");
        assert_eq!(waker.wake_errors(), 0);
        assert!(format!("{waker:?}").contains("eventfd"));
    }
}

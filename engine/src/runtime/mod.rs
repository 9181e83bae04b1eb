//! The runtime: threads and I/O around the sans-IO membership [`Endpoint`](crate::membership::Endpoint)
//! (one per group joined on the node; it drives a [`Member`](crate::protocol::Member) per view).
//!
//! One **data-plane poller** thread per node owns the node's [`Transport`](cohort_transport::Transport)
//! and every group joined on the node (a group is state, not a thread). Each turn of its loop:
//!
//! 1. takes control commands (join, leave, shutdown) from a bounded channel;
//! 2. receives one batch of datagrams and hands each to the member of the group named in its
//!    frame header (unknown groups and malformed headers are counted and dropped);
//! 3. takes each group's send stage whole (`stage.rs`: the records the applications appended —
//!    sends, requests, flushes — in order) and feeds the records to the member; a record the
//!    member refuses with `WouldBlock` waits at the head until its window opens, the stage
//!    behind it fills, and the application then sees `WouldBlock`;
//! 4. hands deliveries to the group's [`Handler`](crate::node::Handler) as borrowed slices of
//!    the member's log, on the poller thread;
//! 5. when the previous send batch went out completely, polls every member for datagrams into
//!    one [`SendBatch`](cohort_transport::SendBatch) until it is full or nothing is left, and
//!    sends it with one call (smart batching: whatever accumulated while the previous send was
//!    in flight goes out together; there is no timer on the hot path);
//! 6. idles according to [`Idle`] when the turn did nothing, never past the members' next
//!    deadline; a send that stages a record while the poller sleeps in the transport ends the
//!    sleep through the transport's waker (`Doorbell`).
//!
//! In invoker mode (`invoker.rs`) there is no poller thread: the application's thread runs
//! these turns with `Node::poll`.
//!
//! Time is a monotonic clock ([`Clock`]: `Instant` since node start, in ns). Trace events, when
//! tracing is on, go in batches over a bounded channel to a writer thread
//! ([`trace_writer`]) that buffers them into `DIR/<member>.jsonl` and flushes at shutdown.
//!
//! What it trusts: datagrams are untrusted (the member counts and drops bad ones; the poller
//! only reads the fixed header to find the group). Handlers are trusted not to block for long:
//! they run on the poller thread.
//!
//! Counters: with [`NodeBuilder::counters`](crate::node::NodeBuilder::counters) the node
//! publishes a memory-mapped counters file ([`crate::stats`]) that `cohort stat` reads. The
//! poller counts its send and receive batches and drops as they happen (plain single-writer
//! stores), adds each group's protocol counters as deltas of `Member::stats()` once per turn,
//! and writes the file's heartbeat at most once per `HEARTBEAT_INTERVAL_MS_RECOMMENDED`
//! using the clock the turn already read. The file goes when the poller stops.
//!
//! Membership runs on the poller too (failure detection, view changes, state transfer are
//! driven by the endpoint's timers and datagrams in the same loop): view changes are rare
//! and short, so a separate control thread was not worth its hand-offs yet. Events come
//! before deliveries in each turn (`on_view` before the view's messages; `snapshot` and
//! `restore` at view boundaries). Not built yet: a control thread, several pollers per node.

pub(crate) mod framing;
pub(crate) mod invoker;
pub(crate) mod poller;
pub(crate) mod stage;
pub mod trace_writer;

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::protocol::Time;

/// How a poller waits when a turn of its loop found nothing to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Idle {
    /// Never wait: lowest latency, one core at 100 %. An idle turn ends with `sched_yield`,
    /// which returns at once unless another thread is runnable on this core: on a machine
    /// with fewer cores than busy threads a pure spin starved the application thread
    /// (p99 one-way at 10 k msg/s 1.1–5.1 ms with the spin, 41–68 µs with the yield, 2 vCPUs;
    /// BENCHMARKS.md).
    BusySpin,
    /// Spin, then yield, then wait in the transport for growing periods (up to
    /// [`BACKOFF_PARK_NS_MAX`]): a datagram or an application's send ends the wait at once
    /// (the send rings the transport's doorbell, see `Doorbell`).
    #[default]
    Backoff,
    /// Block in the transport until a datagram is readable, an application sends, the next
    /// protocol deadline, or [`BLOCKING_WAIT_NS_MAX`].
    Blocking,
}

/// Idle turns spent spinning before [`Idle::Backoff`] yields.
pub const BACKOFF_SPINS_MAX: u32 = 20;
/// Idle turns spent yielding before [`Idle::Backoff`] parks.
pub const BACKOFF_YIELDS_MAX: u32 = 10;
/// First wait of [`Idle::Backoff`]; it doubles on each idle turn.
pub const BACKOFF_PARK_NS_MIN: u64 = 1_000;
/// Longest wait of [`Idle::Backoff`] (datagrams and application sends wake the poller at
/// once; this bounds a wait only when the transport has no doorbell).
pub const BACKOFF_PARK_NS_MAX: u64 = 250_000;
/// Longest wait of [`Idle::Blocking`] in the transport.
pub const BLOCKING_WAIT_NS_MAX: u64 = 1_000_000;

/// What the next idle turn of [`Idle::Backoff`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackoffStep {
    Spin,
    Yield,
    /// Wait (in the transport, woken early by work) at most this many ns.
    Park(u64),
}

/// The state of [`Idle::Backoff`]: [`BACKOFF_SPINS_MAX`] spins, then
/// [`BACKOFF_YIELDS_MAX`] yields, then waits that double from [`BACKOFF_PARK_NS_MIN`] to
/// [`BACKOFF_PARK_NS_MAX`]; work resets it. The poller idles by it; so does the bench's raw
/// latency floor, which must idle as a node does.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    idle_turns: u32,
    park_ns: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            idle_turns: 0,
            park_ns: BACKOFF_PARK_NS_MIN,
        }
    }
}

impl Backoff {
    /// A turn did work: the next idle turn spins again.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }

    /// One more idle turn: what to do.
    pub fn idle_turn(&mut self) -> BackoffStep {
        self.idle_turns = self.idle_turns.saturating_add(1);
        if self.idle_turns <= BACKOFF_SPINS_MAX {
            BackoffStep::Spin
        } else if self.idle_turns <= BACKOFF_SPINS_MAX + BACKOFF_YIELDS_MAX {
            BackoffStep::Yield
        } else {
            let park = self.park_ns;
            self.park_ns = (self.park_ns * 2).min(BACKOFF_PARK_NS_MAX);
            BackoffStep::Park(park)
        }
    }
}

/// How application threads wake an idle poller without a system call per send.
///
/// The poller raises `sleeping` before it waits (in the transport or parked), then looks at
/// every group's send stage once more, and waits only if all are empty; an application
/// thread stages its record, then reads `sleeping` and wakes the poller only when it is
/// raised. Both sides put a sequentially consistent fence between their write and their
/// read, so at least one of them sees the other's write: a staged record is never left
/// waiting for the poller's timeout, and a busy poller costs a sender one load.
#[derive(Debug)]
pub(crate) struct Doorbell {
    sleeping: AtomicBool,
    /// Ends the poller's wait in the transport (an eventfd write, or the memory network's
    /// condition variable); none if the transport could not make one (then the poller's
    /// waits are bounded by its idle strategy, as before).
    waker: Option<cohort_transport::Waker>,
    thread: OnceLock<Thread>,
}

impl Doorbell {
    pub fn new(waker: Option<cohort_transport::Waker>) -> Self {
        Doorbell {
            sleeping: AtomicBool::new(false),
            waker,
            thread: OnceLock::new(),
        }
    }

    /// The poller thread to wake (set once it runs).
    pub fn set_thread(&self, thread: Thread) {
        let _ = self.thread.set(thread);
    }

    /// After staging something: wakes the poller if it may be waiting.
    #[inline]
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// After staging a record in a group's stage and unlocking it; `first`: the stage was
    /// empty before it. No fence is needed here: the poller raises the flag *before* it
    /// locks the stages to look at them, so either it saw this record, or this thread's
    /// lock came after the poller's and this load sees the flag. A record behind others
    /// needs no ring at all: the poller takes the stage whole, and the first record's ring
    /// (or the poller's look before sleeping) covers it.
    #[inline]
    pub fn ring_staged(&self, first: bool) {
        if first
            && self.sleeping.load(Ordering::Relaxed)
            && self.sleeping.swap(false, Ordering::Relaxed)
        {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        if let Some(w) = &self.waker {
            w.wake();
        }
        // The poller parks instead when the transport's wait failed.
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// The poller, before it waits: raises the flag (the caller then checks for work).
    pub fn sleep(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The poller, after its wait (or when it found work after [`Doorbell::sleep`]).
    pub fn wake_up(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

/// The node's monotonic clock: nanoseconds since the node started.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now(&self) -> Time {
        Time(self.start.elapsed().as_nanos() as u64)
    }

    /// How long from `now` until `deadline` (zero if past).
    pub fn until(now: Time, deadline: Time) -> Duration {
        Duration::from_nanos(deadline.0.saturating_sub(now.0))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The 32-bit wire id of a group name (FNV-1a), the same in every process.
pub fn group_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_fnv1a_of_the_name() {
        assert_eq!(group_id(""), 0x811c_9dc5);
        assert_eq!(group_id("a"), 0xe40c_292c);
        assert_ne!(group_id("prices"), group_id("orders"));
    }

    #[test]
    fn backoff_spins_then_yields_then_parks_doubling_to_its_cap_and_work_resets_it() {
        let mut b = Backoff::default();
        for _ in 0..BACKOFF_SPINS_MAX {
            assert_eq!(b.idle_turn(), BackoffStep::Spin);
        }
        for _ in 0..BACKOFF_YIELDS_MAX {
            assert_eq!(b.idle_turn(), BackoffStep::Yield);
        }
        let mut want = BACKOFF_PARK_NS_MIN;
        for _ in 0..20 {
            assert_eq!(b.idle_turn(), BackoffStep::Park(want));
            want = (want * 2).min(BACKOFF_PARK_NS_MAX);
        }
        assert_eq!(
            b.idle_turn(),
            BackoffStep::Park(BACKOFF_PARK_NS_MAX),
            "capped"
        );
        b.reset();
        assert_eq!(b.idle_turn(), BackoffStep::Spin);
    }
}

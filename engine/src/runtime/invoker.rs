//! Invoker mode (Aeron's agent invoker, DPDK's run-to-completion): a node without a poller
//! thread, whose turns the application runs on its own thread with
//! [`Node::poll`](crate::node::Node::poll). The hand-off to a poller thread goes away (a
//! send is staged and taken by the same thread, in the same cache), and so does one busy
//! thread: on a machine with fewer cores than busy threads that is the difference between
//! taking turns on a core and running.
//!
//! The turns belong to one thread, the **owner**: the first thread that runs one (io_uring
//! rings accept one submitter, and handlers then always run on that thread). Calls that wait
//! for the poller — joining, leaving, flushing, a blocking send, waiting for replies, dropping
//! the node — run turns while they wait when called on the owner thread; on another thread
//! they wait for the owner's turns, like they wait for a poller thread.

use super::poller::Poller;
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Longest sleep of a thread that waits while another thread owns the turns.
const OTHER_THREAD_WAIT_SLICE_US: u64 = 100;

thread_local! {
    static THREAD_ID: ThreadId = std::thread::current().id();
}

/// The calling thread's id without an atomic operation: `thread::current()` clones a
/// reference-counted handle (two atomic read-modify-writes) on every call; this reads a
/// thread-local that cloned it once.
#[inline]
pub(crate) fn current_thread_id() -> ThreadId {
    THREAD_ID.with(|id| *id)
}

pub(crate) struct Invoker {
    /// The poller; gone once the node stopped (group handles may outlive the node).
    poller: Mutex<Option<Poller>>,
    owner: OnceLock<ThreadId>,
}

impl std::fmt::Debug for Invoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoker")
            .field("owner", &self.owner.get())
            .finish_non_exhaustive()
    }
}

impl Invoker {
    pub fn new(poller: Poller) -> Self {
        Invoker {
            poller: Mutex::new(Some(poller)),
            owner: OnceLock::new(),
        }
    }

    /// The thread that owns the turns, once one ran a turn (or took the turns).
    pub fn owner(&self) -> Option<ThreadId> {
        self.owner.get().copied()
    }

    /// Whether the calling thread owns the turns (or may take them: nobody has yet).
    pub fn is_owner_here(&self) -> bool {
        let me = current_thread_id();
        *self.owner.get_or_init(|| me) == me
    }

    /// Runs one turn if this thread owns the turns and none is running (a handler calling
    /// back in runs inside one): whether it did anything; `None` if it ran none.
    pub fn turn(&self, idle_if_nothing: bool) -> Option<bool> {
        if !self.is_owner_here() {
            return None;
        }
        let mut guard = match self.poller.try_lock() {
            Ok(p) => p,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let p = guard.as_mut()?;
        // No shutdown command reaches an invoker: the node stops it itself.
        let work = p.step().unwrap_or(false);
        if !work && idle_if_nothing {
            p.wait();
        }
        Some(work)
    }

    /// Stops: the last turn and trace events (on the owner thread; elsewhere nothing can be
    /// sent), then the poller is dropped (its transport closed, the trace channel ended).
    pub fn stop(&self) {
        let mut guard = self.poller.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut p) = guard.take() {
            if self.is_owner_here() {
                p.finish();
            }
        }
    }
}

/// Waits for `rx` at most `timeout`; with an invoker owned by this thread, runs its turns
/// (idling as the node's strategy says) meanwhile.
pub(crate) fn recv_driving<T>(
    rx: &Receiver<T>,
    timeout: Duration,
    invoker: Option<&Invoker>,
) -> Result<T, RecvTimeoutError> {
    let Some(invoker) = invoker else {
        return rx.recv_timeout(timeout);
    };
    let deadline = Instant::now() + timeout;
    loop {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RecvTimeoutError::Timeout);
        }
        if invoker.turn(true).is_none() {
            let slice = left.min(Duration::from_micros(OTHER_THREAD_WAIT_SLICE_US));
            match rx.recv_timeout(slice) {
                Err(RecvTimeoutError::Timeout) => {}
                other => return other,
            }
        }
    }
}

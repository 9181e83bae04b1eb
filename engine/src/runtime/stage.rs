//! The hand-off of sends from application threads to the poller: a bounded **byte stage** per
//! group, swapped whole.
//!
//! An application thread appends a *record* (a 16-byte header and the framed payload) to the
//! group's stage under its lock: one lock, one copy of the payload bytes, no allocation once
//! the stage's buffer has grown, no per-message channel operation. The poller takes the stage
//! whole once per turn by swapping its buffer with its own empty one (a single lock per turn,
//! however many records), then feeds the records to the member in order. Requests (their
//! reply waiters) and flushes ride in the same record sequence: their side objects go into
//! bounded deques under the same lock, so they keep their place among the sends.
//!
//! Bounds: the application side holds at most [`SEND_STAGE_BYTES_MAX`] bytes of records (one
//! record always fits an empty stage, so a payload of any accepted size goes through); the
//! poller holds at most one taken stage, and takes the next only once it fed the last one
//! to the member completely (a full send window stops it: the records wait, the stage behind
//! them fills, and the application sees `WouldBlock`). Waiting senders sleep on a condition
//! variable the poller signals after each take.
//!
//! Why not a lock-free ring: `unsafe` lives only in `transport/`, and a swapped buffer costs
//! the poller one uncontended lock per turn — the per-message cost on either side is the
//! append (and the copy into the member's log), which a ring would not remove.
//!
//! ```text
//! record: kind:u8 order:u8 safe:u8 reserved:u8 len:u32le incarnation:u64le  payload[len]
//! kind:   0 send, 1 request (takes the next waiter), 2 flush (takes the next flush; len 0)
//! ```

use super::poller::{FlushOutcome, Waiter};
use crate::Order;
use crossbeam_channel::Sender;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Bytes of records an application side may stage per group before `WouldBlock`.
pub const SEND_STAGE_BYTES_MAX: usize = 64 * 1024;
/// Bytes of a record's header.
pub const RECORD_HEADER_BYTES: usize = 16;
/// Flushes staged per group at once (more wait for room, like sends).
pub const FLUSHES_STAGED_MAX: usize = 64;

const KIND_SEND: u8 = 0;
const KIND_REQUEST: u8 = 1;
const KIND_FLUSH: u8 = 2;

/// What a record asks of the member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Send,
    /// A send whose reply waiter is the next of [`Staged::waiters`].
    Request,
    /// A flush: the next of [`Staged::flushes`].
    Flush,
}

fn order_code(order: Order) -> u8 {
    match order {
        Order::Fifo => 0,
        Order::Causal => 1,
        Order::Total => 2,
        Order::Gbcast => 3,
    }
}

fn order_of(code: u8) -> Order {
    match code {
        0 => Order::Fifo,
        1 => Order::Causal,
        2 => Order::Total,
        _ => Order::Gbcast,
    }
}

/// The application side of a group's stage (under [`Stage::staged`]'s lock).
#[derive(Default)]
pub(crate) struct Staged {
    pub bytes: Vec<u8>,
    pub waiters: VecDeque<Waiter>,
    pub flushes: VecDeque<Sender<FlushOutcome>>,
    /// The sequence number the next send will carry, in `incarnation`.
    pub next_seq: u64,
    pub incarnation: u64,
    /// The group is gone from the poller: every call is `Closed`.
    pub closed: bool,
    /// Senders sleeping for room.
    pub room_waiters: u32,
}

impl Staged {
    /// Whether a record of `len` payload bytes fits now.
    pub fn has_room(&self, len: usize) -> bool {
        self.bytes.is_empty()
            || self.bytes.len() + RECORD_HEADER_BYTES + len <= SEND_STAGE_BYTES_MAX
    }

    /// Appends a record header for `len` payload bytes (which the caller appends next).
    pub fn begin(&mut self, kind: Kind, order: Order, safe: bool, len: usize) {
        let kind = match kind {
            Kind::Send => KIND_SEND,
            Kind::Request => KIND_REQUEST,
            Kind::Flush => KIND_FLUSH,
        };
        let mut h = [0u8; RECORD_HEADER_BYTES];
        h[0] = kind;
        h[1] = order_code(order);
        h[2] = safe as u8;
        h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        h[8..16].copy_from_slice(&self.incarnation.to_le_bytes());
        self.bytes.extend_from_slice(&h);
    }
}

/// One group's stage, shared by its handles and the poller.
#[derive(Default)]
pub(crate) struct Stage {
    pub staged: Mutex<Staged>,
    /// Signalled by the poller after it took the stage (room again).
    pub room: Condvar,
}

impl Stage {
    pub fn new() -> Self {
        Stage {
            staged: Mutex::new(Staged {
                next_seq: 1,
                ..Staged::default()
            }),
            room: Condvar::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Staged> {
        // A panic under the lock leaves whole records behind (a record is appended by one
        // call that cannot panic half-way); go on.
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps on the room signal at most `wait` (the guard is given back).
    pub fn wait_room<'a>(
        &self,
        mut guard: MutexGuard<'a, Staged>,
        wait: Duration,
    ) -> MutexGuard<'a, Staged> {
        guard.room_waiters += 1;
        let mut guard = self
            .room
            .wait_timeout(guard, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        guard.room_waiters -= 1;
        guard
    }

    /// Marks the group gone (its handles return `Closed`) and wakes every sleeper.
    pub fn close(&self) {
        self.lock().closed = true;
        self.room.notify_all();
    }
}

/// A record as the poller reads it.
pub(crate) struct Record<'a> {
    pub kind: Kind,
    pub order: Order,
    pub safe: bool,
    pub incarnation: u64,
    pub payload: &'a [u8],
}

/// The poller's side: the stage it took last, read from `pos`.
#[derive(Default)]
pub(crate) struct Taken {
    bytes: Vec<u8>,
    pos: usize,
    pub waiters: VecDeque<Waiter>,
    pub flushes: VecDeque<Sender<FlushOutcome>>,
}

impl Taken {
    /// Whether every record taken was fed to the member.
    pub fn is_done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// Once the last stage is done: takes the next one (swapping buffers, so neither side
    /// allocates) and wakes senders waiting for room. False if there was nothing.
    pub fn refill(&mut self, stage: &Stage) -> bool {
        if !self.is_done() {
            return true;
        }
        self.bytes.clear();
        self.pos = 0;
        let mut s = stage.lock();
        if s.bytes.is_empty() {
            return false;
        }
        std::mem::swap(&mut s.bytes, &mut self.bytes);
        self.waiters.append(&mut s.waiters);
        self.flushes.append(&mut s.flushes);
        let wake = s.room_waiters > 0;
        drop(s);
        if wake {
            stage.room.notify_all();
        }
        true
    }

    /// The next record, if any (not consumed: [`Taken::advance`] does).
    pub fn peek(&self) -> Option<Record<'_>> {
        let h = self.bytes.get(self.pos..self.pos + RECORD_HEADER_BYTES)?;
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let start = self.pos + RECORD_HEADER_BYTES;
        let payload = self.bytes.get(start..start + len)?;
        let kind = match h[0] {
            KIND_SEND => Kind::Send,
            KIND_REQUEST => Kind::Request,
            _ => Kind::Flush,
        };
        let mut inc = [0u8; 8];
        inc.copy_from_slice(&h[8..16]);
        Some(Record {
            kind,
            order: order_of(h[1]),
            safe: h[2] != 0,
            incarnation: u64::from_le_bytes(inc),
            payload,
        })
    }

    /// Consumes the record [`Taken::peek`] returned.
    pub fn advance(&mut self) {
        let Some(h) = self.bytes.get(self.pos..self.pos + RECORD_HEADER_BYTES) else {
            self.pos = self.bytes.len();
            return;
        };
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        self.pos = (self.pos + RECORD_HEADER_BYTES + len).min(self.bytes.len());
    }

    /// Drops what is left (the group is done): the caller answers the side objects.
    pub fn clear(&mut self) {
        self.pos = self.bytes.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage_send(stage: &Stage, order: Order, safe: bool, bytes: &[u8]) -> bool {
        let mut s = stage.lock();
        if !s.has_room(bytes.len()) {
            return false;
        }
        s.begin(Kind::Send, order, safe, bytes.len());
        s.bytes.extend_from_slice(bytes);
        true
    }

    #[test]
    fn records_come_out_in_order_with_their_headers() {
        let stage = Stage::new();
        stage.lock().incarnation = 7;
        assert!(stage_send(&stage, Order::Total, true, b"abc"));
        assert!(stage_send(&stage, Order::Causal, false, b""));
        stage.lock().begin(Kind::Flush, Order::Fifo, false, 0);
        let mut taken = Taken::default();
        assert!(taken.refill(&stage));
        assert!(stage.lock().bytes.is_empty(), "the stage was taken whole");
        let r = taken.peek().unwrap();
        assert_eq!(
            (r.kind, r.order, r.safe, r.incarnation, r.payload),
            (Kind::Send, Order::Total, true, 7, &b"abc"[..])
        );
        taken.advance();
        let r = taken.peek().unwrap();
        assert_eq!(
            (r.kind, r.order, r.payload),
            (Kind::Send, Order::Causal, &b""[..])
        );
        taken.advance();
        assert_eq!(taken.peek().unwrap().kind, Kind::Flush);
        taken.advance();
        assert!(taken.peek().is_none() && taken.is_done());
        assert!(!taken.refill(&stage), "nothing staged since");
    }

    #[test]
    fn the_stage_is_bounded_but_always_takes_one_record() {
        let stage = Stage::new();
        let big = vec![1u8; SEND_STAGE_BYTES_MAX * 2];
        assert!(
            stage_send(&stage, Order::Fifo, false, &big),
            "an empty stage takes any record"
        );
        assert!(
            !stage_send(&stage, Order::Fifo, false, b"x"),
            "then it is full"
        );
        let mut taken = Taken::default();
        assert!(taken.refill(&stage));
        let small = [2u8; 64];
        let mut n = 0;
        while stage_send(&stage, Order::Fifo, false, &small) {
            n += 1;
        }
        assert_eq!(n, SEND_STAGE_BYTES_MAX / (RECORD_HEADER_BYTES + 64));
        assert!(
            taken.refill(&stage),
            "not done with the taken stage: no new take"
        );
        assert!(
            !stage.lock().bytes.is_empty(),
            "the stage waits until the taken one is fed"
        );
        taken.advance();
        assert!(taken.refill(&stage));
        assert!(stage.lock().bytes.is_empty());
    }
}

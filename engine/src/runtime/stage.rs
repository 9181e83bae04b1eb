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
//! Plain sends of one order are staged **as a bundle** (the wire format of
//! [`crate::protocol::Bundle`]): a send extends the last record if that is a bundle of its
//! order, safety and incarnation with room (up to [`Staged::bundle_bytes_max`], the member's
//! record payload limit the poller publishes), so a run of sends is one record that the
//! poller hands to its member with one copy instead of taking them one by one.
//!
//! ```text
//! record: kind:u8 order:u8 safe:u8 reserved:u8 len:u32le incarnation:u64le  payload[len]
//! kind:   0 send (gbcast), 1 request (takes the next waiter), 2 flush (takes the next flush;
//!         len 0), 3 bundle of plain sends (payload: count:u16le, then per message
//!         len:u16le bytes[len], each message framed)
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
/// The most a record takes beside its payload: a bundle record's header with one entry.
const RECORD_BYTES_MAX_BESIDE: usize =
    RECORD_HEADER_BYTES + crate::wire::BUNDLE_HEADER_BYTES + crate::wire::BUNDLE_ENTRY_HEADER_BYTES;
/// Flushes staged per group at once (more wait for room, like sends).
pub const FLUSHES_STAGED_MAX: usize = 64;

const KIND_SEND: u8 = 0;
const KIND_REQUEST: u8 = 1;
const KIND_FLUSH: u8 = 2;
const KIND_BUNDLE: u8 = 3;

/// What a record asks of the member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Send,
    /// A send whose reply waiter is the next of [`Staged::waiters`].
    Request,
    /// A flush: the next of [`Staged::flushes`].
    Flush,
    /// Plain sends of one order: a bundle payload.
    Bundle,
}

fn order_code(order: Order) -> u8 {
    match order {
        Order::Fifo => 0,
        Order::Causal => 1,
        Order::Total => 2,
        Order::Gbcast => 3,
    }
}

/// A bundle's order and safety in one byte (compared once per send).
#[inline]
fn bundle_key(order: Order, safe: bool) -> u8 {
    (order_code(order) << 1) | safe as u8
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
    /// The last record if it is a bundle later sends may extend (its header's length and
    /// count are written when it closes).
    pub open_bundle: Option<OpenBundle>,
    /// The largest bundle payload (the poller's member's record payload limit; 0 until the
    /// poller first looked: every send then starts its own bundle).
    pub bundle_bytes_max: usize,
}

/// The bundle record sends extend: where it starts, its key, and its payload's length and
/// message count so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OpenBundle {
    at: usize,
    /// Its order and safety ([`bundle_key`]).
    key: u8,
    incarnation: u64,
    len: usize,
    count: u16,
}

impl OpenBundle {
    /// A bundle record at `at` holding one entry of `entry_bytes`.
    fn one(at: usize, key: u8, incarnation: u64, entry_bytes: usize) -> OpenBundle {
        OpenBundle {
            at,
            key,
            incarnation,
            len: crate::wire::BUNDLE_HEADER_BYTES + entry_bytes,
            count: 1,
        }
    }

    /// Whether an entry of `entry_bytes` with `key`, numbered in `incarnation`, extends this
    /// bundle without taking it past `max` payload bytes.
    #[inline]
    fn takes(&self, key: u8, incarnation: u64, entry_bytes: usize, max: usize) -> bool {
        self.key == key
            && self.incarnation == incarnation
            && self.count < u16::MAX
            && self.len + entry_bytes <= max
    }

    /// Counts one more entry of `entry_bytes`.
    #[inline]
    fn add(&mut self, entry_bytes: usize) {
        self.len += entry_bytes;
        self.count += 1;
    }
}

/// A bundle entry [`Staged::begin_entry`] opened: commit it with [`Staged::commit_entry`] or
/// truncate the stage to `start`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// Where the entry (or the new record holding it) starts.
    pub start: usize,
    /// Whether it extends the open bundle (else it began a record of `order` and `safe`).
    extends: bool,
    order: Order,
    safe: bool,
    len: usize,
}

impl Staged {
    /// Whether a record of `len` payload bytes (or a message of `len` bytes, as a bundle entry
    /// or in a bundle record of its own) fits now.
    #[inline]
    pub fn has_room(&self, len: usize) -> bool {
        self.bytes.is_empty()
            || self.bytes.len() + RECORD_BYTES_MAX_BESIDE + len <= SEND_STAGE_BYTES_MAX
    }

    /// Appends a record header for `len` payload bytes (which the caller appends next). It
    /// closes the open bundle: nothing staged later may overtake this record.
    pub fn begin(&mut self, kind: Kind, order: Order, safe: bool, len: usize) {
        self.close_bundle();
        self.header(kind, order, safe, len);
    }

    /// Opens a bundle entry for a plain message of `len` bytes (its framing included), which
    /// the caller appends next: it extends the open bundle if that is of `order`, `safe` and
    /// this incarnation and has room, else a new bundle record begins.
    #[inline]
    pub fn begin_entry(&mut self, order: Order, safe: bool, len: usize) -> Entry {
        let entry_bytes = crate::wire::BUNDLE_ENTRY_HEADER_BYTES + len;
        let start = self.bytes.len();
        let key = bundle_key(order, safe);
        let extends = self
            .open_bundle
            .is_some_and(|b| b.takes(key, self.incarnation, entry_bytes, self.bundle_bytes_max));
        if !extends {
            self.begin_bundle(order, safe, entry_bytes);
        }
        self.bytes.extend_from_slice(&(len as u16).to_le_bytes());
        Entry {
            start,
            extends,
            order,
            safe,
            len,
        }
    }

    /// Appends a whole bundle entry — a message of one framing byte `head` and `body` — and
    /// counts it: [`Staged::begin_entry`], the bytes and [`Staged::commit_entry`] in one step
    /// (the plain send's hot path). Returns where the entry (or the new record holding it)
    /// starts.
    #[inline(always)]
    pub fn push_entry(&mut self, order: Order, safe: bool, head: u8, body: &[u8]) -> usize {
        let len = 1 + body.len();
        let entry_bytes = crate::wire::BUNDLE_ENTRY_HEADER_BYTES + len;
        let start = self.bytes.len();
        let (key, max, incarnation) = (
            bundle_key(order, safe),
            self.bundle_bytes_max,
            self.incarnation,
        );
        match &mut self.open_bundle {
            Some(b) if b.takes(key, incarnation, entry_bytes, max) => b.add(entry_bytes),
            _ => self.open_bundle_with(start, order, safe, entry_bytes),
        }
        let [l0, l1] = (len as u16).to_le_bytes();
        self.bytes.extend_from_slice(&[l0, l1, head]);
        self.bytes.extend_from_slice(body);
        start
    }

    /// Closes the open bundle and writes the header and count of a bundle record holding one
    /// entry of `entry_bytes` (whose length and bytes the caller appends).
    fn begin_bundle(&mut self, order: Order, safe: bool, entry_bytes: usize) {
        self.close_bundle();
        let payload = crate::wire::BUNDLE_HEADER_BYTES + entry_bytes;
        self.header(Kind::Bundle, order, safe, payload);
        self.bytes.extend_from_slice(&1u16.to_le_bytes());
    }

    /// [`Staged::begin_bundle`] at `start`, open for later sends at once (the entry is whole).
    #[inline(never)]
    fn open_bundle_with(&mut self, start: usize, order: Order, safe: bool, entry_bytes: usize) {
        self.begin_bundle(order, safe, entry_bytes);
        let key = bundle_key(order, safe);
        self.open_bundle = Some(OpenBundle::one(start, key, self.incarnation, entry_bytes));
    }

    /// Counts the entry (whose bytes the caller appended) in its bundle record.
    #[inline]
    pub fn commit_entry(&mut self, entry: Entry) {
        let entry_bytes = crate::wire::BUNDLE_ENTRY_HEADER_BYTES + entry.len;
        match &mut self.open_bundle {
            Some(b) if entry.extends => b.add(entry_bytes),
            _ => {
                // Its header is already right for one message.
                let key = bundle_key(entry.order, entry.safe);
                self.open_bundle = Some(OpenBundle::one(
                    entry.start,
                    key,
                    self.incarnation,
                    entry_bytes,
                ));
            }
        }
    }

    /// Writes the open bundle's length and count into its header: nothing extends it after.
    pub fn close_bundle(&mut self) {
        let Some(b) = self.open_bundle.take() else {
            return;
        };
        let Some(h) = self.bytes.get_mut(b.at..b.at + RECORD_HEADER_BYTES + 2) else {
            debug_assert!(false, "the open bundle is gone from the stage");
            return;
        };
        h[4..8].copy_from_slice(&(b.len as u32).to_le_bytes());
        h[16..18].copy_from_slice(&b.count.to_le_bytes());
    }

    fn header(&mut self, kind: Kind, order: Order, safe: bool, len: usize) {
        let kind = match kind {
            Kind::Send => KIND_SEND,
            Kind::Request => KIND_REQUEST,
            Kind::Flush => KIND_FLUSH,
            Kind::Bundle => KIND_BUNDLE,
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
    /// allocates) and wakes senders waiting for room. False if there was nothing. Publishes
    /// `bundle_bytes_max` to the senders.
    pub fn refill(&mut self, stage: &Stage, bundle_bytes_max: usize) -> bool {
        if !self.is_done() {
            return true;
        }
        self.bytes.clear();
        self.pos = 0;
        let mut s = stage.lock();
        s.bundle_bytes_max = bundle_bytes_max;
        if s.bytes.is_empty() {
            return false;
        }
        s.close_bundle();
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
        self.record_at(self.pos)
    }

    /// The record after the one [`Taken::peek`] returns, if this stage holds one.
    pub fn peek_next(&self) -> Option<Record<'_>> {
        self.record_at(self.end_of(self.pos)?)
    }

    /// Where the record at `at` ends (header and payload), if a whole header is there.
    fn end_of(&self, at: usize) -> Option<usize> {
        let h = self.bytes.get(at..at + RECORD_HEADER_BYTES)?;
        Some(at + RECORD_HEADER_BYTES + u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize)
    }

    fn record_at(&self, at: usize) -> Option<Record<'_>> {
        let start = at + RECORD_HEADER_BYTES;
        let payload = self.bytes.get(start..self.end_of(at)?)?;
        let h = &self.bytes[at..start];
        let kind = match h[0] {
            KIND_SEND => Kind::Send,
            KIND_REQUEST => Kind::Request,
            KIND_BUNDLE => Kind::Bundle,
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
        let end = self.bytes.len();
        self.pos = self.end_of(self.pos).map_or(end, |e| e.min(end));
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
        assert!(taken.refill(&stage, 1400));
        assert!(stage.lock().bytes.is_empty(), "the stage was taken whole");
        let r = taken.peek().unwrap();
        assert_eq!(
            (r.kind, r.order, r.safe, r.incarnation, r.payload),
            (Kind::Send, Order::Total, true, 7, &b"abc"[..])
        );
        let next = taken.peek_next().unwrap();
        assert_eq!((next.order, next.payload), (Order::Causal, &b""[..]));
        taken.advance();
        let r = taken.peek().unwrap();
        assert_eq!(
            (r.kind, r.order, r.payload),
            (Kind::Send, Order::Causal, &b""[..])
        );
        assert_eq!(taken.peek_next().unwrap().kind, Kind::Flush);
        taken.advance();
        assert_eq!(taken.peek().unwrap().kind, Kind::Flush);
        assert!(taken.peek_next().is_none(), "the last record has no next");
        taken.advance();
        assert!(taken.peek().is_none() && taken.is_done());
        assert!(!taken.refill(&stage, 1400), "nothing staged since");
    }

    /// Stages a plain message as a bundle entry, committed: in one step (`push_entry`, its
    /// first byte as the head) or, when empty, opened and committed around nothing.
    fn stage_plain(stage: &Stage, order: Order, safe: bool, bytes: &[u8]) {
        let mut s = stage.lock();
        match bytes.split_first() {
            Some((&head, body)) => {
                s.push_entry(order, safe, head, body);
            }
            None => {
                let entry = s.begin_entry(order, safe, 0);
                s.commit_entry(entry);
            }
        }
    }

    fn messages(r: &Record<'_>) -> Vec<Vec<u8>> {
        assert_eq!(r.kind, Kind::Bundle);
        let count = crate::wire::bundle_count(r.payload).expect("a well-formed bundle");
        let m: Vec<Vec<u8>> = crate::wire::bundle_messages(r.payload)
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(m.len(), usize::from(count));
        m
    }

    #[test]
    fn plain_sends_of_one_order_extend_one_bundle_record() {
        let stage = Stage::new();
        let mut taken = Taken::default();
        assert!(!taken.refill(&stage, 40), "the poller publishes its limit");
        assert_eq!(stage.lock().bundle_bytes_max, 40);
        stage.lock().incarnation = 3;
        stage_plain(&stage, Order::Total, false, b"a");
        stage_plain(&stage, Order::Total, false, b"bb");
        // Another order, or safety, begins a record.
        stage_plain(&stage, Order::Total, true, b"c");
        stage_plain(&stage, Order::Fifo, false, b"d");
        // A record of another kind closes the bundle: later sends do not overtake it.
        stage.lock().begin(Kind::Flush, Order::Fifo, false, 0);
        stage_plain(&stage, Order::Fifo, false, b"e");
        // A new incarnation begins a record.
        stage.lock().incarnation = 4;
        stage_plain(&stage, Order::Fifo, false, b"f");
        // The limit: 2 + (2 + 16) + (2 + 16) = 38 fits 40, a third does not.
        for _ in 0..3 {
            stage_plain(&stage, Order::Fifo, false, &[7u8; 16]);
        }
        // An entry dropped before its commit leaves the bundle as it was.
        {
            let mut s = stage.lock();
            let entry = s.begin_entry(Order::Fifo, false, 5);
            s.bytes.truncate(entry.start);
        }
        stage_plain(&stage, Order::Fifo, false, b"g");
        assert!(taken.refill(&stage, 40));
        assert_eq!(stage.lock().open_bundle, None, "the taken bundle is closed");
        let mut records = Vec::new();
        while let Some(r) = taken.peek() {
            let m = if r.kind == Kind::Flush {
                Vec::new()
            } else {
                messages(&r)
            };
            records.push((r.kind, r.order, r.safe, r.incarnation, m));
            taken.advance();
        }
        let v = |s: &[&[u8]]| s.iter().map(|m| m.to_vec()).collect::<Vec<_>>();
        let sixteen = [7u8; 16];
        assert_eq!(
            records,
            vec![
                (Kind::Bundle, Order::Total, false, 3, v(&[b"a", b"bb"])),
                (Kind::Bundle, Order::Total, true, 3, v(&[b"c"])),
                (Kind::Bundle, Order::Fifo, false, 3, v(&[b"d"])),
                (Kind::Flush, Order::Fifo, false, 3, Vec::new()),
                (Kind::Bundle, Order::Fifo, false, 3, v(&[b"e"])),
                (Kind::Bundle, Order::Fifo, false, 4, v(&[b"f", &sixteen])),
                (
                    Kind::Bundle,
                    Order::Fifo,
                    false,
                    4,
                    v(&[&sixteen, &sixteen])
                ),
                (Kind::Bundle, Order::Fifo, false, 4, v(&[b"g"])),
            ]
        );
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
        assert!(taken.refill(&stage, 1400));
        let small = [2u8; 64];
        let mut n = 0;
        while stage_send(&stage, Order::Fifo, false, &small) {
            n += 1;
        }
        assert_eq!(n, SEND_STAGE_BYTES_MAX / (RECORD_HEADER_BYTES + 64));
        assert!(
            taken.refill(&stage, 1400),
            "not done with the taken stage: no new take"
        );
        assert!(
            !stage.lock().bytes.is_empty(),
            "the stage waits until the taken one is fed"
        );
        taken.advance();
        assert!(taken.refill(&stage, 1400));
        assert!(stage.lock().bytes.is_empty());
    }
}

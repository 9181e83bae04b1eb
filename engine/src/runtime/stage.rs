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
//! Why the handles do not share a lock-free ring: several threads may send on one group, and
//! a swapped buffer costs the poller one uncontended lock per turn. A sender that is alone
//! on its group takes the lock-free path: the exclusive publisher below.
//!
//! Plain sends of one order are staged **as a bundle** (the wire format of
//! [`crate::protocol::Bundle`]): a send extends the last record if that is a bundle of its
//! order, safety and incarnation with room (up to [`Staged::bundle_bytes_max`], the member's
//! record payload limit the poller publishes), so a run of sends is one record that the
//! poller hands to its member with one copy instead of taking them one by one.
//!
//! An exclusive [`Publisher`](crate::node::Publisher) hands its plain sends over without the
//! lock, through the stage's single-producer ring
//! ([`cohort_transport::spsc`]); the poller reads them in place as the same records (a run's
//! entries up to the record limit as one bundle) and hands the ring's bytes back once it fed
//! them all ([`Taken::refill`]). A publisher's claim reserves a message's bytes past the
//! tail, its head written and its body zeroed, and publishes them only when committed
//! ([`RingWriter::claim`]). While a publisher holds the group (`Staged::exclusive`), the
//! handles stage no sends — the ring is the member's only stream — and a flush is staged only
//! once the poller took every ring message published before it (so it covers them). Order
//! between the two: the poller reads the ring's tail *before* it locks the stage, takes the
//! stage if it holds anything, else the ring up to that tail. A record staged before a
//! publisher was claimed is then always taken before the ring messages published after the
//! claim, and a publisher that let go leaves the group to the handles only once the poller
//! took its last message.
//!
//! ```text
//! ring:   entries of the bundle format (len:u16le >= 1, the message's len bytes), each run
//!         of them after a marker (0:u16, key:u8 = order << 1 | safe, incarnation:u64le)
//!         that says how they were sent; 0xFFFF:u16, or fewer than 2 bytes, before the end
//!         of the array: the rest of the lap is skipped. A message is never split by the end.
//!         Runs of gbcast (order 3) messages become records of their own, the others bundles.
//! ```
//!
//! ```text
//! record: kind:u8 order:u8 safe:u8 reserved:u8 len:u32le incarnation:u64le  payload[len]
//! kind:   0 send (gbcast), 1 request (takes the next waiter), 2 flush (takes the next flush;
//!         len 0), 3 bundle of plain sends (payload: count:u16le, then per message
//!         len:u16le bytes[len], each message framed)
//! ```

use super::poller::{FlushOutcome, Waiter};
use crate::Order;
use cohort_transport::spsc::{byte_ring, Consumer, Producer, RingPositions};
use crossbeam_channel::Sender;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
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
/// Bytes of a group's publisher ring (at least).
pub const PUBLISH_RING_BYTES: usize = SEND_STAGE_BYTES_MAX;
/// A ring marker: an entry length no entry has, the key, the incarnation.
const RING_MARKER_BYTES: usize = 2 + 1 + 8;
/// The ring's pad: an entry length no entry has (a message is shorter than 64 KiB - 1).
const RING_PAD: u16 = u16::MAX;
/// Fewer bytes than this before the end of the array are skipped (nothing fits them).
const RING_TAIL_MIN: usize = 2;

/// A publisher's side of the ring: the producer and the run it writes.
pub(crate) struct RingWriter {
    producer: Producer,
    /// The key of the last marker written ([`NO_RUN`] before the first), and its
    /// incarnation. Two plain fields, not an `Option` of the pair: a send compares them
    /// without a test of a discriminant first.
    run_key: u8,
    run_incarnation: u64,
}

/// [`RingWriter::run_key`] before any marker: no key is this (a key is `order << 1 | safe`).
const NO_RUN: u8 = u8::MAX;

impl RingWriter {
    /// Writes a message of one framing byte `head` and `body`, sent with `order` and `safe`
    /// and numbered in `incarnation`, and publishes it: false (nothing written) when the ring
    /// has no room now. Always inlined, like the publisher's send that calls it.
    #[inline(always)]
    pub fn push(
        &mut self,
        order: Order,
        safe: bool,
        incarnation: u64,
        head: u8,
        body: &[u8],
    ) -> bool {
        let key = bundle_key(order, safe);
        let marker = self.marker_bytes(key, incarnation);
        let entry = crate::wire::BUNDLE_ENTRY_HEADER_BYTES + 1 + body.len();
        let total = marker + entry;
        let p = &mut self.producer;
        let region = match p.reserve(total) {
            Some(region) => region,
            None => match Self::reserve_next_lap(p, total) {
                Some(region) => region,
                None => return false,
            },
        };
        let rest = write_entry_head(region, marker, key, incarnation, head, body.len());
        copy_body(rest, body);
        p.publish(total);
        (self.run_key, self.run_incarnation) = (key, incarnation);
        true
    }

    /// Reserves a message of `len` body bytes after one framing byte `head`, like
    /// [`RingWriter::push`] but not published: its marker and entry header are written and
    /// its body zeroed, for the caller to write through [`RingWriter::claimed_mut`] and then
    /// [`RingWriter::commit`]. Forgetting it publishes nothing (the next reservation reuses
    /// the bytes). `None` when the ring has no room now.
    pub fn claim(
        &mut self,
        order: Order,
        safe: bool,
        incarnation: u64,
        head: u8,
        len: usize,
    ) -> Option<RingClaim> {
        let key = bundle_key(order, safe);
        let marker = self.marker_bytes(key, incarnation);
        let body_at = marker + crate::wire::BUNDLE_ENTRY_HEADER_BYTES + 1;
        let total = body_at + len;
        let p = &mut self.producer;
        let region = match p.reserve(total) {
            Some(region) => region,
            None => Self::reserve_next_lap(p, total)?,
        };
        write_entry_head(region, marker, key, incarnation, head, len).fill(0);
        Some(RingClaim {
            total,
            body_at,
            run: (key, incarnation),
        })
    }

    /// The body of claim `c` (the bytes [`RingWriter::claim`] reserved).
    pub fn claimed(&self, c: &RingClaim) -> &[u8] {
        self.producer
            .reserved(c.total)
            .and_then(|r| r.get(c.body_at..))
            .unwrap_or(&[])
    }

    /// The body of claim `c`, to write.
    pub fn claimed_mut(&mut self, c: &RingClaim) -> &mut [u8] {
        match self.producer.reserve(c.total) {
            Some(r) => r.get_mut(c.body_at..).unwrap_or(&mut []),
            None => &mut [],
        }
    }

    /// Publishes claim `c`, the last one made.
    pub fn commit(&mut self, c: RingClaim) {
        self.producer.publish(c.total);
        (self.run_key, self.run_incarnation) = c.run;
    }

    /// The run marker a message of `key` in `incarnation` needs: none if it continues the
    /// last published run.
    #[inline(always)]
    fn marker_bytes(&self, key: u8, incarnation: u64) -> usize {
        if self.run_key == key && self.run_incarnation == incarnation {
            0
        } else {
            RING_MARKER_BYTES
        }
    }

    /// `total` bytes did not fit: if that is for the end of the array, skips the rest of
    /// this lap and reserves them at the start of the next; `None` if the ring is full.
    /// Once per lap at most, so kept out of the send's inlined path.
    #[cold]
    #[inline(never)]
    fn reserve_next_lap(p: &mut Producer, total: usize) -> Option<&mut [u8]> {
        let room = p.room_before_wrap();
        if total <= room {
            return None; // full
        }
        let pad = p.reserve(room)?;
        if let Some(pad) = pad.get_mut(..RING_TAIL_MIN) {
            pad.copy_from_slice(&RING_PAD.to_le_bytes());
        }
        p.publish(room);
        p.reserve(total)
    }
}

/// A message reserved in the ring and not yet published ([`RingWriter::claim`]).
#[derive(Debug)]
pub(crate) struct RingClaim {
    /// Its bytes from the tail: a run marker if one was needed, the entry's header, the
    /// framing byte, the body.
    total: usize,
    /// Where the body starts.
    body_at: usize,
    /// The run it continues or starts.
    run: (u8, u64),
}

/// Copies a message's body into its place in the ring. A body of 16 to 128 bytes (the small
/// update this path is for) goes as two fixed-size moves inline, overlapping in the middle,
/// as `memcpy` itself does; others with `copy_from_slice`, a call into the C library's
/// `memcpy`, whose call and size dispatch cost more than the copy for a few dozen bytes.
#[inline(always)]
fn copy_body(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if dst.len() != n {
        dst.copy_from_slice(src); // panics as it would have
        return;
    }
    match n {
        16..=32 => copy_ends::<16>(dst, src),
        33..=64 => copy_ends::<32>(dst, src),
        65..=128 => copy_ends::<64>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// Copies `src` (of `W..=2 * W` bytes) into `dst` (as long) as its first and its last `W`
/// bytes.
#[inline(always)]
fn copy_ends<const W: usize>(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    dst[..W].copy_from_slice(&src[..W]);
    dst[n - W..].copy_from_slice(&src[n - W..]);
}

/// Writes a ring message's head into `region`: a run marker (`key`, `incarnation`) in its
/// first `marker` bytes if that is not 0, then the bundle entry's length (the framing byte
/// and `body_len` bytes) and the framing byte `head`. Returns the rest: the body's place.
#[inline(always)]
fn write_entry_head(
    region: &mut [u8],
    marker: usize,
    key: u8,
    incarnation: u64,
    head: u8,
    body_len: usize,
) -> &mut [u8] {
    let (m, e) = region.split_at_mut(marker);
    if let [m0, m1, k, inc @ ..] = m {
        (*m0, *m1, *k) = (0, 0, key);
        inc.copy_from_slice(&incarnation.to_le_bytes());
    }
    let [l0, l1] = ((1 + body_len) as u16).to_le_bytes();
    match e {
        [e0, e1, h, rest @ ..] => {
            (*e0, *e1, *h) = (l0, l1, head);
            rest
        }
        _ => &mut [],
    }
}

/// Who may send on a group (under the stage's lock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Exclusive {
    /// The handles.
    #[default]
    Free,
    /// A publisher: the handles' sends are refused.
    Held,
    /// A publisher let go; the poller has not taken all its records yet (the handles wait).
    Draining,
}

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
    /// Whether a publisher holds the group.
    pub exclusive: Exclusive,
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
pub(crate) struct Stage {
    pub staged: Mutex<Staged>,
    /// Signalled by the poller after it took the stage (room again).
    pub room: Condvar,
    /// The publisher ring's writing side while no publisher holds it.
    writer: Mutex<Option<RingWriter>>,
    /// Its reading side until the poller's group takes it.
    consumer: Mutex<Option<Consumer>>,
    /// Where its two sides are.
    pub ring: RingPositions,
    /// The group is gone: a publisher's sends are `Closed`.
    pub ring_closed: AtomicBool,
}

impl Default for Stage {
    fn default() -> Self {
        Self::new()
    }
}

impl Stage {
    /// A stage for payloads that fit a standard datagram.
    pub fn new() -> Self {
        Self::for_payloads_up_to(0)
    }

    /// A stage whose publisher ring takes payloads of up to `payload_bytes_max` bytes: at
    /// least [`PUBLISH_RING_BYTES`], and two of the largest messages with their markers (one
    /// may follow a skipped end of the array almost as long).
    pub fn for_payloads_up_to(payload_bytes_max: usize) -> Self {
        let largest =
            RING_MARKER_BYTES + crate::wire::BUNDLE_ENTRY_HEADER_BYTES + payload_bytes_max;
        let (producer, consumer) = byte_ring(PUBLISH_RING_BYTES.max(2 * largest));
        Stage {
            staged: Mutex::new(Staged {
                next_seq: 1,
                ..Staged::default()
            }),
            room: Condvar::new(),
            ring: producer.positions(),
            writer: Mutex::new(Some(RingWriter {
                producer,
                run_key: NO_RUN,
                run_incarnation: 0,
            })),
            consumer: Mutex::new(Some(consumer)),
            ring_closed: AtomicBool::new(false),
        }
    }

    /// The ring's reading side, once (the poller's group takes it when it is made).
    pub fn take_consumer(&self) -> Option<Consumer> {
        self.consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The ring's writing side, for a publisher (none while another holds it).
    pub fn take_writer(&self) -> Option<RingWriter> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Gives the ring's writing side back (a publisher let go).
    pub fn put_writer(&self, writer: RingWriter) {
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
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
        self.ring_closed.store(true, Ordering::Relaxed);
        self.room.notify_all();
    }

    /// Whether the publisher ring holds messages the poller has not taken.
    #[inline]
    pub fn ring_pending(&self) -> bool {
        self.ring.tail() != self.ring.head()
    }
}

/// A record as the poller reads it.
pub(crate) struct Record<'a> {
    pub kind: Kind,
    pub order: Order,
    pub safe: bool,
    pub incarnation: u64,
    /// The message; for a bundle, its entries (`len:u16le` and the message, each).
    pub payload: &'a [u8],
    /// A bundle's message count (1 for the other kinds).
    pub count: u16,
}

impl Record<'_> {
    /// A bundle's payload length in the bundle format (its count, then its entries).
    pub fn bundle_len(&self) -> usize {
        crate::wire::BUNDLE_HEADER_BYTES + self.payload.len()
    }
}

/// A record of the publisher ring's region being read: where its bytes are (from the
/// region's start), and what they are.
#[derive(Clone, Copy, Debug)]
struct RingRecord {
    kind: Kind,
    key: u8,
    incarnation: u64,
    start: usize,
    end: usize,
    count: u16,
}

/// The poller's side: the stage it took last, read from `pos`.
#[derive(Default)]
pub(crate) struct Taken {
    bytes: Vec<u8>,
    pos: usize,
    pub waiters: VecDeque<Waiter>,
    pub flushes: VecDeque<Sender<FlushOutcome>>,
    /// The publisher ring's reading side (none in tests of the stage alone).
    consumer: Option<Consumer>,
    /// The key and incarnation of the ring's last marker.
    ring_run: Option<(u8, u64)>,
    /// The records of the ring's region being read, read in place (no copy), from
    /// `ring_at`; the region is the consumer's readable bytes up to `ring_limit`, and
    /// `ring_region` of them are handed back once every record was consumed.
    ring_records: Vec<RingRecord>,
    ring_at: usize,
    ring_limit: u64,
    ring_region: usize,
}

impl Taken {
    /// A poller's group's: it reads the publisher ring through `consumer`.
    pub fn with_consumer(consumer: Option<Consumer>) -> Self {
        Taken {
            consumer,
            ..Taken::default()
        }
    }

    /// Whether every record taken was fed to the member.
    pub fn is_done(&self) -> bool {
        self.pos >= self.bytes.len() && self.ring_at >= self.ring_records.len()
    }

    /// Once the last stage is done: takes the next one (swapping buffers, so neither side
    /// allocates) and wakes senders waiting for room. False if there was nothing. Publishes
    /// `bundle_bytes_max` to the senders.
    ///
    /// With the stage empty, it takes the publisher ring's records instead, up to the tail
    /// read before the lock (see the module's doc for why), and lets a publisher that let go
    /// of the group go once the ring is empty.
    pub fn refill(&mut self, stage: &Stage, bundle_bytes_max: usize) -> bool {
        if !self.is_done() {
            return true;
        }
        self.bytes.clear();
        self.pos = 0;
        let tail = stage.ring.tail();
        let mut s = stage.lock();
        s.bundle_bytes_max = bundle_bytes_max;
        if s.bytes.is_empty() {
            if self.consumer.as_ref().is_some_and(|c| c.position() != tail) {
                let wake = s.room_waiters > 0;
                drop(s);
                self.index_ring(tail, bundle_bytes_max);
                if wake {
                    stage.room.notify_all();
                }
                return !self.is_done();
            }
            if s.exclusive == Exclusive::Draining && !stage.ring_pending() {
                s.exclusive = Exclusive::Free;
                drop(s);
                stage.room.notify_all();
            }
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

    /// Reads the ring's messages up to position `until` as records, in place: each run of
    /// plain messages as bundles (up to `bundle_bytes_max` each, as the stage would have),
    /// gbcast messages as records of their own. One region at a time (to the end of the
    /// array, or to `until`); a region that holds no message is handed back at once.
    fn index_ring(&mut self, until: u64, bundle_bytes_max: usize) {
        let Taken {
            consumer,
            ring_run,
            ring_records: records,
            ring_at,
            ring_limit,
            ring_region,
            ..
        } = self;
        let Some(c) = consumer.as_mut() else {
            return;
        };
        records.clear();
        *ring_at = 0;
        *ring_limit = until;
        // At most two regions: to the end of the array, and on from its start.
        for _ in 0..2 {
            let r = c.readable_until(until);
            let n = r.len();
            if n == 0 {
                break;
            }
            let mut i = 0;
            while i + RING_TAIL_MIN <= n {
                let len = u16::from_le_bytes([r[i], r[i + 1]]);
                if len == RING_PAD {
                    break;
                }
                if len == 0 {
                    let mut inc = [0u8; 8];
                    inc.copy_from_slice(&r[i + 3..i + RING_MARKER_BYTES]);
                    *ring_run = Some((r[i + 2], u64::from_le_bytes(inc)));
                    i += RING_MARKER_BYTES;
                    continue;
                }
                let (key, incarnation) = ring_run.unwrap_or_default();
                let first = crate::wire::BUNDLE_ENTRY_HEADER_BYTES + usize::from(len);
                if order_of(key >> 1) == Order::Gbcast {
                    records.push(RingRecord {
                        kind: Kind::Send,
                        key,
                        incarnation,
                        start: i + crate::wire::BUNDLE_ENTRY_HEADER_BYTES,
                        end: i + first,
                        count: 1,
                    });
                    i += first;
                    continue;
                }
                // A bundle: this entry and the run's next ones while it has room (only
                // their lengths are read).
                // The bundle's bytes grow with `j`: it is full once `j` would pass `full_at`.
                // Entries take at least 3 bytes and a bundle at most `u16::MAX` bytes, so
                // the count cannot overflow.
                let (start, mut j, mut count) = (i, i + first, 1u16);
                let full_at = (start + bundle_bytes_max)
                    .saturating_sub(crate::wire::BUNDLE_HEADER_BYTES)
                    .min(n);
                debug_assert!(bundle_bytes_max <= usize::from(u16::MAX));
                // Equal lengths first: the entries that fit if all are as long as this one
                // are checked where they would start (loads that do not wait for each
                // other); the walk below goes on from the first that is not.
                let fit = (full_at.saturating_sub(start) / first).saturating_sub(1);
                let equal = crate::wire::equal_entries_after(r, start, fit);
                j += equal * first;
                count += equal as u16;
                while let Some(&[l0, l1]) = r.get(j..j + 2) {
                    // A marker (0) or the lap's pad (0xFFFF) ends the bundle.
                    let len = u16::from_le_bytes([l0, l1]);
                    if len.wrapping_sub(1) >= RING_PAD - 1 {
                        break;
                    }
                    let next = j + crate::wire::BUNDLE_ENTRY_HEADER_BYTES + usize::from(len);
                    if next > full_at {
                        break;
                    }
                    count += 1;
                    j = next;
                }
                records.push(RingRecord {
                    kind: Kind::Bundle,
                    key,
                    incarnation,
                    start,
                    end: j,
                    count,
                });
                i = j;
            }
            if !records.is_empty() {
                *ring_region = n;
                return;
            }
            c.release(n);
        }
    }

    /// The ring record at `at` of the region being read.
    fn ring_record_at(&self, at: usize) -> Option<Record<'_>> {
        let rec = self.ring_records.get(at)?;
        let region = self.consumer.as_ref()?.readable_until(self.ring_limit);
        Some(Record {
            kind: rec.kind,
            order: order_of(rec.key >> 1),
            safe: rec.key & 1 == 1,
            incarnation: rec.incarnation,
            payload: region.get(rec.start..rec.end)?,
            count: rec.count,
        })
    }

    /// The next record, if any (not consumed: [`Taken::advance`] does).
    pub fn peek(&self) -> Option<Record<'_>> {
        if self.ring_at < self.ring_records.len() {
            return self.ring_record_at(self.ring_at);
        }
        self.record_at(self.pos)
    }

    /// The record after the one [`Taken::peek`] returns, if this take holds one.
    pub fn peek_next(&self) -> Option<Record<'_>> {
        if self.ring_at < self.ring_records.len() {
            return self.ring_record_at(self.ring_at + 1);
        }
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
        let (payload, count) = match kind {
            Kind::Bundle => {
                let (count, entries) = payload
                    .split_first_chunk::<{ crate::wire::BUNDLE_HEADER_BYTES }>()
                    .unwrap_or((&[0, 0], &[]));
                (entries, u16::from_le_bytes(*count))
            }
            _ => (payload, 1),
        };
        Some(Record {
            kind,
            order: order_of(h[1]),
            safe: h[2] != 0,
            incarnation: u64::from_le_bytes(inc),
            payload,
            count,
        })
    }

    /// Consumes the record [`Taken::peek`] returned.
    pub fn advance(&mut self) {
        if self.ring_at < self.ring_records.len() {
            self.ring_at += 1;
            if self.ring_at == self.ring_records.len() {
                self.release_ring();
            }
            return;
        }
        let end = self.bytes.len();
        self.pos = self.end_of(self.pos).map_or(end, |e| e.min(end));
    }

    /// Hands the ring's region back once its records were consumed.
    fn release_ring(&mut self) {
        if let Some(c) = self.consumer.as_mut() {
            c.release(std::mem::take(&mut self.ring_region));
        }
        self.ring_records.clear();
        self.ring_at = 0;
    }

    /// Drops what is left (the group is done): the caller answers the side objects.
    pub fn clear(&mut self) {
        self.pos = self.bytes.len();
        if !self.ring_records.is_empty() {
            self.release_ring();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::framing;
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
        let mut encoded = r.count.to_le_bytes().to_vec();
        encoded.extend_from_slice(r.payload);
        let count = crate::wire::bundle_count(&encoded).expect("a well-formed bundle");
        let m: Vec<Vec<u8>> = crate::wire::bundle_messages(&encoded)
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

    /// Publishes a message as a publisher would (`head` the first byte of `message`),
    /// through the stage's ring writer.
    fn publish(stage: &Stage, order: Order, safe: bool, incarnation: u64, message: &[u8]) {
        let mut w = stage.take_writer().expect("the ring's writer");
        let (head, body) = message.split_first().expect("a framed message");
        assert!(
            w.push(order, safe, incarnation, *head, body),
            "room in the ring"
        );
        stage.put_writer(w);
    }

    /// A record's kind, order, safety, incarnation and messages.
    type Seen = (Kind, Order, bool, u64, Vec<Vec<u8>>);

    /// Every record a refill yields, with its messages (a gbcast send's payload as one).
    fn drain(taken: &mut Taken) -> Vec<Seen> {
        let mut records = Vec::new();
        while let Some(r) = taken.peek() {
            let m = match r.kind {
                Kind::Bundle => messages(&r),
                _ => vec![r.payload.to_vec()],
            };
            records.push((r.kind, r.order, r.safe, r.incarnation, m));
            taken.advance();
        }
        records
    }

    /// A framed plain message: the framing byte, then `body`.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut m = vec![framing::KIND_PLAIN];
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn ring_messages_become_the_records_the_stage_would_have_held() {
        // The same sends, once staged by the handles and once published in the ring.
        let sends: Vec<(Order, bool, u64, Vec<u8>)> = vec![
            (Order::Total, false, 3, framed(b"a")),
            (Order::Total, false, 3, framed(b"bb")),
            (Order::Total, true, 3, framed(b"")),
            (Order::Gbcast, false, 3, framed(b"g1")),
            (Order::Gbcast, false, 3, framed(b"g2")),
            (Order::Fifo, false, 3, framed(&[9u8; 13])),
            (Order::Fifo, false, 4, framed(b"new incarnation")),
            (Order::Fifo, false, 4, framed(&[7u8; 15])),
            (Order::Fifo, false, 4, framed(&[7u8; 15])),
            (Order::Fifo, false, 4, framed(&[7u8; 16])),
        ];
        let (staged, published) = (Stage::new(), Stage::new());
        let mut from_stage = Taken::default();
        let mut from_ring = Taken::with_consumer(published.take_consumer());
        assert!(published.take_consumer().is_none(), "one reader");
        // The handles learn the poller's limit at its first look.
        assert!(!from_stage.refill(&staged, 40));
        for (order, safe, incarnation, message) in &sends {
            let mut s = staged.lock();
            s.incarnation = *incarnation;
            if *order == Order::Gbcast {
                s.begin(Kind::Send, *order, *safe, message.len());
                s.bytes.extend_from_slice(message);
            } else {
                s.push_entry(*order, *safe, message[0], &message[1..]);
            }
            drop(s);
            publish(&published, *order, *safe, *incarnation, message);
        }
        assert!(published.ring_pending());
        assert!(from_stage.refill(&staged, 40));
        assert!(from_ring.refill(&published, 40));
        assert!(
            published.ring_pending(),
            "read in place: not handed back yet"
        );
        let want = drain(&mut from_stage);
        assert_eq!(drain(&mut from_ring), want);
        assert!(
            !published.ring_pending(),
            "handed back once every record was consumed"
        );
        assert_eq!(
            want.len(),
            7,
            "split by order, safety, kind, incarnation and size"
        );
        assert!(!from_ring.refill(&published, 40), "nothing published since");
    }

    #[test]
    fn runs_of_equal_messages_bundle_as_the_stage_bundles_them_wherever_a_length_changes() {
        // Long runs of one length (the index's fast path) broken by other lengths at every
        // place, by a new key and by a new incarnation, under bundle limits that do and do
        // not divide the run: the ring's bundles are the stage's, message for message.
        for limit in [40usize, 64, 200, 1400] {
            for break_at in [0usize, 1, 2, 5, 17, 40] {
                let mut sends: Vec<(Order, u64, Vec<u8>)> = Vec::new();
                for i in 0..120usize {
                    let len = if i % 41 == break_at { 3 + i % 7 } else { 10 };
                    let order = if i == 90 { Order::Causal } else { Order::Fifo };
                    let incarnation = if i < 100 { 1 } else { 2 };
                    sends.push((order, incarnation, framed(&vec![i as u8; len])));
                }
                let (staged, published) = (Stage::new(), Stage::new());
                let mut from_stage = Taken::default();
                let mut from_ring = Taken::with_consumer(published.take_consumer());
                assert!(!from_stage.refill(&staged, limit));
                for (order, incarnation, message) in &sends {
                    let mut s = staged.lock();
                    s.incarnation = *incarnation;
                    s.push_entry(*order, false, message[0], &message[1..]);
                    drop(s);
                    publish(&published, *order, false, *incarnation, message);
                }
                let (mut want, mut got) = (Vec::new(), Vec::new());
                while from_stage.refill(&staged, limit) {
                    want.extend(drain(&mut from_stage));
                }
                while from_ring.refill(&published, limit) {
                    got.extend(drain(&mut from_ring));
                }
                assert_eq!(got, want, "limit {limit}, break at {break_at}");
                let messages: usize = got.iter().map(|r| r.4.len()).sum();
                assert_eq!(messages, sends.len());
                assert!(got.len() > 3, "several bundles");
            }
        }
    }

    #[test]
    fn staged_records_go_before_ring_messages_and_a_draining_group_frees_once_the_ring_is_empty() {
        let stage = Stage::new();
        let mut taken = Taken::with_consumer(stage.take_consumer());
        stage_plain(&stage, Order::Fifo, false, &framed(b"staged"));
        stage.lock().exclusive = Exclusive::Held;
        publish(&stage, Order::Fifo, false, 0, &framed(b"published"));
        assert!(taken.refill(&stage, 1400));
        assert_eq!(
            drain(&mut taken)[0].4,
            vec![framed(b"staged")],
            "the stage first"
        );
        assert!(stage.ring_pending(), "the ring waits for the next take");
        assert!(taken.refill(&stage, 1400));
        assert_eq!(drain(&mut taken)[0].4, vec![framed(b"published")]);
        // The publisher lets go with a message still in the ring: the group stays draining
        // until the poller took it.
        publish(&stage, Order::Fifo, false, 0, &framed(b"last"));
        stage.lock().exclusive = Exclusive::Draining;
        assert!(taken.refill(&stage, 1400));
        assert_eq!(stage.lock().exclusive, Exclusive::Draining);
        drain(&mut taken);
        assert!(!taken.refill(&stage, 1400), "nothing left to take");
        assert_eq!(stage.lock().exclusive, Exclusive::Free, "the handles' turn");
    }

    #[test]
    fn ring_messages_keep_their_bytes_and_bundles_across_laps_of_the_ring() {
        // Messages of odd sizes in runs of changing keys, taken a few at a time: laps end in
        // skipped bytes of every length; bundles respect the limit.
        let stage = Stage::new();
        let mut taken = Taken::with_consumer(stage.take_consumer());
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        let laps = 3 * PUBLISH_RING_BYTES as u64;
        let mut i = 0usize;
        while stage.ring.tail() < laps {
            for _ in 0..5 {
                i += 1;
                let body: Vec<u8> = (0..(i * 37) % 1000).map(|k| (k + i) as u8).collect();
                let order = [Order::Causal, Order::Total, Order::Gbcast][i / 11 % 3];
                publish(&stage, order, false, (i / 50) as u64, &framed(&body));
                sent.push((order, (i / 50) as u64, framed(&body)));
            }
            assert!(taken.refill(&stage, 1400));
            take_all(&mut taken, &mut got);
        }
        // A region ends at the end of the array: the rest is the next take's.
        while taken.refill(&stage, 1400) {
            take_all(&mut taken, &mut got);
        }
        assert!(!stage.ring_pending());
        assert_eq!(got.len(), sent.len());
        assert!(
            got == sent,
            "the messages, in order, with their order and incarnation"
        );
    }

    #[test]
    fn claimed_messages_become_the_records_pushed_ones_do_and_a_forgotten_claim_publishes_nothing()
    {
        let (pushed, claimed) = (Stage::new(), Stage::new());
        let mut from_pushed = Taken::with_consumer(pushed.take_consumer());
        let mut from_claimed = Taken::with_consumer(claimed.take_consumer());
        let mut w = claimed.take_writer().expect("the ring's writer");
        let laps = 2 * PUBLISH_RING_BYTES as u64;
        let (mut i, mut forgotten) = (0usize, 0);
        while claimed.ring.tail() < laps {
            i += 1;
            let body: Vec<u8> = (0..(i * 53) % 900).map(|k| (k * 3 + i) as u8).collect();
            let (order, safe) = [(Order::Fifo, false), (Order::Total, true)][i / 7 % 2];
            let incarnation = (i / 40) as u64;
            if i % 4 == 0 || i % 7 == 0 {
                // Claimed and forgotten, with the key of the message that follows (a new run
                // every seventh message): its marker was never published, so the next one
                // must write its own.
                w.claim(order, safe, incarnation, framing::KIND_PLAIN, 30)
                    .expect("room");
                forgotten += 1;
            }
            let c = w
                .claim(order, safe, incarnation, framing::KIND_PLAIN, body.len())
                .expect("room: the ring is taken every message");
            assert!(w.claimed(&c).iter().all(|&b| b == 0), "zeroed");
            w.claimed_mut(&c).copy_from_slice(&body);
            assert_eq!(w.claimed(&c), &body[..]);
            w.commit(c);
            publish(&pushed, order, safe, incarnation, &framed(&body));
            assert!(from_pushed.refill(&pushed, 1400));
            assert!(from_claimed.refill(&claimed, 1400));
            let want = drain(&mut from_pushed);
            assert_eq!(drain(&mut from_claimed), want, "message {i}");
        }
        assert!(forgotten > 0);
        claimed.put_writer(w);
    }

    #[test]
    fn a_body_copies_whole_at_every_length_on_either_side_of_the_inline_widths() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 1) as u8).collect();
        for n in 0..=300 {
            // Guard bytes on both sides catch a move past either end.
            let mut dst = vec![0xEEu8; n + 32];
            copy_body(&mut dst[16..16 + n], &src[..n]);
            assert_eq!(&dst[16..16 + n], &src[..n], "length {n}");
            assert!(dst[..16].iter().all(|&b| b == 0xEE), "before, length {n}");
            assert!(
                dst[16 + n..].iter().all(|&b| b == 0xEE),
                "after, length {n}"
            );
        }
    }

    /// Drains `taken`'s records into `got` as (order, incarnation, message), checking each
    /// record's kind and bundle limit.
    fn take_all(taken: &mut Taken, got: &mut Vec<(Order, u64, Vec<u8>)>) {
        for (kind, order, _, incarnation, m) in drain(taken) {
            assert_eq!(kind == Kind::Send, order == Order::Gbcast);
            if kind == Kind::Bundle {
                let bytes: usize = m.iter().map(|m| 2 + m.len()).sum();
                assert!(2 + bytes <= 1400 || m.len() == 1, "a bundle past the limit");
            }
            got.extend(m.into_iter().map(|m| (order, incarnation, m)));
        }
    }
}

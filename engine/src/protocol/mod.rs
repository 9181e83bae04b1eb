//! The sans-IO state machine of one group member in one view (the membership layer,
//! [`crate::membership`], runs one per view and ends each with a flush).
//!
//! [`Member`] is a value in the quinn-proto style: no sockets, threads, clocks or randomness.
//! It is fed datagrams ([`Member::handle_datagram`]), the passage of time
//! ([`Member::handle_timeout`]) and application sends ([`Member::send`]), and is polled for
//! datagrams to transmit ([`Member::poll_transmit`]), deliveries ([`Member::poll_deliver`]),
//! events ([`Member::poll_event`]) and its next deadline ([`Member::poll_timeout`]). Time is a
//! [`Time`] value in nanoseconds, so the simulator's virtual clock and a runtime's monotonic
//! clock feed it alike.
//!
//! # Streams, reliability and stability
//! Every member owns one *stream* per group and view: records numbered 1, 2, 3, … (the *wire
//! seq*) holding its application messages of every order (one seq space: FIFO for every
//! message) and, at the sequencer, order control records. Every member keeps, per sender, a
//! bounded log (module `stream`): at the sender it is the retransmission buffer, at a receiver the
//! hold-back area. Receivers detect gaps (a record beyond the next expected one, or a higher
//! seq in someone's acknowledgement vector) and, after [`MemberConfig::nak_delay_ns`], send a
//! NAK (unicast, at most [`NAK_RANGES_PER_FRAME_MAX`] ranges, again after
//! [`MemberConfig::nak_retry_ns`] while the gap lasts, doubling up to
//! [`NAK_BACKOFF_DOUBLINGS_MAX`] times while it does not shrink); the sender retransmits from its log
//! (unicast). Each member's *acknowledgement vector* — per sender, the highest seq it holds
//! contiguously — travels in status frames: piggybacked on the next data frame when one goes
//! out anyway, alone otherwise, at most every [`MemberConfig::status_interval_ns`] when it
//! changed, every [`MemberConfig::status_retry_ns`] while something is not stable (tail loss:
//! a sender's own entry is its highest transmitted seq, so lost last frames are NAKed), and
//! every [`MemberConfig::heartbeat_ns`] otherwise. Data frames carry no vector of their own,
//! so the per-message cost does not grow with the group. A record is *stable* once every
//! member's vector covers it; stability frees the sender's log.
//!
//! # Status frames and the size of the group
//! Every member multicasts its status to every other, so a member receives `members − 1`
//! status frames per status interval. These measures keep what it costs per delivered message
//! from growing with the group (chosen by profile: before them, at 64 members with one sender
//! at 100 k msg/s, ~95 % of the receiver's protocol time was status processing — the entry
//! loop, `raise_ack`, `recompute_stable` — and 5 % the message path):
//! * **Sparse vectors.** A status frame carries only the entries that changed since the
//!   member's last *full* vector, as (rank, seq) pairs (`FRAME_FLAG_SPARSE_ACKS`); with one
//!   active sender that is one or two entries instead of `members`. Entries changed since the
//!   last full vector are repeated in every sparse frame, so a lost sparse frame is repaired by
//!   the next one. The full vector goes out when it is no larger than the pairs, in every
//!   retry and heartbeat (nothing changed) and every reply to `FRAME_FLAG_WANT_STATUS`, with
//!   a gbcast report, and at least every [`MemberConfig::status_full_ns`] while frames go out
//!   because acknowledgements keep changing — which bounds the repair of a lost *full* vector
//!   when nobody retries (every member's acknowledgements change, so nobody is in retry mode).
//!   A full vector too goes out as pairs when that is smaller: its *non-zero* entries (an
//!   entry left out is 0, which every receiver already holds, since acknowledgements start at
//!   0 and only rise), so with few active senders even the periodic full vectors, retries and
//!   heartbeats of a large group are a few pairs, not `members` entries. Only a frame with a
//!   gbcast report or decision carries the plain vector (the wire sizes those by it).
//! * **Incremental stability.** Per sender, the member counts the members holding the
//!   minimum acknowledgement (`stable_holders`); a raised entry that held it decrements the
//!   count and only the last one rescans the group. Lockstep acknowledgements cost O(1) per
//!   entry, amortised, instead of a scan per entry (O(members²) per status round). The
//!   majority point of stream 0 (`order_through`, for order records) is kept the same way:
//!   `order_above` counts the members holding more than it, and only the holding that makes
//!   that count a majority reselects the point (before, each raised stream-0 entry below the
//!   majority ran a selection over the group: half the receive cost of total order at 64
//!   members). The streams not yet stable are a bitmask, so the status timer does not scan
//!   the group after every datagram, and a receiver with nothing due leaves
//!   [`Member::poll_transmit`] at its first check.
//! * **Ask only when stalled.** A retry (a member that is unsettled but whose own
//!   acknowledgements did not change) sets `FRAME_FLAG_WANT_STATUS` only if some stream's
//!   stability did not move since its last status frame. A sender under steady traffic is
//!   always unsettled; before, its retries made every member answer with a full vector every
//!   [`MemberConfig::status_retry_ns`].
//! * **Spacing grows with the group** ([`MemberConfig::new`]: 100 µs per started 8 members),
//!   so the number of status frames a member receives per second stays about constant from 8
//!   members on; with O(1) frames that makes the status cost per second constant too.
//!
//! Measured (`engine/benches/protocol.rs`, one sender, BENCHMARKS.md "Receive cost vs group
//! size"; instructions per delivered message from callgrind, which the shared machine's load
//! does not move): 64 members against 3, at 100 k msg/s 1.63–1.72× (before these measures
//! 7–8×, before the majority count and pairs for full vectors 1.86–1.89×, total order
//! 3.5×), at 1 M msg/s (the `inproc` scenario's offered rate) 1.04–1.05×. What is left at
//! 100 k msg/s is the fixed cost of the frames themselves — 63 status frames per 800 µs, 0.77
//! per delivered message at this rate (parse, dispatch, one sparse pair, the
//! `poll_transmit`/`poll_deliver` calls that follow each datagram: ~430 instructions), against
//! 0.02 at 3 members; the status cost per second is fixed, so the ratio falls as the message
//! rate rises. Fewer frames is the next lever, not cheaper entries.
//!
//! Considered and not taken (yet): status spacing proportional to traffic (acknowledge every N
//! messages, as Totem/JGroups STABLE do) cannot cut enough here — each member still receives
//! `members − 1` frames per acknowledgement round, and rounds must come at least once per
//! half send window (256 messages by default) or the windows stall; aggregated stability (the
//! sequencer collects vectors and multicasts the minimum) makes non-sequencers' cost O(1) per
//! interval but leaves the O(members²) work on the sequencer, adds a hop to every safe
//! delivery and window opening, and changes the flow that NAK and tail-loss detection use —
//! the candidate for the next step, with acknowledgements on demand (members answer when a
//! sender's window fills or a safe message waits, instead of every interval).
//!
//! # Flow control
//! A sender holds at most [`MemberConfig::window_messages_max`] records and
//! [`MemberConfig::window_bytes_max`] payload bytes that are not both stable and delivered
//! locally; past that [`Member::send`] returns [`SendError::WouldBlock`] and an
//! [`Event::SendWindowOpen`] follows once room frees. Receivers hold at most
//! [`MemberConfig::log_messages_max`] records and about [`MemberConfig::holdback_bytes_max`]
//! bytes per sender (always room for the next record in sequence, so progress is never
//! blocked); a record that does not fit is dropped (counted) and not acknowledged, so the
//! sender's window stops it. Nothing is queued without bound.
//!
//! # Orders
//! Delivery is per sender in seq order (FIFO for every message); the record at the head of a
//! sender's stream is delivered when its conditions hold:
//! * **fifo**: none.
//! * **causal** (cbcast): the message carries the sender's *causal-past vector* (per member,
//!   the highest seq of that member's messages in the sender's causal past: what it delivered
//!   and, transitively, what those messages' senders had in their past); the receiver waits
//!   until its delivered counts dominate it. Happens-before runs through messages of *every*
//!   order (DESIGN §1: a→b with a fifo counts), so the vector must be transitive, and for that
//!   every record conveys its sender's causal past — but only where it *changed*: a vector
//!   record precedes the first record sent after a delivery, and the following records of the
//!   stream inherit it (in stream order, so retransmissions need no extra vectors). A burst of
//!   messages sent without deliveries in between costs one vector, whatever their order; a
//!   sender that only sends costs none after the first. Fifo messages never *wait* for their
//!   vector; they only pass it on. A causal message whose inherited vector was already found
//!   dominated costs O(1) to check.
//! * **total** (abcast): a **sequencer** — rank 0, the oldest member — orders total messages
//!   in its own delivery order (which already respects FIFO and causality: a total message
//!   carries a delivered-count vector like a causal one and is ordered only once its causal
//!   predecessors are delivered at the sequencer) and multicasts compact order entries
//!   (sender, first seq, count) as control records inside its own reliable FIFO stream, so
//!   NAKs, retransmission and stability are reused and the cost is bytes per *batch*. Control
//!   records are processed as soon as the sequencer's stream is contiguous (not at delivery),
//!   so the sequencer's own total messages never wait behind the order records that order
//!   them. Every member delivers a total message when it is at the head of its sender's
//!   stream, its vector is dominated, it is next in the order, and the order record that
//!   placed it is held by a *majority* of the view — the sequencer included. Without that last
//!   condition a sequencer cut off in a minority could deliver in an order the majority never
//!   learns and then decides differently in its flush (the simulator found it with a 2|3
//!   partition); with it, any record a member acted on is held by some member of every
//!   majority, so the flush cut includes it. The price is one status round trip of latency
//!   for total messages (acknowledgements travel in status frames anyway).
//!   *Why not Derecho-style round-robin with null messages?* Round-robin makes every member
//!   send (nulls) at the pace of the fastest sender and delivers at the pace of the slowest:
//!   with one active sender among 64, each round costs 63 null messages and every delivery
//!   waits for a message (or null) from every member — latency tied to the slowest member
//!   and cost growing with the group. The sequencer costs one order record per batch of total
//!   messages (12 B per run of one sender's messages) and one extra hop of latency for
//!   non-sequencers; its load is bytes, not payload relay. In a fixed view the sequencer never
//!   changes; its failure is handled by the view change (membership issue).
//! * **safe** (dynamically uniform, any order): delivered only once stable (received by every
//!   member), Totem's all-received-up-to idea applied per sender stream.
//! * **gbcast** (ordered against everything): a *round* per gbcast, run by the sequencer like
//!   a small flush. A member that holds an undelivered gbcast *freezes* (delivers nothing) and
//!   reports its delivered counts to the sequencer, in its status frames until a decision
//!   arrives. With every member's report for the round the sequencer picks one gbcast g (its
//!   own if it heads its stream, otherwise round-robin over ranks), computes the *cut* — per
//!   sender the most any member delivered, g's sender up to just before g, its own stream up
//!   to its next gbcast, and any total message it already ordered — and writes the decision
//!   (round, g, cut) as a control record into its stream. Every member then delivers exactly
//!   the cut (with the usual per-order rules: everything in it is deliverable, since some
//!   member delivered it or its causal past is in the reports), then g, then unfreezes. So all
//!   members deliver the same set before g. The cost is a round trip per gbcast and a pause
//!   of all deliveries during it: gbcast is for rare control messages (e.g. key rotation).
//!   Like order records, a decision takes effect (g is delivered) only once a majority holds
//!   its record. The sequencer also repeats the decision in its status frames while the round
//!   is under way and whenever a member still reports for it: a member frozen far behind
//!   cannot always store the decision record (its hold-back log is full of records it may not
//!   deliver yet), but it can always read a status frame. When a view ends, a decision known
//!   only from a status frame whose record lies beyond the view's cut is dropped: no survivor
//!   holds the record, so no majority did and nobody delivered by it; the round ends by the
//!   final rule everywhere (the simulator found one survivor applying it while another did
//!   not: `tools/tests/sim_ci.rs`, the gbcast regression). A view change ends any round (see
//!   "Ending a view").
//!
//! # Ending a view
//! The membership layer ends a view with a flush; the member offers the hooks:
//! * Receivers keep every record until it is both delivered and *stable* (not just
//!   delivered): if its sender fails, a record some member delivered is still held by every
//!   member that has not delivered it or by one that has, so the cut can be completed by
//!   relaying. NAKs name a stream, and a member holding another sender's records answers them
//!   (frames carry the stream owner's rank, with the retransmit flag).
//! * [`Member::stop`]: nothing new is appended (sends return [`SendError::ViewEnding`]; the
//!   sequencer assigns no order and decides no round; pending order entries are still
//!   written), and delivery pauses until the cut is known — a member must not deliver beyond
//!   what it reported holding (the simulator found a member delivering a message its report
//!   predated, which the cut then left out). [`Member::held_through`] then reports, per
//!   stream, what is held contiguously.
//! * [`Member::set_cut`]: per stream, the last record of this view and a member holding it;
//!   gaps below the cut are NAKed to that holder, records beyond it are never delivered and
//!   control records beyond it never applied (orphans of failed senders).
//! * [`Member::finish`]: every member of the next view holds the cut, so safe messages no
//!   longer wait for stability, order records and decisions no longer wait for a majority,
//!   and an undecided gbcast round stops holding back the other messages. Delivery runs to a
//!   fixpoint by the normal rules — the set reached is the same at every member, since it is
//!   the largest set closed under rules that depend only on what was delivered, not in which
//!   order — and then a deterministic *final rule* decides what is left, the same way
//!   everywhere: a decided gbcast round that cannot complete is forgotten; the gbcast at the
//!   head of the lowest rank is delivered; once the received total order is used up, the
//!   total message at the head of the lowest rank is; an order entry whose message cannot be
//!   delivered (its sender failed and its causal past is lost: nobody delivered it) is
//!   dropped; repeat. What remains are orphans. [`Member::is_finished`] says when the view is
//!   over.
//!
//! # Room for control records (sequencer)
//! The sequencer's control records share its log with its own messages, and a log frees in
//! seq order: control records written behind an own message that cannot be delivered yet
//! stay until it is. Three rules keep that from stalling the group (the simulator found the
//! stall with tiny logs, `sequencer_orders_its_own_head_when_its_log_is_full_of_order_records`):
//! 1. *Our own head is always orderable.* The last entry of the pending order record is kept
//!    for our own stream (other streams may fill it only up to
//!    [`MemberConfig::order_entries_per_record_max`] − 1 entries; ours merges into a last
//!    own entry), so assigning our own total head never waits for room.
//! 2. *Order entries take effect once a majority holds them* (see "Ending a view"): even the
//!    sequencer delivers a total message only after the record with its entry is written and
//!    held by a majority, so no delivered record ever waits for a pending entry, and
//!    delivered, stable records are freed at once.
//! 3. *The last slots of our log are for records that drain it.* An ordinary order record
//!    leaves [`CONTROL_SLOTS_RESERVED`] slots free; an order record holding an entry for our
//!    own stream and a gbcast decision may take them. Each reserved slot taken is paid back
//!    by freeing without any further write (our head is delivered once the record is held by
//!    a majority; the decision unfreezes our head), so they are never all taken while our
//!    head waits for one.
//!
//! # Known limits
//! * The sequencer's own head can wait for other senders' total messages (causally, through a
//!   fifo message that passed their past on); ordering those takes ordinary order records,
//!   which stop when only the reserved slots are left. Rules 1–3 do not exclude that the log
//!   fills with ordinary order records behind such a head; the simulator (tiny logs, every
//!   order mixed, loss) has not produced it.
//! * Status frames are all-to-all: each member receives `members − 1` status frames per status
//!   interval (sparse and O(1) each with few active senders; with every member sending, every
//!   entry changes and the vectors are full: O(members) per frame again).
//! * Delivery always copies the payload into the log (no in-place delivery from the receive
//!   buffer yet).
//!
//! # What it trusts
//! Datagrams are untrusted: malformed frames, foreign group/view ids, unknown ranks, vectors
//! of the wrong size and impossible values are counted ([`MemberStats`]) and dropped, never a
//! panic. Authenticity (MAC) is a later issue; until then members trust each other's values
//! (within bounds they can check).

mod stream;
#[cfg(test)]
mod tests;

use crate::trace::{msg_id, TraceEvent};
use crate::wire::{
    self, entry, Frame, FrameFields, FrameKind, FramePacker, Item, SeqRange, CONTROL_DECISION,
    CONTROL_ORDER, FRAME_FLAG_DECISION, FRAME_FLAG_REPORT, FRAME_FLAG_RETRANSMIT,
    FRAME_FLAG_WANT_STATUS, FRAME_HEADER_BYTES, RECORD_FLAG_BUNDLE, RECORD_FLAG_CONTROL,
    RECORD_FLAG_SAFE, RECORD_HEADER_BYTES, RECORD_ORDER_MASK, SEQ_RANGE_BYTES, VECTOR_ENTRY_BYTES,
};
use crate::Order;
use std::collections::VecDeque;
use stream::{RecordPayload, Stream};

/// Largest group: a status frame with a gbcast report (two vectors of this size) must fit a
/// 1472 B datagram.
pub const MEMBERS_MAX: usize = 64;
// The unsettled streams are one bit each of a u64 (`Member::unsettled_mask`).
const _: () = assert!(MEMBERS_MAX <= u64::BITS as usize);
/// While a stream's gap does not shrink, each NAK round doubles the retry spacing, at most
/// this many times (2 ms → 64 ms with the defaults).
pub const NAK_BACKOFF_DOUBLINGS_MAX: u32 = 5;
/// Most NAK ranges per NAK frame (and per stream per NAK round).
pub const NAK_RANGES_PER_FRAME_MAX: usize = 32;
/// Most pending retransmission requests (one per NAK range received); more are dropped and
/// NAKed again by their requester.
pub const RETRANSMIT_REQUESTS_MAX: usize = 1024;
/// Most total-order entries (runs of one sender's total messages) ordered but not delivered.
pub const TOTAL_ORDER_ENTRIES_MAX: usize = 8192;
/// Records of a sender's log kept for the sequencer's order records beyond the app window.
pub const CONTROL_RECORDS_RESERVE: usize = 8;
/// Free slots of the sequencer's own log that an ordinary order record may not take: they are
/// kept for the records the sequencer's own stream needs to drain (an order record that lets
/// delivered own records be freed, a gbcast decision). See "Room for control records".
pub const CONTROL_SLOTS_RESERVED: u64 = 2;

/// Default least spacing of status frames, per started group of 8 members.
pub const STATUS_INTERVAL_NS_PER_8_MEMBERS: u64 = 100_000;

/// A point in time, in nanoseconds since an arbitrary origin (virtual or monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);
    pub fn from_nanos(ns: u64) -> Time {
        Time(ns)
    }
    pub fn as_nanos(self) -> u64 {
        self.0
    }
    pub fn plus_nanos(self, ns: u64) -> Time {
        Time(self.0.saturating_add(ns))
    }
}

/// The sender's per-group sequence number of an application message (1, 2, 3, …; the `SEQ`
/// of trace message ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

/// Configuration of one member in one view.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    /// Group id on the wire.
    pub group: u32,
    /// Group name (trace files).
    pub group_name: String,
    pub view: u64,
    /// Member ids by rank, oldest first (rank 0 is the sequencer).
    pub members: Vec<String>,
    pub rank: u16,
    /// Largest datagram produced.
    pub datagram_bytes_max: usize,
    /// Send window: records not yet both stable and delivered locally.
    pub window_messages_max: usize,
    /// Send window: payload bytes of those records.
    pub window_bytes_max: usize,
    /// Slots of each sender's log (power of two, > window_messages_max + reserve).
    pub log_messages_max: usize,
    /// Hold-back payload bytes per sender at a receiver (plus one record in sequence).
    pub holdback_bytes_max: usize,
    /// Least spacing of status frames when the acknowledgement vector changed.
    pub status_interval_ns: u64,
    /// Status spacing while something is unstable and nothing changed.
    pub status_retry_ns: u64,
    /// Longest spacing of full acknowledgement vectors while status frames go out because
    /// acknowledgements changed (those carry only the entries that changed since the last
    /// full vector; see "Status frames" in the module docs).
    pub status_full_ns: u64,
    /// Status spacing when everything is stable (heartbeat).
    pub heartbeat_ns: u64,
    /// How long a gap may stay before its first NAK (tolerates reordering).
    pub nak_delay_ns: u64,
    /// NAK spacing per stream while a gap lasts.
    pub nak_retry_ns: u64,
    /// Record trace events (off by default: it allocates per event).
    pub trace: bool,
    /// Sequencer: most order entries per order record (capped at what fits a datagram; the
    /// default is that cap). Small values exercise the bound in the simulator.
    pub order_entries_per_record_max: usize,
    /// Per rank: application messages that member sent in the group's earlier views, so that
    /// sequence numbers ([`Seq`], trace ids) continue across views. Empty means all zero.
    pub app_seq_base: Vec<u64>,
    /// The caller drops its own bundles' deliveries (the runtime's `discard_own_messages`:
    /// a bundle holds plain messages only). A bundle this member sends is then delivered at
    /// once when it is deliverable as it is appended — the head of our stream, nothing
    /// blocking it — and [`Member::poll_deliver`] never hands it out; its messages are
    /// counted by [`Member::take_discarded_own`]. Trace events are as without.
    pub discard_own_bundles: bool,
    /// Breaks the protocol on purpose (tests that prove a suite can fail): NAKs are ignored,
    /// nothing is retransmitted.
    #[doc(hidden)]
    pub testing_skip_retransmit: bool,
}

impl MemberConfig {
    /// Defaults for a LAN: 1472 B datagrams, 256-message / 256 KiB windows, status frames at
    /// most every 100 µs per 8 members (every member receives every other's status: the
    /// status cost per member grows with the square of the group, so its rate is scaled down
    /// as the group grows).
    pub fn new(group_name: &str, group: u32, view: u64, members: Vec<String>, rank: u16) -> Self {
        let status_interval_ns =
            STATUS_INTERVAL_NS_PER_8_MEMBERS * members.len().div_ceil(8) as u64;
        MemberConfig {
            group,
            group_name: group_name.to_owned(),
            view,
            members,
            rank,
            datagram_bytes_max: 1472,
            window_messages_max: 256,
            window_bytes_max: 256 << 10,
            log_messages_max: 512,
            holdback_bytes_max: 256 << 10,
            status_interval_ns,
            status_retry_ns: 2_000_000,
            status_full_ns: 10_000_000,
            heartbeat_ns: 100_000_000,
            nak_delay_ns: 200_000,
            nak_retry_ns: 2_000_000,
            trace: false,
            order_entries_per_record_max: usize::MAX,
            app_seq_base: Vec::new(),
            discard_own_bundles: false,
            testing_skip_retransmit: false,
        }
    }

    /// Largest payload [`Member::send`] accepts: a data frame must hold it with its vector
    /// record (the ack vector is only piggybacked when there is room).
    pub fn payload_bytes_max(&self) -> usize {
        self.datagram_bytes_max
            .saturating_sub(FRAME_HEADER_BYTES + 2 * RECORD_HEADER_BYTES)
            .saturating_sub(self.members.len() * VECTOR_ENTRY_BYTES)
            .min(wire::RECORD_PAYLOAD_BYTES_MAX)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("send window full: retry after Event::SendWindowOpen")]
    WouldBlock,
    #[error("payload of {len} B exceeds the maximum of {max} B")]
    TooLarge { len: usize, max: usize },
    /// The view is ending (a view change is under way): the membership layer holds the
    /// message for the next view.
    #[error("the view is ending: send in the next view")]
    ViewEnding,
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    /// Every other member (multicast or fan-out).
    Group,
    /// One member, by rank.
    Member(u16),
}

/// A datagram written into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub dest: Dest,
    pub len: usize,
}

/// A delivered record, borrowing the member's log until the next call: one application
/// message, or a bundle of them ([`Member::send_bundle`]) delivered together. Read the
/// messages with [`Delivery::messages`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery<'a> {
    pub sender: u16,
    /// The sequence number of the (first) message.
    pub seq: Seq,
    pub order: Order,
    pub safe: bool,
    pub view: u64,
    /// How many messages the record holds (1 unless bundled).
    pub count: u16,
    /// The record's payload: the message itself, or with `count` > 1 the bundle (see
    /// [`crate::wire::bundle_messages`]).
    pub body: &'a [u8],
    bundled: bool,
}

impl<'a> Delivery<'a> {
    /// Whether the record is a bundle (of plain messages only).
    pub fn is_bundle(&self) -> bool {
        self.bundled
    }

    /// The record's messages in order, each with its sequence number.
    pub fn messages(&self) -> impl Iterator<Item = (Seq, &'a [u8])> + 'a {
        let first = self.seq.0;
        let (one, many) = if self.bundled {
            (None, Some(wire::bundle_messages(self.body)))
        } else {
            (Some(self.body), None)
        };
        one.into_iter()
            .chain(many.into_iter().flatten())
            .enumerate()
            .map(move |(i, m)| (Seq(first + i as u64), m))
    }
}

/// Application messages gathered for one record ([`Member::send_bundle`]): a count, then each
/// message with its u16 length. Reused across sends (the member hands back a buffer).
#[derive(Debug, Default)]
pub struct Bundle {
    bytes: Vec<u8>,
    count: u16,
}

impl Bundle {
    pub fn new() -> Bundle {
        Bundle::default()
    }

    /// Messages in the bundle.
    pub fn count(&self) -> u16 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The record payload's size so far.
    pub fn bytes(&self) -> usize {
        if self.count == 0 {
            0
        } else {
            self.bytes.len()
        }
    }

    /// The record payload's size with one more message of `len` bytes.
    pub fn bytes_with(&self, len: usize) -> usize {
        self.bytes().max(wire::BUNDLE_HEADER_BYTES) + wire::BUNDLE_ENTRY_HEADER_BYTES + len
    }

    /// Appends `message` unless that would make the payload larger than `bytes_max` (a
    /// member's [`MemberConfig::payload_bytes_max`]) or the count overflow: false then, and
    /// nothing changed.
    pub fn push(&mut self, message: &[u8], bytes_max: usize) -> bool {
        if self.bytes_with(message.len()) > bytes_max || self.count == u16::MAX {
            return false;
        }
        if self.count == 0 {
            self.bytes.clear();
            self.bytes.extend_from_slice(&[0, 0]);
        }
        self.bytes
            .extend_from_slice(&(message.len() as u16).to_le_bytes());
        self.bytes.extend_from_slice(message);
        self.count += 1;
        self.bytes[..wire::BUNDLE_HEADER_BYTES].copy_from_slice(&self.count.to_le_bytes());
        true
    }

    /// Appends the `count` messages of `entries`, a bundle's entries in the wire format
    /// (each message with its u16 length, as after a bundle's count: what
    /// [`wire::bundle_count`] accepts behind a count), with one copy, unless the payload would
    /// grow past `bytes_max` or the count overflow: false then, and nothing changed.
    /// `entries` are trusted to be well formed (they are the caller's own, e.g. the runtime's
    /// send stage or publisher ring; walking them to check would cost as much as the copy).
    pub fn extend_entries(&mut self, count: u16, entries: &[u8], bytes_max: usize) -> bool {
        let bytes = self.bytes().max(wire::BUNDLE_HEADER_BYTES) + entries.len();
        if count == 0
            || bytes > bytes_max
            || u32::from(self.count) + u32::from(count) > u32::from(u16::MAX)
        {
            return false;
        }
        if self.count == 0 {
            self.bytes.clear();
            self.bytes.extend_from_slice(&[0, 0]);
        }
        self.bytes.extend_from_slice(entries);
        self.count += count;
        self.bytes[..wire::BUNDLE_HEADER_BYTES].copy_from_slice(&self.count.to_le_bytes());
        true
    }

    pub fn clear(&mut self) {
        self.count = 0;
        self.bytes.clear();
    }

    /// The messages, in order.
    pub fn messages(&self) -> wire::BundleMessages<'_> {
        wire::bundle_messages(if self.count == 0 { &[] } else { &self.bytes })
    }
}

/// Things the application may want to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The send window has room again after a [`SendError::WouldBlock`].
    SendWindowOpen,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberStats {
    pub sent: u64,
    pub delivered: u64,
    pub datagrams_sent: u64,
    pub data_frames_sent: u64,
    pub status_frames_sent: u64,
    pub nak_frames_sent: u64,
    /// NAK frames (retransmission requests) other members sent to this one.
    pub nak_frames_received: u64,
    pub records_retransmitted: u64,
    pub datagrams_received: u64,
    pub records_received: u64,
    pub duplicates_received: u64,
    pub would_block: u64,
    /// Malformed datagrams or records (wire errors, impossible values).
    pub dropped_malformed: u64,
    /// Datagrams of another group or view, or from an unknown rank or from ourselves.
    pub dropped_foreign: u64,
    /// Records that did not fit the hold-back area (not acknowledged; NAKed later).
    pub dropped_holdback_full: u64,
    /// Retransmission requests dropped because the request queue was full.
    pub dropped_retransmit_requests: u64,
}

/// Why the head of a stream cannot be delivered now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blocked {
    /// Not received (or not yet processed).
    Missing,
    /// Waiting for deliveries from other senders (vector not dominated).
    Causal,
    /// Waiting for its place in the total order.
    Total,
    /// Waiting for stability.
    Safe,
    /// A gbcast round is under way and this message is not in its cut.
    Frozen,
}

enum Head {
    Deliver,
    Skipped,
    Blocked(Blocked),
}

/// What [`Member::take_head`] delivered: the record and its application numbers.
struct DeliveredHead {
    seq: u64,
    flags: u16,
    count: u16,
    /// The first application message's number in the view (without `seq_base`).
    first_app: u64,
    seq_base: u64,
}

/// A run of one sender's total messages in the total order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OrderEntry {
    rank: u16,
    remaining: u64,
    /// The stream-0 record that carries the entry ([`ORDER_RECORD_PENDING`] at the sequencer
    /// until written): the entry takes effect once a majority holds that record.
    record: u64,
}

/// [`OrderEntry::record`] of an entry the sequencer assigned but has not written yet.
const ORDER_RECORD_PENDING: u64 = u64::MAX;

/// Record flags of an application message.
fn record_flags(order: Order, safe: bool) -> u16 {
    let o = match order {
        Order::Fifo => 0,
        Order::Causal => 1,
        Order::Total => 2,
        Order::Gbcast => 3,
    };
    o | if safe { RECORD_FLAG_SAFE } else { 0 }
}

fn order_of(flags: u16) -> Order {
    match flags & RECORD_ORDER_MASK {
        0 => Order::Fifo,
        1 => Order::Causal,
        2 => Order::Total,
        _ => Order::Gbcast,
    }
}

fn is_total(flags: u16) -> bool {
    flags & RECORD_FLAG_CONTROL == 0 && flags & RECORD_ORDER_MASK == 2
}

fn is_gbcast(flags: u16) -> bool {
    flags & RECORD_FLAG_CONTROL == 0 && flags & RECORD_ORDER_MASK == 3
}

fn is_safe(flags: u16) -> bool {
    flags & RECORD_FLAG_SAFE != 0
}

/// u64 LE entries of a control record's payload (length validated by the parser).
fn u64_entries(payload: &[u8]) -> impl Iterator<Item = u64> + '_ {
    payload
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
}

/// A gbcast round as one member sees it: frozen since it learned of an undelivered gbcast;
/// once the sequencer's decision arrives, it delivers up to the cut, then the gbcast.
#[derive(Clone, Debug)]
struct Freeze {
    round: u64,
    cut: Option<Cut>,
}

#[derive(Clone, Debug)]
struct Cut {
    /// The gbcast: its sender and (application) seq.
    sender: usize,
    seq: u64,
    /// The stream-0 record of the decision: the gbcast is delivered once a majority holds it.
    record: u64,
    /// Per rank: application messages delivered before the gbcast.
    counts: Vec<u64>,
}

/// One member of one group in one view.
pub struct Member {
    cfg: MemberConfig,
    n: usize,
    me: usize,
    now: Time,
    streams: Vec<Stream>,
    /// `acks[s * n + m]`: member m holds s's stream contiguously through this seq (entry `me`
    /// unused: our own is `streams[s].contiguous`). Stored per stream, so that stability and
    /// the majority point scan one contiguous column.
    acks: Vec<u64>,
    /// Per sender: seqs through this are held by every member.
    stable: Vec<u64>,
    /// Per sender s: how many members m ≠ us have `acks[m][s] == stable[s]` (the holders of
    /// the minimum). Acks only rise, so the minimum can only move once this reaches 0 (or our
    /// own row, when it is the minimum, advances): stability costs O(1) per raised entry,
    /// amortised, not a scan of the group. Set by `recompute_stable`.
    stable_holders: Vec<u32>,
    /// Own stream: records through this seq were transmitted (as new data).
    tx_through: u64,
    /// Own app messages sent.
    app_sent: u64,
    /// Our causal past: per member, the highest seq of its messages in it.
    knowledge: Vec<u64>,
    /// The causal past changed since our last record with a vector.
    knowledge_changed: bool,
    /// Per sender: the vector in force at its stream's delivery point (inherited by records
    /// without one), and whether our delivered counts were found to dominate it.
    current_vector: Vec<Vec<u64>>,
    current_vector_dominated: Vec<bool>,
    /// Streams whose head may be deliverable (stack) and membership flags.
    dirty: Vec<u16>,
    in_dirty: Vec<bool>,
    /// Streams blocked on causal predecessors (re-examined after any delivery).
    causal_waiters: Vec<u16>,
    in_causal_waiters: Vec<bool>,
    /// Total order: runs of senders' total messages, in order, not yet delivered here.
    total_order: VecDeque<OrderEntry>,
    /// Sequencer: order entries not yet written into a control record.
    order_pending: Vec<SeqRange>,
    order_entries_per_record_max: usize,
    /// Sequencer: a stream could not be ordered for lack of room.
    order_blocked: bool,
    /// Retransmission requests: (to, stream, first seq, count).
    retransmits: VecDeque<(u16, u16, u64, u64)>,
    acks_dirty: bool,
    /// Bit s: stream s is not stable through its highest known seq (our own: through our
    /// last appended record) — what `unsettled` and `stability_stalled` look at, kept by
    /// `note_settled` wherever `stable`, a stream's `high` or our own `contiguous` moves, so
    /// that the status timer does not scan the group on every call.
    unsettled_mask: u64,
    status_requested: bool,
    last_status: Time,
    /// `stable` when our last status frame went out (see `stability_stalled`).
    stable_at_last_status: Vec<u64>,
    /// Our acknowledgement vector as of our last full status vector (sparse status frames
    /// carry the entries that differ from it), and when that went out.
    acks_full_sent: Vec<u64>,
    last_full_status: Time,
    nak_next: Time,
    window_blocked: bool,
    window_open_event: bool,
    gaps_scratch: Vec<(u64, u64)>,
    /// gbcast: records held and not yet delivered, completed rounds, the current round.
    gbcast_undelivered: u64,
    gbcast_rounds: u64,
    freeze: Option<Freeze>,
    /// Sequencer: the rank from which the next gbcast is looked for (round-robin fairness).
    gbcast_next_rank: usize,
    /// Sequencer: the latest report of each member (round, delivered counts).
    reports: Vec<Option<(u64, Vec<u64>)>>,
    /// Sequencer: the latest decision (round, gbcast sender, record seq, cut), repeated in
    /// status frames while the round is under way here or someone still reports for it — a
    /// frozen member whose log cannot reach the decision record gets it that way.
    last_decision: Option<(u64, u64, u64, Vec<u64>)>,
    decision_requested: bool,
    trace: Option<Vec<TraceEvent>>,
    stats: MemberStats,
    /// Whether our bundles are delivered at send time and not handed out (from
    /// [`MemberConfig::discard_own_bundles`], then [`Member::set_discard_own_bundles`]).
    discard_own_bundles: bool,
    /// Our own messages delivered at send time and not handed out, since the last
    /// [`Member::take_discarded_own`].
    own_discarded: u64,
    /// Stream 0 (the sequencer's) is held through this seq by a majority of the view: order
    /// records and gbcast decisions take effect only there (see "Ending a view").
    order_through: u64,
    /// How many members (us included) hold stream 0 beyond `order_through`: always fewer
    /// than a majority, since the majority point would be further otherwise. A holding that
    /// passes `order_through` counts one; only the one that makes a majority recomputes the
    /// point (O(members)), so lockstep acknowledgements cost O(1) per entry, amortised,
    /// instead of a selection per raised entry.
    order_above: u32,
    order_scratch: Vec<u64>,
    /// Sequencer: per stream, the causal-past vector in force at its `ordered_through`
    /// record, when known (so `order_ahead` resumes without rescanning the stream).
    ahead_vectors: Vec<Vec<u64>>,
    ahead_known: Vec<bool>,
    /// Per rank: `cfg.app_seq_base` (zeros if it was empty).
    seq_base: Vec<u64>,
    /// Per rank: when a frame of that member last arrived (failure detection).
    last_heard: Vec<Time>,
    /// The view is ending: nothing new is appended to our stream (see "Ending a view").
    stopped: bool,
    /// Per stream: the flush cut; records beyond it are never delivered in this view.
    limit: Option<Vec<u64>>,
    /// Per stream: whom its gaps are NAKed to (the sender, or a member holding the cut).
    nak_target: Vec<u16>,
    /// Delivering the cut by the final rules (the view's last deliveries).
    finishing: bool,
    /// Finishing: every stream was re-examined since the last delivery.
    finish_swept: bool,
    /// Finishing: the stream whose head (a gbcast, or a total message no order record
    /// covers) is delivered by the deterministic final rule.
    forced: Option<usize>,
    /// Finishing: everything deliverable of the cut was delivered; the view is over.
    finished: bool,
}

/// What the final rule does next once normal delivery is stuck (see "Ending a view").
enum FinishStep {
    Deliver(usize),
    Resweep,
    Done,
}

impl Member {
    /// A member of `cfg.members` at `cfg.rank`. Panics on an invalid configuration (a
    /// programming error, not input).
    pub fn new(cfg: MemberConfig, now: Time) -> Member {
        let n = cfg.members.len();
        assert!((1..=MEMBERS_MAX).contains(&n), "group of {n} members");
        assert!(
            (cfg.rank as usize) < n,
            "rank {} outside the view",
            cfg.rank
        );
        assert!(cfg.log_messages_max.is_power_of_two());
        assert!(cfg.window_messages_max + CONTROL_RECORDS_RESERVE <= cfg.log_messages_max);
        assert!(
            cfg.payload_bytes_max() >= 1,
            "datagrams too small for {n} members"
        );
        assert!(cfg.window_bytes_max >= cfg.payload_bytes_max());
        assert!(
            cfg.datagram_bytes_max >= FRAME_HEADER_BYTES + (2 * n + 3) * VECTOR_ENTRY_BYTES,
            "datagrams too small for status frames of {n} members"
        );
        let order_entries_per_record_max =
            ((cfg.datagram_bytes_max - FRAME_HEADER_BYTES - RECORD_HEADER_BYTES) / SEQ_RANGE_BYTES)
                .min(u16::MAX as usize)
                .min(cfg.order_entries_per_record_max);
        // One entry of the pending order record is kept for the sequencer's own stream.
        assert!(
            order_entries_per_record_max >= 2,
            "order records of at least 2 entries"
        );
        assert!(TOTAL_ORDER_ENTRIES_MAX > n);
        let me = cfg.rank as usize;
        assert!(
            cfg.app_seq_base.is_empty() || cfg.app_seq_base.len() == n,
            "app_seq_base of {} entries for {n} members",
            cfg.app_seq_base.len()
        );
        let seq_base = if cfg.app_seq_base.is_empty() {
            vec![0; n]
        } else {
            cfg.app_seq_base.clone()
        };
        let trace = cfg.trace.then(|| {
            vec![TraceEvent::View {
                node: cfg.members[me].clone(),
                group: cfg.group_name.clone(),
                view: cfg.view,
                members: cfg.members.clone(),
            }]
        });
        Member {
            n,
            me,
            now,
            streams: (0..n)
                .map(|r| Stream::new(cfg.log_messages_max, r == me))
                .collect(),
            acks: vec![0; n * n],
            stable: vec![0; n],
            stable_holders: vec![n as u32 - 1; n],
            tx_through: 0,
            app_sent: 0,
            knowledge: vec![0; n],
            knowledge_changed: false,
            current_vector: vec![vec![0; n]; n],
            current_vector_dominated: vec![true; n],
            dirty: Vec::with_capacity(n),
            in_dirty: vec![false; n],
            causal_waiters: Vec::with_capacity(n),
            in_causal_waiters: vec![false; n],
            total_order: VecDeque::with_capacity(64),
            order_pending: Vec::with_capacity(order_entries_per_record_max),
            order_entries_per_record_max,
            order_blocked: false,
            retransmits: VecDeque::with_capacity(64),
            acks_dirty: false,
            unsettled_mask: 0,
            status_requested: false,
            last_status: now,
            stable_at_last_status: vec![0; n],
            acks_full_sent: vec![0; n],
            last_full_status: now,
            nak_next: Time(u64::MAX),
            window_blocked: false,
            window_open_event: false,
            gaps_scratch: Vec::with_capacity(NAK_RANGES_PER_FRAME_MAX),
            gbcast_undelivered: 0,
            gbcast_rounds: 0,
            freeze: None,
            gbcast_next_rank: 0,
            reports: vec![None; n],
            last_decision: None,
            decision_requested: false,
            trace,
            stats: MemberStats::default(),
            discard_own_bundles: cfg.discard_own_bundles,
            own_discarded: 0,
            order_through: 0,
            order_above: 0,
            order_scratch: Vec::with_capacity(n),
            ahead_vectors: vec![Vec::new(); n],
            ahead_known: vec![false; n],
            seq_base,
            last_heard: vec![now; n],
            stopped: false,
            limit: None,
            nak_target: (0..n as u16).collect(),
            finishing: false,
            finish_swept: false,
            forced: None,
            finished: false,
            cfg,
        }
    }

    pub fn config(&self) -> &MemberConfig {
        &self.cfg
    }

    pub fn rank(&self) -> u16 {
        self.me as u16
    }

    pub fn stats(&self) -> MemberStats {
        self.stats
    }

    fn is_sequencer(&self) -> bool {
        self.me == 0
    }

    /// Takes the trace events recorded so far (empty unless `cfg.trace`).
    pub fn take_trace(&mut self) -> Vec<TraceEvent> {
        match &mut self.trace {
            Some(t) => std::mem::take(t),
            None => Vec::new(),
        }
    }

    /// Own stream: seq of the last record appended (application messages and, at the
    /// sequencer, order records). A flush waits until [`Member::own_stable_through`] reaches it.
    pub fn own_appended_through(&self) -> u64 {
        self.streams[self.me].contiguous
    }

    /// Own stream: records through this seq are held by every member (stable).
    pub fn own_stable_through(&self) -> u64 {
        self.stable[self.me]
    }

    /// Per sender: messages delivered here (application messages only).
    pub fn delivered_counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.streams.iter().map(|s| s.delivered_app)
    }

    /// Whether every record this member knows of is stable, delivered, and nothing is
    /// waiting to go out (a quiet member).
    pub fn is_settled(&self) -> bool {
        self.tx_through == self.streams[self.me].contiguous
            && self.retransmits.is_empty()
            && self.order_pending.is_empty()
            && (0..self.n).all(|s| {
                let st = &self.streams[s];
                self.stable[s] >= st.high && st.delivered >= st.high
            })
    }

    /// A one-line description of the member's delivery state (for failure reports).
    pub fn debug_summary(&self) -> String {
        let streams: Vec<String> = self
            .streams
            .iter()
            .enumerate()
            .map(|(s, st)| {
                let head = st.delivered + 1;
                let flags = if head <= st.contiguous && st.has(head) {
                    st.slot(head).flags
                } else {
                    u16::MAX
                };
                format!(
                    "{s}:d{}/a{}/c{}/h{}/st{}/b{}/o{}/f{flags:x}",
                    st.delivered,
                    st.delivered_app,
                    st.contiguous,
                    st.high,
                    self.stable[s],
                    st.base,
                    st.ordered_through
                )
            })
            .collect();
        format!(
            "rank {} pending {} order_blocked {} freeze {:?} rounds {} gbcast_undelivered {} report_needed {:?} reports {:?} total_order {:?} dirty {:?} streams [{}]",
            self.me,
            self.order_pending.len(),
            self.order_blocked,
            self.freeze,
            self.gbcast_rounds,
            self.gbcast_undelivered,
            self.report_needed(),
            self.reports.iter().map(|r| r.as_ref().map(|(round, c)| (*round, c.clone()))).collect::<Vec<_>>(),
            self.total_order.iter().take(4).collect::<Vec<_>>(),
            self.dirty,
            streams.join(" ")
        )
    }

    // ----------------------------------------------------------------------------------------
    // Sending

    /// Multicasts `payload` with `order` (and safe delivery if `safe`). The message is
    /// delivered locally too (poll it with [`Member::poll_deliver`]).
    pub fn send(
        &mut self,
        now: Time,
        order: Order,
        safe: bool,
        payload: &[u8],
    ) -> Result<Seq, SendError> {
        self.send_record(now, order, safe, RecordPayload::Copy(payload), 1)
    }

    /// Sends the messages of `bundle` as one record: they get consecutive sequence numbers
    /// and are delivered together and in order everywhere, which every order allows (they are
    /// one sender's consecutive messages with one causal past), while the record's costs —
    /// log slot, acknowledgement, ordering, delivery bookkeeping — are paid once for all of
    /// them. Returns the *last* message's number. On success the bundle is empty (its buffer
    /// was swapped with a log slot's); on an error it is untouched. A bundle of one message
    /// goes out as a plain record. Panics if `order` is gbcast or the bundle is empty (never
    /// bundled / nothing to send: programming errors).
    pub fn send_bundle(
        &mut self,
        now: Time,
        order: Order,
        safe: bool,
        bundle: &mut Bundle,
    ) -> Result<Seq, SendError> {
        assert!(order != Order::Gbcast, "gbcast is never bundled");
        assert!(!bundle.is_empty(), "an empty bundle");
        let count = bundle.count;
        let result = if count == 1 {
            let one = &bundle.bytes[wire::BUNDLE_HEADER_BYTES + wire::BUNDLE_ENTRY_HEADER_BYTES..];
            self.send_record(now, order, safe, RecordPayload::Copy(one), 1)
        } else {
            self.send_record(
                now,
                order,
                safe,
                RecordPayload::Move(&mut bundle.bytes),
                count,
            )
        };
        if result.is_ok() {
            bundle.clear();
        }
        result
    }

    /// [`Member::send`] without the copy: the bytes of `payload` move into the log. On success
    /// `payload` holds a buffer the log freed instead (cleared, its capacity kept: the slot's
    /// previous one, or one freed more recently) for the caller to reuse; on an error it is
    /// untouched.
    pub fn send_owned(
        &mut self,
        now: Time,
        order: Order,
        safe: bool,
        payload: &mut Vec<u8>,
    ) -> Result<Seq, SendError> {
        self.send_record(now, order, safe, RecordPayload::Move(payload), 1)
    }

    /// Appends a record of `count` application messages (a bundle if more than one).
    fn send_record(
        &mut self,
        now: Time,
        order: Order,
        safe: bool,
        payload: RecordPayload<'_>,
        count: u16,
    ) -> Result<Seq, SendError> {
        self.now = self.now.max(now);
        if self.stopped {
            return Err(SendError::ViewEnding);
        }
        let max = self.cfg.payload_bytes_max();
        if payload.len() > max {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let me = self.me;
        let own = &self.streams[me];
        let seq = own.contiguous + 1;
        if (seq - own.base) as usize >= self.cfg.window_messages_max
            || own.bytes + payload.len() > self.cfg.window_bytes_max
        {
            self.stats.would_block += 1;
            self.window_blocked = true;
            return Err(SendError::WouldBlock);
        }
        let mut flags = record_flags(order, safe);
        if count > 1 {
            flags |= RECORD_FLAG_BUNDLE;
        }
        self.append_own_record(flags, payload);
        let first = self.app_sent + 1;
        self.app_sent += count as u64;
        if order == Order::Gbcast {
            self.gbcast_undelivered += 1;
            self.maybe_freeze();
        }
        self.stats.sent += count as u64;
        if let Some(t) = &mut self.trace {
            let node = &self.cfg.members[me];
            for app in first..=self.app_sent {
                t.push(TraceEvent::Send {
                    node: node.clone(),
                    group: self.cfg.group_name.clone(),
                    view: self.cfg.view,
                    msg: msg_id(node, self.seq_base[me] + app),
                    order,
                    safe,
                });
            }
        }
        if count > 1 && self.discard_own_bundles {
            self.discard_own_bundle(seq);
        }
        Ok(Seq(self.seq_base[me] + self.app_sent))
    }

    /// With [`MemberConfig::discard_own_bundles`]: delivers our bundle record `seq`, just
    /// appended, at once and without handing it out, when it is our stream's head and
    /// [`Member::examine_head`] finds it deliverable now — what [`Member::poll_deliver`]
    /// would do with it next, for a caller that would drop the delivery. Otherwise it waits
    /// for `poll_deliver` as any record does.
    fn discard_own_bundle(&mut self, seq: u64) {
        let me = self.me;
        if self.finishing || self.forced.is_some() || self.streams[me].delivered + 1 != seq {
            return;
        }
        if !matches!(self.examine_head(me), Head::Deliver) {
            return; // still marked dirty: `poll_deliver` examines it again
        }
        let head = self.take_head(me, false);
        self.own_discarded += u64::from(head.count);
        // Examining our stream now would only find its next record missing: drop its mark
        // if it is the last one set.
        let st = &self.streams[me];
        if st.delivered + 1 > st.control_done && self.dirty.last() == Some(&(me as u16)) {
            self.dirty.pop();
            self.in_dirty[me] = false;
        }
    }

    /// Turns [`MemberConfig::discard_own_bundles`] on or off for the sends that follow (the
    /// membership layer turns it off while it holds deliveries back, around a state
    /// transfer).
    pub fn set_discard_own_bundles(&mut self, on: bool) {
        self.discard_own_bundles = on;
    }

    /// How many of our own messages were delivered at send time and not handed out since the
    /// last call ([`MemberConfig::discard_own_bundles`]).
    pub fn take_discarded_own(&mut self) -> u64 {
        std::mem::take(&mut self.own_discarded)
    }

    /// Appends a record to our own stream (it is received and contiguous at once).
    fn append_own(&mut self, flags: u16, payload: &[u8]) {
        self.append_own_record(flags, RecordPayload::Copy(payload));
    }

    fn append_own_record(&mut self, flags: u16, payload: RecordPayload<'_>) {
        let me = self.me;
        let with_vector = self.knowledge_changed && flags & RECORD_FLAG_CONTROL == 0;
        let own = &mut self.streams[me];
        let seq = own.contiguous + 1;
        debug_assert!(own.in_window(seq));
        let slot = own.store(seq, flags, payload);
        if with_vector {
            slot.has_vector = true;
            slot.vector.clear();
            slot.vector.extend_from_slice(&self.knowledge);
            slot.vector[me] = 0; // our own past is FIFO's business
            self.knowledge_changed = false;
        }
        own.contiguous = seq;
        own.high = seq;
        own.control_done = seq;
        self.mark_dirty(me);
        if me == 0 {
            self.order_holding_raised(seq - 1, seq);
        }
        self.note_settled(me);
        if self.n == 1 {
            // Alone, a record is stable once held (others' acks are clamped to what we sent).
            self.recompute_stable(me);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Receiving

    /// Processes one datagram from the network (`from` is informational: the frame names its
    /// sender's rank). Malformed or foreign datagrams are counted and dropped.
    pub fn handle_datagram(&mut self, now: Time, bytes: &[u8]) {
        match Frame::parse(bytes) {
            Ok(frame) => self.handle_frame(now, &frame),
            Err(_) => {
                self.now = self.now.max(now);
                self.stats.datagrams_received += 1;
                self.stats.dropped_malformed += 1;
            }
        }
    }

    /// [`Member::handle_datagram`] of a frame the caller already parsed (and so validated:
    /// the membership layer parses each datagram once to route it).
    pub fn handle_frame(&mut self, now: Time, frame: &Frame<'_>) {
        self.now = self.now.max(now);
        self.stats.datagrams_received += 1;
        let h = frame.header;
        let from = h.sender() as usize;
        if h.group() != self.cfg.group || h.view() != self.cfg.view || from >= self.n {
            self.stats.dropped_foreign += 1;
            return;
        }
        if from == self.me {
            self.stats.dropped_foreign += 1;
            return;
        }
        if h.flags() & FRAME_FLAG_RETRANSMIT == 0 {
            // Retransmissions may be relayed by another member (see "Ending a view").
            self.last_heard[from] = self.now;
        }
        if h.flags() & FRAME_FLAG_WANT_STATUS != 0 {
            self.status_requested = true;
        }
        if !frame.acks.is_empty() {
            if h.flags() & wire::FRAME_FLAG_SPARSE_ACKS != 0 {
                self.on_sparse_acks(from, frame.acks);
            } else if frame.acks.len() == self.n {
                self.on_acks(from, frame.acks);
            } else {
                self.stats.dropped_malformed += 1;
            }
        }
        if let Some((round, counts)) = frame.report {
            if self.is_sequencer() {
                self.apply_report(from, round, counts);
            }
        }
        if let Some(d) = frame.decision {
            if from == 0 && !self.is_sequencer() {
                self.apply_status_decision(d);
            }
        }
        match frame.kind() {
            // A status frame (no records) has nothing more for us.
            FrameKind::Data if h.record_count() == 0 => {}
            FrameKind::Data => self.on_data(from, frame),
            FrameKind::Nak => self.on_nak(from, frame.nak_ranges()),
            // The membership layer takes these before the member sees them.
            FrameKind::Membership => self.stats.dropped_foreign += 1,
        }
    }

    fn on_acks(&mut self, from: usize, acks: &[[u8; 8]]) {
        // Most entries of a full vector did not move: find those that did in one tight pass.
        let n = self.n;
        let mut raised = [0u8; MEMBERS_MAX];
        let mut count = 0;
        for (s, a) in acks.iter().enumerate() {
            raised[count] = s as u8;
            count += usize::from(entry(a) > self.acks[s * n + from]);
        }
        for &s in &raised[..count] {
            let s = s as usize;
            let mut v = entry(&acks[s]);
            if s == self.me {
                // Nobody holds what we did not transmit.
                v = v.min(self.tx_through);
            }
            self.raise_ack(from, s, v);
        }
    }

    /// A sparse acknowledgement vector: (rank, seq) pairs, only the entries that changed
    /// since the sender's last full vector. A pair naming no rank of the view makes the whole
    /// vector malformed (counted, ignored).
    fn on_sparse_acks(&mut self, from: usize, pairs: &[[u8; 8]]) {
        let n = self.n as u64;
        if pairs.chunks_exact(2).any(|p| entry(&p[0]) >= n) {
            self.stats.dropped_malformed += 1;
            return;
        }
        for p in pairs.chunks_exact(2) {
            let s = entry(&p[0]) as usize;
            let mut v = entry(&p[1]);
            if s == self.me {
                // Nobody holds what we did not transmit.
                v = v.min(self.tx_through);
            }
            self.raise_ack(from, s, v);
        }
    }

    /// Raises `acks[m][s]` to `v`, updating what is known to exist and stability.
    #[inline]
    fn raise_ack(&mut self, m: usize, s: usize, v: u64) {
        let i = s * self.n + m;
        let old = self.acks[i];
        if v <= old {
            return;
        }
        self.acks[i] = v;
        if s != self.me && v > self.streams[s].high {
            self.streams[s].high = v;
            self.schedule_nak(s);
            self.note_settled(s);
        }
        if s == 0 {
            self.order_holding_raised(old, v);
        }
        if old == self.stable[s] {
            // m held the minimum; it moves only once no other member does.
            debug_assert!(
                self.stable_holders[s] > 0,
                "holders of stream {s} miscounted"
            );
            self.stable_holders[s] -= 1;
            if self.stable_holders[s] == 0 {
                self.recompute_stable(s);
            }
        }
    }

    /// A member's holding of stream 0 (ours too) rose from `old` to `new`: counts it in
    /// `order_above` if it passed the majority point, and moves the point once a majority
    /// holds more.
    #[inline]
    fn order_holding_raised(&mut self, old: u64, new: u64) {
        if old <= self.order_through && new > self.order_through {
            self.order_above += 1;
            if self.order_above as usize > self.n / 2 {
                self.recompute_order_through();
            }
        }
    }

    /// Member m's holding of stream 0 (ours: what we hold contiguously).
    fn order_holding(&self, m: usize) -> u64 {
        if m == self.me {
            self.streams[0].contiguous
        } else {
            self.acks[m] // stream 0's column
        }
    }

    /// Recomputes how far a majority holds stream 0 (our own holding counts too) and how
    /// many hold more (`order_above`).
    fn recompute_order_through(&mut self) {
        let mut h = std::mem::take(&mut self.order_scratch);
        h.clear();
        h.extend((0..self.n).map(|m| self.order_holding(m)));
        // The (n/2 + 1)-th largest: held by a strict majority.
        let k = self.n / 2;
        let (_, &mut v, _) = h.select_nth_unstable_by(k, |a, b| b.cmp(a));
        self.order_scratch = h;
        // At most k hold more than the (k + 1)-th largest.
        self.order_above = (0..self.n).filter(|&m| self.order_holding(m) > v).count() as u32;
        if v > self.order_through {
            self.order_through = v;
            if let Some(f) = self.total_order.front() {
                if f.record <= v {
                    self.mark_dirty(f.rank as usize);
                }
            }
            if let Some(Freeze { cut: Some(c), .. }) = &self.freeze {
                let sender = c.sender;
                self.mark_dirty(sender);
            }
        }
    }

    /// Recomputes stream `s`'s stability (the minimum of every member's row) and its holders.
    fn recompute_stable(&mut self, s: usize) {
        let n = self.n;
        let own = self.streams[s].contiguous;
        // One pass over the stream's column: the minimum of the others and how many hold it.
        let mut min = u64::MAX;
        let mut holders = 0u32;
        for (m, &a) in self.acks[s * n..(s + 1) * n].iter().enumerate() {
            if m == self.me {
                continue;
            }
            if a < min {
                min = a;
                holders = 1;
            } else if a == min {
                holders += 1;
            }
        }
        // When our own holding is lower than every other (or we are alone), no other member
        // holds the minimum: only our own advance moves it (`on_contiguous_advanced`).
        let (min, holders) = if own < min { (own, 0) } else { (min, holders) };
        debug_assert!(min >= self.stable[s], "stability of stream {s} went back");
        self.stable_holders[s] = holders;
        if min > self.stable[s] {
            self.stable[s] = min;
            self.mark_dirty(s);
            self.free_delivered(s);
            self.note_settled(s);
        }
    }

    fn on_data(&mut self, from: usize, frame: &Frame<'_>) {
        let n = self.n;
        let mut vector: Option<&[[u8; 8]]> = None;
        let mut malformed = false;
        let mut highest = 0u64;
        let holdback_bytes_max = self.cfg.holdback_bytes_max;
        let st = &mut self.streams[from];
        for item in frame.items() {
            match item {
                Item::Vector(v) => {
                    if v.len() != n {
                        malformed = true;
                        break;
                    }
                    vector = Some(v);
                }
                Item::Record {
                    seq,
                    flags,
                    payload,
                } => {
                    self.stats.records_received += 1;
                    highest = seq;
                    let record_vector = vector.take();
                    if seq < st.base || (st.in_window(seq) && st.slot(seq).present) {
                        self.stats.duplicates_received += 1;
                        continue;
                    }
                    let next_in_sequence = seq == st.contiguous + 1;
                    if !st.in_window(seq)
                        || (!next_in_sequence && st.bytes + payload.len() > holdback_bytes_max)
                    {
                        self.stats.dropped_holdback_full += 1;
                        continue;
                    }
                    if is_gbcast(flags) {
                        self.gbcast_undelivered += 1;
                    }
                    let slot = st.store(seq, flags, payload);
                    if let Some(v) = record_vector {
                        slot.has_vector = true;
                        slot.vector.clear();
                        slot.vector.extend(v.iter().map(entry));
                    }
                }
            }
        }
        if malformed {
            self.stats.dropped_malformed += 1;
        }
        if highest > st.high {
            st.high = highest;
        }
        let before = st.contiguous;
        let advanced = st.advance_contiguous();
        self.note_settled(from);
        if highest > 0 {
            // The sender holds everything it sent.
            self.raise_ack(from, from, highest);
        }
        if advanced {
            self.acks_dirty = true;
            self.on_contiguous_advanced(from, before);
        }
        self.schedule_nak(from);
        self.maybe_freeze();
    }

    /// After `streams[s].contiguous` moved: process control records, update stability.
    fn on_contiguous_advanced(&mut self, s: usize, before: u64) {
        if s == 0 {
            self.order_holding_raised(before, self.streams[0].contiguous);
        }
        self.process_control_records(s);
        if self.is_sequencer() {
            self.try_decide(); // a gbcast may have become contiguous
        }
        // Our row can only have been the minimum if it equalled stability.
        if self.stable[s] == before {
            self.recompute_stable(s);
        }
        self.mark_dirty(s);
    }

    /// Processes the control records of stream `s` up to its contiguous point: order entries
    /// and gbcast decisions from the sequencer (non-sequencers), gbcast reports (sequencer).
    fn process_control_records(&mut self, s: usize) {
        if s == self.me {
            return; // our own are applied when written
        }
        loop {
            let st = &self.streams[s];
            if st.control_done >= st.contiguous {
                break;
            }
            let seq = st.control_done + 1;
            if self.limit.as_ref().is_some_and(|l| seq > l[s]) {
                break; // beyond the cut: not part of this view
            }
            let flags = st.slot(seq).flags;
            if flags & RECORD_FLAG_CONTROL != 0 {
                let kind = flags & RECORD_ORDER_MASK;
                let applied = match (kind, s == 0, self.is_sequencer()) {
                    (CONTROL_ORDER, true, false) => self.apply_order_record(seq),
                    (CONTROL_DECISION, true, false) => {
                        self.apply_decision(seq);
                        true
                    }
                    _ => true, // not for us: skipped at delivery
                };
                if !applied {
                    break; // retried after deliveries free room
                }
            }
            self.streams[s].control_done = seq;
        }
    }

    /// Non-sequencers: appends the order entries of stream 0's record `seq` to the total
    /// order; false if there is no room yet.
    fn apply_order_record(&mut self, seq: u64) -> bool {
        {
            let slot = self.streams[0].slot(seq);
            {
                let entries: &[SeqRange] = bytemuck::cast_slice(&slot.payload);
                if self.total_order.len() + entries.len() > TOTAL_ORDER_ENTRIES_MAX {
                    return false;
                }
                let was_empty = self.total_order.is_empty();
                for e in entries {
                    let rank = e.rank() as usize;
                    if rank >= self.n || e.count() == 0 {
                        self.stats.dropped_malformed += 1;
                        continue;
                    }
                    match self.total_order.back_mut() {
                        Some(b) if b.rank as usize == rank && b.record == seq => {
                            b.remaining += e.count() as u64
                        }
                        _ => self.total_order.push_back(OrderEntry {
                            rank: rank as u16,
                            remaining: e.count() as u64,
                            record: seq,
                        }),
                    }
                }
                if was_empty {
                    if let Some(f) = self.total_order.front() {
                        self.mark_dirty(f.rank as usize);
                    }
                }
            }
        }
        true
    }

    // ----------------------------------------------------------------------------------------
    // gbcast rounds

    /// Slots of our own log not holding a record.
    fn own_log_free_slots(&self) -> u64 {
        let own = &self.streams[self.me];
        own.capacity() - (own.contiguous + 1 - own.base)
    }

    /// Freezes for the next round when an undelivered gbcast is known and none is under way.
    fn maybe_freeze(&mut self) {
        if self.freeze.is_some() || self.gbcast_undelivered == 0 {
            return;
        }
        let round = self.gbcast_rounds + 1;
        self.freeze = Some(Freeze { round, cut: None });
        if self.is_sequencer() {
            let counts = self.streams.iter().map(|s| s.delivered_app).collect();
            self.reports[self.me] = Some((round, counts));
            self.try_decide();
        } else {
            // The report rides on status frames until the decision arrives.
            self.status_requested = true;
        }
    }

    /// Whether our status frames must carry a gbcast report (frozen, no decision yet).
    fn report_needed(&self) -> Option<u64> {
        match &self.freeze {
            Some(Freeze { round, cut: None }) if !self.is_sequencer() => Some(*round),
            _ => None,
        }
    }

    /// Sequencer: records member `s`'s report (from a status frame).
    fn apply_report(&mut self, s: usize, round: u64, counts: &[[u8; 8]]) {
        if counts.len() != self.n || s == self.me {
            self.stats.dropped_malformed += 1;
            return;
        }
        if round <= self.gbcast_rounds {
            // A member still frozen in a round we finished: repeat the decision.
            if matches!(&self.last_decision, Some((r, ..)) if *r == round) {
                self.decision_requested = true;
            }
            return;
        }
        if matches!(&self.reports[s], Some((r, _)) if *r >= round) {
            return; // already have it
        }
        self.reports[s] = Some((round, counts.iter().map(entry).collect()));
        self.try_decide();
    }

    /// Sequencer: once every member reported for the current round and a gbcast is
    /// contiguous here, decides the cut and writes the decision into our stream.
    fn try_decide(&mut self) {
        if self.stopped {
            return; // the view change decides what remains
        }
        let round = match &self.freeze {
            Some(Freeze { round, cut: None }) => *round,
            _ => return,
        };
        if !self
            .reports
            .iter()
            .all(|r| matches!(r, Some((rr, _)) if *rr == round))
        {
            return;
        }
        // Our own gbcast first if it heads our stream: the decisions we write queue behind it
        // in our log, so it must not wait for others' rounds (or the log would fill). Then the
        // first undelivered gbcast contiguous here, round-robin over ranks from the last one.
        let mut chosen = None;
        {
            let own = &self.streams[self.me];
            let mut seq = own.delivered + 1;
            while seq <= own.contiguous && own.slot(seq).flags & RECORD_FLAG_CONTROL != 0 {
                seq += 1;
            }
            if seq <= own.contiguous && is_gbcast(own.slot(seq).flags) {
                chosen = Some((self.me, own.delivered_app + 1));
            }
        }
        'streams: for i in 0..self.n {
            if chosen.is_some() {
                break;
            }
            let s = (self.gbcast_next_rank + i) % self.n;
            let st = &self.streams[s];
            let mut app = st.delivered_app;
            for seq in st.delivered + 1..=st.contiguous {
                let flags = st.slot(seq).flags;
                if flags & RECORD_FLAG_CONTROL != 0 {
                    continue;
                }
                app += st.slot(seq).count as u64;
                if is_gbcast(flags) {
                    chosen = Some((s, app));
                    break 'streams;
                }
            }
        }
        let Some((sender, seq)) = chosen else {
            return; // retried when more arrives
        };
        if self.own_log_free_slots() == 0 {
            return; // retried from poll_transmit
        }
        // Order entries the cut relies on go out before the decision.
        if !self.order_pending.is_empty()
            && (!self.flush_order_pending() || self.own_log_free_slots() == 0)
        {
            return; // retried from poll_transmit
        }
        let mut counts = vec![0u64; self.n];
        for (_, c) in self.reports.iter().flatten() {
            for (k, &v) in counts.iter_mut().zip(c) {
                *k = (*k).max(v);
            }
        }
        // Total messages we already ordered (from each stream's head on) are in the cut: the
        // total order cannot skip them.
        for (c, st) in counts.iter_mut().zip(&self.streams) {
            if st.ordered_through > st.delivered {
                let ordered_app: u64 = (st.delivered + 1..=st.ordered_through)
                    .map(|q| st.slot(q))
                    .filter(|slot| slot.flags & RECORD_FLAG_CONTROL == 0)
                    .map(|slot| slot.count as u64)
                    .sum();
                *c = (*c).max(st.delivered_app + ordered_app);
            }
        }
        debug_assert!(counts[sender] < seq, "a report passed the gbcast");
        counts[sender] = seq - 1;
        if sender != self.me {
            // Our own messages up to our next gbcast join the cut: their causal past is what we
            // delivered (within the cut), so everyone can deliver them, and our stream (which
            // holds the decisions) keeps draining between back-to-back rounds.
            let own = &self.streams[self.me];
            let mut app = own.delivered_app;
            for q in own.delivered + 1..=own.contiguous {
                let flags = own.slot(q).flags;
                if flags & RECORD_FLAG_CONTROL != 0 {
                    continue;
                }
                if is_gbcast(flags) {
                    break;
                }
                app += own.slot(q).count as u64;
            }
            counts[self.me] = counts[self.me].max(app);
        }
        self.gbcast_next_rank = (sender + 1) % self.n;
        let mut payload = Vec::with_capacity((self.n + 3) * 8);
        for v in [round, sender as u64, seq]
            .into_iter()
            .chain(counts.iter().copied())
        {
            payload.extend_from_slice(&v.to_le_bytes());
        }
        self.append_own(RECORD_FLAG_CONTROL | CONTROL_DECISION, &payload);
        let record = self.streams[self.me].contiguous;
        self.last_decision = Some((round, sender as u64, record, counts.clone()));
        self.install_cut(Cut {
            sender,
            seq,
            record,
            counts,
        });
    }

    /// Non-sequencers: applies the sequencer's decision (record `seq` of stream 0).
    fn apply_decision(&mut self, seq: u64) {
        let slot = self.streams[0].slot(seq);
        let v: Vec<u64> = u64_entries(&slot.payload).collect();
        let valid = v.len() == self.n + 3 && (v[1] as usize) < self.n && v[2] >= 1;
        if valid && (v[0] <= self.gbcast_rounds || self.decided_round() == Some(v[0])) {
            return; // known already from the sequencer's status frames
        }
        let expected =
            matches!(&self.freeze, Some(Freeze { round, cut: None }) if valid && *round == v[0]);
        if !expected {
            self.stats.dropped_malformed += 1;
            return;
        }
        self.install_cut(Cut {
            sender: v[1] as usize,
            seq: v[2],
            record: seq,
            counts: v[3..].to_vec(),
        });
    }

    /// The round whose decision we hold, if it is not complete here.
    fn decided_round(&self) -> Option<u64> {
        match &self.freeze {
            Some(Freeze {
                round,
                cut: Some(_),
            }) => Some(*round),
            _ => None,
        }
    }

    /// Non-sequencers: a decision from the sequencer's status frame.
    fn apply_status_decision(&mut self, d: wire::Decision<'_>) {
        let valid = d.counts.len() == self.n
            && (d.sender as usize) < self.n
            && entry(&d.counts[d.sender as usize]) < u64::MAX;
        if !valid {
            self.stats.dropped_malformed += 1;
            return;
        }
        if !matches!(&self.freeze, Some(Freeze { round, cut: None }) if *round == d.round) {
            return; // not frozen in that round (done, or a later one)
        }
        if self.limit.as_ref().is_some_and(|l| d.record > l[0]) {
            return; // its record is beyond the view's cut: it does not apply (see `set_cut`)
        }
        let counts: Vec<u64> = d.counts.iter().map(entry).collect();
        let sender = d.sender as usize;
        self.install_cut(Cut {
            sender,
            seq: counts[sender] + 1,
            record: d.record,
            counts,
        });
    }

    /// Sequencer: the decision its status frames carry now, if any.
    fn decision_to_send(&self) -> Option<&(u64, u64, u64, Vec<u64>)> {
        if !self.is_sequencer() {
            return None;
        }
        let d = self.last_decision.as_ref()?;
        (self.decided_round() == Some(d.0) || self.decision_requested).then_some(d)
    }

    fn install_cut(&mut self, cut: Cut) {
        if let Some(f) = &mut self.freeze {
            f.cut = Some(cut);
        }
        for s in 0..self.n {
            self.mark_dirty(s);
        }
    }

    /// Whether the head app message `next_app` of stream `s` may be delivered now as far as
    /// gbcast rounds go.
    fn gbcast_allows(&self, s: usize, next_app: u64, flags: u16) -> bool {
        match &self.freeze {
            None => !is_gbcast(flags),
            // Ending the view, a round nobody decided does not hold the others back: its
            // gbcast is delivered by the final rule.
            Some(Freeze { cut: None, .. }) => self.finishing && !is_gbcast(flags),
            Some(Freeze { cut: Some(cut), .. }) => {
                if next_app <= cut.counts[s] {
                    return !is_gbcast(flags);
                }
                s == cut.sender
                    && next_app == cut.seq
                    && is_gbcast(flags)
                    && (cut.record <= self.order_through || self.finishing)
                    && self
                        .streams
                        .iter()
                        .zip(&cut.counts)
                        .all(|(st, &c)| st.delivered_app == c)
            }
        }
    }

    fn schedule_nak(&mut self, s: usize) {
        let now = self.now;
        let delay = self.cfg.nak_delay_ns;
        let st = &mut self.streams[s];
        if st.contiguous < st.high {
            if st.nak_due.is_none() {
                let due = now.plus_nanos(delay);
                st.nak_due = Some(due.0);
                self.nak_next = self.nak_next.min(due);
            }
        } else {
            st.nak_due = None;
        }
    }

    /// NAK ranges name a stream: ours, or (while a view ends) another sender's stream whose
    /// records we hold for the cut.
    fn on_nak(&mut self, from: usize, ranges: &[SeqRange]) {
        self.stats.nak_frames_received += 1;
        if self.cfg.testing_skip_retransmit {
            return;
        }
        for r in ranges {
            let s = r.rank() as usize;
            if s >= self.n || s == from || r.count() == 0 {
                self.stats.dropped_malformed += 1;
                continue;
            }
            if self.retransmits.len() >= RETRANSMIT_REQUESTS_MAX {
                self.stats.dropped_retransmit_requests += 1;
                continue;
            }
            self.retransmits
                .push_back((from as u16, s as u16, r.first(), r.count() as u64));
        }
    }

    /// Updates the clock; deadlines are acted on by [`Member::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
    }

    // ----------------------------------------------------------------------------------------
    // Delivery

    fn mark_dirty(&mut self, s: usize) {
        if !self.in_dirty[s] {
            self.in_dirty[s] = true;
            self.dirty.push(s as u16);
        }
    }

    /// The next message deliverable here, if any. The payload borrows the member's log.
    pub fn poll_deliver(&mut self) -> Option<Delivery<'_>> {
        let s = loop {
            let Some(&s) = self.dirty.last() else {
                if !self.finishing {
                    return None;
                }
                match self.finish_step() {
                    FinishStep::Deliver(s) => break s,
                    FinishStep::Resweep => continue,
                    FinishStep::Done => {
                        self.finished = true;
                        return None;
                    }
                }
            };
            let s = s as usize;
            match self.examine_head(s) {
                Head::Deliver => break s,
                Head::Skipped => continue,
                Head::Blocked(why) => {
                    // Examining may have marked other streams dirty (an order record written
                    // into our own stream): remove `s` itself, not whatever is on top.
                    let at = self
                        .dirty
                        .iter()
                        .rposition(|&d| d as usize == s)
                        .expect("the examined stream is marked dirty");
                    self.dirty.remove(at);
                    self.in_dirty[s] = false;
                    if why == Blocked::Causal && !self.in_causal_waiters[s] {
                        self.in_causal_waiters[s] = true;
                        self.causal_waiters.push(s as u16);
                    }
                }
            }
        };
        let forced = self.forced.take() == Some(s);
        let DeliveredHead {
            seq,
            flags,
            count,
            first_app,
            seq_base,
        } = self.take_head(s, forced);
        let st = &self.streams[s];
        let payload = if st.in_window(seq) {
            &st.slot(seq).payload[..] // own record still unstable
        } else {
            st.delivered_payload(seq)
        };
        Some(Delivery {
            sender: s as u16,
            seq: Seq(seq_base + first_app),
            order: order_of(flags),
            safe: is_safe(flags),
            view: self.cfg.view,
            count,
            body: payload,
            bundled: flags & RECORD_FLAG_BUNDLE != 0,
        })
    }

    /// Delivers the head of stream `s` (which [`Member::examine_head`] found deliverable):
    /// everything but handing it out. `forced`: the final rule delivers it.
    fn take_head(&mut self, s: usize, forced: bool) -> DeliveredHead {
        self.finish_swept = false;
        let seq = self.streams[s].delivered + 1;
        let (flags, count) = {
            let slot = self.streams[s].slot(seq);
            (slot.flags, slot.count)
        };
        self.streams[s].delivered = seq;
        let first_app = self.streams[s].delivered_app + 1;
        self.streams[s].delivered_app += count as u64;
        let app_seq = self.streams[s].delivered_app;
        let seq_base = self.seq_base[s];
        self.stats.delivered += count as u64;
        if is_total(flags) {
            let front = self
                .total_order
                .front_mut()
                .expect("a total message was delivered at the head of the order");
            debug_assert_eq!(front.rank as usize, s);
            front.remaining -= 1;
            if front.remaining == 0 {
                self.total_order.pop_front();
                if let Some(f) = self.total_order.front() {
                    self.mark_dirty(f.rank as usize);
                }
                self.wake_order_blocked();
                if !self.is_sequencer() {
                    // Room may have freed for order records that did not fit.
                    self.process_control_records(0);
                }
            }
        }
        // Our causal past now includes this message and its past.
        {
            let st = &mut self.streams[s];
            let slot = st.slot_mut(seq);
            if slot.has_vector {
                // Still in the log until stable (it may be retransmitted or relayed): copy.
                self.current_vector[s].clone_from(&slot.vector);
                self.current_vector_dominated[s] = false;
                for (k, &v) in self.knowledge.iter_mut().zip(&self.current_vector[s]) {
                    if v > *k {
                        *k = v;
                        self.knowledge_changed = true;
                    }
                }
            }
            if s != self.me && app_seq > self.knowledge[s] {
                self.knowledge[s] = app_seq;
                self.knowledge_changed = true;
            }
        }
        // Anyone waiting for causal predecessors may proceed now.
        while let Some(w) = self.causal_waiters.pop() {
            self.in_causal_waiters[w as usize] = false;
            self.mark_dirty(w as usize);
        }
        // Its payload is handed out below even once freed: no store may take its buffer.
        self.streams[s].lent = seq;
        self.free_delivered(s);
        if forced && is_gbcast(flags) {
            // The final rule's gbcast: the round ends here.
            self.gbcast_undelivered -= 1;
            self.gbcast_rounds += 1;
            self.freeze = None;
            self.maybe_freeze();
        } else if let Some(f) = &self.freeze {
            if let Some(cut) = &f.cut {
                if is_gbcast(flags) && s == cut.sender && app_seq == cut.seq {
                    // The round is complete.
                    self.gbcast_undelivered -= 1;
                    self.gbcast_rounds += 1;
                    self.freeze = None;
                    for r in 0..self.n {
                        self.mark_dirty(r);
                    }
                    self.maybe_freeze();
                } else {
                    let sender = cut.sender;
                    self.mark_dirty(sender);
                }
            }
        }
        if let Some(t) = &mut self.trace {
            let node = &self.cfg.members[self.me];
            for app in first_app..=app_seq {
                t.push(TraceEvent::Deliver {
                    node: node.clone(),
                    group: self.cfg.group_name.clone(),
                    view: self.cfg.view,
                    msg: msg_id(&self.cfg.members[s], seq_base + app),
                    order: order_of(flags),
                });
            }
        }
        DeliveredHead {
            seq,
            flags,
            count,
            first_app,
            seq_base,
        }
    }

    /// Frees what stream `s` no longer needs: at a receiver, records both delivered and
    /// stable (an unstable record may have to be relayed to another member when its sender
    /// fails, see "Ending a view").
    fn free_delivered(&mut self, s: usize) {
        if s == self.me {
            self.free_own();
        } else {
            let through = self.streams[s].delivered.min(self.stable[s]);
            self.streams[s].free_through(through);
        }
    }

    /// Frees our own records that are both stable and delivered locally.
    fn free_own(&mut self) {
        let me = self.me;
        // Never free what was not transmitted yet (alone, a record is stable and delivered
        // before it goes out).
        // (No record of ours is delivered before the order entry it needs is written and held
        // by a majority, so a delivered record never waits for a pending entry.)
        let through = self.stable[me]
            .min(self.streams[me].delivered)
            .min(self.tx_through);
        if self.streams[me].free_through(through) > 0 && self.window_blocked {
            self.window_blocked = false;
            self.window_open_event = true;
        }
    }

    fn examine_head(&mut self, s: usize) -> Head {
        let st = &self.streams[s];
        let seq = st.delivered + 1;
        if seq > st.control_done || self.limit.as_ref().is_some_and(|l| seq > l[s]) {
            return Head::Blocked(Blocked::Missing);
        }
        let slot = st.slot(seq);
        debug_assert!(
            slot.present,
            "head {seq} of stream {s} within contiguous but absent"
        );
        let flags = slot.flags;
        if flags & RECORD_FLAG_CONTROL != 0 {
            let st = &mut self.streams[s];
            st.delivered = seq;
            self.free_delivered(s);
            return Head::Skipped;
        }
        let forced = self.forced == Some(s);
        if !(self.gbcast_allows(s, st.delivered_app + 1, flags) || forced && is_gbcast(flags)) {
            return Head::Blocked(Blocked::Frozen);
        }
        if wire::waits_for_causal_past(flags)
            && (slot.has_vector || !self.current_vector_dominated[s])
        {
            let vector = if slot.has_vector {
                &slot.vector
            } else {
                &self.current_vector[s]
            };
            for (i, &need) in vector.iter().enumerate() {
                if i != s && self.streams[i].delivered_app < need {
                    return Head::Blocked(Blocked::Causal);
                }
            }
            if !slot.has_vector {
                self.current_vector_dominated[s] = true;
            }
        }
        if is_total(flags) {
            if forced && self.total_order.is_empty() {
                // The final rule orders it (no order record covers it).
                self.total_order.push_back(OrderEntry {
                    rank: s as u16,
                    remaining: 1,
                    record: 0,
                });
            } else if self.is_sequencer() && !self.stopped {
                if seq > self.streams[s].ordered_through {
                    if !self.assign_order(s, seq) {
                        self.order_blocked = true;
                        return Head::Blocked(Blocked::Total);
                    }
                    self.streams[s].ordered_through = seq;
                    // Ordered here, not by `order_ahead`: its remembered vector is stale.
                    self.ahead_known[s] = false;
                }
                self.order_ahead(s);
            } else if self.is_sequencer() && seq > self.streams[s].ordered_through {
                return Head::Blocked(Blocked::Total);
            }
            match self.total_order.front() {
                Some(f)
                    if f.rank as usize == s
                        && (f.record <= self.order_through || self.finishing) => {}
                _ => return Head::Blocked(Blocked::Total),
            }
        }
        if is_safe(flags) && seq > self.stable[s] && !self.finishing {
            // Finishing, every member that installs the next view holds the cut.
            return Head::Blocked(Blocked::Safe);
        }
        Head::Deliver
    }

    /// Sequencer: after room freed for ordering, re-examines every stream.
    fn wake_order_blocked(&mut self) {
        if self.order_blocked {
            self.order_blocked = false;
            for s in 0..self.n {
                self.mark_dirty(s);
            }
        }
    }

    /// Sequencer: once the head of stream `s` is ordered, orders the total messages behind it
    /// that are ready too — their causal past in the other streams is delivered here — up to
    /// the first that is not, or a gbcast. Without this, a stream's total messages would be
    /// ordered one per majority round trip (each waits at the head for the record that
    /// orders the one before it to be held by a majority).
    fn order_ahead(&mut self, s: usize) {
        // Not around gbcast rounds: a round's cut is decided from what is ordered and
        // delivered, and stays simple with only heads ordered (gbcast is rare).
        if self.order_blocked
            || self.finishing
            || self.gbcast_undelivered > 0
            || self.freeze.is_some()
        {
            return;
        }
        let st = &self.streams[s];
        let mut q = st.ordered_through + 1;
        let end = match &self.limit {
            Some(l) => st.control_done.min(l[s]),
            None => st.control_done,
        };
        if q > end {
            return;
        }
        // The vector in force before `q`: remembered from the last call, or found once.
        let mut vector = std::mem::take(&mut self.ahead_vectors[s]);
        if !self.ahead_known[s] {
            vector.clone_from(&self.current_vector[s]);
            for k in st.delivered + 1..q {
                if st.slot(k).has_vector {
                    vector.clone_from(&st.slot(k).vector);
                }
            }
        }
        while q <= end {
            let slot = self.streams[s].slot(q);
            let flags = slot.flags;
            if flags & RECORD_FLAG_CONTROL == 0 {
                if is_gbcast(flags) {
                    break;
                }
                if slot.has_vector {
                    vector.clone_from(&slot.vector);
                }
                if is_total(flags) {
                    let ready = vector
                        .iter()
                        .enumerate()
                        .all(|(i, &need)| i == s || self.streams[i].delivered_app >= need);
                    if !ready || !self.assign_order(s, q) {
                        break;
                    }
                }
            }
            self.streams[s].ordered_through = q;
            q += 1;
        }
        self.ahead_vectors[s] = vector;
        self.ahead_known[s] = true;
    }

    /// Sequencer: appends stream `s`'s total message at `seq` (the head, or one behind it
    /// that [`Member::order_ahead`] found ready) to the total order and to the pending order
    /// record. False if there is no room now.
    fn assign_order(&mut self, s: usize, seq: u64) -> bool {
        let merges_local = matches!(self.total_order.back(),
            Some(b) if b.rank as usize == s && b.record == ORDER_RECORD_PENDING);
        if !merges_local && self.total_order.len() >= TOTAL_ORDER_ENTRIES_MAX {
            return false;
        }
        let merges_pending = matches!(self.order_pending.last(),
            Some(p) if p.rank() as usize == s && p.count() < u16::MAX);
        // The last entry of the pending record is kept for our own stream: our own head never
        // needs a record written (and so room in our log) to be ordered.
        let entries_max = if s == self.me {
            self.order_entries_per_record_max
        } else {
            self.order_entries_per_record_max - 1
        };
        debug_assert!(
            s != self.me
                || merges_pending
                || self.order_pending.len() < entries_max
                || matches!(self.order_pending.last(), Some(p) if p.rank() as usize == s),
            "no room in the pending order record for our own head"
        );
        if !merges_pending
            && self.order_pending.len() >= entries_max
            && (!self.flush_order_pending() || self.order_pending.len() >= entries_max)
        {
            return false;
        }
        match self.total_order.back_mut() {
            Some(b) if merges_local => b.remaining += 1,
            _ => self.total_order.push_back(OrderEntry {
                rank: s as u16,
                remaining: 1,
                record: ORDER_RECORD_PENDING,
            }),
        }
        if merges_pending {
            let p = self.order_pending.last_mut().expect("pending entry");
            *p = SeqRange::new(p.rank(), p.first(), p.count() + 1);
        } else {
            self.order_pending.push(SeqRange::new(s as u16, seq, 1));
        }
        true
    }

    /// Sequencer: writes pending order entries as a control record into our stream. False if
    /// our log has no room (retried later). An ordinary record leaves
    /// [`CONTROL_SLOTS_RESERVED`] slots free; one that releases delivered own records (kept
    /// for it by `free_own`) may take them.
    fn flush_order_pending(&mut self) -> bool {
        if self.order_pending.is_empty() {
            return true;
        }
        let me = self.me;
        // An order record that orders one of our own messages drains our log: that message
        // (and everything behind it) is delivered, then freed, once the record is written and
        // held by a majority — no further write needed.
        let orders_own = self.order_pending.iter().any(|p| p.rank() as usize == me);
        let slots_needed = if orders_own {
            1
        } else {
            1 + CONTROL_SLOTS_RESERVED
        };
        if self.own_log_free_slots() < slots_needed {
            return false;
        }
        let pending = std::mem::take(&mut self.order_pending);
        self.append_own(
            RECORD_FLAG_CONTROL | CONTROL_ORDER,
            bytemuck::cast_slice(&pending),
        );
        let record = self.streams[me].contiguous;
        for e in self.total_order.iter_mut().rev() {
            if e.record != ORDER_RECORD_PENDING {
                break;
            }
            e.record = record;
        }
        self.order_pending = pending;
        self.order_pending.clear();
        self.free_own();
        true
    }

    // ----------------------------------------------------------------------------------------
    // Ending a view (driven by the membership layer, see "Ending a view")

    /// When a frame of member `rank` last arrived (its own frames, not relayed ones).
    pub fn last_heard(&self, rank: u16) -> Time {
        self.last_heard[rank as usize]
    }

    /// Stops appending to our stream: [`Member::send`] returns [`SendError::ViewEnding`], the
    /// sequencer orders no more total messages and decides no more gbcast rounds (order
    /// entries already assigned are still written). Receiving, repairing and delivering go on.
    ///
    /// Delivery pauses where it is until [`Member::set_cut`]: what a member delivers must stay
    /// below what it reports holding, or a cut decided from an earlier report could leave out
    /// a message it delivered.
    pub fn stop(&mut self) {
        self.stopped = true;
        if self.limit.is_none() {
            self.limit = Some(self.streams.iter().map(|st| st.delivered).collect());
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether a stopped member's holdings are final: nothing more will be appended (the
    /// sequencer wrote every order entry it assigned, so that what it delivered is covered).
    pub fn ready_to_report(&self) -> bool {
        self.stopped && self.order_pending.is_empty()
    }

    /// Per stream: the highest seq held contiguously (ours: the last appended). Everything a
    /// member delivered or will deliver in this view from that stream lies below it, and
    /// the member holds every record of it above the stream's stable point.
    pub fn held_through(&self) -> Vec<u64> {
        self.streams.iter().map(|st| st.contiguous).collect()
    }

    /// Sets the cut: per stream, the last record delivered in this view; gaps below it are
    /// NAKed to `holders[s]` (a member holding the stream through the cut), which relays.
    /// Records beyond the cut are never delivered (orphans of failed senders).
    pub fn set_cut(&mut self, cut: &[u64], holders: &[u16]) {
        assert!(cut.len() == self.n && holders.len() == self.n);
        for s in 0..self.n {
            self.nak_target[s] = if (holders[s] as usize) < self.n && holders[s] as usize != self.me
            {
                holders[s]
            } else {
                s as u16
            };
            if s != self.me && cut[s] > self.streams[s].high {
                self.streams[s].high = cut[s];
                self.note_settled(s);
            }
            self.mark_dirty(s);
        }
        self.limit = Some(cut.to_vec());
        // A gbcast decision known from a status frame whose record is beyond the cut never
        // took effect anywhere that matters: no survivor holds its record, so no majority did
        // (a majority always includes a survivor). The round ends by the final rule instead,
        // as at every other member.
        if let Some(f) = &mut self.freeze {
            if f.cut.as_ref().is_some_and(|c| c.record > cut[0]) {
                f.cut = None;
            }
        }
        for s in 0..self.n {
            if s != self.me {
                self.schedule_nak(s);
            }
        }
        // Control records below the cut may be waiting; those beyond it never apply.
        for s in 0..self.n {
            self.process_control_records(s);
        }
    }

    /// Whether every stream is held contiguously through the cut.
    pub fn holds_cut(&self) -> bool {
        match &self.limit {
            Some(l) => self
                .streams
                .iter()
                .zip(l)
                .all(|(st, &c)| st.contiguous >= c || st.delivered >= c),
            None => false,
        }
    }

    /// Delivers what remains of the cut by the final rules (every member of the next view
    /// holds it): safe messages no longer wait for stability, and once normal delivery is
    /// stuck a deterministic rule decides what is left (see "Ending a view"). Poll
    /// [`Member::poll_deliver`] until `None`: then the view is over.
    pub fn finish(&mut self) {
        assert!(self.limit.is_some(), "finish without a cut");
        self.finishing = true;
        self.finish_swept = false;
        for s in 0..self.n {
            self.mark_dirty(s);
        }
    }

    pub fn is_finishing(&self) -> bool {
        self.finishing
    }

    /// Whether [`Member::finish`] was called and everything of the cut that can be delivered
    /// was (the rest are orphans of failed senders).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Per rank: application messages delivered here from that member over all views so far
    /// (the next view's [`MemberConfig::app_seq_base`]).
    pub fn app_seq_through(&self) -> Vec<u64> {
        self.streams
            .iter()
            .zip(&self.seq_base)
            .map(|(st, &b)| b + st.delivered_app)
            .collect()
    }

    /// Replaces the sequence bases ([`MemberConfig::app_seq_base`]) of a member that has not
    /// sent or delivered anything in this view yet (a member whose state arrived with the
    /// view's true bases). False, and nothing changed, otherwise.
    pub fn rebase(&mut self, bases: &[u64]) -> bool {
        if bases.len() != self.n
            || self.app_sent != 0
            || self.streams.iter().any(|st| st.delivered_app != 0)
        {
            return false;
        }
        self.seq_base.copy_from_slice(bases);
        self.cfg.app_seq_base = bases.to_vec();
        true
    }

    /// Application messages we sent in this view.
    pub fn app_sent(&self) -> u64 {
        self.app_sent
    }

    /// The final rule, once no head can be delivered by the normal rules. Every member that
    /// reaches this point holds the same cut and has delivered the same set (the set closed
    /// under the normal rules is unique), so the steps below pick the same thing everywhere.
    fn finish_step(&mut self) -> FinishStep {
        if !self.finish_swept {
            // Make sure no wake-up was missed: examine every stream once more.
            self.finish_swept = true;
            for s in 0..self.n {
                self.mark_dirty(s);
            }
            return FinishStep::Resweep;
        }
        // A decided gbcast round that cannot complete (its gbcast or part of its cut was
        // held only by failed members): nobody completed it; forget the decision.
        if let Some(f) = &mut self.freeze {
            if f.cut.is_some() {
                f.cut = None;
                self.finish_swept = false;
                return FinishStep::Resweep;
            }
        }
        // A gbcast at a head, lowest rank first; then, once the total order received is used
        // up, a total message no order record covers.
        for want_total in [false, true] {
            if want_total && !self.total_order.is_empty() {
                break;
            }
            for s in 0..self.n {
                let st = &self.streams[s];
                let seq = st.delivered + 1;
                if seq > st.control_done || self.limit.as_ref().is_some_and(|l| seq > l[s]) {
                    continue;
                }
                let flags = st.slot(seq).flags;
                let candidate = if want_total {
                    is_total(flags)
                } else {
                    is_gbcast(flags)
                };
                if !candidate {
                    continue;
                }
                self.forced = Some(s);
                if let Head::Deliver = self.examine_head(s) {
                    return FinishStep::Deliver(s);
                }
                self.forced = None;
            }
        }
        // The next total-order entry names messages nobody can deliver (their sender failed
        // and their causal past is lost): nobody delivered them; skip the entry.
        if self.total_order.pop_front().is_some() {
            self.finish_swept = false;
            return FinishStep::Resweep;
        }
        FinishStep::Done
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.window_open_event {
            self.window_open_event = false;
            return Some(Event::SendWindowOpen);
        }
        None
    }

    // ----------------------------------------------------------------------------------------
    // Transmission

    fn frame_fields(&self, kind: FrameKind, flags: u16, first_seq: u64) -> FrameFields {
        self.stream_frame_fields(self.me, kind, flags, first_seq)
    }

    /// Frame fields for records of stream `s` (ours, or another's we relay).
    fn stream_frame_fields(
        &self,
        s: usize,
        kind: FrameKind,
        flags: u16,
        first_seq: u64,
    ) -> FrameFields {
        FrameFields {
            kind,
            flags,
            sender: s as u16,
            group: self.cfg.group,
            view: self.cfg.view,
            first_seq,
        }
    }

    /// Whether some stream is not stable through its highest known seq (`unsettled_mask`).
    fn unsettled(&self) -> bool {
        debug_assert_eq!(
            self.unsettled_mask,
            (0..self.n).fold(0u64, |m, s| m | (u64::from(self.stream_unsettled(s)) << s)),
            "unsettled streams miscounted"
        );
        self.unsettled_mask != 0
    }

    /// Whether stream `s` is not stable through its highest known seq (ours: through our
    /// last appended record).
    fn stream_unsettled(&self, s: usize) -> bool {
        let high = if s == self.me {
            self.streams[s].contiguous
        } else {
            self.streams[s].high
        };
        self.stable[s] < high
    }

    /// Updates stream `s`'s bit of `unsettled_mask` after its stability, its `high` or (ours)
    /// its `contiguous` moved.
    #[inline]
    fn note_settled(&mut self, s: usize) {
        let bit = 1u64 << s;
        if self.stream_unsettled(s) {
            self.unsettled_mask |= bit;
        } else {
            self.unsettled_mask &= !bit;
        }
    }

    /// Whether some stream is unsettled and its stability did not move since our last status
    /// frame: only then does a retry ask the others for status (`FRAME_FLAG_WANT_STATUS`,
    /// answered with full vectors). A sender under steady traffic is always unsettled but its
    /// stability keeps moving; asking then would only make every member repeat its full vector
    /// every retry interval.
    fn stability_stalled(&self) -> bool {
        let mut mask = self.unsettled_mask;
        while mask != 0 {
            let s = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if self.stable[s] <= self.stable_at_last_status[s] {
                return true;
            }
        }
        false
    }

    /// When the next status frame is due, and whether it is a retry (asks for replies if
    /// stability stalled).
    fn status_due(&self) -> (Time, bool) {
        if self.acks_dirty
            || self.status_requested
            || self.report_needed().is_some()
            || self.decision_to_send().is_some()
        {
            (
                self.last_status.plus_nanos(self.cfg.status_interval_ns),
                false,
            )
        } else {
            if self.unsettled() {
                (self.last_status.plus_nanos(self.cfg.status_retry_ns), true)
            } else {
                (self.last_status.plus_nanos(self.cfg.heartbeat_ns), false)
            }
        }
    }

    /// The next deadline at which [`Member::handle_timeout`] (then `poll_transmit`) has work.
    pub fn poll_timeout(&self) -> Option<Time> {
        let (status, _) = self.status_due();
        Some(status.min(self.nak_next))
    }

    /// Our acknowledgement entry for stream `s` (our own: what we transmitted).
    fn own_ack(&self, s: usize) -> u64 {
        if s == self.me {
            self.tx_through
        } else {
            self.streams[s].contiguous
        }
    }

    /// Whether the status frame going out now must carry the full vector: it answers a
    /// request, carries a gbcast report, is a retry or heartbeat (nothing changed), or the
    /// last full one is `status_full_ns` old. Otherwise only the changed entries go out.
    fn status_full_due(&self, report: bool) -> bool {
        report
            || self.status_requested
            || !self.acks_dirty
            || self.now >= self.last_full_status.plus_nanos(self.cfg.status_full_ns)
    }

    /// Pushes our acknowledgement vector. With `full`, the whole vector: every entry, or —
    /// when that is smaller and `plain` is false — every *non-zero* entry as (rank, seq) pairs
    /// (an entry left out is 0, which every receiver already has: acknowledgements start at
    /// 0 and only rise, so the pairs say all the plain vector says; with one active sender in
    /// a large group that is two or three pairs instead of `members` entries). Without
    /// `full`, the entries that changed since our last full vector, as pairs, or the plain
    /// vector when that is smaller. `plain` (a gbcast report or decision follows: the wire
    /// sizes those by the vector) forces the plain vector. `Some(was_full)`, or `None` if it
    /// did not fit.
    fn push_acks(&self, p: &mut FramePacker<'_>, full: bool, plain: bool) -> Option<bool> {
        let n = self.n;
        if plain {
            return p.push_acks((0..n).map(|s| self.own_ack(s))).then_some(true);
        }
        // One pass: the ranks to list (non-zero, or changed since the last full vector).
        let mut listed = [0u8; MEMBERS_MAX];
        let mut count = 0;
        for s in 0..n {
            let a = self.own_ack(s);
            listed[count] = s as u8;
            count += usize::from(if full {
                a != 0
            } else {
                a != self.acks_full_sent[s]
            });
        }
        if 2 * count >= n {
            return p.push_acks((0..n).map(|s| self.own_ack(s))).then_some(true);
        }
        let pairs = listed[..count]
            .iter()
            .map(|&s| (u16::from(s), self.own_ack(s as usize)));
        p.push_sparse_acks(pairs).then_some(full)
    }

    fn status_sent(&mut self, full: bool) {
        self.last_status = self.now;
        self.stable_at_last_status.copy_from_slice(&self.stable);
        self.acks_dirty = false;
        self.status_requested = false;
        if full {
            self.last_full_status = self.now;
            for s in 0..self.n {
                self.acks_full_sent[s] = self.own_ack(s);
            }
        }
    }

    /// Writes the next datagram to send into `buf` (at most `datagram_bytes_max` of it).
    /// Call until `None` whenever the previous send completed: what accumulated meanwhile goes
    /// out packed together (smart batching).
    pub fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit> {
        self.now = self.now.max(now);
        // The common case after a received datagram: a receiver with nothing due. The rest of
        // this function would find the same (no NAK due, no retransmission, no new record,
        // no status frame due); returning here keeps its set-up off the per-datagram path.
        if !self.is_sequencer()
            && self.now < self.nak_next
            && self.retransmits.is_empty()
            && self.tx_through == self.streams[self.me].contiguous
            && self.now < self.status_due().0
        {
            return None;
        }
        self.poll_transmit_due(buf)
    }

    #[inline(never)]
    fn poll_transmit_due(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let limit = buf.len().min(self.cfg.datagram_bytes_max);
        let buf = &mut buf[..limit];
        if self.now >= self.nak_next {
            if let Some(t) = self.transmit_nak(buf) {
                return Some(t);
            }
        }
        if let Some(t) = self.transmit_retransmission(buf) {
            return Some(t);
        }
        if self.is_sequencer() && !self.order_pending.is_empty() && self.flush_order_pending() {
            self.wake_order_blocked();
        }
        if self.is_sequencer() {
            self.try_decide();
        }
        let (status_at, retry) = self.status_due();
        let status_now = self.now >= status_at;
        let want = status_now && retry && self.stability_stalled();
        let report = if status_now {
            self.report_needed()
        } else {
            None
        };
        let decision_due = status_now && self.decision_to_send().is_some();
        if self.tx_through < self.streams[self.me].contiguous && report.is_none() && !decision_due {
            let first = self.tx_through + 1;
            let flags = if status_now && want {
                FRAME_FLAG_WANT_STATUS
            } else {
                0
            };
            let fields = self.frame_fields(FrameKind::Data, flags, first);
            let mut p = FramePacker::new(buf, fields)?;
            let acks_full = if status_now {
                self.push_acks(&mut p, self.status_full_due(false), false)
            } else {
                None
            };
            let last = self.pack_records(&mut p, self.me, first, self.streams[self.me].contiguous);
            if last < first && acks_full.is_none() {
                debug_assert!(false, "an empty data frame: payload bound too loose");
                return None;
            }
            self.tx_through = last;
            // Freeing waits for stable, delivered and transmitted; this is where the last of
            // the three advances (it is the last one for a group of one, where a record is
            // stable and delivered before it goes out).
            self.free_own();
            if let Some(full) = acks_full {
                self.status_sent(full);
                self.stats.status_frames_sent += 1;
            }
            self.stats.data_frames_sent += 1;
            self.stats.datagrams_sent += 1;
            return Some(Transmit {
                dest: Dest::Group,
                len: p.finish(),
            });
        }
        if status_now {
            let mut flags = if want { FRAME_FLAG_WANT_STATUS } else { 0 };
            if report.is_some() {
                flags |= FRAME_FLAG_REPORT;
            }
            let decision = self.decision_to_send().cloned();
            if decision.is_some() {
                flags |= FRAME_FLAG_DECISION;
            }
            let fields = self.frame_fields(FrameKind::Data, flags, self.tx_through + 1);
            let mut p = FramePacker::new(buf, fields)?;
            // Reports and decisions are sized by the ack vector: they go with a full one.
            let plain = report.is_some() || decision.is_some();
            let full = self.push_acks(&mut p, self.status_full_due(plain), plain)?;
            if let Some(round) = report {
                let counts = self.streams.iter().map(|s| s.delivered_app);
                if !p.push_report(round, counts) {
                    return None;
                }
            }
            if let Some((round, sender, record, counts)) = &decision {
                if !p.push_decision(*round, *sender, *record, counts) {
                    return None;
                }
                self.decision_requested = false;
            }
            self.status_sent(full);
            self.stats.status_frames_sent += 1;
            self.stats.datagrams_sent += 1;
            return Some(Transmit {
                dest: Dest::Group,
                len: p.finish(),
            });
        }
        None
    }

    /// Packs records `first..=last` of stream `s` (stopping at the first that does not fit or
    /// is not held); returns the last seq packed (first - 1 if none).
    fn pack_records(&self, p: &mut FramePacker<'_>, s: usize, first: u64, last: u64) -> u64 {
        let own = &self.streams[s];
        let mut seq = first;
        while seq <= last && own.has(seq) {
            let slot = own.slot(seq);
            let need = slot.payload.len()
                + if slot.has_vector {
                    RECORD_HEADER_BYTES + slot.vector.len() * VECTOR_ENTRY_BYTES
                } else {
                    0
                };
            if !p.fits(need) {
                break;
            }
            if slot.has_vector {
                let pushed = p.push_vector(&slot.vector);
                debug_assert!(pushed);
            }
            let pushed = p.push_record(slot.flags, &slot.payload);
            debug_assert!(pushed);
            seq += 1;
        }
        seq - 1
    }

    fn transmit_retransmission(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(&(to, s, first, count)) = self.retransmits.front() {
            let s = s as usize;
            let st = &self.streams[s];
            // Ours: what was transmitted; another's (relayed): what we hold contiguously.
            let held = if s == self.me {
                self.tx_through
            } else {
                st.contiguous
            };
            let last = (first + count - 1).min(held);
            // Skip what is already freed or was never transmitted.
            let start = first.max(st.base);
            if start > last {
                self.retransmits.pop_front();
                continue;
            }
            let fields = self.stream_frame_fields(s, FrameKind::Data, FRAME_FLAG_RETRANSMIT, start);
            let mut p = FramePacker::new(buf, fields)?;
            let packed = self.pack_records(&mut p, s, start, last);
            if packed < start {
                // Not held (cannot happen below tx_through and above base) or does not fit.
                self.retransmits.pop_front();
                self.stats.dropped_retransmit_requests += 1;
                continue;
            }
            self.stats.records_retransmitted += packed + 1 - start;
            if packed >= last {
                self.retransmits.pop_front();
            } else {
                let front = self.retransmits.front_mut().expect("request");
                *front = (to, s as u16, packed + 1, last - packed);
            }
            self.stats.datagrams_sent += 1;
            self.stats.data_frames_sent += 1;
            return Some(Transmit {
                dest: Dest::Member(to),
                len: p.finish(),
            });
        }
        None
    }

    fn transmit_nak(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let now = self.now.0;
        let mut next = u64::MAX;
        let mut chosen = None;
        for s in 0..self.n {
            if let Some(due) = self.streams[s].nak_due {
                if due <= now && chosen.is_none() {
                    chosen = Some(s);
                } else {
                    next = next.min(due);
                }
            }
        }
        let Some(s) = chosen else {
            self.nak_next = Time(next);
            return None;
        };
        // Back off while the gap does not shrink (a slow or capped path still holds the
        // retransmissions: repeating the NAK every retry interval would only multiply them).
        // Not while a view ends: the flush must finish within the change timeout.
        let ending = self.limit.is_some();
        let st = &mut self.streams[s];
        if st.contiguous > st.nak_mark || ending {
            st.nak_retries = 0;
        } else {
            st.nak_retries = (st.nak_retries + 1).min(NAK_BACKOFF_DOUBLINGS_MAX);
        }
        st.nak_mark = st.contiguous;
        let retry = now.saturating_add(self.cfg.nak_retry_ns << st.nak_retries);
        st.nak_due = Some(retry);
        self.nak_next = Time(next.min(retry));
        let mut gaps = std::mem::take(&mut self.gaps_scratch);
        self.streams[s].gaps(NAK_RANGES_PER_FRAME_MAX, &mut gaps);
        if let Some(limit) = &self.limit {
            // Ending the view: only the cut matters.
            let last = limit[s];
            gaps.retain_mut(|(first, count)| {
                *count = (*count).min((last + 1).saturating_sub(*first));
                *count > 0
            });
        }
        let target = self.nak_target[s];
        let result = if gaps.is_empty() {
            None
        } else {
            let fields = self.frame_fields(FrameKind::Nak, 0, 0);
            FramePacker::new(buf, fields).map(|mut p| {
                for &(first, count) in &gaps {
                    let count = count.min(u16::MAX as u64) as u16;
                    if !p.push_range(SeqRange::new(s as u16, first, count)) {
                        break;
                    }
                }
                Transmit {
                    dest: Dest::Member(target),
                    len: p.finish(),
                }
            })
        };
        self.gaps_scratch = gaps;
        match result {
            Some(t) => {
                self.stats.nak_frames_sent += 1;
                self.stats.datagrams_sent += 1;
                Some(t)
            }
            None => self.transmit_nak(buf),
        }
    }
}

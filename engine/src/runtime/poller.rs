//! The data-plane poller loop (see the module documentation of [`crate::runtime`]).

use super::stage::{Exclusive, Kind, Record, Stage, Taken};
use super::Doorbell;
use super::{Backoff, BackoffStep, Clock, Idle, BLOCKING_WAIT_NS_MAX};
use crate::membership::{self, node_of, Endpoint, GroupEvent, GroupSendError, ViewInfo};
use crate::node::{Delivery, Handler, Reply, RequestError, View};
use crate::protocol::{Bundle, MemberStats, Seq, Time};
use crate::runtime::framing::{self, Want};
use crate::stats::{GroupMetric, GroupStats, PollerDrop, PollerStats};
use crate::trace::TraceEvent;
use crate::wire::{self, FrameHeader, FRAME_HEADER_BYTES};
use crate::Order;
use cohort_transport::counters::{CountersError, CountersFile, HEARTBEAT_INTERVAL_MS_RECOMMENDED};
use cohort_transport::{Dest, SendBatch, Transport};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Datagrams taken per receive call.
pub const RECV_BATCH_DATAGRAMS_MAX: usize = 64;
/// Datagrams per send batch (one send call).
pub const SEND_BATCH_DATAGRAMS_MAX: usize = 64;
/// Staged records fed to one group's member per turn (so one busy group cannot starve the
/// rest, and a turn's receive and transmit come round often).
pub const STAGED_RECORDS_PER_GROUP_PER_TURN_MAX: usize = 1024;
/// Flushes waiting per group; more are refused at once.
pub const FLUSH_WAITERS_PER_GROUP_MAX: usize = 64;

/// A request's waiting side: its id, what it waits for, where the replies go.
pub(crate) struct Waiter {
    pub id: u64,
    pub want: Want,
    pub done: Sender<Result<Vec<Reply>, RequestError>>,
}

/// A request of this member waiting for replies.
struct Outstanding {
    want: Want,
    /// The members asked (the view the request was delivered in), once known.
    expected: Option<Vec<String>>,
    replies: Vec<Reply>,
    done: Sender<Result<Vec<Reply>, RequestError>>,
}

impl Outstanding {
    /// Takes a reply unless the request already has what it waits for: replies that arrive
    /// in the same turn as the one that completed it (several members answering at once) are
    /// not handed over, so `First` gets one non-null reply and `Count(k)` gets `k`.
    fn offer(&mut self, reply: Reply) {
        if !self.is_complete() {
            self.replies.push(reply);
        }
    }

    fn is_complete(&self) -> bool {
        let answered = |m: &String| self.replies.iter().any(|r| r.from == *m);
        let all = self
            .expected
            .as_ref()
            .is_some_and(|e| e.iter().all(answered));
        let useful = self.replies.iter().filter(|r| r.payload.is_some()).count();
        match self.want {
            Want::None => true,
            Want::First => useful >= 1 || all,
            Want::Count(k) => useful >= k as usize || all,
            Want::All => all,
        }
    }
}

/// Replies this member owes, queued while its window is full.
pub const REPLIES_QUEUED_MAX: usize = 1024;
/// Requests of one group waiting for replies at once; more are refused (`WouldBlock`).
pub const REQUESTS_OUTSTANDING_MAX: usize = 1024;

/// How a flush ended, as the poller reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlushOutcome {
    Done,
    /// The member blocked (minority): its sends of the view may be lost.
    Blocked,
}

/// How a leave ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeaveOutcome {
    /// The others installed a view without this member, its messages delivered.
    Left,
    /// Not done within the bound: the group was dropped here anyway.
    TimedOut,
    NotJoined,
}

/// What the node asks of its poller.
pub(crate) enum Control {
    Join {
        slot: Box<GroupSlot>,
        done: Sender<Result<(), String>>,
    },
    Leave {
        group: u32,
        timeout_ns: u64,
        done: Sender<LeaveOutcome>,
    },
    Shutdown,
}

/// The view as the application handles see it (updated by the poller at each view).
#[derive(Clone, Debug, Default)]
pub(crate) struct ViewShared {
    pub view: Option<View>,
}

/// Counters, flags and the current view of one group, written by the poller, read by anyone.
#[derive(Debug, Default)]
pub(crate) struct GroupCounters {
    /// Application messages the member accepted.
    pub sent: AtomicU64,
    /// Messages delivered to the handler (all senders).
    pub delivered: AtomicU64,
    /// Times the member refused a send for a full window.
    pub window_stalls: AtomicU64,
    /// Views installed here.
    pub views: AtomicU64,
    /// Times this member blocked (minority or excluded).
    pub blocks: AtomicU64,
    /// Sends dropped because the member blocked or was leaving after they were queued.
    pub sends_dropped: AtomicU64,
    /// Records that carried several of this member's messages (sends taken from the stage
    /// together, see `GroupSlot::take_requests`).
    pub bundles_sent: AtomicU64,
    /// This member's own plain messages not handed to its handler (`discard_own`).
    pub own_discarded: AtomicU64,
    /// Records this member sent again because a peer asked (a NAK).
    pub retransmits: AtomicU64,
    /// NAK frames this member sent (it missed records of a peer).
    pub naks_sent: AtomicU64,
    /// NAK frames peers sent to this member.
    pub naks_received: AtomicU64,
    /// Replies this member could not send (leaving, too large, or the reply queue full).
    pub replies_dropped: AtomicU64,
    /// This member's requests waiting for replies (bounded by [`REQUESTS_OUTSTANDING_MAX`]).
    pub requests_outstanding: std::sync::atomic::AtomicUsize,
    /// Bumped when the member blocks: sends numbered before are dropped, numbering restarts
    /// at 1 in the next incarnation.
    pub incarnation: AtomicU64,
    /// Everything known is stable and delivered, nothing waits to go out (updated when idle).
    pub settled: AtomicBool,
    /// The last installed view (none while joining or blocked).
    pub view: Mutex<ViewShared>,
}

/// Counters of one poller.
#[derive(Debug, Default)]
pub(crate) struct PollerCounters {
    pub turns: AtomicU64,
    pub send_calls: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub datagrams_received: AtomicU64,
    /// Datagrams whose fixed header could not be read.
    pub dropped_malformed: AtomicU64,
    /// Datagrams of a group not joined here.
    pub dropped_unknown_group: AtomicU64,
    /// Datagrams the transport refused with an error (dropped, counted).
    pub dropped_send_error: AtomicU64,
    /// Datagrams to a member id that is not an address (a hostile or broken joiner's id).
    pub dropped_bad_dest: AtomicU64,
}

/// A flush waiting: the point its sends reach (once known, see
/// [`Endpoint::flush_point`]) and the answer channel.
type FlushWaiter = (Option<(u64, u64)>, Sender<FlushOutcome>);

/// One group on a poller.
pub(crate) struct GroupSlot {
    pub id: u32,
    pub name: String,
    pub endpoint: Endpoint,
    pub handler: Box<dyn Handler>,
    /// Sends, requests and flushes from the application (see [`super::stage`]).
    stage: Arc<Stage>,
    /// The records taken from the stage, fed to the endpoint in order.
    taken: Taken,
    /// Plain sends gathered from the stage into one record (see `take_requests`), their
    /// (order, safe), the incarnation they were numbered in, the record limit when the
    /// first was gathered, and their application bytes (published once sent).
    bundle: Bundle,
    bundle_key: (Order, bool),
    bundle_incarnation: u64,
    bundle_bytes_max: usize,
    bundle_app_bytes: u64,
    /// The bundle no longer fits a record (the view changed while the window held it back)
    /// and goes out message by message; this many already went.
    bundle_splitting: bool,
    bundle_split_done: usize,
    /// The endpoint refused the next record (window full, not installed): counted once.
    stalled: bool,
    pub counters: Arc<GroupCounters>,
    /// Answered at the first installed view (a joiner waits for it).
    pub installed: Option<Sender<()>>,
    /// This member's requests waiting for replies, by id.
    outstanding: HashMap<u64, Outstanding>,
    /// Replies owed, waiting for room in the window.
    replies_out: std::collections::VecDeque<Vec<u8>>,
    /// The current view's member ids by rank, this member's id and rank.
    ids: Vec<String>,
    my_id: String,
    my_rank: u16,
    /// Flushes waiting: the point their sends reach once known, and the answer channel.
    flush_waiters: Vec<FlushWaiter>,
    events: u64,
    /// The current view's member addresses by rank (the senders of deliveries).
    addrs: Vec<SocketAddr>,
    /// The view changed: the node's fan-out peer list must be rebuilt.
    peers_changed: bool,
    /// A leave in progress: its deadline and who waits.
    leaving: Option<(Time, Sender<LeaveOutcome>)>,
    /// The group is done here (left, or its handler panicked): removed at the end of the turn.
    gone: bool,
    /// This member's own plain messages skip the handler
    /// ([`crate::node::NodeBuilder::discard_own_messages`]).
    pub discard_own: bool,
    /// In fan-out mode: this group's peers are exactly the transport's peer list (so one
    /// `Dest::Group` datagram reaches them); otherwise one copy per peer is queued.
    fanout_exact: bool,
    /// The group's counters in the node's counters file (when it has one).
    stats: Option<GroupStats>,
    /// What of the current view's member counters has been added to `stats`, and its view.
    published: MemberStats,
    published_view: u64,
    window_stalls_published: u64,
    /// Payload bytes accepted / delivered since the last publication.
    bytes_sent_unpublished: u64,
    bytes_delivered_unpublished: u64,
}

impl Drop for GroupSlot {
    /// The group is gone from the poller: its handles see `Closed` from now on.
    fn drop(&mut self) {
        self.stage.close();
    }
}

/// The message of a bundle record that holds exactly one (its framing and body, what a plain
/// record carries); None for more than one, or a malformed payload.
fn lone_message<'a>(r: &Record<'a>) -> Option<&'a [u8]> {
    let (len, message) = r
        .payload
        .split_first_chunk::<{ wire::BUNDLE_ENTRY_HEADER_BYTES }>()?;
    (r.count == 1 && usize::from(u16::from_le_bytes(*len)) == message.len()).then_some(message)
}

/// Runs `upcalls` into group `group`'s handler, catching a panic: a panicking handler takes
/// its group down (`gone`), not the poller's other groups. False if it panicked.
fn guard_upcalls(group: &str, gone: &mut bool, upcalls: impl FnOnce()) -> bool {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(upcalls)).is_err() {
        tracing::error!(group = %group, "the handler panicked; leaving the group");
        *gone = true;
        return false;
    }
    true
}

/// Which slot holds each group id: sorted by id, looked up by binary search (once per
/// datagram received: cheaper than hashing for the few groups a node holds, and the keys are
/// ours, never a peer's).
#[derive(Debug, Default)]
struct GroupIndex(Vec<(u32, usize)>);

impl GroupIndex {
    #[inline]
    fn get(&self, id: &u32) -> Option<&usize> {
        let i = self.0.binary_search_by_key(id, |&(k, _)| k).ok()?;
        Some(&self.0[i].1)
    }

    fn contains_key(&self, id: &u32) -> bool {
        self.get(id).is_some()
    }
}

impl FromIterator<(u32, usize)> for GroupIndex {
    fn from_iter<I: IntoIterator<Item = (u32, usize)>>(iter: I) -> Self {
        let mut v: Vec<(u32, usize)> = iter.into_iter().collect();
        v.sort_unstable_by_key(|&(k, _)| k);
        GroupIndex(v)
    }
}

/// Delivers the leading run of plain messages of the bundle `body` to `handler`, one upcall
/// each through `delivery` (whose `seq` is the bundle's first; `seq`, `event` and `payload`
/// are set per message), and stops at the first message that is not plain. `delivered` and
/// `bytes` count what was handed over, so they are right even when the handler panics.
#[inline]
fn deliver_plain_run<'a>(
    body: &'a [u8],
    delivery: &mut Delivery<'a>,
    handler: &mut dyn Handler,
    delivered: &mut u64,
    bytes: &mut u64,
) {
    let first = delivery.seq.0;
    for framed in wire::bundle_messages(body) {
        let Some((&framing::KIND_PLAIN, payload)) = framed.split_first() else {
            break;
        };
        delivery.seq = Seq(first + *delivered);
        delivery.event += 1;
        delivery.payload = payload;
        *delivered += 1;
        *bytes += payload.len() as u64;
        handler.on_deliver(delivery);
    }
}

/// The address of a member id (`host:port` or `host:port#incarnation`).
fn addr_of(id: &str) -> Option<SocketAddr> {
    node_of(id).parse().ok()
}

impl GroupSlot {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u32,
        name: String,
        endpoint: Endpoint,
        handler: Box<dyn Handler>,
        stage: Arc<Stage>,
        counters: Arc<GroupCounters>,
        installed: Option<Sender<()>>,
    ) -> Self {
        let taken = Taken::with_consumer(stage.take_consumer());
        GroupSlot {
            id,
            name,
            endpoint,
            handler,
            stage,
            taken,
            bundle: Bundle::new(),
            bundle_key: (Order::Fifo, false),
            bundle_incarnation: 0,
            bundle_bytes_max: 0,
            bundle_app_bytes: 0,
            bundle_splitting: false,
            bundle_split_done: 0,
            stalled: false,
            counters,
            installed,
            outstanding: HashMap::new(),
            replies_out: std::collections::VecDeque::new(),
            ids: Vec::new(),
            my_id: String::new(),
            my_rank: u16::MAX,
            flush_waiters: Vec::new(),
            events: 0,
            addrs: Vec::new(),
            peers_changed: false,
            leaving: None,
            gone: false,
            discard_own: false,
            fanout_exact: true,
            stats: None,
            published: MemberStats::default(),
            published_view: 0,
            window_stalls_published: 0,
            bytes_sent_unpublished: 0,
            bytes_delivered_unpublished: 0,
        }
    }

    /// The current view's members other than this one (the fan-out destinations).
    fn peers(&self, local: SocketAddr) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addrs.iter().copied().filter(move |a| *a != local)
    }

    /// Adds what the member and this slot counted since the last call to the group's
    /// counters (once per poller turn, not per message): the recovery counts to the handle's
    /// [`GroupCounters`] always, everything to the counters file if there is one. Returns the
    /// member's malformed drops since then (a poller-level cause; 0 without a counters file).
    fn publish_stats(&mut self) -> u64 {
        let Some(member) = self.endpoint.member() else {
            return 0;
        };
        if self.endpoint.view_id() != self.published_view {
            // A new view's member counts from zero (what the last one counted after the
            // previous publication, within one turn, is not added).
            self.published_view = self.endpoint.view_id();
            self.published = MemberStats::default();
        }
        let now = member.stats();
        let was = self.published;
        if now == was && self.bytes_sent_unpublished == 0 && self.bytes_delivered_unpublished == 0 {
            return 0;
        }
        self.published = now;
        let c = &self.counters;
        for (counter, n) in [
            (
                &c.retransmits,
                now.records_retransmitted - was.records_retransmitted,
            ),
            (&c.naks_sent, now.nak_frames_sent - was.nak_frames_sent),
            (
                &c.naks_received,
                now.nak_frames_received - was.nak_frames_received,
            ),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        let Some(stats) = &self.stats else {
            self.bytes_sent_unpublished = 0;
            self.bytes_delivered_unpublished = 0;
            return 0;
        };
        let deltas = [
            (GroupMetric::MessagesSent, now.sent - was.sent),
            (
                GroupMetric::MessagesDelivered,
                now.delivered - was.delivered,
            ),
            (GroupMetric::BytesSent, self.bytes_sent_unpublished),
            (
                GroupMetric::BytesDelivered,
                self.bytes_delivered_unpublished,
            ),
            (
                GroupMetric::Retransmits,
                now.records_retransmitted - was.records_retransmitted,
            ),
            (
                GroupMetric::NaksSent,
                now.nak_frames_sent - was.nak_frames_sent,
            ),
            (
                GroupMetric::NaksReceived,
                now.nak_frames_received - was.nak_frames_received,
            ),
            (
                GroupMetric::DropsWrongView,
                now.dropped_foreign - was.dropped_foreign,
            ),
            (
                GroupMetric::DropsDuplicate,
                now.duplicates_received - was.duplicates_received,
            ),
            (
                GroupMetric::DropsHoldBackFull,
                now.dropped_holdback_full - was.dropped_holdback_full,
            ),
        ];
        for (m, n) in deltas {
            if n > 0 {
                stats.add(m, n);
            }
        }
        let stalls = self.counters.window_stalls.load(Ordering::Relaxed);
        if stalls > self.window_stalls_published {
            stats.add(
                GroupMetric::WindowStalls,
                stalls - self.window_stalls_published,
            );
            self.window_stalls_published = stalls;
        }
        self.bytes_sent_unpublished = 0;
        self.bytes_delivered_unpublished = 0;
        now.dropped_malformed - was.dropped_malformed
    }

    /// A request that will not go out: its waiter hears why.
    fn refuse(&self, waiter: Option<Waiter>, why: RequestError) {
        if let Some(w) = waiter {
            let _ = w.done.try_send(Err(why));
            self.counters
                .requests_outstanding
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A request went out: wait for its replies (none wanted: answered at once).
    fn await_replies(&mut self, w: Waiter) {
        let o = Outstanding {
            want: w.want,
            expected: None,
            replies: Vec::new(),
            done: w.done,
        };
        if w.want == Want::None {
            let _ = o.done.try_send(Ok(Vec::new()));
            self.counters
                .requests_outstanding
                .fetch_sub(1, Ordering::Relaxed);
        } else {
            self.outstanding.insert(w.id, o);
        }
    }

    /// Answers the requests that have what they wait for.
    fn complete_requests(&mut self) {
        let counters = &self.counters;
        self.outstanding.retain(|_, o| {
            if !o.is_complete() {
                return true;
            }
            let _ = o.done.try_send(Ok(std::mem::take(&mut o.replies)));
            counters
                .requests_outstanding
                .fetch_sub(1, Ordering::Relaxed);
            false
        });
    }

    /// Every request waiting fails with `why` (the member blocked or left).
    fn fail_requests(&mut self, why: RequestError) {
        for (_, o) in self.outstanding.drain() {
            let _ = o.done.try_send(Err(why));
            self.counters
                .requests_outstanding
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sends the replies owed, while the window has room.
    fn send_replies(&mut self, now: Time) -> bool {
        let mut work = false;
        while let Some(r) = self.replies_out.front() {
            match self.endpoint.send(now, Order::Fifo, false, r) {
                Ok(_) => {
                    work = true;
                    self.replies_out.pop_front();
                }
                Err(GroupSendError::WouldBlock | GroupSendError::NotInstalled) => break,
                Err(GroupSendError::Leaving | GroupSendError::TooLarge { .. }) => {
                    self.counters
                        .replies_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    self.replies_out.pop_front();
                }
            }
        }
        work
    }

    /// Feeds staged records to the endpoint; true if any was taken.
    fn take_requests(&mut self, now: Time) -> bool {
        let mut work = self.send_replies(now);
        let incarnation = self.counters.incarnation.load(Ordering::Relaxed);
        let (mut sent, mut dropped) = (0u64, 0u64);
        for _ in 0..STAGED_RECORDS_PER_GROUP_PER_TURN_MAX {
            if !self
                .taken
                .refill(&self.stage, self.endpoint.payload_bytes_max())
            {
                break;
            }
            let Some(r) = self.taken.peek() else {
                // Unreachable (the handles write whole records): drop the rest, not stall.
                debug_assert!(false, "a torn record in the send stage");
                self.taken.clear();
                break;
            };
            let (kind, numbered) = (r.kind, r.incarnation);
            // Bundles of plain sends numbered in this incarnation gather into one bundle of
            // their order: one record for all of them (see `Member::send_bundle`).
            if kind == Kind::Bundle && numbered == incarnation {
                let key = (r.order, r.safe);
                if self.bundle.is_empty() {
                    // A lone message that the next staged record will not join goes to the
                    // member straight from the stage: one copy of its payload (into the log)
                    // instead of two (into the bundle, then into the log), with the same
                    // record on the wire. Large payloads are mostly alone in their bundle.
                    let max = self.endpoint.payload_bytes_max();
                    if let Some(one) = lone_message(&r).filter(|m| m.len() <= max) {
                        let joins = self.taken.peek_next().is_some_and(|n| {
                            n.kind == Kind::Bundle
                                && n.incarnation == incarnation
                                && (n.order, n.safe) == key
                                && r.bundle_len() + n.payload.len() <= max
                        });
                        if !joins {
                            match self.endpoint.send(now, r.order, r.safe, one) {
                                Ok(_) => {
                                    let body = one.len() - framing::PLAIN_HEADER_BYTES;
                                    self.bytes_sent_unpublished += body as u64;
                                    self.stalled = false;
                                    sent += 1;
                                }
                                Err(GroupSendError::WouldBlock | GroupSendError::NotInstalled) => {
                                    self.note_stalled();
                                    break;
                                }
                                Err(GroupSendError::Leaving) => dropped += 1,
                                Err(GroupSendError::TooLarge { len, max }) => {
                                    // Checked against the member's limit just above.
                                    debug_assert!(false, "lone message of {len} B past {max} B");
                                    dropped += 1;
                                }
                            }
                            self.taken.advance();
                            work = true;
                            continue;
                        }
                    }
                    self.bundle_key = key;
                    self.bundle_incarnation = incarnation;
                    self.bundle_bytes_max = max;
                    // Staged under a larger limit than the member's now (the view changed):
                    // it is taken whole and goes out split (see `send_bundle`).
                    self.bundle_splitting = r.bundle_len() > self.bundle_bytes_max;
                }
                let before = self.bundle.count();
                let taken = if self.bundle.is_empty() {
                    let max = if self.bundle_splitting {
                        usize::MAX
                    } else {
                        self.bundle_bytes_max
                    };
                    self.bundle.extend_entries(r.count, r.payload, max)
                } else {
                    self.bundle_key == key
                        && !self.bundle_splitting
                        && self
                            .bundle
                            .extend_entries(r.count, r.payload, self.bundle_bytes_max)
                };
                if taken {
                    // Application bytes: without the bundle's lengths and the framing.
                    let n = usize::from(self.bundle.count() - before);
                    let beside = wire::BUNDLE_HEADER_BYTES
                        + n * (wire::BUNDLE_ENTRY_HEADER_BYTES + framing::PLAIN_HEADER_BYTES);
                    self.bundle_app_bytes += r.bundle_len().saturating_sub(beside) as u64;
                    self.taken.advance();
                    work = true;
                    continue;
                }
                if self.bundle.is_empty() {
                    // Unreachable (the handles write whole bundles): dropped, not stalled.
                    debug_assert!(false, "an empty bundle record in the send stage");
                    dropped += 1;
                    self.taken.advance();
                    continue;
                }
                // Else the bundle so far goes first; this record is looked at again.
            }
            // Anything else keeps its place behind the bundle gathered so far.
            if !self.bundle.is_empty() {
                match self.send_bundle(now, incarnation) {
                    Ok(n) => sent += n,
                    Err(None) => break,
                    Err(Some(n)) => dropped += n,
                }
                continue; // the record is looked at again
            }
            if kind == Kind::Bundle {
                // Numbered before this member blocked: never sent under the next
                // incarnation's numbers.
                dropped += u64::from(r.count);
                self.taken.advance();
                work = true;
                continue;
            }
            if kind == Kind::Flush {
                work = true;
                let done = self.taken.flushes.pop_front();
                self.taken.advance();
                match done {
                    // Refused past the bound: the waiter sees a disconnect.
                    Some(_) if self.flush_waiters.len() >= FLUSH_WAITERS_PER_GROUP_MAX => {}
                    Some(done) => self.flush_waiters.push((self.endpoint.flush_point(), done)),
                    None => {}
                }
                continue;
            }
            let result = if numbered != incarnation {
                // Numbered before this member blocked: never sent under the next
                // incarnation's numbers.
                Err(RequestError::Blocked)
            } else {
                match self.endpoint.send(now, r.order, r.safe, r.payload) {
                    Ok(_) => {
                        // Application bytes: without the runtime's framing.
                        let body = r.payload.len().saturating_sub(framing::PLAIN_HEADER_BYTES);
                        self.bytes_sent_unpublished += body as u64;
                        Ok(())
                    }
                    Err(GroupSendError::WouldBlock | GroupSendError::NotInstalled) => {
                        self.note_stalled();
                        break;
                    }
                    Err(GroupSendError::Leaving) => Err(RequestError::Closed),
                    Err(GroupSendError::TooLarge { len, max }) => {
                        // The group handle checks the size first; this is a programming
                        // error in the runtime, not input. Dropped.
                        debug_assert!(false, "payload of {len} B past {max} B reached the member");
                        tracing::error!(len, max, "oversized payload reached the member");
                        Err(RequestError::Closed)
                    }
                }
            };
            work = true;
            self.stalled = false;
            let waiter = match kind {
                Kind::Request => self.taken.waiters.pop_front(),
                _ => None,
            };
            self.taken.advance();
            match result {
                Ok(()) => {
                    sent += 1;
                    if let Some(w) = waiter {
                        self.await_replies(w);
                    }
                }
                Err(why) => {
                    dropped += 1;
                    self.refuse(waiter, why);
                }
            }
        }
        if !self.bundle.is_empty() {
            // What the stage held last, or a bundle the window refused last turn.
            match self.send_bundle(now, incarnation) {
                Ok(n) => sent += n,
                Err(None) => {}
                Err(Some(n)) => dropped += n,
            }
        }
        if sent > 0 {
            self.counters.sent.fetch_add(sent, Ordering::Relaxed);
        }
        if dropped > 0 {
            self.counters
                .sends_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        work
    }

    fn note_stalled(&mut self) {
        if !self.stalled {
            self.stalled = true;
            self.counters.window_stalls.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends the bundle gathered from the stage: `Ok(messages sent)`, `Err(None)` when the
    /// window (or a view change) holds it back — it is kept, in front of everything staged
    /// after it — or `Err(Some(messages dropped))`.
    fn send_bundle(&mut self, now: Time, incarnation: u64) -> Result<u64, Option<u64>> {
        let count = u64::from(self.bundle.count());
        if self.bundle_incarnation != incarnation {
            // Numbered before this member blocked (see the plain path).
            return Err(Some(self.discard_bundle()));
        }
        let (order, safe) = self.bundle_key;
        let result = if self.bundle_splitting {
            Err(GroupSendError::TooLarge { len: 0, max: 0 })
        } else {
            self.endpoint
                .send_bundle(now, order, safe, &mut self.bundle)
        };
        match result {
            Ok(_) => {
                self.stalled = false;
                self.bytes_sent_unpublished += std::mem::take(&mut self.bundle_app_bytes);
                if count > 1 {
                    self.counters.bundles_sent.fetch_add(1, Ordering::Relaxed);
                }
                // With `discard_own`, the member delivered the bundle as it took it.
                let discarded = self.endpoint.take_discarded_own();
                if discarded > 0 {
                    self.counters
                        .own_discarded
                        .fetch_add(discarded, Ordering::Relaxed);
                }
                Ok(count)
            }
            Err(GroupSendError::WouldBlock | GroupSendError::NotInstalled) => {
                self.note_stalled();
                Err(None)
            }
            Err(GroupSendError::Leaving) => Err(Some(self.discard_bundle())),
            Err(GroupSendError::TooLarge { .. }) => {
                // The view changed under a bundle the window held back, and records shrank:
                // its messages go out one by one (each within the limit it was staged
                // under), from where the last try stopped.
                self.bundle_splitting = true;
                let (mut sent, mut dropped) = (0u64, 0u64);
                for m in self.bundle.messages().skip(self.bundle_split_done) {
                    match self.endpoint.send(now, order, safe, m) {
                        Ok(_) => sent += 1,
                        Err(GroupSendError::WouldBlock | GroupSendError::NotInstalled) => {
                            self.note_stalled();
                            self.counters.sent.fetch_add(sent, Ordering::Relaxed);
                            self.counters
                                .sends_dropped
                                .fetch_add(dropped, Ordering::Relaxed);
                            return Err(None);
                        }
                        Err(GroupSendError::Leaving) => dropped += 1,
                        Err(e) => {
                            tracing::error!(error = %e, "a bundled message could not be sent");
                            dropped += 1;
                        }
                    }
                    self.bundle_split_done += 1;
                }
                self.stalled = false;
                self.bundle.clear();
                self.bundle_splitting = false;
                self.bundle_split_done = 0;
                self.bytes_sent_unpublished += std::mem::take(&mut self.bundle_app_bytes);
                self.counters
                    .sends_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
                Ok(sent)
            }
        }
    }

    /// Drops the bundle (and a split of it under way); returns how many of its messages
    /// were never sent.
    fn discard_bundle(&mut self) -> u64 {
        let unsent = u64::from(self.bundle.count()).saturating_sub(self.bundle_split_done as u64);
        self.bundle.clear();
        self.bundle_app_bytes = 0;
        self.bundle_splitting = false;
        self.bundle_split_done = 0;
        unsent
    }

    /// Whether every record staged so far was fed to the endpoint.
    fn sends_in(&self) -> bool {
        self.taken.is_done()
            && self.bundle.is_empty()
            && self.stage.lock().bytes.is_empty()
            && !self.stage.ring_pending()
    }

    /// Whether the application staged something the poller can take now (records behind a
    /// stalled one wait for the window, which a datagram opens). Always locks the stage: the
    /// doorbell's ordering argument (`Doorbell::ring_staged`) needs this lock after the flag.
    ///
    /// The publisher ring needs no lock: its sender fences between its tail and the flag
    /// (`Doorbell::ring`), and the poller fenced after raising it. A publisher that let go
    /// counts as work until the poller gave the group back to the handles.
    pub fn has_staged(&self) -> bool {
        let staged = {
            let s = self.stage.lock();
            !s.bytes.is_empty() || s.exclusive == Exclusive::Draining
        };
        (staged || self.stage.ring_pending()) && self.taken.is_done()
    }

    fn answer_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let ep = &self.endpoint;
        self.flush_waiters.retain_mut(|(point, done)| {
            if point.is_none() {
                *point = ep.flush_point(); // known once held sends are in a view
            }
            match point {
                Some(p) if ep.is_flushed(*p) => {
                    let _ = done.try_send(FlushOutcome::Done);
                    false
                }
                _ => true,
            }
        });
    }

    fn answer_all_flushes(&mut self, outcome: FlushOutcome) {
        for (_, done) in self.flush_waiters.drain(..) {
            let _ = done.try_send(outcome);
        }
    }

    /// Runs one upcall, catching a panic: a panicking handler takes its group down, not
    /// the poller's other groups. False if it panicked.
    fn upcall(&mut self, f: impl FnOnce(&mut dyn Handler)) -> bool {
        let handler = &mut *self.handler;
        guard_upcalls(&self.name, &mut self.gone, || f(handler))
    }

    /// Hands events and deliveries to the handler (events first: a view's deliveries come
    /// after its announcement); true if any.
    fn deliver(&mut self) -> bool {
        let mut work = false;
        loop {
            let mut progress = false;
            while !self.gone {
                let Some(ev) = self.endpoint.poll_event() else {
                    break;
                };
                progress = true;
                self.on_event(ev);
            }
            let (mut count, mut discarded) = (0u64, 0u64);
            let mut polled = false;
            while !self.gone {
                let Some(d) = self.endpoint.poll_deliver() else {
                    break;
                };
                polled = true;
                let own_discarded = self.discard_own && d.sender == self.my_rank;
                if own_discarded && d.is_bundle() {
                    // A bundle holds plain messages only: skipped whole.
                    discarded += u64::from(d.count);
                    continue;
                }
                let sender_addr = self
                    .addrs
                    .get(d.sender as usize)
                    .copied()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                // Plain messages (what every bundle a member makes holds): one guarded loop
                // of upcalls, no per-message framing dispatch, and one `Delivery` whose
                // per-message fields are updated in place. It stops at the first message that
                // is not plain (a peer's odd bundle); the general loop below takes the rest.
                let mut skip = 0usize;
                if d.is_bundle() {
                    let mut delivery = Delivery {
                        group: &self.name,
                        view: d.view,
                        sender: d.sender,
                        sender_addr,
                        seq: d.seq,
                        order: d.order,
                        safe: d.safe,
                        event: self.events,
                        payload: &[],
                    };
                    let (mut delivered, mut bytes) = (0u64, 0u64);
                    let handler = &mut *self.handler;
                    guard_upcalls(&self.name, &mut self.gone, || {
                        deliver_plain_run(
                            d.body,
                            &mut delivery,
                            handler,
                            &mut delivered,
                            &mut bytes,
                        )
                    });
                    self.events += delivered;
                    count += delivered;
                    self.bytes_delivered_unpublished += bytes;
                    if delivered == u64::from(d.count) {
                        continue;
                    }
                    skip = delivered as usize;
                }
                for (seq, payload) in d.messages().skip(skip) {
                    if self.gone {
                        break; // the handler panicked
                    }
                    let (body, request) = match framing::parse(payload) {
                        framing::Framed::Plain(_) if own_discarded => {
                            discarded += 1;
                            continue;
                        }
                        framing::Framed::Plain(body) => (body, None),
                        framing::Framed::Request { id, want, body } => (body, Some((id, want))),
                        framing::Framed::Reply { id, null, to, body } => {
                            // For the requester only; no upcall.
                            if to == self.my_id.as_bytes() {
                                if let (Some(o), Some(from)) = (
                                    self.outstanding.get_mut(&id),
                                    self.ids.get(d.sender as usize),
                                ) {
                                    o.offer(Reply {
                                        from: from.clone(),
                                        addr: addr_of(from)
                                            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                                        payload: (!null).then(|| body.to_vec()),
                                    });
                                }
                            }
                            continue;
                        }
                    };
                    self.events += 1;
                    count += 1;
                    self.bytes_delivered_unpublished += body.len() as u64;
                    let delivery = Delivery {
                        group: &self.name,
                        view: d.view,
                        sender: d.sender,
                        sender_addr,
                        seq,
                        order: d.order,
                        safe: d.safe,
                        event: self.events,
                        payload: body,
                    };
                    let handler = &mut self.handler;
                    let mut answer = None;
                    let upcall = std::panic::AssertUnwindSafe(|| match request {
                        None => handler.on_deliver(&delivery),
                        Some(_) => answer = Some(handler.on_request(&delivery)),
                    });
                    if std::panic::catch_unwind(upcall).is_err() {
                        tracing::error!(group = %self.name, "the handler panicked; leaving the group");
                        self.gone = true;
                    }
                    let Some((id, want)) = request else { continue };
                    if d.sender == self.my_rank {
                        // Our own request: those asked are this view's members.
                        if let Some(o) = self.outstanding.get_mut(&id) {
                            o.expected.get_or_insert_with(|| self.ids.clone());
                        }
                    }
                    if want != Want::None {
                        let to = self.ids.get(d.sender as usize).map_or("", String::as_str);
                        let reply = framing::reply(id, to, answer.flatten().as_deref());
                        if self.replies_out.len() < REPLIES_QUEUED_MAX {
                            self.replies_out.push_back(reply);
                        } else {
                            self.counters
                                .replies_dropped
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            if polled {
                progress = true;
                self.counters.delivered.fetch_add(count, Ordering::Relaxed);
                if discarded > 0 {
                    self.counters
                        .own_discarded
                        .fetch_add(discarded, Ordering::Relaxed);
                }
                self.complete_requests();
            }
            work |= progress;
            if !progress || self.gone {
                return work;
            }
        }
    }

    fn on_event(&mut self, ev: GroupEvent) {
        match ev {
            GroupEvent::View(info) => self.announce_view(info),
            GroupEvent::Snapshot => {
                let mut state = Vec::new();
                if self.upcall(|h| state = h.snapshot()) {
                    self.endpoint.provide_snapshot(&state);
                }
            }
            GroupEvent::Restore(state) => {
                self.upcall(|h| h.restore(&state));
            }
            GroupEvent::Blocked => {
                self.counters.blocks.fetch_add(1, Ordering::Relaxed);
                self.counters.incarnation.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .view
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .view = None;
                self.answer_all_flushes(FlushOutcome::Blocked);
                self.fail_requests(RequestError::Blocked);
                self.replies_out.clear();
                self.addrs.clear();
                self.ids.clear();
                self.my_rank = u16::MAX;
                self.upcall(|h| h.on_block());
            }
            GroupEvent::Left => {
                self.answer_all_flushes(FlushOutcome::Done);
                self.fail_requests(RequestError::Closed);
                self.gone = true; // the leave is answered once the group is removed
            }
            GroupEvent::SendWindowOpen => {} // the stalled record is retried each turn
        }
    }

    fn announce_view(&mut self, info: ViewInfo) {
        self.events += 1;
        let members: Vec<SocketAddr> = info
            .members
            .iter()
            .map(|id| addr_of(id).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))))
            .collect();
        self.addrs = members.clone();
        self.ids = info.members.clone();
        self.my_rank = info.rank;
        self.my_id = info
            .members
            .get(info.rank as usize)
            .cloned()
            .unwrap_or_default();
        self.peers_changed = true;
        // Members asked by a request of ours that are gone without answering: null replies.
        for o in self.outstanding.values_mut() {
            let Some(expected) = &o.expected else {
                continue;
            };
            for m in expected {
                if !info.members.contains(m) && !o.replies.iter().any(|r| r.from == *m) {
                    o.replies.push(Reply {
                        from: m.clone(),
                        addr: addr_of(m).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                        payload: None,
                    });
                }
            }
        }
        self.complete_requests();
        let view = View {
            group: self.name.clone(),
            id: info.id,
            members,
            member_ids: info.members,
            rank: info.rank,
            event: self.events,
        };
        self.counters.views.fetch_add(1, Ordering::Relaxed);
        if let Some(stats) = &self.stats {
            stats.add(GroupMetric::ViewChanges, 1);
        }
        self.counters
            .view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .view = Some(view.clone());
        self.upcall(|h| h.on_view(&view));
        // After the upcall: a joiner's `join_with_seeds` returns with `on_view` already run.
        if let Some(tx) = self.installed.take() {
            let _ = tx.try_send(());
        }
    }

    /// A leave: asked of the endpoint once every send queued before it was taken (they go
    /// out in the last view); past its bound the group goes anyway.
    fn check_leave(&mut self, now: Time) {
        if let Some((deadline, _)) = &self.leaving {
            let sends_in = self.sends_in();
            // Not in a view (joining, blocked): queued sends have nowhere to go.
            if (sends_in || !self.endpoint.is_installed()) && !self.endpoint.is_leaving() {
                self.endpoint.leave(now);
            }
            if now >= *deadline {
                if let Some((_, done)) = self.leaving.take() {
                    let _ = done.try_send(LeaveOutcome::TimedOut);
                }
                self.gone = true;
            }
        }
    }
}

pub(crate) struct Poller {
    pub transport: Box<dyn Transport>,
    pub control: Receiver<Control>,
    pub clock: Clock,
    pub idle: Idle,
    pub trace: Option<Sender<Vec<TraceEvent>>>,
    pub counters: Arc<PollerCounters>,
    pub multicast: bool,
    doorbell: Arc<Doorbell>,
    groups: Vec<GroupSlot>,
    index: GroupIndex,
    batch: SendBatch,
    scratch: Vec<u8>,
    local: SocketAddr,
    backoff: Backoff,
    /// The node's counters file (removed when the poller stops) and this poller's counters.
    counters_file: Option<CountersFile>,
    stats: Option<PollerStats>,
    /// When the counters file's heartbeat was last written.
    heartbeat_at: Time,
    /// The clock as last read by a turn (for the heartbeat check: no extra clock read).
    last_now: Time,
}

/// Time between heartbeats of the counters file, in ns.
const HEARTBEAT_INTERVAL_NS: u64 = HEARTBEAT_INTERVAL_MS_RECOMMENDED * 1_000_000;

impl Poller {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        transport: Box<dyn Transport>,
        control: Receiver<Control>,
        clock: Clock,
        idle: Idle,
        trace: Option<Sender<Vec<TraceEvent>>>,
        counters: Arc<PollerCounters>,
        multicast: bool,
        counters_file: Option<CountersFile>,
        doorbell: Arc<Doorbell>,
    ) -> Result<Self, CountersError> {
        let datagram_bytes_max = transport.datagram_bytes_max();
        let local = transport.local_addr();
        let stats = counters_file
            .as_ref()
            .map(|f| PollerStats::register(f, 0))
            .transpose()?;
        if let Some(f) = &counters_file {
            f.heartbeat();
        }
        let now = clock.now();
        Ok(Poller {
            transport,
            control,
            clock,
            idle,
            trace,
            counters,
            multicast,
            doorbell,
            groups: Vec::new(),
            index: GroupIndex::default(),
            batch: SendBatch::new(SEND_BATCH_DATAGRAMS_MAX, datagram_bytes_max),
            scratch: vec![0; datagram_bytes_max],
            local,
            backoff: Backoff::default(),
            counters_file,
            stats,
            heartbeat_at: now,
            last_now: now,
        })
    }

    /// Runs until [`Control::Shutdown`] or the node's handle is gone.
    pub fn run(mut self) {
        while let Some(work) = self.step() {
            if !work {
                self.wait();
            }
        }
        self.finish();
    }

    /// One turn with its control commands and counters: whether it did anything, or `None`
    /// once told to stop. An invoker-mode node runs these on the application's thread.
    pub fn step(&mut self) -> Option<bool> {
        let (work, stop) = self.take_control();
        if stop {
            return None;
        }
        let work = self.turn() || work;
        self.counters.turns.fetch_add(1, Ordering::Relaxed);
        if let Some(stats) = &self.stats {
            stats.on_cycle(work);
            if self.last_now.0.saturating_sub(self.heartbeat_at.0) >= HEARTBEAT_INTERVAL_NS {
                self.heartbeat_at = self.last_now;
                if let Some(f) = &self.counters_file {
                    f.heartbeat();
                }
            }
        }
        if work {
            self.backoff.reset();
        }
        Some(work)
    }

    /// Last datagrams (best effort) and the last trace events.
    pub fn finish(&mut self) {
        let _ = self.turn();
        for i in 0..self.groups.len() {
            self.forward_trace(i);
        }
    }

    /// Returns (did something, stop).
    fn take_control(&mut self) -> (bool, bool) {
        let mut work = false;
        loop {
            match self.control.try_recv() {
                Ok(Control::Join { slot, done }) => {
                    work = true;
                    let result = self.join(*slot);
                    let _ = done.try_send(result);
                }
                Ok(Control::Leave {
                    group,
                    timeout_ns,
                    done,
                }) => {
                    work = true;
                    let now = self.clock.now();
                    match self.index.get(&group) {
                        Some(&i) => {
                            // The endpoint is told once the sends queued before are in.
                            self.groups[i].leaving = Some((now.plus_nanos(timeout_ns), done));
                        }
                        None => {
                            let _ = done.try_send(LeaveOutcome::NotJoined);
                        }
                    }
                }
                Ok(Control::Shutdown) | Err(TryRecvError::Disconnected) => return (work, true),
                Err(TryRecvError::Empty) => return (work, false),
            }
        }
    }

    fn join(&mut self, mut slot: GroupSlot) -> Result<(), String> {
        if self.index.contains_key(&slot.id) {
            return Err(format!(
                "group id {:#x} of {:?} is already joined on this node (same name, or a hash clash)",
                slot.id, slot.name
            ));
        }
        if let Some(file) = &self.counters_file {
            match GroupStats::register(file, &slot.name) {
                Ok(stats) => slot.stats = Some(stats),
                Err(e) => {
                    tracing::warn!(group = %slot.name, error = %e, "group joined without counters")
                }
            }
        }
        self.groups.push(slot);
        self.reindex();
        let i = self.groups.len() - 1;
        self.forward_trace(i);
        Ok(())
    }

    /// Removes the groups that are done here (left, leave timed out, handler panicked).
    fn remove_gone(&mut self) {
        if !self.groups.iter().any(|g| g.gone) {
            return;
        }
        self.flush_batch_best_effort();
        for i in 0..self.groups.len() {
            if self.groups[i].gone {
                self.forward_trace(i);
            }
        }
        let mut left = Vec::new();
        self.groups.retain_mut(|g| {
            if g.gone {
                left.extend(g.leaving.take().map(|(_, done)| done));
            }
            !g.gone
        });
        self.reindex();
        // Answered after the group's state (its counters included) is gone.
        for done in left {
            let _ = done.try_send(LeaveOutcome::Left);
        }
    }

    /// Rebuilds the group index and, in fan-out mode, the transport's peer list (the union of
    /// every group's current view members but this node).
    fn reindex(&mut self) {
        for g in &mut self.groups {
            g.peers_changed = false;
        }
        self.index = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id, i))
            .collect::<GroupIndex>();
        if self.multicast {
            return;
        }
        let local = self.local;
        let mut union: Vec<SocketAddr> = self.groups.iter().flat_map(|g| g.peers(local)).collect();
        union.sort();
        union.dedup();
        self.transport.set_peers(&union);
        for g in &mut self.groups {
            let mut mine: Vec<SocketAddr> = g.peers(local).collect();
            mine.sort();
            mine.dedup();
            g.fanout_exact = mine == union;
        }
    }

    /// One turn; true if it did anything.
    fn turn(&mut self) -> bool {
        let now = self.clock.now();
        self.last_now = now;
        let mut work = self.receive(now);
        for g in &mut self.groups {
            work |= g.take_requests(now);
        }
        let now = self.clock.now();
        for i in 0..self.groups.len() {
            let g = &mut self.groups[i];
            if g.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                g.endpoint.handle_timeout(now);
            }
            work |= g.deliver();
            g.answer_flushes();
            g.check_leave(now);
            let malformed = g.publish_stats();
            if malformed > 0 {
                if let Some(stats) = &self.stats {
                    stats.on_drops(PollerDrop::Malformed, malformed);
                }
            }
            self.forward_trace(i);
        }
        if self.groups.iter().any(|g| g.peers_changed) {
            self.reindex();
        }
        work |= self.transmit(now);
        self.remove_gone();
        if !work {
            for g in &self.groups {
                g.counters
                    .settled
                    .store(g.endpoint.is_settled(), Ordering::Relaxed);
            }
        }
        work
    }

    fn receive(&mut self, now: Time) -> bool {
        let Poller {
            transport,
            groups,
            index,
            counters,
            local,
            stats,
            ..
        } = self;
        let local = *local;
        let mut bytes_received = 0u64;
        let result = transport.recv(RECV_BATCH_DATAGRAMS_MAX, &mut |src, bytes| {
            bytes_received += bytes.len() as u64;
            if src == local {
                return; // our own multicast, looped back
            }
            let header = bytes
                .get(..FRAME_HEADER_BYTES)
                .and_then(|b| bytemuck::try_from_bytes::<FrameHeader>(b).ok());
            let Some(header) = header else {
                counters.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                if let Some(s) = stats {
                    s.on_drop(PollerDrop::Malformed);
                }
                return;
            };
            match index.get(&header.group()) {
                Some(&i) => groups[i].endpoint.handle_datagram(now, bytes),
                None => {
                    counters
                        .dropped_unknown_group
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(s) = stats {
                        s.on_drop(PollerDrop::WrongGroup);
                    }
                }
            }
        });
        match result {
            Ok(n) => {
                counters
                    .datagrams_received
                    .fetch_add(n as u64, Ordering::Relaxed);
                if n > 0 {
                    if let Some(s) = stats {
                        s.on_recv_batch(n, bytes_received);
                    }
                }
                n > 0
            }
            Err(e) => {
                tracing::warn!(error = %e, "receive failed");
                false
            }
        }
    }

    /// Sends what is left of the batch; if it all went, fills a new batch from the members
    /// and sends it. True if anything was sent.
    fn transmit(&mut self, now: Time) -> bool {
        if !self.batch.is_empty() {
            let sent = self.send_batch();
            if !self.batch.is_empty() {
                return sent; // back pressure: retry next turn, do not pile up more
            }
        }
        let mut filled = false;
        let local = self.local;
        'groups: for g in &mut self.groups {
            let copies = if self.multicast || g.fanout_exact {
                1
            } else {
                g.addrs.len().saturating_sub(1).max(1)
            };
            loop {
                if SEND_BATCH_DATAGRAMS_MAX - self.batch.len() < copies {
                    break 'groups;
                }
                // The endpoint writes straight into the batch; the destination is known after.
                let max = self.scratch.len();
                let buf = match self.batch.alloc(Dest::Group, max) {
                    Ok(buf) => buf,
                    Err(e) => {
                        debug_assert!(false, "send batch refused a datagram: {e}");
                        tracing::error!(error = %e, "send batch refused a datagram");
                        break 'groups;
                    }
                };
                let Some(t) = g.endpoint.poll_transmit(now, buf) else {
                    self.batch.pop_last();
                    break;
                };
                self.batch.truncate_last(t.len);
                match t.dest {
                    membership::Dest::View if copies == 1 => {}
                    membership::Dest::View => {
                        // Fan-out to a member set other than the transport's: one copy per
                        // peer (rare: groups on one node with different member lists).
                        let last = self.batch.len() - 1;
                        self.scratch[..t.len].copy_from_slice(self.batch.datagram(last));
                        self.batch.pop_last();
                        let bytes = &self.scratch[..t.len];
                        let pushed = g
                            .addrs
                            .iter()
                            .filter(|a| **a != local)
                            .try_for_each(|a| self.batch.push(Dest::Addr(*a), bytes));
                        if let Err(e) = pushed {
                            debug_assert!(false, "send batch refused a datagram: {e}");
                            tracing::error!(error = %e, "send batch refused a datagram");
                        }
                    }
                    membership::Dest::Node(id) => match addr_of(id) {
                        Some(a) => self.batch.set_last_dest(Dest::Addr(a)),
                        None => {
                            self.counters
                                .dropped_bad_dest
                                .fetch_add(1, Ordering::Relaxed);
                            self.batch.pop_last();
                        }
                    },
                }
                filled = true;
            }
        }
        if filled {
            self.send_batch();
        }
        filled
    }

    /// One send call; keeps what the transport did not take. True if anything went.
    fn send_batch(&mut self) -> bool {
        self.counters.send_calls.fetch_add(1, Ordering::Relaxed);
        match self.transport.send(&self.batch) {
            Ok(n) => {
                self.counters
                    .datagrams_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
                if n > 0 {
                    if let Some(s) = &self.stats {
                        let bytes: usize = (0..n).map(|i| self.batch.datagram(i).len()).sum();
                        s.on_send_batch(n, bytes as u64);
                    }
                }
                self.batch.consume(n);
                n > 0
            }
            Err(e) => {
                // The first datagram of the batch is the one refused: drop it (the protocol
                // repairs losses) and keep the rest.
                tracing::debug!(error = %e, "send refused a datagram; dropped");
                self.counters
                    .dropped_send_error
                    .fetch_add(1, Ordering::Relaxed);
                self.batch.consume(1);
                true
            }
        }
    }

    fn flush_batch_best_effort(&mut self) {
        for _ in 0..SEND_BATCH_DATAGRAMS_MAX {
            if self.batch.is_empty() {
                break;
            }
            self.send_batch();
        }
    }

    fn forward_trace(&mut self, i: usize) {
        if let Some(tx) = &self.trace {
            let events = self.groups[i].endpoint.take_trace();
            if !events.is_empty() && tx.send(events).is_err() {
                tracing::error!("trace writer stopped; trace events lost");
                self.trace = None;
            }
        }
    }

    /// Idles per the strategy, never past the members' next deadline.
    pub fn wait(&mut self) {
        let now = self.clock.now();
        let deadline = self
            .groups
            .iter()
            .filter_map(|g| g.endpoint.poll_timeout())
            .min();
        let until = |cap_ns: u64| {
            let cap = Duration::from_nanos(cap_ns);
            deadline.map_or(cap, |d| Clock::until(now, d).min(cap))
        };
        let backlog = !self.batch.is_empty();
        match self.idle {
            Idle::BusySpin => std::thread::yield_now(),
            // Datagrams the transport did not take yet: retried soon, never parked on.
            Idle::Backoff if backlog => std::hint::spin_loop(),
            Idle::Backoff => match self.backoff.idle_turn() {
                BackoffStep::Spin => std::hint::spin_loop(),
                BackoffStep::Yield => std::thread::yield_now(),
                BackoffStep::Park(ns) => self.sleep(until(ns)),
            },
            Idle::Blocking => {
                if backlog {
                    std::thread::yield_now();
                } else {
                    self.sleep(until(BLOCKING_WAIT_NS_MAX));
                }
            }
        }
    }

    /// Waits in the transport for a datagram, an application's doorbell or `wait`, whichever
    /// comes first (see [`Doorbell`]).
    fn sleep(&mut self, wait: Duration) {
        if wait.is_zero() {
            return;
        }
        self.doorbell.sleep();
        let work = !self.control.is_empty() || self.groups.iter().any(GroupSlot::has_staged);
        if !work {
            if let Err(e) = self.transport.wait_readable(wait) {
                tracing::warn!(error = %e, "wait_readable failed");
                std::thread::park_timeout(wait);
            }
        }
        self.doorbell.wake_up();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle body (count, then each message with its u16 length) of framed messages.
    fn bundle(framed: &[Vec<u8>]) -> Vec<u8> {
        let mut b = (framed.len() as u16).to_le_bytes().to_vec();
        for m in framed {
            b.extend_from_slice(&(m.len() as u16).to_le_bytes());
            b.extend_from_slice(m);
        }
        b
    }

    fn plain(body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        framing::push_plain(&mut m);
        m.extend_from_slice(body);
        m
    }

    #[derive(Default)]
    struct Seen(Vec<(u64, u64, Vec<u8>)>);

    impl Handler for Seen {
        fn on_deliver(&mut self, d: &Delivery<'_>) {
            self.0.push((d.seq.0, d.event, d.payload.to_vec()));
        }
    }

    fn delivery(seq: u64, event: u64) -> Delivery<'static> {
        Delivery {
            group: "g",
            view: 1,
            sender: 0,
            sender_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            seq: Seq(seq),
            order: Order::Fifo,
            safe: false,
            event,
            payload: &[],
        }
    }

    #[test]
    fn a_plain_bundle_is_delivered_whole_with_consecutive_numbers_and_events() {
        let body = bundle(&[plain(b"a"), plain(b""), plain(b"ccc")]);
        let (mut seen, mut d) = (Seen::default(), delivery(7, 100));
        let (mut delivered, mut bytes) = (0, 0);
        deliver_plain_run(&body, &mut d, &mut seen, &mut delivered, &mut bytes);
        assert_eq!((delivered, bytes), (3, 4));
        let want = [
            (7, 101, b"a".to_vec()),
            (8, 102, vec![]),
            (9, 103, b"ccc".to_vec()),
        ];
        assert_eq!(seen.0, want);
    }

    #[test]
    fn the_plain_run_stops_at_the_first_message_that_is_not_plain() {
        let mut request = Vec::new();
        framing::push_request(&mut request, 5, Want::None);
        request.extend_from_slice(b"ask");
        let body = bundle(&[plain(b"x"), plain(b"y"), request, plain(b"z")]);
        let (mut seen, mut d) = (Seen::default(), delivery(1, 0));
        let (mut delivered, mut bytes) = (0, 0);
        deliver_plain_run(&body, &mut d, &mut seen, &mut delivered, &mut bytes);
        // The rest (the request and what follows it) is the general loop's, from number 3.
        assert_eq!((delivered, bytes), (2, 2));
        assert_eq!(seen.0, [(1, 1, b"x".to_vec()), (2, 2, b"y".to_vec())]);
    }

    fn reply(from: &str, payload: Option<&[u8]>) -> Reply {
        Reply {
            from: from.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            payload: payload.map(<[u8]>::to_vec),
        }
    }

    fn outstanding(want: Want) -> Outstanding {
        Outstanding {
            want,
            expected: Some(vec!["a".into(), "b".into(), "c".into()]),
            replies: Vec::new(),
            done: crossbeam_channel::bounded(1).0,
        }
    }

    #[test]
    fn a_request_takes_no_reply_after_it_has_what_it_waits_for() {
        // First: a null reply does not complete it, the first non-null one does; a second
        // non-null one arriving in the same turn is not taken.
        let mut o = outstanding(Want::First);
        o.offer(reply("c", None));
        o.offer(reply("a", Some(b"x")));
        o.offer(reply("b", Some(b"y")));
        let got: Vec<&str> = o.replies.iter().map(|r| r.from.as_str()).collect();
        assert_eq!(got, ["c", "a"]);
        assert!(o.is_complete());
        // Count(2): two non-null replies, then nothing.
        let mut o = outstanding(Want::Count(2));
        for (m, p) in [("a", b"1"), ("b", b"2"), ("c", b"3")] {
            o.offer(reply(m, Some(p)));
        }
        assert_eq!(o.replies.len(), 2);
        // All: every member's reply, nulls included.
        let mut o = outstanding(Want::All);
        o.offer(reply("a", None));
        o.offer(reply("b", Some(b"2")));
        assert!(!o.is_complete());
        o.offer(reply("c", None));
        assert_eq!(o.replies.len(), 3);
        assert!(o.is_complete());
    }

    #[test]
    fn the_group_index_finds_every_id_it_was_built_from_and_no_other() {
        let ids = [0xdead_beef_u32, 3, u32::MAX, 0, 77];
        let index: GroupIndex = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(index.get(id), Some(&i), "id {id:#x}");
        }
        for absent in [1, 4, 76, 78, 0xdead_beee, u32::MAX - 1] {
            assert!(!index.contains_key(&absent), "id {absent:#x}");
        }
        assert!(!GroupIndex::default().contains_key(&0));
    }
}

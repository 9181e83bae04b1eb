//! The data-plane poller loop (see the module documentation of [`crate::runtime`]).

use super::{Clock, Idle, BACKOFF_PARK_NS_MAX, BACKOFF_PARK_NS_MIN, BACKOFF_SPINS_MAX};
use super::{BACKOFF_YIELDS_MAX, BLOCKING_WAIT_NS_MAX};
use crate::node::{Delivery, Handler, View};
use crate::protocol::{self, Member, MemberStats, SendError as MemberSendError, Time};
use crate::stats::{GroupMetric, GroupStats, PollerDrop, PollerStats};
use crate::trace::TraceEvent;
use crate::wire::{FrameHeader, FRAME_HEADER_BYTES};
use crate::Order;
use cohort_transport::counters::{CountersError, CountersFile, HEARTBEAT_INTERVAL_MS_RECOMMENDED};
use cohort_transport::{Dest, SendBatch, Transport};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Datagrams taken per receive call.
pub const RECV_BATCH_DATAGRAMS_MAX: usize = 64;
/// Datagrams per send batch (one send call).
pub const SEND_BATCH_DATAGRAMS_MAX: usize = 64;
/// Requests taken from one group's queue per turn (so one busy group cannot starve the rest).
pub const REQUESTS_PER_GROUP_PER_TURN_MAX: usize = 256;
/// Flushes waiting per group; more are refused at once.
pub const FLUSH_WAITERS_PER_GROUP_MAX: usize = 64;
/// Recycled payload buffers handed back to the applications per group.
pub const RECYCLED_BUFFERS_PER_GROUP_MAX: usize = 256;

/// What an application asks of its group.
pub(crate) enum Request {
    Send {
        order: Order,
        safe: bool,
        payload: Vec<u8>,
    },
    /// Answer on `done` once every record appended before this request is stable.
    Flush { done: Sender<()> },
}

/// What the node asks of its poller.
pub(crate) enum Control {
    Join {
        slot: Box<GroupSlot>,
        done: Sender<Result<(), String>>,
    },
    Leave {
        group: u32,
        done: Sender<bool>,
    },
    Shutdown,
}

/// Counters and flags of one group, written by the poller, read by anyone.
#[derive(Debug, Default)]
pub(crate) struct GroupCounters {
    /// Application messages the member accepted.
    pub sent: AtomicU64,
    /// Messages delivered to the handler (all senders).
    pub delivered: AtomicU64,
    /// Times the member refused a send for a full window.
    pub window_stalls: AtomicU64,
    /// Everything known is stable and delivered, nothing waits to go out (updated when idle).
    pub settled: AtomicBool,
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
}

/// One group on a poller.
pub(crate) struct GroupSlot {
    pub id: u32,
    pub name: String,
    pub member: Member,
    pub handler: Box<dyn Handler>,
    pub members: Vec<SocketAddr>,
    pub requests: Receiver<Request>,
    pub recycle: Sender<Vec<u8>>,
    pub counters: Arc<GroupCounters>,
    /// The member's largest payload: the capacity a recycled buffer must have.
    payload_bytes_max: usize,
    /// A send the member refused (window full), retried when the window opens.
    pending: Option<Request>,
    flush_waiters: Vec<(u64, Sender<()>)>,
    events: u64,
    /// The handler panicked: the group is removed at the end of the turn.
    handler_panicked: bool,
    /// In fan-out mode: this group's peers are exactly the transport's peer list (so one
    /// `Dest::Group` datagram reaches them); otherwise one copy per peer is queued.
    fanout_exact: bool,
    /// The group's counters in the node's counters file (when it has one).
    stats: Option<GroupStats>,
    /// What of the member's counters and the runtime's own has been added to `stats`.
    published: MemberStats,
    window_stalls_published: u64,
    /// Payload bytes accepted / delivered since the last publication.
    bytes_sent_unpublished: u64,
    bytes_delivered_unpublished: u64,
}

impl GroupSlot {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u32,
        name: String,
        member: Member,
        handler: Box<dyn Handler>,
        members: Vec<SocketAddr>,
        requests: Receiver<Request>,
        recycle: Sender<Vec<u8>>,
        counters: Arc<GroupCounters>,
    ) -> Self {
        GroupSlot {
            payload_bytes_max: member.config().payload_bytes_max(),
            id,
            name,
            member,
            handler,
            members,
            requests,
            recycle,
            counters,
            pending: None,
            flush_waiters: Vec::new(),
            events: 0,
            handler_panicked: false,
            fanout_exact: true,
            stats: None,
            published: MemberStats::default(),
            window_stalls_published: 0,
            bytes_sent_unpublished: 0,
            bytes_delivered_unpublished: 0,
        }
    }

    /// Adds what the member and this slot counted since the last call to the group's
    /// counters (once per poller turn, not per message); returns the member's malformed
    /// drops since then (a poller-level cause). Nothing to do without a counters file.
    fn publish_stats(&mut self) -> u64 {
        let Some(stats) = &self.stats else {
            return 0;
        };
        let now = self.member.stats();
        let was = self.published;
        if now == was && self.bytes_sent_unpublished == 0 && self.bytes_delivered_unpublished == 0 {
            return 0;
        }
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
        self.published = now;
        now.dropped_malformed - was.dropped_malformed
    }

    /// Feeds queued requests to the member; true if any was taken.
    fn take_requests(&mut self, now: Time) -> bool {
        let mut work = false;
        for _ in 0..REQUESTS_PER_GROUP_PER_TURN_MAX {
            let (request, retry) = match self.pending.take() {
                Some(r) => (r, true),
                None => match self.requests.try_recv() {
                    Ok(r) => (r, false),
                    Err(_) => break,
                },
            };
            match request {
                Request::Send {
                    order,
                    safe,
                    mut payload,
                } => match (
                    payload.len() as u64,
                    self.member.send_owned(now, order, safe, &mut payload),
                ) {
                    (len, Ok(_)) => {
                        // The payload moved into the member's log; `payload` is now the log
                        // slot's previous buffer, handed back to the application for reuse.
                        work = true;
                        self.counters.sent.fetch_add(1, Ordering::Relaxed);
                        self.bytes_sent_unpublished += len;
                        self.recycle_buffer(payload);
                    }
                    (_, Err(MemberSendError::WouldBlock | MemberSendError::ViewEnding)) => {
                        if !retry {
                            self.counters.window_stalls.fetch_add(1, Ordering::Relaxed);
                        }
                        self.pending = Some(Request::Send {
                            order,
                            safe,
                            payload,
                        });
                        break;
                    }
                    (_, Err(MemberSendError::TooLarge { len, max })) => {
                        // The group handle checks the size first; this is a programming error
                        // in the runtime, not input. Dropped (and the sequence would skip).
                        debug_assert!(false, "payload of {len} B past {max} B reached the member");
                        tracing::error!(len, max, "oversized payload reached the member");
                    }
                },
                Request::Flush { done } => {
                    work = true;
                    if self.flush_waiters.len() >= FLUSH_WAITERS_PER_GROUP_MAX {
                        drop(done); // the waiter sees a disconnect: refused
                    } else {
                        let target = self.member.own_appended_through();
                        self.flush_waiters.push((target, done));
                    }
                }
            }
        }
        work
    }

    /// Offers a log slot's old buffer to the application's recycle queue: only buffers that
    /// hold any payload without growing (a fresh slot's empty buffer, or one grown only to a
    /// small control record, is dropped instead), and only while the queue has room.
    #[inline]
    fn recycle_buffer(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() >= self.payload_bytes_max {
            buffer.clear();
            let _ = self.recycle.try_send(buffer);
        }
    }

    fn answer_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let stable = self.member.own_stable_through();
        self.flush_waiters.retain(|(target, done)| {
            if *target <= stable {
                let _ = done.try_send(());
                false
            } else {
                true
            }
        });
    }

    /// Hands every deliverable message to the handler; true if any.
    fn deliver(&mut self) -> bool {
        let mut count = 0u64;
        while let Some(d) = self.member.poll_deliver() {
            self.events += 1;
            count += 1;
            self.bytes_delivered_unpublished += d.payload.len() as u64;
            let delivery = Delivery {
                group: &self.name,
                view: d.view,
                sender: d.sender,
                sender_addr: self.members[d.sender as usize],
                seq: d.seq,
                order: d.order,
                safe: d.safe,
                event: self.events,
                payload: d.payload,
            };
            let handler = &mut self.handler;
            let upcall = std::panic::AssertUnwindSafe(|| handler.on_deliver(&delivery));
            if std::panic::catch_unwind(upcall).is_err() {
                // A panicking handler takes its group down, not the poller's other groups.
                tracing::error!(group = %self.name, "the handler panicked; leaving the group");
                self.handler_panicked = true;
                break;
            }
        }
        while let Some(ev) = self.member.poll_event() {
            match ev {
                protocol::Event::SendWindowOpen => {} // the pending request is retried each turn
            }
        }
        if count > 0 {
            self.counters.delivered.fetch_add(count, Ordering::Relaxed);
        }
        count > 0
    }

    fn announce_view(&mut self) {
        self.events += 1;
        let view = View {
            group: self.name.clone(),
            id: self.member.config().view,
            members: self.members.clone(),
            rank: self.member.rank(),
            event: self.events,
        };
        self.handler.on_view(&view);
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
    groups: Vec<GroupSlot>,
    index: HashMap<u32, usize>,
    batch: SendBatch,
    scratch: Vec<u8>,
    local: SocketAddr,
    idle_turns: u32,
    park_ns: u64,
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
            groups: Vec::new(),
            index: HashMap::new(),
            batch: SendBatch::new(SEND_BATCH_DATAGRAMS_MAX, datagram_bytes_max),
            scratch: vec![0; datagram_bytes_max],
            local,
            idle_turns: 0,
            park_ns: BACKOFF_PARK_NS_MIN,
            counters_file,
            stats,
            heartbeat_at: now,
            last_now: now,
        })
    }

    /// Runs until [`Control::Shutdown`] or the node's handle is gone.
    pub fn run(mut self) {
        loop {
            let (work, stop) = self.take_control();
            if stop {
                break;
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
                self.idle_turns = 0;
                self.park_ns = BACKOFF_PARK_NS_MIN;
            } else {
                self.wait();
            }
        }
        // Last datagrams (best effort) and the last trace events.
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
                Ok(Control::Leave { group, done }) => {
                    work = true;
                    let found = self.leave(group);
                    let _ = done.try_send(found);
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
                Ok(stats) => {
                    stats.add(GroupMetric::ViewChanges, 1); // view 1 installed
                    slot.stats = Some(stats);
                }
                Err(e) => {
                    tracing::warn!(group = %slot.name, error = %e, "group joined without counters")
                }
            }
        }
        slot.announce_view();
        self.groups.push(slot);
        self.reindex();
        let i = self.groups.len() - 1;
        self.forward_trace(i);
        Ok(())
    }

    fn leave(&mut self, group: u32) -> bool {
        let Some(&i) = self.index.get(&group) else {
            return false;
        };
        self.flush_batch_best_effort();
        self.forward_trace(i);
        self.groups.remove(i);
        self.reindex();
        true
    }

    /// Rebuilds the group index and, in fan-out mode, the transport's peer list (the union of
    /// every group's members but this node).
    fn reindex(&mut self) {
        self.index = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id, i))
            .collect();
        if self.multicast {
            return;
        }
        let mut union: Vec<SocketAddr> = self
            .groups
            .iter()
            .flat_map(|g| g.members.iter().copied())
            .filter(|a| *a != self.local)
            .collect();
        union.sort();
        union.dedup();
        self.transport.set_peers(&union);
        for g in &mut self.groups {
            let mut mine: Vec<SocketAddr> = g
                .members
                .iter()
                .copied()
                .filter(|a| *a != self.local)
                .collect();
            mine.sort();
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
            if g.member.poll_timeout().is_some_and(|t| t <= now) {
                g.member.handle_timeout(now);
            }
            work |= g.deliver();
            g.answer_flushes();
            let malformed = g.publish_stats();
            if malformed > 0 {
                if let Some(stats) = &self.stats {
                    stats.on_drops(PollerDrop::Malformed, malformed);
                }
            }
            self.forward_trace(i);
        }
        work |= self.transmit(now);
        if self.groups.iter().any(|g| g.handler_panicked) {
            self.groups.retain(|g| !g.handler_panicked);
            self.reindex();
        }
        if !work {
            for g in &self.groups {
                g.counters
                    .settled
                    .store(g.member.is_settled(), Ordering::Relaxed);
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
                Some(&i) => groups[i].member.handle_datagram(now, bytes),
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
        'groups: for g in &mut self.groups {
            let copies = if self.multicast || g.fanout_exact {
                1
            } else {
                g.members.len().saturating_sub(1).max(1)
            };
            loop {
                if SEND_BATCH_DATAGRAMS_MAX - self.batch.len() < copies {
                    break 'groups;
                }
                // The member writes straight into the batch; the destination is known after.
                let max = self.scratch.len();
                let buf = match self.batch.alloc(Dest::Group, max) {
                    Ok(buf) => buf,
                    Err(e) => {
                        debug_assert!(false, "send batch refused a datagram: {e}");
                        tracing::error!(error = %e, "send batch refused a datagram");
                        break 'groups;
                    }
                };
                let Some(t) = g.member.poll_transmit(now, buf) else {
                    self.batch.pop_last();
                    break;
                };
                self.batch.truncate_last(t.len);
                match t.dest {
                    protocol::Dest::Group if copies == 1 => {}
                    protocol::Dest::Group => {
                        // Fan-out to a member set other than the transport's: one copy per
                        // peer (rare: groups on one node with different member lists).
                        let last = self.batch.len() - 1;
                        self.scratch[..t.len].copy_from_slice(self.batch.datagram(last));
                        self.batch.pop_last();
                        let bytes = &self.scratch[..t.len];
                        let pushed = g
                            .members
                            .iter()
                            .filter(|a| **a != self.local)
                            .try_for_each(|a| self.batch.push(Dest::Addr(*a), bytes));
                        if let Err(e) = pushed {
                            debug_assert!(false, "send batch refused a datagram: {e}");
                            tracing::error!(error = %e, "send batch refused a datagram");
                        }
                    }
                    protocol::Dest::Member(rank) => match g.members.get(rank as usize) {
                        Some(a) => self.batch.set_last_dest(Dest::Addr(*a)),
                        None => self.batch.pop_last(),
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
            let events = self.groups[i].member.take_trace();
            if !events.is_empty() && tx.send(events).is_err() {
                tracing::error!("trace writer stopped; trace events lost");
                self.trace = None;
            }
        }
    }

    /// Idles per the strategy, never past the members' next deadline.
    fn wait(&mut self) {
        let now = self.clock.now();
        let deadline = self
            .groups
            .iter()
            .filter_map(|g| g.member.poll_timeout())
            .min();
        let until = |cap_ns: u64| {
            let cap = Duration::from_nanos(cap_ns);
            deadline.map_or(cap, |d| Clock::until(now, d).min(cap))
        };
        let backlog = !self.batch.is_empty();
        match self.idle {
            Idle::BusySpin => std::hint::spin_loop(),
            Idle::Backoff => {
                self.idle_turns = self.idle_turns.saturating_add(1);
                if self.idle_turns <= BACKOFF_SPINS_MAX || backlog {
                    std::hint::spin_loop();
                } else if self.idle_turns <= BACKOFF_SPINS_MAX + BACKOFF_YIELDS_MAX {
                    std::thread::yield_now();
                } else {
                    let wait = until(self.park_ns);
                    if !wait.is_zero() {
                        if let Err(e) = self.transport.wait_readable(wait) {
                            tracing::warn!(error = %e, "wait_readable failed");
                            std::thread::park_timeout(wait);
                        }
                    }
                    self.park_ns = (self.park_ns * 2).min(BACKOFF_PARK_NS_MAX);
                }
            }
            Idle::Blocking => {
                let wait = until(BLOCKING_WAIT_NS_MAX);
                if backlog {
                    std::thread::yield_now();
                } else if !wait.is_zero() {
                    if let Err(e) = self.transport.wait_readable(wait) {
                        tracing::warn!(error = %e, "wait_readable failed");
                        std::thread::sleep(wait);
                    }
                }
            }
        }
    }
}

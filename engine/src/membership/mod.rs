//! Membership: a virtually synchronous group member over a sequence of views.
//!
//! An [`Endpoint`] is one process's membership in one group, sans-IO like the [`Member`] it
//! drives (one `Member` per view: streams, ordering and stability are per view). It adds
//! failure detection, view changes with flush, leader take-over, the primary-component rule,
//! joins with state transfer and graceful leaves. Inputs: datagrams, time, application sends
//! and calls (`leave`, `provide_snapshot`); outputs: datagrams ([`Endpoint::poll_transmit`]),
//! deliveries, [`GroupEvent`]s and the next deadline.
//!
//! # Failure detection
//! Every member sends a status frame at least every `heartbeat_ns` (the `Member` does); a
//! member not heard from for [`EndpointConfig::suspect_timeout_ns`] is *suspected*. A
//! suspicion is final: the member is excluded at the next view change and never readmitted
//! under the same id (it comes back as a new incarnation, `id#2`, with state transfer). The
//! *leader* is the lowest rank (oldest member) a member does not suspect; suspicions, leave
//! requests and join requests go to it, repeated until a view change covers them. A joiner
//! has the view only once its state transfer starts (after the provider installed it, with
//! retries every quarter of the change timeout), so the members it joins give it
//! [`EndpointConfig::change_timeout_ns`] more before its silence counts: under loss a joiner
//! was otherwise suspected right after admission, and a crash soon after left no majority.
//!
//! # View change (the flush)
//! 1. The leader proposes (ballot, who stays, who joins) to every member it does not suspect.
//! 2. A member accepting a ballot at least as high as any it accepted *stops* its stream
//!    (`Member::stop`: nothing new is sent in this view; application sends are held in a
//!    bounded queue and go out in the next view, whose sequence numbers they carry) and
//!    reports, per sender stream, what it holds contiguously, whether it has application
//!    state, and any cut it already fetched under an earlier ballot.
//! 3. With every report the leader decides the cut: the cut fetched under the highest
//!    earlier ballot if any report names one (a new leader *finishes* a change its
//!    predecessor may have committed somewhere), else per stream the most any member holds;
//!    and per stream a member holding it through the cut.
//! 4. Members NAK what they miss of the cut to those holders (receivers keep every record
//!    until it is stable, so a holder exists for every gap, see `protocol` "Ending a view")
//!    and report when they hold it all.
//! 5. With every member holding the cut the leader commits; each member delivers exactly the
//!    cut by the final rules (`Member::finish`) — orphans of failed senders beyond it are
//!    discarded — and installs the next view (id + 1, the kept members in rank order, then
//!    the joiners). Members that missed the commit repeat their "fetched" message to every
//!    member; whoever committed answers with the commit.
//!
//! A change in progress restarts under a higher ballot when the leader suspects a member it
//! waits for (or waited [`EndpointConfig::change_timeout_ns`] for it); if the leader fails,
//! the next oldest member becomes leader, and because members accept only rising ballots and
//! report the cut they fetched, it commits the same cut if anyone may have committed it
//! (the Paxos rule: any two majorities of the old view intersect).
//!
//! # Primary component
//! A view change needs a strict majority of the ending view alive and taking part (members
//! that leave gracefully take part in the change that removes them, so any number may
//! leave, down to the last one, who leaves alone): a member that
//! suspects half or more of its view *blocks* ([`GroupEvent::Blocked`], a `block` trace
//! event), delivers and sends nothing more under its id, and after
//! [`EndpointConfig::rejoin_delay_ns`] asks to join again as a new incarnation (seeds: the
//! members of its last view), to be admitted with state transfer once the partition heals.
//! With two members, losing one therefore blocks the survivor.
//!
//! # Joins and state transfer
//! A joiner sends `Join` to its seeds until admitted; members forward it to their leader,
//! which admits up to [`control::JOINERS_PER_CHANGE_MAX`] joiners per change. At the start
//! of the next view the lowest-ranked member with state asks its application for a snapshot
//! ([`GroupEvent::Snapshot`] → [`Endpoint::provide_snapshot`]; no delivery of the new view
//! happens before it) and streams it with the view's header to every member that lacks state
//! (module `state`). The joiner acknowledges and holds back the new view's messages
//! meanwhile, restores ([`GroupEvent::Restore`]) and only then installs the view (its first
//! `view` trace event) and delivers. If the sender fails mid-transfer, the joiner reports
//! "no state" in the next change and gets the next view's snapshot instead. A joiner that got
//! nothing of its stream keeps asking to join; a member of the view that gets such a request
//! (past the provider's first retry, the joiner unheard in the view) sends it a *view notice*,
//! the stream's header alone, so that it takes part in the view without state in any case
//! (else a provider failing before its first chunk got through left the view counting a
//! member that could not take part, and one more failure blocked a live majority).
//!
//! # What it trusts
//! Membership messages are decoded with every length checked; a message about another view,
//! from a rank that does not match its id, or with an impossible field is counted and
//! dropped. Members trust each other's honesty (authentication is a later issue).
//!
//! # Known limits
//! * A joiner holds back the new view's messages in its bounded logs while its state
//!   arrives: senders can run one log length ahead of it, then their windows wait for it.
//! * Messages held during a change are bounded by the send window; payloads held across a
//!   change are limited to what a view of [`EndpointConfig::members_max`] members accepts
//!   (the group's size limit: a leader admits no joiner past it).

pub mod control;
pub mod state;

use crate::protocol::{
    self, Bundle, Delivery, Event, Member, MemberConfig, SendError, Seq, Time, MEMBERS_MAX,
};
use crate::trace::TraceEvent;
use crate::wire::{Frame, FrameKind};
use crate::Order;
use control::{Cut, Envelope, Msg, Proposal, JOINERS_PER_CHANGE_MAX, RANK_NONE};
use state::{StateHeader, StateIn, StateOut};
use std::collections::VecDeque;
use std::sync::Arc;

/// Most membership messages queued for sending (they are repeated until answered, so one
/// dropped for lack of room is sent again).
pub const OUTBOX_MESSAGES_MAX: usize = 256;
/// Most join requests a leader keeps.
pub const JOIN_REQUESTS_MAX: usize = 64;
/// Most events queued for the application.
pub const EVENTS_MAX: usize = 64;

/// Configuration of one process's membership in one group.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub group_name: String,
    pub group: u32,
    /// This process's member id without incarnation (`host:port`, or a test name). Later
    /// incarnations are `id#2`, `id#3`, …
    pub id: String,
    /// Tuning of each view's [`Member`] (its view, members, rank and sequence bases are
    /// filled in per view; the status interval is scaled to the view's size).
    pub member: MemberConfig,
    /// A member not heard from for this long is suspected.
    pub suspect_timeout_ns: u64,
    /// Spacing of repeated membership messages (proposals, reports, joins, …).
    pub control_retry_ns: u64,
    /// A leader suspects a member that did not answer a phase of a view change in this time.
    pub change_timeout_ns: u64,
    /// A blocked member asks to rejoin after this long.
    pub rejoin_delay_ns: u64,
    /// State transfer: bytes per chunk, bytes in flight, largest state accepted.
    pub state_chunk_bytes: usize,
    pub state_window_bytes: u64,
    pub state_bytes_max: u64,
    /// The most members a view may have (at most [`MEMBERS_MAX`]): a leader admits no
    /// joiner past it, and payloads are limited to what a view of this size accepts (held
    /// sends go out in a view not known yet).
    pub members_max: usize,
    /// Record trace events.
    pub trace: bool,
}

impl EndpointConfig {
    /// Defaults for a LAN: heartbeats every 100 ms (the member's), suspicion after 1 s.
    pub fn new(group_name: &str, group: u32, id: &str) -> Self {
        let member = MemberConfig::new(group_name, group, 1, vec![id.to_owned()], 0);
        EndpointConfig {
            group_name: group_name.to_owned(),
            group,
            id: id.to_owned(),
            suspect_timeout_ns: 10 * member.heartbeat_ns,
            control_retry_ns: member.heartbeat_ns / 2,
            change_timeout_ns: 20 * member.heartbeat_ns,
            rejoin_delay_ns: 10 * member.heartbeat_ns,
            state_chunk_bytes: 1200,
            state_window_bytes: 256 << 10,
            state_bytes_max: 256 << 20,
            members_max: MEMBERS_MAX,
            trace: false,
            member,
        }
    }

    /// Sets the heartbeat and scales the failure detector and retries with it.
    pub fn with_heartbeat_ns(mut self, heartbeat_ns: u64) -> Self {
        self.member.heartbeat_ns = heartbeat_ns;
        self.suspect_timeout_ns = 10 * heartbeat_ns;
        self.control_retry_ns = heartbeat_ns / 2;
        self.change_timeout_ns = 20 * heartbeat_ns;
        self.rejoin_delay_ns = 10 * heartbeat_ns;
        self
    }
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest<'a> {
    /// Every other member of the current view ([`Endpoint::view_members`]).
    View,
    /// One process, by member id (its address is the id without `#incarnation`).
    Node(&'a str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub dest: Dest<'a>,
    pub len: usize,
}

/// A view as the application sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewInfo {
    pub id: u64,
    pub members: Vec<String>,
    pub rank: u16,
}

/// What the application must hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    /// A view is installed: deliveries and sends from here on are in it.
    View(ViewInfo),
    /// Call [`Endpoint::provide_snapshot`] with the application state now (every delivery of
    /// the ending view was handed out; none of the new view will be before the call).
    Snapshot,
    /// Load this state (the group's state at the start of the view announced next).
    Restore(Vec<u8>),
    /// This member is in a minority (or was excluded): it stopped; it will ask to rejoin as
    /// a new member, with state transfer.
    Blocked,
    /// The leave completed: this member's messages were delivered in its last view.
    Left,
    /// The send window has room again after a `WouldBlock`.
    SendWindowOpen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupSendError {
    #[error("send window full: retry after GroupEvent::SendWindowOpen")]
    WouldBlock,
    #[error("payload of {len} B exceeds the maximum of {max} B")]
    TooLarge { len: usize, max: usize },
    #[error("not a member of an installed view yet (joining or blocked)")]
    NotInstalled,
    #[error("leaving or left the group")]
    Leaving,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub views_installed: u64,
    pub changes_led: u64,
    pub suspicions: u64,
    pub blocks: u64,
    pub control_received: u64,
    pub control_sent: u64,
    /// Malformed or unexpected membership messages.
    pub control_dropped: u64,
    pub outbox_full: u64,
    pub state_bytes_sent: u64,
    pub state_bytes_received: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Asking seeds for admission.
    Joining,
    /// In a view (installed, or a member still waiting for its state).
    InView,
    /// Stopped in a minority; rejoining after the delay.
    Blocked,
    /// Left the view (its cut delivered); repeating the commit to the members that stay
    /// until each confirms it installed the next view (a commit lost on the way to them
    /// could otherwise only come from us: we may have been its leader, or the last other
    /// member of the view).
    Lingering,
    Left,
}

/// A view change as a member takes part in it.
#[derive(Debug)]
struct Taking {
    /// The ballot accepted and its leader's rank.
    ballot: u64,
    leader: u16,
    cut: Option<Cut>,
    /// The cut was fetched and reported.
    fetched: bool,
    next_send: Time,
}

#[derive(Clone, Debug)]
struct Report {
    held: Vec<u64>,
    installed: bool,
    accepted: Option<Cut>,
}

/// A view change as its leader runs it.
#[derive(Debug)]
struct Leading {
    proposal: Proposal,
    /// Ranks asked to take part (alive, including leavers).
    asked: u64,
    reports: Vec<Option<Report>>,
    cut: Option<Cut>,
    fetched: u64,
    stage_started: Time,
    next_send: Time,
}

/// One process's membership in one group.
pub struct Endpoint {
    cfg: EndpointConfig,
    me: String,
    incarnation: u32,
    seeds: Vec<String>,
    now: Time,
    phase: Phase,
    view: u64,
    members: Vec<String>,
    rank: u16,
    member: Option<Member>,
    /// The application has state for this view: deliveries and sends happen.
    installed: bool,
    /// The `view` trace event of a member waiting for its state (recorded at restore).
    pending_view_trace: Vec<TraceEvent>,
    suspected: Vec<bool>,
    leaving: bool,
    next_notice: Time,
    promised: u64,
    accepted: Option<Cut>,
    taking: Option<Taking>,
    leading: Option<Leading>,
    /// The commit this member is delivering (the view ends when the member finished).
    committing: Option<Cut>,
    join_requests: Vec<String>,
    leave_requests: u64,
    /// The last view we ended: its id, our rank in it, and its commit (for stragglers).
    last_commit: Option<(u64, u16, Cut)>,
    /// Lingering after a leave: the members of the next view that have not confirmed it yet,
    /// when to repeat the commit to them, and when to stop anyway.
    linger: Vec<String>,
    /// Members of the next view that confirmed it before this leaver installed it (their
    /// confirmation came while the cut was still being delivered here).
    confirmed_early: Vec<String>,
    linger_next: Time,
    linger_until: Time,
    /// No member can be suspected before this time (see `advance_in_view`).
    suspect_check_at: Time,
    /// Per rank of the current view: a joiner admitted by it is not suspected before this
    /// (ns) — it starts sending only once it has the view, which comes with its state
    /// transfer and may take retries (see `install_next`); 0 for everyone else.
    joiner_grace_until: Vec<u64>,
    next_join: Time,
    held: VecDeque<(Order, bool, Vec<u8>)>,
    held_blocked: bool,
    /// The sequence number of the last message accepted from the application.
    last_seq: u64,
    state_out: Vec<StateOut>,
    state_turn: bool,
    snapshot_for: u64,
    state_in: Option<StateIn>,
    restore_ready: Option<(Vec<u8>, ViewInfo)>,
    outbox: VecDeque<(String, Envelope)>,
    tx_dest: String,
    events: VecDeque<GroupEvent>,
    trace: Vec<TraceEvent>,
    stats: EndpointStats,
}

/// The process part of a member id (`host:port` of `host:port#3`).
pub fn node_of(id: &str) -> &str {
    id.split('#').next().unwrap_or(id)
}

fn bit(r: usize) -> u64 {
    1u64 << r
}

impl Endpoint {
    /// A founding member of view 1 with `members` (all founders start alike).
    pub fn founder(cfg: EndpointConfig, members: Vec<String>, now: Time) -> Endpoint {
        let rank = members
            .iter()
            .position(|m| *m == cfg.id)
            .expect("the founder is in the founding member list") as u16;
        let mut ep = Endpoint::blank(cfg, now);
        ep.seeds = members.clone();
        let n = members.len();
        ep.enter_view(1, members, rank, vec![0; n], true);
        ep
    }

    /// A process asking `seeds` (member ids or plain addresses) for admission.
    pub fn joiner(cfg: EndpointConfig, seeds: Vec<String>, now: Time) -> Endpoint {
        let mut ep = Endpoint::blank(cfg, now);
        ep.seeds = seeds;
        ep.phase = Phase::Joining;
        ep.next_join = now;
        ep
    }

    fn blank(cfg: EndpointConfig, now: Time) -> Endpoint {
        assert!(cfg.id.len() <= control::MEMBER_ID_BYTES_MAX && !cfg.id.contains('#'));
        Endpoint {
            me: cfg.id.clone(),
            incarnation: 1,
            seeds: Vec::new(),
            now,
            phase: Phase::Joining,
            view: 0,
            members: Vec::new(),
            rank: 0,
            member: None,
            installed: false,
            pending_view_trace: Vec::new(),
            suspected: Vec::new(),
            leaving: false,
            next_notice: now,
            promised: 0,
            accepted: None,
            taking: None,
            leading: None,
            committing: None,
            join_requests: Vec::new(),
            leave_requests: 0,
            last_commit: None,
            linger: Vec::new(),
            confirmed_early: Vec::new(),
            linger_next: now,
            linger_until: now,
            suspect_check_at: now,
            joiner_grace_until: Vec::new(),
            next_join: now,
            held: VecDeque::new(),
            held_blocked: false,
            last_seq: 0,
            state_out: Vec::new(),
            state_turn: false,
            snapshot_for: 0,
            state_in: None,
            restore_ready: None,
            outbox: VecDeque::new(),
            tx_dest: String::new(),
            events: VecDeque::new(),
            trace: Vec::new(),
            stats: EndpointStats::default(),
            cfg,
        }
    }

    // ----------------------------------------------------------------------------------------
    // Accessors

    /// This process's current member id (with its incarnation after a rejoin).
    pub fn id(&self) -> &str {
        &self.me
    }

    /// The current view's id (0 before the first).
    pub fn view_id(&self) -> u64 {
        self.view
    }

    /// The current view's members, by rank.
    pub fn view_members(&self) -> &[String] {
        &self.members
    }

    pub fn rank(&self) -> u16 {
        self.rank
    }

    /// Whether the application has state for the current view (deliveries and sends flow).
    pub fn is_installed(&self) -> bool {
        self.installed && self.phase == Phase::InView
    }

    pub fn is_blocked(&self) -> bool {
        self.phase == Phase::Blocked
    }

    /// Whether [`Endpoint::leave`] was called (or the member left).
    pub fn is_leaving(&self) -> bool {
        self.leaving || matches!(self.phase, Phase::Lingering | Phase::Left)
    }

    pub fn has_left(&self) -> bool {
        self.phase == Phase::Left
    }

    /// Whether this member leads a view change now (proposed, not committed yet).
    pub fn is_leading(&self) -> bool {
        self.leading.is_some()
    }

    /// Whether a view change is under way here.
    pub fn is_changing(&self) -> bool {
        self.taking.is_some() || self.committing.is_some() || self.leading.is_some()
    }

    pub fn member(&self) -> Option<&Member> {
        self.member.as_ref()
    }

    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Largest payload [`Endpoint::send`] accepts now.
    pub fn payload_bytes_max(&self) -> usize {
        match &self.member {
            Some(m) if self.held.is_empty() && !m.is_stopped() => m.config().payload_bytes_max(),
            _ => self.held_payload_bytes_max(),
        }
    }

    /// Largest payload that fits any view (held messages go out in a view not known yet).
    fn held_payload_bytes_max(&self) -> usize {
        let mut mc = self.cfg.member.clone();
        mc.members = vec![String::new(); self.cfg.members_max];
        mc.payload_bytes_max()
    }

    /// Whether nothing is in flight here: installed, no change, the member settled.
    pub fn is_settled(&self) -> bool {
        self.is_installed()
            && !self.is_changing()
            && self.held.is_empty()
            && self.outbox.is_empty()
            && self.state_out.is_empty()
            && self.member.as_ref().is_some_and(Member::is_settled)
    }

    /// Takes the trace events recorded so far.
    pub fn take_trace(&mut self) -> Vec<TraceEvent> {
        self.collect_member_trace();
        std::mem::take(&mut self.trace)
    }

    fn collect_member_trace(&mut self) {
        if let Some(m) = &mut self.member {
            let t = m.take_trace();
            if self.installed {
                self.trace.extend(t);
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Application calls

    /// Multicasts `payload` in the current view, or holds it for the next one while a view
    /// change is under way (its sequence number is the one it will carry).
    pub fn send(
        &mut self,
        now: Time,
        order: Order,
        safe: bool,
        payload: &[u8],
    ) -> Result<Seq, GroupSendError> {
        self.send_with(
            now,
            || payload.len(),
            1,
            |m| m.send(now, order, safe, payload),
            |held| held.push_back((order, safe, payload.to_vec())),
        )
    }

    /// Sends a bundle of messages as one record ([`Member::send_bundle`]); returns the last
    /// one's number and empties the bundle. Held for the next view during a change, each
    /// message on its own. On an error the bundle is untouched.
    pub fn send_bundle(
        &mut self,
        now: Time,
        order: Order,
        safe: bool,
        bundle: &mut Bundle,
    ) -> Result<Seq, GroupSendError> {
        let count = bundle.count() as usize;
        let cell = std::cell::RefCell::new(bundle);
        // Our bundles may be delivered (and dropped) as they are sent only while
        // `poll_deliver` would hand them out: not while deliveries wait for a state transfer.
        let discard = self.cfg.member.discard_own_bundles
            && self.snapshot_for == 0
            && self.restore_ready.is_none();
        self.send_with(
            now,
            // Walked only when the bundle is held (each message then goes on its own).
            || cell.borrow().messages().map(<[u8]>::len).max().unwrap_or(0),
            count,
            |m| {
                m.set_discard_own_bundles(discard);
                m.send_bundle(now, order, safe, &mut cell.borrow_mut())
            },
            |held| {
                let mut bundle = cell.borrow_mut();
                for message in bundle.messages() {
                    held.push_back((order, safe, message.to_vec()));
                }
                bundle.clear();
            },
        )
    }

    /// [`Endpoint::send`] taking the payload buffer: it *moves* into the member's log (or
    /// the held queue) and `payload` is replaced by a buffer to reuse (the log slot's
    /// previous one, or an empty one). On an error `payload` is left as it was.
    pub fn send_owned(
        &mut self,
        now: Time,
        order: Order,
        safe: bool,
        payload: &mut Vec<u8>,
    ) -> Result<Seq, GroupSendError> {
        let len = payload.len();
        // Two closures need the buffer, only one runs: hand it over through a cell.
        let cell = std::cell::RefCell::new(payload);
        self.send_with(
            now,
            || len,
            1,
            |m| m.send_owned(now, order, safe, &mut cell.borrow_mut()),
            |held| held.push_back((order, safe, std::mem::take(&mut **cell.borrow_mut()))),
        )
    }

    /// The send path of `count` messages (the largest of `len()` bytes, asked only when
    /// they are held): straight into the member when the view runs, else held.
    fn send_with(
        &mut self,
        now: Time,
        len: impl FnOnce() -> usize,
        count: usize,
        direct: impl FnOnce(&mut Member) -> Result<Seq, SendError>,
        hold: impl FnOnce(&mut VecDeque<(Order, bool, Vec<u8>)>),
    ) -> Result<Seq, GroupSendError> {
        self.now = self.now.max(now);
        if self.leaving || self.phase == Phase::Left {
            return Err(GroupSendError::Leaving);
        }
        if !self.is_installed() {
            return Err(GroupSendError::NotInstalled);
        }
        let member = self.member.as_mut().expect("installed with a member");
        if !member.is_stopped() && self.held.is_empty() {
            return match direct(member) {
                Ok(seq) => {
                    self.last_seq = seq.0;
                    Ok(seq)
                }
                Err(SendError::WouldBlock) => Err(GroupSendError::WouldBlock),
                Err(SendError::TooLarge { len, max }) => Err(GroupSendError::TooLarge { len, max }),
                Err(SendError::ViewEnding) => unreachable!("checked: not stopped"),
            };
        }
        let max = self.held_payload_bytes_max();
        let len = len();
        if len > max {
            return Err(GroupSendError::TooLarge { len, max });
        }
        // A bundle may hold more messages than the window: an empty queue always takes one.
        if !self.held.is_empty() && self.held.len() + count > self.cfg.member.window_messages_max {
            self.held_blocked = true;
            return Err(GroupSendError::WouldBlock);
        }
        self.last_seq += count as u64;
        hold(&mut self.held);
        Ok(Seq(self.last_seq))
    }

    /// Where a flush of this member's sends so far ends: `(view, record)` once every send
    /// is in the current view's member (none held for the next view, no change under way);
    /// `None` meanwhile. See [`Endpoint::is_flushed`].
    pub fn flush_point(&self) -> Option<(u64, u64)> {
        let m = self.member.as_ref()?;
        if !self.is_installed() || self.is_changing() || !self.held.is_empty() || m.is_stopped() {
            return None;
        }
        Some((self.view, m.own_appended_through()))
    }

    /// Whether every send up to a [`Endpoint::flush_point`] is done: stable in its view, or
    /// that view ended (a view ends only after its cut, which holds all of a surviving
    /// member's messages, was delivered).
    pub fn is_flushed(&self, (view, record): (u64, u64)) -> bool {
        if !self.is_installed() {
            return false;
        }
        self.view > view
            || (self.view == view
                && self
                    .member
                    .as_ref()
                    .is_some_and(|m| m.own_stable_through() >= record))
    }

    /// Largest payload accepted in any view (what a held send may carry).
    pub fn payload_bytes_max_any_view(&self) -> usize {
        self.held_payload_bytes_max()
    }

    /// Leaves the group gracefully: this member's messages are delivered in its last view,
    /// then [`GroupEvent::Left`].
    pub fn leave(&mut self, now: Time) {
        self.now = self.now.max(now);
        if self.cfg.trace && self.is_installed() && !self.leaving {
            self.trace.push(TraceEvent::Leave {
                node: self.me.clone(),
                group: self.cfg.group_name.clone(),
                view: self.view,
            });
        }
        match self.phase {
            Phase::InView if self.members.len() > 1 => {
                self.leaving = true;
                self.next_notice = self.now;
            }
            Phase::Left => {}
            _ => self.become_left(),
        }
    }

    /// The application's state for the members that need it (answer to
    /// [`GroupEvent::Snapshot`]).
    pub fn provide_snapshot(&mut self, snapshot: &[u8]) {
        if self.snapshot_for == 0 {
            return;
        }
        let Some(header) = self.state_header() else {
            return;
        };
        let data = Arc::new(state::encode_stream(&header, snapshot));
        tracing::debug!(me = %self.me, view = self.view, t = self.now.0, to = self.snapshot_for, bytes = data.len(), "sending state");
        for r in 0..self.members.len() {
            if self.snapshot_for & bit(r) != 0 {
                let retry_at = self.now.plus_nanos(self.state_retry_ns());
                let to = self.members[r].clone();
                self.state_out
                    .push(StateOut::new(to, data.clone(), retry_at));
            }
        }
        self.snapshot_for = 0;
    }

    /// How long a state stream (or view notice) waits for an acknowledgement before it goes
    /// back to what was acknowledged: a quarter of the change timeout.
    fn state_retry_ns(&self) -> u64 {
        self.cfg.change_timeout_ns / 4
    }

    /// The header of a state stream (or view notice) for the current view: its id, members
    /// and sequence bases (true ones only at a member that installed the view).
    fn state_header(&self) -> Option<StateHeader> {
        let member = self.member.as_ref()?;
        Some(StateHeader {
            view: self.view,
            members: self.members.clone(),
            app_seq_base: member
                .config()
                .app_seq_base
                .clone()
                .into_iter()
                .chain(std::iter::repeat(0))
                .take(self.members.len())
                .collect(),
        })
    }

    // ----------------------------------------------------------------------------------------
    // Inputs

    /// Processes one datagram.
    pub fn handle_datagram(&mut self, now: Time, bytes: &[u8]) {
        self.now = self.now.max(now);
        let Ok(frame) = Frame::parse(bytes) else {
            if let Some(m) = &mut self.member {
                m.handle_datagram(now, bytes); // counted there
            }
            return;
        };
        if frame.header.group() != self.cfg.group {
            if let Some(m) = &mut self.member {
                m.handle_frame(now, &frame); // counted there
            }
            return;
        }
        if frame.kind() == FrameKind::Membership {
            self.stats.control_received += 1;
            match control::decode(frame.header, frame.body()) {
                Ok(env) => self.on_control(env),
                Err(_) => self.stats.control_dropped += 1,
            }
            self.advance();
            return;
        }
        if let Some(m) = &mut self.member {
            m.handle_frame(now, &frame);
        }
        self.advance();
    }

    /// Updates the clock: suspicions, repeats and timeouts happen here.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        if let Some(m) = &mut self.member {
            m.handle_timeout(now);
        }
        self.advance();
    }

    // ----------------------------------------------------------------------------------------
    // Outputs

    /// The next message to deliver. In a view change the ending view's last messages come
    /// first; nothing is delivered before the state is restored or while a snapshot is due.
    pub fn poll_deliver(&mut self) -> Option<Delivery<'_>> {
        if !self.is_installed() || self.snapshot_for != 0 || self.restore_ready.is_some() {
            return None;
        }
        self.member.as_mut()?.poll_deliver()
    }

    /// Our own messages delivered as they were sent and not handed out since the last call
    /// ([`crate::protocol::MemberConfig::discard_own_bundles`]).
    pub fn take_discarded_own(&mut self) -> u64 {
        self.member
            .as_mut()
            .map_or(0, crate::protocol::Member::take_discarded_own)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.advance();
        if let Some(ev) = self.events.pop_front() {
            if let GroupEvent::Restore(_) = ev {
                // The application restores now; the view it restored into follows.
                if let Some((_, info)) = self.restore_ready.take() {
                    self.install_restored();
                    self.push_event(GroupEvent::View(info));
                }
            }
            return Some(ev);
        }
        if self.installed {
            if let Some(m) = &mut self.member {
                if let Some(Event::SendWindowOpen) = m.poll_event() {
                    return Some(GroupEvent::SendWindowOpen);
                }
            }
        }
        None
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit<'_>> {
        self.now = self.now.max(now);
        self.advance();
        if let Some((to, env)) = self.outbox.pop_front() {
            match control::encode(&env, buf) {
                Ok(len) => {
                    self.stats.control_sent += 1;
                    self.tx_dest = to;
                    return Some(Transmit {
                        dest: Dest::Node(&self.tx_dest),
                        len,
                    });
                }
                Err(_) => {
                    debug_assert!(false, "membership message does not fit: {env:?}");
                    self.stats.control_dropped += 1;
                    return self.poll_transmit(now, buf);
                }
            }
        }
        // State chunks and the data path take turns.
        self.state_turn = !self.state_turn;
        if self.state_turn {
            if let Some(len) = self.transmit_state(buf) {
                return Some(Transmit {
                    dest: Dest::Node(&self.tx_dest),
                    len,
                });
            }
        }
        if let Some(m) = &mut self.member {
            if let Some(t) = m.poll_transmit(now, buf) {
                let dest = match t.dest {
                    protocol::Dest::Group => Dest::View,
                    protocol::Dest::Member(r) => Dest::Node(&self.members[r as usize]),
                };
                return Some(Transmit { dest, len: t.len });
            }
        }
        if !self.state_turn {
            if let Some(len) = self.transmit_state(buf) {
                return Some(Transmit {
                    dest: Dest::Node(&self.tx_dest),
                    len,
                });
            }
        }
        None
    }

    /// Writes the next state chunk due into `buf` (destination in `tx_dest`).
    fn transmit_state(&mut self, buf: &mut [u8]) -> Option<usize> {
        let chunk_bytes = self.cfg.state_chunk_bytes;
        let window = self.cfg.state_window_bytes;
        for i in 0..self.state_out.len() {
            let Some((offset, len)) = self.state_out[i].take_chunk(chunk_bytes, window) else {
                continue;
            };
            let out = &self.state_out[i];
            let chunk = &out.data[offset as usize..offset as usize + len];
            let env = Envelope {
                group: self.cfg.group,
                view: self.view,
                from_rank: self.rank,
                from: self.me.clone(),
                msg: Msg::State {
                    offset,
                    total: out.total(),
                    chunk: chunk.to_vec(),
                },
            };
            let Ok(n) = control::encode(&env, buf) else {
                debug_assert!(false, "state chunk does not fit the datagram");
                return None;
            };
            self.stats.state_bytes_sent += len as u64;
            self.tx_dest = self.state_out[i].to.clone();
            return Some(n);
        }
        None
    }

    /// The next deadline at which [`Endpoint::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut t = self
            .member
            .as_ref()
            .and_then(Member::poll_timeout)
            .unwrap_or(Time(u64::MAX));
        let retry = self.now.plus_nanos(self.cfg.control_retry_ns);
        match self.phase {
            Phase::Joining | Phase::Blocked => t = t.min(self.next_join),
            Phase::Lingering => t = t.min(self.linger_next).min(self.linger_until),
            Phase::Left => return None,
            Phase::InView => {
                if let Some(m) = &self.member {
                    for r in 0..self.members.len() {
                        if r != self.rank as usize && !self.suspected[r] {
                            t = t.min(
                                m.last_heard(r as u16)
                                    .plus_nanos(self.cfg.suspect_timeout_ns + 1),
                            );
                        }
                    }
                }
                if self.is_changing()
                    || self.leaving
                    || self.suspected.iter().any(|&s| s)
                    || !self.join_requests.is_empty()
                    || self.leave_requests != 0
                    || !self.state_out.is_empty()
                    || !self.held.is_empty()
                {
                    t = t.min(retry);
                }
            }
        }
        Some(t)
    }

    // ----------------------------------------------------------------------------------------
    // The state machine

    fn push_event(&mut self, ev: GroupEvent) {
        if self.events.len() < EVENTS_MAX {
            self.events.push_back(ev);
        }
    }

    fn send_to(&mut self, to: &str, msg: Msg) {
        if self.outbox.len() >= OUTBOX_MESSAGES_MAX {
            self.stats.outbox_full += 1;
            return;
        }
        let from_rank = if self.phase == Phase::InView {
            self.rank
        } else {
            RANK_NONE
        };
        let env = Envelope {
            group: self.cfg.group,
            view: self.view,
            from_rank,
            from: self.me.clone(),
            msg,
        };
        self.outbox.push_back((to.to_owned(), env));
    }

    fn send_to_rank(&mut self, r: usize, msg: Msg) {
        let to = self.members[r].clone();
        self.send_to(&to, msg);
    }

    /// The lowest rank not suspected.
    fn leader(&self) -> usize {
        (0..self.members.len())
            .find(|&r| !self.suspected[r])
            .unwrap_or(self.rank as usize)
    }

    /// Everything time or new input makes due.
    fn advance(&mut self) {
        match self.phase {
            Phase::Left => {}
            Phase::Lingering => {
                if self.linger.is_empty() || self.now >= self.linger_until {
                    self.become_left();
                } else if self.now >= self.linger_next {
                    self.linger_next = self.now.plus_nanos(self.cfg.control_retry_ns.max(1));
                    if let Some((v, rank, c)) = self.last_commit.clone() {
                        for to in self.linger.clone() {
                            self.send_commit(to, v, rank, &c);
                        }
                    }
                }
            }
            Phase::Joining | Phase::Blocked => {
                if self.now >= self.next_join {
                    if self.phase == Phase::Blocked {
                        self.phase = Phase::Joining;
                    }
                    self.next_join = self.now.plus_nanos(self.cfg.control_retry_ns.max(1));
                    let me = node_of(&self.me).to_owned();
                    let seeds = self.seeds.clone();
                    for s in seeds.iter().filter(|s| node_of(s) != me) {
                        self.send_to(s, Msg::Join);
                    }
                }
            }
            Phase::InView => self.advance_in_view(),
        }
    }

    fn advance_in_view(&mut self) {
        if self.is_quiet() {
            return;
        }
        let n = self.members.len();
        let me = self.rank as usize;
        let (now, retry) = (self.now, self.state_retry_ns());
        for out in &mut self.state_out {
            out.on_timer(now, retry);
        }
        // Failure detection, skipped until the earliest deadline it found last time (a
        // member heard from since has a later one, never an earlier one).
        if let Some(m) = self
            .member
            .as_ref()
            .filter(|_| self.now >= self.suspect_check_at)
        {
            let mut next = u64::MAX;
            for r in 0..n {
                if r == me || self.suspected[r] {
                    continue;
                }
                let heard = m.last_heard(r as u16).as_nanos();
                let grace = self.joiner_grace_until.get(r).copied().unwrap_or(0);
                let deadline = heard.max(grace) + self.cfg.suspect_timeout_ns;
                if self.now.as_nanos() > deadline {
                    self.suspected[r] = true;
                    self.stats.suspicions += 1;
                    self.next_notice = self.now;
                } else {
                    next = next.min(deadline);
                }
            }
            self.suspect_check_at = Time(next);
        }
        let alive = self.suspected.iter().filter(|&&s| !s).count();
        if alive * 2 <= n && self.committing.is_none() {
            self.block();
            return;
        }
        // Finishing a committed view: install the next once the cut is delivered.
        if let Some(c) = &self.committing {
            let m = self.member.as_mut().expect("member while committing");
            if !m.holds_cut() {
                // Still fetching (the commit came before our cut was complete).
                self.repeat_fetched();
                return;
            }
            let finished = if self.installed {
                if self.snapshot_for != 0 {
                    false
                } else {
                    if !m.is_finishing() {
                        m.finish();
                    }
                    m.is_finished()
                }
            } else {
                true // no state: nothing to deliver
            };
            if finished {
                let c = c.clone();
                self.install_next(c);
            }
            return;
        }
        let leader = self.leader();
        if leader == me {
            self.lead();
        } else if self.now >= self.next_notice {
            let suspects: u64 = (0..n).filter(|&r| self.suspected[r]).map(bit).sum();
            let covered = self.taking.is_some();
            if suspects != 0 && !covered {
                self.send_to_rank(leader, Msg::Suspect { ranks: suspects });
            }
            if self.leaving && !covered {
                self.send_to_rank(leader, Msg::Leave);
            }
            self.next_notice = self.now.plus_nanos(self.cfg.control_retry_ns);
        }
        self.take_part();
        self.flush_held();
    }

    /// Whether [`Endpoint::advance_in_view`] has nothing to do now: no state stream out, no
    /// failure check due, no change under way or asked for (no suspect, joiner, leaver), no
    /// notice due to the leader, and no held send. The state of every view between changes,
    /// checked in a few loads instead of the whole walk (it runs several times per datagram
    /// on the hot path). Each condition stands for a step of the walk that would act.
    #[inline]
    fn is_quiet(&self) -> bool {
        self.state_out.is_empty()
            && self.now < self.suspect_check_at
            && self.committing.is_none()
            && self.taking.is_none()
            && self.leading.is_none()
            && !self.leaving
            && self.leave_requests == 0
            && self.join_requests.is_empty()
            && self.held.is_empty()
            && !self.held_blocked
            // No suspect: the leader is rank 0, and the majority check cannot block.
            && !self.members.is_empty()
            && !self.suspected.iter().any(|&s| s)
            && (self.rank == 0 || self.now < self.next_notice)
    }

    /// A member's part in a change: report once stopped, report "fetched" once the cut is held.
    fn take_part(&mut self) {
        let Some(t) = &self.taking else { return };
        if self.now < t.next_send {
            return;
        }
        let leader = t.leader as usize;
        let ballot = t.ballot;
        let m = self.member.as_ref().expect("member");
        if let Some(cut) = &t.cut {
            if m.holds_cut() {
                let cut = cut.clone();
                let t = self.taking.as_mut().expect("taking");
                let repeat = t.fetched;
                t.fetched = true;
                t.next_send = self.now.plus_nanos(self.cfg.control_retry_ns);
                self.accepted = Some(cut);
                if leader == self.rank as usize {
                    self.on_fetched(leader, ballot);
                } else if repeat {
                    // The commit may have been lost, and its leader may be gone: whoever
                    // committed answers.
                    for r in 0..self.members.len() {
                        if r != self.rank as usize && !self.suspected[r] {
                            self.send_to_rank(r, Msg::Fetched { ballot });
                        }
                    }
                } else {
                    self.send_to_rank(leader, Msg::Fetched { ballot });
                }
            }
            return;
        }
        if !m.ready_to_report() {
            return;
        }
        let report = Report {
            held: m.held_through(),
            installed: self.installed,
            accepted: self.accepted.clone(),
        };
        self.taking.as_mut().expect("taking").next_send =
            self.now.plus_nanos(self.cfg.control_retry_ns);
        if leader == self.rank as usize {
            self.on_report(leader, ballot, report);
        } else {
            self.send_to_rank(
                leader,
                Msg::Report {
                    ballot,
                    held: report.held,
                    installed: report.installed,
                    accepted: report.accepted,
                },
            );
        }
    }

    /// Members that did not see the commit ask every member for it.
    fn repeat_fetched(&mut self) {
        if self.now < self.next_notice {
            return;
        }
        self.next_notice = self.now.plus_nanos(self.cfg.control_retry_ns);
        let Some(c) = &self.committing else { return };
        let ballot = c.proposal.ballot;
        for r in 0..self.members.len() {
            if r != self.rank as usize && !self.suspected[r] {
                self.send_to_rank(r, Msg::Fetched { ballot });
            }
        }
    }

    /// The leader's work: start a change when one is needed, drive the one under way.
    fn lead(&mut self) {
        let n = self.members.len();
        let me = self.rank as usize;
        if let Some(l) = &self.leading {
            let waiting_for = match &l.cut {
                None => (0..n)
                    .filter(|&r| l.asked & bit(r) != 0 && l.reports[r].is_none())
                    .map(bit)
                    .sum::<u64>(),
                Some(_) => l.asked & !l.fetched,
            };
            let suspect_asked = (0..n).any(|r| l.asked & bit(r) != 0 && self.suspected[r]);
            if self.now.as_nanos() > l.stage_started.as_nanos() + self.cfg.change_timeout_ns {
                // Those we waited for too long are suspected.
                for r in 0..n {
                    if waiting_for & bit(r) != 0 && r != me && !self.suspected[r] {
                        self.suspected[r] = true;
                        self.stats.suspicions += 1;
                    }
                }
                self.start_change();
                return;
            }
            if suspect_asked {
                self.start_change();
                return;
            }
            if self.now >= l.next_send {
                let msg = match &l.cut {
                    None => Msg::Propose(l.proposal.clone()),
                    Some(c) => Msg::Cut(c.clone()),
                };
                self.leading.as_mut().expect("leading").next_send =
                    self.now.plus_nanos(self.cfg.control_retry_ns);
                for r in 0..n {
                    if r != me && waiting_for & bit(r) != 0 {
                        self.send_to_rank(r, msg.clone());
                    }
                }
            }
            return;
        }
        if self.leaving && n == 1 {
            self.become_left(); // the last member: nothing to flush to anyone
            return;
        }
        let needed = self.suspected.iter().any(|&s| s)
            || self.leave_requests != 0
            || self.leaving
            || !self.join_requests.is_empty();
        if needed {
            self.start_change();
        }
    }

    /// Leader: proposes a new ballot for the next view.
    fn start_change(&mut self) {
        let n = self.members.len();
        let me = self.rank as usize;
        let alive: Vec<usize> = (0..n).filter(|&r| !self.suspected[r]).collect();
        if alive.len() * 2 <= n {
            self.block();
            return;
        }
        // Leavers go as long as one member stays (a leaver takes part in the change, so
        // the majority that decides it is of members alive, leavers included; the last one
        // leaves alone, see `lead`).
        let mut keep: u64 = alive.iter().map(|&r| bit(r)).sum();
        let mut leaves = self.leave_requests;
        if self.leaving {
            leaves |= bit(me);
        }
        for r in 0..n {
            if leaves & bit(r) != 0 && keep & bit(r) != 0 && keep.count_ones() > 1 {
                keep &= !bit(r);
            }
        }
        let room = self
            .cfg
            .members_max
            .saturating_sub(keep.count_ones() as usize);
        let joiners: Vec<String> = self
            .join_requests
            .iter()
            .filter(|j| !self.members.contains(j))
            .take(JOINERS_PER_CHANGE_MAX.min(room))
            .cloned()
            .collect();
        if keep == (0..n).map(bit).sum::<u64>() && joiners.is_empty() {
            return; // nothing to change (requests were already covered)
        }
        let counter = (self.promised >> 16) + 1;
        let ballot = (counter << 16) | me as u64;
        let proposal = Proposal {
            ballot,
            keep,
            joiners,
        };
        self.stats.changes_led += 1;
        tracing::debug!(me = %self.me, view = self.view, t = self.now.0, ballot, keep, joiners = ?proposal.joiners, suspected = ?self.suspected, "proposing");
        let asked: u64 = alive.iter().map(|&r| bit(r)).sum();
        self.leading = Some(Leading {
            proposal: proposal.clone(),
            asked,
            reports: vec![None; n],
            cut: None,
            fetched: 0,
            stage_started: self.now,
            next_send: self.now.plus_nanos(self.cfg.control_retry_ns),
        });
        for &r in &alive {
            if r != me {
                self.send_to_rank(r, Msg::Propose(proposal.clone()));
            }
        }
        self.on_propose(me, proposal);
    }

    fn on_propose(&mut self, from: usize, p: Proposal) {
        if p.ballot < self.promised || (p.ballot & 0xFFFF) as usize != from || self.suspected[from]
        {
            return;
        }
        if p.ballot == self.promised && self.taking.is_some() {
            return; // a repeat
        }
        self.promised = p.ballot;
        if let Some(m) = &mut self.member {
            m.stop();
        }
        self.taking = Some(Taking {
            ballot: p.ballot,
            leader: from as u16,
            cut: None,
            fetched: false,
            next_send: self.now,
        });
        self.take_part();
    }

    fn on_report(&mut self, from: usize, ballot: u64, report: Report) {
        let n = self.members.len();
        let Some(l) = &mut self.leading else { return };
        if l.proposal.ballot != ballot || l.asked & bit(from) == 0 || l.cut.is_some() {
            return;
        }
        if report.held.len() != n {
            self.stats.control_dropped += 1;
            return;
        }
        l.reports[from] = Some(report);
        if (0..n).any(|r| l.asked & bit(r) != 0 && l.reports[r].is_none()) {
            return;
        }
        // Every report is in: decide the cut.
        let reports: Vec<(usize, &Report)> = (0..n)
            .filter_map(|r| l.reports[r].as_ref().map(|rep| (r, rep)))
            .collect();
        let adopted = reports
            .iter()
            .filter_map(|(_, rep)| rep.accepted.as_ref())
            .filter(|c| c.cut.len() == n)
            .max_by_key(|c| c.proposal.ballot)
            .cloned();
        let (keep, joiners, cut) = match adopted {
            Some(c) => (c.proposal.keep, c.proposal.joiners, c.cut),
            None => {
                let mut cut = vec![0u64; n];
                for (_, rep) in &reports {
                    for (c, &h) in cut.iter_mut().zip(&rep.held) {
                        *c = (*c).max(h);
                    }
                }
                (l.proposal.keep, l.proposal.joiners.clone(), cut)
            }
        };
        let mut holders = vec![0u8; n];
        for s in 0..n {
            let holder = reports
                .iter()
                .find(|(r, rep)| *r == s && rep.held[s] >= cut[s])
                .or_else(|| reports.iter().find(|(_, rep)| rep.held[s] >= cut[s]))
                .map(|(r, _)| *r);
            holders[s] = match holder {
                Some(r) => r as u8,
                None => {
                    debug_assert!(false, "no holder for stream {s} through {}", cut[s]);
                    s as u8
                }
            };
        }
        // Next view ranks: kept members in rank order, then joiners.
        let mut need_state = 0u64;
        let mut next_rank = 0;
        for r in 0..n {
            if keep & bit(r) != 0 {
                let installed = l.reports[r].as_ref().is_none_or(|rep| rep.installed);
                if !installed {
                    need_state |= bit(next_rank);
                }
                next_rank += 1;
            }
        }
        for _ in &joiners {
            need_state |= bit(next_rank);
            next_rank += 1;
        }
        let c = Cut {
            proposal: Proposal {
                ballot,
                keep,
                joiners,
            },
            cut,
            holders,
            need_state,
        };
        l.cut = Some(c.clone());
        l.stage_started = self.now;
        l.next_send = self.now.plus_nanos(self.cfg.control_retry_ns);
        let asked = l.asked;
        let me = self.rank as usize;
        for r in 0..n {
            if r != me && asked & bit(r) != 0 {
                self.send_to_rank(r, Msg::Cut(c.clone()));
            }
        }
        self.on_cut(me, c);
    }

    fn on_cut(&mut self, from: usize, c: Cut) {
        if c.proposal.ballot < self.promised
            || (c.proposal.ballot & 0xFFFF) as usize != from
            || self.suspected[from]
            || !self.cut_is_valid(&c)
        {
            return;
        }
        if matches!(&self.taking, Some(t) if t.ballot == c.proposal.ballot && t.cut.is_some()) {
            return; // a repeat
        }
        self.promised = c.proposal.ballot;
        let m = self.member.as_mut().expect("member");
        m.stop();
        let holders: Vec<u16> = c.holders.iter().map(|&h| h as u16).collect();
        m.set_cut(&c.cut, &holders);
        self.taking = Some(Taking {
            ballot: c.proposal.ballot,
            leader: from as u16,
            cut: Some(c),
            fetched: false,
            next_send: self.now,
        });
        self.take_part();
    }

    fn on_fetched(&mut self, from: usize, ballot: u64) {
        let n = self.members.len();
        let Some(l) = &mut self.leading else { return };
        let Some(c) = &l.cut else { return };
        if c.proposal.ballot != ballot {
            return;
        }
        l.fetched |= bit(from);
        if l.asked & !l.fetched != 0 {
            return;
        }
        // Everyone holds the cut: commit.
        let c = c.clone();
        let asked = l.asked;
        let me = self.rank as usize;
        for r in 0..n {
            if r != me && asked & bit(r) != 0 {
                self.send_to_rank(r, Msg::Commit(c.clone()));
            }
        }
        // Joiners learn of their admission from the state stream.
        self.on_commit(c);
    }

    /// Whether a cut (from a leader or a straggler's answer) is well-formed for this view:
    /// it keeps a strict majority of it — or, when members leave (the majority that decided
    /// it is of the members that reported, leavers included), keeps someone under a ballot
    /// this member accepted — and its joiners are new.
    fn cut_is_valid(&self, c: &Cut) -> bool {
        let n = self.members.len();
        let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let kept = c.proposal.keep.count_ones() as usize;
        let quorum = kept * 2 > n || (kept > 0 && self.promised == c.proposal.ballot);
        c.cut.len() == n
            && c.holders.iter().all(|&h| (h as usize) < n)
            && c.proposal.keep & !all == 0
            && quorum
            && c.proposal.joiners.iter().all(|j| !self.members.contains(j))
            && c.proposal.keep.count_ones() as usize + c.proposal.joiners.len() <= MEMBERS_MAX
    }

    fn on_commit(&mut self, c: Cut) {
        if self.committing.is_some() {
            return;
        }
        if !self.cut_is_valid(&c) {
            self.stats.control_dropped += 1;
            return;
        }
        let m = self.member.as_mut().expect("member");
        m.stop();
        let holders: Vec<u16> = c.holders.iter().map(|&h| h as u16).collect();
        if self.accepted.as_ref() != Some(&c) {
            m.set_cut(&c.cut, &holders);
        }
        self.leading = None;
        self.committing = Some(c);
        self.next_notice = self.now;
    }

    /// The committed view's successor: created once the ending view's cut is delivered.
    fn install_next(&mut self, c: Cut) {
        tracing::debug!(me = %self.me, view = self.view, t = self.now.0, ballot = c.proposal.ballot, keep = c.proposal.keep, joiners = ?c.proposal.joiners, need_state = c.need_state, "view ends");
        let old = self.member.as_ref().expect("member");
        let bases_old = old.app_seq_through();
        self.collect_member_trace();
        let mut members = Vec::new();
        let mut bases = Vec::new();
        for (r, (id, base)) in self.members.iter().zip(bases_old).enumerate() {
            if c.proposal.keep & bit(r) != 0 {
                members.push(id.clone());
                bases.push(base);
            }
        }
        for j in &c.proposal.joiners {
            members.push(j.clone());
            bases.push(0);
        }
        let view = self.view + 1;
        self.last_commit = Some((self.view, self.rank, c.clone()));
        let Some(rank) = members.iter().position(|m| *m == self.me) else {
            // Not in the next view: left, or excluded.
            if self.leaving {
                // Only members of the ending view can confirm (joiners never saw it).
                let old = &self.members;
                let early = std::mem::take(&mut self.confirmed_early);
                self.linger = members
                    .into_iter()
                    .filter(|m| old.contains(m) && !early.contains(m))
                    .collect();
                self.linger_next = self.now;
                self.linger_until = self.now.plus_nanos(self.cfg.change_timeout_ns);
                self.collect_member_trace();
                self.member = None;
                self.installed = false;
                self.phase = Phase::Lingering;
                self.advance();
            } else {
                self.block();
            }
            return;
        };
        // Who sends the state: the lowest rank with state.
        let provider = (0..members.len()).find(|&r| c.need_state & bit(r) == 0);
        let installed = self.installed;
        // Members of the ending view not in the next: leavers linger until the members that
        // stay confirm the next view. Confirm at once (a member that leaves right after could
        // not answer their repeated commit any more); an excluded member just drops it.
        let gone: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|&(r, id)| {
                c.proposal.keep & bit(r) == 0 && !self.suspected[r] && *id != self.me
            })
            .map(|(_, id)| id.clone())
            .collect();
        let joiners_from = members.len() - c.proposal.joiners.len();
        self.enter_view(view, members, rank as u16, bases, installed);
        if installed {
            // A joiner learns the view from its state transfer, which the provider starts once
            // it installed too and retries every quarter of the change timeout: its silence
            // counts from when it could have the view, not from our install.
            let grace = self.now.as_nanos() + self.cfg.change_timeout_ns;
            for g in &mut self.joiner_grace_until[joiners_from..] {
                *g = grace;
            }
            let ballot = c.proposal.ballot;
            for to in &gone {
                self.send_to(to, Msg::Fetched { ballot });
            }
        }
        if installed && provider == Some(rank) && c.need_state != 0 {
            self.snapshot_for = c.need_state;
            self.push_event(GroupEvent::Snapshot);
        }
    }

    /// Starts view `view` with a fresh member.
    fn enter_view(
        &mut self,
        view: u64,
        members: Vec<String>,
        rank: u16,
        bases: Vec<u64>,
        installed: bool,
    ) {
        let n = members.len();
        let mut mc = MemberConfig::new(
            &self.cfg.group_name,
            self.cfg.group,
            view,
            members.clone(),
            rank,
        );
        if !installed {
            // A new incarnation's numbering starts at its base (0 for a joiner).
            self.last_seq = bases[rank as usize];
        }
        let t = &self.cfg.member;
        mc.datagram_bytes_max = t.datagram_bytes_max;
        mc.window_messages_max = t.window_messages_max;
        mc.window_bytes_max = t.window_bytes_max;
        mc.log_messages_max = t.log_messages_max;
        mc.holdback_bytes_max = t.holdback_bytes_max;
        mc.status_retry_ns = t.status_retry_ns;
        mc.heartbeat_ns = t.heartbeat_ns;
        mc.nak_delay_ns = t.nak_delay_ns;
        mc.nak_retry_ns = t.nak_retry_ns;
        mc.order_entries_per_record_max = t.order_entries_per_record_max;
        mc.testing_skip_retransmit = t.testing_skip_retransmit;
        mc.discard_own_bundles = t.discard_own_bundles;
        mc.trace = self.cfg.trace;
        mc.app_seq_base = bases;
        let mut member = Member::new(mc, self.now);
        if !installed {
            self.pending_view_trace = member.take_trace();
        }
        self.member = Some(member);
        self.phase = Phase::InView;
        self.view = view;
        self.members = members;
        self.rank = rank;
        self.installed = installed;
        self.suspected = vec![false; n];
        self.joiner_grace_until = vec![0; n];
        self.suspect_check_at = self.now;
        self.promised = 0;
        self.accepted = None;
        self.taking = None;
        self.leading = None;
        self.committing = None;
        self.leave_requests = 0;
        self.confirmed_early.clear();
        let members = &self.members;
        self.join_requests.retain(|j| !members.contains(j));
        self.state_out.clear();
        self.snapshot_for = 0;
        self.next_notice = self.now;
        self.stats.views_installed += 1;
        if installed {
            self.push_event(GroupEvent::View(ViewInfo {
                id: view,
                members: self.members.clone(),
                rank,
            }));
        }
        self.flush_held();
    }

    /// Sends held messages into the current view's member while its window has room.
    fn flush_held(&mut self) {
        if !self.is_installed() || self.is_changing() {
            return;
        }
        let Some(m) = &mut self.member else { return };
        while let Some((order, safe, payload)) = self.held.front() {
            match m.send(self.now, *order, *safe, payload) {
                Ok(_) => {
                    self.held.pop_front();
                }
                Err(_) => break,
            }
        }
        if self.held_blocked && self.held.len() < self.cfg.member.window_messages_max {
            self.held_blocked = false;
            self.push_event(GroupEvent::SendWindowOpen);
        }
    }

    fn block(&mut self) {
        tracing::debug!(me = %self.me, view = self.view, t = self.now.0, suspected = ?self.suspected, installed = self.installed, last_heard = ?self.member.as_ref().map(|m| (0..self.members.len()).map(|r| m.last_heard(r as u16).0).collect::<Vec<_>>()), "blocking");
        self.collect_member_trace();
        if self.installed && self.cfg.trace {
            self.trace.push(TraceEvent::Block {
                node: self.me.clone(),
                group: self.cfg.group_name.clone(),
                view: self.view,
            });
        }
        self.stats.blocks += 1;
        self.push_event(GroupEvent::Blocked);
        // Seeds for the rejoin: the view we were in.
        let others: Vec<String> = self
            .members
            .iter()
            .filter(|m| **m != self.me)
            .cloned()
            .collect();
        if !others.is_empty() {
            self.seeds = others;
        }
        self.member = None;
        self.phase = Phase::Blocked;
        self.installed = false;
        self.held.clear();
        self.taking = None;
        self.leading = None;
        self.committing = None;
        self.state_out.clear();
        self.state_in = None;
        self.restore_ready = None;
        self.view = 0;
        self.members.clear();
        self.suspected.clear();
        self.incarnation += 1;
        self.me = format!("{}#{}", self.cfg.id, self.incarnation);
        self.last_seq = 0;
        self.next_join = self.now.plus_nanos(self.cfg.rejoin_delay_ns);
    }

    /// Sends `c`, the commit of view `v` in which we had `rank`, to `to`.
    fn send_commit(&mut self, to: String, v: u64, rank: u16, c: &Cut) {
        let reply = Envelope {
            group: self.cfg.group,
            view: v,
            from_rank: rank,
            from: self.me.clone(),
            msg: Msg::Commit(c.clone()),
        };
        if self.outbox.len() < OUTBOX_MESSAGES_MAX {
            self.outbox.push_back((to, reply));
        } else {
            self.stats.outbox_full += 1;
        }
    }

    fn become_left(&mut self) {
        self.collect_member_trace();
        self.member = None;
        self.phase = Phase::Left;
        self.installed = false;
        self.held.clear();
        self.state_out.clear();
        self.push_event(GroupEvent::Left);
    }

    /// A member without state received all of it: restore, then install.
    fn install_restored(&mut self) {
        self.installed = true;
        let t = std::mem::take(&mut self.pending_view_trace);
        self.trace.extend(t);
    }

    // ----------------------------------------------------------------------------------------
    // Membership messages

    fn on_control(&mut self, env: Envelope) {
        // State transfer reaches joiners, who have no view yet.
        if let Msg::State {
            offset,
            total,
            chunk,
        } = &env.msg
        {
            self.on_state(&env.from, env.view, *offset, *total, chunk);
            return;
        }
        if let Msg::Join = env.msg {
            self.on_join(env.from);
            return;
        }
        let lingering = self.phase == Phase::Lingering;
        if !(self.phase == Phase::InView || lingering) || env.group != self.cfg.group {
            self.stats.control_dropped += 1;
            return;
        }
        if let (Msg::Fetched { ballot }, Some(c)) = (&env.msg, &self.committing) {
            // A member of the next view confirms it before this leaver installed it.
            if !lingering && self.leaving && env.view > self.view && *ballot == c.proposal.ballot {
                if !self.confirmed_early.contains(&env.from)
                    && self.confirmed_early.len() < MEMBERS_MAX
                {
                    self.confirmed_early.push(env.from.clone());
                }
                return;
            }
        }
        if let (Msg::Fetched { ballot }, Some((v, rank, c))) = (&env.msg, &self.last_commit) {
            if *ballot == c.proposal.ballot && (env.view < self.view || lingering) {
                if env.view == *v {
                    // A straggler of the view we committed asks for the commit: answer as
                    // the member of that view we were.
                    let (v, rank, c) = (*v, *rank, c.clone());
                    self.send_commit(env.from, v, rank, &c);
                } else if lingering && env.view > *v {
                    // A member of the next view confirms it installed it.
                    self.linger.retain(|m| *m != env.from);
                }
                return;
            }
        }
        if lingering {
            self.stats.control_dropped += 1;
            return;
        }
        if let (Msg::Commit(c), Some((v, _, mine))) = (&env.msg, &self.last_commit) {
            if env.view == *v && env.view < self.view && c.proposal.ballot == mine.proposal.ballot {
                // A leaver repeats the commit we already installed: confirm, from this view.
                let ballot = c.proposal.ballot;
                self.send_to(&env.from, Msg::Fetched { ballot });
                return;
            }
        }
        let from = env.from_rank as usize;
        if env.view != self.view
            || from >= self.members.len()
            || self.members[from] != env.from
            || from == self.rank as usize
        {
            self.stats.control_dropped += 1;
            return;
        }
        match env.msg {
            Msg::Suspect { ranks } => {
                if self.leader() == self.rank as usize && !self.suspected[from] {
                    for r in 0..self.members.len() {
                        if ranks & bit(r) != 0 && r != self.rank as usize && !self.suspected[r] {
                            self.suspected[r] = true;
                            self.stats.suspicions += 1;
                        }
                    }
                }
            }
            Msg::Leave => self.leave_requests |= bit(from),
            Msg::Propose(p) => self.on_propose(from, p),
            Msg::Report {
                ballot,
                held,
                installed,
                accepted,
            } => self.on_report(
                from,
                ballot,
                Report {
                    held,
                    installed,
                    accepted,
                },
            ),
            Msg::Cut(c) => self.on_cut(from, c),
            Msg::Fetched { ballot } => self.on_fetched(from, ballot),
            // Commits are final whoever sends them (a later leader adopts the same cut).
            Msg::Commit(c) => self.on_commit(c),
            Msg::StateAck { through } => {
                let (now, retry) = (self.now, self.state_retry_ns());
                if let Some(out) = self.state_out.iter_mut().find(|o| o.to == env.from) {
                    out.on_ack(through, now, retry);
                }
                self.state_out.retain(|o| !o.done());
            }
            Msg::Join | Msg::State { .. } => {}
        }
    }

    fn on_join(&mut self, id: String) {
        if self.phase != Phase::InView || !self.installed || id.len() > control::MEMBER_ID_BYTES_MAX
        {
            return;
        }
        if let Some(r) = self.members.iter().position(|m| *m == id) {
            self.send_view_notice(r);
            return;
        }
        if self.join_requests.contains(&id) {
            return;
        }
        let leader = self.leader();
        if leader == self.rank as usize {
            if self.join_requests.len() < JOIN_REQUESTS_MAX {
                self.join_requests.push(id);
            }
        } else {
            // Forward to the leader under the joiner's id.
            if self.outbox.len() < OUTBOX_MESSAGES_MAX {
                let env = Envelope {
                    group: self.cfg.group,
                    view: self.view,
                    from_rank: RANK_NONE,
                    from: id,
                    msg: Msg::Join,
                };
                self.outbox.push_back((self.members[leader].clone(), env));
            }
        }
    }

    /// A joiner of this view (rank `r`) asks to join again: it has not got the view from its
    /// state stream (lost, and the provider may have failed before its retry). Unless it was
    /// heard from in this view or its provider's first retry is not due yet, tell it the
    /// view (a view notice, the state stream's header alone): it takes part in the view
    /// without state, and in the next change it reports none and gets the next view's.
    /// Without this it stayed outside a view that counted it, and a failure that left a
    /// majority of that view alive could block every member.
    fn send_view_notice(&mut self, r: usize) {
        let grace = self.joiner_grace_until.get(r).copied().unwrap_or(0);
        if grace == 0 || r == self.rank as usize || self.suspected[r] {
            return; // not a joiner of this view (or not one to wait for)
        }
        let installed_at = grace.saturating_sub(self.cfg.change_timeout_ns);
        let first_retry = installed_at + self.state_retry_ns();
        let to = self.members[r].clone();
        let Some(m) = &self.member else { return };
        if !self.installed
            || self.now.as_nanos() < first_retry
            || m.last_heard(r as u16).as_nanos() > installed_at
            || self.snapshot_for & bit(r) != 0
            || self.state_out.iter().any(|o| o.to == to)
        {
            return;
        }
        let Some(header) = self.state_header() else {
            return;
        };
        tracing::debug!(me = %self.me, view = self.view, t = self.now.0, to, "sending the view to a joiner that asks again");
        let retry_at = self.now.plus_nanos(self.state_retry_ns());
        let data = Arc::new(state::encode_view_notice(&header));
        self.state_out.push(StateOut::new(to, data, retry_at));
    }

    fn on_state(&mut self, from: &str, view: u64, offset: u64, total: u64, chunk: &[u8]) {
        let wanted = match self.phase {
            Phase::Joining => true,
            Phase::InView => !self.installed && view == self.view,
            _ => false,
        };
        let notice = offset == 0 && state::is_view_notice(chunk);
        if self.phase == Phase::InView && view == self.view && (self.installed || notice) {
            // Already restored (the sender missed our last acknowledgement), or a view
            // notice for the view we are in: nothing to take.
            self.send_to(from, Msg::StateAck { through: total });
            return;
        }
        if !wanted || total > self.cfg.state_bytes_max {
            self.stats.control_dropped += 1;
            return;
        }
        let fresh = !matches!(&self.state_in, Some(s) if s.from == from && s.view == view && s.total == total);
        if fresh {
            if offset != 0 || (chunk.is_empty() && total > 0) {
                return; // wait for the start (an empty first chunk would define no grid)
            }
            self.state_in = Some(StateIn::new(from, view, total, chunk));
        }
        let si = self.state_in.as_mut().expect("state in");
        let through = si.on_chunk(offset, chunk);
        self.stats.state_bytes_received += chunk.len() as u64;
        if si.header.is_none() {
            match state::decode_header(&si.bytes[..si.contiguous as usize]) {
                Ok(Some(h)) => si.header = Some(h),
                Ok(None) => {}
                Err(_) => {
                    self.stats.control_dropped += 1;
                    self.state_in = None;
                    return;
                }
            }
        }
        let ack_env = Envelope {
            group: self.cfg.group,
            view,
            from_rank: RANK_NONE,
            from: self.me.clone(),
            msg: Msg::StateAck { through },
        };
        // Admitted: take part in the view while the snapshot arrives.
        if self.phase == Phase::Joining {
            let si = self.state_in.as_ref().expect("state in");
            if let Some((h, _)) = &si.header {
                match h.members.iter().position(|m| *m == self.me) {
                    Some(rank) if h.members.len() == h.app_seq_base.len() => {
                        let h = h.clone();
                        self.enter_view(h.view, h.members, rank as u16, h.app_seq_base, false);
                    }
                    _ => {
                        self.stats.control_dropped += 1;
                        self.state_in = None;
                        return;
                    }
                }
            }
        }
        let mut ack_env = ack_env;
        if self.phase == Phase::InView {
            ack_env.from_rank = self.rank;
        }
        if self.outbox.len() < OUTBOX_MESSAGES_MAX {
            self.outbox.push_back((from.to_owned(), ack_env));
        }
        let si = self.state_in.as_ref().expect("state in");
        if si.view_only {
            if si.complete() || self.phase == Phase::InView {
                // The view is all a notice brings; the state comes from a provider.
                self.state_in = None;
            }
            return;
        }
        if si.complete() && self.phase == Phase::InView && self.restore_ready.is_none() {
            let si = self.state_in.take().expect("state in");
            // The header carries the view's true sequence bases (ours were computed without
            // the state).
            let rebased = match &si.header {
                Some((h, _)) if h.view == self.view && h.members == self.members => self
                    .member
                    .as_mut()
                    .is_some_and(|m| m.rebase(&h.app_seq_base)),
                _ => false,
            };
            if !rebased {
                self.stats.control_dropped += 1;
                return;
            }
            self.last_seq = self
                .member
                .as_ref()
                .map_or(0, |m| m.app_seq_through()[self.rank as usize]);
            let start = si.header.as_ref().map_or(0, |(_, at)| *at);
            let snapshot = si.bytes[start..].to_vec();
            let info = ViewInfo {
                id: self.view,
                members: self.members.clone(),
                rank: self.rank,
            };
            tracing::debug!(me = %self.me, view = self.view, t = self.now.0, from, "state received");
            self.restore_ready = Some((Vec::new(), info));
            self.push_event(GroupEvent::Restore(snapshot));
        }
    }

    /// Timers of state streams (go back after silence).
    pub fn state_streams(&self) -> usize {
        self.state_out.len()
    }
}

//! The public API (DESIGN §5): a [`Node`] (one address, one poller thread) and the [`Group`]s
//! joined on it.
//!
//! ```no_run
//! use cohort::node::{Delivery, Node};
//! use cohort::Order;
//! let node = Node::builder().bind("127.0.0.1:7001".parse()?).unicast_fanout().start()?;
//! let members = ["127.0.0.1:7001".parse()?, "127.0.0.1:7002".parse()?];
//! let group = node.join("prices", &members, |d: &Delivery<'_>| {
//!     println!("{} from {} #{}", d.payload.len(), d.sender_addr, d.seq.0);
//! })?;
//! group.send(Order::Causal, false, b"tick")?;
//! let mut claim = group.claim(Order::Total, false, 16)?; // written in place
//! claim[..8].copy_from_slice(&42u64.to_le_bytes());
//! claim.commit()?;
//! group.flush()?;
//! node.leave("prices")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Membership.** [`Node::join`] founds a group with a member list (view 1, rank = list
//! position; rank 0 is the total-order sequencer); [`Node::join_with_seeds`] joins a running
//! group with state transfer ([`Handler::snapshot`] at a member that has the state,
//! [`Handler::restore`] at the joiner); [`Node::leave`] (and dropping the node) leaves
//! gracefully. A member not heard from for the suspect timeout (10 heartbeats by default,
//! [`NodeBuilder::heartbeat`], [`NodeBuilder::suspect_timeout`]) is excluded by a view change
//! that first flushes the ending view (every survivor delivers the same messages in it).
//! A member cut off in a minority gets [`Handler::on_block`] and rejoins by itself, as a new
//! incarnation, once it reaches the majority again. The engine is in
//! [`crate::membership`]; the poller drives it.
//!
//! **Threads.** The handler runs on the node's poller thread with payloads borrowed from the
//! member's log: it must not block for long, and copies what it keeps. A handler that panics
//! takes only its own group down (its handles then return `Closed`). Sends from any thread
//! go through a bounded byte stage per group (`runtime/stage.rs`); `WouldBlock` means
//! the member's send window *and* the stage in front of it are full.
//!
//! **Payload bytes.** [`Group::send`] copies the bytes once, into the group's send stage
//! ([`Group::claim`] lets the application write them there in place); the poller takes the
//! whole stage once per turn and copies each payload into the member's log, the buffer the
//! datagrams are packed from. Neither side allocates once the stage and the log have grown.

use crate::membership::{Endpoint, EndpointConfig};
use crate::protocol::{Seq, Time, CONTROL_RECORDS_RESERVE, MEMBERS_MAX};
use crate::runtime::framing::{self, Want};
pub use crate::runtime::poller::REQUESTS_OUTSTANDING_MAX;
use crate::runtime::poller::{
    Control, FlushOutcome, GroupCounters, GroupSlot, LeaveOutcome, Poller, PollerCounters, Waiter,
};
pub use crate::runtime::stage::SEND_STAGE_BYTES_MAX;
use crate::runtime::stage::{
    Entry, Exclusive, Kind, RingClaim, RingWriter, Stage, Staged, FLUSHES_STAGED_MAX,
};
/// The UDP segmentation offloads a node uses ([`Node::offloads`]).
pub use cohort_transport::Offloads;

/// The fewest bytes the send stage takes per plain message beside its payload (its length in
/// a bundle, and its framing): a group stages at most [`SEND_STAGE_BYTES_MAX`] / (this +
/// payload) messages (at least one) in front of the member, and the poller holds at most as
/// many again, taken, and one record's worth gathered.
pub const SEND_STAGE_BYTES_PER_MESSAGE: usize =
    crate::wire::BUNDLE_ENTRY_HEADER_BYTES + framing::PLAIN_HEADER_BYTES;
use crate::runtime::invoker::{recv_driving, Invoker};
use crate::runtime::Doorbell;
use crate::runtime::{group_id, trace_writer, Clock, Idle};
use crate::Order;
use cohort_transport::counters::{file_path_in, CountersConfig, CountersFile};
use cohort_transport::{
    DriverChoice, FaultConfig, FaultyTransport, GroupMode, MemoryNetwork, SocketConfig, Transport,
    TransportError,
};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Control commands queued for the poller.
pub const CONTROL_QUEUE_COMMANDS_MAX: usize = 64;
/// How long [`Group::flush`] waits by default.
pub const FLUSH_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// How long leaving (and dropping the node) waits for a group's own sends to become stable.
pub const LEAVE_FLUSH_TIMEOUT_MS: u64 = 2_000;
/// How long a join or leave waits for the poller to answer.
pub const CONTROL_REPLY_TIMEOUT_MS: u64 = 5_000;
/// Default send window (messages) of each member. It must cover what a sender sends in one
/// acknowledgement round trip (a status interval plus the receiver's turn): 256 capped
/// 64 B sends on loopback at ~2.4 M msgs/s, 2048 reaches ~7 M (BENCHMARKS.md, "window").
/// The window in bytes ([`crate::protocol::MemberConfig::window_bytes_max`], 256 KiB)
/// bounds larger payloads first.
pub const WINDOW_MESSAGES_DEFAULT: usize = 2048;
/// Smallest datagram a node accepts ([`NodeBuilder::datagram_bytes`]): an Ethernet MTU of
/// 1500 minus the IPv4 and UDP headers, the size every part of the protocol (status frames of
/// 64 members, membership messages listing them) is built and tested for.
pub const DATAGRAM_BYTES_MIN: usize = cohort_transport::DATAGRAM_BYTES_DEFAULT;
/// Largest datagram a node accepts: the largest UDP payload over IPv4.
pub const DATAGRAM_BYTES_MAX: usize = 65_507;
/// Records of the largest payload the send window holds at least (the window in bytes is
/// 256 KiB or this many such records, whichever is more: with jumbo datagrams 256 KiB would
/// hold only ~29 records and the sender would wait on every acknowledgement round trip).
const WINDOW_RECORDS_MIN: usize = 32;
/// Default heartbeat interval; a member is suspected after 10 missed heartbeats.
pub const HEARTBEAT_MS_DEFAULT: u64 = 100;
const HEARTBEAT_NS_MIN: u64 = 1_000_000;
const HEARTBEAT_NS_MAX: u64 = 60_000_000_000;
/// Default limit on a group's view size (see [`NodeBuilder::group_members_max`]).
pub const GROUP_MEMBERS_DEFAULT: usize = 16;
/// How long [`Node::join_with_seeds`] waits to be admitted by default.
pub const JOIN_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// A delivered message. `payload` borrows the member's log for the duration of the upcall.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub group: &'a str,
    pub view: u64,
    /// The sender's rank in the view.
    pub sender: u16,
    pub sender_addr: SocketAddr,
    /// The sender's per-group sequence number (1, 2, …).
    pub seq: Seq,
    pub order: Order,
    pub safe: bool,
    /// This group's upcall number at this member (views and deliveries, from 1): lets a
    /// thread pool process upcalls and re-enter them in order.
    pub event: u64,
    pub payload: &'a [u8],
}

/// A view installed at this member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub group: String,
    pub id: u64,
    /// Members by rank, oldest first.
    pub members: Vec<SocketAddr>,
    /// Member ids by rank: the address, with `#N` for a process's N-th incarnation (a
    /// member that blocked and rejoined).
    pub member_ids: Vec<String>,
    /// This member's rank.
    pub rank: u16,
    pub event: u64,
}

/// The application's upcalls, run on the poller thread, in this order for a group: `restore`
/// (a joiner, once, before anything else), then `on_view` and the deliveries of that view,
/// `snapshot` (at a view's start, when a joiner needs the state), the next `on_view`, …;
/// `on_block` when this member ends up in a minority.
pub trait Handler: Send + 'static {
    fn on_deliver(&mut self, delivery: &Delivery<'_>);
    /// A view is installed: the deliveries that follow are in it.
    fn on_view(&mut self, view: &View) {
        let _ = view;
    }
    /// This member is in a minority partition (or was excluded): it delivers and sends
    /// nothing more under its current id; sends queued since the last view may be lost. It
    /// rejoins as a new incarnation once it reaches a majority again, with [`Handler::restore`]
    /// of the group's state (sequence numbers restart at 1).
    fn on_block(&mut self) {}
    /// The application's state, for a member that joins: everything delivered so far and
    /// nothing after (called between two views).
    fn snapshot(&mut self) -> Vec<u8> {
        Vec::new()
    }
    /// Load the group's state (what [`Handler::snapshot`] returned at another member): the
    /// state just before the view announced next.
    fn restore(&mut self, state: &[u8]) {
        let _ = state;
    }
    /// A request ([`Group::request`]) delivered here, in its order like any message: the
    /// reply to send back, or `None` for a null reply (the requester counts it as answered,
    /// without a payload). Requests do not reach [`Handler::on_deliver`].
    fn on_request(&mut self, request: &Delivery<'_>) -> Option<Vec<u8>> {
        let _ = request;
        None
    }
}

/// How many replies [`Group::request`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replies {
    /// None: answered as soon as the request is sent.
    None,
    /// The first non-null reply (or every member's null reply).
    First,
    /// `k` non-null replies (or every member answered, null or failed, first).
    Count(u16),
    /// A reply from every member of the view the request was delivered in; a member that
    /// fails or leaves before replying counts as a null reply.
    All,
}

/// One member's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The member id (address, `#N` for a later incarnation).
    pub from: String,
    pub addr: SocketAddr,
    /// `None`: a null reply (its handler declined, or the member failed before replying).
    pub payload: Option<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("no replies within {waited:?}")]
    TimedOut { waited: Duration },
    #[error("this member blocked (minority partition) before the replies came")]
    Blocked,
    #[error("the group was left or the node shut down")]
    Closed,
}

/// Replies to a request, to wait for ([`Group::request`]).
#[derive(Debug)]
pub struct PendingReplies {
    replies: Receiver<Result<Vec<Reply>, RequestError>>,
    /// Invoker mode: waiting on the owner thread runs the node's turns.
    invoker: Option<Arc<Invoker>>,
}

impl PendingReplies {
    /// Waits for the replies the request asked for, at most `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Vec<Reply>, RequestError> {
        match recv_driving(&self.replies, timeout, self.invoker.as_deref()) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(RequestError::TimedOut { waited: timeout }),
            Err(RecvTimeoutError::Disconnected) => Err(RequestError::Closed),
        }
    }

    /// The replies if they are all in, without waiting.
    pub fn try_get(&self) -> Option<Result<Vec<Reply>, RequestError>> {
        self.replies.try_recv().ok()
    }
}

impl<F: FnMut(&Delivery<'_>) + Send + 'static> Handler for F {
    fn on_deliver(&mut self, delivery: &Delivery<'_>) {
        self(delivery)
    }
}

/// Which datagram path the node uses.
#[derive(Clone, Default)]
pub enum Driver {
    /// io_uring when it works here, else sendmmsg/recvmmsg.
    #[default]
    Auto,
    IoUring,
    Mmsg,
    /// The in-process network (tests, in-process benchmarks).
    Memory(MemoryNetwork),
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Auto => "Auto",
            Driver::IoUring => "IoUring",
            Driver::Mmsg => "Mmsg",
            Driver::Memory(_) => "Memory",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no bind address: call NodeBuilder::bind(addr) with this member's address")]
    NoBind,
    #[error("{requested} pollers requested: this version runs exactly one poller per node (bind one node per address instead)")]
    Pollers { requested: usize },
    #[error(
        "CPU {cpu} is not available for pinning (available: {available:?}); fix the cpus(..) list"
    )]
    Cpu { cpu: usize, available: Vec<usize> },
    #[error("window of {window} messages: use 1..={max}")]
    Window { window: usize, max: usize },
    #[error("datagrams of {bytes} B: use {min}..={max} (the path MTU minus 28 B of IPv4 and UDP headers)")]
    DatagramBytes {
        bytes: usize,
        min: usize,
        max: usize,
    },
    #[error("opening the transport: {0}")]
    Transport(#[from] TransportError),
    #[error("trace directory {path}: {source}; pass a writable directory")]
    TraceDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("group size limit of {members} members: use 1..={max}")]
    GroupMembers { members: usize, max: usize },
    #[error("heartbeat of {heartbeat:?}: use 1 ms ..= 60 s")]
    Heartbeat { heartbeat: Duration },
    #[error("suspect timeout of {suspect:?} is under 2 heartbeats ({heartbeat:?} each): every late heartbeat would exclude a member")]
    SuspectTimeout {
        suspect: Duration,
        heartbeat: Duration,
    },
    #[error("counters file: {0}; pass another directory or turn counters off")]
    Counters(#[source] cohort_transport::counters::CountersError),
}

/// Where a node publishes its counters (poller and per-group, see [`crate::stats`]) for
/// `cohort stat` to read from another process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CountersLocation {
    /// No counters file (the default for the library).
    #[default]
    Off,
    /// `cohort-<pid>-<bind address>.counters` in
    /// [`default_dir`](cohort_transport::counters::default_dir).
    Default,
    /// `cohort-<pid>-<bind address>.counters` in this directory.
    Dir(PathBuf),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("this node ({me}) is not in the member list {members:?}: list every member, this one included, by the address it binds")]
    NotAMember {
        me: SocketAddr,
        members: Vec<SocketAddr>,
    },
    #[error("member {0} is listed twice")]
    Duplicate(SocketAddr),
    #[error("{count} members: a group has 1..={max}")]
    Size { count: usize, max: usize },
    #[error("group {0:?} is already joined on this node")]
    AlreadyJoined(String),
    #[error("the poller refused the group: {0}")]
    Refused(String),
    #[error("no view admitted this node within {waited:?}: are the seeds {seeds:?} running and reachable, and in the same group?")]
    NotAdmitted {
        seeds: Vec<SocketAddr>,
        waited: Duration,
    },
    #[error("the node is shut down")]
    Closed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("send window full: retry later, use send_blocking, or flush")]
    WouldBlock,
    #[error("payload of {len} B exceeds the maximum of {max} B for this group: split it")]
    TooLarge { len: usize, max: usize },
    #[error("the group was left or the node shut down")]
    Closed,
    #[error("a Publisher holds this group: send through it, or drop it first")]
    Exclusive,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlushError {
    #[error("own sends not stable after {waited:?}: a member may be down or unreachable")]
    TimedOut { waited: Duration },
    #[error("this member blocked (minority partition): its sends of the last view may be lost")]
    Blocked,
    #[error("the group was left or the node shut down")]
    Closed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaveError {
    #[error("group {0:?} is not joined on this node")]
    NotJoined(String),
    #[error("group {group:?} dropped here, but the others did not confirm the leave within {waited:?}: they will exclude this member as failed, and may miss its last sends")]
    Unstable { group: String, waited: Duration },
    #[error("the node is shut down")]
    Closed,
}

/// Builds a [`Node`].
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    bind: Option<SocketAddr>,
    multicast: Option<(SocketAddr, Ipv4Addr)>,
    multicast_ttl: u32,
    driver: Driver,
    pollers: usize,
    invoker: bool,
    cpus: Vec<usize>,
    idle: Idle,
    trace_dir: Option<PathBuf>,
    window_messages_max: usize,
    counters: CountersLocation,
    /// Test-only: seeded faults on the send side of the transport (see `fault_injection`).
    faults: Option<(FaultConfig, u64)>,
    /// Test-only: never answer a NAK (see `testing_skip_retransmit`).
    testing_skip_retransmit: bool,
    heartbeat: Duration,
    suspect_timeout: Option<Duration>,
    join_timeout: Duration,
    group_members_max: usize,
    discard_own: bool,
    datagram_bytes: usize,
    gso: bool,
    gro: bool,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        NodeBuilder {
            bind: None,
            multicast: None,
            multicast_ttl: 1,
            driver: Driver::Auto,
            pollers: 1,
            invoker: false,
            cpus: Vec::new(),
            idle: Idle::Backoff,
            trace_dir: None,
            window_messages_max: WINDOW_MESSAGES_DEFAULT,
            counters: CountersLocation::Off,
            faults: None,
            testing_skip_retransmit: false,
            heartbeat: Duration::from_millis(HEARTBEAT_MS_DEFAULT),
            suspect_timeout: None,
            join_timeout: Duration::from_millis(JOIN_TIMEOUT_MS_DEFAULT),
            group_members_max: GROUP_MEMBERS_DEFAULT,
            discard_own: false,
            datagram_bytes: cohort_transport::DATAGRAM_BYTES_DEFAULT,
            gso: true,
            gro: true,
        }
    }
}

impl NodeBuilder {
    /// This member's address (its id in every group): a concrete IP, not the wildcard.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Reach the group by IP multicast to `group`, joined on the interface with address
    /// `iface` (on one host: `127.0.0.1`), TTL 1 unless [`NodeBuilder::multicast_ttl`].
    pub fn multicast(mut self, group: SocketAddr, iface: Ipv4Addr) -> Self {
        self.multicast = Some((group, iface));
        self
    }

    pub fn multicast_ttl(mut self, ttl: u32) -> Self {
        self.multicast_ttl = ttl;
        self
    }

    /// Reach the group by one unicast copy per member (the default; clouds).
    pub fn unicast_fanout(mut self) -> Self {
        self.multicast = None;
        self
    }

    pub fn driver(mut self, driver: Driver) -> Self {
        self.driver = driver;
        self
    }

    /// Poller threads (only 1 is supported in this version; others are refused at start).
    pub fn pollers(mut self, pollers: usize) -> Self {
        self.pollers = pollers;
        self
    }

    /// Invoker mode: no poller thread; the application runs the node's turns on its own
    /// thread with [`Node::poll`] (see `runtime/invoker.rs`). Handlers then run on
    /// that thread. The first thread that runs a turn (usually the one that joins) owns
    /// them: poll, join, leave, flush and drop the node on that thread (sends may come from
    /// any). `cpus` does not apply (the application places its thread).
    pub fn invoker(mut self) -> Self {
        self.invoker = true;
        self
    }

    /// This node's members do not deliver their own plain messages to their handlers
    /// (Spread's `SELF_DISCARD`, JGroups' `discard_own_messages`): a sender that only
    /// publishes skips the upcall for each message it sent. The messages are ordered,
    /// numbered, made stable and delivered at every other member exactly as before (and a
    /// trace still records them delivered here: the protocol delivered them, the handler was
    /// not asked); [`GroupStats::own_discarded`] counts them. Requests are not plain
    /// messages: this member's own requests still reach [`Handler::on_request`]. Off by
    /// default.
    pub fn discard_own_messages(mut self, discard: bool) -> Self {
        self.discard_own = discard;
        self
    }

    /// CPUs to pin the pollers to (poller i on `cpus[i % len]`); empty: not pinned.
    pub fn cpus(mut self, cpus: &[usize]) -> Self {
        self.cpus = cpus.to_vec();
        self
    }

    pub fn idle(mut self, idle: Idle) -> Self {
        self.idle = idle;
        self
    }

    /// Write every member's trace to `dir/<member>.jsonl` (off by default).
    pub fn trace_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.trace_dir = Some(dir.into());
        self
    }

    /// The largest UDP payload of this node's datagrams, in bytes (default 1472: an Ethernet
    /// MTU of 1500 minus 28 B of IPv4 and UDP headers; [`DATAGRAM_BYTES_MIN`] ..=
    /// [`DATAGRAM_BYTES_MAX`]). Larger datagrams carry larger payloads
    /// ([`Group::payload_bytes_max`]) and more bundled messages per record: 8972 for jumbo
    /// frames (MTU 9000), up to 65507 on loopback. **Every member of a group must use the
    /// same size**: a datagram larger than a receiver's size is dropped there (counted), and
    /// one larger than the path MTU is fragmented by IP. The send window in bytes grows with
    /// it to hold at least 32 of the largest records.
    pub fn datagram_bytes(mut self, bytes: usize) -> Self {
        self.datagram_bytes = bytes;
        self
    }

    /// UDP generic segmentation offload on send (on by default): a run of equal datagrams
    /// to one destination goes to the kernel as one `UDP_SEGMENT` message, which moves 5–7x
    /// the datagrams per second on loopback (BENCHMARKS.md, "GSO + GRO"). Where the kernel
    /// or the route refuses it the driver falls back by itself; turn it off for paths that
    /// mishandle segmented sends (some tunnels and virtual NICs) or to measure without it.
    /// [`Node::offloads`] says what is in use.
    pub fn gso(mut self, on: bool) -> Self {
        self.gso = on;
        self
    }

    /// UDP generic receive offload (on by default): the kernel hands up trains of datagrams
    /// of one sender as one buffer, which the driver splits (larger receive buffers). Off,
    /// every datagram is received on its own.
    pub fn gro(mut self, on: bool) -> Self {
        self.gro = on;
        self
    }

    /// Each member's send window in messages (default [`WINDOW_MESSAGES_DEFAULT`]).
    pub fn window_messages_max(mut self, window: usize) -> Self {
        self.window_messages_max = window;
        self
    }

    /// Publish the node's counters in a memory-mapped file (off by default). The file is
    /// created at start and removed when the node stops.
    pub fn counters(mut self, location: CountersLocation) -> Self {
        self.counters = location;
        self
    }

    /// **For tests:** wraps the transport in the seeded fault layer
    /// ([`cohort_transport::FaultyTransport`]): every datagram this node sends may be lost,
    /// duplicated, reordered or delayed as `faults` says, decided by an RNG seeded with
    /// `seed`. Multi-host tests use it where the kernel has no `tc netem`. Invalid
    /// probabilities are refused at [`NodeBuilder::start`].
    pub fn fault_injection(mut self, faults: FaultConfig, seed: u64) -> Self {
        self.faults = Some((faults, seed));
        self
    }

    /// Breaks the protocol on purpose, for tests that prove a test suite can fail: the
    /// node's members never retransmit what others NAK, so a lost datagram stays lost.
    #[doc(hidden)]
    pub fn testing_skip_retransmit(mut self, skip: bool) -> Self {
        self.testing_skip_retransmit = skip;
        self
    }

    /// Every member sends a heartbeat (a status frame) at least this often (default
    /// [`HEARTBEAT_MS_DEFAULT`] ms); the failure detector, view-change timeouts and retries
    /// scale with it.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// A member not heard from for this long is suspected and excluded from the view
    /// (default: 10 heartbeats). Longer tolerates pauses (GC, SIGSTOP, slow starts) at the
    /// price of a slower reaction to crashes.
    pub fn suspect_timeout(mut self, after: Duration) -> Self {
        self.suspect_timeout = Some(after);
        self
    }

    /// The most members a group's view may have, 1..=[`MEMBERS_MAX`] (default
    /// [`GROUP_MEMBERS_DEFAULT`]): joiners past it are not admitted, and the largest payload
    /// is what a datagram holds beside a view of this size's headers (8 B per member).
    pub fn group_members_max(mut self, members: usize) -> Self {
        self.group_members_max = members;
        self
    }

    /// How long [`Node::join_with_seeds`] waits to be admitted (default
    /// [`JOIN_TIMEOUT_MS_DEFAULT`] ms).
    pub fn join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = timeout;
        self
    }

    /// Opens the transport and starts the poller (and trace writer) threads.
    pub fn start(self) -> Result<Node, StartError> {
        let bind = self.bind.ok_or(StartError::NoBind)?;
        let heartbeat_ns = self.heartbeat.as_nanos() as u64;
        if !(HEARTBEAT_NS_MIN..=HEARTBEAT_NS_MAX).contains(&heartbeat_ns) {
            return Err(StartError::Heartbeat {
                heartbeat: self.heartbeat,
            });
        }
        if !(1..=MEMBERS_MAX).contains(&self.group_members_max) {
            return Err(StartError::GroupMembers {
                members: self.group_members_max,
                max: MEMBERS_MAX,
            });
        }
        let suspect_ns = self
            .suspect_timeout
            .map_or(10 * heartbeat_ns, |d| d.as_nanos() as u64);
        if suspect_ns < 2 * heartbeat_ns {
            return Err(StartError::SuspectTimeout {
                suspect: Duration::from_nanos(suspect_ns),
                heartbeat: self.heartbeat,
            });
        }
        if self.pollers != 1 {
            return Err(StartError::Pollers {
                requested: self.pollers,
            });
        }
        const WINDOW_MESSAGES_LIMIT: usize = 1 << 16;
        if !(1..=WINDOW_MESSAGES_LIMIT).contains(&self.window_messages_max) {
            return Err(StartError::Window {
                window: self.window_messages_max,
                max: WINDOW_MESSAGES_LIMIT,
            });
        }
        let core = match self.cpus.first() {
            None => None,
            Some(&cpu) => {
                let available = core_affinity::get_core_ids().unwrap_or_default();
                match available.iter().find(|c| c.id == cpu) {
                    Some(c) => Some(*c),
                    None => {
                        return Err(StartError::Cpu {
                            cpu,
                            available: available.iter().map(|c| c.id).collect(),
                        })
                    }
                }
            }
        };
        if !(DATAGRAM_BYTES_MIN..=DATAGRAM_BYTES_MAX).contains(&self.datagram_bytes) {
            return Err(StartError::DatagramBytes {
                bytes: self.datagram_bytes,
                min: DATAGRAM_BYTES_MIN,
                max: DATAGRAM_BYTES_MAX,
            });
        }
        let mut cfg = SocketConfig::unicast(bind);
        cfg.datagram_bytes_max = self.datagram_bytes;
        cfg.gso = self.gso;
        cfg.gro = self.gro;
        let multicast = self.multicast.is_some();
        if let Some((group, iface)) = self.multicast {
            cfg.group = GroupMode::Multicast {
                group,
                iface,
                ttl: self.multicast_ttl,
                loopback: true,
            };
        }
        let transport: Box<dyn Transport> = match &self.driver {
            Driver::Auto => cohort_transport::open(DriverChoice::Auto, &cfg)?,
            Driver::IoUring => cohort_transport::open(DriverChoice::IoUring, &cfg)?,
            Driver::Mmsg => cohort_transport::open(DriverChoice::Mmsg, &cfg)?,
            Driver::Memory(net) => Box::new(net.open(&cfg)?),
        };
        let mut transport: Box<dyn Transport> = match self.faults.clone() {
            None => transport,
            Some((faults, seed)) => Box::new(FaultyTransport::new(
                transport,
                seed,
                faults,
                crate::runtime::poller::SEND_BATCH_DATAGRAMS_MAX,
            )?),
        };
        let local = transport.local_addr();
        let driver_name = transport.driver().name();
        let offloads = transport.offloads_in_use();
        let datagram_bytes_max = transport.datagram_bytes_max();
        let (trace_tx, trace_thread, trace_path) = match &self.trace_dir {
            None => (None, None, None),
            Some(dir) => {
                let w = trace_writer::spawn(dir, &local.to_string()).map_err(|source| {
                    StartError::TraceDir {
                        path: dir.clone(),
                        source,
                    }
                })?;
                (Some(w.sender), Some(w.thread), Some(w.path))
            }
        };
        let counters_file = {
            let name = local.to_string();
            let config = CountersConfig::default();
            match &self.counters {
                CountersLocation::Off => None,
                CountersLocation::Default => Some(CountersFile::create_default(&name, &config)),
                CountersLocation::Dir(dir) => Some(CountersFile::create(
                    &file_path_in(dir, std::process::id(), &name),
                    &config,
                )),
            }
            .transpose()
            .map_err(StartError::Counters)?
        };
        let counters_path = counters_file
            .as_ref()
            .and_then(|f| f.path().map(|p| p.to_path_buf()));
        let (control_tx, control_rx) = bounded(CONTROL_QUEUE_COMMANDS_MAX);
        let clock = Clock::new();
        let counters = Arc::new(PollerCounters::default());
        let waker = match transport.waker() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "no doorbell for the poller: sends on an idle node wait for its idle timeout");
                None
            }
        };
        let doorbell = Arc::new(Doorbell::new(waker));
        let poller = Poller::new(
            transport,
            control_rx,
            clock,
            self.idle,
            trace_tx,
            counters.clone(),
            multicast,
            counters_file,
            doorbell.clone(),
        )
        .map_err(StartError::Counters)?;
        let (thread, invoker) = if self.invoker {
            (None, Some(Arc::new(Invoker::new(poller))))
        } else {
            (
                Some(Self::spawn_poller(poller, local, core, &doorbell)?),
                None,
            )
        };
        Ok(Node {
            local,
            driver_name,
            offloads,
            datagram_bytes_max,
            window_messages_max: self.window_messages_max,
            testing_skip_retransmit: self.testing_skip_retransmit,
            heartbeat_ns,
            suspect_ns,
            join_timeout: self.join_timeout,
            group_members_max: self.group_members_max,
            discard_own: self.discard_own,
            trace_enabled: self.trace_dir.is_some(),
            trace_path,
            counters_path,
            clock,
            control: control_tx,
            doorbell,
            poller: thread,
            invoker,
            trace_thread,
            counters,
            groups: Mutex::new(HashMap::new()),
        })
    }

    fn spawn_poller(
        poller: Poller,
        local: SocketAddr,
        core: Option<core_affinity::CoreId>,
        doorbell: &Doorbell,
    ) -> Result<JoinHandle<()>, StartError> {
        let thread = std::thread::Builder::new()
            // The port tells pollers apart in `top -H` and profiles (15 bytes at most).
            .name(format!("cohort-p{}", local.port()))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(cpu = core.id, "could not pin the poller");
                    }
                }
                poller.run()
            })
            .map_err(StartError::Thread)?;
        doorbell.set_thread(thread.thread().clone());
        Ok(thread)
    }
}

/// A node: one address, one poller thread, any number of groups. Dropping it flushes each
/// group's own sends (bounded by [`LEAVE_FLUSH_TIMEOUT_MS`]), stops the threads and flushes
/// the trace.
pub struct Node {
    local: SocketAddr,
    driver_name: &'static str,
    offloads: Offloads,
    datagram_bytes_max: usize,
    window_messages_max: usize,
    testing_skip_retransmit: bool,
    heartbeat_ns: u64,
    suspect_ns: u64,
    join_timeout: Duration,
    group_members_max: usize,
    discard_own: bool,
    trace_enabled: bool,
    trace_path: Option<PathBuf>,
    counters_path: Option<PathBuf>,
    clock: Clock,
    control: Sender<Control>,
    doorbell: Arc<Doorbell>,
    /// The poller thread; none in invoker mode, or once stopped.
    poller: Option<JoinHandle<()>>,
    /// Invoker mode: the poller, run by the application's thread.
    invoker: Option<Arc<Invoker>>,
    trace_thread: Option<JoinHandle<std::io::Result<()>>>,
    counters: Arc<PollerCounters>,
    groups: Mutex<HashMap<String, Group>>,
}

/// Counters of a node's poller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub turns: u64,
    pub send_calls: u64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub dropped_malformed: u64,
    pub dropped_unknown_group: u64,
    pub dropped_send_error: u64,
}

impl Node {
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This member's address (its id).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The transport driver in use (`io_uring`, `sendmmsg` or `memory`).
    pub fn driver_name(&self) -> &'static str {
        self.driver_name
    }

    /// The UDP segmentation offloads its transport opened with: what
    /// [`NodeBuilder::gso`] and [`NodeBuilder::gro`] asked for and the kernel granted (none
    /// on the memory network). A driver whose segmented send the route later refuses turns
    /// GSO off for good and logs it; this stays as opened.
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// Where this node's trace goes, if tracing is on.
    pub fn trace_path(&self) -> Option<&std::path::Path> {
        self.trace_path.as_deref()
    }

    /// The counters file this node publishes, if any (removed when the node stops).
    pub fn counters_path(&self) -> Option<&std::path::Path> {
        self.counters_path.as_deref()
    }

    /// Invoker mode ([`NodeBuilder::invoker`]): runs one turn of the node on this thread —
    /// receive, take the groups' sends, deliver to the handlers (here, on this thread),
    /// transmit — without waiting; true if it did anything. The application calls it in its
    /// loop (and idles as it sees fit when it returns false). Only the thread that owns the
    /// node's turns runs them (the first that ran one); elsewhere, and on a node with a
    /// poller thread, it does nothing and returns false.
    pub fn poll(&self) -> bool {
        self.invoker
            .as_ref()
            .and_then(|i| i.turn(false))
            .unwrap_or(false)
    }

    pub fn stats(&self) -> NodeStats {
        let c = &self.counters;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        NodeStats {
            turns: r(&c.turns),
            send_calls: r(&c.send_calls),
            datagrams_sent: r(&c.datagrams_sent),
            datagrams_received: r(&c.datagrams_received),
            dropped_malformed: r(&c.dropped_malformed),
            dropped_unknown_group: r(&c.dropped_unknown_group),
            dropped_send_error: r(&c.dropped_send_error),
        }
    }

    /// Founds group `name` with `members` (every founding member, this node included, in
    /// rank order; all founders must list them identically) and installs view 1. `handler`
    /// gets the view, then every delivery. From there on membership is dynamic: members that
    /// fail are excluded, others join with [`Node::join_with_seeds`], members leave with
    /// [`Node::leave`]. A founder that starts late (past the others' suspect timeout) is
    /// excluded and comes back by itself as a new incarnation, with state transfer.
    pub fn join(
        &self,
        name: &str,
        members: &[SocketAddr],
        handler: impl Handler,
    ) -> Result<Group, JoinError> {
        if members.is_empty() || members.len() > self.group_members_max {
            return Err(JoinError::Size {
                count: members.len(),
                max: self.group_members_max,
            });
        }
        for (i, m) in members.iter().enumerate() {
            if members[..i].contains(m) {
                return Err(JoinError::Duplicate(*m));
            }
        }
        if !members.contains(&self.local) {
            return Err(JoinError::NotAMember {
                me: self.local,
                members: members.to_vec(),
            });
        }
        let ids: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        self.start_group(name, handler, |cfg, now| Endpoint::founder(cfg, ids, now))
            .map(|(group, _)| group)
    }

    /// Joins the running group `name` through `seeds` (any of its members' addresses; a
    /// seed that is down is skipped): asks to be admitted, receives the group's state
    /// ([`Handler::restore`]) and returns once its first view is installed, or
    /// `NotAdmitted` after the join timeout ([`NodeBuilder::join_timeout`]).
    pub fn join_with_seeds(
        &self,
        name: &str,
        seeds: &[SocketAddr],
        handler: impl Handler,
    ) -> Result<Group, JoinError> {
        if seeds.is_empty() || seeds.len() > MEMBERS_MAX {
            return Err(JoinError::Size {
                count: seeds.len(),
                max: MEMBERS_MAX,
            });
        }
        let ids: Vec<String> = seeds.iter().map(|m| m.to_string()).collect();
        let (group, installed) =
            self.start_group(name, handler, |cfg, now| Endpoint::joiner(cfg, ids, now))?;
        match recv_driving(&installed, self.join_timeout, self.invoker.as_deref()) {
            Ok(()) => Ok(group),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.leave(name);
                Err(JoinError::NotAdmitted {
                    seeds: seeds.to_vec(),
                    waited: self.join_timeout,
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(JoinError::Closed),
        }
    }

    /// Registers group `name` on the poller with the endpoint `make` builds; returns its
    /// handle and a channel answered when its first view is installed.
    fn start_group(
        &self,
        name: &str,
        handler: impl Handler,
        make: impl FnOnce(EndpointConfig, Time) -> Endpoint,
    ) -> Result<(Group, Receiver<()>), JoinError> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if groups.contains_key(name) {
            return Err(JoinError::AlreadyJoined(name.to_owned()));
        }
        let id = group_id(name);
        let mut cfg = EndpointConfig::new(name, id, &self.local.to_string())
            .with_heartbeat_ns(self.heartbeat_ns);
        cfg.suspect_timeout_ns = self.suspect_ns;
        cfg.members_max = self.group_members_max;
        cfg.trace = self.trace_enabled;
        let m = &mut cfg.member;
        m.datagram_bytes_max = self.datagram_bytes_max;
        m.trace = self.trace_enabled;
        m.window_messages_max = self.window_messages_max;
        m.testing_skip_retransmit = self.testing_skip_retransmit;
        m.discard_own_bundles = self.discard_own;
        m.log_messages_max = (self.window_messages_max + CONTROL_RECORDS_RESERVE + 1)
            .next_power_of_two()
            .max(m.log_messages_max);
        // A one-member view carries the largest payload: every view's window holds it, and
        // at least WINDOW_RECORDS_MIN records of it (large datagrams).
        m.window_bytes_max = m
            .window_bytes_max
            .max(WINDOW_RECORDS_MIN * m.payload_bytes_max());
        let endpoint = make(cfg, self.clock.now());
        let payload_bytes_max = endpoint
            .payload_bytes_max_any_view()
            .saturating_sub(framing::PLAIN_HEADER_BYTES);
        let stage = Arc::new(Stage::for_payloads_up_to(
            payload_bytes_max + framing::PLAIN_HEADER_BYTES,
        ));
        let (installed_tx, installed_rx) = bounded(1);
        let counters = Arc::new(GroupCounters::default());
        let mut slot = GroupSlot::new(
            id,
            name.to_owned(),
            endpoint,
            Box::new(handler),
            stage.clone(),
            counters.clone(),
            Some(installed_tx),
        );
        slot.discard_own = self.discard_own;
        let (done_tx, done_rx) = bounded(1);
        self.control
            .send(Control::Join {
                slot: Box::new(slot),
                done: done_tx,
            })
            .map_err(|_| JoinError::Closed)?;
        self.doorbell.ring();
        let bound = Duration::from_millis(CONTROL_REPLY_TIMEOUT_MS);
        match recv_driving(&done_rx, bound, self.invoker.as_deref()) {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(JoinError::Refused(reason)),
            Err(_) => return Err(JoinError::Closed),
        }
        let group = Group {
            inner: Arc::new(GroupInner {
                name: name.to_owned(),
                id,
                payload_bytes_max,
                counters,
                stage,
                doorbell: self.doorbell.clone(),
                invoker: self.invoker.clone(),
                next_request: std::sync::atomic::AtomicU64::new(1),
            }),
        };
        groups.insert(name.to_owned(), group.clone());
        Ok((group, installed_rx))
    }

    /// Leaves group `name` gracefully: this member's sends are delivered to the others in
    /// its last view, the others install a view without it, and the group is dropped here
    /// (bounded by [`LEAVE_FLUSH_TIMEOUT_MS`]; past it the group is dropped anyway and the
    /// others exclude this member as failed: `Unstable`).
    pub fn leave(&self, name: &str) -> Result<(), LeaveError> {
        let group = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| LeaveError::NotJoined(name.to_owned()))?;
        let waiting = self.ask_leave(&group)?;
        self.await_leave(&group, waiting)
    }

    /// Asks the poller to leave `group`; the answer comes on the returned channel.
    fn ask_leave(&self, group: &Group) -> Result<Receiver<LeaveOutcome>, LeaveError> {
        let (done_tx, done_rx) = bounded(1);
        self.control
            .send(Control::Leave {
                group: group.inner.id,
                timeout_ns: LEAVE_FLUSH_TIMEOUT_MS * 1_000_000,
                done: done_tx,
            })
            .map_err(|_| LeaveError::Closed)?;
        self.doorbell.ring();
        Ok(done_rx)
    }

    fn await_leave(
        &self,
        group: &Group,
        waiting: Receiver<LeaveOutcome>,
    ) -> Result<(), LeaveError> {
        let bound = Duration::from_millis(LEAVE_FLUSH_TIMEOUT_MS + CONTROL_REPLY_TIMEOUT_MS);
        match recv_driving(&waiting, bound, self.invoker.as_deref()) {
            Ok(LeaveOutcome::Left) => Ok(()),
            Ok(LeaveOutcome::TimedOut) => Err(LeaveError::Unstable {
                group: group.name().to_owned(),
                waited: Duration::from_millis(LEAVE_FLUSH_TIMEOUT_MS),
            }),
            Ok(LeaveOutcome::NotJoined) => Err(LeaveError::NotJoined(group.name().to_owned())),
            Err(_) => Err(LeaveError::Closed),
        }
    }

    /// Stops the node now (what drop does): flushes each group's own sends (bounded), stops
    /// the poller, flushes and closes the trace. Returns the trace writer's I/O error, if any.
    pub fn shutdown(mut self) -> std::io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> std::io::Result<()> {
        if self.poller.is_none() && self.invoker.is_none() {
            return Ok(());
        }
        let groups: Vec<Group> = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, g)| g)
            .collect();
        // Leave every group at once (each bounded by LEAVE_FLUSH_TIMEOUT_MS in the poller).
        let waiting: Vec<_> = groups
            .iter()
            .filter_map(|g| self.ask_leave(g).ok().map(|w| (g, w)))
            .collect();
        for (g, w) in waiting {
            if let Err(e) = self.await_leave(g, w) {
                tracing::warn!(group = %g.name(), error = %e, "shutting down without a clean leave");
            }
        }
        if let Some(invoker) = self.invoker.take() {
            invoker.stop();
        }
        if let Some(poller) = self.poller.take() {
            let _ = self.control.send(Control::Shutdown);
            self.doorbell.ring();
            if poller.join().is_err() {
                tracing::error!("the poller thread panicked");
            }
        }
        match self.trace_thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the trace writer thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "writing the trace failed");
        }
    }
}

struct GroupInner {
    name: String,
    id: u32,
    payload_bytes_max: usize,
    counters: Arc<GroupCounters>,
    /// Where sends, requests and flushes wait for the poller (see `runtime/stage.rs`).
    stage: Arc<Stage>,
    doorbell: Arc<Doorbell>,
    /// Invoker mode: waits on the owner thread run the node's turns.
    invoker: Option<Arc<Invoker>>,
    /// The next request id.
    next_request: std::sync::atomic::AtomicU64,
}

/// A handle on a group joined on a node; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Group {
    inner: Arc<GroupInner>,
}

/// Counters of one group at this member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Messages the member accepted from this application.
    pub sent: u64,
    /// Messages delivered to the handler (all senders).
    pub delivered: u64,
    /// Sends that found the member's window full.
    pub window_stalls: u64,
    /// Views installed here.
    pub views: u64,
    /// Times this member blocked (minority partition, or excluded) and rejoined.
    pub blocks: u64,
    /// Sends accepted by the handle but dropped: queued before a block, or after a leave.
    pub sends_dropped: u64,
    /// Records that carried several messages: sends the poller found staged together with
    /// one order go out as one record (a bundle), delivered together everywhere; `sent /
    /// bundles_sent` is roughly how many per record under load.
    pub bundles_sent: u64,
    /// This member's own plain messages not handed to its handler
    /// ([`NodeBuilder::discard_own_messages`]).
    pub own_discarded: u64,
    /// Records this member sent again because a peer asked for them (a NAK): datagrams lost
    /// on the way, or dropped by a full receive buffer.
    pub retransmits: u64,
    /// Retransmission requests (NAK frames) this member sent: it missed records of a peer.
    pub naks_sent: u64,
    /// Retransmission requests peers sent to this member.
    pub naks_received: u64,
}

/// How long one sleep of a blocking send or flush lasts before it checks again (the poller
/// signals room sooner).
const ROOM_WAIT_SLICE_US: u64 = 200;

impl Group {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The view installed here now; `None` while joining or blocked.
    pub fn view(&self) -> Option<View> {
        self.inner
            .counters
            .view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .view
            .clone()
    }

    /// The current view's members by rank (empty while joining or blocked).
    pub fn members(&self) -> Vec<SocketAddr> {
        self.view().map(|v| v.members).unwrap_or_default()
    }

    /// This member's rank in the current view (`None` while joining or blocked).
    pub fn rank(&self) -> Option<u16> {
        self.view().map(|v| v.rank)
    }

    /// Largest payload [`Group::send`] accepts: what a datagram holds beside the headers of
    /// a view of [`NodeBuilder::group_members_max`] members, so that it holds in every view
    /// the group may go through.
    pub fn payload_bytes_max(&self) -> usize {
        self.inner.payload_bytes_max
    }

    pub fn stats(&self) -> GroupStats {
        let c = &self.inner.counters;
        GroupStats {
            sent: c.sent.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            window_stalls: c.window_stalls.load(Ordering::Relaxed),
            views: c.views.load(Ordering::Relaxed),
            blocks: c.blocks.load(Ordering::Relaxed),
            sends_dropped: c.sends_dropped.load(Ordering::Relaxed),
            bundles_sent: c.bundles_sent.load(Ordering::Relaxed),
            own_discarded: c.own_discarded.load(Ordering::Relaxed),
            retransmits: c.retransmits.load(Ordering::Relaxed),
            naks_sent: c.naks_sent.load(Ordering::Relaxed),
            naks_received: c.naks_received.load(Ordering::Relaxed),
        }
    }

    /// Whether, when the poller last idled, everything this member knew of was stable and
    /// delivered and nothing waited to go out.
    pub fn is_settled(&self) -> bool {
        self.inner.counters.settled.load(Ordering::Relaxed)
    }

    fn check_len(&self, len: usize) -> Result<(), SendError> {
        check_len(len, self.inner.payload_bytes_max)
    }

    /// The stage, locked, once it has room for a record of `len` bytes: `WouldBlock` at once
    /// without `wait`, else sleeping for room until `wait`'s deadline (none: forever).
    #[inline]
    fn stage_with_room(
        &self,
        len: usize,
        wait: Option<Option<Instant>>,
        flush: bool,
    ) -> Result<MutexGuard<'_, Staged>, SendError> {
        let s = self.inner.stage.lock();
        if !s.closed
            && s.exclusive == Exclusive::Free
            && s.has_room(len)
            && (!flush || s.flushes.len() < FLUSHES_STAGED_MAX)
        {
            return Ok(s);
        }
        self.stage_wait_room(s, len, wait, flush)
    }

    /// [`Group::stage_with_room`] once the stage was full (or closed).
    #[cold]
    fn stage_wait_room<'g>(
        &'g self,
        mut s: MutexGuard<'g, Staged>,
        len: usize,
        wait: Option<Option<Instant>>,
        flush: bool,
    ) -> Result<MutexGuard<'g, Staged>, SendError> {
        let stage = &self.inner.stage;
        // A flush while a publisher holds the group waits until the poller took every ring
        // record published before it (see `runtime::stage`).
        let mut ring_mark = None;
        loop {
            if s.closed {
                return Err(SendError::Closed);
            }
            let admitted = match s.exclusive {
                Exclusive::Free => true,
                Exclusive::Held if !flush => return Err(SendError::Exclusive),
                // A publisher's last records are still in the ring: sends wait for them.
                Exclusive::Draining if !flush => false,
                Exclusive::Held | Exclusive::Draining => {
                    let mark = *ring_mark.get_or_insert_with(|| stage.ring.tail());
                    stage.ring.head() >= mark
                }
            };
            if admitted && s.has_room(len) && (!flush || s.flushes.len() < FLUSHES_STAGED_MAX) {
                return Ok(s);
            }
            self.inner.doorbell.ring();
            let mut slice = Duration::from_micros(ROOM_WAIT_SLICE_US);
            match wait {
                None => return Err(SendError::WouldBlock),
                Some(None) => {}
                Some(Some(deadline)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(SendError::WouldBlock);
                    }
                    slice = slice.min(left);
                }
            }
            s = self.wait_room_once(s, slice);
        }
    }

    /// Waits once for the poller to make room: in invoker mode on the owner thread, room
    /// comes from this thread's turns (none runs when this is a handler inside one: then it
    /// sleeps like any other thread), else it sleeps on the room signal at most `slice`.
    fn wait_room_once<'g>(
        &'g self,
        s: MutexGuard<'g, Staged>,
        slice: Duration,
    ) -> MutexGuard<'g, Staged> {
        let stage = &self.inner.stage;
        if let Some(invoker) = &self.inner.invoker {
            if invoker.is_owner_here() {
                drop(s);
                let ran = invoker.turn(true).is_some();
                let s = stage.lock();
                if ran {
                    return s;
                }
                return stage.wait_room(s, slice);
            }
        }
        stage.wait_room(s, slice)
    }

    /// Claims the group's **exclusive publisher** (Aeron's `ExclusivePublication`): a
    /// single-threaded sender whose sends reach the poller through a lock-free ring instead
    /// of the locked stage: no lock and no atomic read-modify-write per message, the payload
    /// copied once into the ring and read from there in place. While it
    /// lives, this member's other sends on the group (from any handle: `send`,
    /// `send_batch`, `claim`, `request`, ...) are refused with [`SendError::Exclusive`];
    /// [`Group::flush`] still works and covers the publisher's sends before it. Its numbers
    /// continue the group's; once it is dropped, the handles send again (after the poller
    /// took its last records: until then their sends see `WouldBlock`).
    ///
    /// Errors: `Exclusive` when another publisher holds the group, `Closed`.
    pub fn publisher(&self) -> Result<Publisher, SendError> {
        let mut s = self.inner.stage.lock();
        if s.closed {
            return Err(SendError::Closed);
        }
        if s.exclusive == Exclusive::Held {
            return Err(SendError::Exclusive);
        }
        // From `Draining` too: the last publisher's messages are ahead in the same ring.
        let Some(writer) = self.inner.stage.take_writer() else {
            debug_assert!(false, "no publisher holds the group, but its ring is taken");
            return Err(SendError::Exclusive);
        };
        self.renumber(&mut s);
        s.exclusive = Exclusive::Held;
        Ok(Publisher {
            group: self.clone(),
            writer: Some(writer),
            next_seq: s.next_seq,
            incarnation: s.incarnation,
            owner_thread: self.inner.invoker.as_ref().and_then(|i| i.owner()),
            payload_bytes_max: self.inner.payload_bytes_max,
        })
    }

    /// Starts a numbered record in the stage (locked, with room): its framing is written,
    /// `len` body bytes follow, zeroed; commit or drop the returned claim.
    #[allow(clippy::too_many_arguments)]
    fn open_record<'g>(
        &'g self,
        mut s: MutexGuard<'g, Staged>,
        kind: Kind,
        order: Order,
        safe: bool,
        framing_len: usize,
        write_framing: impl FnOnce(&mut Vec<u8>),
        body: Body<'_>,
    ) -> Claim<'g> {
        self.renumber(&mut s);
        let len = framing_len + body.len();
        // Plain sends go into the stage as bundles (see `runtime::stage`); gbcast never.
        let entry =
            (kind == Kind::Send && order != Order::Gbcast).then(|| s.begin_entry(order, safe, len));
        let start = match entry {
            Some(e) => e.start,
            None => {
                let start = s.bytes.len();
                s.begin(kind, order, safe, len);
                start
            }
        };
        write_framing(&mut s.bytes);
        let at = s.bytes.len();
        match body {
            Body::Zeroed(len) => s.bytes.resize(at + len, 0),
            Body::Bytes(bytes) => s.bytes.extend_from_slice(bytes),
        }
        Claim {
            group: self,
            staged: s,
            start,
            body: at,
            entry,
            committed: false,
        }
    }

    /// Follows the member's current incarnation: numbering restarts at 1 when it changed (a
    /// block).
    #[inline]
    fn renumber(&self, s: &mut Staged) {
        let incarnation = self.inner.counters.incarnation.load(Ordering::Relaxed);
        if incarnation != s.incarnation {
            s.incarnation = incarnation;
            s.next_seq = 1;
        }
    }

    /// A plain send's record (see [`Group::open_record`]).
    fn open_plain(
        &self,
        order: Order,
        safe: bool,
        body: Body<'_>,
        wait: Option<Option<Instant>>,
    ) -> Result<Claim<'_>, SendError> {
        self.check_len(body.len())?;
        let s = self.stage_with_room(framing::PLAIN_HEADER_BYTES + body.len(), wait, false)?;
        Ok(self.open_record(
            s,
            Kind::Send,
            order,
            safe,
            framing::PLAIN_HEADER_BYTES,
            framing::push_plain,
            body,
        ))
    }

    /// Multicasts a request with `order` (like [`Group::send`]); each member's
    /// [`Handler::on_request`] answers it, and the returned [`PendingReplies`] gets the
    /// replies `replies` asks for. A member that fails before replying counts as a null
    /// reply; if this member blocks, the request fails (`Blocked`). Replies travel as FIFO
    /// messages of the group (every member receives them; only the requester keeps them).
    /// `WouldBlock` when the send stage is full or [`REQUESTS_OUTSTANDING_MAX`] requests
    /// wait already.
    pub fn request(
        &self,
        order: Order,
        bytes: &[u8],
        replies: Replies,
    ) -> Result<PendingReplies, SendError> {
        let max = self.inner.payload_bytes_max + framing::PLAIN_HEADER_BYTES
            - framing::REQUEST_HEADER_BYTES;
        if bytes.len() > max {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        let c = &self.inner.counters;
        if c.requests_outstanding.fetch_add(1, Ordering::Relaxed) >= REQUESTS_OUTSTANDING_MAX {
            c.requests_outstanding.fetch_sub(1, Ordering::Relaxed);
            return Err(SendError::WouldBlock);
        }
        let s = match self.stage_with_room(framing::REQUEST_HEADER_BYTES + bytes.len(), None, false)
        {
            Ok(s) => s,
            Err(e) => {
                c.requests_outstanding.fetch_sub(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let want = match replies {
            Replies::None => Want::None,
            Replies::First => Want::First,
            Replies::Count(k) => Want::Count(k),
            Replies::All => Want::All,
        };
        let (done, rx) = bounded(1);
        let mut claim = self.open_record(
            s,
            Kind::Request,
            order,
            false,
            framing::REQUEST_HEADER_BYTES,
            |buf| framing::push_request(buf, id, want),
            Body::Bytes(bytes),
        );
        // Its place among the records: the poller takes waiters in record order.
        claim.staged.waiters.push_back(Waiter { id, want, done });
        claim.commit()?;
        Ok(PendingReplies {
            replies: rx,
            invoker: self.inner.invoker.clone(),
        })
    }

    /// Sends a message of `len` bytes that `write` fills in place *knowing its sequence
    /// number* (for payloads that carry it): the number and the queueing are one step, so
    /// they agree even when this member blocks and its numbering restarts meanwhile.
    /// `WouldBlock` (checked before `write` runs) when the send window and the stage in
    /// front of it are full. `write` runs with the group's send stage locked: it must not
    /// send on this group itself.
    pub fn send_numbered(
        &self,
        order: Order,
        safe: bool,
        len: usize,
        write: impl FnOnce(Seq, &mut [u8]),
    ) -> Result<Seq, SendError> {
        let mut claim = self.open_plain(order, safe, Body::Zeroed(len), None)?;
        let seq = claim.seq();
        write(seq, &mut claim[..]);
        claim.commit()
    }

    /// Multicasts `bytes` with `order` (and safe delivery if `safe`) without waiting; the
    /// message is delivered here too. Returns its sequence number, or `WouldBlock` when the
    /// send window and the stage in front of it are full. The bytes are copied into the
    /// group's send stage (no allocation); the poller copies them into the member's log.
    pub fn send(&self, order: Order, safe: bool, bytes: &[u8]) -> Result<Seq, SendError> {
        self.send_plain(order, safe, bytes, None)
    }

    /// Like [`Group::send`], but waits for room in the window.
    pub fn send_blocking(&self, order: Order, safe: bool, bytes: &[u8]) -> Result<Seq, SendError> {
        self.send_plain(order, safe, bytes, Some(None))
    }

    /// A plain send copied in: what a [`Claim`] does, without one (nothing is written in
    /// place, and moving a claim about costs more than the append on this hot path).
    #[inline(always)]
    fn send_plain(
        &self,
        order: Order,
        safe: bool,
        bytes: &[u8],
        wait: Option<Option<Instant>>,
    ) -> Result<Seq, SendError> {
        if order == Order::Gbcast {
            return self
                .open_plain(order, safe, Body::Bytes(bytes), wait)?
                .commit();
        }
        self.check_len(bytes.len())?;
        let mut s = self.stage_with_room(framing::PLAIN_HEADER_BYTES + bytes.len(), wait, false)?;
        self.renumber(&mut s);
        let (seq, start) = Self::append_plain(&mut s, order, safe, bytes);
        drop(s);
        self.inner.doorbell.ring_staged(start == 0);
        Ok(seq)
    }

    /// Appends a plain message to the stage (locked, numbered, with room) as a bundle entry:
    /// its number and where it starts.
    #[inline(always)]
    fn append_plain(s: &mut Staged, order: Order, safe: bool, bytes: &[u8]) -> (Seq, usize) {
        let start = s.push_entry(order, safe, framing::KIND_PLAIN, bytes);
        let seq = Seq(s.next_seq);
        s.next_seq += 1;
        (seq, start)
    }

    /// Multicasts `messages`, in order, with `order` (and safe delivery if `safe`) under
    /// **one** lock of the send stage: as many as the stage takes now, at least one. Returns
    /// the first one's sequence number and how many were sent (the others keep theirs
    /// consecutively); send the rest again later. `WouldBlock` when not even the first fits,
    /// `TooLarge` (nothing sent) when any is past [`Group::payload_bytes_max`]. A burst sent
    /// this way costs the stage's lock and the doorbell once instead of once per message;
    /// what the members receive is the same as from as many [`Group::send`] calls. An empty
    /// `messages` sends nothing: `Ok((next number, 0))`.
    pub fn send_batch(
        &self,
        order: Order,
        safe: bool,
        messages: &[&[u8]],
    ) -> Result<(Seq, usize), SendError> {
        for m in messages {
            self.check_len(m.len())?;
        }
        let Some(first) = messages.first() else {
            let mut s = self.inner.stage.lock();
            if s.closed {
                return Err(SendError::Closed);
            }
            self.renumber(&mut s);
            return Ok((Seq(s.next_seq), 0));
        };
        if order == Order::Gbcast {
            // Never bundled: one record each, still under one lock.
            let mut s =
                self.stage_with_room(framing::PLAIN_HEADER_BYTES + first.len(), None, false)?;
            self.renumber(&mut s);
            let (first_seq, first_start) = (Seq(s.next_seq), s.bytes.len());
            let mut sent = 0;
            for m in messages {
                let len = framing::PLAIN_HEADER_BYTES + m.len();
                if sent > 0 && !s.has_room(len) {
                    break;
                }
                s.begin(Kind::Send, order, safe, len);
                framing::push_plain(&mut s.bytes);
                s.bytes.extend_from_slice(m);
                s.next_seq += 1;
                sent += 1;
            }
            drop(s);
            self.inner.doorbell.ring_staged(first_start == 0);
            return Ok((first_seq, sent));
        }
        let mut s = self.stage_with_room(framing::PLAIN_HEADER_BYTES + first.len(), None, false)?;
        self.renumber(&mut s);
        let (first_seq, first_start) = Self::append_plain(&mut s, order, safe, first);
        let mut sent = 1;
        for m in &messages[1..] {
            if !s.has_room(framing::PLAIN_HEADER_BYTES + m.len()) {
                break;
            }
            Self::append_plain(&mut s, order, safe, m);
            sent += 1;
        }
        drop(s);
        self.inner.doorbell.ring_staged(first_start == 0);
        Ok((first_seq, sent))
    }

    /// Claims a message of exactly `len` bytes to write in place (Aeron's `tryClaim`): the
    /// returned [`Claim`] derefs to `&mut [u8]` of `len` zeroed bytes inside the group's send
    /// stage; [`Claim::commit`] sends it, dropping the claim sends nothing. The claim holds
    /// the group's send stage: other sends on this group (from any thread) wait until it is
    /// committed or dropped, so write and commit promptly.
    ///
    /// Errors: `TooLarge` past [`Group::payload_bytes_max`]; `WouldBlock` when the send
    /// window and the stage in front of it are full *now* (checked first, so that nothing is
    /// written in vain; retry later); `Closed`.
    pub fn claim(&self, order: Order, safe: bool, len: usize) -> Result<Claim<'_>, SendError> {
        self.open_plain(order, safe, Body::Zeroed(len), None)
    }

    /// Returns once every message this member sent in this group before the call is stable
    /// (held by every member), waiting at most [`FLUSH_TIMEOUT_MS_DEFAULT`].
    pub fn flush(&self) -> Result<(), FlushError> {
        self.flush_timeout(Duration::from_millis(FLUSH_TIMEOUT_MS_DEFAULT))
    }

    /// [`Group::flush`] with its own bound.
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), FlushError> {
        let start = Instant::now();
        let (done_tx, done_rx) = bounded(1);
        {
            let mut s = match self.stage_with_room(0, Some(Some(start + timeout)), true) {
                Ok(s) => s,
                Err(SendError::Closed) => return Err(FlushError::Closed),
                Err(_) => return Err(FlushError::TimedOut { waited: timeout }),
            };
            s.begin(Kind::Flush, Order::Fifo, false, 0);
            s.flushes.push_back(done_tx);
        }
        self.inner.doorbell.ring();
        let left = timeout.saturating_sub(start.elapsed());
        match recv_driving(&done_rx, left, self.inner.invoker.as_deref()) {
            Ok(FlushOutcome::Done) => Ok(()),
            Ok(FlushOutcome::Blocked) => Err(FlushError::Blocked),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                Err(FlushError::TimedOut { waited: timeout })
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(FlushError::Closed),
        }
    }
}

/// A group's exclusive sender, from [`Group::publisher`]: `&mut self` sends, without the
/// stage's lock. Send it to the thread that sends; drop it to give the group back to the
/// handles.
pub struct Publisher {
    group: Group,
    /// The ring's writing side (given back to the group when dropped).
    writer: Option<RingWriter>,
    /// The number the next send carries, in `incarnation`.
    next_seq: u64,
    incarnation: u64,
    /// Invoker mode: the thread that runs the node's turns (on it, a send needs no
    /// doorbell).
    owner_thread: Option<std::thread::ThreadId>,
    /// [`Group::payload_bytes_max`], kept here (a send reads no other struct to check it).
    payload_bytes_max: usize,
}

impl Publisher {
    /// Multicasts `bytes` with `order` (and safe delivery if `safe`) without waiting, like
    /// [`Group::send`]: its sequence number, or `WouldBlock` when the ring (and the send
    /// window behind it) is full.
    ///
    /// Always inlined: the caller's loop keeps the ring's positions in registers and
    /// constant `order`/`safe` fold away (15 fewer instructions per message than a call in
    /// the loopback bench's sender).
    #[inline(always)]
    pub fn send(&mut self, order: Order, safe: bool, bytes: &[u8]) -> Result<Seq, SendError> {
        let incarnation = self.admit(bytes.len())?;
        let Some(writer) = self.writer.as_mut() else {
            return Err(SendError::Closed);
        };
        if !writer.push(order, safe, incarnation, framing::KIND_PLAIN, bytes) {
            return Err(self.ring_full());
        }
        Ok(self.published())
    }

    /// Claims a message of exactly `len` bytes to write in place in the ring (Aeron's
    /// `tryClaim` on an exclusive publication): the returned [`PublisherClaim`] derefs to
    /// `&mut [u8]` of `len` zeroed bytes; [`PublisherClaim::commit`] sends it, dropping the
    /// claim sends nothing (and uses no number). The payload is written once, by the caller,
    /// where the poller reads it: no copy on the sending thread.
    ///
    /// Errors as [`Publisher::send`]: `TooLarge`, `WouldBlock` (the ring is full now),
    /// `Closed`.
    #[inline]
    pub fn claim(
        &mut self,
        order: Order,
        safe: bool,
        len: usize,
    ) -> Result<PublisherClaim<'_>, SendError> {
        let incarnation = self.admit(len)?;
        let Some(writer) = self.writer.as_mut() else {
            return Err(SendError::Closed);
        };
        let Some(claim) = writer.claim(order, safe, incarnation, framing::KIND_PLAIN, len) else {
            return Err(self.ring_full());
        };
        Ok(PublisherClaim {
            publisher: self,
            claim,
        })
    }

    /// The checks before a message of `len` bytes enters the ring: its length and the
    /// group still open; the numbering restarts if the member blocked since the last
    /// message. The member's incarnation.
    #[inline(always)]
    fn admit(&mut self, len: usize) -> Result<u64, SendError> {
        check_len(len, self.payload_bytes_max)?;
        let inner = &*self.group.inner;
        if inner.stage.ring_closed.load(Ordering::Relaxed) {
            return Err(SendError::Closed);
        }
        let incarnation = inner.counters.incarnation.load(Ordering::Relaxed);
        if incarnation != self.incarnation {
            self.incarnation = incarnation;
            self.next_seq = 1;
        }
        Ok(incarnation)
    }

    /// A message was published into the ring: its number.
    #[inline(always)]
    fn published(&mut self) -> Seq {
        let seq = Seq(self.next_seq);
        self.next_seq += 1;
        // A poller that may be asleep must see the message or be woken: the doorbell's
        // fence orders this thread's publication before its look at the poller's flag (the
        // stage's lock does that for the handles). The owner thread of an invoker node runs
        // the turns itself: nobody sleeps on this message meanwhile.
        if self.owner_thread != Some(crate::runtime::invoker::current_thread_id()) {
            self.group.inner.doorbell.ring();
        }
        seq
    }

    /// The ring had no room: the poller must hear of it (it may be asleep with the ring
    /// full), and the send is refused. Out of the send's inlined path.
    #[cold]
    #[inline(never)]
    fn ring_full(&self) -> SendError {
        self.group.inner.doorbell.ring();
        SendError::WouldBlock
    }

    /// Like [`Publisher::send`], but waits for room.
    pub fn send_blocking(
        &mut self,
        order: Order,
        safe: bool,
        bytes: &[u8],
    ) -> Result<Seq, SendError> {
        loop {
            match self.send(order, safe, bytes) {
                Err(SendError::WouldBlock) => {
                    let s = self.group.inner.stage.lock();
                    drop(
                        self.group
                            .wait_room_once(s, Duration::from_micros(ROOM_WAIT_SLICE_US)),
                    );
                }
                other => return other,
            }
        }
    }

    /// The group it sends on.
    pub fn group(&self) -> &Group {
        &self.group
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("group", &self.group.name())
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl Drop for Publisher {
    /// Gives the group back: the handles send again once the poller took the ring's last
    /// records, numbered after them.
    fn drop(&mut self) {
        let stage = &self.group.inner.stage;
        let mut s = stage.lock();
        if let Some(writer) = self.writer.take() {
            stage.put_writer(writer);
        }
        s.exclusive = Exclusive::Draining;
        s.next_seq = self.next_seq;
        s.incarnation = self.incarnation;
        drop(s);
        self.group.inner.doorbell.ring();
    }
}

/// A message being written in place in a publisher's ring, from [`Publisher::claim`]:
/// derefs to the payload bytes (`&mut [u8]` of the claimed length, zeroed). It borrows the
/// publisher, so nothing else is sent meanwhile; [`PublisherClaim::commit`] sends it,
/// dropping it sends nothing.
#[must_use = "a claim sends nothing until it is committed"]
pub struct PublisherClaim<'p> {
    publisher: &'p mut Publisher,
    claim: RingClaim,
}

impl PublisherClaim<'_> {
    /// Sends the message: its sequence number (the ring's room was reserved by the claim, so
    /// this cannot fail).
    pub fn commit(self) -> Seq {
        let PublisherClaim { publisher, claim } = self;
        if let Some(w) = publisher.writer.as_mut() {
            w.commit(claim);
        }
        publisher.published()
    }
}

impl std::ops::Deref for PublisherClaim<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.publisher.writer {
            Some(w) => w.claimed(&self.claim),
            None => &[],
        }
    }
}

impl std::ops::DerefMut for PublisherClaim<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.publisher.writer {
            Some(w) => w.claimed_mut(&self.claim),
            None => &mut [],
        }
    }
}

impl std::fmt::Debug for PublisherClaim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherClaim")
            .field("group", &self.publisher.group.name())
            .field("len", &self.len())
            .finish()
    }
}

/// `TooLarge` if a payload of `len` bytes exceeds `max`.
#[inline]
fn check_len(len: usize, max: usize) -> Result<(), SendError> {
    if len > max {
        return Err(SendError::TooLarge { len, max });
    }
    Ok(())
}

/// A staged record's body: zeroed for the caller to write in place, or copied in.
enum Body<'b> {
    Zeroed(usize),
    Bytes(&'b [u8]),
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Zeroed(len) => *len,
            Body::Bytes(bytes) => bytes.len(),
        }
    }
}

/// A message being written in place, from [`Group::claim`]: derefs to the payload bytes
/// (`&mut [u8]` of the claimed length) inside the group's send stage, which it holds until
/// [`Claim::commit`] sends it or dropping it takes it back (nothing sent).
pub struct Claim<'g> {
    group: &'g Group,
    staged: MutexGuard<'g, Staged>,
    /// Where the record starts in the stage, and its body (after the framing).
    start: usize,
    body: usize,
    /// The bundle entry it is (a plain send).
    entry: Option<Entry>,
    committed: bool,
}

impl Claim<'_> {
    /// The sequence number this message will carry.
    fn seq(&self) -> Seq {
        Seq(self.staged.next_seq)
    }

    /// Sends the message: its sequence number. A claim is granted only with room for it, so
    /// this does not fail unless the group is gone (`Closed`).
    pub fn commit(mut self) -> Result<Seq, SendError> {
        let seq = self.seq();
        self.staged.next_seq += 1;
        if let Some(entry) = self.entry {
            self.staged.commit_entry(entry);
        }
        self.committed = true;
        let (group, first) = (self.group, self.start == 0);
        drop(self); // the stage's lock
        group.inner.doorbell.ring_staged(first);
        Ok(seq)
    }

    /// Sends the message; the same as [`Claim::commit`] (the room was taken at the claim).
    pub fn commit_blocking(self) -> Result<Seq, SendError> {
        self.commit()
    }
}

impl std::ops::Deref for Claim<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.staged.bytes[self.body..]
    }
}

impl std::ops::DerefMut for Claim<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let body = self.body;
        &mut self.staged.bytes[body..]
    }
}

impl std::fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("group", &self.group.name())
            .field("len", &self.len())
            .finish()
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let start = self.start;
            self.staged.bytes.truncate(start);
        }
    }
}

/// A node's configuration as a TOML file (serde), e.g.
///
/// ```toml
/// bind = "10.0.0.1:7001"
/// driver = "auto"            # auto | uring | mmsg
/// idle = "backoff"           # spin | backoff | blocking
/// pollers = 1
/// cpus = [2]
/// window_messages_max = 256
/// datagram_bytes = 1472      # 8972 for jumbo frames; every member of a group alike
/// trace_dir = "/var/tmp/cohort-trace"
///
/// [multicast]                # omit for unicast fan-out
/// group = "239.255.0.1:7100"
/// iface = "10.0.0.1"
/// ttl = 1
/// ```
///
/// Unknown keys are errors (a typo must not be ignored silently).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub bind: SocketAddr,
    #[serde(default)]
    pub multicast: Option<MulticastConfig>,
    #[serde(default)]
    pub driver: DriverName,
    #[serde(default)]
    pub idle: IdleName,
    #[serde(default = "one")]
    pub pollers: usize,
    #[serde(default)]
    pub cpus: Vec<usize>,
    #[serde(default = "window_default")]
    pub window_messages_max: usize,
    /// [`NodeBuilder::datagram_bytes`].
    #[serde(default = "datagram_bytes_default")]
    pub datagram_bytes: usize,
    /// [`NodeBuilder::gso`] (default true).
    #[serde(default = "yes")]
    pub gso: bool,
    /// [`NodeBuilder::gro`] (default true).
    #[serde(default = "yes")]
    pub gro: bool,
    #[serde(default)]
    pub trace_dir: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

fn datagram_bytes_default() -> usize {
    cohort_transport::DATAGRAM_BYTES_DEFAULT
}

fn one() -> usize {
    1
}

fn window_default() -> usize {
    WINDOW_MESSAGES_DEFAULT
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MulticastConfig {
    pub group: SocketAddr,
    pub iface: Ipv4Addr,
    #[serde(default = "ttl_default")]
    pub ttl: u32,
}

fn ttl_default() -> u32 {
    1
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverName {
    #[default]
    Auto,
    Uring,
    Mmsg,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdleName {
    Spin,
    #[default]
    Backoff,
    Blocking,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl NodeConfig {
    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &std::path::Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// A builder with these settings (validated at [`NodeBuilder::start`]).
    pub fn builder(&self) -> NodeBuilder {
        let mut b = Node::builder()
            .bind(self.bind)
            .driver(match self.driver {
                DriverName::Auto => Driver::Auto,
                DriverName::Uring => Driver::IoUring,
                DriverName::Mmsg => Driver::Mmsg,
            })
            .idle(match self.idle {
                IdleName::Spin => Idle::BusySpin,
                IdleName::Backoff => Idle::Backoff,
                IdleName::Blocking => Idle::Blocking,
            })
            .pollers(self.pollers)
            .cpus(&self.cpus)
            .window_messages_max(self.window_messages_max)
            .datagram_bytes(self.datagram_bytes)
            .gso(self.gso)
            .gro(self.gro);
        if let Some(m) = &self.multicast {
            b = b.multicast(m.group, m.iface).multicast_ttl(m.ttl);
        }
        if let Some(dir) = &self.trace_dir {
            b = b.trace_dir(dir);
        }
        b
    }
}

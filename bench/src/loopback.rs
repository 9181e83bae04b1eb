//! The `loopback` scenario: member nodes over UDP on 127.0.0.1 through the public API.
//!
//! Each member is a [`Node`] of its own (own socket, own poller thread) in this process —
//! threads, not processes; the kernel path is the same. Nodes bind `127.0.0.1:0`, and every
//! node joins one group with the complete static member list. Sender members each get an
//! application thread that calls [`Group::send`] in a loop (on `WouldBlock` it yields and
//! retries); the handler counts deliveries from other members.
//!
//! Measured: the group rate — messages delivered from others, summed over members, divided by
//! `members - 1` — over the steady part of the run (after [`WARMUP_FRACTION`] of it), and,
//! before each path, the raw group ceiling of the same driver, addressing, group size, sender
//! count, payload and packing ([`crate::group_ceiling`]); each result is reported as a ratio to
//! it. After the send period the run waits (at most [`DRAIN_MS_MAX`]) until every message was
//! delivered everywhere and says whether it was.
//!
//! Datagrams are 1472 B, or 8972 B (jumbo, [`NodeBuilder::datagram_bytes`]) for payloads a
//! 1472 B datagram cannot carry (the 8192 B axis); the ceiling of such a path uses the same
//! size. GSO+GRO are asked for on the nodes as a node does by default; `--gso off` (or
//! `both`) runs the nodes with `NodeBuilder::gso(false)` and `gro(false)` against a ceiling
//! without them too (labels end in `/nogso`, JSON `gso` is `off`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cohort::node::{Delivery, Driver, Group, Handler, Node, NodeBuilder, Publisher, SendError};
use cohort::{Idle, Order};

use crate::axes::{BenchOrder, Senders};
use crate::ceiling::DriverName;
use crate::group_ceiling::{private_multicast_group, Addressing};
use crate::output::ResultRecord;

/// Part of the send period not measured (connection warm-up, first windows).
pub const WARMUP_FRACTION: f64 = 0.2;
/// Longest wait after the send period for every message to be delivered everywhere.
pub const DRAIN_MS_MAX: u64 = 3_000;
/// Safety cap on messages per second of run time per sender: far above what loopback moves
/// (the raw ceiling here is 30-70 M msgs/s). A sender that reaches it stops early, so the
/// window would undercount; a result says so (`send_cap_reached`). Until session 8 this was
/// 20 M, and invoker-mode fifo reached it (a run sent exactly 20 M in its 1 s and measured
/// 19.77 M msgs/s).
pub const SENDS_PER_SECOND_MAX: f64 = 1_000_000_000.0;
/// Largest group this scenario starts (one node and poller thread each).
pub const MEMBERS_MAX: usize = 16;
/// Datagrams per send call the node's poller uses (the ceiling uses the same).
pub const NODE_SEND_BATCH_DATAGRAMS: usize = 64;
/// Datagram size a node uses (the transport's default).
pub const NODE_DATAGRAM_BYTES: usize = cohort_transport::DATAGRAM_BYTES_DEFAULT;

/// A started group: one node and one group handle per member, in rank order.
pub struct RunningGroup {
    pub nodes: Vec<Node>,
    pub groups: Vec<Group>,
    pub driver_name: &'static str,
}

/// The node builder's driver for a kernel driver name.
pub fn node_driver(d: DriverName) -> anyhow::Result<Driver> {
    Ok(match d {
        DriverName::Uring => Driver::IoUring,
        DriverName::Mmsg => Driver::Mmsg,
        DriverName::Memory => bail!("loopback runs kernel drivers only (io_uring, sendmmsg)"),
    })
}

/// A node builder on `127.0.0.1:0` with `driver`, `addressing` (multicast on `group`),
/// datagrams of `datagram_bytes`, and GSO+GRO asked for if `gso`.
pub fn node_builder(
    driver: Driver,
    addressing: Addressing,
    group: SocketAddr,
    datagram_bytes: usize,
    gso: bool,
) -> NodeBuilder {
    let b = Node::builder()
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .driver(driver)
        .datagram_bytes(datagram_bytes)
        .gso(gso)
        .gro(gso);
    match addressing {
        Addressing::Multicast => b.multicast(group, Ipv4Addr::LOCALHOST),
        Addressing::Fanout => b.unicast_fanout(),
    }
}

/// Starts `members` nodes on 127.0.0.1 with datagrams of `datagram_bytes` and joins them all
/// to group `name`; `handler(rank)` makes each member's handler.
#[allow(clippy::too_many_arguments)]
pub fn start_group<H: Handler>(
    name: &str,
    driver: DriverName,
    addressing: Addressing,
    datagram_bytes: usize,
    gso: bool,
    members: usize,
    idle: Idle,
    own: OwnMessages,
    mut handler: impl FnMut(usize) -> H,
) -> anyhow::Result<RunningGroup> {
    if !(2..=MEMBERS_MAX).contains(&members) {
        bail!("loopback groups have 2..={MEMBERS_MAX} members");
    }
    let multicast = private_multicast_group();
    let mut nodes = Vec::with_capacity(members);
    for _ in 0..members {
        let b = node_builder(
            node_driver(driver)?,
            addressing,
            multicast,
            datagram_bytes,
            gso,
        )
        .idle(idle)
        .discard_own_messages(own == OwnMessages::Discard);
        nodes.push(b.start().context("starting a node")?);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.local_addr()).collect();
    let mut groups = Vec::with_capacity(members);
    for (rank, node) in nodes.iter().enumerate() {
        groups.push(
            node.join(name, &addrs, handler(rank))
                .with_context(|| format!("member {rank} joining {name}"))?,
        );
    }
    let driver_name = nodes[0].driver_name();
    Ok(RunningGroup {
        nodes,
        groups,
        driver_name,
    })
}

/// One loopback point.
#[derive(Clone, Copy, Debug)]
pub struct LoopbackPoint {
    pub driver: DriverName,
    pub addressing: Addressing,
    pub members: usize,
    pub senders: Senders,
    pub order: BenchOrder,
    pub size: usize,
    pub seconds: f64,
    pub idle: Idle,
    pub threading: Threading,
    /// Messages per send call: 1 sends each with `api`, more with `Group::send_batch`.
    pub batch: usize,
    /// How single sends are made.
    pub api: SendApi,
    pub own: OwnMessages,
    /// The nodes' datagram size ([`datagram_bytes_for_payload`] picks it for a payload).
    pub datagram_bytes: usize,
    /// GSO+GRO asked for on the nodes (`NodeBuilder::gso`, `gro`).
    pub gso: bool,
}

/// The datagram size the loopback nodes (and the ceiling of their path) use for `size` B
/// payloads in a group of `members`: 1472 B when a payload fits, else 8972 B (jumbo).
pub fn datagram_bytes_for_payload(size: usize, members: usize) -> usize {
    crate::inproc::datagram_bytes_for_payload(size, members)
}

/// How the loopback senders send one message at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum SendApi {
    /// The group's exclusive `Publisher` (Aeron's exclusive publication): no lock.
    #[default]
    Publisher,
    /// `Group::send` on a group handle: the locked send stage any thread may share.
    Handle,
}

impl SendApi {
    pub fn label(self) -> &'static str {
        match self {
            SendApi::Publisher => "publisher",
            SendApi::Handle => "handle",
        }
    }
}

/// A sending thread's way to send: `batch` copies of the payload per call (one send with
/// the point's API if `batch` is 1, else one `Group::send_batch` of `copies`, which holds
/// that many references to it).
enum Sending<'p> {
    Publisher(Publisher),
    Handle(Group),
    Batch(Batched<'p>),
}

impl<'p> Sending<'p> {
    fn new(group: &Group, api: SendApi, payload: &'p [u8], batch: usize) -> anyhow::Result<Self> {
        Ok(match api {
            _ if batch > 1 => Sending::Batch(Batched {
                group: group.clone(),
                copies: vec![payload; batch],
            }),
            SendApi::Publisher => Sending::Publisher(
                group
                    .publisher()
                    .context("claiming the group's publisher")?,
            ),
            SendApi::Handle => Sending::Handle(group.clone()),
        })
    }
}

/// Runs `$body` with `$s` bound to the [`SendOnce`] inside a [`Sending`]: each send loop is
/// compiled once per API, so the harness adds no dispatch (nor a call) per message.
macro_rules! with_sending {
    ($sending:expr, |$s:ident| $body:expr) => {
        match $sending {
            Sending::Publisher(mut $s) => $body,
            Sending::Handle(mut $s) => $body,
            Sending::Batch(mut $s) => $body,
        }
    };
}

/// One send of a loop: how many messages went.
trait SendOnce {
    fn send_once(&mut self, order: Order, safe: bool, payload: &[u8]) -> Result<u64, SendError>;
}

impl SendOnce for Publisher {
    #[inline(always)]
    fn send_once(&mut self, order: Order, safe: bool, payload: &[u8]) -> Result<u64, SendError> {
        self.send(order, safe, payload).map(|_| 1)
    }
}

impl SendOnce for Group {
    #[inline(always)]
    fn send_once(&mut self, order: Order, safe: bool, payload: &[u8]) -> Result<u64, SendError> {
        self.send(order, safe, payload).map(|_| 1)
    }
}

/// `copies` references to the payload, sent with one `Group::send_batch`.
struct Batched<'p> {
    group: Group,
    copies: Vec<&'p [u8]>,
}

impl SendOnce for Batched<'_> {
    #[inline(always)]
    fn send_once(&mut self, order: Order, safe: bool, _: &[u8]) -> Result<u64, SendError> {
        self.group
            .send_batch(order, safe, &self.copies)
            .map(|(_, n)| n as u64)
    }
}

/// Whether a sending member's handler gets its own messages. The loopback handlers count only
/// the others' messages, so by default the nodes discard their own
/// (`NodeBuilder::discard_own_messages`, Spread's `SELF_DISCARD`): the sender skips an upcall
/// per message that nobody would look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum OwnMessages {
    #[default]
    Discard,
    Deliver,
}

impl OwnMessages {
    pub fn label(self) -> &'static str {
        match self {
            OwnMessages::Discard => "discarded",
            OwnMessages::Deliver => "delivered",
        }
    }
}

/// Who runs a member node's turns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Threading {
    /// A poller thread per node; the application thread sends through the group's stage.
    #[default]
    Poller,
    /// No poller thread: each member's own thread runs its node's turns
    /// (`NodeBuilder::invoker`, `Node::poll`), sending and polling in one loop.
    Invoker,
}

impl Threading {
    pub fn label(self) -> &'static str {
        match self {
            Threading::Poller => "poller",
            Threading::Invoker => "invoker",
        }
    }
}

/// What a loopback point measured.
#[derive(Clone, Debug)]
pub struct LoopbackResult {
    pub point: LoopbackPoint,
    pub driver_name: &'static str,
    pub msgs_sent: u64,
    /// Messages delivered from others, summed over members, in the measured window.
    pub delivered_in_window: u64,
    pub window_seconds: f64,
    /// Every message reached every member before the drain bound.
    pub complete: bool,
    pub window_stalls: u64,
    /// Invoker mode: the senders' CPU time per message sent over their send loops (ns).
    pub sender_cpu_ns_per_msg: Option<f64>,
    /// Invoker mode: idle turns followed by a yield during the send period, summed over the
    /// senders and over the other members (who waited for whom); none with poller threads.
    pub idle_yields: Option<IdleYields>,
    /// A sender stopped at [`SENDS_PER_SECOND_MAX`] before the send period ended (the rate
    /// is then a lower bound).
    pub send_cap_reached: bool,
    /// The nodes' datagram counters over the whole run (all members, warm-up and drain
    /// included): how full the datagrams and the send calls were.
    pub nodes: NodeTotals,
}

/// Datagram counters summed over a run's nodes.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeTotals {
    pub send_calls: u64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
}

impl NodeTotals {
    fn add(mut self, s: cohort::node::NodeStats) -> Self {
        self.send_calls += s.send_calls;
        self.datagrams_sent += s.datagrams_sent;
        self.datagrams_received += s.datagrams_received;
        self
    }
}

/// See [`LoopbackResult::idle_yields`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdleYields {
    pub senders: u64,
    pub others: u64,
}

impl LoopbackResult {
    pub fn msgs_per_s(&self) -> f64 {
        let n = self.point.members;
        if self.window_seconds <= 0.0 || n < 2 {
            return 0.0;
        }
        self.delivered_in_window as f64 / (n - 1) as f64 / self.window_seconds
    }

    /// The transport label's suffix for nodes without GSO+GRO, for batched sends, for sends
    /// through a group handle and for own messages delivered (none for single sends through
    /// the publisher, with offloads, that discard their own).
    fn label_suffix(&self) -> String {
        let mut label = String::new();
        if !self.point.gso {
            label.push_str("/nogso");
        }
        if self.point.batch > 1 {
            label.push_str(&format!("/batch{}", self.point.batch));
        } else if self.point.api == SendApi::Handle {
            label.push_str("/handle");
        }
        if self.point.own == OwnMessages::Deliver {
            label.push_str("/own");
        }
        label
    }

    pub fn record(&self, ceiling_msgs_per_s: f64) -> ResultRecord {
        let msgs = self.msgs_per_s();
        let mut extra = serde_json::Map::new();
        extra.insert("driver".into(), self.driver_name.into());
        extra.insert("addressing".into(), self.point.addressing.label().into());
        let gso = if self.point.gso { "requested" } else { "off" };
        extra.insert("gso".into(), gso.into());
        extra.insert("complete".into(), self.complete.into());
        extra.insert("msgs_sent".into(), self.msgs_sent.into());
        extra.insert("window_stalls".into(), self.window_stalls.into());
        extra.insert("send_cap_reached".into(), self.send_cap_reached.into());
        if let Some(ns) = self.sender_cpu_ns_per_msg {
            extra.insert("sender_cpu_ns_per_msg".into(), ns.into());
        }
        if let Some(y) = self.idle_yields {
            extra.insert("sender_idle_yields".into(), y.senders.into());
            extra.insert("receiver_idle_yields".into(), y.others.into());
        }
        extra.insert("send_calls".into(), self.nodes.send_calls.into());
        extra.insert("datagrams_sent".into(), self.nodes.datagrams_sent.into());
        extra.insert(
            "datagrams_received".into(),
            self.nodes.datagrams_received.into(),
        );
        extra.insert("seconds".into(), self.window_seconds.into());
        extra.insert(
            "members_are".into(),
            "threads with one Node each, one process".into(),
        );
        extra.insert("threading".into(), self.point.threading.label().into());
        extra.insert("batch".into(), self.point.batch.into());
        let api = if self.point.batch > 1 {
            "handle (send_batch)"
        } else {
            self.point.api.label()
        };
        extra.insert("send_api".into(), api.into());
        extra.insert("own_messages".into(), self.point.own.label().into());
        extra.insert("datagram_bytes".into(), self.point.datagram_bytes.into());
        ResultRecord {
            scenario: "loopback".into(),
            // Invoker-mode results are a path of their own (their own targets and plot).
            transport: match self.point.threading {
                Threading::Poller => format!(
                    "{}/{}{}",
                    self.driver_name,
                    self.point.addressing.label(),
                    self.label_suffix()
                ),
                Threading::Invoker => format!(
                    "{}/{}/invoker{}",
                    self.driver_name,
                    self.point.addressing.label(),
                    self.label_suffix()
                ),
            },
            order: self.point.order.label().into(),
            size: self.point.size,
            members: self.point.members,
            senders: self.point.senders.count(self.point.members),
            msgs_per_s: msgs,
            mb_per_s: msgs * self.point.size as f64 / 1e6,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            ceiling_msgs_per_s,
            ratio: if ceiling_msgs_per_s > 0.0 {
                msgs / ceiling_msgs_per_s
            } else {
                0.0
            },
            extra,
        }
    }
}

/// Member `rank`'s handler: counts the messages from the others into `counter`. The handler
/// is its counter's only writer, so it stores its own count (no locked read-modify-write per
/// message: the bench's overhead is not the protocol's).
fn delivery_counter(rank: usize, counter: Arc<AtomicU64>) -> impl FnMut(&Delivery<'_>) + Send {
    let mut delivered = 0u64;
    move |d: &Delivery<'_>| {
        if d.sender as usize != rank {
            delivered += 1;
            counter.store(delivered, Ordering::Relaxed);
        }
    }
}

/// Runs one loopback point.
pub fn run_point(p: LoopbackPoint) -> anyhow::Result<LoopbackResult> {
    if p.seconds.is_nan() || p.seconds <= 0.0 {
        bail!("seconds must be positive");
    }
    if p.threading == Threading::Invoker {
        return run_point_invoker(p);
    }
    let n = p.members;
    let counters: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let group = start_group(
        "bench-loopback",
        p.driver,
        p.addressing,
        p.datagram_bytes,
        p.gso,
        n,
        p.idle,
        p.own,
        |rank| delivery_counter(rank, counters[rank].clone()),
    )?;
    let max = group.groups[0].payload_bytes_max();
    if p.size > max {
        bail!(
            "a {} B payload exceeds the node's {max} B maximum (datagram size {} B)",
            p.size,
            p.datagram_bytes
        );
    }
    let senders = p.senders.count(n);
    let sender_ranks: Vec<usize> = if senders == 1 {
        vec![1]
    } else {
        (0..n).collect()
    };
    let (order, safe) = p.order.order();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(p.seconds);
    let sends_max = (SENDS_PER_SECOND_MAX * p.seconds) as u64;
    let mut threads = Vec::new();
    for &r in &sender_ranks {
        let g = group.groups[r].clone();
        let stop = stop.clone();
        let payload = vec![0xC3u8; p.size];
        let (batch, api) = (p.batch, p.api);
        threads.push(
            std::thread::Builder::new()
                .name(format!("bench-send-{r}"))
                .spawn(move || -> anyhow::Result<u64> {
                    let sending = Sending::new(&g, api, &payload, batch)?;
                    with_sending!(sending, |s| {
                        let (mut sent, mut since_check) = (0u64, 0u64);
                        while sent < sends_max && !stop.load(Ordering::Relaxed) {
                            match s.send_once(order, safe, &payload) {
                                Ok(n) => {
                                    sent += n;
                                    since_check += n;
                                }
                                Err(SendError::WouldBlock) => {
                                    if Instant::now() >= deadline {
                                        break;
                                    }
                                    std::thread::yield_now()
                                }
                                Err(e) => return Err(e.into()),
                            }
                            if since_check >= 64 {
                                since_check = 0;
                                if Instant::now() >= deadline {
                                    break;
                                }
                            }
                        }
                        Ok(sent)
                    })
                })
                .context("spawning a sender thread")?,
        );
    }
    let total = |cs: &[Arc<AtomicU64>]| cs.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
    let warm = start + Duration::from_secs_f64(p.seconds * WARMUP_FRACTION);
    std::thread::sleep(warm.saturating_duration_since(Instant::now()));
    let t0 = Instant::now();
    let c0 = total(&counters);
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    let c1 = total(&counters);
    let t1 = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut msgs_sent = 0u64;
    let mut send_cap_reached = false;
    let mut send_error = None;
    for t in threads {
        match t.join() {
            Ok(Ok(s)) => {
                msgs_sent += s;
                send_cap_reached |= s >= sends_max;
            }
            Ok(Err(e)) => {
                send_error.get_or_insert(anyhow::anyhow!("send failed: {e}"));
            }
            Err(_) => {
                send_error.get_or_insert(anyhow::anyhow!("a sender thread panicked"));
            }
        }
    }
    if let Some(e) = send_error {
        return Err(e);
    }
    let expected = msgs_sent * (n as u64 - 1);
    let drain_end = Instant::now() + Duration::from_millis(DRAIN_MS_MAX);
    while total(&counters) < expected && Instant::now() < drain_end {
        std::thread::sleep(Duration::from_millis(2));
    }
    let complete = total(&counters) == expected;
    let window_stalls = group.groups.iter().map(|g| g.stats().window_stalls).sum();
    let driver_name = group.driver_name;
    let nodes = group
        .nodes
        .iter()
        .fold(NodeTotals::default(), |t, n| t.add(n.stats()));
    drop(group);
    Ok(LoopbackResult {
        point: p,
        driver_name,
        msgs_sent,
        delivered_in_window: c1 - c0,
        window_seconds: (t1 - t0).as_secs_f64(),
        complete,
        window_stalls,
        sender_cpu_ns_per_msg: None,
        idle_yields: None,
        send_cap_reached,
        nodes,
    })
}

/// CPU time this thread has run, in ns (`/proc/thread-self/schedstat`); none where the
/// kernel does not say. Time the thread waited to be scheduled is not counted, so a sender's
/// CPU time per message equals 1 / its rate exactly when it never waited for anything: the
/// sign that its own thread is the bottleneck. (On this VM the figure moves with the other
/// load as much as the rate does: a slowed core runs the same work for longer.)
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// An invoker-mode sender runs a turn when a send is refused (its ring or stage is full), the
/// duty cycle of an offer loop that batches the most per turn; and at the latest after this
/// many sends, so that the deadline is checked even when no send is refused. Turning every
/// 512 sends instead measured 8 % fewer messages per second (the turn's syscalls and
/// bookkeeping, paid twice as often; session 12).
const SENDS_PER_TURN_MAX: u64 = 1 << 16;

/// What one invoker-mode member thread reports.
struct MemberReport {
    sent: u64,
    sender: bool,
    /// A sender's CPU time over its send loop (see [`thread_cpu_ns`]).
    cpu_ns: Option<u64>,
    /// Turns that found nothing to do, each followed by a yield, before the send period
    /// ended: how often this member waited for the other side.
    idle_yields: u64,
    window_stalls: u64,
    driver_name: &'static str,
    stats: cohort::node::NodeStats,
}

/// One loopback point in invoker mode: one thread per member that starts its node (no
/// poller thread), joins, then sends (if it is a sender) and polls in one loop until the
/// send period ends and every message was delivered everywhere (or the drain bound), and
/// drops its node itself.
fn run_point_invoker(p: LoopbackPoint) -> anyhow::Result<LoopbackResult> {
    let n = p.members;
    if !(2..=MEMBERS_MAX).contains(&n) {
        bail!("loopback groups have 2..={MEMBERS_MAX} members");
    }
    let driver = node_driver(p.driver)?;
    let counters: Arc<Vec<Arc<AtomicU64>>> =
        Arc::new((0..n).map(|_| Arc::new(AtomicU64::new(0))).collect());
    let sent_total = Arc::new(AtomicU64::new(0));
    let senders_done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders = p.senders.count(n);
    let is_sender = |rank: usize| if senders == 1 { rank == 1 } else { true };
    let sender_count = (0..n).filter(|&r| is_sender(r)).count();
    let (order, safe) = p.order.order();
    let multicast = private_multicast_group();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<(usize, SocketAddr)>();
    let (members_tx, members_rx): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| std::sync::mpsc::channel::<Vec<SocketAddr>>())
        .unzip();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (go_tx, go_rx): (Vec<_>, Vec<_>) = (0..n).map(|_| std::sync::mpsc::channel::<()>()).unzip();
    let sends_max = (SENDS_PER_SECOND_MAX * p.seconds) as u64;
    let mut threads = Vec::new();
    for (rank, (members_rx, go_rx)) in members_rx.into_iter().zip(go_rx).enumerate() {
        let driver = driver.clone();
        let (counters, sent_total, senders_done) =
            (counters.clone(), sent_total.clone(), senders_done.clone());
        let left = left.clone();
        let (addr_tx, ready_tx) = (addr_tx.clone(), ready_tx.clone());
        let payload = vec![0xC3u8; p.size];
        let sender = is_sender(rank);
        let addressing = p.addressing;
        let (datagram_bytes, gso) = (p.datagram_bytes, p.gso);
        let seconds = p.seconds;
        let (batch, api) = (p.batch, p.api);
        let discard_own = p.own == OwnMessages::Discard;
        threads.push(
            std::thread::Builder::new()
                .name(format!("bench-member-{rank}"))
                .spawn(move || -> anyhow::Result<MemberReport> {
                    let node = node_builder(driver, addressing, multicast, datagram_bytes, gso)
                        .discard_own_messages(discard_own)
                        .invoker()
                        .start()
                        .context("starting a node")?;
                    let driver_name = node.driver_name();
                    let _ = addr_tx.send((rank, node.local_addr()));
                    let addrs = members_rx.recv().context("the member list")?;
                    let group = node
                        .join(
                            "bench-loopback",
                            &addrs,
                            delivery_counter(rank, counters[rank].clone()),
                        )
                        .with_context(|| format!("member {rank} joining"))?;
                    let max = group.payload_bytes_max();
                    if payload.len() > max {
                        let why = format!(
                            "a {} B payload exceeds the node's {max} B maximum (datagram size {} B)",
                            payload.len(),
                            datagram_bytes
                        );
                        let _ = ready_tx.send(Err(why.clone()));
                        bail!(why);
                    }
                    let _ = ready_tx.send(Ok(()));
                    // Nothing (the run was called off) or the start.
                    go_rx.recv().context("the run was called off")?;
                    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                    let (mut sent, mut since_turn, mut idle_yields) = (0u64, 0u64, 0u64);
                    let mut cpu_ns = None;
                    if sender {
                        let cpu_start = thread_cpu_ns();
                        let sending = Sending::new(&group, api, &payload, batch)?;
                        with_sending!(sending, |s| {
                            while sent < sends_max {
                                match s.send_once(order, safe, &payload) {
                                    Ok(n) => {
                                        sent += n;
                                        since_turn += n;
                                    }
                                    Err(SendError::WouldBlock) => {
                                        if Instant::now() >= deadline {
                                            break;
                                        }
                                        since_turn = 0;
                                        // A full window waits for the others'
                                        // acknowledgements: a turn that found nothing to do
                                        // yields the CPU to them (spinning here starved a
                                        // receiver that shared the core: 20x slower with one
                                        // more busy process).
                                        if !node.poll() {
                                            idle_yields += 1;
                                            std::thread::yield_now();
                                        }
                                    }
                                    Err(e) => bail!("send failed: {e}"),
                                }
                                if since_turn >= SENDS_PER_TURN_MAX {
                                    since_turn = 0;
                                    node.poll();
                                    if Instant::now() >= deadline {
                                        break;
                                    }
                                }
                            }
                        });
                        cpu_ns = cpu_start
                            .zip(thread_cpu_ns())
                            .map(|(a, b)| b.saturating_sub(a));
                        sent_total.fetch_add(sent, Ordering::SeqCst);
                        senders_done.fetch_add(1, Ordering::SeqCst);
                    }
                    // Poll on (acknowledgements, retransmissions, deliveries) until every
                    // member has every message, or the drain bound.
                    let drain_end = deadline + Duration::from_millis(DRAIN_MS_MAX);
                    loop {
                        let done = senders_done.load(Ordering::SeqCst) == sender_count && {
                            let expected = sent_total.load(Ordering::SeqCst) * (n as u64 - 1);
                            counters
                                .iter()
                                .map(|c| c.load(Ordering::Relaxed))
                                .sum::<u64>()
                                >= expected
                        };
                        if done || Instant::now() >= drain_end {
                            break;
                        }
                        if !node.poll() {
                            if Instant::now() < deadline {
                                idle_yields += 1;
                            }
                            std::thread::yield_now();
                        }
                    }
                    let window_stalls = group.stats().window_stalls;
                    drop(group);
                    // Leave in rank order while the others still run their turns (a leave
                    // needs the members that stay to confirm it), then stay until everyone
                    // left.
                    let bound = Instant::now() + Duration::from_millis(DRAIN_MS_MAX);
                    while left.load(Ordering::SeqCst) < rank && Instant::now() < bound {
                        if !node.poll() {
                            std::thread::yield_now();
                        }
                    }
                    if let Err(e) = node.leave("bench-loopback") {
                        tracing::warn!(rank, error = %e, "leaving the bench group");
                    }
                    left.fetch_add(1, Ordering::SeqCst);
                    let bound = Instant::now() + Duration::from_millis(DRAIN_MS_MAX);
                    while left.load(Ordering::SeqCst) < n && Instant::now() < bound {
                        if !node.poll() {
                            std::thread::yield_now();
                        }
                    }
                    let stats = node.stats();
                    drop(node);
                    Ok(MemberReport {
                        sent,
                        sender,
                        cpu_ns,
                        idle_yields,
                        window_stalls,
                        driver_name,
                        stats,
                    })
                })
                .context("spawning a member thread")?,
        );
    }
    drop(addr_tx);
    let mut addrs = vec![SocketAddr::from(([0, 0, 0, 0], 0)); n];
    for _ in 0..n {
        let (rank, a) = addr_rx
            .recv_timeout(Duration::from_millis(DRAIN_MS_MAX))
            .context("a member did not start")?;
        addrs[rank] = a;
    }
    for tx in &members_tx {
        let _ = tx.send(addrs.clone());
    }
    drop(ready_tx);
    for _ in 0..n {
        let ready = ready_rx
            .recv_timeout(Duration::from_millis(DRAIN_MS_MAX))
            .map_err(|_| "a member did not join".to_string())
            .and_then(|r| r);
        if let Err(why) = ready {
            drop(go_tx); // every member thread ends
            for t in threads {
                let _ = t.join();
            }
            bail!(why);
        }
    }
    for tx in &go_tx {
        let _ = tx.send(());
    }
    let start = Instant::now();
    let total = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let warm = start + Duration::from_secs_f64(p.seconds * WARMUP_FRACTION);
    std::thread::sleep(warm.saturating_duration_since(Instant::now()));
    let (t0, c0) = (Instant::now(), total());
    let deadline = start + Duration::from_secs_f64(p.seconds);
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    let (c1, t1) = (total(), Instant::now());
    let mut reports = Vec::new();
    for t in threads {
        match t.join() {
            Ok(r) => reports.push(r?),
            Err(_) => bail!("a member thread panicked"),
        }
    }
    let msgs_sent: u64 = reports.iter().map(|r| r.sent).sum();
    Ok(LoopbackResult {
        point: p,
        driver_name: reports[0].driver_name,
        msgs_sent,
        delivered_in_window: c1 - c0,
        window_seconds: (t1 - t0).as_secs_f64(),
        complete: total() == msgs_sent * (n as u64 - 1),
        window_stalls: reports.iter().map(|r| r.window_stalls).sum(),
        send_cap_reached: reports.iter().any(|r| r.sent >= sends_max),
        sender_cpu_ns_per_msg: {
            let (ns, sent) = reports
                .iter()
                .filter_map(|r| r.cpu_ns.map(|ns| (ns, r.sent)))
                .fold((0u64, 0u64), |(a, b), (ns, sent)| (a + ns, b + sent));
            (sent > 0).then(|| ns as f64 / sent as f64)
        },
        idle_yields: {
            let sum = |senders: bool| {
                let mine = reports.iter().filter(|r| r.sender == senders);
                mine.map(|r| r.idle_yields).sum()
            };
            Some(IdleYields {
                senders: sum(true),
                others: sum(false),
            })
        },
        nodes: reports
            .iter()
            .fold(NodeTotals::default(), |t, r| t.add(r.stats)),
    })
}

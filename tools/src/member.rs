//! `cohort member`: one member process of a group.
//!
//! It founds `--group` with `--members` (every founding member, this one included, by the
//! address it binds, in rank order, identical at every founder) or joins a running group
//! through `--seeds` (any of its members; the group's state — what was delivered so far, per
//! sender — arrives by state transfer). It sends its `--count` messages (at `--rate` per
//! second, or as fast as the window allows), delivers everyone's, and is *complete* once
//! every member of its current view has delivered `--count` messages here (every member is
//! assumed to send the same `--count`; members that failed or left drop out of the view and
//! out of the condition), its own sends are stable, and — with `--expect-members N` — a view
//! of at least N members was installed (so that founders wait for a joiner). Then it lingers
//! up to `--linger-ms` so the others can finish too, and leaves the group gracefully. Everything
//! is bounded by `--duration`. Failure detection: a heartbeat every `--heartbeat-ms`, a member
//! silent for `--suspect-ms` is excluded. Unless `--no-counters`, it publishes its counters for
//! `cohort stat` (in `--counters-dir`, else the default directory); the file goes at exit.
//! SIGTERM/SIGINT stop it early (it still leaves gracefully); the trace is flushed either way.
//! Each installed view prints a line `view id=V members=A,B,C`.
//!
//! Payloads of `--size` ≥ 16 bytes carry the send time (ns since the Unix epoch, host clock)
//! and the sequence number, so receivers on the same host measure delivery latency and check
//! integrity. The last line on stdout is the summary:
//! `summary member=A group=G sent=N delivered=D expected=E complete=B elapsed_s=T msgs_per_s=R
//! p50_us=X p99_us=Y max_us=Z errors=K driver=D mode=M datagrams_sent=S datagrams_received=R
//! window_stalls=W views=V restored=M gso=B gro=B` (`expected`: `--count` × the largest view
//! installed; `gso`/`gro`: the UDP offloads the node opened with, see `--gso`, `--gro`;
//! `window_stalls`: sends that found the window full — flow control at work; `restored`:
//! messages the state transfer accounted for, delivered before this member joined). With `--progress-ms`, lines `progress sent=N delivered=D expected=E window_stalls=W`
//! come every that many milliseconds.
//!
//! Node settings can come from a TOML file (`--config FILE`, the [`NodeConfig`] format:
//! `bind`, `[multicast]`, `driver`, `idle`, `pollers`, `cpus`, `window_messages_max`, `gso`, `gro`,
//! `datagram_bytes`, `trace_dir`); the flags `--bind`, `--multicast`, `--iface`, `--driver`,
//! `--idle`, `--window`, `--datagram-bytes`, `--gso`, `--gro` and `--trace` override what the
//! file says.
//!
//! For tests on real sockets (the kernel may have no `tc netem`), `--faults SPEC` puts the
//! transport's seeded fault layer under the node: `SPEC` is a comma list of `loss=P`,
//! `dup=P`, `reorder=P` (probabilities 0..=1, per datagram sent), `delay_us=N`, `jitter_us=N`
//! (each datagram waits `delay + U[0, jitter)`, at most [`FAULT_DELAY_US_MAX`] each) and
//! `seed=N` (default 0). A hidden `--break-protocol skip-retransmit` makes the member ignore
//! NAKs, so that tests can prove they catch a broken protocol.
//!
//! Exit status: 0 complete, 1 incomplete (duration reached, or payload errors), 130 stopped by
//! a signal, 2 bad arguments or start failure.

use anyhow::{bail, Context};
use cohort::node::{CountersLocation, Delivery, Handler, NodeConfig, SendError, View};
use cohort::{Driver, Idle, Node, Order};
use cohort_transport::FaultConfig;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes a payload needs to carry its send time and sequence number.
pub const PAYLOAD_HEADER_BYTES: usize = 16;
/// How long a member keeps running once settled, so its last status reaches the others.
pub const LINGER_AFTER_SETTLED_MS: u64 = 200;
/// Pause after `WouldBlock` before retrying a send.
const WOULD_BLOCK_PAUSE_US: u64 = 20;
/// Largest latency recorded (longer ones are clamped), in microseconds.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Largest injected delay and largest jitter `--faults` accepts, each in microseconds.
pub const FAULT_DELAY_US_MAX: u64 = 10_000_000;

/// What `--faults` asks for: the fault layer's settings and its RNG seed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSpec {
    pub faults: FaultConfig,
    pub seed: u64,
}

impl std::str::FromStr for FaultSpec {
    type Err = String;

    /// Parses `loss=0.05,dup=0.01,reorder=0.1,delay_us=200,jitter_us=100,seed=7` (any subset,
    /// any order, each key at most once).
    fn from_str(spec: &str) -> Result<Self, String> {
        const KEYS: &str = "loss, dup, reorder, delay_us, jitter_us, seed";
        let mut out = FaultSpec::default();
        let mut seen: Vec<&str> = Vec::new();
        for item in spec.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!(
                    "empty item in {spec:?}: write KEY=VALUE pairs separated by commas ({KEYS})"
                ));
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(format!("{item:?} is not KEY=VALUE (keys: {KEYS})"));
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(format!("{key} is given twice"));
            }
            let probability = || -> Result<f64, String> {
                match value.parse::<f64>() {
                    Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
                    _ => Err(format!(
                        "{key}={value}: a probability is a number from 0 to 1 (e.g. 0.05)"
                    )),
                }
            };
            let micros = || -> Result<std::time::Duration, String> {
                match value.parse::<u64>() {
                    Ok(us) if us <= FAULT_DELAY_US_MAX => Ok(Duration::from_micros(us)),
                    _ => Err(format!(
                        "{key}={value}: microseconds, a whole number up to {FAULT_DELAY_US_MAX}"
                    )),
                }
            };
            match key {
                "loss" => out.faults.loss = probability()?,
                "dup" => out.faults.duplication = probability()?,
                "reorder" => out.faults.reordering = probability()?,
                "delay_us" => out.faults.delay = micros()?,
                "jitter_us" => out.faults.delay_jitter = micros()?,
                "seed" => {
                    out.seed = value
                        .parse()
                        .map_err(|_| format!("seed={value}: a whole number (0 to 2^64-1)"))?
                }
                _ => return Err(format!("unknown fault {key:?} (keys: {KEYS})")),
            }
            seen.push(key);
        }
        Ok(out)
    }
}

/// Ways `--break-protocol` breaks the member on purpose (tests of the tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BreakProtocol {
    /// Never retransmit what others NAK: lost datagrams stay lost.
    SkipRetransmit,
}

/// A setting turned on or off (`--gso`, `--gro`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DriverArg {
    Auto,
    Uring,
    Mmsg,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum IdleArg {
    Spin,
    Backoff,
    Blocking,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Group name (the same at every member).
    #[arg(long)]
    pub group: String,
    /// Node settings from this TOML file (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This member's address (a concrete IP, e.g. 127.0.0.1:7001); needed unless the
    /// --config file gives `bind`.
    #[arg(long, required_unless_present = "config")]
    pub bind: Option<SocketAddr>,
    /// Found the group: every founding member's address, this one included, in rank order
    /// (identical at every founder).
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "seeds",
        conflicts_with = "seeds"
    )]
    pub members: Vec<SocketAddr>,
    /// Join a running group through these members' addresses (state transfer included).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<SocketAddr>,
    /// Not complete before a view of at least this many members was installed.
    #[arg(long, default_value_t = 0)]
    pub expect_members: usize,
    /// Heartbeat period in milliseconds [default: the library's].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Exclude a member silent for this many milliseconds [default: 10 heartbeats].
    #[arg(long)]
    pub suspect_ms: Option<u64>,
    /// Reach the group by IP multicast to this ADDR:PORT (else unicast fan-out).
    #[arg(long)]
    pub multicast: Option<SocketAddr>,
    /// Interface address for multicast (default: the config file's, else the bind address).
    #[arg(long)]
    pub iface: Option<Ipv4Addr>,
    /// Order of each message; a comma list cycles through its orders message by message.
    #[arg(long, value_delimiter = ',', default_value = "fifo")]
    pub order: Vec<Order>,
    /// Ask for safe (dynamically uniform) delivery.
    #[arg(long)]
    pub safe: bool,
    /// Messages this member sends.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Messages per second (0: as fast as the window allows).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Payload bytes (≥ 16 to measure latency).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Upper bound on the whole run, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Write this member's trace to DIR/<member>.jsonl.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Datagram path [default: the config file's, else auto].
    #[arg(long, value_enum)]
    pub driver: Option<DriverArg>,
    /// Idle strategy [default: the config file's, else backoff].
    #[arg(long, value_enum)]
    pub idle: Option<IdleArg>,
    /// Send window in messages [default: the config file's, else the library's].
    #[arg(long, value_name = "MESSAGES")]
    pub window: Option<usize>,
    /// Largest UDP payload of a datagram, 1472..=65507 (8972 for jumbo frames; every member
    /// of a group alike) [default: the config file's, else 1472].
    #[arg(long, value_name = "BYTES")]
    pub datagram_bytes: Option<usize>,
    /// UDP GSO on sends [default: the config file's, else on].
    #[arg(long, value_enum, value_name = "on|off")]
    pub gso: Option<Switch>,
    /// UDP GRO on receives [default: the config file's, else on].
    #[arg(long, value_enum, value_name = "on|off")]
    pub gro: Option<Switch>,
    /// Seeded faults on every datagram this member sends (tests), e.g.
    /// `loss=0.05,dup=0.01,reorder=0.1,delay_us=200,jitter_us=100,seed=7`.
    #[arg(long, value_name = "SPEC")]
    pub faults: Option<FaultSpec>,
    /// Break the protocol on purpose (tests that prove a suite can fail).
    #[arg(long, value_enum, hide = true)]
    pub break_protocol: Option<BreakProtocol>,
    /// Longest wait, once done, for the others to finish (within --duration).
    #[arg(long, default_value_t = 2000)]
    pub linger_ms: u64,
    /// Print a progress line every this many milliseconds.
    #[arg(long)]
    pub progress_ms: Option<u64>,
    /// Publish counters for `cohort stat` in this directory [default: $XDG_RUNTIME_DIR,
    /// else /dev/shm, else the temporary directory].
    #[arg(long, conflicts_with = "no_counters")]
    pub counters_dir: Option<PathBuf>,
    /// Publish no counters file.
    #[arg(long)]
    pub no_counters: bool,
}

const EXIT_INCOMPLETE: u8 = 1;
const EXIT_SIGNAL: u8 = 130;

#[derive(Default)]
struct Received {
    delivered: u64,
    /// Per sender (member id: address, `#N` for a later incarnation): the next sequence
    /// number due. Restored from the state transfer at a joiner.
    next_seq: HashMap<String, u64>,
    /// Messages the restored state accounted for.
    restored: u64,
    /// The current view's member ids (empty while joining or blocked), the largest view
    /// size installed, and views installed.
    view: Vec<String>,
    largest_view: usize,
    views: u64,
    errors: u64,
    first_error: Option<String>,
    last_delivery: Option<Instant>,
    latency_us: Option<Histogram<u64>>,
}

impl Received {
    /// Whether every member of the current view has delivered `count` messages here.
    fn has_all(&self, count: u64) -> bool {
        !self.view.is_empty()
            && self
                .view
                .iter()
                .all(|m| self.next_seq.get(m).copied().unwrap_or(1) > count)
    }

    fn problem(&mut self, p: String) {
        self.errors += 1;
        self.first_error.get_or_insert(p);
    }

    /// The state a joiner receives: `id=next_seq` lines.
    fn snapshot(&self) -> Vec<u8> {
        let mut out = String::new();
        for (id, next) in &self.next_seq {
            out.push_str(&format!("{id}={next}\n"));
        }
        out.into_bytes()
    }

    fn restore(&mut self, state: &[u8]) {
        let text = String::from_utf8_lossy(state);
        for line in text.lines().filter(|l| !l.is_empty()) {
            match line
                .rsplit_once('=')
                .and_then(|(id, n)| Some((id, n.parse::<u64>().ok()?)))
            {
                Some((id, next)) => {
                    self.restored += next.saturating_sub(1);
                    self.next_seq.insert(id.to_owned(), next);
                }
                None => self.problem(format!("restored state has a bad line {line:?}")),
            }
        }
    }
}

/// The member's handler: deliveries, views and the state.
struct App {
    received: Arc<Mutex<Received>>,
    me: SocketAddr,
}

impl App {
    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Handler for App {
    fn on_deliver(&mut self, d: &Delivery<'_>) {
        on_deliver(&self.received, self.me, d)
    }

    fn on_view(&mut self, view: &View) {
        let ids: Vec<String> = view.member_ids.clone();
        // A closed stdout must not take the handler down: the line is best effort.
        let _ = writeln!(
            std::io::stdout(),
            "view id={} members={}",
            view.id,
            ids.join(",")
        );
        let mut r = self.lock();
        r.largest_view = r.largest_view.max(ids.len());
        r.views += 1;
        r.view = ids;
    }

    fn on_block(&mut self) {
        let _ = writeln!(
            std::io::stdout(),
            "blocked (minority or excluded): rejoining as a new member"
        );
        let mut r = self.lock();
        r.view.clear();
        r.next_seq.clear(); // the restore brings the group's state
        r.restored = 0;
    }

    fn snapshot(&mut self) -> Vec<u8> {
        self.lock().snapshot()
    }

    fn restore(&mut self, state: &[u8]) {
        self.lock().restore(state)
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.order.is_empty() {
        bail!("--order needs at least one of fifo, causal, total, gbcast");
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let (mut builder, mode) = node_builder(&args)?;
    builder = builder.counters(match (&args.counters_dir, args.no_counters) {
        (_, true) => CountersLocation::Off,
        (Some(dir), false) => CountersLocation::Dir(dir.clone()),
        (None, false) => CountersLocation::Default,
    });
    let node = builder.start().context("starting the node")?;
    let received = Arc::new(Mutex::new(Received {
        latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).ok(),
        ..Received::default()
    }));
    let handler = App {
        received: received.clone(),
        me: node.local_addr(),
    };
    let group = if args.seeds.is_empty() {
        node.join(&args.group, &args.members, handler)
    } else {
        node.join_with_seeds(&args.group, &args.seeds, handler)
    }
    .context("joining the group")?;
    if args.size > group.payload_bytes_max() {
        bail!(
            "--size {} exceeds the largest payload of {} B",
            args.size,
            group.payload_bytes_max()
        );
    }
    let progress = args.progress_ms.map(Duration::from_millis);
    let mut last_progress = Instant::now();
    let lock = |r: &Mutex<Received>| {
        let r = r.lock().unwrap_or_else(|e| e.into_inner());
        (
            r.delivered,
            args.count * r.largest_view as u64,
            r.has_all(args.count),
            r.largest_view,
        )
    };
    let mut report_progress = |sent: u64| {
        if let Some(every) = progress {
            if last_progress.elapsed() >= every {
                last_progress = Instant::now();
                let (delivered, expected, _, _) = lock(&received);
                println!(
                    "progress sent={sent} delivered={delivered} expected={expected} window_stalls={}",
                    group.stats().window_stalls
                );
            }
        }
    };

    // Send our share.
    let mut sent = 0u64;
    let mut blocks = 0u64;
    let send_start = Instant::now();
    while sent < args.count && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let now_blocks = group.stats().blocks;
        if now_blocks != blocks {
            // Blocked (minority): the next incarnation numbers from 1 and, as a new member,
            // owes the others its whole share again.
            blocks = now_blocks;
            sent = 0;
        }
        if args.rate > 0 {
            let due = send_start + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            let now = Instant::now();
            if now < due {
                std::thread::sleep((due - now).min(Duration::from_millis(1)));
                report_progress(sent);
                continue;
            }
        }
        let order = args.order[(sent % args.order.len() as u64) as usize];
        // The payload carries the sequence number the group gives it (numbering restarts
        // after a block), written in the same step as the numbering.
        let stamp = |seq: cohort::protocol::Seq, buf: &mut [u8]| {
            if buf.len() >= PAYLOAD_HEADER_BYTES {
                buf[..8].copy_from_slice(&wall_ns().to_le_bytes());
                buf[8..16].copy_from_slice(&seq.0.to_le_bytes());
            }
        };
        match group.send_numbered(order, args.safe, args.size, stamp) {
            Ok(s) => sent = s.0,
            Err(SendError::WouldBlock) => {
                std::thread::sleep(Duration::from_micros(WOULD_BLOCK_PAUSE_US));
            }
            Err(e) => bail!("send failed: {e}"),
        }
        report_progress(sent);
    }

    // Deliver everyone's (of the members in the view, with enough members seen), then make
    // ours stable.
    let done = |r: &Mutex<Received>| {
        let (_, _, all, largest) = lock(r);
        all && largest >= args.expect_members
    };
    while !done(&received) && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        report_progress(sent);
    }
    let flushed = if stop.load(Ordering::Relaxed) {
        false
    } else {
        let left = deadline.saturating_duration_since(Instant::now());
        group.flush_timeout(left).is_ok()
    };

    // Linger so the others finish: until settled (plus a little) or the bound.
    let linger_end = (Instant::now() + Duration::from_millis(args.linger_ms)).min(deadline);
    let mut settled_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) && Instant::now() < linger_end {
        if group.is_settled() {
            let since = *settled_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(LINGER_AFTER_SETTLED_MS) {
                break;
            }
        } else {
            settled_since = None;
        }
        std::thread::sleep(Duration::from_millis(5));
        report_progress(sent);
    }
    let signalled = stop.load(Ordering::Relaxed);
    let member = node.local_addr();
    let driver = node.driver_name();
    let offloads = node.offloads();
    let node_stats = node.stats();
    let window_stalls = group.stats().window_stalls;
    let complete_before_leaving = done(&received);
    node.shutdown().context("writing the trace")?;

    let r = received.lock().unwrap_or_else(|e| e.into_inner());
    let expected = args.count * r.largest_view as u64;
    let complete = complete_before_leaving && sent == args.count && flushed && r.errors == 0;
    let elapsed = r
        .last_delivery
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(send_start));
    let rate = if elapsed.is_zero() {
        0.0
    } else {
        r.delivered as f64 / elapsed.as_secs_f64()
    };
    let (p50, p99, max) = match &r.latency_us {
        Some(h) if !h.is_empty() => (
            h.value_at_quantile(0.5).to_string(),
            h.value_at_quantile(0.99).to_string(),
            h.max().to_string(),
        ),
        _ => ("-".into(), "-".into(), "-".into()),
    };
    if let Some(e) = &r.first_error {
        eprintln!("cohort member {member}: payload error: {e}");
    }
    if !flushed && !signalled {
        eprintln!("cohort member {member}: own sends not stable before the deadline");
    }
    println!(
        "summary member={member} group={} sent={sent} delivered={} expected={expected} \
         complete={complete} elapsed_s={:.3} msgs_per_s={rate:.0} p50_us={p50} p99_us={p99} \
         max_us={max} errors={} driver={driver} mode={mode} datagrams_sent={} \
         datagrams_received={} window_stalls={window_stalls} views={} restored={} gso={} gro={}",
        args.group,
        r.delivered,
        elapsed.as_secs_f64(),
        r.errors,
        node_stats.datagrams_sent,
        node_stats.datagrams_received,
        r.views,
        r.restored,
        offloads.gso,
        offloads.gro,
    );
    Ok(if signalled {
        ExitCode::from(EXIT_SIGNAL)
    } else if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INCOMPLETE)
    })
}

/// The node's builder from `--config` (if any) with the flags on top, and the mode's name for
/// the summary.
fn node_builder(args: &Args) -> anyhow::Result<(cohort::NodeBuilder, &'static str)> {
    let file = match &args.config {
        // The error's text already names its cause (no `context`, which would repeat it).
        Some(path) => {
            Some(NodeConfig::from_file(path).map_err(|e| anyhow::anyhow!("--config: {e}"))?)
        }
        None => None,
    };
    let mut builder = file
        .as_ref()
        .map_or_else(Node::builder, NodeConfig::builder);
    let Some(bind) = args.bind.or(file.as_ref().map(|f| f.bind)) else {
        bail!("--bind is needed (or a config file with `bind`)");
    };
    builder = builder.bind(bind);
    if let Some(idle) = args.idle {
        builder = builder.idle(match idle {
            IdleArg::Spin => Idle::BusySpin,
            IdleArg::Backoff => Idle::Backoff,
            IdleArg::Blocking => Idle::Blocking,
        });
    }
    if let Some(driver) = args.driver {
        builder = builder.driver(match driver {
            DriverArg::Auto => Driver::Auto,
            DriverArg::Uring => Driver::IoUring,
            DriverArg::Mmsg => Driver::Mmsg,
        });
    }
    if let Some(window) = args.window {
        builder = builder.window_messages_max(window);
    }
    if let Some(bytes) = args.datagram_bytes {
        builder = builder.datagram_bytes(bytes);
    }
    if let Some(s) = args.gso {
        builder = builder.gso(s == Switch::On);
    }
    if let Some(s) = args.gro {
        builder = builder.gro(s == Switch::On);
    }
    if let Some(ms) = args.heartbeat_ms {
        builder = builder.heartbeat(Duration::from_millis(ms));
    }
    if let Some(ms) = args.suspect_ms {
        builder = builder.suspect_timeout(Duration::from_millis(ms));
    }
    let file_multicast = file.as_ref().and_then(|f| f.multicast.as_ref());
    let multicast = args.multicast.or(file_multicast.map(|m| m.group));
    let mode = match multicast {
        Some(group) => {
            let iface = match (args.iface, file_multicast, bind.ip()) {
                (Some(i), _, _) => i,
                (None, Some(m), _) => m.iface,
                (None, None, std::net::IpAddr::V4(ip)) => ip,
                (None, None, ip) => bail!("--iface is needed for multicast from {ip}"),
            };
            builder = builder.multicast(group, iface);
            "multicast"
        }
        None => {
            if args.iface.is_some() {
                bail!("--iface only applies to multicast: add --multicast ADDR:PORT");
            }
            "unicast-fanout"
        }
    };
    if let Some(dir) = &args.trace {
        builder = builder.trace_dir(dir);
    }
    if let Some(spec) = &args.faults {
        builder = builder.fault_injection(spec.faults.clone(), spec.seed);
    }
    if args.break_protocol == Some(BreakProtocol::SkipRetransmit) {
        builder = builder.testing_skip_retransmit(true);
    }
    Ok((builder, mode))
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn on_deliver(received: &Mutex<Received>, me: SocketAddr, d: &Delivery<'_>) {
    let now = wall_ns();
    let mut r = received.lock().unwrap_or_else(|e| e.into_inner());
    r.delivered += 1;
    r.last_delivery = Some(Instant::now());
    let Some(sender) = r.view.get(d.sender as usize).cloned() else {
        r.problem(format!("sender rank {} outside the view", d.sender));
        return;
    };
    let next = r.next_seq.entry(sender).or_insert(1);
    let problem = (d.seq.0 != *next).then(|| {
        format!(
            "from {} got #{} where #{} was due",
            d.sender_addr, d.seq.0, next
        )
    });
    *next = d.seq.0 + 1;
    if let Some(p) = problem {
        r.problem(p);
    }
    if d.payload.len() >= PAYLOAD_HEADER_BYTES {
        let stamp = u64::from_le_bytes(d.payload[..8].try_into().unwrap_or([0; 8]));
        let seq = u64::from_le_bytes(d.payload[8..16].try_into().unwrap_or([0; 8]));
        if seq != d.seq.0 {
            r.problem(format!(
                "from {} #{} carries sequence number {seq}",
                d.sender_addr, d.seq.0
            ));
        }
        if d.sender_addr != me {
            let us = now.saturating_sub(stamp) / 1_000;
            if let Some(h) = &mut r.latency_us {
                let _ = h.record(us.clamp(1, LATENCY_US_MAX));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_spec_reads_every_key_in_any_order() {
        let s: FaultSpec = "seed=7,jitter_us=100,delay_us=200,reorder=0.1,dup=0.01,loss=0.05"
            .parse()
            .unwrap();
        assert_eq!(s.seed, 7);
        assert_eq!(s.faults.loss, 0.05);
        assert_eq!(s.faults.duplication, 0.01);
        assert_eq!(s.faults.reordering, 0.1);
        assert_eq!(s.faults.delay, Duration::from_micros(200));
        assert_eq!(s.faults.delay_jitter, Duration::from_micros(100));
        assert_eq!(s.faults.send_datagrams_per_call_max, None);
    }

    #[test]
    fn fault_spec_keys_left_out_mean_no_such_fault_and_seed_zero() {
        let s: FaultSpec = " loss = 1 ".parse().unwrap();
        assert_eq!(
            s,
            FaultSpec {
                faults: FaultConfig {
                    loss: 1.0,
                    ..FaultConfig::none()
                },
                seed: 0
            }
        );
    }

    #[test]
    fn fault_spec_refuses_bad_input_with_a_message_naming_the_problem() {
        for (spec, says) in [
            ("", "empty item"),
            ("loss=0.1,", "empty item"),
            ("loss", "not KEY=VALUE"),
            ("losss=0.1", "unknown fault \"losss\""),
            ("loss=1.5", "from 0 to 1"),
            ("loss=-0.1", "from 0 to 1"),
            ("dup=NaN", "from 0 to 1"),
            ("reorder=inf", "from 0 to 1"),
            ("loss=0.1,loss=0.2", "loss is given twice"),
            ("delay_us=-1", "whole number up to"),
            ("delay_us=1.5", "whole number up to"),
            ("jitter_us=10000001", "whole number up to 10000000"),
            ("delay_us=18446744073709551615", "whole number up to"),
            ("seed=x", "seed=x: a whole number"),
            ("seed=18446744073709551616", "a whole number"),
        ] {
            match spec.parse::<FaultSpec>() {
                Ok(s) => panic!("{spec:?} was accepted as {s:?}"),
                Err(e) => assert!(e.contains(says), "{spec:?}: {e:?} does not say {says:?}"),
            }
        }
    }

    #[test]
    fn fault_spec_at_the_bounds_is_accepted() {
        let s: FaultSpec = "loss=0,dup=1,delay_us=10000000,jitter_us=0,seed=18446744073709551615"
            .parse()
            .unwrap();
        assert_eq!(s.faults.duplication, 1.0);
        assert_eq!(s.faults.delay, Duration::from_secs(10));
        assert_eq!(s.seed, u64::MAX);
    }
}

//! `cohort member`: one member process of a group with a static member list.
//!
//! It joins `--group` with `--members` (every member, this one included, by the address it
//! binds, in rank order; `--seeds` is accepted as an alias — with static views the full list
//! is needed, discovery from a few seeds comes with membership), sends its `--count`
//! messages (at `--rate` per second, or as fast as the window allows), delivers everyone's,
//! and exits when it has delivered `count × members` messages (every member is assumed to
//! send the same `--count`) and its own sends are stable, lingering up to `--linger-ms` so
//! the others can finish too (it answers their NAKs and sends status meanwhile). Everything
//! is bounded by `--duration`. Unless `--no-counters`, it publishes its counters for
//! `cohort stat` (in `--counters-dir`, else the default directory); the file goes at exit. SIGTERM/SIGINT stop it early; the trace is flushed either way.
//!
//! Payloads of `--size` ≥ 16 bytes carry the send time (ns since the Unix epoch, host clock)
//! and the sequence number, so receivers on the same host measure delivery latency and check
//! integrity. The last line on stdout is the summary:
//! `summary member=A group=G sent=N delivered=D expected=E complete=B elapsed_s=T msgs_per_s=R
//! p50_us=X p99_us=Y max_us=Z errors=K driver=D mode=M`. With `--progress-ms`, lines
//! `progress sent=N delivered=D expected=E` come every that many milliseconds.
//!
//! Exit status: 0 complete, 1 incomplete (duration reached, or payload errors), 130 stopped by
//! a signal, 2 bad arguments or start failure.

use anyhow::{bail, Context};
use cohort::node::{CountersLocation, Delivery, SendError};
use cohort::{Driver, Idle, Node, Order};
use hdrhistogram::Histogram;
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
    /// This member's address (a concrete IP, e.g. 127.0.0.1:7001).
    #[arg(long)]
    pub bind: SocketAddr,
    /// Every member's address, this one included, in rank order (identical at every member).
    #[arg(long, alias = "seeds", value_delimiter = ',', required = true)]
    pub members: Vec<SocketAddr>,
    /// Reach the group by IP multicast to this ADDR:PORT (else unicast fan-out).
    #[arg(long)]
    pub multicast: Option<SocketAddr>,
    /// Interface address for multicast (default: the bind address).
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
    #[arg(long, value_enum, default_value = "auto")]
    pub driver: DriverArg,
    #[arg(long, value_enum, default_value = "backoff")]
    pub idle: IdleArg,
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
    /// Per sender rank: the next sequence number due.
    next_seq: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    last_delivery: Option<Instant>,
    latency_us: Option<Histogram<u64>>,
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
    let mut builder = Node::builder().bind(args.bind).idle(match args.idle {
        IdleArg::Spin => Idle::BusySpin,
        IdleArg::Backoff => Idle::Backoff,
        IdleArg::Blocking => Idle::Blocking,
    });
    builder = builder.driver(match args.driver {
        DriverArg::Auto => Driver::Auto,
        DriverArg::Uring => Driver::IoUring,
        DriverArg::Mmsg => Driver::Mmsg,
    });
    let mode = match args.multicast {
        Some(group) => {
            let iface = match (args.iface, args.bind.ip()) {
                (Some(i), _) => i,
                (None, std::net::IpAddr::V4(ip)) => ip,
                (None, ip) => bail!("--iface is needed for multicast from {ip}"),
            };
            builder = builder.multicast(group, iface);
            "multicast"
        }
        None => "unicast-fanout",
    };
    if let Some(dir) = &args.trace {
        builder = builder.trace_dir(dir);
    }
    builder = builder.counters(match (&args.counters_dir, args.no_counters) {
        (_, true) => CountersLocation::Off,
        (Some(dir), false) => CountersLocation::Dir(dir.clone()),
        (None, false) => CountersLocation::Default,
    });
    let node = builder.start().context("starting the node")?;
    let n = args.members.len() as u64;
    let expected = args.count * n;
    let received = Arc::new(Mutex::new(Received {
        next_seq: vec![1; args.members.len()],
        latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).ok(),
        ..Received::default()
    }));
    let handler = {
        let received = received.clone();
        let me = node.local_addr();
        move |d: &Delivery<'_>| on_deliver(&received, me, d)
    };
    let group = node
        .join(&args.group, &args.members, handler)
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
    let delivered = |r: &Mutex<Received>| r.lock().unwrap_or_else(|e| e.into_inner()).delivered;
    let mut report_progress = |sent: u64| {
        if let Some(every) = progress {
            if last_progress.elapsed() >= every {
                last_progress = Instant::now();
                println!(
                    "progress sent={sent} delivered={} expected={expected}",
                    delivered(&received)
                );
            }
        }
    };

    // Send our share.
    let mut payload = vec![0u8; args.size];
    let mut sent = 0u64;
    let send_start = Instant::now();
    while sent < args.count && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if args.rate > 0 {
            let due = send_start + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            let now = Instant::now();
            if now < due {
                std::thread::sleep((due - now).min(Duration::from_millis(1)));
                report_progress(sent);
                continue;
            }
        }
        let seq = sent + 1;
        if payload.len() >= PAYLOAD_HEADER_BYTES {
            payload[..8].copy_from_slice(&wall_ns().to_le_bytes());
            payload[8..16].copy_from_slice(&seq.to_le_bytes());
        }
        let order = args.order[(sent % args.order.len() as u64) as usize];
        match group.send(order, args.safe, &payload) {
            Ok(s) => {
                debug_assert_eq!(s.0, seq);
                sent += 1;
            }
            Err(SendError::WouldBlock) => {
                std::thread::sleep(Duration::from_micros(WOULD_BLOCK_PAUSE_US));
            }
            Err(e) => bail!("send failed: {e}"),
        }
        report_progress(sent);
    }

    // Deliver everyone's, then make ours stable.
    while delivered(&received) < expected
        && !stop.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
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
    let node_stats = node.stats();
    node.shutdown().context("writing the trace")?;

    let r = received.lock().unwrap_or_else(|e| e.into_inner());
    let complete = r.delivered == expected && sent == args.count && flushed && r.errors == 0;
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
         datagrams_received={}",
        args.group,
        r.delivered,
        elapsed.as_secs_f64(),
        r.errors,
        node_stats.datagrams_sent,
        node_stats.datagrams_received,
    );
    Ok(if signalled {
        ExitCode::from(EXIT_SIGNAL)
    } else if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INCOMPLETE)
    })
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
    let sender = d.sender as usize;
    let mut problem = None;
    match r.next_seq.get_mut(sender) {
        Some(next) => {
            if d.seq.0 != *next {
                problem = Some(format!(
                    "from {} got #{} where #{} was due",
                    d.sender_addr, d.seq.0, next
                ));
            }
            *next = d.seq.0 + 1;
        }
        None => problem = Some(format!("unknown sender rank {sender}")),
    }
    if d.payload.len() >= PAYLOAD_HEADER_BYTES {
        let stamp = u64::from_le_bytes(d.payload[..8].try_into().unwrap_or([0; 8]));
        let seq = u64::from_le_bytes(d.payload[8..16].try_into().unwrap_or([0; 8]));
        if seq != d.seq.0 {
            problem = Some(format!(
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
    if let Some(p) = problem {
        r.errors += 1;
        r.first_error.get_or_insert(p);
    }
}

//! The raw ceiling: how many messages per second the plain datagram path moves with the
//! protocol's packing but no protocol, one sender thread and one receiver thread.
//!
//! For each driver, GSO setting and message size, the sender packs messages into datagrams of
//! the configured size (the wire format's record layout, see [`crate::packing`]) and sends
//! batches as fast as the transport takes them; back pressure (a send that takes fewer than
//! offered) is counted and retried at once. The receiver unpacks every datagram, checks and
//! touches every record and counts messages. Every later result is reported as a ratio to this.
//!
//! Bounds: each point runs for `--seconds` and at most [`DATAGRAMS_PER_SECOND_MAX`] x seconds
//! datagrams; the receiver drains for at most [`DRAIN_IDLE_MS`] of silence after the sender
//! stops, and never past [`RECEIVER_OVERRUN_MS`] after the sender's deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cohort_transport::{
    uring, Dest, MemoryNetwork, MmsgTransport, SendBatch, SocketConfig, Transport,
    DATAGRAM_BYTES_DEFAULT,
};

use crate::output::{thousands, JsonLines, ResultRecord, Table};
use crate::packing::{datagram_bytes_for, messages_per_datagram, pack_datagram, unpack_datagram};

/// Safety cap on datagrams per second of run time (far above what loopback moves).
pub const DATAGRAMS_PER_SECOND_MAX: f64 = 20_000_000.0;
/// The receiver stops this long after the last datagram once the sender has finished.
pub const DRAIN_IDLE_MS: u64 = 200;
/// ...and never later than this after the sender's deadline.
pub const RECEIVER_OVERRUN_MS: u64 = 2_000;
/// Datagrams asked for per receive call.
pub const RECV_DATAGRAMS_PER_CALL: usize = 256;
/// Longest run accepted for one point, in seconds.
pub const POINT_SECONDS_MAX: f64 = 600.0;
/// Most runs of one point (`--repeat`).
pub const REPEAT_MAX: usize = 15;
/// The GSO+GRO setting later scenarios use for their single ceiling: the faster one measured
/// on loopback (see BENCHMARKS.md).
pub const GSO_DEFAULT: bool = true;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverName {
    /// io_uring (batched SendMsg SQEs, multishot RecvMsg into a buffer ring).
    Uring,
    /// sendmmsg/recvmmsg.
    Mmsg,
    /// In-process memory network (no kernel).
    Memory,
}

impl DriverName {
    pub fn label(self) -> &'static str {
        match self {
            DriverName::Uring => "io_uring",
            DriverName::Mmsg => "sendmmsg",
            DriverName::Memory => "memory",
        }
    }

    /// Whether GSO/GRO mean anything for this driver.
    pub fn has_offloads(self) -> bool {
        !matches!(self, DriverName::Memory)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GsoMode {
    /// What a node asks for (the default).
    #[default]
    On,
    Off,
    Both,
}

impl GsoMode {
    /// The GSO+GRO settings it stands for (off first).
    pub fn settings(self) -> &'static [bool] {
        match self {
            GsoMode::On => &[true],
            GsoMode::Off => &[false],
            GsoMode::Both => &[false, true],
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Drivers to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "uring,mmsg,memory"
    )]
    pub drivers: Vec<DriverName>,
    /// Message payload sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024")]
    pub sizes: Vec<usize>,
    /// Run time of each point, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// UDP payload bytes of each datagram (messages are packed up to this size).
    #[arg(long, default_value_t = DATAGRAM_BYTES_DEFAULT)]
    pub datagram_bytes: usize,
    /// UDP GSO on send and GRO on receive (kernel drivers only).
    #[arg(long, value_enum, default_value = "both")]
    pub gso: GsoMode,
    /// Datagrams per send call.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Runs of each point; the one with the median msgs/s is reported (shared machines drift).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Append one JSON line per point to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What one point measured.
#[derive(Clone, Debug, Default)]
pub struct PointResult {
    pub driver: &'static str,
    pub gso_requested: bool,
    /// GSO and GRO as the transport really has them.
    pub gso_effective: bool,
    pub size: usize,
    pub msgs_per_datagram: usize,
    pub datagrams_sent: u64,
    pub msgs_sent: u64,
    pub datagrams_received: u64,
    pub msgs_received: u64,
    pub payload_bytes_received: u64,
    pub first_byte_sum: u64,
    /// Send calls that took fewer datagrams than offered.
    pub sender_would_block: u64,
    pub send_calls: u64,
    /// Datagrams the receiving transport dropped (truncated, queue full).
    pub receiver_transport_drops: u64,
    /// Datagrams that failed to unpack.
    pub unpack_errors: u64,
    pub sender_seconds: f64,
    /// From the sender's start to the last datagram received.
    pub receiver_seconds: f64,
}

impl PointResult {
    pub fn datagrams_per_s(&self) -> f64 {
        rate(self.datagrams_received as f64, self.receiver_seconds)
    }
    pub fn msgs_per_s(&self) -> f64 {
        rate(self.msgs_received as f64, self.receiver_seconds)
    }
    pub fn mb_per_s(&self) -> f64 {
        rate(self.payload_bytes_received as f64, self.receiver_seconds) / 1e6
    }
    pub fn receiver_drops(&self) -> u64 {
        self.msgs_sent.saturating_sub(self.msgs_received)
    }

    pub fn record(&self) -> ResultRecord {
        let mut extra = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            extra.insert(k.to_string(), v);
        };
        put("driver", self.driver.into());
        put("gso", self.gso_effective.into());
        put("gso_requested", self.gso_requested.into());
        put("datagrams_per_s", self.datagrams_per_s().into());
        put("msgs_per_datagram", self.msgs_per_datagram.into());
        put("datagrams_sent", self.datagrams_sent.into());
        put("msgs_sent", self.msgs_sent.into());
        put("msgs_received", self.msgs_received.into());
        put("sender_would_block", self.sender_would_block.into());
        put("send_calls", self.send_calls.into());
        put("receiver_drops", self.receiver_drops().into());
        put(
            "receiver_transport_drops",
            self.receiver_transport_drops.into(),
        );
        put("unpack_errors", self.unpack_errors.into());
        put("seconds", self.receiver_seconds.into());
        let msgs = self.msgs_per_s();
        ResultRecord {
            scenario: "ceiling".into(),
            transport: if self.driver == "memory" {
                "memory".into()
            } else {
                "loopback".into()
            },
            order: "none".into(),
            size: self.size,
            members: 2,
            senders: 1,
            msgs_per_s: msgs,
            mb_per_s: self.mb_per_s(),
            p50_us: None,
            p99_us: None,
            p999_us: None,
            ceiling_msgs_per_s: msgs,
            ratio: 1.0,
            extra,
        }
    }
}

fn rate(count: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count / seconds
    } else {
        0.0
    }
}

/// Sender, receiver, and whether GSO (sender) and GRO (receiver) are really on.
pub(crate) type TransportPair = (Box<dyn Transport>, Box<dyn Transport>, bool);

/// Opens a sender and a receiver for `driver` on loopback (or a fresh memory network).
pub(crate) fn open_pair(driver: DriverName, cfg: &SocketConfig) -> anyhow::Result<TransportPair> {
    let (tx, rx): (Box<dyn Transport>, Box<dyn Transport>) = match driver {
        DriverName::Uring => (
            Box::new(uring::open(cfg).context("opening the io_uring sender")?),
            Box::new(uring::open(cfg).context("opening the io_uring receiver")?),
        ),
        DriverName::Mmsg => (
            Box::new(MmsgTransport::open(cfg).context("opening the sendmmsg sender")?),
            Box::new(MmsgTransport::open(cfg).context("opening the recvmmsg receiver")?),
        ),
        DriverName::Memory => {
            let network = MemoryNetwork::new(1);
            (
                Box::new(network.open(cfg).context("opening a memory endpoint")?),
                Box::new(network.open(cfg).context("opening a memory endpoint")?),
            )
        }
    };
    // The memory network has no offloads: false there.
    let effective = tx.offloads_in_use().gso && rx.offloads_in_use().gro;
    Ok((tx, rx, effective))
}

/// One point's fixed parameters.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub driver: DriverName,
    pub gso: bool,
    pub size: usize,
    pub seconds: f64,
    pub datagram_bytes: usize,
    pub batch: usize,
}

#[derive(Default)]
struct ReceiverTally {
    datagrams: u64,
    msgs: u64,
    payload_bytes: u64,
    first_byte_sum: u64,
    unpack_errors: u64,
    transport_drops: u64,
    last_receive: Option<Instant>,
}

/// Runs one point: a receiver thread and the sender on the calling thread.
pub fn run_point(point: Point) -> anyhow::Result<PointResult> {
    let per_datagram = messages_per_datagram(point.datagram_bytes, point.size);
    if per_datagram == 0 || point.size > u16::MAX as usize {
        bail!(
            "a {} B message does not fit a {} B datagram with the 8 B header and 4 B record header",
            point.size,
            point.datagram_bytes
        );
    }
    let per_datagram = per_datagram.min(u16::MAX as usize);
    let datagram_len = datagram_bytes_for(per_datagram, point.size);
    let mut cfg = SocketConfig::unicast(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.datagram_bytes_max = point.datagram_bytes;
    cfg.batch_datagrams_max = point.batch;
    cfg.gso = point.gso;
    cfg.gro = point.gso;
    let (mut tx, mut rx, gso_effective) = open_pair(point.driver, &cfg)?;
    let dest = Dest::Addr(rx.local_addr());

    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (sender_core, receiver_core) = if cores.len() >= 2 {
        (Some(cores[0]), Some(cores[1]))
    } else {
        (None, None)
    };

    let stop = Arc::new(AtomicBool::new(false));
    let msgs_sent_total = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs_f64(point.seconds);
    let start = Instant::now();
    let sender_deadline = start + run_for;

    let receiver = {
        let stop = stop.clone();
        let msgs_sent_total = msgs_sent_total.clone();
        std::thread::Builder::new()
            .name("ceiling-rx".into())
            .spawn(move || -> anyhow::Result<ReceiverTally> {
                if let Some(core) = receiver_core {
                    core_affinity::set_for_current(core);
                }
                let hard_stop = sender_deadline + Duration::from_millis(RECEIVER_OVERRUN_MS);
                let drain_idle = Duration::from_millis(DRAIN_IDLE_MS);
                let mut t = ReceiverTally::default();
                let mut stop_seen: Option<Instant> = None;
                loop {
                    let n = rx.recv(
                        RECV_DATAGRAMS_PER_CALL,
                        &mut |_, d| match unpack_datagram(d) {
                            Ok(u) => {
                                t.msgs += u.messages;
                                t.payload_bytes += u.payload_bytes;
                                t.first_byte_sum += u.first_byte_sum;
                            }
                            Err(_) => t.unpack_errors += 1,
                        },
                    )?;
                    if n > 0 {
                        t.datagrams += n as u64;
                        t.last_receive = Some(Instant::now());
                        continue;
                    }
                    if stop.load(Ordering::Acquire) {
                        let now = Instant::now();
                        let seen = *stop_seen.get_or_insert(now);
                        let quiet_since = t.last_receive.map_or(seen, |l| l.max(seen));
                        if t.msgs >= msgs_sent_total.load(Ordering::Acquire)
                            || now.duration_since(quiet_since) > drain_idle
                            || now > hard_stop
                        {
                            break;
                        }
                    } else if Instant::now() > hard_stop {
                        break;
                    }
                    std::hint::spin_loop();
                }
                t.transport_drops = rx.stats().recv_dropped;
                Ok(t)
            })
            .context("spawning the receiver thread")?
    };

    if let Some(core) = sender_core {
        core_affinity::set_for_current(core);
    }
    let message = vec![0xA5u8; point.size];
    let datagrams_max = (DATAGRAMS_PER_SECOND_MAX * point.seconds) as u64;
    let mut batch = SendBatch::new(point.batch, point.datagram_bytes);
    let mut seed = 0u8;
    let mut datagrams_sent = 0u64;
    let mut would_block = 0u64;
    let mut send_calls = 0u64;
    let send_result = (|| -> anyhow::Result<()> {
        loop {
            while !batch.is_full() {
                let buf = batch.alloc(dest, datagram_len)?;
                pack_datagram(buf, &message, per_datagram, seed);
                seed = seed.wrapping_add(per_datagram as u8);
            }
            let offered = batch.len();
            let taken = tx.send(&batch)?;
            send_calls += 1;
            batch.consume(taken);
            datagrams_sent += taken as u64;
            if taken < offered {
                would_block += 1;
                std::hint::spin_loop();
            }
            if datagrams_sent >= datagrams_max || Instant::now() >= sender_deadline {
                return Ok(());
            }
        }
    })();
    let sender_seconds = start.elapsed().as_secs_f64();
    let msgs_sent = datagrams_sent * per_datagram as u64;
    msgs_sent_total.store(msgs_sent, Ordering::Release);
    stop.store(true, Ordering::Release);
    let tally = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))??;
    send_result?;

    Ok(PointResult {
        driver: point.driver.label(),
        gso_requested: point.gso,
        gso_effective,
        size: point.size,
        msgs_per_datagram: per_datagram,
        datagrams_sent,
        msgs_sent,
        datagrams_received: tally.datagrams,
        msgs_received: tally.msgs,
        payload_bytes_received: tally.payload_bytes,
        first_byte_sum: tally.first_byte_sum,
        sender_would_block: would_block,
        send_calls,
        receiver_transport_drops: tally.transport_drops,
        unpack_errors: tally.unpack_errors,
        sender_seconds,
        receiver_seconds: tally
            .last_receive
            .map_or(0.0, |l| l.duration_since(start).as_secs_f64()),
    })
}

/// The points of the matrix, in run order.
pub fn matrix(args: &Args) -> Vec<Point> {
    let mut points = Vec::new();
    for &driver in &args.drivers {
        let gso_settings: &[bool] = if driver.has_offloads() {
            args.gso.settings()
        } else {
            &[false]
        };
        for &gso in gso_settings {
            for &size in &args.sizes {
                points.push(Point {
                    driver,
                    gso,
                    size,
                    seconds: args.seconds,
                    datagram_bytes: args.datagram_bytes,
                    batch: args.batch,
                });
            }
        }
    }
    points
}

/// The run with the median msgs/s (the lower middle one for an even count).
pub fn median_run(mut runs: Vec<PointResult>) -> PointResult {
    runs.sort_by(|a, b| a.msgs_per_s().total_cmp(&b.msgs_per_s()));
    let middle = (runs.len().saturating_sub(1)) / 2;
    runs.swap_remove(middle)
}

/// io_uring beside sendmmsg (and memory) for each size and GSO setting both were run with;
/// None unless both kernel drivers were measured.
pub fn driver_comparison(results: &[PointResult]) -> Option<Table> {
    let find = |driver: &str, gso: bool, size: usize| {
        results
            .iter()
            .find(|r| r.driver == driver && r.gso_requested == gso && r.size == size)
    };
    let mut t = Table::new(&[
        "size B",
        "gso",
        "io_uring msgs/s",
        "sendmmsg msgs/s",
        "io_uring/sendmmsg",
        "memory msgs/s",
    ]);
    let mut any = false;
    for gso in [false, true] {
        let mut sizes: Vec<usize> = results.iter().map(|r| r.size).collect();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            let (Some(u), Some(m)) = (find("io_uring", gso, size), find("sendmmsg", gso, size))
            else {
                continue;
            };
            any = true;
            t.row(vec![
                size.to_string(),
                if gso { "on".into() } else { "off".into() },
                thousands(u.msgs_per_s()),
                thousands(m.msgs_per_s()),
                format!("{:.2}", u.msgs_per_s() / m.msgs_per_s().max(1.0)),
                find("memory", false, size).map_or("-".into(), |r| thousands(r.msgs_per_s())),
            ]);
        }
    }
    any.then_some(t)
}

pub fn table(results: &[PointResult]) -> Table {
    let mut t = Table::new(&[
        "driver",
        "gso",
        "size B",
        "msgs/dgram",
        "datagrams/s",
        "msgs/s",
        "MB/s",
        "would-block",
        "drops",
    ]);
    for r in results {
        t.row(vec![
            r.driver.to_string(),
            if r.driver == "memory" {
                "-".into()
            } else if r.gso_effective {
                "on".into()
            } else {
                "off".into()
            },
            r.size.to_string(),
            r.msgs_per_datagram.to_string(),
            thousands(r.datagrams_per_s()),
            thousands(r.msgs_per_s()),
            format!("{:.1}", r.mb_per_s()),
            r.sender_would_block.to_string(),
            r.receiver_drops().to_string(),
        ]);
    }
    t
}

pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    if !(args.seconds > 0.0 && args.seconds <= POINT_SECONDS_MAX) {
        bail!("--seconds must be in (0, {POINT_SECONDS_MAX}]");
    }
    if args.batch == 0 || args.datagram_bytes == 0 {
        bail!("--batch and --datagram-bytes must be positive");
    }
    if args.repeat == 0 || args.repeat > REPEAT_MAX {
        bail!("--repeat must be in 1..={REPEAT_MAX}");
    }
    let mut json = match &args.json {
        Some(path) => {
            Some(JsonLines::append(path).with_context(|| format!("opening {}", path.display()))?)
        }
        None => None,
    };
    let mut results = Vec::new();
    for point in matrix(&args) {
        eprintln!(
            "ceiling: {} gso={} size={} B for {} s ...",
            point.driver.label(),
            point.gso,
            point.size,
            point.seconds
        );
        let mut runs = Vec::with_capacity(args.repeat);
        for _ in 0..args.repeat {
            runs.push(run_point(point)?);
        }
        let r = median_run(runs);
        if let Some(out) = json.as_mut() {
            let mut record = r.record();
            record.extra.insert("runs".into(), args.repeat.into());
            out.write(&record).context("writing JSON line")?;
        }
        results.push(r);
    }
    print!("{}", table(&results).render());
    if let Some(side_by_side) = driver_comparison(&results) {
        println!();
        print!("{}", side_by_side.render());
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_point_moves_every_message_it_counts() {
        let r = run_point(Point {
            driver: DriverName::Memory,
            gso: false,
            size: 64,
            seconds: 0.05,
            datagram_bytes: 1472,
            batch: 16,
        })
        .unwrap();
        assert!(r.msgs_received > 0);
        assert_eq!(
            r.msgs_received,
            r.datagrams_received * r.msgs_per_datagram as u64
        );
        assert_eq!(r.unpack_errors, 0);
        assert_eq!(r.payload_bytes_received, r.msgs_received * 64);
        let rec = r.record();
        assert_eq!(rec.ratio, 1.0);
        assert_eq!(rec.order, "none");
        assert_eq!(rec.ceiling_msgs_per_s, rec.msgs_per_s);
    }

    #[test]
    fn median_run_picks_the_middle_rate() {
        let run = |msgs| PointResult {
            msgs_received: msgs,
            receiver_seconds: 1.0,
            ..PointResult::default()
        };
        assert_eq!(median_run(vec![run(5), run(1), run(9)]).msgs_received, 5);
        assert_eq!(median_run(vec![run(5), run(1)]).msgs_received, 1);
    }

    #[test]
    fn refuses_a_message_larger_than_a_datagram() {
        let e = run_point(Point {
            driver: DriverName::Memory,
            gso: false,
            size: 2000,
            seconds: 0.01,
            datagram_bytes: 1472,
            batch: 4,
        });
        assert!(e.is_err());
    }

    #[test]
    fn matrix_runs_memory_once_per_size_and_kernel_drivers_per_gso_setting() {
        let args = Args {
            drivers: vec![DriverName::Uring, DriverName::Memory],
            sizes: vec![16, 64],
            seconds: 1.0,
            datagram_bytes: 1472,
            gso: GsoMode::Both,
            batch: 64,
            repeat: 1,
            json: None,
        };
        let m = matrix(&args);
        assert_eq!(m.len(), 2 * 2 + 2);
        assert!(m
            .iter()
            .filter(|p| p.driver == DriverName::Memory)
            .all(|p| !p.gso));
    }
}

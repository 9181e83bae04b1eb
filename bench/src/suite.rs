//! A *plan* of points across the scenarios (`inproc`, `loopback`, `latency`, `netns`), its
//! run with a progress display, the tables, the issue-8 targets and the output files.
//! `--quick` and `all` are two plans; the scenario subcommands build one-scenario plans from their flags.
//!
//! Loopback: the raw ceiling of a path (driver, addressing, members, senders, payload) is
//! measured once, right before the orders that share it are run (the orders do not change the
//! path), so a drifting machine moves both sides of each ratio together. With `repeat` > 1
//! the path runs that many times (ceiling, then the orders, each time) and each point reports
//! the run whose ratio is the median of its runs (the upper one of an even count), with
//! `repeat`, `ratio_min` and `ratio_max` beside it: a ratio paired with the ceiling of its own
//! run, not one run's luck.
//!
//! Latency: the raw floor of a (driver, idle strategy, rate) ([`latency::run_floor`]) is
//! measured once, right before the orders and threadings that share it, by the same rule; its
//! row comes first and its p50/p99 go into theirs as `floor_p50_us` / `floor_p99_us`.
//!
//! netns (root only; [`crate::netns`]): the same rule per sender count, and the loss-free and
//! lossy runs of each order alternate; the loss target is judged from the lossy records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::axes::{sig3, BenchOrder, Senders};
use crate::ceiling::{DriverName, GsoMode};
use crate::group_ceiling::{self, Addressing, GroupPoint};
use crate::inproc::{self, InprocPoint};
use crate::latency::{self, IdleName, LatencyPoint};
use crate::loopback::{
    self, LoopbackPoint, OwnMessages, SendApi, Threading, NODE_SEND_BATCH_DATAGRAMS,
};
use crate::netns::{self, NetnsPlan};
use crate::output::{thousands, JsonLines, Progress, ResultRecord, Table};
use crate::plots;

/// The inproc part of a plan.
#[derive(Clone, Debug, Default)]
pub struct InprocPlan {
    pub members: Vec<usize>,
    pub orders: Vec<BenchOrder>,
    pub senders: Vec<Senders>,
    /// Payload sizes run at every group size.
    pub sizes: Vec<usize>,
    /// Extra payload sizes run at [`InprocPlan::size_sweep_members`] only.
    pub size_sweep: Vec<usize>,
    pub size_sweep_members: usize,
    pub messages: u64,
    pub seconds: f64,
    pub ceiling_seconds: f64,
}

/// The loopback part of a plan.
#[derive(Clone, Debug, Default)]
pub struct LoopbackPlan {
    pub drivers: Vec<DriverName>,
    pub addressing: Vec<Addressing>,
    pub members: Vec<usize>,
    pub senders: Vec<Senders>,
    pub orders: Vec<BenchOrder>,
    pub sizes: Vec<usize>,
    pub seconds: f64,
    pub ceiling_seconds: f64,
    pub idle: IdleName,
    pub threading: Vec<Threading>,
    /// Messages per send call (1: one send with `api`; more: `Group::send_batch`).
    pub batch: usize,
    pub api: SendApi,
    pub own: OwnMessages,
    /// GSO+GRO on the nodes and in their path's ceiling: on (the default), off, or both.
    pub gso: GsoMode,
    /// Runs of each path (its ceiling, then every order), 1 ..= [`crate::ceiling::REPEAT_MAX`];
    /// each point reports the run with the median ratio (see the module docs).
    pub repeat: usize,
}

/// The latency part of a plan.
#[derive(Clone, Debug, Default)]
pub struct LatencyPlan {
    pub drivers: Vec<DriverName>,
    pub idles: Vec<IdleName>,
    pub rates: Vec<u64>,
    pub orders: Vec<BenchOrder>,
    pub seconds: f64,
    pub threading: Vec<Threading>,
}

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub inproc: Option<InprocPlan>,
    /// Loopback plans, run one after the other (the full matrix adds a GSO-off one).
    pub loopback: Vec<LoopbackPlan>,
    pub latency: Option<LatencyPlan>,
    pub netns: Option<NetnsPlan>,
}

/// The `--quick` plan: one representative point per target, well under 60 s.
pub fn quick() -> Plan {
    Plan {
        inproc: Some(InprocPlan {
            members: vec![3, 16, 64],
            orders: vec![BenchOrder::Fifo, BenchOrder::Total],
            senders: vec![Senders::One],
            sizes: vec![64],
            size_sweep: vec![],
            size_sweep_members: 3,
            messages: 20_000,
            seconds: 2.0,
            ceiling_seconds: 0.1,
        }),
        loopback: vec![LoopbackPlan {
            drivers: vec![DriverName::Uring],
            addressing: vec![Addressing::Fanout],
            members: vec![2],
            senders: vec![Senders::One],
            orders: BenchOrder::ALL.to_vec(),
            sizes: vec![64],
            seconds: 1.0,
            ceiling_seconds: 1.0,
            idle: IdleName::Backoff,
            threading: vec![Threading::Poller, Threading::Invoker],
            batch: 1,
            api: SendApi::Publisher,
            own: OwnMessages::Discard,
            // The path a node takes by default (GSO+GRO), and the classic one without them:
            // the targets are read on both.
            gso: GsoMode::Both,
            repeat: 1,
        }],
        latency: Some(LatencyPlan {
            drivers: vec![DriverName::Uring],
            idles: vec![IdleName::BusySpin, IdleName::Backoff],
            rates: vec![10_000],
            orders: vec![BenchOrder::Fifo],
            seconds: 1.0,
            threading: vec![Threading::Poller, Threading::Invoker],
        }),
        netns: quick_netns(),
    }
}

/// The `--quick` plan's netns part: one point (fifo, 1 sender, 64 B) loss-free and at 1 %
/// loss, only where it can run at once — as root, with the `cohort` binary built (a fresh
/// clone has not built it; `cohort-bench netns` says how).
pub fn quick_netns() -> Option<NetnsPlan> {
    if netns::unavailable().is_some() || netns::locate_cohort(None).is_err() {
        return None;
    }
    Some(NetnsPlan {
        senders: vec![Senders::One],
        orders: vec![BenchOrder::Fifo],
        messages: 300_000,
        ceiling_seconds: 0.5,
        ..NetnsPlan::default()
    })
}

/// The full matrix.
pub fn full() -> Plan {
    let with_gso = LoopbackPlan {
        drivers: vec![DriverName::Uring, DriverName::Mmsg],
        addressing: vec![Addressing::Fanout, Addressing::Multicast],
        members: vec![2],
        senders: vec![Senders::One, Senders::All],
        orders: BenchOrder::ALL.to_vec(),
        sizes: vec![16, 64, 256, 1024, 8192],
        seconds: 1.0,
        ceiling_seconds: 1.0,
        idle: IdleName::Backoff,
        threading: vec![Threading::Poller, Threading::Invoker],
        batch: 1,
        api: SendApi::Publisher,
        own: OwnMessages::Discard,
        gso: GsoMode::On,
        repeat: 1,
    };
    Plan {
        inproc: Some(InprocPlan {
            members: inproc::GROUP_SIZES.to_vec(),
            orders: BenchOrder::ALL.to_vec(),
            senders: vec![Senders::One, Senders::All],
            sizes: vec![64],
            size_sweep: vec![16, 256, 1024, 8192],
            size_sweep_members: 3,
            messages: 50_000,
            seconds: 4.0,
            ceiling_seconds: 0.2,
        }),
        loopback: vec![
            with_gso.clone(),
            // The classic path without GSO+GRO, in invoker mode (the targets' mode).
            LoopbackPlan {
                gso: GsoMode::Off,
                threading: vec![Threading::Invoker],
                ..with_gso
            },
        ],
        latency: Some(LatencyPlan {
            drivers: vec![DriverName::Uring],
            idles: vec![IdleName::BusySpin, IdleName::Backoff],
            rates: latency::RATES.to_vec(),
            orders: vec![BenchOrder::Fifo],
            seconds: 2.0,
            threading: vec![Threading::Poller, Threading::Invoker],
        }),
        netns: Some(NetnsPlan::default()),
    }
}

/// [`full`] with each loopback path run `repeat` times (its median-ratio run reported).
pub fn full_repeated(repeat: usize) -> Plan {
    let mut plan = full();
    for l in &mut plan.loopback {
        l.repeat = repeat;
    }
    plan
}

/// Where results go.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    pub json: Option<PathBuf>,
    pub plots: Option<PathBuf>,
}

/// Everything a plan run produced.
#[derive(Debug, Default)]
pub struct SuiteOutcome {
    pub records: Vec<ResultRecord>,
    /// Points that could not run, with the reason (e.g. payload too large for the node).
    pub skipped: Vec<String>,
    pub plot_files: Vec<PathBuf>,
    pub without_text: bool,
}

fn inproc_points(p: &InprocPlan) -> Vec<InprocPoint> {
    let mut out = Vec::new();
    for &senders in &p.senders {
        for &order in &p.orders {
            for &members in &p.members {
                for &size in &p.sizes {
                    out.push(InprocPoint {
                        members,
                        senders,
                        order,
                        size,
                        messages: p.messages,
                        seconds: p.seconds,
                    });
                }
            }
            if senders == Senders::One {
                for &size in &p.size_sweep {
                    out.push(InprocPoint {
                        members: p.size_sweep_members,
                        senders,
                        order,
                        size,
                        messages: p.messages,
                        seconds: p.seconds,
                    });
                }
            }
        }
    }
    out
}

/// Loopback paths (one ceiling each) and the orders run on each.
fn loopback_paths(p: &LoopbackPlan) -> Vec<GroupPoint> {
    let mut out = Vec::new();
    for &driver in &p.drivers {
        for &gso in p.gso.settings() {
            for &addressing in &p.addressing {
                for &members in &p.members {
                    for &senders in &p.senders {
                        for &size in &p.sizes {
                            out.push(GroupPoint {
                                driver,
                                gso,
                                addressing,
                                members,
                                senders: senders.count(members),
                                size,
                                seconds: p.ceiling_seconds,
                                datagram_bytes: loopback::datagram_bytes_for_payload(size, members),
                                batch: NODE_SEND_BATCH_DATAGRAMS,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// The run with the median ratio of a point's runs (the upper median of an even count); with
/// more than one run planned it carries `repeat` (runs planned), `runs` (runs that gave a
/// result), `ratio_min` and `ratio_max`. None when no run gave a result.
pub fn median_ratio_run(mut runs: Vec<ResultRecord>, repeat: usize) -> Option<ResultRecord> {
    runs.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
    let (min, max) = (runs.first()?.ratio, runs.last()?.ratio);
    let n = runs.len();
    let mut rec = runs.swap_remove(n / 2);
    if repeat > 1 {
        rec.extra.insert("repeat".into(), repeat.into());
        rec.extra.insert("runs".into(), n.into());
        rec.extra.insert("ratio_min".into(), min.into());
        rec.extra.insert("ratio_max".into(), max.into());
    }
    Some(rec)
}

/// Latency points grouped by their raw floor: one (driver, idle, rate) each, with the points
/// (orders x threadings) that share it; the floor runs with the first one's settings.
fn latency_groups(p: &LatencyPlan) -> Vec<Vec<LatencyPoint>> {
    let mut out = Vec::new();
    for &driver in &p.drivers {
        for &idle in &p.idles {
            for &rate in &p.rates {
                let mut points = Vec::new();
                for &order in &p.orders {
                    for &threading in &p.threading {
                        // An invoker-mode member's own thread spins: one point, as BusySpin.
                        if threading == Threading::Invoker && idle != IdleName::BusySpin {
                            continue;
                        }
                        points.push(LatencyPoint {
                            driver,
                            idle,
                            order,
                            rate,
                            seconds: p.seconds,
                            threading,
                        });
                    }
                }
                // No point, no floor (backoff with invoker threading only).
                if !points.is_empty() {
                    out.push(points);
                }
            }
        }
    }
    out
}

/// How many progress steps a plan has.
pub fn plan_steps(plan: &Plan) -> usize {
    let i = plan.inproc.as_ref().map_or(0, |p| inproc_points(p).len());
    let l: usize = plan
        .loopback
        .iter()
        .map(|p| {
            loopback_paths(p).len() * p.repeat.max(1) * (1 + p.orders.len() * p.threading.len())
        })
        .sum();
    let t = plan.latency.as_ref().map_or(0, |p| {
        latency_groups(p)
            .iter()
            .map(|points| 1 + points.len())
            .sum()
    });
    let n = plan.netns.as_ref().map_or(0, NetnsPlan::steps);
    i + l + t + n
}

/// Runs a plan: every point, JSON lines as they come, then plots.
pub fn run_plan(plan: &Plan, outputs: &Outputs) -> anyhow::Result<SuiteOutcome> {
    if let Some(p) = &plan.netns {
        // Fail before hours of other scenarios, not after them.
        if netns::unavailable().is_none() {
            netns::locate_cohort(p.cohort.as_deref())?;
        }
    }
    let mut json = match &outputs.json {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            Some(JsonLines::append(path).with_context(|| format!("opening {}", path.display()))?)
        }
        None => None,
    };
    let mut outcome = SuiteOutcome::default();
    let mut progress = Progress::new(plan_steps(plan));
    let mut emit = |r: ResultRecord, outcome: &mut SuiteOutcome| -> anyhow::Result<()> {
        if let Some(out) = json.as_mut() {
            out.write(&r).context("writing a JSON line")?;
        }
        outcome.records.push(r);
        Ok(())
    };

    if let Some(p) = &plan.inproc {
        let mut ceilings: BTreeMap<(usize, usize), f64> = BTreeMap::new();
        for point in inproc_points(p) {
            progress.next(&format!(
                "inproc {} members, {} sender(s), {}, {} B",
                point.members,
                point.senders.count(point.members),
                point.order.label(),
                point.size
            ));
            let datagram = inproc::datagram_bytes_for_payload(point.size, point.members);
            let ceiling = match ceilings.get(&(point.size, point.members)) {
                Some(c) => *c,
                None => {
                    let c = group_ceiling::inproc_ceiling(
                        point.size,
                        point.members,
                        datagram,
                        p.ceiling_seconds,
                        u64::MAX,
                    )?;
                    ceilings.insert((point.size, point.members), c);
                    c
                }
            };
            let r = inproc::run_point(point)?;
            emit(r.record(ceiling), &mut outcome)?;
        }
    }

    for p in &plan.loopback {
        for path in loopback_paths(p) {
            let what = format!(
                "loopback {}{} {} {} members, {} sender(s), {} B{}",
                path.driver.label(),
                if path.gso { "" } else { " (GSO+GRO off)" },
                path.addressing.label(),
                path.members,
                path.senders,
                path.size,
                if path.datagram_bytes == loopback::NODE_DATAGRAM_BYTES {
                    String::new()
                } else {
                    format!(" in {} B datagrams", path.datagram_bytes)
                }
            );
            let senders = if path.senders == 1 {
                Senders::One
            } else {
                Senders::All
            };
            let points: Vec<(Threading, BenchOrder)> = p
                .threading
                .iter()
                .flat_map(|&t| p.orders.iter().map(move |&o| (t, o)))
                .collect();
            let repeat = p.repeat.max(1);
            let mut runs: Vec<Vec<ResultRecord>> = vec![Vec::new(); points.len()];
            for run in 0..repeat {
                let of = if repeat > 1 {
                    format!(" [run {} of {repeat}]", run + 1)
                } else {
                    String::new()
                };
                progress.next(&format!("{what}: raw ceiling{of}"));
                let ceiling = group_ceiling::run_group_point(path)
                    .with_context(|| format!("{what}: raw ceiling"))?;
                let ceiling_rate = ceiling.msgs_per_s(path.members);
                for (&(threading, order), runs) in points.iter().zip(runs.iter_mut()) {
                    progress.next(&format!(
                        "{what}: {} ({}){of}",
                        order.label(),
                        threading.label()
                    ));
                    let point = LoopbackPoint {
                        driver: path.driver,
                        addressing: path.addressing,
                        members: path.members,
                        senders,
                        order,
                        size: path.size,
                        seconds: p.seconds,
                        idle: p.idle.idle(),
                        threading,
                        batch: p.batch,
                        api: p.api,
                        own: p.own,
                        datagram_bytes: path.datagram_bytes,
                        gso: path.gso,
                    };
                    match loopback::run_point(point) {
                        Ok(r) => {
                            let mut rec = r.record(ceiling_rate);
                            rec.extra
                                .insert("ceiling_gso".into(), ceiling.gso_effective.into());
                            rec.extra.insert(
                                "ceiling_msgs_per_datagram".into(),
                                ceiling.msgs_per_datagram.into(),
                            );
                            rec.extra.insert("idle".into(), p.idle.label().into());
                            runs.push(rec);
                        }
                        Err(e) => outcome.skipped.push(format!(
                            "{what}: {} ({}){of}: {e:#}",
                            order.label(),
                            threading.label()
                        )),
                    }
                }
            }
            for runs in runs {
                if let Some(rec) = median_ratio_run(runs, repeat) {
                    emit(rec, &mut outcome)?;
                }
            }
        }
    }

    if let Some(p) = &plan.latency {
        for points in latency_groups(p) {
            let first = points[0];
            let what = format!(
                "latency {} {} at {} msg/s",
                first.driver.label(),
                first.idle.label(),
                first.rate
            );
            progress.next(&format!("{what}: raw floor"));
            let floor = match latency::run_floor(first) {
                Ok(f) => {
                    emit(f.record(), &mut outcome)?;
                    Some(f)
                }
                Err(e) => {
                    outcome.skipped.push(format!("{what}: raw floor: {e:#}"));
                    None
                }
            };
            for point in points {
                progress.next(&format!(
                    "{what}: {} ({})",
                    point.order.label(),
                    point.threading.label()
                ));
                match latency::run_point(point) {
                    Ok(r) => {
                        let rec = match &floor {
                            Some(f) => r.record_with_floor(f),
                            None => r.record(),
                        };
                        emit(rec, &mut outcome)?;
                    }
                    Err(e) => outcome.skipped.push(format!(
                        "{what}: {} ({}): {e:#}",
                        point.order.label(),
                        point.threading.label()
                    )),
                }
            }
        }
    }
    if let Some(p) = &plan.netns {
        let skipped = netns::run_plan(p, &mut progress, &mut |r| emit(r, &mut outcome))?;
        outcome.skipped.extend(skipped);
    }
    progress.finish();

    if let Some(dir) = &outputs.plots {
        let report = plots::write_all(&outcome.records, dir)?;
        outcome.plot_files = report.files;
        outcome.without_text = report.without_text;
    }
    Ok(outcome)
}

fn opt_us(v: Option<f64>) -> String {
    sig3(v)
}

/// The result tables, one per scenario present.
pub fn tables(records: &[ResultRecord]) -> Vec<(&'static str, Table)> {
    let mut out = Vec::new();
    let inproc: Vec<&ResultRecord> = records.iter().filter(|r| r.scenario == "inproc").collect();
    if !inproc.is_empty() {
        let mut t = Table::new(&[
            "order",
            "size B",
            "members",
            "senders",
            "msgs/s",
            "MB/s",
            "rx ns/msg",
            "rx virtual msgs/s",
            "ceiling msgs/s",
            "ratio",
            "complete",
        ]);
        for r in inproc {
            t.row(vec![
                r.order.clone(),
                r.size.to_string(),
                r.members.to_string(),
                r.senders.to_string(),
                thousands(r.msgs_per_s),
                format!("{:.1}", r.mb_per_s),
                sig3(r.extra.get("receiver_ns_per_msg").and_then(|v| v.as_f64())),
                r.extra
                    .get("receiver_virtual_msgs_per_s")
                    .and_then(|v| v.as_f64())
                    .map_or("-".into(), thousands),
                thousands(r.ceiling_msgs_per_s),
                format!("{:.3}", r.ratio),
                flag(r, "complete"),
            ]);
        }
        out.push(("inproc (sans-IO members in one thread, memory)", t));
    }
    let lo: Vec<&ResultRecord> = records
        .iter()
        .filter(|r| r.scenario == "loopback")
        .collect();
    if !lo.is_empty() {
        let mut t = Table::new(&[
            "transport",
            "order",
            "size B",
            "members",
            "senders",
            "msgs/s",
            "MB/s",
            "ceiling msgs/s",
            "ratio",
            "complete",
        ]);
        for r in lo {
            t.row(vec![
                r.transport.clone(),
                r.order.clone(),
                r.size.to_string(),
                r.members.to_string(),
                r.senders.to_string(),
                thousands(r.msgs_per_s),
                format!("{:.1}", r.mb_per_s),
                thousands(r.ceiling_msgs_per_s),
                // A sender that reached the bench's send cap stopped early: a lower bound.
                match r.extra.get("send_cap_reached").and_then(|v| v.as_bool()) {
                    Some(true) => format!("≥{:.3}", r.ratio),
                    _ => format!("{:.3}", r.ratio),
                },
                flag(r, "complete"),
            ]);
        }
        out.push((
            "loopback (threads, one Node each, one process; UDP on 127.0.0.1)",
            t,
        ));
    }
    let lat: Vec<&ResultRecord> = records.iter().filter(|r| r.scenario == "latency").collect();
    if !lat.is_empty() {
        let mut t = Table::new(&[
            "transport",
            "idle",
            "order",
            "offered msg/s",
            "delivered msg/s",
            "p50 µs",
            "p99 µs",
            "raw p99 µs",
            "p99.9 µs",
            "max µs",
            "lost",
            "NAKs",
            "ratio",
        ]);
        for r in lat {
            t.row(vec![
                r.transport.clone(),
                r.extra
                    .get("idle")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_string(),
                r.order.clone(),
                thousands(r.ceiling_msgs_per_s),
                thousands(r.msgs_per_s),
                opt_us(r.p50_us),
                opt_us(r.p99_us),
                opt_us(r.extra.get("floor_p99_us").and_then(|v| v.as_f64())),
                opt_us(r.p999_us),
                opt_us(r.extra.get("max_us").and_then(|v| v.as_f64())),
                r.extra
                    .get("lost")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.extra
                    .get("naks")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                format!("{:.3}", r.ratio),
            ]);
        }
        out.push((
            "latency (2 members, loopback, one-way, from the intended send time; `/raw`: the same schedule over plain UDP, no protocol)",
            t,
        ));
    }
    let ns: Vec<&ResultRecord> = records.iter().filter(|r| r.scenario == "netns").collect();
    if !ns.is_empty() {
        let mut t = Table::new(&[
            "transport",
            "order",
            "size B",
            "senders",
            "loss %",
            "msgs/s",
            "run msgs/s",
            "ceiling msgs/s",
            "ratio",
            "vs loss-free",
            "dropped dgrams",
            "complete",
        ]);
        for r in ns {
            let num = |k: &str| r.extra.get(k).and_then(|v| v.as_f64());
            t.row(vec![
                r.transport.clone(),
                r.order.clone(),
                r.size.to_string(),
                r.senders.to_string(),
                num("loss_percent").map_or("-".into(), |v| format!("{v:.0}")),
                thousands(r.msgs_per_s),
                num("run_msgs_per_s").map_or("-".into(), thousands),
                thousands(r.ceiling_msgs_per_s),
                format!("{:.3}", r.ratio),
                num("loss_ratio").map_or("-".into(), |v| format!("{v:.3}")),
                num("loss_drops_datagrams").map_or("-".into(), thousands),
                flag(r, "complete"),
            ]);
        }
        out.push((
            "netns (3 hosts in network namespaces on a bridge, one `cohort member` process each)",
            t,
        ));
    }
    out
}

fn flag(r: &ResultRecord, key: &str) -> String {
    match r.extra.get(key).and_then(|v| v.as_bool()) {
        Some(true) => "yes".into(),
        Some(false) => "NO".into(),
        None => "-".into(),
    }
}

/// One issue-8 target as measured.
#[derive(Clone, Debug)]
pub struct TargetVerdict {
    pub target: String,
    /// The measured figure (None: not measured in this run).
    pub figure: Option<f64>,
    pub met: Option<bool>,
    pub detail: String,
}

/// The issue-8 targets that the records allow to judge.
pub fn targets(records: &[ResultRecord]) -> Vec<TargetVerdict> {
    let mut out = Vec::new();
    let ratio_targets = [
        ("fifo", 0.8, "fbcast"),
        ("causal", 0.8, "cbcast"),
        ("total", 0.7, "abcast"),
        ("safe-total", 0.4, "safe abcast"),
    ];
    let mut transports: Vec<String> = records
        .iter()
        .filter(|r| r.scenario == "loopback")
        .map(|r| r.transport.clone())
        .collect();
    transports.sort();
    transports.dedup();
    for transport in &transports {
        for (order, min, name) in ratio_targets {
            let r = records.iter().find(|r| {
                r.scenario == "loopback"
                    && &r.transport == transport
                    && r.order == order
                    && r.size == 64
                    && r.senders == 1
                    && r.members == 2
            });
            out.push(match r {
                Some(r) => TargetVerdict {
                    target: format!("{name} ≥ {min} × ceiling ({transport}, 64 B, 1 sender)"),
                    figure: Some(r.ratio),
                    met: Some(r.ratio >= min),
                    detail: format!(
                        "{} of {} msgs/s",
                        thousands(r.msgs_per_s),
                        thousands(r.ceiling_msgs_per_s)
                    ),
                },
                None => continue,
            });
        }
    }
    for order in BenchOrder::ALL {
        if let Some(g) = inproc::cpu_growth(records, order.label(), 3, 64) {
            let cost = |m: usize| {
                records
                    .iter()
                    .find(|r| {
                        r.scenario == "inproc"
                            && r.order == order.label()
                            && r.members == m
                            && r.senders == 1
                    })
                    .and_then(|r| r.extra.get("receiver_ns_per_msg"))
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0)
            };
            out.push(TargetVerdict {
                target: format!(
                    "receiver CPU/msg grows ≤ 1.5 × from 3 to 64 members ({}, inproc)",
                    order.label()
                ),
                figure: Some(g),
                met: Some(g <= 1.5),
                detail: format!("{:.0} → {:.0} ns/msg", cost(3), cost(64)),
            });
        }
    }
    for r in records.iter().filter(|r| {
        r.scenario == "latency"
            && r.extra.get("idle").and_then(|v| v.as_str()) == Some("busyspin")
            && r.extra.get("threading").and_then(|v| v.as_str()) != Some(latency::RAW_LABEL)
            && (r.ceiling_msgs_per_s - 10_000.0).abs() < 1.0
    }) {
        let p99 = r.p99_us.unwrap_or(f64::INFINITY);
        out.push(TargetVerdict {
            target: format!(
                "p99 one-way < 30 µs at 10 k msg/s, BusySpin ({}, {})",
                r.transport, r.order
            ),
            figure: Some(p99),
            met: Some(p99 < 30.0),
            detail: match r.extra.get("floor_p99_us").and_then(|v| v.as_f64()) {
                Some(floor) => format!("p99 {p99:.1} µs; raw path p99 {floor:.1} µs"),
                None => format!("p99 {p99:.1} µs; raw path not measured"),
            },
        });
    }
    let lossy: Vec<&ResultRecord> = records
        .iter()
        .filter(|r| {
            r.scenario == "netns"
                && r.extra.get("loss_percent").and_then(|v| v.as_u64()) == Some(1)
                && r.extra.contains_key("loss_ratio")
        })
        .collect();
    if lossy.is_empty() {
        out.push(TargetVerdict {
            target: "≥ 0.5 × loss-free rate under 1 % loss (netns)".into(),
            figure: None,
            met: None,
            detail: "not measured in this run (`cohort-bench netns`, as root)".into(),
        });
    }
    for r in lossy {
        let ratio = r
            .extra
            .get("loss_ratio")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        let free = r
            .extra
            .get("loss_free_msgs_per_s")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        out.push(TargetVerdict {
            target: format!(
                "≥ 0.5 × loss-free rate under 1 % loss (netns, {}, {}, {} B, {} sender(s))",
                r.transport, r.order, r.size, r.senders
            ),
            figure: Some(ratio),
            met: Some(ratio >= 0.5),
            detail: format!(
                "{} of {} msgs/s{}",
                thousands(r.msgs_per_s),
                thousands(free),
                if flag(r, "complete") == "yes" {
                    ""
                } else {
                    " (INCOMPLETE run)"
                }
            ),
        });
    }
    out
}

/// Renders the targets as a table.
pub fn targets_table(verdicts: &[TargetVerdict]) -> Table {
    let mut t = Table::new(&["target", "figure", "verdict", "detail"]);
    for v in verdicts {
        t.row(vec![
            v.target.clone(),
            v.figure.map_or("-".into(), |f| format!("{f:.3}")),
            match v.met {
                Some(true) => "met".into(),
                Some(false) => "MISSED".into(),
                None => "not measured".into(),
            },
            v.detail.clone(),
        ]);
    }
    t
}

/// Prints tables, skipped points, targets and written files on stdout.
pub fn print_outcome(outcome: &SuiteOutcome) {
    for (title, t) in tables(&outcome.records) {
        println!("\n## {title}\n");
        print!("{}", t.render());
    }
    if !outcome.skipped.is_empty() {
        println!("\nSkipped:");
        for s in &outcome.skipped {
            println!("- {s}");
        }
    }
    println!("\n## issue-8 targets\n");
    print!("{}", targets_table(&targets(&outcome.records)).render());
    if !outcome.plot_files.is_empty() {
        println!("\nPlots:");
        for f in &outcome.plot_files {
            println!("- {}", f.display());
        }
        if outcome.without_text {
            println!("(no TrueType font found: the plots are drawn without text)");
        }
    }
}

/// Writes plots from an existing JSON lines file.
pub fn plot_file(json: &Path, dir: &Path) -> anyhow::Result<plots::PlotReport> {
    let records = crate::output::read_json_lines(json)?;
    plots::write_all(&records, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_plan_covers_every_target_it_can_measure() {
        let q = quick();
        assert_eq!(q.loopback.len(), 1);
        let l = &q.loopback[0];
        assert!(l.sizes.contains(&64) && l.members.contains(&2));
        assert_eq!(l.orders.len(), 4);
        let i = q.inproc.as_ref().unwrap();
        assert!(i.members.contains(&3) && i.members.contains(&64));
        let t = q.latency.as_ref().unwrap();
        assert!(t.rates.contains(&10_000) && t.idles.contains(&IdleName::BusySpin));
        assert_eq!(l.threading, vec![Threading::Poller, Threading::Invoker]);
        assert_eq!(
            l.gso,
            GsoMode::Both,
            "the targets read with and without GSO+GRO"
        );
        // 3 x 2 inproc + 2 GSO settings x (1 ceiling + 4 orders x 2 threadings) loopback +
        // (busyspin: 1 floor + 2 threadings, backoff: 1 floor + poller) latency (+ netns
        // where root)
        let netns = q.netns.as_ref().map_or(0, NetnsPlan::steps);
        assert_eq!(plan_steps(&q), 6 + 2 * 9 + 5 + netns);
        if let Some(n) = &q.netns {
            assert_eq!(n.loss_percents, vec![0, 1]);
            assert_eq!(n.size, 64);
        }
    }

    #[test]
    fn full_plan_spans_the_issue_axes() {
        let f = full();
        let l = &f.loopback[0];
        assert_eq!(l.sizes, vec![16, 64, 256, 1024, 8192]);
        assert_eq!(l.orders.len(), 4);
        assert_eq!(l.drivers.len(), 2);
        assert_eq!(l.addressing.len(), 2);
        assert_eq!(l.gso, GsoMode::On, "as a node runs by default");
        let off = &f.loopback[1];
        assert_eq!(
            off.gso,
            GsoMode::Off,
            "and the classic path without GSO+GRO"
        );
        assert_eq!(off.threading, vec![Threading::Invoker]);
        assert_eq!((&off.sizes, &off.orders), (&l.sizes, &l.orders));
        assert_eq!(
            f.inproc.as_ref().unwrap().members,
            inproc::GROUP_SIZES.to_vec()
        );
        assert_eq!(f.latency.as_ref().unwrap().rates, latency::RATES.to_vec());
        let n = f.netns.as_ref().unwrap();
        assert_eq!(n.senders, vec![Senders::One, Senders::All]);
        assert_eq!(n.orders, vec![BenchOrder::Fifo, BenchOrder::Total]);
        assert_eq!(n.loss_percents, vec![0, 1]);
        assert_eq!(n.size, 64);
    }

    #[test]
    fn a_repeated_full_plan_repeats_the_loopback_paths_only() {
        let (once, thrice) = (full(), full_repeated(3));
        assert!(thrice.loopback.iter().all(|l| l.repeat == 3));
        let loopback_steps = |p: &Plan| {
            plan_steps(&Plan {
                loopback: p.loopback.clone(),
                ..Plan::default()
            })
        };
        assert_eq!(loopback_steps(&thrice), 3 * loopback_steps(&once));
        assert_eq!(
            plan_steps(&thrice) - loopback_steps(&thrice),
            plan_steps(&once) - loopback_steps(&once),
            "the other scenarios run once"
        );
    }

    #[test]
    fn latency_points_share_one_raw_floor_per_driver_idle_and_rate() {
        let plan = LatencyPlan {
            drivers: vec![DriverName::Uring, DriverName::Mmsg],
            idles: vec![IdleName::BusySpin, IdleName::Backoff],
            rates: vec![1_000, 10_000],
            orders: vec![BenchOrder::Fifo, BenchOrder::Total],
            seconds: 1.0,
            threading: vec![Threading::Poller, Threading::Invoker],
        };
        let groups = latency_groups(&plan);
        assert_eq!(
            groups.len(),
            2 * 2 * 2,
            "one floor per (driver, idle, rate)"
        );
        for g in &groups {
            let f = g[0];
            assert!(g
                .iter()
                .all(|p| (p.driver, p.idle, p.rate) == (f.driver, f.idle, f.rate)));
            // Invoker mode runs under the busy-spin label only.
            let expected = if f.idle == IdleName::BusySpin { 4 } else { 2 };
            assert_eq!(g.len(), expected, "{g:?}");
        }
        // Invoker threading alone: no backoff point, so no backoff floor either.
        let invoker_only = LatencyPlan {
            threading: vec![Threading::Invoker],
            ..plan
        };
        let groups = latency_groups(&invoker_only);
        assert_eq!(groups.len(), 2 * 2);
        assert!(groups.iter().all(|g| g[0].idle == IdleName::BusySpin));
        let plan = Plan {
            latency: Some(invoker_only),
            ..Plan::default()
        };
        assert_eq!(plan_steps(&plan), 4 * (1 + 2));
    }

    fn netns_record(loss: u64, ratio: Option<f64>) -> ResultRecord {
        let mut extra = serde_json::Map::new();
        extra.insert("loss_percent".into(), loss.into());
        extra.insert("complete".into(), true.into());
        if let Some(r) = ratio {
            extra.insert("loss_ratio".into(), r.into());
            extra.insert("loss_free_msgs_per_s".into(), 1000.0.into());
        }
        ResultRecord {
            scenario: "netns".into(),
            transport: "io_uring/multicast".into(),
            order: "fifo".into(),
            size: 64,
            members: 3,
            senders: 1,
            msgs_per_s: 1000.0 * ratio.unwrap_or(1.0),
            mb_per_s: 0.0,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            ceiling_msgs_per_s: 5000.0,
            ratio: 0.2,
            extra,
        }
    }

    #[test]
    fn loss_target_is_judged_from_each_lossy_netns_record() {
        let loss_rows = |records: &[ResultRecord]| -> Vec<(Option<bool>, Option<f64>)> {
            targets(records)
                .into_iter()
                .filter(|v| v.target.contains("1 % loss"))
                .map(|v| (v.met, v.figure))
                .collect()
        };
        assert_eq!(loss_rows(&[]), vec![(None, None)]);
        assert_eq!(
            loss_rows(&[netns_record(0, None), netns_record(1, Some(0.6))]),
            vec![(Some(true), Some(0.6))]
        );
        assert_eq!(
            loss_rows(&[netns_record(0, None), netns_record(1, Some(0.4))]),
            vec![(Some(false), Some(0.4))]
        );
        let table = tables(&[netns_record(1, Some(0.4))]);
        assert!(table.iter().any(|(title, _)| title.starts_with("netns")));
    }
}

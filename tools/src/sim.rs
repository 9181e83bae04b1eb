//! `cohort sim`: runs the deterministic simulator over a range of seeds and checks every trace.
//!
//! ```text
//! cohort sim --seeds 0..500 --members 3..9 --loss 0.2 --dup 0.05 --reorder 0.3 \
//!            --messages 40 --orders fifo,causal,total,safe [--trace DIR]
//! ```
//!
//! * `--seeds A..B` runs seeds A, A+1, …, B-1 (half-open, like Rust ranges; `A..=B` includes
//!   B; a single number runs one seed).
//! * `--members N` or `--members A..B` (inclusive: `3..9` is 3 to 9 members, drawn per seed
//!   from the seed, so a seed always replays with the same group size).
//! * `--loss`, `--dup`, `--reorder`, `--burst`: probabilities per datagram and destination,
//!   as a fraction in 0..=1 (`0.2`) or a percentage with `%` (`20%`).
//! * `--orders`: comma-separated among `fifo`, `causal`, `total`, `gbcast`, `safe`; orders are
//!   drawn uniformly per message; `safe` additionally marks messages safe with probability
//!   `--safe` (default 0.25; 0 without `safe` in the list).
//! * `--bundle P` (default 0.3): probability that an application burst goes out as one
//!   bundle — one record of several messages of one order, as the runtime sends what it finds
//!   staged together.
//!
//! * `--faults crash,partition,join,leave,leader-crash` (or `all`) runs the simulator *with
//!   membership* (`cohort::sim::group`): random fault schedules drawn from the seed (at most
//!   `--faults-max` per run, keeping a majority), view changes with flush, joins with state
//!   transfer; the checker then demands completeness among survivors.
//!
//! Prints one summary line `sim: runs=R messages=M deliveries=D bundles=B discarded=X
//! violations=V` (B: records of several messages delivered, counted per member; X: own
//! messages delivered as they were sent with `--discard-own`), plus seeds/s on stderr, and
//! exits 1 on any violation, printing each failing seed with the command that replays it
//! exactly.

use anyhow::{bail, Context};
use cohort::sim::{self, SimConfig};
use cohort::Order;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Seeds to run: `A..B` (half-open), `A..=B`, or one number.
    #[arg(long, default_value = "0..100")]
    seeds: String,
    /// Group size: `N`, or an inclusive range `A..B` drawn per seed.
    #[arg(long, default_value = "3..9")]
    members: String,
    /// Loss probability per datagram and destination (fraction or percent with `%`).
    #[arg(long, default_value = "0", value_parser = parse_probability)]
    loss: f64,
    /// Duplication probability.
    #[arg(long, default_value = "0", value_parser = parse_probability)]
    dup: f64,
    /// Reordering probability (an extra random delay of up to `--reorder-delay-us`).
    #[arg(long, default_value = "0", value_parser = parse_probability)]
    reorder: f64,
    /// Probability that a loss burst (up to 8 datagrams on one link) starts.
    #[arg(long, default_value = "0", value_parser = parse_probability)]
    burst: f64,
    /// Extra delay of reordered datagrams, at most, in microseconds.
    #[arg(long, default_value_t = 400)]
    reorder_delay_us: u64,
    /// Messages each member sends.
    #[arg(long, default_value_t = 40)]
    messages: u64,
    /// Orders drawn per message, and `safe` to mark some safe.
    #[arg(long, default_value = "fifo,causal,total,safe")]
    orders: String,
    /// Probability of the safe flag when `safe` is in `--orders`.
    #[arg(long, default_value = "0.25", value_parser = parse_probability)]
    safe: f64,
    /// Probability that an application burst is sent as one bundle (one record of several
    /// messages of one order, as the runtime sends what it finds staged together).
    #[arg(long, default_value = "0.3", value_parser = parse_probability)]
    bundle: f64,
    /// Members drop their own bundles' deliveries (the runtime's `discard_own_messages`): a
    /// bundle deliverable as it is sent is delivered then, never handed out.
    #[arg(long)]
    discard_own: bool,
    /// Virtual time limit per run in milliseconds (past it: a liveness failure).
    #[arg(long, default_value_t = 60_000)]
    time_limit_ms: u64,
    /// Write each run's traces to DIR/seed-S/<member>.jsonl (failing runs only unless
    /// `--trace-all`).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// With `--trace`, write the traces of every run.
    #[arg(long)]
    trace_all: bool,
    /// Send window of every member, in messages.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Log slots per sender (a power of two, at least the window + 8).
    #[arg(long, default_value_t = 128)]
    log: usize,
    /// The sequencer's cap on order entries per order record (default: what fits a datagram).
    #[arg(long)]
    order_entries: Option<usize>,
    /// Orders (and `safe`) of the sequencer's own messages, if different from `--orders`.
    #[arg(long)]
    sequencer_orders: Option<String>,
    /// Faults drawn per seed: comma-separated among crash, partition, join, leave,
    /// leader-crash (or all); runs the simulator with membership.
    #[arg(long, default_value = "none")]
    faults: String,
    /// With `--faults`: at most this many faults per run.
    #[arg(long, default_value_t = 3)]
    faults_max: usize,
    /// With `--faults`: spare processes that may join.
    #[arg(long, default_value_t = 2)]
    spares: usize,
    /// With `--faults`: application state size in bytes (state transfer).
    #[arg(long, default_value_t = 64)]
    state_bytes: usize,
}

fn parse_probability(s: &str) -> Result<f64, String> {
    probability("probability", s).map_err(|e| format!("{e:#}"))
}

/// Parses a probability: a fraction in 0..=1, or a percentage with `%`.
fn probability(name: &str, s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let p = if let Some(pct) = s.strip_suffix('%') {
        pct.trim()
            .parse::<f64>()
            .with_context(|| format!("--{name} {s:?}"))?
            / 100.0
    } else {
        s.parse::<f64>()
            .with_context(|| format!("--{name} {s:?}"))?
    };
    if !(0.0..=1.0).contains(&p) {
        bail!("--{name} {s:?}: expected a fraction in 0..=1 or a percentage like 20%");
    }
    Ok(p)
}

/// Parses a comma-separated order list; `safe` in it turns the safe flag on.
fn parse_orders(list: &str) -> anyhow::Result<(Vec<Order>, bool)> {
    let mut orders = Vec::new();
    let mut safe = false;
    for o in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if o == "safe" {
            safe = true;
        } else {
            orders.push(o.parse::<Order>().map_err(anyhow::Error::msg)?);
        }
    }
    if orders.is_empty() {
        orders.push(Order::Fifo);
    }
    Ok((orders, safe))
}

/// Parses `A..B` (half-open unless `inclusive`), `A..=B`, or `N`, as an inclusive pair.
fn range(name: &str, s: &str, dotdot_inclusive: bool) -> anyhow::Result<(u64, u64)> {
    let num = |x: &str| {
        x.trim()
            .parse::<u64>()
            .with_context(|| format!("--{name} {s:?}"))
    };
    let (a, b) = if let Some((a, b)) = s.split_once("..=") {
        (num(a)?, num(b)?)
    } else if let Some((a, b)) = s.split_once("..") {
        let (a, b) = (num(a)?, num(b)?);
        if dotdot_inclusive {
            (a, b)
        } else {
            if b <= a {
                bail!("--{name} {s:?} is empty");
            }
            (a, b - 1)
        }
    } else {
        let n = num(s)?;
        (n, n)
    };
    if b < a {
        bail!("--{name} {s:?} is empty");
    }
    Ok((a, b))
}

/// The per-seed group size (deterministic in the seed).
fn members_for(seed: u64, lo: u64, hi: u64) -> usize {
    let x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (lo + (x >> 11) % (hi - lo + 1)) as usize
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (seed_lo, seed_hi) = range("seeds", &args.seeds, false)?;
    let (m_lo, m_hi) = range("members", &args.members, true)?;
    if m_lo < 1 || m_hi > cohort::protocol::MEMBERS_MAX as u64 {
        bail!(
            "--members {}: between 1 and {}",
            args.members,
            cohort::protocol::MEMBERS_MAX
        );
    }
    let (loss, dup, reorder, burst) = (args.loss, args.dup, args.reorder, args.burst);
    let (orders, safe) = parse_orders(&args.orders)?;
    let safe_probability = if safe { args.safe } else { 0.0 };
    let sequencer = match &args.sequencer_orders {
        Some(s) => {
            let (o, safe) = parse_orders(s)?;
            Some((o, if safe { args.safe } else { 0.0 }))
        }
        None => None,
    };
    if !args.log.is_power_of_two()
        || args.window < 1
        || args.window + cohort::protocol::CONTROL_RECORDS_RESERVE > args.log
    {
        bail!(
            "--window {} --log {}: the log must be a power of two of at least the window + {}",
            args.window,
            args.log,
            cohort::protocol::CONTROL_RECORDS_RESERVE
        );
    }
    if args.order_entries.is_some_and(|e| e < 2) {
        bail!("--order-entries: at least 2 (one entry is kept for the sequencer's own stream)");
    }
    let mut extra = format!(
        " --window {} --log {} --bundle {}",
        args.window, args.log, args.bundle
    );
    if args.discard_own {
        extra.push_str(" --discard-own");
    }
    if let Some(e) = args.order_entries {
        extra.push_str(&format!(" --order-entries {e}"));
    }
    if let Some(s) = &args.sequencer_orders {
        extra.push_str(&format!(" --sequencer-orders {s}"));
    }

    let faults: sim::group::FaultKinds = args.faults.parse().map_err(anyhow::Error::msg)?;
    if faults.any() {
        extra.push_str(&format!(
            " --faults {} --faults-max {} --spares {} --state-bytes {}",
            args.faults, args.faults_max, args.spares, args.state_bytes
        ));
    }

    let started = std::time::Instant::now();
    let (mut runs, mut messages, mut deliveries, mut violations) = (0u64, 0u64, 0u64, 0u64);
    let (mut bundles, mut discarded) = (0u64, 0u64);
    for seed in seed_lo..=seed_hi {
        if faults.any() {
            let mut cfg =
                sim::group::GroupSimConfig::new(seed, members_for(seed, m_lo, m_hi), args.messages);
            cfg.orders = orders.clone();
            cfg.safe_probability = safe_probability;
            cfg.bundle_probability = args.bundle;
            cfg.discard_own_bundles = args.discard_own;
            cfg.net.loss = loss;
            cfg.net.dup = dup;
            cfg.net.reorder = reorder;
            cfg.net.burst = burst;
            cfg.net.reorder_delay_ns = args.reorder_delay_us * 1_000;
            cfg.time_limit_ns = args.time_limit_ms * 1_000_000;
            cfg.window_messages_max = args.window;
            cfg.log_messages_max = args.log;
            cfg.faults = faults;
            cfg.faults_max = args.faults_max;
            cfg.spares = args.spares;
            cfg.state_bytes = args.state_bytes;
            let members = cfg.members;
            let outcome = sim::group::run(cfg);
            runs += 1;
            messages += outcome.messages_sent;
            deliveries += outcome.deliveries;
            bundles += outcome.bundles_delivered;
            discarded += outcome.own_discarded;
            let v = outcome.problems.len() + outcome.report.violations.len();
            violations += v as u64;
            if let Some(dir) = &args.trace {
                if v > 0 || args.trace_all {
                    let d = dir.join(format!("seed-{seed}"));
                    sim::write_member_traces(&outcome.traces, &d)
                        .with_context(|| format!("writing traces to {}", d.display()))?;
                }
            }
            if v > 0 {
                println!(
                    "sim: seed {seed} ({members} members, faults {:?}) FAILED with {v} violations:",
                    outcome.faults
                );
                for line in outcome.describe().iter().take(12) {
                    println!("  {line}");
                }
                println!(
                    "  replay: cohort sim --seeds {seed} --members {members} --loss {loss} --dup {dup} --reorder {reorder} --burst {burst} --reorder-delay-us {} --messages {} --orders {} --safe {} --time-limit-ms {}{extra} --trace sim-trace",
                    args.reorder_delay_us,
                    args.messages,
                    args.orders,
                    args.safe,
                    args.time_limit_ms
                );
            }
            continue;
        }
        let mut cfg = SimConfig::new(seed, members_for(seed, m_lo, m_hi), args.messages);
        cfg.orders = orders.clone();
        cfg.safe_probability = safe_probability;
        cfg.bundle_probability = args.bundle;
        cfg.discard_own_bundles = args.discard_own;
        cfg.loss = loss;
        cfg.dup = dup;
        cfg.reorder = reorder;
        cfg.burst = burst;
        cfg.reorder_delay_ns = args.reorder_delay_us * 1_000;
        cfg.time_limit_ns = args.time_limit_ms * 1_000_000;
        cfg.window_messages_max = args.window;
        cfg.log_messages_max = args.log;
        cfg.order_entries_per_record_max = args.order_entries.unwrap_or(usize::MAX);
        if let Some((o, p)) = &sequencer {
            cfg.sequencer_orders = Some(o.clone());
            cfg.sequencer_safe_probability = Some(*p);
        }
        let outcome = sim::run(cfg);
        runs += 1;
        messages += outcome.messages;
        deliveries += outcome.deliveries;
        bundles += outcome.bundles_delivered;
        discarded += outcome.own_discarded;
        let v = outcome.violations();
        violations += v as u64;
        if let Some(dir) = &args.trace {
            if v > 0 || args.trace_all {
                let d = dir.join(format!("seed-{seed}"));
                outcome
                    .write_traces(&d)
                    .with_context(|| format!("writing traces to {}", d.display()))?;
            }
        }
        if v > 0 {
            println!(
                "sim: seed {seed} ({} members) FAILED with {v} violations:",
                outcome.members
            );
            for line in outcome.describe().iter().take(10) {
                println!("  {line}");
            }
            println!(
                "  replay: cohort sim --seeds {seed} --members {} --loss {loss} --dup {dup} --reorder {reorder} --burst {burst} --reorder-delay-us {} --messages {} --orders {} --safe {} --time-limit-ms {}{extra} --trace sim-trace",
                outcome.members,
                args.reorder_delay_us,
                args.messages,
                args.orders,
                args.safe,
                args.time_limit_ms
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sim: runs={runs} messages={messages} deliveries={deliveries} bundles={bundles} discarded={discarded} violations={violations}"
    );
    eprintln!(
        "sim: {:.1} s wall, {:.0} seeds/s",
        secs,
        runs as f64 / secs.max(1e-9)
    );
    Ok(if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_accept_fractions_and_percentages() {
        assert_eq!(probability("loss", "0.2").unwrap(), 0.2);
        assert_eq!(probability("loss", "20%").unwrap(), 0.2);
        assert!(probability("loss", "20").is_err());
        assert!(probability("loss", "x").is_err());
    }

    #[test]
    fn seed_ranges_are_half_open_and_member_ranges_inclusive() {
        assert_eq!(range("seeds", "0..500", false).unwrap(), (0, 499));
        assert_eq!(range("seeds", "3..=5", false).unwrap(), (3, 5));
        assert_eq!(range("seeds", "7", false).unwrap(), (7, 7));
        assert!(range("seeds", "5..5", false).is_err());
        assert_eq!(range("members", "3..9", true).unwrap(), (3, 9));
    }

    #[test]
    fn member_counts_cover_the_range_deterministically() {
        let counts: std::collections::BTreeSet<usize> =
            (0..200).map(|s| members_for(s, 3, 9)).collect();
        assert_eq!(counts, (3..=9).collect());
        assert_eq!(members_for(42, 3, 9), members_for(42, 3, 9));
    }
}

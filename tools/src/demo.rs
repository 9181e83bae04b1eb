//! `cohort demo`: the README's main job on one machine, no root, no config.
//!
//! Starts a local group of 3 member processes (this program re-executed as `cohort member`)
//! on loopback — IP multicast on 127.0.0.1 if a test join and loopback datagram work here,
//! else unicast fan-out — and streams cbcast and abcast traffic (each member alternates
//! causal and total messages, at `--rate` per second) with a progress display. Once the
//! founders delivered `--kill-at-percent` of their traffic, the demo kills the last founder
//! with SIGKILL (by the PID it started) and prints the view lines the members print, and how
//! long each survivor took from the kill to its new view (reported, not asserted); the
//! survivors' flush shows as the number of the killed member's messages each survivor
//! delivered (virtual synchrony: the same number at every survivor). Then a fourth member
//! joins through the survivors (`cohort member --seeds ..`) with state transfer and sends its
//! share too; the demo prints what it restored. At the end: delivered msgs/s, latency
//! percentiles per member and the trace checker's verdict (properties 1-10, and completeness
//! among the survivors: no message lost from a sender that stayed in the group).
//!
//! The killed member's trace is a prefix of its run (its buffered tail is lost with the
//! process); a kill -9 may cut its last line in half, and the demo drops such a torn last line
//! before checking and tells the checker which member was killed (`CheckConfig::crashed`).
//!
//! Bounded: the members get `--duration` seconds, the demo kills its own children if they
//! overrun. Exit status: 0 only if the kill and the join happened, every surviving member and
//! the joiner completed, and the checker found no violation.

use anyhow::Context;
use cohort::checker::{check, CheckConfig};
use cohort::runtime::trace_writer::trace_file_name;
use cohort::trace::{parse_msg_id, read_trace_dir, MemberTrace, TraceEvent};
use cohort_transport::{Dest, DriverChoice, GroupMode, SendBatch, SocketConfig};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the multicast probe waits for its own datagram.
const MULTICAST_PROBE_WAIT_MS: u64 = 300;
/// Extra time the demo gives its members beyond their own `--duration` before killing them.
const KILL_GRACE_S: u64 = 5;
/// Progress display period.
const PROGRESS_PERIOD_MS: u64 = 250;
/// The members' heartbeat period: short, so that the view change after the kill comes quickly.
const HEARTBEAT_MS: u64 = 20;
/// A member silent this long is excluded: 25 heartbeats, long enough that a loaded 2-core
/// machine (other builds running) does not produce false suspicions — at 300 ms, 2 runs in
/// about 30 on a busy machine saw every live member block at once, likely false suspicions.
const SUSPECT_MS: u64 = 500;
/// View lines kept per member (a member installs a handful in the demo; more are dropped).
const VIEW_LINES_PER_MEMBER_MAX: usize = 64;

#[derive(clap::Args)]
pub struct Args {
    /// Keep the members' traces here (default: a fresh directory under the system temp dir).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Founding members to start (one of them is killed, then one more joins).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Messages each member sends (the joiner too).
    #[arg(long, default_value_t = 20_000)]
    pub count: u64,
    /// Payload bytes (≥ 16 carries a send timestamp for latency).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages per second per member (0: as fast as the window allows; latency then
    /// includes queueing behind the full window, and the founders may be done before the
    /// joiner is admitted).
    #[arg(long, default_value_t = 4_000)]
    pub rate: u64,
    /// Kill one founder once the founders delivered this percentage of their traffic.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=90))]
    pub kill_at_percent: u64,
    /// Upper bound on the members' run, in seconds.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Use unicast fan-out even where multicast works.
    #[arg(long)]
    pub no_multicast: bool,
}

#[derive(Default)]
struct ChildState {
    delivered: u64,
    /// `(when read, view id, member ids)` per `view` line, at most
    /// [`VIEW_LINES_PER_MEMBER_MAX`].
    views: Vec<(Instant, String, Vec<String>)>,
    /// `blocked ...` lines the member printed and the demo has not shown yet (at most
    /// [`VIEW_LINES_PER_MEMBER_MAX`]).
    blocked: Vec<String>,
    summary: Option<HashMap<String, String>>,
}

/// One member process the demo started.
struct Member {
    addr: SocketAddr,
    child: Child,
    state: Arc<Mutex<ChildState>>,
    reader: Option<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Member {
    fn state(&self) -> std::sync::MutexGuard<'_, ChildState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the run is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    /// Killed the victim at this instant; waiting for every survivor's view without it.
    Killed(Instant),
    /// The joiner runs.
    Joining,
}

/// Prints an event line, clearing a progress line first on a terminal.
fn say(tty: bool, line: &str) {
    if tty {
        print!("\r\x1b[2K");
    }
    println!("{line}");
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (3..=16).contains(&args.members),
        "--members must be 3..=16 (the survivors of the kill must be a majority)"
    );
    let dir = args.trace.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("cohort-demo-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let founders = args.members;
    // The founders, the joiner, and the multicast group's port.
    let ports = free_ports(founders + 2)?;
    let addrs: Vec<SocketAddr> = ports[..=founders]
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let group_addr = SocketAddr::from((
        [239, 255, (std::process::id() % 250) as u8 + 1, 7],
        ports[founders + 1],
    ));
    let multicast = !args.no_multicast && multicast_works(group_addr);
    let victim = founders - 1;
    let victim_id = addrs[victim].to_string();
    let joiner_addr = addrs[founders];
    println!("cohort demo: {founders} members on loopback, one killed mid-run, a fourth joins");
    println!(
        "  transport: {}",
        if multicast {
            format!("IP multicast {group_addr} on 127.0.0.1 (TTL 1)")
        } else {
            "unicast fan-out (multicast not available here)".to_owned()
        }
    );
    println!(
        "  traffic:   each member sends {} messages of {} B, alternating cbcast (causal) and abcast (total), {}",
        args.count,
        args.size,
        if args.rate == 0 {
            "unthrottled (latency includes queueing behind a full window; try --rate)".to_owned()
        } else {
            format!("{} msgs/s each", args.rate)
        }
    );
    println!(
        "  script:    at {} % of the founders' traffic, kill -9 {victim_id}; after the view change, {joiner_addr} joins with state transfer",
        args.kill_at_percent
    );
    println!(
        "  failure detection: heartbeat every {HEARTBEAT_MS} ms, suspect after {SUSPECT_MS} ms"
    );
    println!("  traces:    {}", dir.display());

    let exe = std::env::current_exe().context("finding this program")?;
    let list = addrs[..founders]
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let member_cmd = |bind: SocketAddr, duration_s: u64| {
        let mut cmd = Command::new(&exe);
        cmd.args(["member", "--group", "demo", "--bind", &bind.to_string()])
            .args(["--order", "causal,total"])
            .args(["--count", &args.count.to_string()])
            .args(["--size", &args.size.to_string()])
            .args(["--rate", &args.rate.to_string()])
            .args(["--duration", &duration_s.to_string()])
            .args(["--progress-ms", &PROGRESS_PERIOD_MS.to_string()])
            .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .args(["--suspect-ms", &SUSPECT_MS.to_string()])
            .arg("--no-counters")
            .arg("--trace")
            .arg(&dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if multicast {
            cmd.args([
                "--multicast",
                &group_addr.to_string(),
                "--iface",
                "127.0.0.1",
            ]);
        }
        cmd
    };
    let spawn = |mut cmd: Command, addr: SocketAddr| -> anyhow::Result<Member> {
        let mut child = cmd.spawn().context("starting a member process")?;
        let state = Arc::new(Mutex::new(ChildState::default()));
        let reader = child.stdout.take().map(|stdout| {
            let state = state.clone();
            std::thread::spawn(move || read_member_output(stdout, &state))
        });
        Ok(Member {
            addr,
            child,
            state,
            reader,
            status: None,
        })
    };

    let mut members: Vec<Member> = Vec::new();
    let start = Instant::now();
    for &a in &addrs[..founders] {
        let mut cmd = member_cmd(a, args.duration);
        cmd.args(["--members", &list]);
        match spawn(cmd, a) {
            Ok(m) => members.push(m),
            Err(e) => {
                kill_all(&mut members);
                return Err(e);
            }
        }
    }

    let tty = std::io::stdout().is_terminal();
    let deadline = start + Duration::from_secs(args.duration + KILL_GRACE_S);
    let kill_threshold = args.count * (founders * founders) as u64 * args.kill_at_percent / 100;
    let mut phase = Phase::Streaming;
    let mut kill_time: Option<Instant> = None;
    let mut view_change_ms: Vec<(SocketAddr, f64)> = Vec::new();
    let mut joiner_admitted = false;
    // Views printed so far: (id, members), and the last one printed (to name the change).
    let mut shown_views: Vec<(String, Vec<String>)> = Vec::new();
    let mut last_line = Instant::now();
    let mut overran = false;
    loop {
        for m in members.iter_mut() {
            if m.status.is_none() {
                m.status = m.child.try_wait().context("waiting for a member")?;
            }
        }
        if members.iter().all(|m| m.status.is_some()) {
            break;
        }
        let now = Instant::now();
        for m in &members {
            for line in std::mem::take(&mut m.state().blocked) {
                say(
                    tty,
                    &format!(
                        "  [{:5.2} s] {}: {line}",
                        start.elapsed().as_secs_f64(),
                        m.addr
                    ),
                );
            }
        }
        // New views, each printed once, with what changed.
        let mut fresh: Vec<(Instant, SocketAddr, String, Vec<String>)> = Vec::new();
        for m in &members {
            for (t, id, ids) in &m.state().views {
                if !shown_views.iter().any(|(i, v)| i == id && v == ids)
                    && !fresh.iter().any(|(_, _, i, v)| i == id && v == ids)
                {
                    fresh.push((*t, m.addr, id.clone(), ids.clone()));
                }
            }
        }
        fresh.sort_by_key(|f| f.0);
        for (t, by, id, ids) in fresh {
            let change = match shown_views.last() {
                None => "founded".to_owned(),
                Some((_, prev)) => describe_change(
                    prev,
                    &ids,
                    kill_time.is_some().then_some(victim_id.as_str()),
                ),
            };
            say(
                tty,
                &format!(
                    "  [{:5.2} s] view id={id} members={} — {change} (reported first by {by})",
                    t.duration_since(start).as_secs_f64(),
                    ids.join(",")
                ),
            );
            if ids.iter().any(|i| *i == joiner_addr.to_string()) {
                joiner_admitted = true;
            }
            shown_views.push((id, ids));
        }

        match phase {
            Phase::Streaming => {
                let founders_delivered: u64 = members[..founders]
                    .iter()
                    .map(|m| m.state().delivered)
                    .sum();
                if members[victim].status.is_some() {
                    say(tty, "  the member to kill exited before the kill point: no kill shown (use a larger --count or a lower --kill-at-percent)");
                    phase = Phase::Joining; // nothing more to script
                } else if founders_delivered >= kill_threshold {
                    let pid = members[victim].child.id();
                    // Child::kill is SIGKILL on Unix: kill -9 by the PID we started.
                    members[victim].child.kill().context("killing a member")?;
                    let t = Instant::now();
                    kill_time = Some(t);
                    say(
                        tty,
                        &format!(
                            "  [{:5.2} s] kill -9 {victim_id} (pid {pid}) after the founders delivered {founders_delivered} messages",
                            t.duration_since(start).as_secs_f64()
                        ),
                    );
                    phase = Phase::Killed(t);
                }
            }
            Phase::Killed(t) => {
                // Each survivor's first view without the victim, installed after the kill.
                let mut all = true;
                view_change_ms.clear();
                for m in members[..victim].iter() {
                    let s = m.state();
                    match s
                        .views
                        .iter()
                        .find(|(at, _, ids)| *at >= t && !ids.contains(&victim_id))
                    {
                        Some((at, _, _)) => {
                            view_change_ms.push((m.addr, at.duration_since(t).as_secs_f64() * 1e3))
                        }
                        None => all = false,
                    }
                }
                if all {
                    say(
                        tty,
                        &format!(
                            "  view change after the kill: {} (from the kill to the survivor's new view, as read from its output)",
                            view_change_ms
                                .iter()
                                .map(|(a, ms)| format!("{a} {ms:.0} ms"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    let seeds = members[..victim]
                        .iter()
                        .map(|m| m.addr.to_string())
                        .collect::<Vec<_>>()
                        .join(",");
                    let left = deadline
                        .saturating_duration_since(Instant::now())
                        .as_secs()
                        .saturating_sub(KILL_GRACE_S)
                        .max(1);
                    let mut cmd = member_cmd(joiner_addr, left);
                    cmd.args(["--seeds", &seeds]);
                    let m = spawn(cmd, joiner_addr).inspect_err(|_| kill_all(&mut members))?;
                    say(
                        tty,
                        &format!(
                            "  [{:5.2} s] starting {joiner_addr}: cohort member --seeds {seeds} (joins with state transfer)",
                            start.elapsed().as_secs_f64()
                        ),
                    );
                    members.push(m);
                    phase = Phase::Joining;
                }
            }
            Phase::Joining => {}
        }

        let per_member = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if i == victim && kill_time.is_some() {
                    "killed".to_owned()
                } else {
                    m.state().delivered.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" / ");
        let line = format!(
            "  [{:5.1} s] delivered per member: {per_member}",
            start.elapsed().as_secs_f64(),
        );
        if tty {
            print!("\r\x1b[2K{line}");
            std::io::stdout().flush().ok();
        } else if last_line.elapsed() >= Duration::from_millis(1000) {
            println!("{line}");
            last_line = Instant::now();
        }
        if now > deadline {
            say(tty, "  members overran their bound: stopping them");
            overran = true;
            kill_all(&mut members);
            break;
        }
        std::thread::sleep(Duration::from_millis(PROGRESS_PERIOD_MS / 5));
    }
    if tty {
        println!();
    }
    for m in members.iter_mut() {
        if m.status.is_none() {
            m.status = m.child.wait().ok();
        }
        if let Some(r) = m.reader.take() {
            let _ = r.join();
        }
    }
    let wall = start.elapsed();
    let killed = kill_time.is_some();
    let joiner_started = members.len() > founders;

    // Results.
    println!("results:");
    let mut survivors_complete = !overran;
    let mut deliveries = 0u64;
    let mut longest = 0f64;
    let mut restored = None;
    for (i, m) in members.iter().enumerate() {
        let s = m.state();
        let a = m.addr;
        if i == victim && killed {
            println!(
                "  {a}: killed by the demo (kill -9) after delivering {} messages",
                s.delivered
            );
            continue;
        }
        let ok = m.status.is_some_and(|st| st.success());
        survivors_complete &= ok;
        let role = if i == founders { "joined " } else { "founder" };
        match &s.summary {
            Some(f) => {
                let get = |k: &str| f.get(k).map_or("-", String::as_str);
                deliveries += get("delivered").parse::<u64>().unwrap_or(0);
                longest = longest.max(get("elapsed_s").parse::<f64>().unwrap_or(0.0));
                if i == founders {
                    restored = get("restored").parse::<u64>().ok();
                }
                println!(
                    "  {a} {role}: sent {:>6}  delivered {:>7}  {:>6} msgs/s  latency p50 {:>6} us  p99 {:>6} us  views {}  restored {}  [{}]",
                    get("sent"),
                    get("delivered"),
                    get("msgs_per_s"),
                    get("p50_us"),
                    get("p99_us"),
                    get("views"),
                    get("restored"),
                    if ok { "complete" } else { "INCOMPLETE" }
                );
            }
            None => println!("  {a} {role}: no summary (exit status {:?})", m.status),
        }
    }
    if longest > 0.0 {
        println!(
            "  group: {deliveries} deliveries at the survivors and the joiner in {longest:.2} s = {:.0} delivered msgs/s; wall time {:.1} s",
            deliveries as f64 / longest,
            wall.as_secs_f64()
        );
    }
    match restored {
        Some(r) => println!(
            "  state transfer: the joiner restored={r} (messages the group had delivered before it joined, accounted for by the transferred state)"
        ),
        None if joiner_started => println!("  state transfer: the joiner reported nothing"),
        None => println!("  state transfer: no joiner was started"),
    }

    let mut torn_ok = true;
    if killed {
        match drop_torn_last_line(&dir.join(trace_file_name(&victim_id))) {
            Ok(0) => {}
            Ok(n) => println!("  the killed member's trace ended in a line cut by the kill: dropped its last {n} bytes"),
            Err(e) => {
                println!("  could not read the killed member's trace: {e:#}");
                torn_ok = false;
            }
        }
    }
    let traces = read_trace_dir(&dir).context("reading the traces")?;
    let mut flush_ok = true;
    if killed {
        let survivors: Vec<String> = members[..victim]
            .iter()
            .map(|m| m.addr.to_string())
            .collect();
        let f = compare_flush(&traces, &victim_id, &survivors);
        flush_ok = f.same_at_every_survivor && f.lost_contiguous;
        println!(
            "  flush: the survivors delivered {} of the killed member's messages — {}",
            f.delivered_from_victim
                .iter()
                .map(|(n, k)| format!("{n}: {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            if f.same_at_every_survivor {
                "the same messages, in the same views, at every survivor"
            } else {
                "NOT the same at every survivor"
            }
        );
        if f.lost_sends > 0 {
            println!(
                "  its trace records sends up to #{}; #{}..#{} were still in its trace buffer when it was killed: the checker is told it was killed and takes those as sent, checking everything else about them (and above: the same at every survivor{})",
                f.last_traced_send,
                f.last_traced_send + 1,
                f.last_traced_send + f.lost_sends,
                if f.lost_contiguous {
                    ", numbered without a gap"
                } else {
                    "; NOT numbered without a gap"
                }
            );
        }
    }
    let report = check(
        &traces,
        &CheckConfig {
            require_survivor_complete: true,
            crashed: if killed {
                vec![victim_id.clone()]
            } else {
                Vec::new()
            },
            ..Default::default()
        },
    );
    println!("trace checker (properties 1-10, and completeness among the survivors):");
    for line in report.to_string().lines() {
        println!("  {line}");
    }
    let clean = report.is_ok() && torn_ok && flush_ok && traces.len() == members.len();
    let scripted = killed && joiner_started && joiner_admitted;
    println!(
        "verdict: {}",
        match (clean, survivors_complete, scripted) {
            (true, true, true) => "CLEAN — a member killed, a member joined, every survivor and the joiner delivered every message of the group; no violation",
            (true, true, false) => "INCOMPLETE — the traces are clean but the kill or the join did not happen",
            (true, false, _) => "INCOMPLETE — the traces are clean but a surviving member did not finish",
            _ => "VIOLATIONS — see above",
        }
    );
    Ok(if clean && survivors_complete && scripted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Names what changed from view `prev` to `cur`: who joined, who failed (`killed`: the member
/// the demo killed, once it did), who left.
fn describe_change(prev: &[String], cur: &[String], killed: Option<&str>) -> String {
    let mut parts = Vec::new();
    for m in cur.iter().filter(|m| !prev.contains(m)) {
        parts.push(format!("{m} joined"));
    }
    for m in prev.iter().filter(|m| !cur.contains(m)) {
        if Some(m.as_str()) == killed {
            parts.push(format!("{m} excluded (killed; the survivors flushed)"));
        } else {
            parts.push(format!("{m} left"));
        }
    }
    if parts.is_empty() {
        "same members".to_owned()
    } else {
        parts.join(", ")
    }
}

/// What the survivors' traces say about the killed member's messages.
struct Flush {
    /// Per survivor: messages of the killed member it delivered.
    delivered_from_victim: Vec<(String, usize)>,
    /// Whether every survivor delivered the same (message, view) pairs of the killed member.
    same_at_every_survivor: bool,
    /// The highest sequence number the killed member's trace records a send of.
    last_traced_send: u64,
    /// Messages of the killed member delivered at a survivor beyond `last_traced_send`.
    lost_sends: u64,
    /// Whether those are numbered `last_traced_send + 1 ..= last_traced_send + lost_sends`.
    lost_contiguous: bool,
}

/// Compares the survivors' deliveries of the killed member's messages, and counts those
/// whose send the killed member's trace lost (kill -9 ends a buffered trace early; the
/// checker is told who was killed, `CheckConfig::crashed`).
fn compare_flush(traces: &[MemberTrace], victim: &str, survivors: &[String]) -> Flush {
    let node_of = |t: &MemberTrace| t.events.first().map(|e| e.node().to_owned());
    let last_traced_send = traces
        .iter()
        .filter(|t| node_of(t).as_deref() == Some(victim))
        .flat_map(|t| &t.events)
        .filter_map(|e| match e {
            TraceEvent::Send { msg, .. } => parse_msg_id(msg).map(|(_, seq)| seq),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut seen: Vec<BTreeSet<(u64, u64)>> = Vec::new();
    let mut delivered_from_victim = Vec::new();
    let mut lost: BTreeSet<u64> = BTreeSet::new();
    for t in traces {
        let Some(node) = node_of(t) else { continue };
        if !survivors.contains(&node) {
            continue;
        }
        let mut mine = BTreeSet::new();
        for e in &t.events {
            if let TraceEvent::Deliver { msg, view, .. } = e {
                if let Some((s, seq)) = parse_msg_id(msg) {
                    if s == victim {
                        mine.insert((seq, *view));
                        if seq > last_traced_send {
                            lost.insert(seq);
                        }
                    }
                }
            }
        }
        delivered_from_victim.push((node, mine.len()));
        seen.push(mine);
    }
    let lost_sends = lost.len() as u64;
    Flush {
        delivered_from_victim,
        same_at_every_survivor: seen.windows(2).all(|w| w[0] == w[1]),
        last_traced_send,
        lost_sends,
        lost_contiguous: lost
            .iter()
            .copied()
            .eq(last_traced_send + 1..=last_traced_send + lost_sends),
    }
}

/// Cuts a trace file after its last newline (a kill -9 may leave half a line); returns the
/// bytes dropped.
fn drop_torn_last_line(path: &Path) -> anyhow::Result<u64> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let dropped = (bytes.len() - keep) as u64;
    if dropped > 0 {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(keep as u64))
            .with_context(|| format!("truncating {}", path.display()))?;
    }
    Ok(dropped)
}

fn read_member_output(stdout: std::process::ChildStdout, state: &Mutex<ChildState>) {
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let kind = words.next();
        let fields: HashMap<String, String> = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let num = |k: &str| fields.get(k).and_then(|v| v.parse().ok());
        match kind {
            Some("progress") => {
                s.delivered = num("delivered").unwrap_or(s.delivered);
            }
            Some("view") if s.views.len() < VIEW_LINES_PER_MEMBER_MAX => {
                let id = fields.get("id").cloned().unwrap_or_default();
                let ids = fields
                    .get("members")
                    .map(|m| m.split(',').map(str::to_owned).collect())
                    .unwrap_or_default();
                s.views.push((Instant::now(), id, ids));
            }
            Some("blocked") if s.blocked.len() < VIEW_LINES_PER_MEMBER_MAX => {
                s.blocked.push(line.clone());
            }
            Some("summary") => {
                s.delivered = num("delivered").unwrap_or(s.delivered);
                s.summary = Some(fields);
            }
            _ => {}
        }
    }
}

fn kill_all(members: &mut [Member]) {
    for m in members {
        if let Ok(None) = m.child.try_wait() {
            let _ = m.child.kill(); // our own child, by its PID
            m.status = m.child.wait().ok();
        }
    }
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free loopback ports")?;
    sockets.iter().map(|s| Ok(s.local_addr()?.port())).collect()
}

/// Whether a multicast join on 127.0.0.1 works here: join, send one datagram to the group,
/// and see it come back within [`MULTICAST_PROBE_WAIT_MS`].
fn multicast_works(group: SocketAddr) -> bool {
    let mut cfg = SocketConfig::unicast(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.group = GroupMode::Multicast {
        group,
        iface: Ipv4Addr::LOCALHOST,
        ttl: 1,
        loopback: true,
    };
    cfg.recv_buffer_bytes = 1 << 16;
    cfg.send_buffer_bytes = 1 << 16;
    let Ok(mut t) = cohort_transport::open(DriverChoice::Mmsg, &cfg) else {
        return false;
    };
    let mut batch = SendBatch::new(1, cfg.datagram_bytes_max);
    const PROBE: &[u8] = b"cohort-demo-multicast-probe";
    if batch.push(Dest::Group, PROBE).is_err() || !matches!(t.send(&batch), Ok(1)) {
        return false;
    }
    let deadline = Instant::now() + Duration::from_millis(MULTICAST_PROBE_WAIT_MS);
    while Instant::now() < deadline {
        let _ = t.wait_readable(Duration::from_millis(20));
        let mut seen = false;
        let _ = t.recv(8, &mut |_, bytes| seen |= bytes == PROBE);
        if seen {
            return true;
        }
    }
    false
}

//! Runs of real `cohort member` processes on a [`Cluster`], one per host, and their verdict.
//!
//! A [`Scenario`] says what the members do (order, safe, count, size, rate, window), which
//! link faults the cluster applies before they start (nftables loss, `tc tbf` caps), what the
//! members' own seeded fault layer does (`--faults`), whether the protocol is broken on
//! purpose (`--break-protocol`), and which member is stopped (SIGSTOP) before the others
//! start. [`run`] starts the members, lets the test act on them while they run (signals,
//! waiting for progress lines), waits for them within a bound, reads every trace and runs
//! the checker with completeness required. For a scenario that must end clean it asserts the
//! checker's verdict, every member's exit status and summary, and that no message was lost
//! (every member delivered every member's every message).
//!
//! Timing never decides a verdict: the run's duration is printed, and its bound only turns a
//! hang into a failure. Runs go one at a time (a lock): 3–5 members share 2 CPUs.

use super::{Cluster, Direction, Proc};
use cohort::checker::{check, CheckConfig, Report};
use cohort::trace::read_trace_dir;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Port every member binds on its host's address.
pub const MEMBER_PORT: u16 = 7000;
/// Port of the group's multicast address.
pub const GROUP_PORT: u16 = 7100;
/// Lines of a member's stdout kept (the oldest go first; the summary is the last line).
pub const OUTPUT_LINES_MAX: usize = 4096;
/// How often a member polls its captured output while a test waits for a line, in ms.
const OUTPUT_POLL_MS: u64 = 10;
/// Time the members get beyond their own `--duration` before the run counts as hung: their
/// bounded shutdown (own sends flushed for at most the library's leave bound) and start-up.
pub const EXIT_GRACE: Duration = Duration::from_secs(8);

pub static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    UnicastFanOut,
    Multicast,
}

/// A fault on a host's link, in force from before the members start until the run ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LinkFault {
    /// Random loss in percent (nftables in the bridge namespace, else iptables).
    Loss {
        host: usize,
        dir: Direction,
        percent: u8,
    },
    /// A `tc tbf` cap in kbit/s.
    Bandwidth {
        host: usize,
        dir: Direction,
        kbit: u32,
    },
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub hosts: usize,
    pub mode: Mode,
    /// `--order` (a comma list cycles message by message).
    pub order: String,
    pub safe: bool,
    /// Payload bytes per message (about 1200 is one message per datagram).
    pub size: usize,
    /// Messages each member sends.
    pub count: u64,
    /// `--rate` of each member (0: as fast as the window allows).
    pub rate: u64,
    /// `(host, rate)`: a different `--rate` for these hosts.
    pub rate_overrides: Vec<(usize, u64)>,
    /// `--duration` of each member, in seconds.
    pub duration_secs: u64,
    /// `--window` of each member (None: the library's default).
    pub window: Option<usize>,
    pub link_faults: Vec<LinkFault>,
    /// `--faults` of every member; each gets `seed=<host index + 1>` unless the spec has one.
    pub faults: Option<String>,
    /// `--break-protocol skip-retransmit` at every member.
    pub skip_retransmit: bool,
    /// This host's member is stopped (SIGSTOP) as soon as it is spawned, before any other
    /// member exists; the test continues it (SIGCONT) from its `during` closure.
    pub stopped_at_start: Option<usize>,
    /// `--progress-ms` of every member (lines a `during` closure can wait for).
    pub progress_ms: Option<u64>,
    /// Assert a clean, complete run: checker verdict, exit statuses, no message lost.
    pub expect_clean: bool,
    /// `--heartbeat-ms`, `--suspect-ms` and `--expect-members` of every founder (None: the
    /// member's defaults). Membership runs ([`run_membership`]) set the first two short.
    pub heartbeat_ms: Option<u64>,
    pub suspect_ms: Option<u64>,
    pub expect_members: Option<usize>,
    /// Hosts `0..founders` found the group in [`run_membership`]; the others are started by
    /// the test as joiners ([`Live::join`]). [`run`] starts every host as a founder.
    pub founders: usize,
}

impl Scenario {
    /// Fault-free defaults: 32-byte messages, 500 per member, 30 s bound.
    pub fn new(name: &str, hosts: usize, mode: Mode, order: &str) -> Scenario {
        Scenario {
            name: name.to_owned(),
            hosts,
            mode,
            order: order.to_owned(),
            safe: false,
            size: 32,
            count: 500,
            rate: 0,
            rate_overrides: Vec::new(),
            duration_secs: 30,
            window: None,
            link_faults: Vec::new(),
            faults: None,
            skip_retransmit: false,
            stopped_at_start: None,
            progress_ms: None,
            expect_clean: true,
            heartbeat_ms: None,
            suspect_ms: None,
            expect_members: None,
            founders: hosts,
        }
    }
}

/// How a member enters the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// `--members` of these hosts (in rank order: the first is the leader).
    Found(Vec<usize>),
    /// `--seeds` of these hosts.
    Join(Vec<usize>),
}

/// One running member: its process and what it printed so far.
pub struct Member<'c> {
    pub host: usize,
    pub proc_: Proc<'c>,
    /// Every line with the time the harness read it.
    output: Arc<Mutex<VecDeque<(Instant, String)>>>,
}

impl Member<'_> {
    pub fn signal(&self, name: &str) {
        self.proc_.signal(name);
    }

    /// Lines printed so far (at most [`OUTPUT_LINES_MAX`], the latest).
    pub fn lines(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Lines printed so far with the time each was read (at most [`OUTPUT_LINES_MAX`]).
    pub fn timed_lines(&self) -> Vec<(Instant, String)> {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Waits until a line read at or after `since` satisfies `pred`, at most `limit`; the
    /// time it was read, or `None`.
    pub fn wait_line_since(
        &self,
        since: Instant,
        pred: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Option<Instant> {
        let end = Instant::now() + limit;
        loop {
            let hit = self
                .output
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|(t, l)| *t >= since && pred(l))
                .map(|(t, _)| *t);
            if hit.is_some() {
                return hit;
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(OUTPUT_POLL_MS));
        }
    }

    /// Waits until a printed line satisfies `pred`, at most `limit`; false if none did.
    pub fn wait_line(&self, pred: impl Fn(&str) -> bool, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            if self
                .output
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|(_, l)| pred(l))
            {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(OUTPUT_POLL_MS));
        }
    }
}

/// The value of `key=` in a `progress`/`summary` line.
pub fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

pub struct Outcome {
    pub statuses: Vec<ExitStatus>,
    /// "<exit status>: <summary line>" per member, in host order.
    pub summaries: Vec<String>,
    pub report: Report,
    /// From the first spawn to the last exit.
    pub elapsed: Duration,
}

/// Why this scenario cannot run here (printed by [`run`] as a loud skip), if it cannot.
fn unavailable(s: &Scenario) -> Option<String> {
    if let Some(why) = super::unavailable() {
        return Some(why);
    }
    let loss = s
        .link_faults
        .iter()
        .any(|f| matches!(f, LinkFault::Loss { .. }));
    if loss && !super::have("nft") && !super::have("iptables") {
        return Some(format!("{}: link loss needs nft or iptables", s.name));
    }
    let cap = s
        .link_faults
        .iter()
        .any(|f| matches!(f, LinkFault::Bandwidth { .. }));
    if cap && !super::have("tc") {
        return Some(format!("{}: a bandwidth cap needs tc (iproute2)", s.name));
    }
    None
}

/// Runs `s` (see the module documentation); `during` acts on the running members, then the
/// members are waited for. `None` (after a loud skip line) when the scenario cannot run here.
pub fn run(s: &Scenario, during: impl FnOnce(&Cluster, &[Member<'_>])) -> Option<Outcome> {
    if let Some(why) = unavailable(s) {
        super::skip(&why);
        return None;
    }
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::new(s.hosts);
    let group = format!("{}-{}", s.name, std::process::id());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("netns-members-{group}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("trace dir");
    for f in &s.link_faults {
        match *f {
            LinkFault::Loss { host, dir, percent } => c.set_loss(host, dir, percent),
            LinkFault::Bandwidth { host, dir, kbit } => c.set_bandwidth(host, dir, Some(kbit)),
        }
    }
    let start = Instant::now();
    let mut order: Vec<usize> = (0..s.hosts).collect();
    if let Some(h) = s.stopped_at_start {
        order.retain(|&i| i != h);
        order.insert(0, h);
    }
    let mut spawned: Vec<Member<'_>> = Vec::new();
    for i in order {
        let m = spawn_member(&c, s, i, &group, &dir, &Role::Found((0..s.hosts).collect()));
        if s.stopped_at_start == Some(i) {
            m.signal("STOP");
        }
        spawned.push(m);
    }
    spawned.sort_by_key(|m| m.host);
    let members = spawned;
    during(&c, &members);
    let bound = Duration::from_secs(s.duration_secs) + EXIT_GRACE;
    let mut members = members;
    let mut statuses = Vec::new();
    for m in members.iter_mut() {
        let left = bound.saturating_sub(start.elapsed());
        let status = m.proc_.wait_timeout(left);
        assert!(
            status.is_some(),
            "{group}: member on host {} still running after {bound:?} (its --duration is {} s)",
            m.host,
            s.duration_secs
        );
        statuses.push(status.unwrap());
    }
    let elapsed = start.elapsed();
    let dropped: Vec<String> = s
        .link_faults
        .iter()
        .filter_map(|f| match *f {
            LinkFault::Loss { host, dir, .. } => c
                .loss_drops(host, dir)
                .map(|n| format!("{dir:?} host {host}: {n}")),
            LinkFault::Bandwidth { .. } => None,
        })
        .collect();
    let mut summaries = Vec::new();
    for (m, status) in members.iter_mut().zip(&statuses) {
        // The reader thread ends at end of file, which comes with the exit.
        let _ = m.proc_.child.wait();
        let summary = (0..100)
            .find_map(|_| {
                let s = m.lines().into_iter().rfind(|l| l.starts_with("summary "));
                if s.is_none() {
                    std::thread::sleep(Duration::from_millis(OUTPUT_POLL_MS));
                }
                s
            })
            .unwrap_or_else(|| "(no summary)".to_owned());
        summaries.push(format!("{status}: {summary}"));
    }
    drop(members);
    let traces = read_trace_dir(&dir).expect("traces readable");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(traces.len(), s.hosts, "{group}: one trace per member");
    let report = check(
        &traces,
        &CheckConfig {
            require_complete: true,
            ..Default::default()
        },
    );
    eprintln!(
        "netns run {group}: {} hosts, {:?}, order {}, safe {}, link faults {:?}, --faults {:?}, \
         skip-retransmit {}: completed in {:.2} s wall, {} sends, {} deliveries, frames dropped \
         by loss rules [{}], {} violations",
        s.hosts,
        s.mode,
        s.order,
        s.safe,
        s.link_faults,
        s.faults,
        s.skip_retransmit,
        elapsed.as_secs_f64(),
        report.sends,
        report.deliveries,
        dropped.join(", "),
        report.violation_count()
    );
    for sm in &summaries {
        eprintln!("  {sm}");
    }
    if s.expect_clean {
        for (i, (status, summary)) in statuses.iter().zip(&summaries).enumerate() {
            assert!(
                status.success(),
                "{group}: member on host {i} failed: {summary}"
            );
            assert!(summary.contains(" complete=true "), "{group}: {summary}");
        }
        assert!(report.is_ok(), "{group}: {report}");
        let n = s.hosts as u64;
        assert_eq!(report.members as u64, n, "{group}: every member traced");
        assert_eq!(
            report.sends as u64,
            n * s.count,
            "{group}: every send traced"
        );
        assert_eq!(
            report.deliveries as u64,
            n * n * s.count,
            "{group}: no message lost: every message delivered at every member"
        );
    }
    Some(Outcome {
        statuses,
        summaries,
        report,
        elapsed,
    })
}

pub fn spawn_member<'c>(
    c: &'c Cluster,
    s: &Scenario,
    i: usize,
    group: &str,
    trace_dir: &std::path::Path,
    role: &Role,
) -> Member<'c> {
    let (flag, hosts) = match role {
        Role::Found(h) => ("--members", h),
        Role::Join(h) => ("--seeds", h),
    };
    let list = hosts
        .iter()
        .map(|&h| member_id(c, h))
        .collect::<Vec<_>>()
        .join(",");
    let mut args: Vec<String> = [
        "member",
        "--group",
        group,
        "--bind",
        &format!("{}:{MEMBER_PORT}", c.addr(i)),
        flag,
        &list,
        "--order",
        &s.order,
        "--count",
        &s.count.to_string(),
        "--size",
        &s.size.to_string(),
        "--duration",
        &s.duration_secs.to_string(),
        "--rate",
        &s.rate_overrides
            .iter()
            .find(|(h, _)| *h == i)
            .map_or(s.rate, |&(_, r)| r)
            .to_string(),
        "--trace",
        trace_dir.to_str().expect("utf-8 trace dir"),
        "--no-counters",
    ]
    .map(str::to_owned)
    .to_vec();
    if s.safe {
        args.push("--safe".into());
    }
    if s.mode == Mode::Multicast {
        args.extend([
            "--multicast".into(),
            format!("{}:{GROUP_PORT}", c.multicast_group),
            "--iface".into(),
            c.addr(i).to_string(),
        ]);
    }
    if let Some(w) = s.window {
        args.extend(["--window".into(), w.to_string()]);
    }
    if let Some(spec) = &s.faults {
        let spec = if spec.contains("seed=") {
            spec.clone()
        } else {
            format!("{spec},seed={}", i + 1)
        };
        args.extend(["--faults".into(), spec]);
    }
    if s.skip_retransmit {
        args.extend(["--break-protocol".into(), "skip-retransmit".into()]);
    }
    if let Some(ms) = s.progress_ms {
        args.extend(["--progress-ms".into(), ms.to_string()]);
    }
    if let Some(ms) = s.heartbeat_ms {
        args.extend(["--heartbeat-ms".into(), ms.to_string()]);
    }
    if let Some(ms) = s.suspect_ms {
        args.extend(["--suspect-ms".into(), ms.to_string()]);
    }
    if let (Some(n), Role::Found(_)) = (s.expect_members, role) {
        args.extend(["--expect-members".into(), n.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = c.command(i, env!("CARGO_BIN_EXE_cohort"), &args);
    cmd.env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut proc_ = c.spawn(cmd);
    let stdout = proc_.child.stdout.take().expect("member stdout");
    let output = Arc::new(Mutex::new(VecDeque::new()));
    let sink = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut out = sink.lock().unwrap_or_else(|e| e.into_inner());
            if out.len() == OUTPUT_LINES_MAX {
                out.pop_front();
            }
            out.push_back((Instant::now(), line));
        }
    });
    Member {
        host: i,
        proc_,
        output,
    }
}

/// A member's id in views and traces on its first incarnation: the address it binds.
pub fn member_id(c: &Cluster, host: usize) -> String {
    format!("{}:{MEMBER_PORT}", c.addr(host))
}

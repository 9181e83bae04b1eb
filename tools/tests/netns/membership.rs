//! Membership runs of real `cohort member` processes on a [`Cluster`]: founders start with
//! `--members`, the test kills members (SIGKILL, by PID), starts joiners (`--seeds`), cuts
//! and heals links while they run, and times view changes from the members' `view id=V
//! members=..` lines. Then every trace goes through the checker with *survivor* completeness
//! (a killed member's trace is a prefix; a blocked member rejoins under a new id, `addr#2`,
//! which the checker treats as a distinct member), and the run asserts the checker's verdict,
//! that the survivors exit complete, and that no message of a surviving sender was lost at a
//! survivor (read from the traces, not from the members' own accounts).
//!
//! A killed member's trace file is cut where SIGKILL found its buffered writer (256 KiB,
//! so usually it is empty), possibly inside a line: the harness drops the torn last line,
//! and the checker is told who was killed (`CheckConfig::crashed`): a killed member's
//! messages that others delivered are taken as sent. What this gives up: the killed member's
//! own integrity (that it sent what was delivered) beyond its traced prefix; agreement,
//! virtual synchrony, orders, survivor completeness are still checked in full.
//!
//! Timing never decides a verdict: view-change times are measured and printed by the tests;
//! waits are bounded only to turn a hang into a failure.

use super::members::{member_id, spawn_member, Member, Role, Scenario, EXIT_GRACE, ONE_AT_A_TIME};
use super::Cluster;
use cohort::checker::{check, CheckConfig, Report};
use cohort::trace::{parse_msg_id, read_trace_dir, MemberTrace, TraceEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Longest wait for a member's stdout to show the summary after it exited, in polls of 10 ms.
const SUMMARY_POLLS_MAX: usize = 100;

/// The members of a `view id=V members=A,B,C` line.
pub fn view_members(line: &str) -> Option<Vec<&str>> {
    let rest = line.strip_prefix("view ")?;
    let list = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("members="))?;
    Some(list.split(',').filter(|m| !m.is_empty()).collect())
}

/// The running group: members by host (None: not started), and what the test did to them.
pub struct Live<'c> {
    pub cluster: &'c Cluster,
    scenario: Scenario,
    group: String,
    dir: PathBuf,
    members: Vec<Option<Member<'c>>>,
    killed: Vec<usize>,
    /// When the first founder was spawned.
    pub start: Instant,
}

impl<'c> Live<'c> {
    pub fn member(&self, host: usize) -> &Member<'c> {
        self.members[host]
            .as_ref()
            .unwrap_or_else(|| panic!("host {host} runs no member"))
    }

    pub fn id(&self, host: usize) -> String {
        member_id(self.cluster, host)
    }

    /// SIGKILL the member of `host` (by its PID) and reap it; the time the signal was sent.
    pub fn kill(&mut self, host: usize) -> Instant {
        let at = Instant::now();
        let m = self.members[host]
            .as_mut()
            .unwrap_or_else(|| panic!("host {host} runs no member"));
        m.signal("KILL");
        let status = m.proc_.wait_timeout(Duration::from_secs(5));
        assert!(status.is_some(), "host {host}: still alive after SIGKILL");
        self.killed.push(host);
        at
    }

    /// Start a member on `host` that joins through the members of `seeds`; the time.
    pub fn join(&mut self, host: usize, seeds: &[usize]) -> Instant {
        assert!(
            self.members[host].is_none(),
            "host {host} runs a member already"
        );
        let at = Instant::now();
        self.members[host] = Some(spawn_member(
            self.cluster,
            &self.scenario,
            host,
            &self.group,
            &self.dir,
            &Role::Join(seeds.to_vec()),
        ));
        at
    }

    /// The time `host` printed (at or after `since`) the first view whose member list
    /// satisfies `pred`, waiting at most `limit`.
    pub fn wait_view(
        &self,
        host: usize,
        since: Instant,
        pred: impl Fn(&[&str]) -> bool,
        limit: Duration,
    ) -> Option<Instant> {
        self.member(host).wait_line_since(
            since,
            |l| view_members(l).is_some_and(|m| pred(&m)),
            limit,
        )
    }

    /// The time `host` printed its `blocked` line (at or after `since`), at most `limit`.
    pub fn wait_blocked(&self, host: usize, since: Instant, limit: Duration) -> Option<Instant> {
        self.member(host)
            .wait_line_since(since, |l| l.starts_with("blocked"), limit)
    }
}

pub struct Outcome {
    /// Per host: its exit status (None: never started).
    pub statuses: Vec<Option<ExitStatus>>,
    /// Per host: "<exit status>: <summary line>" ("-" for a host never started).
    pub summaries: Vec<String>,
    /// Per host: every line it printed (empty for a host never started).
    pub lines: Vec<Vec<String>>,
    pub report: Report,
    pub traces: Vec<MemberTrace>,
    /// From the first spawn to the last exit.
    pub elapsed: Duration,
}

/// Drop a torn last line (no newline) of the trace files of `id`'s process: SIGKILL can cut
/// the buffered writer anywhere.
fn drop_torn_tail(dir: &Path, id: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let stem: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    for e in entries.flatten() {
        let path = e.path();
        if !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&stem))
        {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if keep < bytes.len() {
            eprintln!(
                "  {}: dropped a torn last line of {} bytes (cut by SIGKILL)",
                path.display(),
                bytes.len() - keep
            );
            std::fs::write(&path, &bytes[..keep]).expect("rewrite torn trace");
        }
    }
}

/// Per trace: the member ids it traces (one process may trace several incarnations).
fn ids_of(t: &MemberTrace) -> BTreeSet<&str> {
    t.events.iter().map(TraceEvent::node).collect()
}

/// Sequence numbers of `sender`'s messages that the trace's member delivered (any incarnation
/// of that process, any view).
fn delivered_from(t: &MemberTrace, sender: &str) -> BTreeSet<u64> {
    t.events
        .iter()
        .filter_map(|e| match e {
            TraceEvent::Deliver { msg, .. } => parse_msg_id(msg)
                .filter(|(s, _)| *s == sender)
                .map(|(_, q)| q),
            _ => None,
        })
        .collect()
}

/// Runs `s` with membership: hosts `0..s.founders` found the group, `during` acts on the live
/// group (kills, joins, link cuts) and returns what it measured; then every started member is
/// waited for and the traces are checked (see the module documentation). `survivors` must
/// exit 0 complete, and none of them may miss a message of another survivor: a founder
/// delivered each survivor's messages 1..=count, a joiner a gap-free run up to count (what
/// precedes it came with the state transfer). `None` (after a loud skip line) when the
/// scenario cannot run here.
pub fn run_membership<T>(
    s: &Scenario,
    survivors: &[usize],
    during: impl FnOnce(&mut Live<'_>) -> T,
) -> Option<(Outcome, T)> {
    if let Some(why) = super::unavailable() {
        super::skip(&why);
        return None;
    }
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::new(s.hosts);
    let group = format!("{}-{}", s.name, std::process::id());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("netns-members-{group}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("trace dir");
    let start = Instant::now();
    let founders: Vec<usize> = (0..s.founders).collect();
    let mut live = Live {
        cluster: &c,
        scenario: s.clone(),
        group: group.clone(),
        dir: dir.clone(),
        members: (0..s.hosts).map(|_| None).collect(),
        killed: Vec::new(),
        start,
    };
    for &h in &founders {
        live.members[h] = Some(spawn_member(
            &c,
            s,
            h,
            &group,
            &dir,
            &Role::Found(founders.clone()),
        ));
    }
    let measured = during(&mut live);
    let bound = Duration::from_secs(s.duration_secs) + EXIT_GRACE;
    let mut statuses = Vec::new();
    for (h, m) in live.members.iter_mut().enumerate() {
        let Some(m) = m else {
            statuses.push(None);
            continue;
        };
        let left = bound.saturating_sub(start.elapsed());
        let status = m.proc_.wait_timeout(left);
        assert!(
            status.is_some(),
            "{group}: member on host {h} still running after {bound:?} (its --duration is {} s)",
            s.duration_secs
        );
        statuses.push(status);
    }
    let elapsed = start.elapsed();
    let mut summaries = Vec::new();
    let mut lines = Vec::new();
    // Per started host: its view and blocked lines, timed from the start (for the log).
    let mut views: Vec<Vec<String>> = Vec::new();
    for (m, status) in live.members.iter_mut().zip(&statuses) {
        let (Some(m), Some(status)) = (m, status) else {
            summaries.push("-".to_owned());
            lines.push(Vec::new());
            views.push(Vec::new());
            continue;
        };
        // The reader thread ends at end of file, which comes with the exit.
        let _ = m.proc_.child.wait();
        let summary = (0..SUMMARY_POLLS_MAX)
            .find_map(|_| {
                let s = m.lines().into_iter().rfind(|l| l.starts_with("summary "));
                if s.is_none() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                s
            })
            .unwrap_or_else(|| "(no summary)".to_owned());
        summaries.push(format!("{status}: {summary}"));
        lines.push(m.lines());
        views.push(
            m.timed_lines()
                .into_iter()
                .filter(|(_, l)| l.starts_with("view ") || l.starts_with("blocked"))
                .map(|(t, l)| {
                    let at = t.saturating_duration_since(start).as_secs_f64();
                    format!("+{at:.3} s {l}")
                })
                .collect::<Vec<_>>(),
        );
    }
    let killed = live.killed.clone();
    drop(live);
    for &h in &killed {
        drop_torn_tail(&dir, &member_id(&c, h));
    }
    let traces = read_trace_dir(&dir).expect("traces readable");
    let _ = std::fs::remove_dir_all(&dir);
    let killed_ids: Vec<String> = killed.iter().map(|&h| member_id(&c, h)).collect();
    let report = check(
        &traces,
        &CheckConfig {
            require_survivor_complete: true,
            crashed: killed_ids,
            ..Default::default()
        },
    );
    eprintln!(
        "netns membership run {group}: {} hosts ({} founders), order {}, safe {}, count {}, \
         rate {}/s, heartbeat {:?} ms, suspect {:?} ms, killed {killed:?}: all exited after \
         {:.2} s wall, {} sends, {} deliveries, {} violations",
        s.hosts,
        s.founders,
        s.order,
        s.safe,
        s.count,
        s.rate,
        s.heartbeat_ms,
        s.suspect_ms,
        elapsed.as_secs_f64(),
        report.sends,
        report.deliveries,
        report.violation_count()
    );
    for (h, (sm, vs)) in summaries.iter().zip(&views).enumerate() {
        eprintln!("  host {h}: {sm}");
        for v in vs {
            eprintln!("    {v}");
        }
    }
    assert!(report.is_ok(), "{group}: {report}");
    for &h in survivors {
        let status = statuses[h].unwrap_or_else(|| panic!("{group}: survivor {h} never ran"));
        assert!(
            status.success(),
            "{group}: survivor on host {h} failed: {}",
            summaries[h]
        );
        assert!(
            summaries[h].contains(" complete=true "),
            "{group}: {}",
            summaries[h]
        );
    }
    let trace_of = |h: usize| -> &MemberTrace {
        let id = member_id(&c, h);
        traces
            .iter()
            .find(|t| ids_of(t).contains(id.as_str()))
            .unwrap_or_else(|| panic!("{group}: no trace of host {h} ({id})"))
    };
    for &r in survivors {
        let at = trace_of(r);
        for &t in survivors {
            let sender = member_id(&c, t);
            let got = delivered_from(at, &sender);
            let from = if r < s.founders || r == t {
                1
            } else {
                got.first().copied().unwrap_or(1)
            };
            let want: BTreeSet<u64> = (from..=s.count).collect();
            let missing: Vec<u64> = want.difference(&got).copied().take(8).collect();
            assert!(
                got.len() as u64 == s.count - from + 1 && missing.is_empty(),
                "{group}: host {r} lost messages of surviving sender {sender}: delivered {} of \
                 #{from}..=#{}, first missing {missing:?}",
                got.len(),
                s.count
            );
        }
    }
    Some((
        Outcome {
            statuses,
            summaries,
            lines,
            report,
            traces,
            elapsed,
        },
        measured,
    ))
}

/// Per host, the time from `since` to the first `view` line it printed whose members satisfy
/// `pred` (None: no such line) — for reports, never for verdicts.
pub fn view_times(
    live: &Live<'_>,
    hosts: &[usize],
    since: Instant,
    pred: impl Fn(&[&str]) -> bool + Copy,
    limit: Duration,
) -> BTreeMap<usize, Option<Duration>> {
    hosts
        .iter()
        .map(|&h| {
            (
                h,
                live.wait_view(h, since, pred, limit)
                    .map(|t| t.saturating_duration_since(since)),
            )
        })
        .collect()
}

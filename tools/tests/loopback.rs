//! Multi-process tests on loopback: real `cohort member` processes (3 and 5), unicast fan-out
//! and IP multicast on 127.0.0.1 (TTL 1), each order and safe delivery; every trace goes
//! through the checker with completeness required; and membership with real processes:
//! `kill -9` of a member and of the leader mid-burst, a join mid-burst with state transfer, a
//! graceful leave (SIGTERM) — survivors' messages all delivered, traces clean.
//!
//! Timing never decides a verdict: the bound on each run only turns a hang into a failure.
//! Scenarios run one at a time (a lock) so that 3–5 processes share the 2 CPUs of CI.

use cohort::checker::{check, CheckConfig};
use cohort::trace::read_trace_dir;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bound on one scenario's processes (their own --duration is shorter).
const RUN_TIMEOUT: Duration = Duration::from_secs(40);
/// `--duration` given to each member.
const MEMBER_DURATION_S: u64 = 30;
/// Messages each member sends.
const COUNT: u64 = 1000;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    UnicastFanOut,
    Multicast,
}

fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

struct Run {
    summaries: Vec<String>,
}

fn run_group(name: &str, members: usize, mode: Mode, order: &str, safe: bool) -> Run {
    run_group_staggered(name, members, mode, order, safe, Duration::ZERO)
}

/// A group name unique to this test process and an empty trace directory for it.
fn fresh_run(name: &str) -> (String, PathBuf) {
    let group = format!("{name}-{}", std::process::id());
    let dir: PathBuf = std::env::temp_dir().join(format!("cohort-loopback-{group}"));
    let _ = std::fs::remove_dir_all(&dir);
    (group, dir)
}

/// Starts the members `stagger` apart (the first ones send before the last one is up).
fn run_group_staggered(
    name: &str,
    members: usize,
    mode: Mode,
    order: &str,
    safe: bool,
    stagger: Duration,
) -> Run {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (group, dir) = fresh_run(name);
    let ports = free_ports(members + 1);
    let addrs: Vec<SocketAddr> = ports[..members]
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let list = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let multicast = format!(
        "239.255.{}.{}:{}",
        (std::process::id() % 250) + 1,
        (ports[0] % 250) + 1,
        ports[members]
    );
    let mut children: Vec<Child> = addrs
        .iter()
        .map(|a| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_cohort"));
            cmd.args(["member", "--group", &group, "--bind", &a.to_string()])
                .args(["--members", &list, "--order", order])
                .args(["--count", &COUNT.to_string(), "--size", "32"])
                .args(["--duration", &MEMBER_DURATION_S.to_string()])
                .arg("--trace")
                .arg(&dir)
                .env("RUST_LOG", "error")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if safe {
                cmd.arg("--safe");
            }
            if mode == Mode::Multicast {
                cmd.args(["--multicast", &multicast, "--iface", "127.0.0.1"]);
            }
            std::thread::sleep(stagger);
            cmd.spawn().expect("cohort member starts")
        })
        .collect();
    let start = Instant::now();
    let mut statuses = vec![None; members];
    while statuses.iter().any(Option::is_none) {
        for (i, c) in children.iter_mut().enumerate() {
            if statuses[i].is_none() {
                statuses[i] = c.try_wait().expect("wait");
            }
        }
        if start.elapsed() > RUN_TIMEOUT {
            for (i, c) in children.iter_mut().enumerate() {
                if statuses[i].is_none() {
                    let _ = c.kill(); // our own child, by its PID
                    let _ = c.wait();
                }
            }
            panic!("{group}: members still running after {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut summaries = Vec::new();
    for (c, status) in children.iter_mut().zip(&statuses) {
        let mut out = String::new();
        std::io::Read::read_to_string(c.stdout.as_mut().unwrap(), &mut out).unwrap();
        let summary = out
            .lines()
            .rfind(|l| l.starts_with("summary "))
            .unwrap_or("(no summary)")
            .to_owned();
        eprintln!("{group}: {summary}");
        assert!(
            status.unwrap().success(),
            "{group}: a member failed: {status:?}: {summary}"
        );
        assert!(summary.contains(" complete=true "), "{group}: {summary}");
        summaries.push(summary);
    }
    let traces = read_trace_dir(&dir).expect("traces readable");
    assert_eq!(traces.len(), members, "{group}: one trace per member");
    let report = check(
        &traces,
        &CheckConfig {
            require_complete: true,
            ..Default::default()
        },
    );
    eprintln!(
        "{group}: {}",
        report.to_string().lines().next().unwrap_or("")
    );
    assert!(report.is_ok(), "{group}: {report}");
    let n = members as u64;
    assert_eq!(report.sends as u64, n * COUNT, "{group}: every send traced");
    assert_eq!(
        report.deliveries as u64,
        n * n * COUNT,
        "{group}: every message delivered everywhere"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    Run { summaries }
}

#[test]
fn three_members_fifo_over_unicast_fanout_pass_the_checker() {
    run_group("fifo3u", 3, Mode::UnicastFanOut, "fifo", false);
}

#[test]
fn three_members_causal_over_unicast_fanout_pass_the_checker() {
    run_group("causal3u", 3, Mode::UnicastFanOut, "causal", false);
}

#[test]
fn three_members_total_safe_over_unicast_fanout_pass_the_checker() {
    run_group("totalsafe3u", 3, Mode::UnicastFanOut, "total", true);
}

#[test]
fn three_members_gbcast_over_multicast_pass_the_checker() {
    run_group("gbcast3m", 3, Mode::Multicast, "gbcast", false);
}

#[test]
fn five_members_mixed_orders_over_multicast_pass_the_checker() {
    let run = run_group(
        "mixed5m",
        5,
        Mode::Multicast,
        "fifo,causal,total,gbcast",
        false,
    );
    assert!(run.summaries.iter().all(|s| s.contains("mode=multicast")));
}

#[test]
fn five_members_total_over_unicast_fanout_pass_the_checker() {
    let run = run_group("total5u", 5, Mode::UnicastFanOut, "total", false);
    assert!(run
        .summaries
        .iter()
        .all(|s| s.contains("mode=unicast-fanout")));
}

#[test]
fn members_starting_late_are_caught_up_by_repair() {
    run_group_staggered(
        "late3u",
        3,
        Mode::UnicastFanOut,
        "causal,total",
        false,
        Duration::from_millis(300),
    );
}

#[test]
fn sigterm_stops_a_member_with_its_trace_flushed() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("cohort-loopback-sigterm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ports = free_ports(2);
    // The second member never starts: this one can never finish on its own.
    let list = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args([
            "member",
            "--group",
            "sig",
            "--bind",
            &format!("127.0.0.1:{}", ports[0]),
        ])
        .args(["--members", &list, "--count", "10", "--duration", "60"])
        .args(["--progress-ms", "10"])
        .arg("--trace")
        .arg(&dir)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("cohort member starts");
    // Wait for its first progress line (it is running, handlers installed), then SIGTERM it.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(
        line.starts_with("view id=1 "),
        "the view comes first: {line}"
    );
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.starts_with("progress "), "{line}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            panic!("the member ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(130), "stopped by a signal");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(
        rest.contains("summary ") && rest.contains("complete=false"),
        "{rest}"
    );
    let traces = read_trace_dir(&dir).expect("the trace was flushed");
    assert_eq!(traces.len(), 1);
    let sends = traces[0]
        .events
        .iter()
        .filter(|e| matches!(e, cohort::trace::TraceEvent::Send { .. }))
        .count();
    assert_eq!(sends, 10, "all ten sends are in the trace");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------------------------------------------------
// Membership: kill -9, a join with state transfer, a graceful leave.

/// A member process whose stdout lines are collected as they come.
struct Proc {
    child: Child,
    lines: std::sync::Arc<Mutex<Vec<String>>>,
    status: Option<std::process::ExitStatus>,
}

impl Proc {
    fn spawn(group: &str, bind: SocketAddr, dir: &std::path::Path, args: &[String]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["member", "--group", group, "--bind", &bind.to_string()])
            .args(["--size", "32", "--progress-ms", "20"])
            .args(["--heartbeat-ms", "20", "--suspect-ms", "1000"])
            .args(["--duration", &MEMBER_DURATION_S.to_string()])
            .args(args)
            .arg("--trace")
            .arg(dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cohort member starts");
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok)
            {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Proc {
            child,
            lines,
            status: None,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last progress line's `delivered=` count.
    fn delivered(&self) -> u64 {
        self.lines()
            .iter()
            .rev()
            .find_map(|l| {
                l.strip_prefix("progress ")?
                    .split(' ')
                    .find_map(|f| f.strip_prefix("delivered=")?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn summary(&self) -> String {
        self.lines()
            .iter()
            .rfind(|l| l.starts_with("summary "))
            .cloned()
            .unwrap_or_else(|| "(no summary)".into())
    }

    fn poll(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait");
        }
        self.status.is_some()
    }
}

/// Waits until `cond` holds, panicking (after killing our children) past the bound.
fn wait_for(procs: &mut [Proc], what: &str, mut cond: impl FnMut(&mut [Proc]) -> bool) {
    let start = Instant::now();
    while !cond(procs) {
        if start.elapsed() > RUN_TIMEOUT {
            for p in procs.iter_mut() {
                let _ = p.child.kill(); // our own children, by PID
                let _ = p.child.wait();
            }
            panic!("still waiting for {what} after {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn addrs(n: usize) -> Vec<SocketAddr> {
    free_ports(n)
        .into_iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect()
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Checks the traces (survivor completeness; `killed` members' traces may be cut short)
/// and returns the report.
fn check_dir(group: &str, dir: &std::path::Path, killed: &[String]) -> cohort::checker::Report {
    let traces = read_trace_dir(dir).expect("traces readable");
    let report = check(
        &traces,
        &CheckConfig {
            require_survivor_complete: true,
            crashed: killed.to_vec(),
            ..Default::default()
        },
    );
    eprintln!(
        "{group}: {}",
        report.to_string().lines().next().unwrap_or("")
    );
    assert!(report.is_ok(), "{group}: {report}");
    report
}

/// Per receiving member id: how many messages it delivered from `sender`.
fn delivered_from(dir: &std::path::Path, sender: &str) -> Vec<(String, u64)> {
    let traces = read_trace_dir(dir).expect("traces readable");
    traces
        .iter()
        .filter(|t| !t.events.is_empty()) // a killed member's file may hold nothing
        .map(|t| {
            let n = t
                .events
                .iter()
                .filter(|e| matches!(e, cohort::trace::TraceEvent::Deliver { msg, .. } if msg.rsplit_once('/').is_some_and(|(s, _)| s == sender)))
                .count() as u64;
            let node = t.events.first().map_or("", |e| e.node()).to_owned();
            (node, n)
        })
        .collect()
}

fn summary_field(summary: &str, key: &str) -> u64 {
    summary
        .split(' ')
        .find_map(|f| f.strip_prefix(&format!("{key}="))?.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {summary}"))
}

/// Kills member `victim` of 4 (by its PID) once it has delivered a few hundred messages;
/// the survivors must exclude it and complete: every survivor's messages delivered at every
/// survivor, the traces clean.
fn kill_dash_nine(name: &str, victim: usize, order: &str) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (group, dir) = fresh_run(name);
    let a = addrs(4);
    let args = strings(&[
        "--members",
        &list(&a),
        "--order",
        order,
        "--count",
        "3000",
        "--rate",
        "2000",
    ]);
    let mut procs: Vec<Proc> = a
        .iter()
        .map(|&m| Proc::spawn(&group, m, &dir, &args))
        .collect();
    wait_for(&mut procs, "the victim to deliver 1000", |p| {
        p[victim].delivered() >= 1000
    });
    let killed_at = Instant::now();
    procs[victim].child.kill().expect("kill -9 our own child");
    let _ = procs[victim].child.wait();
    let survivors: Vec<usize> = (0..4).filter(|&i| i != victim).collect();
    let victim_id = a[victim].to_string();
    wait_for(&mut procs, "a view without the victim", |p| {
        survivors.iter().all(|&i| {
            p[i].lines()
                .iter()
                .any(|l| l.starts_with("view id=") && !l.contains(&victim_id))
        })
    });
    eprintln!(
        "{group}: kill -9 of member {victim} → view without it at every survivor in {:?} (reported, not asserted)",
        killed_at.elapsed()
    );
    wait_for(&mut procs, "the survivors to exit", |p| {
        survivors.iter().all(|&i| p[i].poll())
    });
    for &i in &survivors {
        let s = procs[i].summary();
        eprintln!("{group}: {s}");
        assert!(procs[i].status.unwrap().success(), "{group}: {s}");
        assert!(s.contains(" complete=true "), "{group}: {s}");
        assert_eq!(summary_field(&s, "sent"), 3000, "{group}: {s}");
    }
    check_dir(&group, &dir, std::slice::from_ref(&victim_id));
    // No message from a surviving sender lost: each survivor's 3000 at each survivor.
    for &s in &survivors {
        for (at, n) in delivered_from(&dir, &a[s].to_string()) {
            if at != victim_id {
                assert_eq!(n, 3000, "{group}: {at} delivered {n} of {}'s 3000", a[s]);
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kill_dash_nine_of_a_member_mid_burst_loses_no_survivors_message() {
    kill_dash_nine("kill", 2, "causal,total");
}

#[test]
fn kill_dash_nine_of_the_leader_and_sequencer_mid_burst_loses_no_survivors_message() {
    kill_dash_nine("killlead", 0, "total");
}

#[test]
fn a_member_joins_mid_burst_with_state_transfer_and_everyone_completes() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (group, dir) = fresh_run("join");
    let a = addrs(4);
    let founders = &a[..3];
    let common = [
        "--order",
        "fifo,causal,total",
        "--count",
        "2000",
        "--rate",
        "2000",
    ];
    let mut founder_args = strings(&["--members", &list(founders), "--expect-members", "4"]);
    founder_args.extend(strings(&common));
    let mut procs: Vec<Proc> = founders
        .iter()
        .map(|&m| Proc::spawn(&group, m, &dir, &founder_args))
        .collect();
    wait_for(&mut procs, "the founders to deliver 600", |p| {
        p.iter().all(|p| p.delivered() >= 600)
    });
    let mut joiner_args = strings(&["--seeds", &list(&founders[1..])]);
    joiner_args.extend(strings(&common));
    procs.push(Proc::spawn(&group, a[3], &dir, &joiner_args));
    wait_for(&mut procs, "every member to exit", |p| {
        p.iter_mut().all(|p| p.poll())
    });
    for p in &procs {
        let s = p.summary();
        eprintln!("{group}: {s}");
        assert!(p.status.unwrap().success(), "{group}: {s}");
        assert!(s.contains(" complete=true "), "{group}: {s}");
    }
    let joiner = procs[3].summary();
    assert!(
        summary_field(&joiner, "restored") > 0,
        "the joiner restored the group's state: {joiner}"
    );
    assert!(
        procs[3].lines().iter().any(|l| l.starts_with("view id=2 ")),
        "the joiner's first view is the second: {:?}",
        procs[3].lines().iter().find(|l| l.starts_with("view"))
    );
    let report = check_dir(&group, &dir, &[]);
    assert_eq!(report.sends, 4 * 2000, "{group}: every send traced");
    // Restored plus delivered covers every message of every member at the joiner.
    assert_eq!(
        summary_field(&joiner, "restored") + summary_field(&joiner, "delivered"),
        4 * 2000,
        "{group}: {joiner}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_member_leaving_gracefully_has_its_messages_delivered_and_the_rest_go_on() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (group, dir) = fresh_run("leave");
    let a = addrs(3);
    let args = strings(&[
        "--members",
        &list(&a),
        "--order",
        "causal",
        "--count",
        "3000",
        "--rate",
        "2000",
    ]);
    let mut procs: Vec<Proc> = a
        .iter()
        .map(|&m| Proc::spawn(&group, m, &dir, &args))
        .collect();
    wait_for(&mut procs, "the leaver to deliver 1000", |p| {
        p[1].delivered() >= 1000
    });
    // SIGTERM: the member stops sending and leaves gracefully.
    let status = Command::new("kill")
        .args(["-TERM", &procs[1].child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    wait_for(&mut procs, "every member to exit", |p| {
        p.iter_mut().all(|p| p.poll())
    });
    let leaver = procs[1].summary();
    let sent = summary_field(&leaver, "sent");
    assert!(sent > 0 && sent < 3000, "left mid-run: {leaver}");
    for i in [0, 2] {
        let s = procs[i].summary();
        eprintln!("{group}: {s}");
        assert!(procs[i].status.unwrap().success(), "{group}: {s}");
        assert!(s.contains(" complete=true "), "{group}: {s}");
    }
    check_dir(&group, &dir, &[]);
    let leaver_id = a[1].to_string();
    for (at, n) in delivered_from(&dir, &leaver_id) {
        assert_eq!(
            n, sent,
            "{group}: {at} delivered {n} of the leaver's {sent}"
        );
    }
    let blocked = procs
        .iter()
        .any(|p| p.lines().iter().any(|l| l.starts_with("blocked")));
    assert!(!blocked, "{group}: a leave blocks no one");
    std::fs::remove_dir_all(&dir).unwrap();
}

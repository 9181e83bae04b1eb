//! Multi-process tests on loopback: real `cohort member` processes (3 and 5), unicast fan-out
//! and IP multicast on 127.0.0.1 (TTL 1), each order and safe delivery; every trace goes
//! through the checker with completeness required. Static views only (membership faults —
//! kill -9, joins, leaves — come with the membership issue).
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
    let group = format!("{name}-{}", std::process::id());
    let dir: PathBuf = std::env::temp_dir().join(format!("cohort-loopback-{group}"));
    let _ = std::fs::remove_dir_all(&dir);
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

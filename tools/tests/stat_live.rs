//! `cohort stat` reads live `cohort member` processes: three members on loopback publish
//! their counters in a directory of our own; while they run, `cohort stat --dir` lists every
//! member's file as live with non-zero sent and delivered counts for the group; after they
//! exit, the files are gone.
//!
//! Timing never decides the verdict: the stat is retried a bounded number of times until the
//! counters show traffic, and the members' own `--duration` only turns a hang into a failure.

use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MEMBERS: usize = 3;
/// Messages each member sends, at `RATE_PER_S`: about 2 s of traffic.
const COUNT: u64 = 400;
const RATE_PER_S: u64 = 200;
/// Upper bound on each member's run, in seconds.
const MEMBER_DURATION_S: u64 = 30;
/// Most `cohort stat` runs while waiting for the counters to show traffic.
const STAT_ATTEMPTS_MAX: usize = 40;
/// Upper bound on waiting for the members to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(45);

fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

fn counters_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "counters"))
                .collect()
        })
        .unwrap_or_default()
}

/// The last sample of `cohort stat --dir DIR --count 2 --json`.
fn stat_last_sample(dir: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args([
            "stat",
            "--count",
            "2",
            "--interval-ms",
            "100",
            "--json",
            "--dir",
        ])
        .arg(dir)
        .output()
        .expect("cohort stat runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cohort stat failed: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a sample line");
    serde_json::from_str(last).expect("a JSON sample")
}

/// Per file: (owner, messages_sent, messages_delivered) of group `group`.
fn group_counts(sample: &Value, group: &str) -> Vec<(String, u64, u64)> {
    let prefix = format!("group {group}: ");
    sample["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            let value = |metric: &str| {
                f["counters"]
                    .as_array()
                    .expect("counters")
                    .iter()
                    .find(|c| c["label"].as_str() == Some(&format!("{prefix}{metric}")))
                    .and_then(|c| c["value"].as_u64())
                    .unwrap_or(0)
            };
            (
                f["owner"].as_str().unwrap_or("?").to_owned(),
                value("messages_sent"),
                value("messages_delivered"),
            )
        })
        .collect()
}

fn kill_all(children: &mut [Child]) {
    for c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn stat_shows_live_members_counting_and_their_files_go_at_exit() {
    let group = format!("statlive-{}", std::process::id());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&group);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let addrs: Vec<SocketAddr> = free_ports(MEMBERS)
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let list = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut children: Vec<Child> = addrs
        .iter()
        .map(|a| {
            Command::new(env!("CARGO_BIN_EXE_cohort"))
                .args(["member", "--group", &group, "--members", &list])
                .args(["--bind", &a.to_string()])
                .args(["--count", &COUNT.to_string()])
                .args(["--rate", &RATE_PER_S.to_string()])
                .args(["--duration", &MEMBER_DURATION_S.to_string()])
                .arg("--counters-dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cohort member starts")
        })
        .collect();

    let mut seen = None;
    let mut last = Vec::new();
    for _ in 0..STAT_ATTEMPTS_MAX {
        let counts = group_counts(&stat_last_sample(&dir), &group);
        let all_counting = counts.len() == MEMBERS
            && counts
                .iter()
                .all(|(owner, sent, delivered)| owner == "live" && *sent > 0 && *delivered > 0);
        if all_counting {
            seen = Some(counts);
            break;
        }
        last = counts;
    }
    let Some(counts) = seen else {
        kill_all(&mut children);
        panic!("no stat showed {MEMBERS} live members sending and delivering; last: {last:?}");
    };
    // Every member delivers everyone's messages, its own included.
    for (_, sent, delivered) in &counts {
        assert!(sent <= &COUNT, "{counts:?}");
        assert!(delivered <= &(COUNT * MEMBERS as u64), "{counts:?}");
    }

    let deadline = Instant::now() + EXIT_TIMEOUT;
    for c in &mut children {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "a member failed: {status:?}");
                break;
            }
            if Instant::now() > deadline {
                kill_all(&mut children);
                panic!("members did not exit within {EXIT_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(
        counters_files(&dir),
        Vec::<PathBuf>::new(),
        "counters files left after the members exited"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! The `netns` scenario as a user runs it: a tiny run of `cohort-bench netns` (root only; a
//! loud `SKIPPED:` line otherwise) whose JSON lines must carry sane figures and counts that
//! agree with the members' own summaries, with random loss really applied, and after which no
//! namespace of the run is left. Nothing here judges speed.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use cohort_bench::netns::{owner_pid, unavailable, Summary};
use cohort_bench::output::read_json_lines;

/// Messages per point of the tiny run.
const MESSAGES: u64 = 3_000;
/// Hosts of the scenario.
const HOSTS: u64 = 3;

fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
}

/// The `cohort` binary next to cohort-bench (cargo builds it for the workspace's tests).
fn cohort_binary() -> Option<PathBuf> {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_cohort-bench"));
    let p = bench.parent()?.join("cohort");
    p.is_file().then_some(p)
}

#[test]
fn tiny_netns_run_delivers_every_message_and_reports_sane_ratios() {
    if let Some(why) = unavailable() {
        skip(&why);
        return;
    }
    let Some(cohort) = cohort_binary() else {
        skip("netns test needs the `cohort` binary next to cohort-bench: build it with `cargo build -p cohort-tools` (same profile as the tests)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("netns.jsonl");
    let child = Command::new(env!("CARGO_BIN_EXE_cohort-bench"))
        .args([
            "netns",
            "--senders",
            "one,all",
            "--orders",
            "fifo",
            "--loss",
            "0,20",
            "--messages",
            &MESSAGES.to_string(),
            "--seconds",
            "20",
            "--ceiling-seconds",
            "0.3",
            "--cohort",
            cohort.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running cohort-bench");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("## netns") && stdout.contains("under 1 % loss"),
        "{stdout}"
    );

    // Nothing of the run is left behind.
    let names = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let names = String::from_utf8_lossy(&names.stdout);
    for name in names.lines().filter_map(|l| l.split_whitespace().next()) {
        assert_ne!(owner_pid(name), Some(pid), "namespace {name} left behind");
    }

    let records = read_json_lines(&json).unwrap();
    assert_eq!(records.len(), 4, "2 sender counts x 2 loss rates: {stdout}");
    for r in &records {
        let what = serde_json::to_string(r).unwrap();
        let num = |k: &str| r.extra.get(k).and_then(|v| v.as_u64()).unwrap();
        assert_eq!(r.scenario, "netns", "{what}");
        assert_eq!(r.members as u64, HOSTS, "{what}");
        assert_eq!(r.order, "fifo");
        assert!(r.senders == 1 || r.senders == 3, "{what}");
        assert!(
            r.ceiling_msgs_per_s > 0.0 && r.msgs_per_s > 0.0 && r.ratio > 0.0,
            "{what}"
        );
        assert!(
            (r.ratio - r.msgs_per_s / r.ceiling_msgs_per_s).abs() < 1e-9,
            "{what}"
        );
        assert_eq!(num("msgs_sent"), MESSAGES, "{what}");
        assert_eq!(num("expected_total"), MESSAGES * HOSTS, "{what}");
        assert_eq!(num("delivered_total"), MESSAGES * HOSTS, "{what}");
        assert_eq!(r.extra["complete"], true, "{what}");
        // The counts are the members' own: every member delivered every message.
        let summaries: Vec<Summary> = r.extra["summaries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Summary::parse(s.as_str().unwrap()).expect("a member summary"))
            .collect();
        assert_eq!(summaries.len() as u64, HOSTS, "{what}");
        for s in &summaries {
            assert_eq!(s.delivered, MESSAGES, "{what}");
            assert_eq!(s.errors, 0, "{what}");
        }
        let sent: Vec<u64> = summaries.iter().map(|s| s.sent).collect();
        if r.senders == 1 {
            assert_eq!(sent, vec![MESSAGES, 0, 0], "{what}");
        } else {
            assert_eq!(sent, vec![MESSAGES / HOSTS; 3], "{what}");
        }
        match num("loss_percent") {
            0 => assert_eq!(num("loss_drops_datagrams"), 0, "{what}"),
            20 => {
                // The loss rule really dropped datagrams, and the protocol recovered them.
                assert!(num("loss_drops_datagrams") > 0, "{what}");
                let ratio = r.extra["loss_ratio"].as_f64().unwrap();
                assert!(ratio > 0.0, "{what}");
            }
            other => panic!("unexpected loss {other}: {what}"),
        }
    }
}

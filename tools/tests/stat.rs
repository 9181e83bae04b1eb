//! `cohort stat` reads another process's counters file from outside: values, rates, owner
//! liveness (live, stale, dead after a kill), and clear failures (exit 2) on files that are
//! not counters files.
//!
//! The owner process is this test binary re-executed with `CHILD_ENV` set: it runs only the
//! `owner_role_when_spawned_by_a_test` test, which creates the counters, prints
//! `CHILD_READY`, and waits for its stdin to close (or to be killed).

use cohort::stats::{GroupDrop, GroupStats};
use cohort_transport::counters::{
    header_offsets, CountersConfig, CountersFile, Kind, Unit, STALE_AFTER_MS_DEFAULT,
};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

const CHILD_ENV: &str = "COHORT_STAT_TEST_OWNER_FILE";
const CHILD_READY: &str = "COHORT-STAT-TEST-OWNER-READY";
/// Large enough that a slow (loaded) machine never turns a live owner stale in these tests.
const STALE_AFTER_MS_NEVER: &str = "86400000";

/// The owner process's work; does nothing in a normal test run.
#[test]
fn owner_role_when_spawned_by_a_test() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let file = CountersFile::create(Path::new(&path), &CountersConfig { capacity_slots: 64 })
        .expect("child: create counters file");
    let alpha = file
        .allocate("child: alpha", Unit::Count, Kind::Monotonic, 1)
        .unwrap();
    let bytes = file
        .allocate("child: beta", Unit::Bytes, Kind::Monotonic, 2)
        .unwrap();
    let depth = file
        .allocate("child: depth", Unit::Count, Kind::Gauge, 3)
        .unwrap();
    let freed = file
        .allocate("child: freed", Unit::Count, Kind::Monotonic, 4)
        .unwrap();
    alpha.add(3);
    alpha.increment();
    alpha.add_single_writer(3);
    bytes.add(1500);
    depth.set(42);
    freed.add(1);
    drop(freed);
    let group = GroupStats::register(&file, "prices").unwrap();
    for _ in 0..3 {
        group.on_sent(100);
    }
    group.on_drop(GroupDrop::Duplicate);
    file.heartbeat();
    println!("{CHILD_READY}");
    // Owned until the parent closes stdin or kills us.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop((alpha, bytes, depth, group));
}

/// Starts the owner process and waits until its counters are in place.
fn start_owner(path: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "owner_role_when_spawned_by_a_test",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    // libtest prints `test NAME ... ` before the test's own output, on the same line.
    let ready = lines.any(|line| line.trim_end().ends_with(CHILD_READY));
    assert!(ready, "owner process ended before its counters were ready");
    // Keep draining, so the child's test harness can print its summary and exit cleanly.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn stat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("stat")
        .args(args)
        .output()
        .unwrap()
}

fn json_samples(out: &Output) -> Vec<Value> {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn counter<'a>(file: &'a Value, label: &str) -> &'a Value {
    file["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == label)
        .unwrap_or_else(|| panic!("no counter {label:?} in {file}"))
}

#[test]
fn stat_reads_a_live_owners_counters_then_reports_it_dead_after_kill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cohort-child.counters");
    let mut child = start_owner(&path);
    let path_arg = path.to_str().unwrap();

    let out = stat(&[
        "--file",
        path_arg,
        "--count",
        "2",
        "--interval-ms",
        "10",
        "--json",
        "--stale-after-ms",
        STALE_AFTER_MS_NEVER,
    ]);
    assert!(out.status.success(), "{out:?}");
    let samples = json_samples(&out);
    assert_eq!(samples.len(), 2, "--count 2 gives two samples");
    for (i, sample) in samples.iter().enumerate() {
        assert_eq!(sample["sample"], i as u64);
        assert_eq!(sample["errors"].as_array().unwrap().len(), 0);
        let files = sample["files"].as_array().unwrap();
        assert_eq!(files.len(), 1);
        let f = &files[0];
        assert_eq!(f["pid"], child.id());
        assert_eq!(f["owner"], "live");
        assert_eq!(f["corrupt_slots"], 0);
        assert_eq!(counter(f, "child: alpha")["value"], 7);
        assert_eq!(counter(f, "child: alpha")["unit"], "count");
        assert_eq!(counter(f, "child: beta")["value"], 1500);
        assert_eq!(counter(f, "child: beta")["unit"], "bytes");
        assert_eq!(counter(f, "child: depth")["value"], 42);
        assert_eq!(counter(f, "child: depth")["kind"], "gauge");
        assert_eq!(counter(f, "group prices: messages_sent")["value"], 3);
        assert_eq!(counter(f, "group prices: bytes_sent")["value"], 300);
        assert_eq!(counter(f, "group prices: drops.duplicate")["value"], 1);
        assert_eq!(counter(f, "group prices: drops.wrong_view")["value"], 0);
        let labels: Vec<&str> = f["counters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["label"].as_str().unwrap())
            .collect();
        assert!(
            !labels.contains(&"child: freed"),
            "a freed counter is not shown"
        );
        assert_eq!(labels.len(), 3 + cohort::stats::GROUP_SLOTS as usize);
    }
    // Rates: none in the first sample; the values did not move, so zero in the second; a
    // gauge never has one.
    assert_eq!(
        counter(&samples[0]["files"][0], "child: alpha")["rate_per_sec"],
        Value::Null
    );
    assert_eq!(
        counter(&samples[1]["files"][0], "child: alpha")["rate_per_sec"],
        0.0
    );
    assert_eq!(
        counter(&samples[1]["files"][0], "child: depth")["rate_per_sec"],
        Value::Null
    );

    // Kill the owner we started (by its pid) and reap it: the file stays, marked dead, with
    // the last values.
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    let out = stat(&["--file", path_arg, "--count", "1", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let samples = json_samples(&out);
    let f = &samples[0]["files"][0];
    assert_eq!(f["pid"], pid);
    assert_eq!(f["owner"], "dead");
    assert_eq!(counter(f, "child: alpha")["value"], 7);

    let out = stat(&["--file", path_arg, "--count", "1"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("pid {pid}  DEAD")), "{text}");
    assert!(text.contains("child: alpha"), "{text}");
}

#[test]
fn owner_that_closes_cleanly_removes_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cohort-clean.counters");
    let mut child = start_owner(&path);
    assert!(path.exists());
    drop(child.stdin.take()); // EOF: the owner drops its counters file and exits
    assert!(child.wait().unwrap().success());
    assert!(!path.exists());
    let out = stat(&["--file", path.to_str().unwrap(), "--count", "1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dir_mode_lists_every_counters_file_and_ignores_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = CountersConfig { capacity_slots: 8 };
    let a = CountersFile::create(&dir.path().join("cohort-1-a.counters"), &config).unwrap();
    let b = CountersFile::create(&dir.path().join("cohort-2-b.counters"), &config).unwrap();
    let ca = a
        .allocate("a: one", Unit::Count, Kind::Monotonic, 0)
        .unwrap();
    let cb = b
        .allocate("b: two", Unit::Count, Kind::Monotonic, 0)
        .unwrap();
    ca.add(1);
    cb.add(2);
    std::fs::write(dir.path().join("notes.txt"), "not a counters file").unwrap();

    let out = stat(&[
        "--dir",
        dir.path().to_str().unwrap(),
        "--count",
        "1",
        "--json",
        "--stale-after-ms",
        STALE_AFTER_MS_NEVER,
    ]);
    assert!(out.status.success(), "{out:?}");
    let samples = json_samples(&out);
    let files = samples[0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(counter(&files[0], "a: one")["value"], 1);
    assert_eq!(counter(&files[1], "b: two")["value"], 2);
    for f in files {
        assert_eq!(f["pid"], std::process::id());
        assert_eq!(f["owner"], "live");
    }
}

#[test]
fn empty_dir_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = stat(&["--dir", dir.path().to_str().unwrap(), "--count", "1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("no counters files"));
}

#[test]
fn owner_with_an_old_heartbeat_is_reported_stale() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.counters");
    let owner = CountersFile::create(&live, &CountersConfig { capacity_slots: 4 }).unwrap();
    let c = owner
        .allocate("x: count", Unit::Count, Kind::Monotonic, 0)
        .unwrap();
    c.add(5);
    // Same owner (this running process), heartbeat forged to 1970.
    let mut bytes = std::fs::read(&live).unwrap();
    let at = header_offsets::HEARTBEAT_UNIX_MS;
    bytes[at..at + 8].copy_from_slice(&1u64.to_ne_bytes());
    let forged = dir.path().join("forged.counters");
    std::fs::write(&forged, &bytes).unwrap();

    let out = stat(&["--file", forged.to_str().unwrap(), "--count", "1", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let f = &json_samples(&out)[0]["files"][0];
    assert_eq!(f["owner"], "stale");
    assert!(f["heartbeat_age_ms"].as_u64().unwrap() > STALE_AFTER_MS_DEFAULT);
    assert_eq!(counter(f, "x: count")["value"], 5);
}

#[test]
fn unreadable_files_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.counters");
    std::fs::write(&garbage, vec![0xa5u8; 4096]).unwrap();
    let short = dir.path().join("short.counters");
    std::fs::write(&short, b"COHORT").unwrap();
    let owner = CountersFile::create(
        &dir.path().join("valid.counters"),
        &CountersConfig { capacity_slots: 4 },
    )
    .unwrap();
    let full = std::fs::read(owner.path().unwrap()).unwrap();
    let truncated = dir.path().join("truncated.counters");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();

    for (path, message) in [
        (&garbage, "is not a cohort counters file"),
        (&short, "is truncated"),
        (&truncated, "is truncated"),
        (&dir.path().join("absent.counters"), "No such file"),
    ] {
        let out = stat(&["--file", path.to_str().unwrap(), "--count", "3"]);
        assert_eq!(out.status.code(), Some(2), "{path:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(message), "{path:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    // In a directory, the readable file is still printed and the bad ones are listed.
    let out = stat(&[
        "--dir",
        dir.path().to_str().unwrap(),
        "--count",
        "1",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let sample = &json_samples(&out)[0];
    assert_eq!(sample["files"].as_array().unwrap().len(), 1);
    assert_eq!(sample["errors"].as_array().unwrap().len(), 3);

    let out = stat(&[
        "--dir",
        dir.path().join("nope").to_str().unwrap(),
        "--count",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("cannot read directory"));
}

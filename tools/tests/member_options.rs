//! `cohort member` options, on loopback (no root): node settings from a TOML file
//! (`--config`) with flags overriding it, clear errors (exit 2, never a panic) for bad files and
//! bad `--faults` specs, the seeded fault layer under real members (`--faults`), and the hidden
//! `--break-protocol skip-retransmit`, which the checker must catch.
//!
//! Timing never decides a verdict: every run is bounded by its `--duration` (the bound only
//! turns a hang into a failure).

use cohort::checker::{check, CheckConfig, Property, Report};
use cohort::trace::read_trace_dir;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// `--duration` of the runs that complete (they take well under a second).
const RUN_DURATION_SECS: &str = "20";
/// `--duration` of the broken-protocol run, which cannot complete.
const BROKEN_RUN_DURATION_SECS: &str = "2";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("member-options-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn member() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cohort"));
    c.arg("member").env("RUST_LOG", "error");
    c
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn summary(stdout: &str) -> &str {
    stdout
        .lines()
        .rfind(|l| l.starts_with("summary "))
        .unwrap_or("(no summary)")
}

/// Runs `cohort member` with `args` and expects exit status 2 and `says` on stderr.
fn refused(args: &[&str], says: &str) {
    let out = member().args(args).output().expect("cohort runs");
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} must be refused: {stdout}{stderr}"
    );
    assert!(stderr.contains(says), "{args:?}: {stderr:?} lacks {says:?}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

#[test]
fn a_config_file_supplies_bind_driver_window_and_trace_directory() {
    let dir = scratch("file");
    let port = free_ports(1)[0];
    let trace = dir.join("trace");
    let file = dir.join("node.toml");
    std::fs::write(
        &file,
        format!(
            "bind = \"127.0.0.1:{port}\"\ndriver = \"mmsg\"\nwindow_messages_max = 8\n\
             gso = false\ngro = false\ntrace_dir = \"{}\"\n",
            trace.display()
        ),
    )
    .unwrap();
    let out = member()
        .arg("--config")
        .arg(&file)
        .args(["--group", "cfg", "--members", &format!("127.0.0.1:{port}")])
        .args(["--count", "100", "--duration", RUN_DURATION_SECS])
        // One message per record (two do not fit one bundle): the window counts records.
        .args(["--size", "800"])
        .arg("--no-counters")
        .output()
        .expect("cohort runs");
    let (stdout, stderr) = text(&out);
    let s = summary(&stdout);
    assert!(out.status.success(), "{s}\n{stderr}");
    assert!(s.contains(&format!("member=127.0.0.1:{port} ")), "{s}");
    assert!(s.contains(" driver=sendmmsg "), "{s}");
    assert!(s.contains(" complete=true "), "{s}");
    assert!(
        s.ends_with(" gso=false gro=false"),
        "the file's offloads: {s}"
    );
    // 100 records through a window of 8: the window was full at times.
    assert!(!s.contains(" window_stalls=0"), "{s}");
    let traces = read_trace_dir(&trace).expect("the file's trace_dir holds the trace");
    assert_eq!(traces.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flags_override_the_config_file() {
    let dir = scratch("override");
    let ports = free_ports(2);
    let (file_trace, flag_trace) = (dir.join("file-trace"), dir.join("flag-trace"));
    let file = dir.join("node.toml");
    // The file asks for io_uring, another address and another trace directory; the flags win.
    std::fs::write(
        &file,
        format!(
            "bind = \"127.0.0.1:{}\"\ndriver = \"uring\"\ntrace_dir = \"{}\"\n",
            ports[0],
            file_trace.display()
        ),
    )
    .unwrap();
    let me = format!("127.0.0.1:{}", ports[1]);
    let out = member()
        .arg("--config")
        .arg(&file)
        .args([
            "--bind", &me, "--driver", "mmsg", "--window", "4", "--gro", "off",
        ])
        .arg("--trace")
        .arg(&flag_trace)
        .args(["--group", "override", "--members", &me])
        .args(["--count", "50", "--duration", RUN_DURATION_SECS])
        .args(["--size", "800"])
        .arg("--no-counters")
        .output()
        .expect("cohort runs");
    let (stdout, stderr) = text(&out);
    let s = summary(&stdout);
    assert!(out.status.success(), "{s}\n{stderr}");
    assert!(s.contains(&format!("member={me} ")), "{s}");
    assert!(s.contains(" driver=sendmmsg "), "{s}");
    assert!(!s.contains(" window_stalls=0"), "{s}");
    assert!(s.ends_with(" gro=false"), "--gro off: {s}");
    assert_eq!(read_trace_dir(&flag_trace).expect("trace").len(), 1);
    assert!(!file_trace.exists(), "the file's trace_dir was overridden");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_config_files_are_refused_with_the_file_and_the_problem_named() {
    let dir = scratch("bad");
    let write = |name: &str, body: &str| -> String {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let common = ["--group", "g", "--members", "127.0.0.1:9"];
    refused(
        &[&["--bind", "127.0.0.1:9", "--gso", "maybe"], &common[..]].concat(),
        "--gso",
    );
    let typo = write("typo.toml", "bind = \"127.0.0.1:9\"\nwindow = 8\n");
    refused(
        &[&["--config", &typo], &common[..]].concat(),
        "unknown field `window`",
    );
    refused(&[&["--config", &typo], &common[..]].concat(), &typo);
    let no_bind = write("nobind.toml", "driver = \"mmsg\"\n");
    refused(
        &[&["--config", &no_bind], &common[..]].concat(),
        "missing field `bind`",
    );
    let not_toml = write("garbage.toml", "bind = [\n");
    refused(&[&["--config", &not_toml], &common[..]].concat(), &not_toml);
    let bad_value = write("driver.toml", "bind = \"127.0.0.1:9\"\ndriver = \"dpdk\"\n");
    refused(
        &[&["--config", &bad_value], &common[..]].concat(),
        "unknown variant `dpdk`",
    );
    let zero_window = write(
        "zero.toml",
        "bind = \"127.0.0.1:9\"\nwindow_messages_max = 0\n",
    );
    refused(
        &[&["--config", &zero_window], &common[..]].concat(),
        "window of 0 messages",
    );
    let missing = dir.join("absent.toml");
    let missing = missing.to_str().unwrap();
    refused(
        &[&["--config", missing], &common[..]].concat(),
        &format!("reading {missing}"),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_config_the_bind_address_is_required() {
    refused(&["--group", "g", "--members", "127.0.0.1:9"], "--bind");
}

/// A one-member group on an address nothing listens on (the flags the refusal tests add to).
const ALONE: [&str; 6] = [
    "--group",
    "g",
    "--bind",
    "127.0.0.1:9",
    "--members",
    "127.0.0.1:9",
];

#[test]
fn an_interface_without_multicast_is_refused() {
    refused(
        &[&ALONE[..], &["--iface", "127.0.0.1"]].concat(),
        "--iface only applies to multicast",
    );
}

#[test]
fn bad_fault_specs_are_refused_with_the_problem_named() {
    let base = [&ALONE[..], &["--faults"]].concat();
    for (spec, says) in [
        ("loss=2", "a probability is a number from 0 to 1"),
        ("jitter=5", "unknown fault \"jitter\""),
        ("delay_us=99999999999", "whole number up to"),
        ("loss", "is not KEY=VALUE"),
    ] {
        refused(&[&base[..], &[spec]].concat(), says);
    }
}

/// Runs `n` members on loopback with `extra` flags each (`{i}` in a flag becomes the member's
/// index) and returns the checker's report (completeness required) and the exit codes.
fn run_group(name: &str, n: usize, extra: &[&str], duration: &str) -> (Report, Vec<Option<i32>>) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch(name);
    let ports = free_ports(n);
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let list = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let children: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let extra: Vec<String> = extra
                .iter()
                .map(|e| e.replace("{i}", &(i + 1).to_string()))
                .collect();
            member()
                .args([
                    "--group",
                    name,
                    "--bind",
                    &a.to_string(),
                    "--members",
                    &list,
                ])
                .args(["--order", "fifo,causal,total,gbcast", "--count", "500"])
                .args(if extra.iter().any(|e| e == "--size") {
                    &[][..] // the caller's size
                } else {
                    &["--size", "600"][..]
                })
                .args(["--duration", duration, "--no-counters"])
                .arg("--trace")
                .arg(&dir)
                .args(&extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("cohort member starts")
        })
        .collect();
    // Each member stops by itself within its --duration plus its bounded shutdown.
    let mut codes = Vec::new();
    for c in children {
        let out = c.wait_with_output().expect("member exits");
        eprintln!("{name}: {}", summary(&String::from_utf8_lossy(&out.stdout)));
        codes.push(out.status.code());
    }
    let traces = read_trace_dir(&dir).expect("traces readable");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(traces.len(), n, "{name}: one trace per member");
    let report = check(
        &traces,
        &CheckConfig {
            require_complete: true,
            ..Default::default()
        },
    );
    eprintln!("{name}: {report}");
    (report, codes)
}

#[test]
fn members_with_injected_loss_delay_reordering_and_duplication_deliver_everything() {
    let spec = "loss=0.1,dup=0.05,reorder=0.1,delay_us=200,jitter_us=300,seed={i}";
    let (report, codes) = run_group("faults", 3, &["--faults", spec], RUN_DURATION_SECS);
    assert!(codes.iter().all(|c| *c == Some(0)), "{codes:?}");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.deliveries, 3 * 3 * 500, "no message lost");
}

#[test]
fn members_with_jumbo_datagrams_deliver_everything_and_a_size_out_of_range_is_refused() {
    // 3000 B messages: more than a 1472 B datagram carries, so they exist only in 8972 B ones.
    let (report, codes) = run_group(
        "jumbo",
        3,
        &["--datagram-bytes", "8972", "--size", "3000"],
        RUN_DURATION_SECS,
    );
    assert!(codes.iter().all(|c| *c == Some(0)), "{codes:?}");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.deliveries, 3 * 3 * 500, "no message lost");
    refused(
        &[&ALONE[..], &["--datagram-bytes", "100"]].concat(),
        "datagrams of 100 B: use 1472..=65507",
    );
}

/// The hidden flag breaks the protocol as it says: under injected loss (20 % of every
/// member's datagrams, seeded; hundreds of datagrams, so some data is certainly lost) nothing
/// is retransmitted, the members stop by themselves at --duration, incomplete, and the
/// checker reports the messages never delivered.
#[test]
fn members_that_skip_retransmission_under_loss_are_caught_by_the_checker() {
    let extra = [
        "--faults",
        "loss=0.2,seed={i}",
        "--break-protocol",
        "skip-retransmit",
    ];
    let (report, codes) = run_group("broken", 3, &extra, BROKEN_RUN_DURATION_SECS);
    assert!(codes.iter().all(|c| *c == Some(1)), "{codes:?}");
    assert!(
        report.violated().contains(&Property::Completeness),
        "{report}"
    );
}

#[test]
fn the_break_protocol_flag_is_hidden_from_help() {
    let out = member().arg("--help").output().expect("cohort runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--faults"), "{help}");
    assert!(help.contains("--config"), "{help}");
    assert!(!help.contains("break-protocol"), "{help}");
}

/// The injected delay is real: every datagram waits at least `delay_us` before it leaves, so
/// no message is delivered at the other member sooner than that after its send stamp, and
/// the summary's latency percentiles (measured from the stamp in the payload) are at least the
/// delay — a lower bound, which no scheduling can undercut.
#[test]
fn injected_delay_holds_every_datagram_at_least_that_long() {
    const DELAY_US: u64 = 50_000;
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ports = free_ports(2);
    let list = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let children: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            member()
                .args(["--group", "delay", "--bind", &format!("127.0.0.1:{p}")])
                .args(["--members", &list, "--count", "20", "--size", "32"])
                .args(["--duration", RUN_DURATION_SECS, "--no-counters"])
                .args(["--faults", &format!("delay_us={DELAY_US},seed={i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("cohort member starts")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("member exits");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let s = summary(&stdout);
        assert!(out.status.success(), "{s}");
        let latency_us = |key: &str| -> u64 {
            s.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {s}"))
        };
        assert!(latency_us("p50_us=") >= DELAY_US, "{s}");
        assert!(latency_us("max_us=") >= DELAY_US, "{s}");
    }
}

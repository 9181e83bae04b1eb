//! The simulator sweep CI runs (issue 4: at least 500 seeds covering 3–9 members, loss up to
//! 20 %, duplication and reordering, all four orders mixed): each band runs `cohort sim` over a
//! range of seeds and demands every run clean — properties 3–9 and completeness (a lost message
//! is a violation). A failing band prints the seed and the command that replays it.

use std::process::Command;

/// Runs one band and returns the number of runs its summary line reports.
fn sweep(args: &[&str]) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("sim")
        .args(args)
        .output()
        .expect("cohort sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cohort sim {args:?} failed ({})\n{stdout}\n{stderr}",
        out.status
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("sim: runs="))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    assert!(summary.ends_with("violations=0"), "{summary}");
    let field = |name: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {summary}"))
    };
    let (runs, messages, deliveries) = (field("runs="), field("messages="), field("deliveries="));
    // Every message of a fault-free membership reaches every member, so deliveries must be
    // at least three times the messages (groups have 3 to 9 members).
    assert!(deliveries >= 3 * messages, "{summary}");
    runs
}

const ORDERS: &str = "fifo,causal,total,safe";

#[test]
fn heavy_loss_with_duplication_and_reordering_loses_nothing() {
    let runs = sweep(&[
        "--seeds",
        "0..200",
        "--members",
        "3..9",
        "--loss",
        "0.2",
        "--dup",
        "0.05",
        "--reorder",
        "0.2",
        "--messages",
        "200",
        "--orders",
        ORDERS,
    ]);
    assert_eq!(runs, 200);
}

#[test]
fn bursty_loss_and_heavy_reordering_loses_nothing() {
    let runs = sweep(&[
        "--seeds",
        "200..400",
        "--members",
        "3..9",
        "--loss",
        "0.05",
        "--burst",
        "0.02",
        "--dup",
        "0.02",
        "--reorder",
        "0.5",
        "--messages",
        "200",
        "--orders",
        ORDERS,
    ]);
    assert_eq!(runs, 200);
}

#[test]
fn mild_faults_with_long_streams_lose_nothing() {
    let runs = sweep(&[
        "--seeds",
        "400..550",
        "--members",
        "3..9",
        "--loss",
        "0.01",
        "--dup",
        "0.01",
        "--reorder",
        "0.1",
        "--messages",
        "600",
        "--orders",
        ORDERS,
    ]);
    assert_eq!(runs, 150);
}

//! `cohort demo` end to end: it starts its members, ends with the checker's verdict and says
//! what it does not show yet. Small counts so it stays quick; the verdict is the checker's.

use std::process::Command;

#[test]
fn demo_runs_three_members_and_ends_with_a_clean_checker_verdict() {
    let dir = std::env::temp_dir().join(format!("cohort-demo-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["demo", "--count", "2000", "--duration", "30", "--trace"])
        .arg(&dir)
        .env("RUST_LOG", "error")
        .output()
        .expect("cohort demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "demo failed: {stdout}");
    assert!(stdout.contains("check-trace: members=3 sends=6000 deliveries=18000 violations=0"));
    assert!(stdout.contains("verdict: CLEAN"));
    assert!(
        stdout.contains("not shown yet") && stdout.contains("membership"),
        "the demo must say what needs membership"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_falls_back_to_unicast_fanout_on_request() {
    let dir = std::env::temp_dir().join(format!("cohort-demo-test-u-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["demo", "--no-multicast", "--count", "1000", "--trace"])
        .arg(&dir)
        .env("RUST_LOG", "error")
        .output()
        .expect("cohort demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {stdout}");
    assert!(stdout.contains("unicast fan-out"));
    assert!(stdout.contains("verdict: CLEAN"));
    std::fs::remove_dir_all(&dir).unwrap();
}

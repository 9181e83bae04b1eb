//! `cohort demo` end to end: it starts its members, kills one with kill -9, shows the view
//! change, lets a fourth join with state transfer and ends with the checker's verdict. Small
//! counts so it stays quick; the verdict is the checker's and the members' completion, never
//! a timing. The two runs go one at a time (a lock) so their processes share the CPUs.

use std::process::Command;
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the demo with small counts; returns its exit success and stdout.
fn run_demo(dir_tag: &str, extra: &[&str]) -> (bool, String) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir =
        std::env::temp_dir().join(format!("cohort-demo-test-{dir_tag}-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["demo", "--count", "6000", "--rate", "2000"])
        .args(["--kill-at-percent", "20", "--duration", "30"])
        .args(extra)
        .arg("--trace")
        .arg(&dir)
        .env("RUST_LOG", "error")
        .output()
        .expect("cohort demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}");
    eprintln!(
        "stderr of the demo and its members:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
    } // else the traces stay for a look
    (out.status.success(), stdout)
}

/// The value after `key=` in the first line containing `marker`.
fn field_after<'a>(stdout: &'a str, marker: &str, key: &str) -> Option<&'a str> {
    let line = stdout.lines().find(|l| l.contains(marker))?;
    let rest = &line[line.find(key)? + key.len()..];
    rest.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .next()
}

/// What every demo run must show: the kill, the survivors' view without the killed member,
/// the join, the state transfer, and a clean verdict over 4 traces.
fn assert_kill_join_and_clean_verdict(ok: bool, stdout: &str) {
    assert!(ok, "demo failed: {stdout}");
    // The script line names the member to kill and the joiner.
    let victim = field_after(stdout, "script:", "kill -9 ").expect("the script names the victim");
    let joiner = stdout
        .lines()
        .find(|l| l.contains("script:"))
        .and_then(|l| l.split("the view change, ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("the script names the joiner");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(&format!("kill -9 {victim} (pid "))),
        "the demo reports killing {victim}"
    );
    // View 1 has the victim; some later view excludes it and names it as killed; a later one
    // admits the joiner.
    let views: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("] view id="))
        .collect();
    assert!(
        views[0].contains("view id=1 ") && views[0].contains(victim),
        "{views:?}"
    );
    let excluded = views
        .iter()
        .position(|l| l.contains(&format!("{victim} excluded (killed")))
        .expect("a view change excludes the killed member");
    assert!(!views[excluded]
        .split("members=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .contains(victim));
    let joined = views
        .iter()
        .position(|l| l.contains(&format!("{joiner} joined")))
        .expect("a view admits the joiner");
    assert!(
        joined > excluded,
        "the join follows the view change: {views:?}"
    );
    assert!(
        stdout.contains("view change after the kill: "),
        "kill-to-view time reported"
    );
    // The joiner completed and restored a nonzero state.
    let restored: u64 = field_after(stdout, "state transfer:", "restored=")
        .and_then(|v| v.parse().ok())
        .expect("the joiner's restored count");
    assert!(
        restored > 0,
        "the state transfer accounted for messages: {restored}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(joiner) && l.contains("joined ") && l.contains("[complete]")),
        "the joiner completed"
    );
    assert!(
        stdout.contains("the same messages, in the same views, at every survivor"),
        "the survivors' flush agrees"
    );
    // Four traces, no violation; the verdict says so.
    let members: u64 = field_after(stdout, "check-trace:", "members=")
        .and_then(|v| v.parse().ok())
        .expect("the checker's summary line");
    assert_eq!(members, 4, "the 3 founders and the joiner left traces");
    assert_eq!(
        field_after(stdout, "check-trace:", "violations="),
        Some("0")
    );
    assert!(stdout.contains("verdict: CLEAN"), "{stdout}");
    assert!(!stdout.contains("not shown yet"));
}

#[test]
fn demo_kills_a_member_admits_a_joiner_and_ends_with_a_clean_checker_verdict() {
    let (ok, stdout) = run_demo("mc", &[]);
    assert_kill_join_and_clean_verdict(ok, &stdout);
}

#[test]
fn demo_over_unicast_fanout_shows_the_same_kill_and_join() {
    let (ok, stdout) = run_demo("u", &["--no-multicast"]);
    assert!(stdout.contains("unicast fan-out"));
    assert_kill_join_and_clean_verdict(ok, &stdout);
}

#[test]
fn demo_refuses_a_group_too_small_to_survive_a_kill() {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["demo", "--members", "2"])
        .output()
        .expect("cohort demo runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--members must be 3..=16"));
}

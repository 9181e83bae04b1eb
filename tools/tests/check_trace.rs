//! `cohort check-trace DIR`: exit 0 on a clean trace directory, 1 with the violations listed,
//! 2 with the file and line named when a trace cannot be read.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh directory under cargo's per-target temp dir, holding the given files.
fn trace_dir(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("check_trace_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn check_trace(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("check-trace")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

const A_GOOD: &str = r#"{"ev":"view","node":"a","group":"g","view":1,"members":["a","b"]}
{"ev":"send","node":"a","group":"g","view":1,"msg":"a/1","order":"total","safe":false}
{"ev":"deliver","node":"a","group":"g","view":1,"msg":"a/1","order":"total"}
{"ev":"deliver","node":"a","group":"g","view":1,"msg":"b/1","order":"causal"}
"#;
const B_GOOD: &str = r#"{"ev":"view","node":"b","group":"g","view":1,"members":["a","b"]}
{"ev":"send","node":"b","group":"g","view":1,"msg":"b/1","order":"causal","safe":true}
{"ev":"deliver","node":"b","group":"g","view":1,"msg":"a/1","order":"total"}
{"ev":"deliver","node":"b","group":"g","view":1,"msg":"b/1","order":"causal"}
"#;
/// b delivers a/1 twice.
const B_DUPLICATE: &str = r#"{"ev":"view","node":"b","group":"g","view":1,"members":["a","b"]}
{"ev":"send","node":"b","group":"g","view":1,"msg":"b/1","order":"causal","safe":true}
{"ev":"deliver","node":"b","group":"g","view":1,"msg":"a/1","order":"total"}
{"ev":"deliver","node":"b","group":"g","view":1,"msg":"b/1","order":"causal"}
{"ev":"deliver","node":"b","group":"g","view":1,"msg":"a/1","order":"total"}
"#;

#[test]
fn a_clean_trace_directory_exits_zero_with_a_summary() {
    let dir = trace_dir("good", &[("a.jsonl", A_GOOD), ("b.jsonl", B_GOOD)]);
    let out = check_trace(&dir, &["--complete"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}");
    assert_eq!(
        stdout,
        "check-trace: members=2 sends=2 deliveries=4 violations=0\n"
    );
}

#[test]
fn a_violating_trace_directory_exits_one_and_names_the_violation() {
    let dir = trace_dir("bad", &[("a.jsonl", A_GOOD), ("b.jsonl", B_DUPLICATE)]);
    let out = check_trace(&dir, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "check-trace: members=2 sends=2 deliveries=5 violations=1"
    );
    assert_eq!(
        lines[1],
        "no-duplication (5): group g: b delivered a/1 again (view 1)"
    );
    assert_eq!(lines.len(), 2);
}

#[test]
fn json_output_carries_the_counts_and_violations() {
    let dir = trace_dir("json", &[("a.jsonl", A_GOOD), ("b.jsonl", B_DUPLICATE)]);
    let out = check_trace(&dir, &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["violation_count"], 1);
    assert_eq!(report["violation_counts"]["no-duplication"], 1);
    assert_eq!(report["violations"][0]["property"], "no-duplication");
    assert_eq!(report["deliveries"], 5);
}

#[test]
fn completeness_is_checked_only_with_the_flag() {
    // b never delivers a/1: fine for a run with faults, not for a complete one.
    let b_missing = B_GOOD.replace(
        "{\"ev\":\"deliver\",\"node\":\"b\",\"group\":\"g\",\"view\":1,\"msg\":\"a/1\",\"order\":\"total\"}\n",
        "",
    );
    let dir = trace_dir(
        "incomplete",
        &[("a.jsonl", A_GOOD), ("b.jsonl", b_missing.as_str())],
    );
    assert_eq!(check_trace(&dir, &[]).status.code(), Some(0));
    let out = check_trace(&dir, &["--complete"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("completeness: group g: b installed view 1")
    );
}

#[test]
fn an_unreadable_line_exits_two_naming_the_file_and_line() {
    let dir = trace_dir(
        "malformed",
        &[("a.jsonl", A_GOOD), ("b.jsonl", "{\"ev\":\"view\"}\n")],
    );
    let out = check_trace(&dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("b.jsonl:1:"), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_missing_or_empty_directory_exits_two() {
    let dir = trace_dir("empty", &[("notes.txt", "not a trace")]);
    let out = check_trace(&dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no *.jsonl trace files"));
    let out = check_trace(&dir.join("does-not-exist"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist"));
}

//! `cohort tune check` and `cohort-tune.sh check` on this machine: both print a complete,
//! parseable report with a verdict per item, agree line for line, change nothing, and take a
//! TOML config with clear errors.

mod tune_support;

use std::collections::BTreeMap;
use tune_support::*;

fn default_iface() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000")).then(|| f[0].to_string())
    })
}

fn extra_items() -> Vec<String> {
    default_iface()
        .map(|i| format!("net.ipv4.conf.{i}.rp_filter"))
        .into_iter()
        .collect()
}

#[test]
fn program_check_reports_every_item_with_a_verdict_on_this_machine() {
    let extra = extra_items();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let r = run(program().arg("check"));
    let p = assert_complete_report(&r, &extra);
    // Values that every Linux host has must be read, not reported N/A.
    assert_ne!(p.get("net.ipv4.conf.all.rp_filter").verdict, "N/A");
    assert_ne!(p.get("mem.memlock").verdict, "N/A");
}

#[test]
fn script_check_reports_every_item_with_a_verdict_on_this_machine() {
    let extra = extra_items();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let r = run(script().arg("check"));
    let p = assert_complete_report(&r, &extra);
    assert_ne!(p.get("net.ipv4.conf.all.rp_filter").verdict, "N/A");
}

#[test]
fn script_and_program_print_the_same_report() {
    let online =
        std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_else(|_| "0".into());
    let online = online.trim().to_string();
    let option_sets: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--cpus", &online, "--ports", "5400,5401"],
        vec!["--iface", "lo", "--pollers", "1"],
        vec!["--only", "sysctl,firewall", "--ports", "6000"],
    ];
    for opts in option_sets {
        let p = run(program().arg("check").args(&opts));
        let s = run(script().arg("check").args(&opts));
        assert_eq!(p.code, s.code, "exit status differs for {opts:?}");
        assert_eq!(
            s.stdout, p.stdout,
            "script (left) and program (right) disagree for {opts:?}"
        );
        // Item names and recommended values are the contract between the two.
        let names = |t: &str| -> Vec<(String, String)> {
            parse_report(t)
                .lines
                .into_iter()
                .map(|l| (l.item, l.recommended))
                .collect()
        };
        assert_eq!(names(&s.stdout), names(&p.stdout));
    }
}

#[test]
fn json_report_matches_the_text_report() {
    let text = run(program().args(["check", "--ports", "5400"]));
    let json = run(program().args(["check", "--ports", "5400", "--json"]));
    assert_eq!(text.code, json.code);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("valid JSON");
    let items = v["items"].as_array().expect("items array");
    let parsed = parse_report(&text.stdout);
    assert_eq!(items.len(), parsed.lines.len());
    for (j, t) in items.iter().zip(&parsed.lines) {
        assert_eq!(j["item"], t.item.as_str());
        assert_eq!(j["verdict"], t.verdict.as_str());
        assert_eq!(j["recommended"], t.recommended.as_str());
        assert!(j["area"].is_string());
    }
    assert_eq!(v["summary"]["ready"], json.code == 0);
    assert_eq!(v["inputs"]["ports"], serde_json::json!([5400]));
}

/// Every sysctl and NIC attribute check reads, as a map, to prove check changed nothing.
fn snapshot() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut files: Vec<String> = Vec::new();
    for dir in [
        "/proc/sys/net/core",
        "/proc/sys/net/ipv4/conf/all",
        "/sys/kernel/mm/transparent_hugepage",
    ] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            files.extend(
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path().display().to_string()),
            );
        }
    }
    files.push("/proc/sys/vm/nr_hugepages".into());
    files.push("/proc/sys/net/ipv4/igmp_max_memberships".into());
    if let Some(i) = default_iface() {
        files.push(format!("/sys/class/net/{i}/napi_defer_hard_irqs"));
        files.push(format!("/sys/class/net/{i}/gro_flush_timeout"));
    }
    for f in files {
        if let Ok(v) = std::fs::read_to_string(&f) {
            m.insert(f, v);
        }
    }
    m
}

#[test]
fn check_never_changes_a_setting() {
    let before = snapshot();
    assert!(before.len() > 5, "snapshot read too little: {before:?}");
    let _ = run(script().arg("check"));
    let _ = run(program().arg("check"));
    assert_eq!(before, snapshot());
}

fn write_config(dir: &TempDir, text: &str) -> String {
    let p = dir.0.join("tune.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn config_file_sets_cpus_iface_pollers_and_ports() {
    let dir = TempDir::new("config");
    let cfg = write_config(
        &dir,
        "pollers = 1\ncpus = [0]\niface = \"lo\"\nports = [5400, 5401]\n",
    );
    let r = run(program().args(["check", "--config", &cfg]));
    assert!(
        r.stdout
            .starts_with("# cohort tune check: iface=lo cpus=0 pollers=1 ports=5400,5401\n"),
        "{}",
        r.stdout
    );
    assert_complete_report(&r, &["net.ipv4.conf.lo.rp_filter"]);
    // Options override the file.
    let r = run(program().args(["check", "--config", &cfg, "--ports", "7000"]));
    assert!(
        r.stdout
            .starts_with("# cohort tune check: iface=lo cpus=0 pollers=1 ports=7000\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn bad_input_is_a_clear_error_with_exit_status_2() {
    let dir = TempDir::new("badconfig");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--config".into(), write_config(&dir, "poller = 2\n")],
            "unknown field `poller`",
        ),
        (
            vec!["--config".into(), "/nonexistent/tune.toml".into()],
            "cannot open config",
        ),
        (vec!["--cpus".into(), "9999".into()], "not online"),
        (vec!["--cpus".into(), "x".into()], "not a CPU list"),
        (vec!["--cpus".into(), "0,0".into()], "listed twice"),
        (
            vec!["--iface".into(), "nosuchnic0".into()],
            "does not exist",
        ),
        (vec!["--only".into(), "gpu".into()], "unknown area"),
    ];
    for (args, want) in cases {
        let r = run(program().arg("check").args(&args));
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(want),
            "{args:?}: stderr {:?} lacks {want:?}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // The script rejects bad options the same way.
    for args in [
        vec!["check", "--cpus", "x"],
        vec!["check", "--cpus", "0,0"],
        vec!["check", "--iface", "nosuchnic0"],
        vec!["check", "--ports", "70000"],
        vec!["bogus"],
    ] {
        let r = run(script().args(&args));
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
}

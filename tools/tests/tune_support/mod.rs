//! Shared helpers of the `cohort tune` tests: run the program and the script, parse their
//! report, skip loudly, and own network namespaces that are deleted in every case.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Every item a full check reports (the per-interface rp_filter item comes on top when an
/// interface is known).
pub const EXPECTED_ITEMS: [&str; 33] = [
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.core.rmem_default",
    "net.core.wmem_default",
    "net.core.netdev_max_backlog",
    "net.ipv4.udp_mem",
    "net.core.optmem_max",
    "net.ipv4.igmp_max_memberships",
    "net.ipv4.conf.all.rp_filter",
    "net.core.busy_poll",
    "net.core.busy_read",
    "busy.so_busy_poll",
    "napi.napi_defer_hard_irqs",
    "napi.gro_flush_timeout",
    "nic.channels",
    "nic.rss",
    "nic.coalesce",
    "nic.rings",
    "irq.affinity",
    "irq.irqbalance",
    "cpu.isolcpus",
    "cpu.nohz_full",
    "cpu.rcu_nocbs",
    "cpu.governor",
    "cpu.cstates",
    "cpu.smt_siblings",
    "mem.memlock",
    "mem.systemd_memlock",
    "mem.thp_enabled",
    "mem.thp_defrag",
    "vm.nr_hugepages",
    "fw.nftables",
    "fw.iptables",
];

pub const VERDICTS: [&str; 4] = ["OK", "WARN", "FAIL", "N/A"];

pub fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tuning/cohort-tune.sh")
}

pub fn program() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cohort"));
    c.arg("tune");
    c
}

pub fn script() -> Command {
    let mut c = Command::new("bash");
    c.arg(script_path());
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let out: Output = cmd.output().expect("spawn");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub verdict: String,
    pub item: String,
    pub current: String,
    pub recommended: String,
    pub fix: String,
}

#[derive(Debug)]
pub struct Parsed {
    pub lines: Vec<Line>,
    /// (ok, warn, fail, na) from the SUMMARY line.
    pub summary: (usize, usize, usize, usize),
    pub ready: bool,
}

impl Parsed {
    pub fn get(&self, item: &str) -> &Line {
        self.lines
            .iter()
            .find(|l| l.item == item)
            .unwrap_or_else(|| panic!("item {item} missing from report: {:#?}", self.lines))
    }
}

/// Parse a check report; panics (fails the test) on any malformed line.
pub fn parse_report(text: &str) -> Parsed {
    let mut lines = Vec::new();
    let mut summary = None;
    let mut ready = false;
    for l in text.lines() {
        if l.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = l.split(" | ").map(str::trim).collect();
        if f[0] == "SUMMARY" {
            assert_eq!(f.len(), 3, "summary line: {l}");
            let n: Vec<usize> = f[1]
                .split(", ")
                .map(|p| p.split(' ').next().unwrap().parse().expect("count"))
                .collect();
            summary = Some((n[0], n[1], n[2], n[3]));
            ready = f[2].starts_with("READY");
            continue;
        }
        assert_eq!(f.len(), 5, "report line must have 5 columns: {l}");
        if f[0] == "VERDICT" {
            continue;
        }
        assert!(VERDICTS.contains(&f[0]), "bad verdict in: {l}");
        lines.push(Line {
            verdict: f[0].into(),
            item: f[1].into(),
            current: f[2].into(),
            recommended: f[3].into(),
            fix: f[4].into(),
        });
    }
    Parsed {
        lines,
        summary: summary.expect("a SUMMARY line"),
        ready,
    }
}

/// The checks every parsed report must pass: all expected items, counts that add up, and an
/// exit status that says whether anything FAILs.
pub fn assert_complete_report(run: &Run, extra_items: &[&str]) -> Parsed {
    assert!(
        run.code == 0 || run.code == 1,
        "exit {} stderr: {}",
        run.code,
        run.stderr
    );
    let p = parse_report(&run.stdout);
    for item in EXPECTED_ITEMS.iter().chain(extra_items) {
        let l = p.get(item);
        assert!(!l.recommended.is_empty(), "{item} has no recommended value");
        if l.verdict == "WARN" || l.verdict == "FAIL" {
            assert!(
                l.fix != "-" && !l.fix.is_empty(),
                "{item} is {} without a fix",
                l.verdict
            );
        }
    }
    assert_eq!(
        p.lines.len(),
        EXPECTED_ITEMS.len() + extra_items.len(),
        "{}",
        run.stdout
    );
    let count = |v: &str| p.lines.iter().filter(|l| l.verdict == v).count();
    assert_eq!(
        p.summary,
        (count("OK"), count("WARN"), count("FAIL"), count("N/A"))
    );
    assert_eq!(p.ready, count("FAIL") == 0);
    assert_eq!(
        run.code == 0,
        count("FAIL") == 0,
        "exit status must say whether the host is ready"
    );
    p
}

/// Print a loud line that libtest does not capture.
pub fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Why a namespace test cannot run here, if it cannot.
pub fn netns_unavailable() -> Option<String> {
    if !is_root() {
        return Some("needs root (network namespaces)".into());
    }
    if !have("ip") {
        return Some("needs iproute2 (`ip` not found)".into());
    }
    None
}

static NETNS_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A network namespace this test created; deleted on drop, whatever happened.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!(
            "cohort-tune-test-{}-{}",
            std::process::id(),
            NETNS_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let r = run(Command::new("ip").args(["netns", "add", &name]));
        assert_eq!(r.code, 0, "ip netns add {name}: {}", r.stderr);
        Netns { name }
    }

    /// `ip netns exec NAME args...`
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    pub fn sh(&self, script: &str) -> Run {
        run(&mut self.exec(&["sh", "-c", script]))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "cohort-tune-{tag}-{}-{}",
            std::process::id(),
            NETNS_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! `cohort-tune.sh apply` and `revert` for real, inside a network namespace this test creates
//! (deleted by a guard whatever happens): namespaced sysctls, a veth's NAPI attributes and
//! queues change, host-wide settings are left alone, and revert restores every value.
//! Needs root and iproute2; without them each test prints `SKIPPED: <why>` and returns.

mod tune_support;

use std::collections::BTreeMap;
use std::process::Command;
use tune_support::*;

/// "path:value" lines of grep over the given paths, run in the namespace (or on the host).
fn grep_snapshot(ns: Option<&Netns>, paths: &str) -> BTreeMap<String, String> {
    let cmd = format!("grep -r -s . {paths} || true");
    let out = match ns {
        Some(ns) => ns.sh(&cmd),
        None => run(Command::new("sh").args(["-c", &cmd])),
    };
    out.stdout
        .lines()
        .filter(|l| !l.contains("nf_conntrack_count"))
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

const HOST_PATHS: &str = "/proc/sys/net/core /proc/sys/net/ipv4/igmp_max_memberships \
    /proc/sys/net/ipv4/conf/all /proc/sys/vm/nr_hugepages /sys/kernel/mm/transparent_hugepage/enabled \
    /sys/kernel/mm/transparent_hugepage/defrag /etc/security/limits.d";

fn host_snapshot() -> BTreeMap<String, String> {
    let mut m = grep_snapshot(None, HOST_PATHS);
    m.extend(grep_snapshot(None, "/proc/irq/*/smp_affinity_list"));
    m
}

fn ns_snapshot(ns: &Netns) -> BTreeMap<String, String> {
    let mut m = grep_snapshot(Some(ns), "/proc/sys/net /sys/class/net/ctv0/napi_defer_hard_irqs /sys/class/net/ctv0/gro_flush_timeout");
    if have("ethtool") {
        m.insert("ethtool -l ctv0".into(), ns.sh("ethtool -l ctv0").stdout);
    }
    m
}

fn veth_netns() -> Netns {
    let ns = Netns::new();
    let r = ns.sh(
        "ip link add ctv0 type veth peer name ctv1 && ip link set lo up && ip link set ctv0 up && \
         ip link set ctv1 up && sysctl -qw net.ipv4.conf.all.rp_filter=1",
    );
    assert_eq!(r.code, 0, "veth setup: {}", r.stderr);
    ns
}

fn online_cpus() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .unwrap_or_else(|_| "0".into())
        .trim()
        .to_string()
}

#[test]
fn apply_then_revert_in_a_netns_restores_every_value_and_leaves_the_host_alone() {
    if let Some(why) = netns_unavailable() {
        return skip(&why);
    }
    let ns = veth_netns();
    let state = TempDir::new("netns-state");
    let state_dir = state.0.display().to_string();
    let script_path = script_path().display().to_string();
    let cpus = online_cpus();
    let host_before = host_snapshot();
    let ns_before = ns_snapshot(&ns);
    assert!(
        ns_before.len() > 50,
        "namespace snapshot read too little: {}",
        ns_before.len()
    );

    let apply = run(&mut ns.exec(&[
        "bash",
        &script_path,
        "apply",
        "--iface",
        "ctv0",
        "--cpus",
        &cpus,
        "--state",
        &state_dir,
    ]));
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    for changed in [
        "CHANGED | net.ipv4.igmp_max_memberships",
        "CHANGED | net.ipv4.conf.all.rp_filter",
        "CHANGED | napi.napi_defer_hard_irqs",
        "CHANGED | napi.gro_flush_timeout",
    ] {
        assert!(
            apply.stdout.contains(changed),
            "missing `{changed}`:\n{}",
            apply.stdout
        );
    }
    // What cannot change in a namespace is said, not hidden, and apply goes on.
    assert!(
        apply.stdout.contains("SKIP | net.core.rmem_max"),
        "{}",
        apply.stdout
    );
    assert!(
        apply.stdout.contains("SKIP | vm.nr_hugepages"),
        "{}",
        apply.stdout
    );
    assert!(
        apply.stdout.contains("host-wide setting"),
        "{}",
        apply.stdout
    );

    let ns_applied = ns_snapshot(&ns);
    let val = |k: &str| ns_applied.get(k).cloned().unwrap_or_default();
    assert_eq!(val("/proc/sys/net/ipv4/igmp_max_memberships"), "1024");
    assert_eq!(val("/proc/sys/net/ipv4/conf/all/rp_filter"), "2");
    assert_eq!(val("/sys/class/net/ctv0/napi_defer_hard_irqs"), "2");
    assert_eq!(val("/sys/class/net/ctv0/gro_flush_timeout"), "200000");
    let multi_cpu = cpus.contains(['-', ',']);
    if have("ethtool") && multi_cpu {
        assert!(
            apply.stdout.contains("CHANGED | nic.channels"),
            "{}",
            apply.stdout
        );
        assert_ne!(
            ns_applied["ethtool -l ctv0"], ns_before["ethtool -l ctv0"],
            "veth queues must change"
        );
    } else {
        skip("veth queue change not exercised (needs ethtool and more than one CPU)");
    }
    assert_eq!(
        host_snapshot(),
        host_before,
        "apply inside the namespace changed the host"
    );

    // A check inside the namespace now sees the namespaced values as fixed.
    let check = run(&mut ns.exec(&[
        "bash",
        &script_path,
        "check",
        "--iface",
        "ctv0",
        "--cpus",
        &cpus,
    ]));
    let p = parse_report(&check.stdout);
    assert_eq!(p.get("net.ipv4.igmp_max_memberships").verdict, "OK");
    assert_eq!(p.get("napi.gro_flush_timeout").verdict, "OK");

    let revert = run(&mut ns.exec(&["bash", &script_path, "revert", "--state", &state_dir]));
    assert_eq!(revert.code, 0, "{}{}", revert.stdout, revert.stderr);
    let ns_after = ns_snapshot(&ns);
    let diff: Vec<_> = ns_before
        .iter()
        .filter(|(k, v)| ns_after.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v} -> {:?}", ns_after.get(k)))
        .collect();
    assert!(
        diff.is_empty(),
        "revert left values changed: {diff:#?}\n{}",
        revert.stdout
    );
    assert_eq!(ns_after.len(), ns_before.len());
    assert_eq!(
        host_snapshot(),
        host_before,
        "revert inside the namespace changed the host"
    );
}

#[test]
fn check_inside_a_netns_agrees_between_script_and_program_and_flags_firewall_drops() {
    if let Some(why) = netns_unavailable() {
        return skip(&why);
    }
    let ns = veth_netns();
    let mut expect = Vec::new();
    if have("nft") {
        let r = ns.sh(
            "nft add table inet cohort_t && \
             nft add chain inet cohort_t in '{ type filter hook input priority 0; policy accept; }' && \
             nft add rule inet cohort_t in udp dport 5400 drop",
        );
        assert_eq!(r.code, 0, "nft: {}", r.stderr);
        expect.push((
            "fw.nftables",
            "udp/5400 by inet cohort_t in (udp dport 5400 drop)",
        ));
    } else {
        skip("nftables drop not exercised (nft not installed)");
    }
    if have("iptables") {
        let r = ns.sh("iptables -A INPUT -p igmp -j DROP");
        assert_eq!(r.code, 0, "iptables: {}", r.stderr);
        expect.push((
            "fw.iptables",
            "igmp by filter INPUT (-A INPUT -p igmp -j DROP)",
        ));
    } else {
        skip("iptables drop not exercised (iptables not installed)");
    }
    let script_path = script_path().display().to_string();
    let args = ["check", "--iface", "ctv0", "--ports", "5400,5401"];
    let mut s_cmd = ns.exec(&["bash", &script_path]);
    let s = run(s_cmd.args(args));
    let mut p_cmd = ns.exec(&[env!("CARGO_BIN_EXE_cohort"), "tune"]);
    let p = run(p_cmd.args(args));
    assert_eq!(
        s.stdout, p.stdout,
        "script (left) and program (right) disagree in a namespace"
    );
    let parsed = assert_complete_report(&p, &["net.ipv4.conf.ctv0.rp_filter"]);
    assert_eq!(p.code, 1);
    for (item, finding) in expect {
        let l = parsed.get(item);
        assert_eq!(l.verdict, "FAIL", "{l:?}");
        assert!(
            l.current.contains(finding),
            "{item}: {:?} lacks {finding:?}",
            l.current
        );
        assert!(
            !l.current.contains("udp/5401"),
            "5401 is not dropped: {:?}",
            l.current
        );
    }
    // Host-only sysctls are not visible in a namespace: N/A with the reason, not a guess.
    let busy = parsed.get("net.core.busy_poll");
    assert_eq!(
        (busy.verdict.as_str(), busy.current.as_str()),
        ("N/A", "absent in this netns")
    );
}

//! Both implementations on a fixture host (COHORT_TUNE_ROOT + fake ethtool/nft/iptables-save/
//! systemctl on PATH) that has every feature this VM lacks: cpufreq, C-states, SMT, multiqueue
//! NIC with RSS, coalescing and rings, irqbalance, a firewall that drops Cohort's port, THP
//! always. Runs without root and without touching the host.

mod tune_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tune_support::*;

const FAKE_ETHTOOL: &str = r#"#!/bin/sh
echo "ethtool $*" >> "$FAKE_LOG"
case "$1" in
-l) printf 'Channel parameters for %s:\nPre-set maximums:\nRX:\t\tn/a\nTX:\t\tn/a\nOther:\t\t1\nCombined:\t16\nCurrent hardware settings:\nRX:\t\tn/a\nTX:\t\tn/a\nOther:\t\t1\nCombined:\t8\n' "$2" ;;
-g) printf 'Ring parameters for %s:\nPre-set maximums:\nRX:\t\t4096\nRX Mini:\tn/a\nTX:\t\t4096\nCurrent hardware settings:\nRX:\t\t512\nRX Mini:\tn/a\nTX:\t\t512\n' "$2" ;;
-c) printf 'Coalesce parameters for %s:\nAdaptive RX: on  TX: on\nrx-usecs: 50\nrx-frames: 0\nrx-usecs-irq: n/a\n' "$2" ;;
-x) printf 'RX flow hash indirection table for %s with 8 RX ring(s):\n    0:      0     1     2     3     4     5     6     7\n    8:      0     1     2     3     4     5     6     7\n' "$2" ;;
-L|-G|-C|-X) exit 0 ;;
*) exit 1 ;;
esac
"#;

const FAKE_NFT: &str = r#"#!/bin/sh
printf 'table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tct state established,related accept\n\t\tudp dport 5400 accept\n\t}\n}\n'
"#;

const FAKE_IPTABLES_SAVE: &str = r#"#!/bin/sh
printf '*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -d 224.0.0.0/4 -j DROP\nCOMMIT\n'
"#;

const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
echo "systemctl $*" >> "$FAKE_LOG"
case "$1" in
show) echo 8388608 ;;
esac
exit 0
"#;

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn root(&self) -> PathBuf {
        self.dir.0.join("root")
    }
    fn bin(&self) -> PathBuf {
        self.dir.0.join("bin")
    }
    fn log(&self) -> PathBuf {
        self.dir.0.join("fake.log")
    }
    fn state(&self) -> PathBuf {
        self.dir.0.join("state")
    }

    fn file(&self, rel: &str, content: &str) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn new() -> Fixture {
        let f = Fixture {
            dir: TempDir::new("fixture"),
        };
        std::fs::create_dir_all(f.bin()).unwrap();
        for (name, body) in [
            ("ethtool", FAKE_ETHTOOL),
            ("nft", FAKE_NFT),
            ("iptables-save", FAKE_IPTABLES_SAVE),
            ("systemctl", FAKE_SYSTEMCTL),
        ] {
            let p = f.bin().join(name);
            std::fs::write(&p, body).unwrap();
            let _ = Command::new("chmod").arg("755").arg(&p).status();
        }
        let sysctls = [
            ("net/core/rmem_max", "212992"),
            ("net/core/wmem_max", "212992"),
            ("net/core/rmem_default", "212992"),
            ("net/core/wmem_default", "212992"),
            ("net/core/netdev_max_backlog", "1000"),
            ("net/core/optmem_max", "20480"),
            ("net/core/busy_poll", "0"),
            ("net/core/busy_read", "0"),
            ("net/ipv4/udp_mem", "100\t200\t300"),
            ("net/ipv4/igmp_max_memberships", "20"),
            ("net/ipv4/conf/all/rp_filter", "1"),
            ("net/ipv4/conf/eth9/rp_filter", "1"),
            ("vm/nr_hugepages", "0"),
        ];
        for (k, v) in sysctls {
            f.file(&format!("proc/sys/{k}"), &format!("{v}\n"));
        }
        f.file("proc/self/status", "Name:\tx\nCapEff:\t0000000000000000\n");
        f.file(
            "proc/self/limits",
            "Limit                     Soft Limit           Hard Limit           Units     \n\
             Max locked memory         65536                65536                bytes     \n",
        );
        f.file("proc/cmdline", "BOOT_IMAGE=/vmlinuz isolcpus=managed_irq,domain,2-3 nohz_full=2 quiet -- rcu_nocbs=2-3\n");
        f.file(
            "proc/net/route",
            "Iface\tDestination\tGateway \tFlags\n eth9\t00000000\t0102A8C0\t0003\n",
        );
        f.file(
            "proc/interrupts",
            "           CPU0       CPU1       CPU2       CPU3\n\
             \x2040:  1  2  3  4  PCI-MSIX-0000:3b:00.0   0-edge      eth9-TxRx-0\n\
             \x2041:  1  2  3  4  PCI-MSIX-0000:3b:00.0   1-edge      eth9-TxRx-1\n\
             \x2042:  1  2  3  4  PCI-MSIX-0000:3b:00.0   2-edge      eth9-async\n\
             \x2043:  1  2  3  4  PCI-MSIX-0000:3b:00.0   3-edge      mlx5_comp0@pci:0000:3b:00.0\n\
             \x2050:  1  2  3  4  PCI-MSIX-0000:00:1f.0   0-edge      nvme0q1\n\
             NMI:  0  0  0  0   Non-maskable interrupts\n",
        );
        for (irq, aff) in [
            ("40", "0-3"),
            ("41", "3"),
            ("42", "0-3"),
            ("43", "2"),
            ("50", "0-3"),
        ] {
            f.file(
                &format!("proc/irq/{irq}/smp_affinity_list"),
                &format!("{aff}\n"),
            );
        }
        f.file("proc/1/comm", "init\n");
        f.file("proc/1234/comm", "irqbalance\n");
        f.file(
            "etc/default/irqbalance",
            "#IRQBALANCE_ONESHOT=\nIRQBALANCE_BANNED_CPULIST=3\n",
        );
        f.file("sys/devices/system/cpu/online", "0-3\n");
        f.file(
            "sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
            "powersave\n",
        );
        f.file(
            "sys/devices/system/cpu/cpu3/cpufreq/scaling_governor",
            "performance\n",
        );
        for (cpu, st, name, lat, dis) in [
            (2, 0, "POLL", 0, 0),
            (2, 1, "C1", 2, 0),
            (2, 2, "C6", 133, 0),
            (3, 0, "POLL", 0, 0),
            (3, 2, "C6", 133, 1),
        ] {
            let d = format!("sys/devices/system/cpu/cpu{cpu}/cpuidle/state{st}");
            f.file(&format!("{d}/name"), &format!("{name}\n"));
            f.file(&format!("{d}/latency"), &format!("{lat}\n"));
            f.file(&format!("{d}/disable"), &format!("{dis}\n"));
        }
        f.file(
            "sys/devices/system/cpu/cpu2/topology/thread_siblings_list",
            "0,2\n",
        );
        f.file(
            "sys/devices/system/cpu/cpu3/topology/thread_siblings_list",
            "1,3\n",
        );
        f.file("sys/class/net/eth9/napi_defer_hard_irqs", "0\n");
        f.file("sys/class/net/eth9/gro_flush_timeout", "0\n");
        for irq in ["40", "41", "42", "43"] {
            f.file(
                &format!("sys/class/net/eth9/device/msi_irqs/{irq}"),
                "msix\n",
            );
        }
        f.file(
            "sys/kernel/mm/transparent_hugepage/enabled",
            "[always] madvise never\n",
        );
        f.file(
            "sys/kernel/mm/transparent_hugepage/defrag",
            "always defer defer+madvise [madvise] never\n",
        );
        std::fs::create_dir_all(f.root().join("run/systemd/system")).unwrap();
        f
    }

    fn env(&self, mut c: Command) -> Command {
        let path = format!(
            "{}:{}",
            self.bin().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path)
            .env("COHORT_TUNE_ROOT", self.root())
            .env("FAKE_LOG", self.log())
            .env("COHORT_TUNE_STATE", self.state());
        c
    }

    fn program(&self, args: &[&str]) -> Run {
        let mut c = self.env(program());
        run(c.arg("check").args(args))
    }

    fn script(&self, args: &[&str]) -> Run {
        let mut c = self.env(script());
        run(c.args(args))
    }

    /// Every file under the fixture root and its content, whitespace runs folded (the kernel
    /// prints udp_mem with tabs and takes it back with spaces; the backup keeps the values).
    fn snapshot(&self) -> BTreeMap<String, String> {
        fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    let rel = p.strip_prefix(base).unwrap().display().to_string();
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    out.insert(rel, text.split_whitespace().collect::<Vec<_>>().join(" "));
                }
            }
        }
        let mut m = BTreeMap::new();
        walk(&self.root(), &self.root(), &mut m);
        m
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

const OPTS: [&str; 4] = ["--cpus", "2-3", "--ports", "5400,5401"];

#[test]
fn fixture_host_gets_the_same_report_from_script_and_program() {
    let f = Fixture::new();
    let p = f.program(&OPTS);
    let mut args = vec!["check"];
    args.extend(OPTS);
    let s = f.script(&args);
    assert_eq!(
        s.stdout, p.stdout,
        "script (left) and program (right) disagree"
    );
    assert_eq!(s.code, 1);
    assert_eq!(p.code, 1);
    assert_complete_report(&p, &["net.ipv4.conf.eth9.rp_filter"]);
}

#[test]
fn fixture_host_report_flags_each_planted_problem() {
    let f = Fixture::new();
    let r = f.program(&OPTS);
    let p = parse_report(&r.stdout);
    let expect = |item: &str, verdict: &str, current: &str| {
        let l = p.get(item);
        assert_eq!(l.verdict, verdict, "{item}: {l:?}");
        assert!(
            l.current.contains(current),
            "{item}: current {:?} lacks {current:?}",
            l.current
        );
    };
    expect("net.core.rmem_max", "FAIL", "212992");
    expect("net.ipv4.udp_mem", "WARN", "100 200 300");
    assert_eq!(
        p.get("net.ipv4.udp_mem").fix,
        "sysctl -w net.ipv4.udp_mem='262144 524288 1048576'"
    );
    expect("net.ipv4.conf.all.rp_filter", "WARN", "1");
    expect("net.ipv4.conf.eth9.rp_filter", "WARN", "1");
    expect("busy.so_busy_poll", "WARN", "busy_read=0 cap=no");
    expect("napi.napi_defer_hard_irqs", "WARN", "0");
    expect("nic.channels", "WARN", "combined 8");
    assert_eq!(p.get("nic.channels").recommended, "combined 2");
    expect("nic.rss", "WARN", "queues 0-7");
    assert_eq!(p.get("nic.rss").fix, "ethtool -X eth9 equal 2");
    expect("nic.coalesce", "WARN", "adaptive-rx on rx-usecs 50");
    expect("nic.rings", "WARN", "rx 512");
    // IRQ 40 (queue 0) belongs on CPU 2; 41 (queue 1) on 3 and mlx5_comp0 (queue 0) on 2 are
    // right; the async IRQ and another device's IRQ are not queue IRQs of eth9.
    expect("irq.affinity", "WARN", "1/3 misplaced: 40:0-3->2");
    expect("irq.irqbalance", "WARN", "running");
    expect("cpu.isolcpus", "OK", "managed_irq,domain,2-3");
    expect("cpu.nohz_full", "WARN", "2");
    expect("cpu.rcu_nocbs", "WARN", "absent");
    expect("cpu.governor", "WARN", "cpu2=powersave cpu3=performance");
    expect("cpu.cstates", "WARN", "enabled: cpu2:C6");
    expect("cpu.smt_siblings", "WARN", "shared: cpu2+cpu0 cpu3+cpu1");
    expect("mem.memlock", "FAIL", "64 KiB");
    expect("mem.systemd_memlock", "WARN", "8388608");
    expect("mem.thp_enabled", "WARN", "always");
    expect("mem.thp_defrag", "OK", "madvise");
    expect("vm.nr_hugepages", "WARN", "0");
    expect(
        "fw.nftables",
        "FAIL",
        "udp/5401 by inet filter input (policy drop)",
    );
    expect(
        "fw.iptables",
        "FAIL",
        "igmp by filter INPUT (-A INPUT -d 224.0.0.0/4 -j DROP)",
    );
    assert!(
        !p.get("fw.nftables").current.contains("udp/5400"),
        "5400 is accepted before the policy"
    );
}

#[test]
fn apply_then_revert_on_a_fixture_host_restores_every_value() {
    let f = Fixture::new();
    let before = f.snapshot();
    let mut apply = vec!["apply"];
    apply.extend(OPTS);
    let mut first_apply = apply.clone();
    first_apply.push("--persist");
    let r = f.script(&first_apply);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let after = f.snapshot();
    let changed = |rel: &str, want: &str| {
        assert_eq!(
            after.get(rel).map(|s| s.trim()),
            Some(want),
            "{rel} after apply\n{}",
            r.stdout
        );
    };
    changed("proc/sys/net/core/rmem_max", "33554432");
    changed("proc/sys/net/ipv4/udp_mem", "262144 524288 1048576");
    changed("proc/sys/net/ipv4/conf/all/rp_filter", "2");
    changed("sys/class/net/eth9/gro_flush_timeout", "200000");
    changed("proc/irq/40/smp_affinity_list", "2");
    changed("proc/irq/41/smp_affinity_list", "3");
    changed(
        "sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
        "performance",
    );
    changed("sys/devices/system/cpu/cpu2/cpuidle/state2/disable", "1");
    changed("sys/devices/system/cpu/cpu2/cpuidle/state1/disable", "0");
    changed("sys/kernel/mm/transparent_hugepage/enabled", "madvise");
    changed("proc/sys/vm/nr_hugepages", "128");
    assert!(after["etc/security/limits.d/99-cohort-memlock.conf"].contains("* - memlock 131072"));
    let persisted = &after["etc/sysctl.d/90-cohort-tune.conf"];
    for line in [
        "net/core/rmem_max = 33554432",
        "net/ipv4/conf/eth9/rp_filter = 2",
        "vm/nr_hugepages = 128",
    ] {
        assert!(
            persisted.contains(line),
            "--persist lacks {line}: {persisted}"
        );
    }
    // Check-only items are reported, never changed.
    assert_eq!(after["proc/cmdline"], before["proc/cmdline"]);
    assert!(r.stdout.contains("MANUAL | cpu.nohz_full"), "{}", r.stdout);
    assert!(r.stdout.contains("MANUAL | fw.nftables"), "{}", r.stdout);
    let log = f.log_text();
    for call in [
        "ethtool -L eth9 combined 2",
        "ethtool -X eth9 equal 2",
        "ethtool -C eth9 adaptive-rx off rx-usecs 0",
        "ethtool -G eth9 rx 4096",
        "systemctl stop irqbalance",
    ] {
        assert!(log.contains(call), "apply did not run `{call}`:\n{log}");
    }
    // The program now sees the changed files as fixed.
    let p = parse_report(&f.program(&OPTS).stdout);
    for item in [
        "net.core.rmem_max",
        "cpu.governor",
        "cpu.cstates",
        "irq.affinity",
        "mem.thp_enabled",
    ] {
        assert_eq!(p.get(item).verdict, "OK", "{item} after apply");
    }

    // A second apply must keep the original values in the backup.
    assert_eq!(f.script(&apply).code, 0);
    let r = f.script(&["revert"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        f.snapshot(),
        before,
        "revert must restore every file exactly\n{}",
        r.stdout
    );
    let log = f.log_text();
    for call in [
        "ethtool -L eth9 combined 8",
        "ethtool -X eth9 equal 8",
        "ethtool -C eth9 adaptive-rx on rx-usecs 50",
        "ethtool -G eth9 rx 512",
        "systemctl start irqbalance",
    ] {
        assert!(log.contains(call), "revert did not run `{call}`:\n{log}");
    }
    // Nothing left to revert.
    let r = f.script(&["revert"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("nothing to revert"), "{}", r.stdout);
}

//! The checks of the sysctl, busy-poll, CPU and memory areas. Every check reads only; the
//! wording and verdicts match `tuning/lib/*.sh` line for line.

use super::host::{is_num, parse_cpulist, Host, ToolOutput};
use super::recommended as rec;
use super::report::{join_commas, Item, Verdict};

/// What the checks know about the deployment.
pub struct Ctx<'a> {
    pub host: &'a Host,
    pub iface: Option<String>,
    pub cpus: Vec<u32>,
    pub pollers: u32,
    pub ports: Vec<u16>,
    pub items: Vec<Item>,
    pub area: &'static str,
}

impl Ctx<'_> {
    pub fn emit(
        &mut self,
        verdict: Verdict,
        item: &str,
        current: &str,
        recommended: &str,
        fix: &str,
    ) {
        self.items.push(Item {
            item: item.to_string(),
            area: self.area,
            verdict,
            current: current.to_string(),
            recommended: recommended.to_string(),
            fix: fix.to_string(),
        });
    }

    pub fn cpus_commas(&self) -> String {
        join_commas(&self.cpus)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Scope {
    /// Follows the network namespace.
    Net,
    /// Host-wide.
    Global,
}

fn sysctl_min(ctx: &mut Ctx, key: &str, recommended: u64, severity: Verdict, scope: Scope) {
    let rec = format!(">= {recommended}");
    let Some(cur) = ctx.host.sysctl(key) else {
        if ctx.host.in_child_netns() && scope == Scope::Net {
            ctx.emit(
                Verdict::NotApplicable,
                key,
                "absent in this netns",
                &rec,
                "set it in the host namespace",
            );
        } else {
            ctx.emit(
                Verdict::NotApplicable,
                key,
                "absent on this kernel",
                &rec,
                "-",
            );
        }
        return;
    };
    let Some(value) = is_num(&cur).then(|| cur.parse::<u64>().ok()).flatten() else {
        ctx.emit(
            Verdict::NotApplicable,
            key,
            &format!("unreadable: {cur}"),
            &rec,
            "-",
        );
        return;
    };
    if value >= recommended {
        ctx.emit(Verdict::Ok, key, &cur, &rec, "-");
    } else {
        ctx.emit(
            severity,
            key,
            &cur,
            &rec,
            &format!("sysctl -w {key}={recommended}"),
        );
    }
}

fn check_udp_mem(ctx: &mut Ctx) {
    let key = "net.ipv4.udp_mem";
    let rec_text = join_words(&rec::UDP_MEM_PAGES);
    let rec = format!(">= {rec_text}");
    let Some(cur) = ctx.host.sysctl(key) else {
        ctx.emit(
            Verdict::NotApplicable,
            key,
            "absent in this netns",
            &rec,
            "set it in the host namespace",
        );
        return;
    };
    let fields: Vec<u64> = cur.split(' ').map(|f| f.parse().unwrap_or(0)).collect();
    let mut ok = true;
    let mut want = Vec::new();
    for (i, r) in rec::UDP_MEM_PAGES.iter().enumerate() {
        let c = fields.get(i).copied().unwrap_or(0);
        if c < *r {
            ok = false;
            want.push(*r);
        } else {
            want.push(c);
        }
    }
    if ok {
        ctx.emit(Verdict::Ok, key, &cur, &rec, "-");
    } else {
        ctx.emit(
            Verdict::Warn,
            key,
            &cur,
            &rec,
            &format!("sysctl -w {key}='{}'", join_words(&want)),
        );
    }
}

fn join_words<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn rp_filter_item(ctx: &mut Ctx, key: &str, path: &str) {
    let rec = format!("0 or {}", rec::RP_FILTER);
    match ctx.host.read(path) {
        None => ctx.emit(Verdict::NotApplicable, key, "absent", &rec, "-"),
        Some(cur) if cur == "0" || cur == "2" => ctx.emit(Verdict::Ok, key, &cur, &rec, "-"),
        Some(cur) => ctx.emit(
            Verdict::Warn,
            key,
            &cur,
            &rec,
            &format!("sysctl -w {key}={}", rec::RP_FILTER),
        ),
    }
}

pub fn check_sysctl(ctx: &mut Ctx) {
    ctx.area = "sysctl";
    sysctl_min(
        ctx,
        "net.core.rmem_max",
        rec::RMEM_MAX_BYTES,
        Verdict::Fail,
        Scope::Net,
    );
    sysctl_min(
        ctx,
        "net.core.wmem_max",
        rec::WMEM_MAX_BYTES,
        Verdict::Fail,
        Scope::Net,
    );
    sysctl_min(
        ctx,
        "net.core.rmem_default",
        rec::RMEM_DEFAULT_BYTES,
        Verdict::Warn,
        Scope::Net,
    );
    sysctl_min(
        ctx,
        "net.core.wmem_default",
        rec::WMEM_DEFAULT_BYTES,
        Verdict::Warn,
        Scope::Net,
    );
    sysctl_min(
        ctx,
        "net.core.netdev_max_backlog",
        rec::NETDEV_MAX_BACKLOG_PACKETS,
        Verdict::Warn,
        Scope::Net,
    );
    check_udp_mem(ctx);
    sysctl_min(
        ctx,
        "net.core.optmem_max",
        rec::OPTMEM_MAX_BYTES,
        Verdict::Warn,
        Scope::Net,
    );
    sysctl_min(
        ctx,
        "net.ipv4.igmp_max_memberships",
        rec::IGMP_MAX_MEMBERSHIPS,
        Verdict::Warn,
        Scope::Net,
    );
    rp_filter_item(
        ctx,
        "net.ipv4.conf.all.rp_filter",
        "/proc/sys/net/ipv4/conf/all/rp_filter",
    );
    if let Some(iface) = ctx.iface.clone() {
        rp_filter_item(
            ctx,
            &format!("net.ipv4.conf.{iface}.rp_filter"),
            &format!("/proc/sys/net/ipv4/conf/{iface}/rp_filter"),
        );
    }
}

/// CAP_NET_ADMIN (bit 12) in this process's effective capabilities.
fn has_cap_net_admin(host: &Host) -> bool {
    let Some(status) = host.read_raw("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & 0x1000 != 0)
}

fn check_so_busy_poll(ctx: &mut Ctx) {
    let item = "busy.so_busy_poll";
    let rec = format!(">= {} or CAP_NET_ADMIN", rec::BUSY_READ_US);
    let cap = if has_cap_net_admin(ctx.host) {
        "yes"
    } else {
        "no"
    };
    let Some(cur) = ctx.host.sysctl("net.core.busy_read") else {
        ctx.emit(
            Verdict::NotApplicable,
            item,
            "busy_read absent (netns)",
            &rec,
            "set net.core.busy_read in the host namespace",
        );
        return;
    };
    let current = format!("busy_read={cur} cap={cap}");
    if cur.parse::<u64>().unwrap_or(0) >= rec::BUSY_READ_US || cap == "yes" {
        ctx.emit(Verdict::Ok, item, &current, &rec, "-");
    } else {
        ctx.emit(
            Verdict::Warn,
            item,
            &current,
            &rec,
            &format!("sysctl -w net.core.busy_read={}", rec::BUSY_READ_US),
        );
    }
}

fn napi_item(ctx: &mut Ctx, name: &str, recommended: u64) {
    let item = format!("napi.{name}");
    let rec = format!(">= {recommended}");
    let Some(iface) = ctx.iface.clone() else {
        ctx.emit(
            Verdict::NotApplicable,
            &item,
            "no interface (use --iface)",
            &rec,
            "-",
        );
        return;
    };
    let path = format!("/sys/class/net/{iface}/{name}");
    let Some(cur) = ctx.host.read(&path) else {
        ctx.emit(
            Verdict::NotApplicable,
            &item,
            &format!("not supported by {iface}"),
            &rec,
            "-",
        );
        return;
    };
    if cur.parse::<u64>().unwrap_or(0) >= recommended {
        ctx.emit(Verdict::Ok, &item, &cur, &rec, "-");
    } else {
        ctx.emit(
            Verdict::Warn,
            &item,
            &cur,
            &rec,
            &format!("echo {recommended} > {path}"),
        );
    }
}

pub fn check_busypoll(ctx: &mut Ctx) {
    ctx.area = "busypoll";
    sysctl_min(
        ctx,
        "net.core.busy_poll",
        rec::BUSY_POLL_US,
        Verdict::Warn,
        Scope::Net,
    );
    sysctl_min(
        ctx,
        "net.core.busy_read",
        rec::BUSY_READ_US,
        Verdict::Warn,
        Scope::Net,
    );
    check_so_busy_poll(ctx);
    napi_item(ctx, "napi_defer_hard_irqs", rec::NAPI_DEFER_HARD_IRQS);
    napi_item(ctx, "gro_flush_timeout", rec::GRO_FLUSH_TIMEOUT_NS);
}

/// Value of a kernel parameter (before "--", which starts init's arguments); the last wins.
pub fn cmdline_param(host: &Host, param: &str) -> Option<String> {
    let line = host.read("/proc/cmdline")?;
    let prefix = format!("{param}=");
    let mut found = None;
    for w in line.split(' ') {
        if w == "--" {
            break;
        }
        if let Some(v) = w.strip_prefix(&prefix) {
            found = Some(v.to_string());
        }
    }
    found
}

/// The CPU-list part of isolcpus/nohz_full/rcu_nocbs (flags such as managed_irq dropped).
pub fn cmdline_cpus(host: &Host, param: &str) -> Vec<u32> {
    let Some(v) = cmdline_param(host, param) else {
        return Vec::new();
    };
    let parts: Vec<&str> = v
        .split(',')
        .filter(|p| {
            let (a, b) = p.split_once('-').unwrap_or((p, "0"));
            is_num(a) && is_num(b)
        })
        .collect();
    parse_cpulist(&parts.join(",")).unwrap_or_default()
}

fn check_cmdline_item(ctx: &mut Ctx, param: &str) {
    let item = format!("cpu.{param}");
    let cpus = ctx.cpus_commas();
    let rec = format!("includes {cpus}");
    let want = if param == "isolcpus" {
        format!("managed_irq,domain,{cpus}")
    } else {
        cpus
    };
    let (cur, all) = match cmdline_param(ctx.host, param) {
        None => ("absent".to_string(), false),
        Some(v) => {
            let list = cmdline_cpus(ctx.host, param);
            let all = ctx.cpus.iter().all(|c| list.contains(c));
            (v, all)
        }
    };
    if all {
        ctx.emit(Verdict::Ok, &item, &cur, &rec, "-");
    } else {
        let fix = format!("(manual, reboot) grubby --update-kernel=ALL --args={param}={want}");
        ctx.emit(Verdict::Warn, &item, &cur, &rec, &fix);
    }
}

fn check_governor(ctx: &mut Ctx) {
    let item = "cpu.governor";
    let mut now = Vec::new();
    let mut bad = Vec::new();
    for &cpu in &ctx.cpus {
        let Some(cur) = ctx.host.read(&format!(
            "/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        )) else {
            continue;
        };
        now.push(format!("cpu{cpu}={cur}"));
        if cur != rec::GOVERNOR {
            bad.push(cpu);
        }
    }
    if now.is_empty() {
        ctx.emit(
            Verdict::NotApplicable,
            item,
            "no cpufreq (VM or fixed)",
            rec::GOVERNOR,
            "-",
        );
    } else if bad.is_empty() {
        ctx.emit(Verdict::Ok, item, &now.join(" "), rec::GOVERNOR, "-");
    } else {
        let fix: Vec<String> = bad
            .iter()
            .map(|c| {
                format!(
                    "echo {} > /sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor",
                    rec::GOVERNOR
                )
            })
            .collect();
        ctx.emit(
            Verdict::Warn,
            item,
            &now.join(" "),
            rec::GOVERNOR,
            &fix.join("; "),
        );
    }
}

fn check_cstates(ctx: &mut Ctx) {
    let item = "cpu.cstates";
    let rec = format!("exit latency > {}us disabled", rec::CSTATE_MAX_LATENCY_US);
    let mut seen = false;
    let mut bad = Vec::new();
    let mut paths = Vec::new();
    for &cpu in &ctx.cpus {
        let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle");
        for st in ctx.host.list(&dir) {
            let digits = st.strip_prefix("state").unwrap_or("");
            if !digits.starts_with(|c: char| c.is_ascii_digit())
                || !ctx.host.is_dir(&format!("{dir}/{st}"))
            {
                continue;
            }
            seen = true;
            let base = format!("{dir}/{st}");
            let Some(lat) = ctx.host.read(&format!("{base}/latency")) else {
                continue;
            };
            let dis = ctx
                .host
                .read(&format!("{base}/disable"))
                .unwrap_or_else(|| "0".into());
            let name = ctx
                .host
                .read(&format!("{base}/name"))
                .unwrap_or_else(|| st.clone());
            if lat.parse::<u64>().unwrap_or(0) > rec::CSTATE_MAX_LATENCY_US && dis != "1" {
                bad.push(format!("cpu{cpu}:{name}"));
                paths.push(format!("{base}/disable"));
            }
        }
    }
    if !seen {
        ctx.emit(Verdict::NotApplicable, item, "no cpuidle states", &rec, "-");
    } else if bad.is_empty() {
        ctx.emit(Verdict::Ok, item, "deep states disabled", &rec, "-");
    } else {
        let fix: Vec<String> = paths.iter().map(|p| format!("echo 1 > {p}")).collect();
        ctx.emit(
            Verdict::Warn,
            item,
            &format!("enabled: {}", bad.join(" ")),
            &rec,
            &fix.join("; "),
        );
    }
}

fn check_smt(ctx: &mut Ctx) {
    let item = "cpu.smt_siblings";
    let rec = "siblings idle or offline";
    let iso = cmdline_cpus(ctx.host, "isolcpus");
    let mut seen = false;
    let mut bad = Vec::new();
    let mut offline = Vec::new();
    for &cpu in &ctx.cpus {
        let Some(list) = ctx.host.read(&format!(
            "/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
        )) else {
            continue;
        };
        seen = true;
        let Some(list) = parse_cpulist(&list) else {
            continue;
        };
        for sib in list {
            if sib == cpu {
                continue;
            }
            if ctx.cpus.contains(&sib) {
                bad.push(format!("cpu{cpu}+poller{sib}"));
                offline.push(sib);
            } else if !iso.contains(&sib) {
                bad.push(format!("cpu{cpu}+cpu{sib}"));
                offline.push(sib);
            }
        }
    }
    if !seen {
        ctx.emit(Verdict::NotApplicable, item, "no CPU topology", rec, "-");
    } else if bad.is_empty() {
        ctx.emit(Verdict::Ok, item, "no busy sibling", rec, "-");
    } else {
        let fix: Vec<String> = offline
            .iter()
            .map(|s| format!("echo 0 > /sys/devices/system/cpu/cpu{s}/online"))
            .collect();
        ctx.emit(
            Verdict::Warn,
            item,
            &format!("shared: {}", bad.join(" ")),
            rec,
            &format!("(manual) {}", fix.join("; ")),
        );
    }
}

pub fn check_cpu(ctx: &mut Ctx) {
    ctx.area = "cpu";
    check_cmdline_item(ctx, "isolcpus");
    check_cmdline_item(ctx, "nohz_full");
    check_cmdline_item(ctx, "rcu_nocbs");
    check_governor(ctx);
    check_cstates(ctx);
    check_smt(ctx);
}

fn check_memlock(ctx: &mut Ctx) {
    let item = "mem.memlock";
    let rec_kib = rec::MEMLOCK_KIB_PER_POLLER * u64::from(ctx.pollers);
    let rec = format!(">= {rec_kib} KiB");
    // The soft limit of this process: the limit Cohort gets when started the same way.
    let soft = ctx.host.read_raw("/proc/self/limits").and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("Max locked memory"))
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
    });
    let Some(soft) = soft else {
        ctx.emit(Verdict::NotApplicable, item, "unreadable", &rec, "-");
        return;
    };
    if soft == "unlimited" {
        ctx.emit(Verdict::Ok, item, "unlimited", &rec, "-");
        return;
    }
    let kib = soft.parse::<u64>().unwrap_or(0) / 1024;
    let cur = format!("{kib} KiB");
    if kib >= rec_kib {
        ctx.emit(Verdict::Ok, item, &cur, &rec, "-");
    } else {
        let fix = format!("ulimit -l {rec_kib}; persist: {}", rec::MEMLOCK_LIMITS_FILE);
        ctx.emit(Verdict::Fail, item, &cur, &rec, &fix);
    }
}

fn check_systemd_memlock(ctx: &mut Ctx) {
    let item = "mem.systemd_memlock";
    let rec_bytes = rec::MEMLOCK_KIB_PER_POLLER * u64::from(ctx.pollers) * 1024;
    let rec = format!(">= {rec_bytes} or infinity");
    if !ctx.host.is_dir("/run/systemd/system") {
        ctx.emit(
            Verdict::NotApplicable,
            item,
            "systemd is not init",
            &rec,
            "-",
        );
        return;
    }
    let cur = match ctx.host.run(
        "systemctl",
        &["show", "--property=DefaultLimitMEMLOCK", "--value"],
    ) {
        ToolOutput::NotInstalled => {
            ctx.emit(
                Verdict::NotApplicable,
                item,
                "systemd is not init",
                &rec,
                "-",
            );
            return;
        }
        ToolOutput::Ok(text) => text.trim().to_string(),
        ToolOutput::Failed(_) => String::new(),
    };
    if cur.is_empty() {
        ctx.emit(Verdict::NotApplicable, item, "unreadable", &rec, "-");
    } else if cur == "infinity" || (is_num(&cur) && cur.parse::<u64>().unwrap_or(0) >= rec_bytes) {
        ctx.emit(Verdict::Ok, item, &cur, &rec, "-");
    } else {
        ctx.emit(
            Verdict::Warn,
            item,
            &cur,
            &rec,
            "(manual) LimitMEMLOCK=infinity in the cohort unit's [Service]",
        );
    }
}

/// The bracketed choice of a THP file: "always [madvise] never" -> "madvise".
pub fn thp_choice(text: &str) -> String {
    let after = text.split_once('[').map_or(text, |(_, rest)| rest);
    after.split(']').next().unwrap_or("").to_string()
}

fn thp_item(ctx: &mut Ctx, item: &str, path: &str, recommended: &str) {
    let rec = format!("{recommended} or never");
    let Some(text) = ctx.host.read(path) else {
        ctx.emit(
            Verdict::NotApplicable,
            item,
            "no THP on this kernel",
            &rec,
            "-",
        );
        return;
    };
    let cur = thp_choice(&text);
    if cur == "always" {
        ctx.emit(
            Verdict::Warn,
            item,
            &cur,
            &rec,
            &format!("echo {recommended} > {path}"),
        );
    } else {
        ctx.emit(Verdict::Ok, item, &cur, &rec, "-");
    }
}

pub fn check_memory(ctx: &mut Ctx) {
    ctx.area = "memory";
    check_memlock(ctx);
    check_systemd_memlock(ctx);
    thp_item(
        ctx,
        "mem.thp_enabled",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        rec::THP_ENABLED,
    );
    thp_item(
        ctx,
        "mem.thp_defrag",
        "/sys/kernel/mm/transparent_hugepage/defrag",
        rec::THP_DEFRAG,
    );
    let pages = rec::HUGEPAGES_PER_POLLER * u64::from(ctx.pollers);
    sysctl_min(ctx, "vm.nr_hugepages", pages, Verdict::Warn, Scope::Global);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thp_choice_reads_the_bracketed_word() {
        assert_eq!(thp_choice("always [madvise] never"), "madvise");
        assert_eq!(thp_choice("[always] madvise never"), "always");
        assert_eq!(
            thp_choice("always defer defer+madvise [madvise] never"),
            "madvise"
        );
    }
}

//! NIC checks through `ethtool` (queue count, RSS spread, coalescing, rings) and through
//! /proc/interrupts and /proc/irq (queue IRQ affinity), plus irqbalance. Read-only; wording and
//! verdicts match `tuning/lib/nic.sh`.

use super::checks::Ctx;
use super::host::{is_num, parse_cpulist, Host, ToolOutput};
use super::recommended as rec;
use super::report::Verdict;

/// `KEY:` value in an ethtool listing, searched after the line starting with `section` (until
/// the next section), or anywhere when `section` is empty.
pub fn ethtool_field(text: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    let want = format!("{key}:");
    for line in text.lines() {
        if !section.is_empty() && line.starts_with(section) {
            in_section = true;
            continue;
        }
        if line.starts_with("Pre-set maximums") || line.starts_with("Current hardware settings") {
            in_section = false;
        }
        if section.is_empty() || in_section {
            let l = line.trim_start_matches([' ', '\t']);
            if let Some(v) = l.strip_prefix(&want) {
                return Some(v.trim_matches([' ', '\t']).to_string());
            }
        }
    }
    None
}

/// "0 1 2 5" -> "0-2,5" (input sorted).
pub fn ranges(v: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

fn na_reason(ctx: &Ctx) -> Option<String> {
    if ctx.iface.is_none() {
        return Some("no interface (use --iface)".into());
    }
    None
}

/// Run ethtool: Err(N/A reason) when not installed.
fn ethtool(host: &Host, flag: &str, iface: &str) -> Result<Result<String, String>, String> {
    match host.run("ethtool", &[flag, iface]) {
        ToolOutput::NotInstalled => Err("ethtool not installed".into()),
        ToolOutput::Failed(first) => Ok(Err(first)),
        ToolOutput::Ok(text) => Ok(Ok(text)),
    }
}

fn num(s: &Option<String>) -> Option<u32> {
    s.as_deref()
        .filter(|v| is_num(v))
        .and_then(|v| v.parse().ok())
}

fn check_channels(ctx: &mut Ctx) {
    let item = "nic.channels";
    let rec_na = format!("{} queue(s)", ctx.pollers);
    if let Some(why) = na_reason(ctx) {
        return ctx.emit(Verdict::NotApplicable, item, &why, &rec_na, "-");
    }
    let iface = ctx.iface.clone().unwrap_or_default();
    let out = match ethtool(ctx.host, "-l", &iface) {
        Err(why) => return ctx.emit(Verdict::NotApplicable, item, &why, &rec_na, "-"),
        Ok(Err(_)) => {
            return ctx.emit(
                Verdict::NotApplicable,
                item,
                &format!("not supported by {iface}"),
                &rec_na,
                "-",
            )
        }
        Ok(Ok(text)) => text,
    };
    let f = |sec: &str, key: &str| ethtool_field(&out, sec, key);
    let (mc, mr, mt) = (
        f("Pre-set maximums", "Combined"),
        f("Pre-set maximums", "RX"),
        f("Pre-set maximums", "TX"),
    );
    let (cc, cr, ct) = (
        f("Current hardware settings", "Combined"),
        f("Current hardware settings", "RX"),
        f("Current hardware settings", "TX"),
    );
    let or0 = |v: Option<String>| v.filter(|s| !s.is_empty()).unwrap_or_else(|| "0".into());
    let (cur, rec) = if let Some(max) = num(&mc).filter(|m| *m > 0) {
        let n = ctx.pollers.min(max);
        (format!("combined {}", or0(cc)), format!("combined {n}"))
    } else if let Some(max) = num(&mr).filter(|m| *m > 0) {
        let n = ctx.pollers.min(max);
        let mut cur = format!("rx {}", or0(cr));
        let mut rec = format!("rx {n}");
        if let Some(mt) = num(&mt).filter(|m| *m > 0) {
            cur.push_str(&format!(" tx {}", or0(ct)));
            rec.push_str(&format!(" tx {}", n.min(mt)));
        }
        (cur, rec)
    } else {
        return ctx.emit(
            Verdict::NotApplicable,
            item,
            &format!("no queue counts on {iface}"),
            &rec_na,
            "-",
        );
    };
    if cur == rec {
        ctx.emit(Verdict::Ok, item, &cur, &rec, "-");
    } else {
        ctx.emit(
            Verdict::Warn,
            item,
            &cur,
            &rec,
            &format!("ethtool -L {iface} {rec}"),
        );
    }
}

fn check_rss(ctx: &mut Ctx) {
    let item = "nic.rss";
    let rec_na = format!("queues 0-{}", ctx.pollers - 1);
    if let Some(why) = na_reason(ctx) {
        return ctx.emit(Verdict::NotApplicable, item, &why, &rec_na, "-");
    }
    let iface = ctx.iface.clone().unwrap_or_default();
    let out = match ctx.host.run("ethtool", &["-x", &iface]) {
        ToolOutput::NotInstalled => {
            return ctx.emit(
                Verdict::NotApplicable,
                item,
                "ethtool not installed",
                &rec_na,
                "-",
            )
        }
        ToolOutput::Failed(_) => String::new(),
        ToolOutput::Ok(text) => text,
    };
    let mut used: Vec<u32> = Vec::new();
    let mut rings: Option<u32> = None;
    for line in out.lines() {
        let t = line.trim_start_matches([' ', '\t']);
        if let Some((head, rest)) = t.split_once(':') {
            if is_num(head) {
                used.extend(
                    rest.split_whitespace()
                        .filter(|w| is_num(w))
                        .filter_map(|w| w.parse::<u32>().ok()),
                );
            }
        }
        if rings.is_none() {
            if let Some((_, after)) = line.split_once(" with ") {
                if let Some((n, _)) = after.split_once(" RX ring") {
                    rings = n.parse().ok();
                }
            }
        }
    }
    used.sort_unstable();
    used.dedup();
    if used.is_empty() {
        return ctx.emit(
            Verdict::NotApplicable,
            item,
            &format!("no RSS table on {iface}"),
            &rec_na,
            "-",
        );
    }
    let n = ctx.pollers.min(rings.unwrap_or(ctx.pollers));
    let want: Vec<u32> = (0..n).collect();
    let (cur, rec) = (
        format!("queues {}", ranges(&used)),
        format!("queues {}", ranges(&want)),
    );
    if used == want {
        ctx.emit(Verdict::Ok, item, &cur, &rec, "-");
    } else {
        ctx.emit(
            Verdict::Warn,
            item,
            &cur,
            &rec,
            &format!("ethtool -X {iface} equal {n}"),
        );
    }
}

fn check_coalesce(ctx: &mut Ctx) {
    let item = "nic.coalesce";
    let rec = format!("adaptive-rx off, rx-usecs <= {}", rec::RX_USECS);
    if let Some(why) = na_reason(ctx) {
        return ctx.emit(Verdict::NotApplicable, item, &why, &rec, "-");
    }
    let iface = ctx.iface.clone().unwrap_or_default();
    let out = match ethtool(ctx.host, "-c", &iface) {
        Err(why) => return ctx.emit(Verdict::NotApplicable, item, &why, &rec, "-"),
        Ok(Err(_)) => {
            return ctx.emit(
                Verdict::NotApplicable,
                item,
                &format!("not supported by {iface}"),
                &rec,
                "-",
            )
        }
        Ok(Ok(text)) => text,
    };
    let arx = out
        .lines()
        .find_map(|l| l.strip_prefix("Adaptive RX:"))
        .map(|rest| {
            rest.trim_start_matches(' ')
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '/')
                .collect::<String>()
        })
        .unwrap_or_default();
    let usecs = ethtool_field(&out, "", "rx-usecs").unwrap_or_default();
    if (arx.is_empty() || arx == "n/a") && !is_num(&usecs) {
        return ctx.emit(
            Verdict::NotApplicable,
            item,
            &format!("not supported by {iface}"),
            &rec,
            "-",
        );
    }
    let show = |s: &str| {
        if s.is_empty() {
            "n/a".to_string()
        } else {
            s.to_string()
        }
    };
    let cur = format!("adaptive-rx {} rx-usecs {}", show(&arx), show(&usecs));
    let too_slow = is_num(&usecs) && usecs.parse::<u64>().unwrap_or(u64::MAX) > rec::RX_USECS;
    if arx != "on" && !too_slow {
        return ctx.emit(Verdict::Ok, item, &cur, &rec, "-");
    }
    let mut new = Vec::new();
    if arx == "on" || arx == "off" {
        new.push("adaptive-rx off".to_string());
    }
    if is_num(&usecs) {
        new.push(format!("rx-usecs {}", rec::RX_USECS));
    }
    ctx.emit(
        Verdict::Warn,
        item,
        &cur,
        &rec,
        &format!("ethtool -C {iface} {}", new.join(" ")),
    );
}

fn check_rings(ctx: &mut Ctx) {
    let item = "nic.rings";
    let rec_na = "rx = pre-set max";
    if let Some(why) = na_reason(ctx) {
        return ctx.emit(Verdict::NotApplicable, item, &why, rec_na, "-");
    }
    let iface = ctx.iface.clone().unwrap_or_default();
    let out = match ethtool(ctx.host, "-g", &iface) {
        Err(why) => return ctx.emit(Verdict::NotApplicable, item, &why, rec_na, "-"),
        Ok(Err(_)) => {
            return ctx.emit(
                Verdict::NotApplicable,
                item,
                &format!("not supported by {iface}"),
                rec_na,
                "-",
            )
        }
        Ok(Ok(text)) => text,
    };
    let max = num(&ethtool_field(&out, "Pre-set maximums", "RX"));
    let cur = num(&ethtool_field(&out, "Current hardware settings", "RX"));
    let (Some(max), Some(cur)) = (max, cur) else {
        return ctx.emit(
            Verdict::NotApplicable,
            item,
            &format!("no RX ring size on {iface}"),
            rec_na,
            "-",
        );
    };
    if cur >= max {
        ctx.emit(
            Verdict::Ok,
            item,
            &format!("rx {cur}"),
            &format!("rx {max}"),
            "-",
        );
    } else {
        ctx.emit(
            Verdict::Warn,
            item,
            &format!("rx {cur}"),
            &format!("rx {max}"),
            &format!("ethtool -G {iface} rx {max}"),
        );
    }
}

/// Queue IRQs of `iface` as (irq, queue index): IRQs of the NIC's PCI device (msi_irqs) or
/// named after the interface, whose action name says rx/tx/input/output/comp/queue.
pub fn queue_irqs(host: &Host, iface: &str) -> Vec<(u32, u32)> {
    let dev = format!("/sys/class/net/{iface}/device");
    let msi = if host.is_dir(&format!("{dev}/msi_irqs")) {
        host.list(&format!("{dev}/msi_irqs"))
    } else {
        host.list(&format!("{dev}/../msi_irqs"))
    };
    let Some(text) = host.read_raw("/proc/interrupts") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = fields.first() else {
            continue;
        };
        let Some(irq) = first.strip_suffix(':').filter(|n| is_num(n)) else {
            continue;
        };
        let name = fields.last().copied().unwrap_or("");
        if !msi.iter().any(|m| m == irq) && !name.contains(iface) {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if ["config", "event", "async", "ctrl"]
            .iter()
            .any(|w| lower.contains(w))
            || !["rx", "tx", "input", "output", "comp", "queue"]
                .iter()
                .any(|w| lower.contains(w))
        {
            continue;
        }
        let base = name.split('@').next().unwrap_or("");
        let queue = last_number(base).unwrap_or(0);
        if let Ok(irq) = irq.parse() {
            out.push((irq, queue));
        }
    }
    out
}

/// The last run of digits in `s`.
fn last_number(s: &str) -> Option<u32> {
    let bytes = s.as_bytes();
    let end = bytes.iter().rposition(|b| b.is_ascii_digit())? + 1;
    let start = bytes[..end]
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |p| p + 1);
    // A queue number too large for u32 is not a queue index: treat as queue 0.
    Some(s[start..end].parse().unwrap_or(0))
}

fn check_irq_affinity(ctx: &mut Ctx) {
    let item = "irq.affinity";
    let rec = format!("queue i -> cpu of poller i mod {}", ctx.pollers);
    let Some(iface) = ctx.iface.clone() else {
        return ctx.emit(
            Verdict::NotApplicable,
            item,
            "no interface (use --iface)",
            &rec,
            "-",
        );
    };
    let irqs = queue_irqs(ctx.host, &iface);
    if irqs.is_empty() {
        return ctx.emit(
            Verdict::NotApplicable,
            item,
            &format!("no queue IRQs for {iface}"),
            &rec,
            "-",
        );
    }
    let mut bad = Vec::new();
    let mut fixes = Vec::new();
    for &(irq, queue) in &irqs {
        let want = ctx.cpus[(queue as usize) % ctx.cpus.len()];
        let cur = ctx
            .host
            .read(&format!("/proc/irq/{irq}/smp_affinity_list"))
            .unwrap_or_else(|| "unreadable".into());
        if parse_cpulist(&cur) != Some(vec![want]) {
            bad.push(format!("{irq}:{cur}->{want}"));
            fixes.push(format!("echo {want} > /proc/irq/{irq}/smp_affinity_list"));
        }
    }
    if bad.is_empty() {
        ctx.emit(
            Verdict::Ok,
            item,
            &format!("{} IRQs on poller CPUs", irqs.len()),
            &rec,
            "-",
        );
    } else {
        let cur = format!("{}/{} misplaced: {}", bad.len(), irqs.len(), bad.join(" "));
        ctx.emit(Verdict::Warn, item, &cur, &rec, &fixes.join("; "));
    }
}

fn irqbalance_running(host: &Host) -> bool {
    host.list("/proc").iter().filter(|p| is_num(p)).any(|p| {
        host.read_raw(&format!("/proc/{p}/comm"))
            .is_some_and(|c| c.trim_end_matches('\n') == "irqbalance")
    })
}

/// IRQBALANCE_BANNED_CPULIST from irqbalance's environment file (last assignment wins).
fn irqbalance_banned(host: &Host) -> Vec<u32> {
    for file in ["/etc/default/irqbalance", "/etc/sysconfig/irqbalance"] {
        let Some(text) = host.read_raw(file) else {
            continue;
        };
        let mut value = String::new();
        for line in text.lines() {
            let Some(rest) = line
                .trim_start_matches([' ', '\t'])
                .strip_prefix("IRQBALANCE_BANNED_CPULIST=")
            else {
                continue;
            };
            let rest = rest.trim_start_matches(['"', '\'']);
            value = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '-')
                .collect();
        }
        if !value.is_empty() {
            return parse_cpulist(&value).unwrap_or_default();
        }
    }
    Vec::new()
}

fn check_irqbalance(ctx: &mut Ctx) {
    let item = "irq.irqbalance";
    let rec = "stopped, or poller CPUs banned";
    if !irqbalance_running(ctx.host) {
        return ctx.emit(Verdict::Ok, item, "not running", rec, "-");
    }
    let banned = irqbalance_banned(ctx.host);
    if !banned.is_empty() && ctx.cpus.iter().all(|c| banned.contains(c)) {
        return ctx.emit(Verdict::Ok, item, "running, pollers banned", rec, "-");
    }
    ctx.emit(
        Verdict::Warn,
        item,
        "running",
        rec,
        "systemctl stop irqbalance",
    );
}

pub fn check_nic(ctx: &mut Ctx) {
    ctx.area = "nic";
    check_channels(ctx);
    check_rss(ctx);
    check_coalesce(ctx);
    check_rings(ctx);
    check_irq_affinity(ctx);
    check_irqbalance(ctx);
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNELS: &str = "Channel parameters for va:\nPre-set maximums:\nRX:\t\t2\nTX:\t\t2\nOther:\t\tn/a\n\
        Combined:\tn/a\nCurrent hardware settings:\nRX:\t\t1\nTX:\t\t1\nOther:\t\tn/a\nCombined:\tn/a\n";

    #[test]
    fn ethtool_fields_are_read_from_their_section() {
        assert_eq!(
            ethtool_field(CHANNELS, "Pre-set maximums", "RX").as_deref(),
            Some("2")
        );
        assert_eq!(
            ethtool_field(CHANNELS, "Current hardware settings", "RX").as_deref(),
            Some("1")
        );
        assert_eq!(
            ethtool_field(CHANNELS, "Current hardware settings", "Combined").as_deref(),
            Some("n/a")
        );
        assert_eq!(
            ethtool_field("rx-usecs-irq: 3\nrx-usecs: 8\n", "", "rx-usecs").as_deref(),
            Some("8")
        );
    }

    #[test]
    fn queue_index_is_the_last_number_before_the_pci_address() {
        assert_eq!(last_number("virtio2-input.0"), Some(0));
        assert_eq!(last_number("eth0-TxRx-13"), Some(13));
        assert_eq!(last_number("mlx5_comp3"), Some(3));
        assert_eq!(last_number("rx"), None);
    }

    #[test]
    fn ranges_compress_runs() {
        assert_eq!(ranges(&[0, 1, 2, 5]), "0-2,5");
        assert_eq!(ranges(&[0]), "0");
    }
}

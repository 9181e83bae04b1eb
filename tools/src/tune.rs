//! `cohort tune check`: is this host ready for Cohort? Reads /proc/sys, /sys, /proc/interrupts,
//! /proc/cmdline and /proc/self/limits (and asks `ethtool`, `nft`, `iptables-save`,
//! `systemctl` when present), then prints one line per item with a verdict and a summary; the
//! exit status is 0 when no item FAILs, 1 otherwise (2 on bad input). It changes nothing:
//! `tuning/cohort-tune.sh apply` and `revert` do, and print the same item names and values.

mod checks;
mod config;
mod firewall;
mod host;
mod nic;
mod recommended;
mod report;

use anyhow::bail;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Read-only report: current value, recommended value, verdict and fix for each item.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// TOML file with pollers, cpus, iface, ports (see tuning/README.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// NIC Cohort uses (default: the interface of the default route).
    #[arg(long)]
    iface: Option<String>,
    /// Poller CPUs, a kernel CPU list such as 2-3 or 2,4 (default: the highest online CPUs).
    #[arg(long)]
    cpus: Option<String>,
    /// Number of data-plane pollers (default: the number of CPUs, else 1).
    #[arg(long)]
    pollers: Option<u32>,
    /// UDP ports Cohort uses, comma separated.
    #[arg(long, value_delimiter = ',')]
    ports: Option<Vec<u16>>,
    /// Restrict to areas: sysctl,busypoll,nic,cpu,memory,firewall.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Print one JSON object (inputs, items, summary) instead of the table.
    #[arg(long)]
    json: bool,
}

const AREAS: [&str; 6] = ["sysctl", "busypoll", "nic", "cpu", "memory", "firewall"];

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Check(a) => check(a),
    }
}

fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    // COHORT_TUNE_ROOT prefixes every kernel path, as in the script (tests use fixture trees).
    let host = host::Host::new(
        std::env::var_os("COHORT_TUNE_ROOT")
            .filter(|r| !r.is_empty())
            .map(PathBuf::from),
    );
    let cfg = match &a.config {
        Some(path) => config::load(path)?,
        None => config::TuneConfig::default(),
    };
    let only = a
        .only
        .clone()
        .unwrap_or_else(|| AREAS.iter().map(|s| s.to_string()).collect());
    if let Some(bad) = only.iter().find(|o| !AREAS.contains(&o.as_str())) {
        bail!("unknown area '{bad}' (areas: {})", AREAS.join(","));
    }
    let pollers_arg = a.pollers.or(cfg.pollers);
    if let Some(p) = pollers_arg {
        if p == 0 || p > config::POLLERS_MAX {
            bail!(
                "--pollers must be a number from 1 to {}",
                config::POLLERS_MAX
            );
        }
    }
    let online = host
        .read("/sys/devices/system/cpu/online")
        .and_then(|s| host::parse_cpulist(&s))
        .unwrap_or_else(|| vec![0]);
    let cpus_arg = match &a.cpus {
        Some(s) => Some(
            host::parse_cpulist(s)
                .ok_or_else(|| anyhow::anyhow!("--cpus '{s}' is not a CPU list (e.g. 2-3,5)"))?,
        ),
        None => cfg.cpus.clone(),
    };
    let (cpus, pollers) = match cpus_arg {
        Some(cpus) => {
            if let Some(c) = cpus.iter().find(|c| !online.contains(c)) {
                bail!(
                    "CPU {c} is not online (online: {})",
                    report::join_commas(&online)
                );
            }
            if let Some((_, c)) = cpus
                .iter()
                .enumerate()
                .find(|(i, c)| cpus[..*i].contains(c))
            {
                bail!("CPU {c} is listed twice in --cpus (one poller per CPU)");
            }
            if let Some(p) = pollers_arg.filter(|p| *p as usize != cpus.len()) {
                bail!("--pollers {p} but --cpus lists {} CPUs", cpus.len());
            }
            let n = u32::try_from(cpus.len()).unwrap_or(u32::MAX);
            if n > config::POLLERS_MAX {
                bail!("--cpus lists more than {} CPUs", config::POLLERS_MAX);
            }
            (cpus, n)
        }
        None => {
            let p = pollers_arg.unwrap_or(1);
            if p as usize > online.len() {
                bail!("--pollers {p} but only {} CPUs are online", online.len());
            }
            (online[online.len() - p as usize..].to_vec(), p)
        }
    };
    let ports = a.ports.clone().or(cfg.ports.clone()).unwrap_or_default();
    if ports.contains(&0) {
        bail!("--ports: '0' is not a port (1-65535)");
    }
    let iface = match a.iface.clone().or(cfg.iface.clone()) {
        Some(i) => {
            if i.is_empty() || i.contains('/') || !host.exists(&format!("/sys/class/net/{i}")) {
                bail!("interface '{i}' does not exist");
            }
            Some(i)
        }
        None => default_route_iface(&host),
    };
    let mut ctx = checks::Ctx {
        host: &host,
        iface,
        cpus,
        pollers,
        ports,
        items: Vec::new(),
        area: "",
    };
    let on = |area: &str| only.iter().any(|o| o == area);
    if on("sysctl") {
        checks::check_sysctl(&mut ctx);
    }
    if on("busypoll") {
        checks::check_busypoll(&mut ctx);
    }
    if on("nic") {
        nic::check_nic(&mut ctx);
    }
    if on("cpu") {
        checks::check_cpu(&mut ctx);
    }
    if on("memory") {
        checks::check_memory(&mut ctx);
    }
    if on("firewall") {
        firewall::check_firewall(&mut ctx);
    }
    let inputs = report::Inputs {
        iface: ctx.iface.clone(),
        cpus: ctx.cpus.clone(),
        pollers,
        ports: ctx.ports.clone(),
    };
    let report = report::Report::new(inputs, ctx.items);
    let text = if a.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.to_text()
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // The reader went away (`| head`): the verdict still goes out as the exit status.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    Ok(if report.summary.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The interface of the default route in /proc/net/route.
fn default_route_iface(host: &host::Host) -> Option<String> {
    let text = host.read_raw("/proc/net/route")?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000")).then(|| f[0].to_string())
    })
}

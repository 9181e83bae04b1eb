//! `cohort demo`: the README's main job on one machine, no root, no config.
//!
//! Starts a local group of 3 member processes (this program re-executed as `cohort member`)
//! on loopback — IP multicast on 127.0.0.1 if a test join and loopback datagram work here,
//! else unicast fan-out — streams cbcast and abcast traffic (each member alternates causal and
//! total messages), shows progress, then prints delivered msgs/s, latency percentiles per
//! member and the trace checker's verdict (completeness required). Bounded: the members get
//! `--duration` seconds, the demo kills its own children if they overrun.
//!
//! Not shown yet, and said so in the output: killing a member mid-run (view change, flush) and
//! a fourth member joining with state transfer. Both need the membership protocol, which does
//! not exist yet; views are static.
//!
//! Exit status: 0 only if every member completed and the checker found no violation.

use anyhow::Context;
use cohort::checker::{check, CheckConfig};
use cohort::trace::read_trace_dir;
use cohort_transport::{Dest, DriverChoice, GroupMode, SendBatch, SocketConfig};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the multicast probe waits for its own datagram.
const MULTICAST_PROBE_WAIT_MS: u64 = 300;
/// Extra time the demo gives its members beyond their own `--duration` before killing them.
const KILL_GRACE_S: u64 = 10;
/// Progress display period.
const PROGRESS_PERIOD_MS: u64 = 250;

#[derive(clap::Args)]
pub struct Args {
    /// Keep the members' traces here (default: a fresh directory under the system temp dir).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Members to start.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Messages each member sends.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Payload bytes (≥ 16 carries a send timestamp for latency).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages per second per member (0: as fast as the window allows; latency then
    /// includes queueing behind the full window).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Upper bound on the members' run, in seconds.
    #[arg(long, default_value_t = 40)]
    pub duration: u64,
    /// Use unicast fan-out even where multicast works.
    #[arg(long)]
    pub no_multicast: bool,
}

#[derive(Default)]
struct ChildState {
    delivered: u64,
    expected: u64,
    summary: Option<HashMap<String, String>>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((1..=16).contains(&args.members), "--members must be 1..=16");
    let dir = args.trace.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("cohort-demo-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ports = free_ports(args.members + 1)?;
    let addrs: Vec<SocketAddr> = ports[..args.members]
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let group_addr = SocketAddr::from((
        [239, 255, (std::process::id() % 250) as u8 + 1, 7],
        ports[args.members],
    ));
    let multicast = !args.no_multicast && multicast_works(group_addr);
    println!("cohort demo: {} members on loopback", args.members);
    println!(
        "  transport: {}",
        if multicast {
            format!("IP multicast {group_addr} on 127.0.0.1 (TTL 1)")
        } else {
            "unicast fan-out (multicast not available here)".to_owned()
        }
    );
    println!(
        "  traffic:   each member sends {} messages of {} B, alternating cbcast (causal) and abcast (total), {}",
        args.count,
        args.size,
        if args.rate == 0 {
            "unthrottled (latency includes queueing behind a full window; try --rate)".to_owned()
        } else {
            format!("{} msgs/s each", args.rate)
        }
    );
    println!("  traces:    {}", dir.display());

    let exe = std::env::current_exe().context("finding this program")?;
    let list = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let states: Vec<Arc<Mutex<ChildState>>> = (0..args.members)
        .map(|_| Arc::new(Mutex::new(ChildState::default())))
        .collect();
    let mut children: Vec<Child> = Vec::new();
    let mut readers = Vec::new();
    let start = Instant::now();
    for (a, state) in addrs.iter().zip(&states) {
        let mut cmd = Command::new(&exe);
        cmd.args(["member", "--group", "demo", "--bind", &a.to_string()])
            .args(["--members", &list, "--order", "causal,total"])
            .args(["--count", &args.count.to_string()])
            .args(["--size", &args.size.to_string()])
            .args(["--rate", &args.rate.to_string()])
            .args(["--duration", &args.duration.to_string()])
            .args(["--progress-ms", &PROGRESS_PERIOD_MS.to_string()])
            .arg("--trace")
            .arg(&dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if multicast {
            cmd.args([
                "--multicast",
                &group_addr.to_string(),
                "--iface",
                "127.0.0.1",
            ]);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                kill_all(&mut children);
                return Err(e).context("starting a member process");
            }
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let state = state.clone();
        readers.push(std::thread::spawn(move || {
            read_member_output(stdout, &state)
        }));
        children.push(child);
    }

    let tty = std::io::stdout().is_terminal();
    let kill_at = start + Duration::from_secs(args.duration + KILL_GRACE_S);
    let mut statuses = vec![None; children.len()];
    let mut last_line = Instant::now();
    while statuses.iter().any(Option::is_none) {
        for (i, c) in children.iter_mut().enumerate() {
            if statuses[i].is_none() {
                statuses[i] = c.try_wait().context("waiting for a member")?;
            }
        }
        let (delivered, expected) = states.iter().fold((0, 0), |(d, e), s| {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            (d + s.delivered, e + s.expected)
        });
        let line = format!(
            "  [{:5.1} s] delivered {delivered:>9} of {:>9} ({:3.0} %)",
            start.elapsed().as_secs_f64(),
            expected.max(delivered),
            if expected > 0 {
                100.0 * delivered as f64 / expected as f64
            } else {
                0.0
            }
        );
        if tty {
            print!("\r{line}");
            std::io::stdout().flush().ok();
        } else if last_line.elapsed() >= Duration::from_millis(500) {
            println!("{line}");
            last_line = Instant::now();
        }
        if Instant::now() > kill_at {
            println!();
            println!("  members overran their bound: stopping them");
            kill_all(&mut children);
            break;
        }
        std::thread::sleep(Duration::from_millis(PROGRESS_PERIOD_MS / 2));
    }
    if tty {
        println!();
    }
    for r in readers {
        let _ = r.join();
    }
    let wall = start.elapsed();

    // Results.
    println!("results:");
    let mut all_complete = true;
    let mut deliveries = 0u64;
    let mut longest = 0f64;
    for ((a, state), status) in addrs.iter().zip(&states).zip(&statuses) {
        let s = state.lock().unwrap_or_else(|e| e.into_inner());
        let ok = status.is_some_and(|st| st.success());
        all_complete &= ok;
        match &s.summary {
            Some(m) => {
                let get = |k: &str| m.get(k).map_or("-", String::as_str);
                deliveries += get("delivered").parse::<u64>().unwrap_or(0);
                longest = longest.max(get("elapsed_s").parse::<f64>().unwrap_or(0.0));
                println!(
                    "  {a}: sent {:>7}  delivered {:>8}/{:<8}  {:>9} msgs/s  latency p50 {:>7} us  p99 {:>7} us  [{}]",
                    get("sent"),
                    get("delivered"),
                    get("expected"),
                    get("msgs_per_s"),
                    get("p50_us"),
                    get("p99_us"),
                    if ok { "complete" } else { "INCOMPLETE" }
                );
            }
            None => println!("  {a}: no summary (exit status {status:?})"),
        }
    }
    if longest > 0.0 {
        println!(
            "  group: {deliveries} deliveries in {longest:.2} s = {:.0} delivered msgs/s (all members); wall time {:.1} s",
            deliveries as f64 / longest,
            wall.as_secs_f64()
        );
    }
    let traces = read_trace_dir(&dir).context("reading the traces")?;
    let report = check(
        &traces,
        &CheckConfig {
            require_complete: true,
            ..Default::default()
        },
    );
    println!("trace checker (properties 1-10 and completeness):");
    for line in report.to_string().lines() {
        println!("  {line}");
    }
    let clean = report.is_ok() && traces.len() == args.members;
    println!(
        "verdict: {}",
        match (clean, all_complete) {
            (true, true) => "CLEAN — every member delivered every message; no violation",
            (true, false) => "INCOMPLETE — the traces are clean but a member did not finish",
            _ => "VIOLATIONS — see above",
        }
    );
    println!(
        "not shown yet: killing a member mid-run (view change and flush) and a fourth member \
         joining with state transfer — both need the membership protocol, which is not built \
         yet (views are static)."
    );
    Ok(if clean && all_complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read_member_output(stdout: std::process::ChildStdout, state: &Mutex<ChildState>) {
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let kind = words.next();
        let fields: HashMap<String, String> = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let num = |k: &str| fields.get(k).and_then(|v| v.parse().ok());
        match kind {
            Some("progress") => {
                s.delivered = num("delivered").unwrap_or(s.delivered);
                s.expected = num("expected").unwrap_or(s.expected);
            }
            Some("summary") => {
                s.delivered = num("delivered").unwrap_or(s.delivered);
                s.expected = num("expected").unwrap_or(s.expected);
                s.summary = Some(fields);
            }
            _ => {}
        }
    }
}

fn kill_all(children: &mut [Child]) {
    for c in children {
        if let Ok(None) = c.try_wait() {
            let _ = c.kill(); // our own child, by its PID
            let _ = c.wait();
        }
    }
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free loopback ports")?;
    sockets.iter().map(|s| Ok(s.local_addr()?.port())).collect()
}

/// Whether a multicast join on 127.0.0.1 works here: join, send one datagram to the group,
/// and see it come back within [`MULTICAST_PROBE_WAIT_MS`].
fn multicast_works(group: SocketAddr) -> bool {
    let mut cfg = SocketConfig::unicast(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.group = GroupMode::Multicast {
        group,
        iface: Ipv4Addr::LOCALHOST,
        ttl: 1,
        loopback: true,
    };
    cfg.recv_buffer_bytes = 1 << 16;
    cfg.send_buffer_bytes = 1 << 16;
    let Ok(mut t) = cohort_transport::open(DriverChoice::Mmsg, &cfg) else {
        return false;
    };
    let mut batch = SendBatch::new(1, cfg.datagram_bytes_max);
    const PROBE: &[u8] = b"cohort-demo-multicast-probe";
    if batch.push(Dest::Group, PROBE).is_err() || !matches!(t.send(&batch), Ok(1)) {
        return false;
    }
    let deadline = Instant::now() + Duration::from_millis(MULTICAST_PROBE_WAIT_MS);
    while Instant::now() < deadline {
        let _ = t.wait_readable(Duration::from_millis(20));
        let mut seen = false;
        let _ = t.recv(8, &mut |_, bytes| seen |= bytes == PROBE);
        if seen {
            return true;
        }
    }
    false
}

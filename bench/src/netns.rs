//! The `netns` scenario: three hosts in network namespaces on a Linux bridge, one real
//! `cohort member` process per host, IP multicast between them (unicast fan-out when multicast
//! does not work, said in the output), with and without random packet loss.
//!
//! The hosts: namespaces `cbn-<pid>-<k>-h<i>`, each with one veth (`10.78.<s>.<i+1>/24`, a
//! `224.0.0.0/4` route, IPv6 off, permanent neighbour entries) into a bridge that lives in a
//! namespace of its own (`cbn-<pid>-<k>-br`, multicast snooping off), so the machine's own
//! network is never touched. UDP segmentation offload is turned off on each host's veth
//! (`ethtool -K <veth> tx-udp-segmentation off`): a GSO "super-datagram" is split into
//! MTU-sized datagrams as it leaves the sending host, as on a real link between hosts, and a
//! loss rule drops datagrams, not whole trains of 64 (the record says whether this worked).
//!
//! Per sender count (1: host 0 sends; all: every host sends), first the **raw ceiling of the
//! same path**: [`crate::group_ceiling`]'s packed datagrams between three member threads whose
//! sockets were opened inside the three namespaces, bound to the hosts' addresses, same
//! driver, addressing and sender count, 64-datagram batches, GSO+GRO asked for as a node
//! does. Then, per order and loss rate, the protocol: `cohort member --driver D --order O
//! --count C --size S --progress-ms 10 [--multicast G --iface A]` on every host (a host that
//! does not send runs with `--count 0`; the sender is stopped with SIGTERM once every receiver
//! has finished). Loss is `numgen random mod 100 < P drop` on UDP in every host's input hook
//! (nftables, table `cbn_loss`); there is no `tc netem` on this kernel.
//!
//! Measured: the *group rate* the ceiling also reports — messages per second that reached
//! every member — over the steady part of the run: between the moments when 10 % and 90 % of
//! all deliveries (summed over members) had happened, from the members' progress lines as
//! this process reads them (one clock), divided by the number of members. The whole-run rate
//! from the members' summaries (deliveries from others / (members − 1) / the longest
//! member's first-send-to-last-delivery time) is recorded beside it (`run_msgs_per_s`), and
//! so are the counts: every message must reach every member (`complete`).
//!
//! Needs root (namespaces, bridge, nftables), iproute2 and the release `cohort` binary (found
//! next to this binary, or given with `--cohort` / `COHORT_BIN`). Without root the scenario
//! prints `SKIPPED: ...` and runs nothing. Everything it creates is removed at the end, also on
//! error or panic (guards), and leftovers of a killed run (namespaces with this module's
//! prefix whose owner PID is gone) are removed at the next start. Every run is bounded: the
//! members by `--duration`, this process's wait by that plus [`EXIT_GRACE_SECS`].

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::axes::{BenchOrder, Senders};
use crate::ceiling::DriverName;
use crate::group_ceiling::{run_group_point_placed, Addressing, GroupPoint, MemberPlace};
use crate::loopback::{NODE_DATAGRAM_BYTES, NODE_SEND_BATCH_DATAGRAMS};
use crate::output::{Progress, ResultRecord};

/// Every namespace this module creates is named `cbn-<pid>-<seq>-<h<i>|br>` (the multi-host
/// tests of `tools/tests/netns` use `cohort-t-`; the two never meet).
pub const NAME_PREFIX: &str = "cbn-";
/// Hosts (namespaces, members) of the scenario.
pub const HOSTS: usize = 3;
/// Port every member binds on its host's address.
pub const MEMBER_PORT: u16 = 7400;
/// Port of the members' multicast group.
pub const GROUP_PORT: u16 = 7500;
/// Port the ceiling's sockets bind.
pub const CEILING_PORT: u16 = 7600;
/// Port of the ceiling's multicast group.
pub const CEILING_GROUP_PORT: u16 = 7700;
/// nftables table (inet family, in every host namespace) holding the loss rule.
pub const NFT_TABLE: &str = "cbn_loss";
/// How often members print a progress line, in milliseconds.
pub const PROGRESS_MS: u64 = 10;
/// Time a run gets beyond its members' `--duration` before they are killed, in seconds.
pub const EXIT_GRACE_SECS: f64 = 10.0;
/// Progress samples kept per member (later ones are counted, not kept).
pub const PROGRESS_SAMPLES_MAX: usize = 1_000_000;
/// Lines of a member's stderr kept for error reports (the latest).
pub const STDERR_LINES_MAX: usize = 20;
/// The steady window: from this share of all deliveries ...
pub const WINDOW_FROM: f64 = 0.1;
/// ... to this one.
pub const WINDOW_TO: f64 = 0.9;
/// Most messages one point may send in total.
pub const MESSAGES_MAX: u64 = 100_000_000;
/// How long the bench waits for the sender's first progress line before starting the
/// receivers of a one-sender point, in milliseconds.
pub const SENDER_START_WAIT_MS: u64 = 5_000;
/// How long after the first receiver of a one-sender point left the others may still run
/// before everyone is stopped, in milliseconds.
pub const RECEIVER_EXIT_SPREAD_MS: u64 = 3_000;
/// Attempts per point run before an incomplete run is reported as such.
pub const ATTEMPTS_MAX: usize = 3;
/// How often the bench looks at its members while they run, in milliseconds.
const POLL_MS: u64 = 10;

static HOSTS_SEQ: AtomicUsize = AtomicUsize::new(0);
static STALE_CLEANUP: std::sync::Once = std::sync::Once::new();

/// What the netns scenario runs.
#[derive(Clone, Debug)]
pub struct NetnsPlan {
    pub driver: DriverName,
    /// Preferred addressing (multicast falls back to fan-out when it does not work).
    pub addressing: Addressing,
    pub senders: Vec<Senders>,
    pub orders: Vec<BenchOrder>,
    pub size: usize,
    /// Messages per point, split over the senders.
    pub messages: u64,
    /// Loss rates in percent (0 is loss-free; the loss ratio needs 0 in the list).
    pub loss_percents: Vec<u8>,
    /// Each member's `--duration` (the bound of a point), in seconds.
    pub seconds_max: f64,
    /// Runs per point; the one with the median steady rate is reported.
    pub repeat: usize,
    pub ceiling_seconds: f64,
    /// The `cohort` binary (None: next to this executable, or `COHORT_BIN`).
    pub cohort: Option<PathBuf>,
}

impl Default for NetnsPlan {
    fn default() -> Self {
        NetnsPlan {
            driver: DriverName::Uring,
            addressing: Addressing::Multicast,
            senders: vec![Senders::One, Senders::All],
            orders: vec![BenchOrder::Fifo, BenchOrder::Total],
            size: 64,
            messages: 400_000,
            loss_percents: vec![0, 1],
            seconds_max: 30.0,
            repeat: 1,
            ceiling_seconds: 1.0,
            cohort: None,
        }
    }
}

impl NetnsPlan {
    /// Progress steps: per sender count one ceiling and `repeat` runs per order and loss rate.
    pub fn steps(&self) -> usize {
        self.senders.len() * (1 + self.orders.len() * self.loss_percents.len() * self.repeat)
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

/// Output of a finished command.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    match cmd.output() {
        Ok(out) => Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Err(e) => Run {
            ok: false,
            stdout: String::new(),
            stderr: format!("cannot spawn {cmd:?}: {e}"),
        },
    }
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<Run> {
    let r = run(cmd);
    if !r.ok {
        bail!("{cmd:?} failed: {}{}", r.stdout.trim(), r.stderr.trim());
    }
    Ok(r)
}

fn ip() -> Command {
    Command::new("ip")
}

/// Whether `tool` is an executable file on PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Why the scenario cannot run here, if it cannot (the caller prints `SKIPPED: ...`).
pub fn unavailable() -> Option<String> {
    if !is_root() {
        return Some(
            "netns scenario needs root (network namespaces, a bridge, nftables); run it as root"
                .into(),
        );
    }
    if !have("ip") {
        return Some("netns scenario needs iproute2 (`ip` not found on PATH)".into());
    }
    None
}

/// The `cohort` binary: `explicit`, else `COHORT_BIN`, else next to this executable (or one
/// directory up, where a test binary in `deps/` finds it).
pub fn locate_cohort(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--cohort {}: no such file", p.display());
    }
    if let Some(p) = std::env::var_os("COHORT_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("COHORT_BIN={}: no such file", p.display());
    }
    let exe = std::env::current_exe().context("finding this executable's path")?;
    let mut looked = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join("cohort");
        if p.is_file() {
            return Ok(p);
        }
        looked.push(p.display().to_string());
    }
    bail!(
        "the `cohort` binary was not found (looked at {}): build it with \
         `cargo build --release -p cohort-tools` (or pass --cohort PATH)",
        looked.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// Hosts

/// Whether `pid` is a live process (a zombie — killed, not yet reaped — counts as dead).
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Names from `ip netns list` ("name" or "name (id: N)").
pub fn netns_names() -> Vec<String> {
    run(ip().args(["netns", "list"]))
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The owner PID a namespace name of this module carries.
pub fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NAME_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn kill_pids_in(netns: &str) {
    let pids = run(ip().args(["netns", "pids", netns]));
    for p in pids.stdout.split_whitespace() {
        if p.parse::<u32>().is_ok() {
            let _ = run(Command::new("kill").args(["-KILL", p]));
        }
    }
}

/// Removes leftovers of killed runs: namespaces named with [`NAME_PREFIX`] whose owner PID is
/// dead (their processes, started by that run, are killed by PID first). Returns the names.
pub fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for name in netns_names() {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        kill_pids_in(&name);
        if run(ip().args(["netns", "del", &name])).ok {
            removed.push(name);
        }
    }
    removed
}

/// Three (or `n`) hosts on a bridge; everything made is removed on drop.
pub struct Hosts {
    pub netns: Vec<String>,
    pub addrs: Vec<Ipv4Addr>,
    /// Each host's veth (inside its namespace).
    pub ifaces: Vec<String>,
    pub bridge_netns: String,
    pub multicast_group: Ipv4Addr,
    /// UDP segmentation is off on every host's veth (datagrams cross the bridge one by one).
    pub wire_segmented: bool,
    created: Vec<String>,
}

impl Hosts {
    /// Builds `n` hosts; on a failed step, what was made is removed and the error returned.
    pub fn new(n: usize) -> anyhow::Result<Hosts> {
        if !(1..=250).contains(&n) {
            bail!("1..=250 hosts, not {n}");
        }
        STALE_CLEANUP.call_once(|| {
            for name in remove_stale() {
                eprintln!("netns: removed leftover namespace {name} of a dead run");
            }
        });
        let seq = HOSTS_SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let subnet = (1 + (pid as usize + seq) % 250) as u8;
        let base = format!("{NAME_PREFIX}{pid}-{seq}");
        let mut h = Hosts {
            netns: (0..n).map(|i| format!("{base}-h{i}")).collect(),
            addrs: (0..n)
                .map(|i| Ipv4Addr::new(10, 78, subnet, i as u8 + 1))
                .collect(),
            ifaces: (0..n).map(|i| format!("cbn{subnet}h{i}")).collect(),
            bridge_netns: format!("{base}-br"),
            multicast_group: Ipv4Addr::new(239, 78, subnet, 1),
            wire_segmented: false,
            created: Vec::new(),
        };
        h.build(subnet)?; // on error, `h` drops here and removes what it made
        Ok(h)
    }

    fn add_netns(&mut self, name: &str) -> anyhow::Result<()> {
        run_ok(ip().args(["netns", "add", name]))?;
        self.created.push(name.to_string());
        Ok(())
    }

    fn build(&mut self, subnet: u8) -> anyhow::Result<()> {
        let br_ns = self.bridge_netns.clone();
        let bridge = format!("cbn{subnet}br");
        self.add_netns(&br_ns)?;
        let brn = |args: &[&str]| run_ok(ip().args(["-n", &br_ns]).args(args));
        brn(&["link", "set", "lo", "up"])?;
        brn(&[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "stp_state",
            "0",
        ])?;
        brn(&["link", "set", &bridge, "up"])?;
        let mut segmented = have("ethtool");
        for i in 0..self.netns.len() {
            let ns = self.netns[i].clone();
            let iface = self.ifaces[i].clone();
            let port = format!("cbn{subnet}p{i}");
            let mac = mac(subnet, i);
            self.add_netns(&ns)?;
            run_ok(ip().args([
                "link", "add", &iface, "netns", &ns, "address", &mac, "type", "veth", "peer",
                "name", &port, "netns", &br_ns,
            ]))?;
            brn(&["link", "set", &port, "master", &bridge])?;
            brn(&["link", "set", &port, "up"])?;
            let hn = |args: &[&str]| run_ok(ip().args(["-n", &ns]).args(args));
            hn(&["link", "set", "lo", "up"])?;
            for key in [
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ] {
                run_ok(ip().args(["netns", "exec", &ns, "sysctl", "-qw", key]))?;
            }
            hn(&[
                "addr",
                "add",
                &format!("{}/24", self.addrs[i]),
                "dev",
                &iface,
            ])?;
            hn(&["link", "set", &iface, "up"])?;
            hn(&["route", "add", "224.0.0.0/4", "dev", &iface])?;
            if segmented {
                segmented = run(ip().args([
                    "netns",
                    "exec",
                    &ns,
                    "ethtool",
                    "-K",
                    &iface,
                    "tx-udp-segmentation",
                    "off",
                ]))
                .ok;
            }
        }
        self.wire_segmented = segmented;
        for i in 0..self.netns.len() {
            for j in (0..self.netns.len()).filter(|&j| j != i) {
                run_ok(ip().args([
                    "-n",
                    &self.netns[i],
                    "neigh",
                    "replace",
                    &self.addrs[j].to_string(),
                    "lladdr",
                    &mac(subnet, j),
                    "dev",
                    &self.ifaces[i],
                    "nud",
                    "permanent",
                ]))?;
            }
        }
        Ok(())
    }

    /// The namespace's file for `setns`.
    pub fn netns_path(&self, host: usize) -> PathBuf {
        Path::new("/run/netns").join(&self.netns[host])
    }

    /// `ip netns exec <host> [setpriv --pdeathsig KILL --] program args..`: the program keeps
    /// the PID of the spawned child, and dies with this process.
    pub fn command(&self, host: usize, program: &Path, args: &[String]) -> Command {
        let mut c = ip();
        c.args(["netns", "exec", &self.netns[host]]);
        if have("setpriv") {
            c.args(["setpriv", "--pdeathsig", "KILL", "--"]);
        }
        c.arg(program).args(args);
        c
    }

    /// Random loss of `percent` % on every host's UDP input (0 removes it).
    pub fn set_loss(&self, percent: u8) -> anyhow::Result<()> {
        if percent > 100 {
            bail!("loss is a percentage, not {percent}");
        }
        let mut script = format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n");
        if percent > 0 {
            let dice = if percent >= 100 {
                String::new()
            } else {
                format!("numgen random mod 100 < {percent} ")
            };
            script.push_str(&format!(
                "table inet {NFT_TABLE} {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  meta l4proto udp {dice}counter drop\n }}\n}}\n"
            ));
        }
        for ns in &self.netns {
            let mut child = ip()
                .args(["netns", "exec", ns, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("spawning nft")?;
            child
                .stdin
                .take()
                .context("nft stdin")?
                .write_all(script.as_bytes())
                .context("writing the nft script")?;
            let out = child.wait_with_output().context("waiting for nft")?;
            if !out.status.success() {
                bail!(
                    "nft -f in {ns} failed: {}\n{script}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }

    /// Datagrams the loss rules dropped so far, summed over hosts (0 without rules).
    pub fn loss_drops(&self) -> u64 {
        let mut total = 0;
        for ns in &self.netns {
            let r = run(ip().args([
                "netns", "exec", ns, "nft", "list", "table", "inet", NFT_TABLE,
            ]));
            if !r.ok {
                continue;
            }
            for line in r.stdout.lines() {
                let mut words = line.split_whitespace();
                if words.any(|w| w == "packets") {
                    total += words
                        .next()
                        .and_then(|w| w.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        total
    }
}

fn mac(subnet: u8, i: usize) -> String {
    format!("02:78:{subnet:02x}:00:00:{:02x}", i + 1)
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Members are gone already (their guards drop first); anything still inside one of
        // our namespaces was started by us, and is killed by PID. Deleting a namespace
        // deletes its devices: the veths (both ends) and the bridge.
        for name in self.created.iter().rev() {
            kill_pids_in(name);
            let r = run(ip().args(["netns", "del", name]));
            if !r.ok {
                eprintln!("netns: cannot delete {name}: {}", r.stderr.trim());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Members

#[derive(Default)]
struct Captured {
    /// (time since the point started, sent, delivered) per progress line.
    progress: Vec<(f64, u64, u64)>,
    progress_dropped: u64,
    summary: Option<String>,
    stderr: std::collections::VecDeque<String>,
}

/// One `cohort member` process; SIGKILLed by PID and reaped on drop.
struct MemberProc {
    child: Child,
    captured: Arc<Mutex<Captured>>,
    readers: Vec<JoinHandle<()>>,
    exited_at: Option<f64>,
}

impl MemberProc {
    fn spawn(mut cmd: Command, t0: Instant) -> anyhow::Result<MemberProc> {
        cmd.env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let captured = Arc::new(Mutex::new(Captured::default()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let c = captured.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let at = t0.elapsed().as_secs_f64();
                    let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
                    if line.starts_with("progress ") {
                        let sent = field_u64(&line, "sent");
                        let delivered = field_u64(&line, "delivered");
                        if let (Some(s), Some(d)) = (sent, delivered) {
                            if c.progress.len() < PROGRESS_SAMPLES_MAX {
                                c.progress.push((at, s, d));
                            } else {
                                c.progress_dropped += 1;
                            }
                        }
                    } else if line.starts_with("summary ") {
                        c.summary = Some(line);
                    }
                }
            }));
        }
        if let Some(err) = child.stderr.take() {
            let c = captured.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
                    if c.stderr.len() == STDERR_LINES_MAX {
                        c.stderr.pop_front();
                    }
                    c.stderr.push_back(line);
                }
            }));
        }
        Ok(MemberProc {
            child,
            captured,
            readers,
            exited_at: None,
        })
    }

    /// Whether it has exited (recording when, on the point's clock).
    fn poll_exit(&mut self, t0: Instant) -> bool {
        if self.exited_at.is_some() {
            return true;
        }
        if let Ok(Some(_)) = self.child.try_wait() {
            self.exited_at = Some(t0.elapsed().as_secs_f64());
            return true;
        }
        false
    }

    fn signal(&self, name: &str) {
        let _ = run(Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]));
    }

    fn has_sent(&self) -> bool {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .progress
            .iter()
            .any(|&(_, s, _)| s > 0)
    }

    /// Waits for its output to end (after the exit) and takes what it printed.
    fn finish(mut self) -> Captured {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        std::mem::take(&mut *self.captured.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for MemberProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a `progress`/`summary` line.
pub fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn field_u64(line: &str, key: &str) -> Option<u64> {
    field(line, key)?.parse().ok()
}

/// One member's summary, as read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub sent: u64,
    pub delivered: u64,
    pub elapsed_s: f64,
    pub window_stalls: u64,
    pub driver: String,
    pub mode: String,
    pub errors: u64,
}

impl Summary {
    pub fn parse(line: &str) -> Option<Summary> {
        Some(Summary {
            sent: field_u64(line, "sent")?,
            delivered: field_u64(line, "delivered")?,
            elapsed_s: field(line, "elapsed_s")?.parse().ok()?,
            window_stalls: field_u64(line, "window_stalls").unwrap_or(0),
            driver: field(line, "driver").unwrap_or("?").to_string(),
            mode: field(line, "mode").unwrap_or("?").to_string(),
            errors: field_u64(line, "errors").unwrap_or(0),
        })
    }
}

/// The group rate over the steady window: merges every member's (time, delivered) samples in
/// time order and takes the deliveries (summed over members, divided by `members`) between
/// the first moments the sum reached [`WINDOW_FROM`] and [`WINDOW_TO`] of `final_total`.
/// Returns (msgs/s, window seconds), or None when the samples do not span a window.
pub fn window_rate(
    samples: &[Vec<(f64, u64)>],
    final_total: u64,
    members: usize,
) -> Option<(f64, f64)> {
    if final_total == 0 || members == 0 {
        return None;
    }
    let mut events: Vec<(f64, usize, u64)> = samples
        .iter()
        .enumerate()
        .flat_map(|(m, s)| s.iter().map(move |&(t, d)| (t, m, d)))
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut current = vec![0u64; samples.len()];
    let mut total = 0u64;
    let from = (final_total as f64 * WINDOW_FROM).ceil() as u64;
    let to = (final_total as f64 * WINDOW_TO).ceil() as u64;
    let mut start: Option<(f64, u64)> = None;
    for (t, m, d) in events {
        total = total - current[m] + d.max(current[m]);
        current[m] = d.max(current[m]);
        if start.is_none() && total >= from {
            start = Some((t, total));
        }
        if total >= to {
            let (t1, c1) = start?;
            let secs = t - t1;
            if secs <= 0.0 || total <= c1 {
                return None;
            }
            return Some(((total - c1) as f64 / members as f64 / secs, secs));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Points

/// One protocol point.
#[derive(Clone, Copy, Debug)]
pub struct NetnsPoint {
    pub driver: DriverName,
    pub addressing: Addressing,
    pub senders: Senders,
    pub order: BenchOrder,
    pub size: usize,
    pub messages: u64,
    pub loss_percent: u8,
    pub seconds_max: f64,
}

/// What a protocol point measured.
#[derive(Clone, Debug)]
pub struct NetnsResult {
    pub point: NetnsPoint,
    /// Steady-window group rate (0 when there was no window).
    pub msgs_per_s: f64,
    pub window_seconds: f64,
    /// Whole-run rate from the summaries.
    pub run_msgs_per_s: f64,
    pub summaries: Vec<Option<Summary>>,
    pub summary_lines: Vec<String>,
    pub msgs_sent: u64,
    pub delivered_total: u64,
    /// msgs_sent × members: every message at every member (own included).
    pub expected_total: u64,
    pub loss_drops: u64,
    pub wall_seconds: f64,
    pub killed_at_bound: bool,
    /// Attempts it took (see [`run_point_retrying`]).
    pub attempts: usize,
}

impl NetnsResult {
    pub fn complete(&self) -> bool {
        self.msgs_sent > 0
            && self.delivered_total == self.expected_total
            && self
                .summaries
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| s.errors == 0))
    }

    pub fn driver_name(&self) -> String {
        self.summaries
            .iter()
            .flatten()
            .map(|s| s.driver.clone())
            .next()
            .unwrap_or_else(|| self.point.driver.label().to_string())
    }

    pub fn record(&self, ceiling_msgs_per_s: f64, hosts: &Hosts) -> ResultRecord {
        let p = &self.point;
        let msgs = self.msgs_per_s;
        let mut extra = serde_json::Map::new();
        extra.insert("driver".into(), self.driver_name().into());
        extra.insert("addressing".into(), p.addressing.label().into());
        extra.insert("loss_percent".into(), p.loss_percent.into());
        extra.insert("complete".into(), self.complete().into());
        extra.insert("msgs_sent".into(), self.msgs_sent.into());
        extra.insert("delivered_total".into(), self.delivered_total.into());
        extra.insert("expected_total".into(), self.expected_total.into());
        extra.insert("run_msgs_per_s".into(), self.run_msgs_per_s.into());
        extra.insert("window_seconds".into(), self.window_seconds.into());
        extra.insert("wall_seconds".into(), self.wall_seconds.into());
        extra.insert("loss_drops_datagrams".into(), self.loss_drops.into());
        extra.insert(
            "window_stalls".into(),
            self.summaries
                .iter()
                .flatten()
                .map(|s| s.window_stalls)
                .sum::<u64>()
                .into(),
        );
        extra.insert("killed_at_bound".into(), self.killed_at_bound.into());
        extra.insert("attempts".into(), self.attempts.into());
        extra.insert("wire_segmented".into(), hosts.wire_segmented.into());
        extra.insert(
            "members_are".into(),
            "cohort member processes, one per network namespace, on a bridge".into(),
        );
        extra.insert(
            "summaries".into(),
            serde_json::Value::Array(
                self.summary_lines
                    .iter()
                    .map(|s| s.clone().into())
                    .collect(),
            ),
        );
        ResultRecord {
            scenario: "netns".into(),
            transport: format!("{}/{}", self.driver_name(), p.addressing.label()),
            order: p.order.label().into(),
            size: p.size,
            members: hosts.netns.len(),
            senders: p.senders.count(hosts.netns.len()),
            msgs_per_s: msgs,
            mb_per_s: msgs * p.size as f64 / 1e6,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            ceiling_msgs_per_s,
            ratio: if ceiling_msgs_per_s > 0.0 {
                msgs / ceiling_msgs_per_s
            } else {
                0.0
            },
            extra,
        }
    }
}

fn member_args(hosts: &Hosts, p: &NetnsPoint, host: usize, group: &str, count: u64) -> Vec<String> {
    let members = hosts
        .addrs
        .iter()
        .map(|a| format!("{a}:{MEMBER_PORT}"))
        .collect::<Vec<_>>()
        .join(",");
    let (order, safe) = match p.order {
        BenchOrder::Fifo => ("fifo", false),
        BenchOrder::Causal => ("causal", false),
        BenchOrder::Total => ("total", false),
        BenchOrder::SafeTotal => ("total", true),
    };
    let duration = format!("{}", p.seconds_max);
    let linger_ms = format!("{}", (p.seconds_max * 1000.0) as u64);
    let mut args: Vec<String> = [
        "member",
        "--group",
        group,
        "--bind",
        &format!("{}:{MEMBER_PORT}", hosts.addrs[host]),
        "--members",
        &members,
        "--order",
        order,
        "--count",
        &count.to_string(),
        "--size",
        &p.size.to_string(),
        "--duration",
        &duration,
        "--linger-ms",
        &linger_ms,
        "--progress-ms",
        &PROGRESS_MS.to_string(),
        "--driver",
        match p.driver {
            DriverName::Mmsg => "mmsg",
            _ => "uring",
        },
        "--no-counters",
    ]
    .map(str::to_owned)
    .to_vec();
    if safe {
        args.push("--safe".into());
    }
    if p.addressing == Addressing::Multicast {
        args.extend([
            "--multicast".into(),
            format!("{}:{GROUP_PORT}", hosts.multicast_group),
            "--iface".into(),
            hosts.addrs[host].to_string(),
        ]);
    }
    args
}

/// Runs one protocol point on `hosts` (loss as the point says, removed again after).
pub fn run_point(hosts: &Hosts, cohort: &Path, p: NetnsPoint) -> anyhow::Result<NetnsResult> {
    if !(p.seconds_max > 0.0 && p.seconds_max <= 600.0) {
        bail!("a point's bound must be in (0, 600] s");
    }
    if p.messages == 0 || p.messages > MESSAGES_MAX {
        bail!("messages must be in 1..={MESSAGES_MAX}");
    }
    let n = hosts.netns.len();
    let senders = p.senders.count(n);
    let per_sender = p.messages.div_ceil(senders as u64);
    let counts: Vec<u64> = (0..n)
        .map(|h| if h < senders { per_sender } else { 0 })
        .collect();
    static POINT_SEQ: AtomicUsize = AtomicUsize::new(0);
    let group = format!(
        "cbn-{}-{}",
        std::process::id(),
        POINT_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    hosts.set_loss(p.loss_percent)?;
    let result = run_members(hosts, cohort, &p, &group, &counts);
    let loss_drops = hosts.loss_drops();
    let cleared = hosts.set_loss(0);
    let mut r = result?;
    cleared?;
    r.loss_drops = loss_drops;
    Ok(r)
}

fn run_members(
    hosts: &Hosts,
    cohort: &Path,
    p: &NetnsPoint,
    group: &str,
    counts: &[u64],
) -> anyhow::Result<NetnsResult> {
    let n = hosts.netns.len();
    let one_sender = counts.iter().filter(|&&c| c > 0).count() == 1 && n > 1;
    let t0 = Instant::now();
    let bound = Duration::from_secs_f64(p.seconds_max + EXIT_GRACE_SECS);
    let mut procs: Vec<MemberProc> = Vec::with_capacity(n);
    for (host, &count) in counts.iter().enumerate() {
        let args = member_args(hosts, p, host, group, count);
        procs.push(MemberProc::spawn(hosts.command(host, cohort, &args), t0)?);
        if one_sender && host == 0 {
            // The receivers (--count 0) leave once settled: start them only when the
            // sender's stream is flowing, so that they never find an idle group.
            let wait_end = Instant::now() + Duration::from_millis(SENDER_START_WAIT_MS);
            while !procs[0].has_sent() && Instant::now() < wait_end {
                if procs[0].poll_exit(t0) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if !procs[0].has_sent() {
                let c = procs.pop().map(MemberProc::finish).unwrap_or_default();
                bail!(
                    "the sender on host 0 did not start sending within {SENDER_START_WAIT_MS} ms: {}",
                    c.stderr.iter().cloned().collect::<Vec<_>>().join(" / ")
                );
            }
        }
    }
    let mut killed_at_bound = false;
    let mut termed = false;
    loop {
        let mut all = true;
        for m in procs.iter_mut() {
            all &= m.poll_exit(t0);
        }
        if all {
            break;
        }
        if one_sender && !termed {
            let first_gone = procs[1..]
                .iter()
                .filter_map(|m| m.exited_at)
                .reduce(f64::min);
            let all_gone = procs[1..].iter_mut().all(|m| m.poll_exit(t0));
            if all_gone {
                // The sender expects deliveries from everyone; with the receivers done, stop
                // it.
                procs[0].signal("TERM");
                termed = true;
            } else if first_gone.is_some_and(|t| {
                t0.elapsed().as_secs_f64() - t > RECEIVER_EXIT_SPREAD_MS as f64 / 1e3
            }) {
                // A receiver left and the others did not follow: it left mid-stream (see
                // `run_point_retrying`), the sender's messages can no longer become stable
                // and the rest would wait for their bound. Stop everyone still running.
                for m in procs.iter_mut() {
                    if !m.poll_exit(t0) {
                        m.signal("TERM");
                    }
                }
                termed = true;
            }
        }
        if t0.elapsed() >= bound {
            killed_at_bound = true;
            for m in procs.iter_mut() {
                if !m.poll_exit(t0) {
                    let _ = m.child.kill();
                }
            }
            for m in procs.iter_mut() {
                let _ = m.child.wait();
                m.poll_exit(t0);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
    let wall_seconds = t0.elapsed().as_secs_f64();
    let captured: Vec<Captured> = procs.into_iter().map(MemberProc::finish).collect();
    let summaries: Vec<Option<Summary>> = captured
        .iter()
        .map(|c| c.summary.as_deref().and_then(Summary::parse))
        .collect();
    let summary_lines: Vec<String> = captured
        .iter()
        .enumerate()
        .map(|(i, c)| match &c.summary {
            Some(s) => s.clone(),
            None => format!(
                "host {i}: no summary; stderr: {}",
                c.stderr.iter().cloned().collect::<Vec<_>>().join(" / ")
            ),
        })
        .collect();
    let msgs_sent: u64 = summaries.iter().flatten().map(|s| s.sent).sum();
    let delivered_total: u64 = summaries.iter().flatten().map(|s| s.delivered).sum();
    let expected_total = msgs_sent * n as u64;
    // Each member's delivered count over time; its summary's count closes the series.
    let series: Vec<Vec<(f64, u64)>> = captured
        .iter()
        .zip(&summaries)
        .map(|(c, s)| {
            let mut v: Vec<(f64, u64)> = c.progress.iter().map(|&(t, _, d)| (t, d)).collect();
            if let (Some(s), Some(&(t, _))) = (s, v.last()) {
                v.push((t, s.delivered));
            }
            v
        })
        .collect();
    let (msgs_per_s, window_seconds) =
        window_rate(&series, delivered_total, n).unwrap_or((0.0, 0.0));
    let from_others: u64 = summaries
        .iter()
        .flatten()
        .map(|s| s.delivered.saturating_sub(s.sent.min(s.delivered)))
        .sum();
    let longest = summaries
        .iter()
        .flatten()
        .map(|s| s.elapsed_s)
        .fold(0.0, f64::max);
    let run_msgs_per_s = if longest > 0.0 && n > 1 {
        from_others as f64 / (n - 1) as f64 / longest
    } else {
        0.0
    };
    Ok(NetnsResult {
        point: *p,
        msgs_per_s,
        window_seconds,
        run_msgs_per_s,
        summaries,
        summary_lines,
        msgs_sent,
        delivered_total,
        expected_total,
        loss_drops: 0,
        wall_seconds,
        killed_at_bound,
        attempts: 1,
    })
}

/// The raw ceiling of the hosts' path: sockets opened inside the namespaces, bound to the
/// hosts' addresses.
pub fn run_ceiling(
    hosts: &Hosts,
    driver: DriverName,
    addressing: Addressing,
    senders: usize,
    size: usize,
    seconds: f64,
) -> anyhow::Result<crate::group_ceiling::GroupCeiling> {
    let n = hosts.netns.len();
    let places: Vec<MemberPlace> = (0..n)
        .map(|i| MemberPlace {
            netns: Some(hosts.netns_path(i)),
            bind: SocketAddr::from((hosts.addrs[i], CEILING_PORT)),
            iface: hosts.addrs[i],
        })
        .collect();
    run_group_point_placed(
        GroupPoint {
            driver,
            gso: true,
            addressing,
            members: n,
            senders,
            size,
            seconds,
            datagram_bytes: NODE_DATAGRAM_BYTES,
            batch: NODE_SEND_BATCH_DATAGRAMS,
        },
        &places,
        SocketAddr::from((hosts.multicast_group, CEILING_GROUP_PORT)),
    )
}

/// Runs a point until it is complete, at most [`ATTEMPTS_MAX`] times. A receiver of a
/// one-sender point runs `cohort member --count 0`, which leaves once it has been settled for
/// 200 ms: when the sender's stream pauses that long (a descheduled sender on a loaded
/// machine), the receivers leave mid-stream and the run is incomplete. Returns the last
/// attempt, with a note per incomplete attempt before it (also recorded as `attempts`).
pub fn run_point_retrying(
    hosts: &Hosts,
    cohort: &Path,
    p: NetnsPoint,
) -> anyhow::Result<(NetnsResult, Vec<String>)> {
    let mut notes = Vec::new();
    let mut attempt = 1;
    loop {
        let mut r = run_point(hosts, cohort, p)?;
        if r.complete() || attempt >= ATTEMPTS_MAX {
            r.attempts = attempt;
            return Ok((r, notes));
        }
        notes.push(format!(
            "attempt {attempt} incomplete ({} of {} deliveries, {} sent; summaries: {}), run again",
            r.delivered_total,
            r.expected_total,
            r.msgs_sent,
            r.summary_lines.join(" | ")
        ));
        attempt += 1;
    }
}

/// The run with the median steady rate (the lower middle one of an even count).
pub fn median_run(mut runs: Vec<NetnsResult>) -> Option<NetnsResult> {
    if runs.is_empty() {
        return None;
    }
    runs.sort_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s));
    let mid = (runs.len() - 1) / 2;
    Some(runs.swap_remove(mid))
}

/// Runs the plan: hosts, per sender count the ceiling and every (order, loss) point; records
/// go to `emit` as they come. Returns the lines of what was skipped (and why) and notes.
pub fn run_plan(
    plan: &NetnsPlan,
    progress: &mut Progress,
    emit: &mut dyn FnMut(ResultRecord) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<String>> {
    let mut skipped = Vec::new();
    if let Some(why) = unavailable() {
        for _ in 0..plan.steps() {
            progress.next("netns (skipped)");
        }
        println!("SKIPPED: {why}");
        skipped.push(format!("SKIPPED: {why}"));
        return Ok(skipped);
    }
    let cohort = locate_cohort(plan.cohort.as_deref())?;
    let lossy = plan.loss_percents.iter().any(|&l| l > 0);
    let mut losses = plan.loss_percents.clone();
    if lossy && !have("nft") {
        println!("SKIPPED: netns loss points need nftables (`nft` not found on PATH)");
        skipped.push("SKIPPED: netns loss points need nftables (`nft` not found)".into());
        losses.retain(|&l| l == 0);
    }
    let hosts = Hosts::new(HOSTS).context("building the namespace hosts")?;
    if !hosts.wire_segmented {
        skipped.push(
            "netns: UDP segmentation could not be turned off on the veths (ethtool): GSO trains cross the bridge whole, and a loss rule drops whole trains".into(),
        );
    }
    let mut addressing = plan.addressing;
    for &senders in &plan.senders {
        let ns = senders.count(HOSTS);
        let what = format!("netns {HOSTS} hosts, {ns} sender(s), {} B", plan.size);
        progress.next(&format!("{what}: raw ceiling"));
        let mut ceiling = run_ceiling(
            &hosts,
            plan.driver,
            addressing,
            ns,
            plan.size,
            plan.ceiling_seconds,
        );
        let multicast_failed = match (&ceiling, addressing) {
            (Err(e), Addressing::Multicast) => Some(format!("{e:#}")),
            (Ok(c), Addressing::Multicast) if c.msgs_received == 0 => {
                Some("no multicast datagram reached another host".into())
            }
            _ => None,
        };
        if let Some(why) = multicast_failed {
            let note = format!(
                "netns: IP multicast between the namespaces failed ({why}); falling back to unicast fan-out"
            );
            println!("{note}");
            skipped.push(note);
            addressing = Addressing::Fanout;
            ceiling = run_ceiling(
                &hosts,
                plan.driver,
                addressing,
                ns,
                plan.size,
                plan.ceiling_seconds,
            );
        }
        let ceiling = ceiling.with_context(|| format!("{what}: raw ceiling"))?;
        let ceiling_rate = ceiling.msgs_per_s(HOSTS);
        for &order in &plan.orders {
            // Loss-free and lossy runs alternate, so that a drifting machine moves both.
            let mut runs: Vec<Vec<NetnsResult>> = vec![Vec::new(); plan.loss_percents.len()];
            for rep in 0..plan.repeat {
                for (k, &loss) in plan.loss_percents.iter().enumerate() {
                    progress.next(&format!(
                        "{what}: {} at {loss} % loss (run {}/{})",
                        order.label(),
                        rep + 1,
                        plan.repeat
                    ));
                    if !losses.contains(&loss) {
                        continue;
                    }
                    let point = NetnsPoint {
                        driver: plan.driver,
                        addressing,
                        senders,
                        order,
                        size: plan.size,
                        messages: plan.messages,
                        loss_percent: loss,
                        seconds_max: plan.seconds_max,
                    };
                    match run_point_retrying(&hosts, &cohort, point) {
                        Ok((r, notes)) => {
                            for n in notes {
                                skipped.push(format!(
                                    "{what}: {} at {loss} % loss: {n}",
                                    order.label()
                                ));
                            }
                            runs[k].push(r)
                        }
                        Err(e) => skipped
                            .push(format!("{what}: {} at {loss} % loss: {e:#}", order.label())),
                    }
                }
            }
            let mut loss_free: Option<f64> = None;
            for (k, &loss) in plan.loss_percents.iter().enumerate() {
                let all_rates: Vec<f64> = runs[k].iter().map(|r| r.msgs_per_s).collect();
                let Some(r) = median_run(std::mem::take(&mut runs[k])) else {
                    continue;
                };
                let mut rec = r.record(ceiling_rate, &hosts);
                rec.extra
                    .insert("ceiling_gso".into(), ceiling.gso_effective.into());
                rec.extra.insert(
                    "ceiling_msgs_per_datagram".into(),
                    ceiling.msgs_per_datagram.into(),
                );
                // The ceiling has no flow control: what its receivers' sockets could not take
                // is lost, and its rate counts only what arrived.
                rec.extra
                    .insert("ceiling_msgs_sent".into(), ceiling.msgs_sent.into());
                rec.extra.insert(
                    "ceiling_msgs_received_from_others".into(),
                    ceiling.msgs_received.into(),
                );
                rec.extra.insert("runs".into(), all_rates.len().into());
                rec.extra.insert(
                    "run_rates_msgs_per_s".into(),
                    serde_json::Value::Array(all_rates.iter().map(|&v| v.into()).collect()),
                );
                if loss == 0 {
                    loss_free = Some(r.msgs_per_s);
                } else if let Some(free) = loss_free {
                    rec.extra.insert("loss_free_msgs_per_s".into(), free.into());
                    rec.extra.insert(
                        "loss_ratio".into(),
                        if free > 0.0 { r.msgs_per_s / free } else { 0.0 }.into(),
                    );
                }
                emit(rec)?;
            }
        }
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_of_cohort_member_parses() {
        let line = "summary member=10.78.3.1:7400 group=g sent=100 delivered=300 expected=300 \
                    complete=true elapsed_s=0.512 msgs_per_s=586 p50_us=10 p99_us=20 max_us=30 \
                    errors=0 driver=io_uring mode=multicast datagrams_sent=9 \
                    datagrams_received=20 window_stalls=4";
        let s = Summary::parse(line).unwrap();
        assert_eq!(s.sent, 100);
        assert_eq!(s.delivered, 300);
        assert_eq!(s.elapsed_s, 0.512);
        assert_eq!(s.window_stalls, 4);
        assert_eq!(s.driver, "io_uring");
        assert_eq!(s.mode, "multicast");
        assert_eq!(Summary::parse("summary sent=x"), None);
    }

    #[test]
    fn window_rate_takes_the_deliveries_between_ten_and_ninety_percent() {
        // Two members each deliver 1000 messages at 1000/s from t=1 to t=2 (a sample every
        // 10 ms), after a slow start; the window rate is the steady 1000 msgs/s.
        let member = |offset: f64| -> Vec<(f64, u64)> {
            let mut v = vec![(0.5 + offset, 0)];
            for k in 1..=100 {
                v.push((1.0 + k as f64 * 0.01 + offset, k * 10));
            }
            v
        };
        let (rate, secs) = window_rate(&[member(0.0), member(0.001)], 2000, 2).unwrap();
        assert!((rate - 1000.0).abs() < 30.0, "{rate}");
        assert!((secs - 0.8).abs() < 0.03, "{secs}");
        assert_eq!(window_rate(&[vec![(1.0, 5)]], 5, 1), None);
        assert_eq!(window_rate(&[], 0, 3), None);
    }

    #[test]
    fn owner_pid_reads_only_this_modules_names() {
        assert_eq!(owner_pid("cbn-1234-0-h1"), Some(1234));
        assert_eq!(owner_pid("cohort-t-1234-0-1"), None);
        assert_eq!(owner_pid("cbn-x-0-br"), None);
    }

    #[test]
    fn pid_alive_sees_this_process_and_not_a_reaped_child() {
        assert!(pid_alive(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }

    #[test]
    fn plan_steps_count_one_ceiling_per_sender_count() {
        let p = NetnsPlan::default();
        assert_eq!(p.steps(), 2 * (1 + 2 * 2));
    }
}

//! Namespace "hosts" for multi-host tests: a [`Cluster`] of N network namespaces, each one host
//! with one veth into a Linux bridge that lives in its own namespace, so the machine's own
//! network is never touched. On top: run or spawn commands in a host, take a host's link down
//! and up (partition, heal), drop packets on a link with nftables in the bridge namespace (or
//! iptables `statistic` in the host when `nft` is absent), and cap a link's bandwidth with
//! `tc tbf`. There is no `tc netem` on this kernel: delay, reordering and duplication belong to
//! the transport's seeded fault layer, not to this module.
//!
//! Guarantees: everything a [`Cluster`] creates is removed when it drops (also on a failed
//! assertion or panic): its processes are killed by PID ([`Proc`] cannot outlive its cluster,
//! and each is started with a parent-death signal so a killed test leaves no member behind),
//! then its namespaces are deleted, which deletes the bridge and every veth with them. The
//! first cluster of a process also removes leftovers of crashed runs: namespaces whose name has
//! [`NAME_PREFIX`] and whose owner PID is no longer alive.
//!
//! Determinism: neighbours are static (permanent ARP entries, IPv6 off, bridge multicast
//! snooping off), so a datagram is either forwarded or dropped when sent, never parked in an
//! ARP queue and released later. Loss of 100 % and 0 % is exact; anything in between is
//! statistical and only fit for workloads whose verdict does not depend on the dice.
//!
//! Trusts: root, iproute2, and a test binary that declares the probe entry point (see
//! [`probe`]) when it uses the UDP probes.
#![allow(dead_code)]

pub mod members;
pub mod membership;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Every namespace the harness creates is named `cohort-t-<pid>-<cluster>-<host index|br>`.
pub const NAME_PREFIX: &str = "cohort-t-";
/// Name of the nftables table (bridge family) that holds the loss rules, in the bridge netns.
pub const NFT_TABLE: &str = "cohort_faults";
/// Largest cluster: host addresses are `.1 ..= .HOSTS_MAX` of the cluster's /24.
pub const HOSTS_MAX: usize = 32;
/// How long a probe receiver lives at most if nobody kills it, in seconds.
pub const PROBE_LIFETIME_MAX_SECS: u64 = 120;
/// How many send rounds [`Cluster::send_until_received`] tries before it gives up.
pub const SEND_ROUNDS_MAX: usize = 100;
/// How long one send round waits for each receiver, in milliseconds.
pub const SEND_ROUND_WAIT_MS: u64 = 100;
/// Name of the `#[ignore]`d test every test file using probes declares as their entry point.
pub const PROBE_ENTRY_TEST: &str = "udp_probe_process";

static CLUSTER_SEQ: AtomicUsize = AtomicUsize::new(0);
static STALE_CLEANUP: std::sync::Once = std::sync::Once::new();

/// Output of a finished command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

pub fn run(cmd: &mut Command) -> Run {
    match cmd.output() {
        Ok(out) => Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Err(e) => Run {
            code: -1,
            stdout: String::new(),
            stderr: format!("cannot spawn {cmd:?}: {e}"),
        },
    }
}

/// Run and panic with the command and its stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> Run {
    let r = run(cmd);
    assert!(
        r.ok(),
        "{cmd:?} failed ({}): {}{}",
        r.code,
        r.stdout,
        r.stderr
    );
    r
}

/// Print a loud line that libtest does not capture.
pub fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

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

/// Why a cluster cannot be built here, if it cannot. Tests print it with [`skip`] and return.
pub fn unavailable() -> Option<String> {
    if !is_root() {
        return Some("netns tests need root (network namespaces, bridges, nftables)".into());
    }
    if !have("ip") {
        return Some("netns tests need iproute2 (`ip` not found in PATH)".into());
    }
    None
}

fn ip() -> Command {
    Command::new("ip")
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Names from `ip netns list` ("name" or "name (id: N)").
pub fn netns_names() -> Vec<String> {
    let r = run(ip().args(["netns", "list"]));
    r.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The owner PID a harness namespace name carries, if the name is one of ours.
pub fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NAME_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Remove leftovers of crashed runs: every namespace named with [`NAME_PREFIX`] whose owner PID
/// is dead. Processes still inside such a namespace were started by the harness of that run
/// (nothing else uses the prefix) and are killed by PID first. Returns the names removed.
pub fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for name in netns_names() {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        let pids = run(ip().args(["netns", "pids", &name]));
        for p in pids.stdout.split_whitespace() {
            if p.parse::<u32>().is_ok() {
                let _ = run(Command::new("kill").args(["-KILL", p]));
            }
        }
        if run(ip().args(["netns", "del", &name])).ok() {
            removed.push(name);
        }
    }
    removed
}

/// Which way a link fault applies, seen from the host at the end of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// Frames the bridge forwards to the host.
    ToHost,
    /// Frames the host sends into the bridge.
    FromHost,
}

/// How random loss is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossTool {
    /// `nft` bridge-family rules in the bridge namespace (`numgen random mod 100 < P drop`).
    Nftables,
    /// `iptables -m statistic` in the host's namespace (INPUT for to-host, OUTPUT for
    /// from-host); used when `nft` is absent.
    Iptables,
}

/// One host: a namespace with one veth (`iface`) into the cluster's bridge.
#[derive(Clone, Debug)]
pub struct Host {
    pub index: usize,
    pub netns: String,
    pub addr: Ipv4Addr,
    /// The host side of its veth pair (inside `netns`).
    pub iface: String,
    /// The bridge side of its veth pair (inside the bridge namespace).
    pub port: String,
    pub mac: String,
}

/// N hosts on one bridge; everything it made is removed on drop.
pub struct Cluster {
    pub hosts: Vec<Host>,
    /// The namespace holding the bridge.
    pub bridge_netns: String,
    pub bridge: String,
    /// Third byte of the cluster's subnet 10.77.<subnet>.0/24.
    pub subnet: u8,
    /// Where `cohort member` and probes can send multicast: 239.77.<subnet>.1.
    pub multicast_group: Ipv4Addr,
    pub loss_tool: LossTool,
    /// Current loss per (host, direction), in percent (1..=100).
    loss: Mutex<BTreeMap<(usize, Direction), u8>>,
    /// Every namespace created so far, in creation order (deleted in reverse).
    created: Vec<String>,
}

impl Cluster {
    /// Build `n` hosts on a bridge. Panics (after cleaning up what it made) when a step fails.
    pub fn new(n: usize) -> Cluster {
        assert!(
            (1..=HOSTS_MAX).contains(&n),
            "1..={HOSTS_MAX} hosts, not {n}"
        );
        STALE_CLEANUP.call_once(|| {
            for name in remove_stale() {
                eprintln!("netns harness: removed leftover namespace {name} of a dead run");
            }
        });
        let seq = CLUSTER_SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // Each cluster has its own bridge namespace, so subnets never meet; distinct numbers
        // per cluster only make captures and logs easier to tell apart.
        let subnet = (1 + (pid as usize + seq) % 250) as u8;
        let base = format!("{NAME_PREFIX}{pid}-{seq}");
        let tag = format!("ct{subnet}");
        let loss_tool = if have("nft") {
            LossTool::Nftables
        } else {
            LossTool::Iptables
        };
        let mut c = Cluster {
            hosts: (0..n)
                .map(|i| Host {
                    index: i,
                    netns: format!("{base}-{i}"),
                    addr: Ipv4Addr::new(10, 77, subnet, i as u8 + 1),
                    iface: format!("{tag}h{i}"),
                    port: format!("{tag}p{i}"),
                    mac: format!("02:77:{subnet:02x}:00:00:{:02x}", i + 1),
                })
                .collect(),
            bridge_netns: format!("{base}-br"),
            bridge: format!("{tag}br"),
            subnet,
            multicast_group: Ipv4Addr::new(239, 77, subnet, 1),
            loss_tool,
            loss: Mutex::new(BTreeMap::new()),
            created: Vec::new(),
        };
        c.build();
        c
    }

    fn add_netns(&mut self, name: &str) {
        run_ok(ip().args(["netns", "add", name]));
        self.created.push(name.to_string());
    }

    fn build(&mut self) {
        let br_ns = self.bridge_netns.clone();
        self.add_netns(&br_ns);
        let brn = |args: &[&str]| run_ok(ip().args(["-n", &br_ns]).args(args));
        brn(&["link", "set", "lo", "up"]);
        brn(&[
            "link",
            "add",
            &self.bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "stp_state",
            "0",
        ]);
        brn(&["link", "set", &self.bridge, "up"]);
        for h in self.hosts.clone() {
            self.add_netns(&h.netns);
            run_ok(ip().args([
                "link", "add", &h.iface, "netns", &h.netns, "address", &h.mac, "type", "veth",
                "peer", "name", &h.port, "netns", &br_ns,
            ]));
            brn(&["link", "set", &h.port, "master", &self.bridge]);
            brn(&["link", "set", &h.port, "up"]);
            let hn = |args: &[&str]| run_ok(ip().args(["-n", &h.netns]).args(args));
            hn(&["link", "set", "lo", "up"]);
            run_ok(&mut self.command(
                h.index,
                "sysctl",
                &["-qw", "net.ipv6.conf.all.disable_ipv6=1"],
            ));
            run_ok(&mut self.command(
                h.index,
                "sysctl",
                &["-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            ));
            hn(&["addr", "add", &format!("{}/24", h.addr), "dev", &h.iface]);
            hn(&["link", "set", &h.iface, "up"]);
            hn(&["route", "add", "224.0.0.0/4", "dev", &h.iface]);
        }
        for h in &self.hosts {
            for o in self.hosts.iter().filter(|o| o.index != h.index) {
                run_ok(ip().args([
                    "-n",
                    &h.netns,
                    "neigh",
                    "replace",
                    &o.addr.to_string(),
                    "lladdr",
                    &o.mac,
                    "dev",
                    &h.iface,
                    "nud",
                    "permanent",
                ]));
            }
        }
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.hosts[i].addr
    }

    /// `ip netns exec <host> setpriv --pdeathsig KILL -- program args..`: the program keeps
    /// the PID of the spawned child (both `ip` and `setpriv` exec into it) and is killed by
    /// the kernel if the thread that spawned it dies.
    pub fn command(&self, host: usize, program: &str, args: &[&str]) -> Command {
        let mut c = ip();
        c.args(["netns", "exec", &self.hosts[host].netns]);
        if have("setpriv") {
            c.args(["setpriv", "--pdeathsig", "KILL", "--"]);
        }
        c.arg(program).args(args);
        c
    }

    /// Run a command to completion in a host.
    pub fn run_in(&self, host: usize, program: &str, args: &[&str]) -> Run {
        run(&mut self.command(host, program, args))
    }

    /// Run a command in the bridge namespace.
    pub fn run_in_bridge(&self, program: &str, args: &[&str]) -> Run {
        run(ip()
            .args(["netns", "exec", &self.bridge_netns, program])
            .args(args))
    }

    /// Start a long-running process from a command made by [`Cluster::command`]. It is
    /// killed (SIGKILL, by PID) and reaped when the returned [`Proc`] drops, which is always
    /// before the cluster's namespaces go.
    pub fn spawn(&self, mut cmd: Command) -> Proc<'_> {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        Proc {
            child,
            _cluster: PhantomData,
        }
    }

    /// Take a host's link down at the bridge (the cable is cut: the host's veth loses
    /// carrier, frames either way are dropped, nothing is queued).
    pub fn link_down(&self, host: usize) {
        run_ok(ip().args([
            "-n",
            &self.bridge_netns,
            "link",
            "set",
            &self.hosts[host].port,
            "down",
        ]));
    }

    pub fn link_up(&self, host: usize) {
        run_ok(ip().args([
            "-n",
            &self.bridge_netns,
            "link",
            "set",
            &self.hosts[host].port,
            "up",
        ]));
    }

    /// Cut every link of `side`: those hosts can reach each other's addresses no more than
    /// anyone else's (a one-host side is the usual minority). Heal with [`Cluster::heal`].
    pub fn partition(&self, side: &[usize]) {
        for &h in side {
            self.link_down(h);
        }
    }

    pub fn heal(&self, side: &[usize]) {
        for &h in side {
            self.link_up(h);
        }
    }

    /// Set random loss on a host's link, in percent: 0 removes it, 100 drops every frame.
    /// Processes keep running across the change.
    pub fn set_loss(&self, host: usize, dir: Direction, percent: u8) {
        assert!(percent <= 100, "loss is a percentage, not {percent}");
        assert!(host < self.hosts.len());
        let mut loss = self.loss();
        if percent == 0 {
            loss.remove(&(host, dir));
        } else {
            loss.insert((host, dir), percent);
        }
        match self.loss_tool {
            LossTool::Nftables => self.apply_nft(&loss),
            LossTool::Iptables => self.apply_iptables(&loss, host),
        }
    }

    fn loss(&self) -> MutexGuard<'_, BTreeMap<(usize, Direction), u8>> {
        self.loss.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Force a loss tool (e.g. to test the iptables fallback while `nft` is present). Only
    /// before any loss is set.
    pub fn use_loss_tool(&mut self, tool: LossTool) {
        assert!(
            self.loss().is_empty(),
            "switch loss tools before setting loss"
        );
        self.loss_tool = tool;
    }

    /// The whole rule set as one atomic nft transaction: the table is recreated, so counters
    /// restart whenever any loss changes.
    fn apply_nft(&self, loss: &BTreeMap<(usize, Direction), u8>) {
        let mut script = format!(
            "table bridge {NFT_TABLE}\ndelete table bridge {NFT_TABLE}\n\
             table bridge {NFT_TABLE} {{\n chain loss {{\n  type filter hook forward priority 0; policy accept;\n"
        );
        for (&(h, dir), &p) in loss {
            let port = &self.hosts[h].port;
            let side = match dir {
                Direction::ToHost => "oifname",
                Direction::FromHost => "iifname",
            };
            // numgen's range is 0..99: 100 % is an unconditional drop.
            let dice = if p >= 100 {
                String::new()
            } else {
                format!("numgen random mod 100 < {p} ")
            };
            script.push_str(&format!(
                "  {side} \"{port}\" {dice}counter drop comment \"{}\"\n",
                loss_comment(h, dir)
            ));
        }
        script.push_str(" }\n}\n");
        let mut child = ip()
            .args(["netns", "exec", &self.bridge_netns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .expect("nft stdin")
            .write_all(script.as_bytes())
            .expect("write nft script");
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "nft -f failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn apply_iptables(&self, loss: &BTreeMap<(usize, Direction), u8>, host: usize) {
        for (dir, chain) in [
            (Direction::ToHost, "INPUT"),
            (Direction::FromHost, "OUTPUT"),
        ] {
            run_ok(&mut self.command(host, "iptables", &["-w", "-F", chain]));
            if let Some(&p) = loss.get(&(host, dir)) {
                let prob = format!("{:.2}", f64::from(p) / 100.0);
                let mut args = vec!["-w", "-A", chain, "-i", &self.hosts[host].iface];
                if dir == Direction::FromHost {
                    args[3] = "-o";
                }
                if p < 100 {
                    args.extend([
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &prob,
                    ]);
                }
                args.extend(["-j", "DROP"]);
                run_ok(&mut self.command(host, "iptables", &args));
            }
        }
    }

    /// Frames dropped so far by the loss rule of (host, dir), from the rule's counter (since
    /// the rule set last changed). `None` when there is no such rule.
    pub fn loss_drops(&self, host: usize, dir: Direction) -> Option<u64> {
        self.loss().get(&(host, dir))?;
        match self.loss_tool {
            LossTool::Nftables => {
                let r = run_ok(ip().args([
                    "netns",
                    "exec",
                    &self.bridge_netns,
                    "nft",
                    "list",
                    "table",
                    "bridge",
                    NFT_TABLE,
                ]));
                let comment = format!("\"{}\"", loss_comment(host, dir));
                let line = r.stdout.lines().find(|l| l.contains(&comment))?;
                let mut words = line.split_whitespace();
                words.find(|w| *w == "packets")?;
                words.next()?.parse().ok()
            }
            LossTool::Iptables => {
                let chain = match dir {
                    Direction::ToHost => "INPUT",
                    Direction::FromHost => "OUTPUT",
                };
                let r = run_ok(&mut self.command(
                    host,
                    "iptables",
                    &["-w", "-L", chain, "-n", "-v", "-x"],
                ));
                let line = r.stdout.lines().find(|l| l.contains("DROP"))?;
                line.split_whitespace().next()?.parse().ok()
            }
        }
    }

    /// Loss rules in force, as (host, direction, percent).
    pub fn loss_rules(&self) -> Vec<(usize, Direction, u8)> {
        self.loss().iter().map(|(&(h, d), &p)| (h, d, p)).collect()
    }

    /// Cap a host's link at `kbit` per second in one direction (`tc tbf`); `None` removes it.
    /// To-host caps the bridge port's egress, from-host the host veth's egress.
    pub fn set_bandwidth(&self, host: usize, dir: Direction, kbit: Option<u32>) {
        let h = &self.hosts[host];
        let (ns, dev) = match dir {
            Direction::ToHost => (&self.bridge_netns, &h.port),
            Direction::FromHost => (&h.netns, &h.iface),
        };
        match kbit {
            Some(k) => {
                // Burst of at least one full-size frame plus a little: tbf refuses less.
                let burst_bytes = (k as u64 * 1000 / 8 / 100).max(16 * 1024);
                run_ok(
                    ip().args(["netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev])
                        .args([
                            "root",
                            "tbf",
                            "rate",
                            &format!("{k}kbit"),
                            "burst",
                            &burst_bytes.to_string(),
                            "latency",
                            "100ms",
                        ]),
                );
            }
            None => {
                let _ = run(ip().args([
                    "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root",
                ]));
            }
        }
    }

    /// `tc qdisc show` of the device a bandwidth cap in `dir` would sit on.
    pub fn qdisc(&self, host: usize, dir: Direction) -> String {
        let h = &self.hosts[host];
        let (ns, dev) = match dir {
            Direction::ToHost => (&self.bridge_netns, &h.port),
            Direction::FromHost => (&h.netns, &h.iface),
        };
        run_ok(ip().args(["netns", "exec", ns, "tc", "qdisc", "show", "dev", dev])).stdout
    }

    /// Every namespace this cluster made.
    pub fn netns_created(&self) -> Vec<String> {
        self.created.clone()
    }

    // ---- UDP probes (the test binary re-executed inside a host) ----

    fn probe_command(&self, host: usize, env: &[(&str, String)]) -> Command {
        let exe = std::env::current_exe().expect("test binary path");
        let mut c = self.command(
            host,
            exe.to_str().expect("utf-8 test binary path"),
            &[
                "--exact",
                PROBE_ENTRY_TEST,
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ],
        );
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Start a UDP receiver on `host`, bound to `port` (any address), joined to `group` on the
    /// host's veth address when given. Returns once it has bound (and joined).
    pub fn probe_receiver(&self, host: usize, port: u16, group: Option<Ipv4Addr>) -> Receiver<'_> {
        let mut env = vec![
            ("COHORT_PROBE", "recv".to_string()),
            ("COHORT_PROBE_PORT", port.to_string()),
            ("COHORT_PROBE_IFACE", self.addr(host).to_string()),
        ];
        if let Some(g) = group {
            env.push(("COHORT_PROBE_GROUP", g.to_string()));
        }
        let mut cmd = self.probe_command(host, &env);
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut proc_ = self.spawn(cmd);
        let stdout = proc_.child.stdout.take().expect("probe stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest writes "test udp_probe_process ... " before the first line.
                if let Some((_, rest)) = line.split_once("PROBE ") {
                    if tx.send(rest.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Receiver {
            proc_,
            lines: rx,
            seen: Vec::new(),
            host,
        };
        assert!(
            r.wait_line(|l| l == "ready", Duration::from_secs(30)),
            "probe receiver on host {host} never became ready: {:?}",
            r.seen
        );
        r
    }

    /// Send one datagram per payload from `host` (bound to its veth address) to `dest`, with
    /// IP_MULTICAST_IF on that address and TTL 1. Send errors (e.g. a cut link) are not
    /// failures: they are what a partition looks like.
    pub fn probe_send(&self, host: usize, dest: SocketAddrV4, payloads: &[&str]) -> Run {
        let r = run(&mut self.probe_command(
            host,
            &[
                ("COHORT_PROBE", "send".to_string()),
                ("COHORT_PROBE_DEST", dest.to_string()),
                ("COHORT_PROBE_IFACE", self.addr(host).to_string()),
                ("COHORT_PROBE_PAYLOADS", payloads.join(",")),
            ],
        ));
        assert!(
            r.ok(),
            "probe sender on host {host}: {}{}",
            r.stdout,
            r.stderr
        );
        r
    }

    /// Send `payload` from `host` to `dest` in rounds until every receiver has it; false when
    /// [`SEND_ROUNDS_MAX`] rounds were not enough (the bound only ends a failing wait: a
    /// working path delivers in the first round).
    pub fn send_until_received(
        &self,
        host: usize,
        dest: SocketAddrV4,
        payload: &str,
        receivers: &mut [&mut Receiver<'_>],
    ) -> bool {
        for _ in 0..SEND_ROUNDS_MAX {
            self.probe_send(host, dest, &[payload]);
            let mut all = true;
            for r in receivers.iter_mut() {
                all &= r.wait_payload(payload, Duration::from_millis(SEND_ROUND_WAIT_MS));
            }
            if all {
                return true;
            }
        }
        false
    }
}

fn loss_comment(host: usize, dir: Direction) -> String {
    format!("loss-{dir:?}-{host}")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Procs borrow the cluster, so they are gone already. Deleting a namespace deletes
        // its devices: the veths (both ends) and the bridge.
        for name in self.created.iter().rev() {
            let r = run(ip().args(["netns", "del", name]));
            if !r.ok() {
                eprintln!("netns harness: cannot delete {name}: {}", r.stderr);
            }
        }
    }
}

/// A process running in a host; SIGKILLed by PID and reaped on drop.
pub struct Proc<'c> {
    pub child: Child,
    _cluster: PhantomData<&'c Cluster>,
}

impl Proc<'_> {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (`KILL`, `STOP`, `CONT`, `TERM`) to this process only.
    pub fn signal(&self, name: &str) {
        run_ok(Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]));
    }

    /// Wait for the process to exit, at most `limit`; `None` if it is still running then.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc<'_> {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A running probe receiver and every payload it reported so far.
pub struct Receiver<'c> {
    pub proc_: Proc<'c>,
    lines: mpsc::Receiver<String>,
    /// Lines reported so far ("ready", "got <payload> from <addr>").
    pub seen: Vec<String>,
    pub host: usize,
}

impl Receiver<'_> {
    /// Take reported lines until one matches or `limit` passes.
    pub fn wait_line(&mut self, pred: impl Fn(&str) -> bool, limit: Duration) -> bool {
        if self.seen.iter().any(|l| pred(l)) {
            return true;
        }
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = pred(&l);
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    pub fn wait_payload(&mut self, payload: &str, limit: Duration) -> bool {
        self.wait_line(|l| got_payload(l) == Some(payload), limit)
    }

    /// Payloads received so far, in arrival order, with their source address.
    pub fn payloads(&mut self) -> Vec<(String, String)> {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen
            .iter()
            .filter_map(|l| {
                let rest = l.strip_prefix("got ")?;
                let (p, from) = rest.rsplit_once(" from ")?;
                Some((p.to_string(), from.to_string()))
            })
            .collect()
    }
}

fn got_payload(line: &str) -> Option<&str> {
    Some(line.strip_prefix("got ")?.rsplit_once(" from ")?.0)
}

/// The probe processes' side: UDP sockets opened by the transport's own
/// `open_udp_socket` (so multicast uses its IP_MULTICAST_IF and membership code), configured by
/// environment variables, reporting on stdout as `PROBE ...` lines.
pub mod probe {
    use super::PROBE_LIFETIME_MAX_SECS;
    use cohort_transport::socket::open_udp_socket;
    use cohort_transport::{GroupMode, SocketConfig};
    use std::io::Write;
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
    use std::time::{Duration, Instant};

    /// Largest datagram a probe receives, in bytes.
    const PROBE_DATAGRAM_BYTES_MAX: usize = 2048;

    fn var(name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn say(line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "PROBE {line}");
        let _ = out.flush();
    }

    /// Body of the `#[ignore]`d entry test: does nothing unless the harness started it.
    pub fn run_from_env() {
        match var("COHORT_PROBE").as_deref() {
            Some("recv") => receive(),
            Some("send") => send(),
            _ => eprintln!("not a test: entry point of the netns harness's UDP probes"),
        }
    }

    fn addr_var(name: &str) -> Ipv4Addr {
        var(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} must be an IPv4 address"))
    }

    fn receive() {
        let port: u16 = var("COHORT_PROBE_PORT")
            .and_then(|p| p.parse().ok())
            .expect("COHORT_PROBE_PORT");
        let iface = addr_var("COHORT_PROBE_IFACE");
        let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        // The project's own socket setup: with the group port bound on the wildcard address
        // the one socket joins the group on `iface` and receives unicast too.
        let cfg = match var("COHORT_PROBE_GROUP") {
            Some(_) => multicast_config(bind, addr_var("COHORT_PROBE_GROUP"), port, iface),
            None => SocketConfig::unicast(bind),
        };
        let opened = open_udp_socket(&cfg).expect("open probe receiver socket");
        assert!(opened.group_socket.is_none(), "one socket receives both");
        let sock: UdpSocket = opened.socket.into();
        sock.set_nonblocking(false).expect("blocking");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        say("ready");
        let end = Instant::now() + Duration::from_secs(PROBE_LIFETIME_MAX_SECS);
        let mut buf = [0u8; PROBE_DATAGRAM_BYTES_MAX];
        while Instant::now() < end {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                say(&format!(
                    "got {} from {from}",
                    String::from_utf8_lossy(&buf[..n])
                ));
            }
        }
    }

    fn multicast_config(
        bind: SocketAddr,
        group: Ipv4Addr,
        port: u16,
        iface: Ipv4Addr,
    ) -> SocketConfig {
        let mut cfg = SocketConfig::unicast(bind);
        cfg.group = GroupMode::Multicast {
            group: SocketAddr::from((group, port)),
            iface,
            ttl: 1,
            loopback: false,
        };
        cfg
    }

    fn send() {
        let dest: SocketAddrV4 = var("COHORT_PROBE_DEST")
            .and_then(|d| d.parse().ok())
            .expect("COHORT_PROBE_DEST");
        let iface = addr_var("COHORT_PROBE_IFACE");
        let bind = SocketAddr::from((iface, 0));
        // Multicast leaves through IP_MULTICAST_IF on the host's veth address (TTL 1), set by
        // the transport's socket setup, never by whatever route the kernel would pick.
        let cfg = if dest.ip().is_multicast() {
            multicast_config(bind, *dest.ip(), dest.port(), iface)
        } else {
            SocketConfig::unicast(bind)
        };
        let opened = open_udp_socket(&cfg).expect("open probe sender socket");
        let sock: UdpSocket = opened.socket.into();
        sock.set_nonblocking(false).expect("blocking");
        for p in var("COHORT_PROBE_PAYLOADS").unwrap_or_default().split(',') {
            if let Err(e) = sock.send_to(p.as_bytes(), dest) {
                say(&format!("send-error {p}: {e}"));
            }
        }
    }
}

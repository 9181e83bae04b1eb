//! The namespace harness proves itself: hosts on its bridge exchange unicast and IP multicast,
//! its loss rules and link cuts stop exactly the traffic they name and their removal restores
//! it, and nothing it made survives it. Every verdict is deterministic (100 % and 0 % loss, a
//! link down or up, ordered delivery on one path); waits are bounds on failure only.
//! Needs root and iproute2; without them each test prints `SKIPPED: <why>` and returns.

mod netns;

use netns::{Cluster, Direction, LossTool};
use std::net::SocketAddrV4;
use std::time::Duration;

/// UDP port of the probes (each cluster has its own namespaces, so ports never clash).
const PROBE_PORT: u16 = 47_000;
/// Datagrams sent while a fault is on: none of them may arrive.
const BLOCKED_DATAGRAMS: usize = 20;

#[test]
#[ignore = "not a test: entry point of the UDP probe processes the harness starts in namespaces"]
fn udp_probe_process() {
    netns::probe::run_from_env();
}

fn unavailable() -> bool {
    if let Some(why) = netns::unavailable() {
        netns::skip(&why);
        return true;
    }
    false
}

fn unicast(c: &Cluster, host: usize) -> SocketAddrV4 {
    SocketAddrV4::new(c.addr(host), PROBE_PORT)
}

fn group(c: &Cluster) -> SocketAddrV4 {
    SocketAddrV4::new(c.multicast_group, PROBE_PORT)
}

fn tagged(prefix: &str) -> Vec<String> {
    (0..BLOCKED_DATAGRAMS)
        .map(|i| format!("{prefix}-{i}"))
        .collect()
}

fn send_all(c: &Cluster, from: usize, dest: SocketAddrV4, payloads: &[String]) {
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    c.probe_send(from, dest, &refs);
}

fn received_with_prefix(r: &mut netns::Receiver<'_>, prefix: &str) -> Vec<String> {
    r.payloads()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(prefix))
        .collect()
}

#[test]
fn three_hosts_exchange_unicast_udp_in_every_direction_from_their_own_addresses() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(3);
    let mut rx: Vec<_> = (0..3)
        .map(|h| c.probe_receiver(h, PROBE_PORT, None))
        .collect();
    for from in 0..3 {
        for to in (0..3).filter(|&to| to != from) {
            let payload = format!("u-{from}-{to}");
            assert!(
                c.send_until_received(from, unicast(&c, to), &payload, &mut [&mut rx[to]]),
                "host {from} cannot reach host {to}: {:?}",
                rx[to].seen
            );
            let src = rx[to]
                .payloads()
                .into_iter()
                .find(|(p, _)| *p == payload)
                .map(|(_, s)| s)
                .expect("payload seen");
            assert!(
                src.starts_with(&format!("{}:", c.addr(from))),
                "source of {payload} is {src}, not host {from}'s address"
            );
        }
    }
}

#[test]
fn multicast_from_one_host_reaches_receivers_on_both_other_hosts() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(3);
    let mut r1 = c.probe_receiver(1, PROBE_PORT, Some(c.multicast_group));
    let mut r2 = c.probe_receiver(2, PROBE_PORT, Some(c.multicast_group));
    assert!(
        c.send_until_received(0, group(&c), "mc-hello", &mut [&mut r1, &mut r2]),
        "multicast from host 0 did not reach both: {:?} / {:?}",
        r1.seen,
        r2.seen
    );
    for r in [&mut r1, &mut r2] {
        let (_, src) = r
            .payloads()
            .into_iter()
            .find(|(p, _)| p == "mc-hello")
            .unwrap();
        assert!(
            src.starts_with(&format!("{}:", c.addr(0))),
            "multicast left by another interface: source {src}"
        );
    }
}

#[test]
fn multicast_on_five_hosts_reaches_all_four_others() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(5);
    let mut rx: Vec<_> = (1..5)
        .map(|h| c.probe_receiver(h, PROBE_PORT, Some(c.multicast_group)))
        .collect();
    let mut refs: Vec<&mut netns::Receiver<'_>> = rx.iter_mut().collect();
    assert!(
        c.send_until_received(0, group(&c), "mc-five", &mut refs),
        "multicast from host 0 did not reach all of hosts 1-4"
    );
}

#[test]
fn a_process_runs_inside_its_host_and_is_stopped_continued_and_killed_by_pid() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(2);
    let mut p = c.spawn(c.command(1, "sleep", &["600"]));
    let pid = p.pid();
    // The PID is `ip netns exec` until it has entered the namespace and exec'd `sleep`.
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while comm().trim() != "sleep" && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        comm().trim(),
        "sleep",
        "the spawned PID is not the program itself"
    );
    // Compare namespace inodes directly: `ip netns identify` scans /run/netns and can trip over
    // namespaces that parallel tests create and delete meanwhile.
    use std::os::unix::fs::MetadataExt;
    let ns_inode = |path: String| {
        std::fs::metadata(&path)
            .map(|m| m.ino())
            .unwrap_or_else(|e| panic!("stat {path}: {e}"))
    };
    assert_eq!(
        ns_inode(format!("/proc/{pid}/ns/net")),
        ns_inode(format!("/run/netns/{}", c.host(1).netns)),
        "process is not in host 1"
    );
    assert_ne!(
        ns_inode(format!("/proc/{pid}/ns/net")),
        ns_inode("/proc/self/ns/net".to_string()),
        "process is still in the test's own namespace"
    );
    let state = |pid: u32| -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    };
    let wait_state = |want: char| {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if state(pid) == Some(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    };
    p.signal("STOP");
    assert!(
        wait_state('T'),
        "SIGSTOP did not stop {pid}: {:?}",
        state(pid)
    );
    p.signal("CONT");
    assert!(
        wait_state('S'),
        "SIGCONT did not resume {pid}: {:?}",
        state(pid)
    );
    p.signal("KILL");
    let status = p.wait_timeout(Duration::from_secs(10)).expect("killed");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status}");
}

/// The loss scenario shared by the nftables and iptables variants: 100 % loss toward host 2
/// stops multicast to it while host 1 still gets every datagram; 0 % restores it, and none of
/// the blocked datagrams arrives late (one path keeps order: all of them would come before the
/// first datagram sent after the removal).
fn full_loss_stops_traffic_to_one_host_and_zero_loss_restores_it(c: &Cluster) {
    let g = group(c);
    let mut r1 = c.probe_receiver(1, PROBE_PORT, Some(c.multicast_group));
    let mut r2 = c.probe_receiver(2, PROBE_PORT, Some(c.multicast_group));
    assert!(c.send_until_received(0, g, "before", &mut [&mut r1, &mut r2]));

    c.set_loss(2, Direction::ToHost, 100);
    assert_eq!(c.loss_rules(), vec![(2, Direction::ToHost, 100)]);
    let blocked = tagged("blocked");
    send_all(c, 0, g, &blocked);
    // Host 1 gets every one of them: they were sent and crossed the bridge.
    assert!(
        r1.wait_payload(blocked.last().unwrap(), Duration::from_secs(10)),
        "host 1 (no loss) missed the blocked burst: {:?}",
        r1.seen
    );
    assert_eq!(received_with_prefix(&mut r1, "blocked-"), blocked);
    let drops = c.loss_drops(2, Direction::ToHost).expect("rule counter");
    assert!(
        drops >= BLOCKED_DATAGRAMS as u64,
        "the loss rule dropped {drops} frames, fewer than the {BLOCKED_DATAGRAMS} sent"
    );

    c.set_loss(2, Direction::ToHost, 0);
    assert!(c.loss_rules().is_empty());
    assert_eq!(c.loss_drops(2, Direction::ToHost), None);
    assert!(
        c.send_until_received(0, g, "open", &mut [&mut r2]),
        "traffic to host 2 did not come back with 0 % loss: {:?}",
        r2.seen
    );
    let after = tagged("after");
    send_all(c, 0, g, &after);
    assert!(r2.wait_payload(after.last().unwrap(), Duration::from_secs(10)));
    assert_eq!(received_with_prefix(&mut r2, "after-"), after);
    assert_eq!(
        received_with_prefix(&mut r2, "blocked-"),
        Vec::<String>::new(),
        "a datagram sent under 100 % loss arrived"
    );
}

#[test]
fn nftables_full_loss_on_a_link_stops_traffic_to_that_host_and_removing_it_restores_it() {
    if unavailable() {
        return;
    }
    if !netns::have("nft") {
        return netns::skip("nftables loss not exercised: `nft` not found");
    }
    let c = Cluster::new(3);
    assert_eq!(c.loss_tool, LossTool::Nftables);
    full_loss_stops_traffic_to_one_host_and_zero_loss_restores_it(&c);
}

#[test]
fn iptables_fallback_full_loss_stops_traffic_to_that_host_and_removing_it_restores_it() {
    if unavailable() {
        return;
    }
    if !netns::have("iptables") {
        return netns::skip("iptables fallback not exercised: `iptables` not found");
    }
    let mut c = Cluster::new(3);
    c.use_loss_tool(LossTool::Iptables);
    full_loss_stops_traffic_to_one_host_and_zero_loss_restores_it(&c);
}

#[test]
fn loss_from_a_host_stops_what_it_sends_but_not_what_it_receives() {
    if unavailable() {
        return;
    }
    if !netns::have("nft") {
        return netns::skip("nftables loss not exercised: `nft` not found");
    }
    let c = Cluster::new(2);
    let mut r0 = c.probe_receiver(0, PROBE_PORT, None);
    let mut r1 = c.probe_receiver(1, PROBE_PORT, None);
    c.set_loss(1, Direction::FromHost, 100);
    send_all(&c, 1, unicast(&c, 0), &tagged("blocked"));
    assert!(
        c.send_until_received(0, unicast(&c, 1), "inbound", &mut [&mut r1]),
        "from-host loss must leave the other direction alone: {:?}",
        r1.seen
    );
    assert!(c.loss_drops(1, Direction::FromHost).unwrap() >= BLOCKED_DATAGRAMS as u64);
    c.set_loss(1, Direction::FromHost, 0);
    assert!(c.send_until_received(1, unicast(&c, 0), "open", &mut [&mut r0]));
    assert!(
        received_with_prefix(&mut r0, "blocked-").is_empty(),
        "{:?}",
        r0.seen
    );
}

#[test]
fn link_down_partitions_a_host_both_ways_and_link_up_heals_it() {
    if unavailable() {
        return;
    }
    let c = Cluster::new(3);
    let mut r0 = c.probe_receiver(0, PROBE_PORT, Some(c.multicast_group));
    let mut r1 = c.probe_receiver(1, PROBE_PORT, Some(c.multicast_group));
    let mut r2 = c.probe_receiver(2, PROBE_PORT, Some(c.multicast_group));

    c.partition(&[2]);
    let cut = tagged("cut");
    send_all(&c, 0, group(&c), &cut);
    assert!(
        r1.wait_payload(cut.last().unwrap(), Duration::from_secs(10)),
        "host 1 is on the majority side and must get the burst: {:?}",
        r1.seen
    );
    assert_eq!(received_with_prefix(&mut r1, "cut-"), cut);
    // From the cut-off host: nothing reaches anyone (send errors are allowed, not required).
    send_all(&c, 2, group(&c), &tagged("minority"));
    send_all(&c, 2, unicast(&c, 0), &tagged("minority-uni"));

    c.heal(&[2]);
    assert!(
        c.send_until_received(0, group(&c), "healed", &mut [&mut r1, &mut r2]),
        "heal did not restore host 0 -> 2: {:?}",
        r2.seen
    );
    assert!(
        c.send_until_received(2, group(&c), "healed-back", &mut [&mut r0, &mut r1]),
        "heal did not restore host 2 -> others: {:?} {:?}",
        r0.seen,
        r1.seen
    );
    assert!(
        received_with_prefix(&mut r2, "cut-").is_empty(),
        "{:?}",
        r2.seen
    );
    assert!(
        received_with_prefix(&mut r0, "minority").is_empty(),
        "{:?}",
        r0.seen
    );
    assert!(
        received_with_prefix(&mut r1, "minority").is_empty(),
        "{:?}",
        r1.seen
    );
}

#[test]
fn bandwidth_cap_puts_tbf_on_the_link_and_traffic_still_flows_until_removed() {
    if unavailable() {
        return;
    }
    if !netns::have("tc") {
        return netns::skip("bandwidth cap not exercised: `tc` not found");
    }
    let c = Cluster::new(2);
    c.set_bandwidth(1, Direction::ToHost, Some(8_000));
    let q = c.qdisc(1, Direction::ToHost);
    assert!(q.contains("tbf") && q.contains("8Mbit"), "{q}");
    c.set_bandwidth(0, Direction::FromHost, Some(4_000));
    let q0 = c.qdisc(0, Direction::FromHost);
    assert!(q0.contains("tbf") && q0.contains("4Mbit"), "{q0}");
    let mut r1 = c.probe_receiver(1, PROBE_PORT, None);
    assert!(c.send_until_received(0, unicast(&c, 1), "capped", &mut [&mut r1]));
    c.set_bandwidth(1, Direction::ToHost, None);
    c.set_bandwidth(0, Direction::FromHost, None);
    assert!(!c.qdisc(1, Direction::ToHost).contains("tbf"));
    assert!(!c.qdisc(0, Direction::FromHost).contains("tbf"));
}

fn root_links() -> String {
    netns::run(std::process::Command::new("ip").args(["-o", "link"])).stdout
}

#[test]
fn dropping_the_cluster_removes_every_namespace_bridge_veth_and_process_even_on_panic() {
    if unavailable() {
        return;
    }
    let (names, tag, pid) = {
        let c = Cluster::new(3);
        let p = c.spawn(c.command(1, "sleep", &["600"]));
        let names = c.netns_created();
        assert_eq!(names.len(), 4, "{names:?}");
        let listed = netns::netns_names();
        for n in &names {
            assert!(listed.contains(n), "{n} not created: {listed:?}");
        }
        let br = c.run_in_bridge("ip", &["-o", "link"]).stdout;
        assert!(br.contains(&c.bridge), "{br}");
        let pid = p.pid();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        (names, format!("ct{}", c.subnet), pid)
    };
    let listed = netns::netns_names();
    for n in &names {
        assert!(!listed.contains(n), "{n} survived the guard: {listed:?}");
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived the guard"
    );
    assert!(
        !root_links().contains(&format!("{tag}h")) && !root_links().contains(&format!("{tag}p")),
        "a veth of the cluster is in the root namespace:\n{}",
        root_links()
    );

    // And when the test body panics half-way.
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::panic::catch_unwind(move || {
        let c = Cluster::new(2);
        let _p = c.spawn(c.command(0, "sleep", &["600"]));
        tx.send((c.netns_created(), _p.pid())).unwrap();
        panic!("deliberate panic inside a cluster's scope");
    });
    assert!(outcome.is_err());
    let (names, pid) = rx.recv().unwrap();
    let listed = netns::netns_names();
    for n in &names {
        assert!(!listed.contains(n), "{n} survived a panic: {listed:?}");
    }
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn leftovers_of_a_dead_run_are_removed_and_those_of_live_runs_are_kept() {
    if unavailable() {
        return;
    }
    // A PID that is surely dead: a child we started and reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let dead = child.id();
    let stale = format!("{}{dead}-9-br", netns::NAME_PREFIX);
    let live = format!("{}{}-stale-test", netns::NAME_PREFIX, std::process::id());
    for n in [&stale, &live] {
        netns::run_ok(std::process::Command::new("ip").args(["netns", "add", n]));
    }
    let removed = netns::remove_stale();
    let listed = netns::netns_names();
    let _ = netns::run(std::process::Command::new("ip").args(["netns", "del", &live]));
    if std::path::Path::new(&format!("/proc/{dead}")).exists() {
        // The PID was reused in the meantime: the leftover must then be kept.
        let _ = netns::run(std::process::Command::new("ip").args(["netns", "del", &stale]));
        return netns::skip("dead PID was reused; stale-cleanup verdict not taken");
    }
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!listed.contains(&stale), "{listed:?}");
    assert!(listed.contains(&live), "a live run's namespace was removed");
    assert!(!removed.contains(&live));
}

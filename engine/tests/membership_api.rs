//! Membership through the public API, in one process over the in-memory network: a node
//! joining by seeds restores the group's state before anything else, a minority partition
//! blocks and rejoins as a new incarnation after the heal, a dropped node leaves gracefully.
//! Bounded waits only decide *failure* (a hang), never a verdict.

use cohort::node::{Delivery, Handler, View};
use cohort::{Driver, Group, MemoryNetwork, Node, Order};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a member's application saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Restore(u64),
    View(u64, Vec<String>),
    Block,
}

/// An application whose state is the number of messages delivered (and their byte sum).
#[derive(Default)]
struct Counter {
    delivered: u64,
    sum: u64,
}

#[derive(Clone, Default)]
struct App {
    state: Arc<Mutex<Counter>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl App {
    fn delivered(&self) -> u64 {
        self.state.lock().unwrap().delivered
    }
    fn state(&self) -> (u64, u64) {
        let s = self.state.lock().unwrap();
        (s.delivered, s.sum)
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn views(&self) -> Vec<(u64, Vec<String>)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::View(id, m) => Some((id, m)),
                _ => None,
            })
            .collect()
    }
}

impl Handler for App {
    fn on_deliver(&mut self, d: &Delivery<'_>) {
        let mut s = self.state.lock().unwrap();
        s.delivered += 1;
        s.sum += d.payload.iter().map(|&b| b as u64).sum::<u64>();
    }
    fn on_view(&mut self, view: &View) {
        self.seen
            .lock()
            .unwrap()
            .push(Seen::View(view.id, view.member_ids.clone()));
    }
    fn on_block(&mut self) {
        self.seen.lock().unwrap().push(Seen::Block);
    }
    fn snapshot(&mut self) -> Vec<u8> {
        let s = self.state.lock().unwrap();
        [s.delivered.to_le_bytes(), s.sum.to_le_bytes()].concat()
    }
    fn restore(&mut self, state: &[u8]) {
        let n = |i: usize| u64::from_le_bytes(state[i..i + 8].try_into().unwrap());
        let mut s = self.state.lock().unwrap();
        (s.delivered, s.sum) = (n(0), n(8));
        self.seen.lock().unwrap().push(Seen::Restore(s.delivered));
    }
}

fn node(net: &MemoryNetwork, addr: &str) -> Node {
    Node::builder()
        .bind(addr.parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .heartbeat(Duration::from_millis(10))
        .suspect_timeout(Duration::from_millis(1000))
        .start()
        .expect("node starts")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < SETTLE_TIMEOUT,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn send_n(g: &Group, n: u64, byte: u8) {
    for i in 0..n {
        g.send_blocking(Order::Total, false, &[byte, i as u8, 3])
            .expect("send");
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_joiner_restores_the_groups_state_before_its_first_view_and_then_keeps_up() {
    let net = MemoryNetwork::new(21);
    let (a, b) = (node(&net, "127.0.0.1:9101"), node(&net, "127.0.0.1:9102"));
    let founders = [a.local_addr(), b.local_addr()];
    let (app_a, app_b, app_c) = (App::default(), App::default(), App::default());
    let ga = a.join("kv", &founders, app_a.clone()).unwrap();
    let gb = b.join("kv", &founders, app_b.clone()).unwrap();
    send_n(&ga, 100, 1);
    send_n(&gb, 100, 2);
    wait_until("200 delivered at both", || {
        app_a.delivered() == 200 && app_b.delivered() == 200
    });
    let c = node(&net, "127.0.0.1:9103");
    let gc = c
        .join_with_seeds("kv", &[addr("127.0.0.1:9102")], app_c.clone())
        .expect("admitted");
    // Restore came first, with everything delivered before the join; then view 2 with c.
    let seen = app_c.seen();
    assert_eq!(seen[0], Seen::Restore(200), "{seen:?}");
    assert!(
        matches!(&seen[1], Seen::View(2, m) if m.len() == 3 && m[2] == "127.0.0.1:9103"),
        "{seen:?}"
    );
    assert_eq!(gc.rank(), Some(2));
    assert_eq!(gc.members().len(), 3);
    send_n(&gc, 50, 3);
    send_n(&ga, 50, 1);
    wait_until("everyone at 300 with the same state", || {
        let s = app_a.state();
        s.0 == 300 && app_b.state() == s && app_c.state() == s
    });
}

/// Three nodes on `net` at `addrs`, each with an `App`, founding group `name`.
struct Trio {
    nodes: Vec<Node>,
    members: Vec<SocketAddr>,
    apps: Vec<App>,
    groups: Vec<Group>,
}

fn trio(net: &MemoryNetwork, addrs: [&str; 3], name: &str) -> Trio {
    let nodes: Vec<Node> = addrs.iter().map(|a| node(net, a)).collect();
    let members: Vec<SocketAddr> = nodes.iter().map(Node::local_addr).collect();
    let apps: Vec<App> = (0..3).map(|_| App::default()).collect();
    let groups: Vec<Group> = nodes
        .iter()
        .zip(&apps)
        .map(|(n, app)| n.join(name, &members, app.clone()).unwrap())
        .collect();
    Trio {
        nodes,
        members,
        apps,
        groups,
    }
}

#[test]
fn a_minority_partition_blocks_and_rejoins_as_a_new_incarnation_with_the_state() {
    let net = MemoryNetwork::new(22);
    let Trio {
        nodes: _nodes,
        members,
        apps,
        groups,
    } = trio(
        &net,
        ["127.0.0.1:9111", "127.0.0.1:9112", "127.0.0.1:9113"],
        "p",
    );
    send_n(&groups[0], 20, 1);
    wait_until("20 everywhere", || apps.iter().all(|a| a.delivered() == 20));
    net.partition(&[&members[..2], &members[2..]]).unwrap();
    wait_until("the minority blocks", || {
        apps[2].seen().contains(&Seen::Block)
    });
    wait_until("the majority goes on without it", || {
        apps[..2].iter().all(|a| {
            a.views()
                .last()
                .is_some_and(|(_, m)| m.len() == 2 && !m.contains(&members[2].to_string()))
        })
    });
    send_n(&groups[1], 30, 2); // the majority carries on
    net.heal();
    let reborn = format!("{}#2", members[2]);
    wait_until("the blocked member rejoins as #2", || {
        apps[0]
            .views()
            .last()
            .is_some_and(|(_, m)| m.contains(&reborn))
            && apps[2]
                .views()
                .last()
                .is_some_and(|(_, m)| m.contains(&reborn))
    });
    // It restored the majority's state (the 30 sent while it was away included).
    wait_until("the same state everywhere", || {
        let s = apps[0].state();
        s.0 == 50 && apps[1].state() == s && apps[2].state() == s
    });
    let seen = apps[2].seen();
    let block = seen.iter().position(|s| *s == Seen::Block).unwrap();
    assert!(
        matches!(seen[block + 1], Seen::Restore(_)),
        "after the block, the rejoin restores before its view: {seen:?}"
    );
}

#[test]
fn dropping_a_node_leaves_gracefully_with_its_messages_delivered() {
    let net = MemoryNetwork::new(23);
    let Trio {
        nodes,
        members,
        apps,
        groups,
    } = trio(
        &net,
        ["127.0.0.1:9121", "127.0.0.1:9122", "127.0.0.1:9123"],
        "l",
    );
    send_n(&groups[2], 40, 7);
    let mut nodes = nodes;
    let leaver = nodes.pop().unwrap();
    let started = Instant::now();
    drop(leaver); // leaves: its 40 are delivered in its last view, then the view changes
    assert!(started.elapsed() < SETTLE_TIMEOUT, "the leave is bounded");
    wait_until("a view without the leaver", || {
        apps[..2]
            .iter()
            .all(|a| a.views().last().is_some_and(|(_, m)| m.len() == 2))
    });
    for a in &apps[..2] {
        assert_eq!(a.delivered(), 40, "the leaver's messages came first");
        assert!(!a.seen().contains(&Seen::Block));
    }
    assert_eq!(groups[0].members(), members[..2].to_vec());
}

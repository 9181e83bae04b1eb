//! Requests and replies through the public API over the in-memory network: each `Replies`
//! mode, null replies, a member failing before it replies (counted as a null reply), and
//! requests kept apart from ordinary deliveries. Bounded waits only decide a hang.

use cohort::node::{Delivery, Handler, Replies, Reply, RequestError};
use cohort::{Driver, Group, MemoryNetwork, Node, Order};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Answers a request with its own address and the request's bytes, unless it declines.
#[derive(Clone)]
struct Answerer {
    me: SocketAddr,
    decline: bool,
    deliveries: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl Handler for Answerer {
    fn on_deliver(&mut self, _: &Delivery<'_>) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
    }
    fn on_request(&mut self, r: &Delivery<'_>) -> Option<Vec<u8>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.decline {
            return None;
        }
        let mut out = self.me.to_string().into_bytes();
        out.push(b'/');
        out.extend_from_slice(r.payload);
        Some(out)
    }
}

struct Trio {
    net: MemoryNetwork,
    nodes: Vec<Node>,
    groups: Vec<Group>,
    apps: Vec<Answerer>,
}

/// Three members of group `name`; the third declines every request when `third_declines`.
fn trio(seed: u64, base: u16, third_declines: bool) -> Trio {
    let net = MemoryNetwork::new(seed);
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|i| format!("127.0.0.1:{}", base + i).parse().unwrap())
        .collect();
    let nodes: Vec<Node> = addrs
        .iter()
        .map(|a| {
            Node::builder()
                .bind(*a)
                .driver(Driver::Memory(net.clone()))
                .heartbeat(Duration::from_millis(10))
                .suspect_timeout(Duration::from_millis(1000))
                .start()
                .unwrap()
        })
        .collect();
    let apps: Vec<Answerer> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Answerer {
            me: *a,
            decline: third_declines && i == 2,
            deliveries: Arc::default(),
            requests: Arc::default(),
        })
        .collect();
    let groups = nodes
        .iter()
        .zip(&apps)
        .map(|(n, app)| n.join("rq", &addrs, app.clone()).unwrap())
        .collect();
    Trio {
        net,
        nodes,
        groups,
        apps,
    }
}

fn bodies(replies: &[Reply]) -> Vec<Option<String>> {
    let mut v: Vec<Option<String>> = replies
        .iter()
        .map(|r| {
            r.payload
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn replies_all_gathers_every_members_answer_including_null_ones() {
    let t = trio(31, 9201, true);
    let replies = t.groups[0]
        .request(Order::Total, b"q1", Replies::All)
        .unwrap()
        .wait_timeout(WAIT)
        .unwrap();
    assert_eq!(
        bodies(&replies),
        vec![
            None,
            Some("127.0.0.1:9201/q1".into()),
            Some("127.0.0.1:9202/q1".into()),
        ]
    );
    let null = replies.iter().find(|r| r.payload.is_none()).unwrap();
    assert_eq!(null.from, "127.0.0.1:9203");
    drop(t.nodes);
}

#[test]
fn replies_first_and_count_stop_at_enough_non_null_answers() {
    let t = trio(32, 9211, true);
    let first = t.groups[1]
        .request(Order::Causal, b"f", Replies::First)
        .unwrap()
        .wait_timeout(WAIT)
        .unwrap();
    assert!(
        first.iter().filter(|r| r.payload.is_some()).count() == 1,
        "{first:?}"
    );
    let two = t.groups[2]
        .request(Order::Fifo, b"c", Replies::Count(2))
        .unwrap()
        .wait_timeout(WAIT)
        .unwrap();
    assert_eq!(
        two.iter().filter(|r| r.payload.is_some()).count(),
        2,
        "{two:?}"
    );
    // More than there can be: every member answered, so it completes with what there is.
    let many = t.groups[0]
        .request(Order::Total, b"m", Replies::Count(5))
        .unwrap()
        .wait_timeout(WAIT)
        .unwrap();
    assert_eq!(many.len(), 3, "{many:?}");
    assert_eq!(many.iter().filter(|r| r.payload.is_some()).count(), 2);
}

#[test]
fn replies_none_answers_at_once_and_members_see_the_request_not_a_delivery() {
    let t = trio(33, 9221, false);
    let none = t.groups[0]
        .request(Order::Fifo, b"n", Replies::None)
        .unwrap()
        .wait_timeout(WAIT)
        .unwrap();
    assert!(none.is_empty());
    t.groups[0].send(Order::Fifo, false, b"plain").unwrap();
    t.groups[0].flush().unwrap();
    let start = std::time::Instant::now();
    while t
        .apps
        .iter()
        .any(|a| a.requests.load(Ordering::Relaxed) < 1)
        || t.apps
            .iter()
            .any(|a| a.deliveries.load(Ordering::Relaxed) < 1)
    {
        assert!(
            start.elapsed() < WAIT,
            "request and message delivered everywhere"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    for a in &t.apps {
        assert_eq!(a.requests.load(Ordering::Relaxed), 1, "one request upcall");
        assert_eq!(
            a.deliveries.load(Ordering::Relaxed),
            1,
            "one ordinary delivery"
        );
    }
}

#[test]
fn a_member_failing_before_it_replies_counts_as_a_null_reply() {
    let t = trio(34, 9231, false);
    // Cut the third member off: it never sees the request; the view change excludes it.
    let addrs: Vec<SocketAddr> = t.nodes.iter().map(Node::local_addr).collect();
    t.net.partition(&[&addrs[..2], &addrs[2..]]).unwrap();
    let replies = t.groups[0]
        .request(Order::Total, b"q", Replies::All)
        .unwrap()
        .wait_timeout(WAIT)
        .unwrap();
    assert_eq!(
        bodies(&replies),
        vec![
            None,
            Some("127.0.0.1:9231/q".into()),
            Some("127.0.0.1:9232/q".into()),
        ],
        "{replies:?}"
    );
    assert_eq!(
        replies.iter().find(|r| r.payload.is_none()).unwrap().from,
        "127.0.0.1:9233"
    );
    // The cut-off member blocked (minority): its request waits for the rejoin, then goes
    // out in the view that readmits it (as a new incarnation) and gets every answer.
    let start = std::time::Instant::now();
    while t.groups[2].stats().blocks == 0 {
        assert!(start.elapsed() < WAIT, "the cut-off member blocks");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(t.groups[2].view(), None);
    let waiting = t.groups[2]
        .request(Order::Total, b"later", Replies::All)
        .unwrap();
    assert!(matches!(
        waiting.wait_timeout(Duration::from_millis(100)),
        Err(RequestError::TimedOut { .. })
    ));
    t.net.heal();
    let replies = waiting.wait_timeout(WAIT).unwrap();
    assert_eq!(
        bodies(&replies),
        vec![
            Some("127.0.0.1:9231/later".into()),
            Some("127.0.0.1:9232/later".into()),
            Some("127.0.0.1:9233/later".into()),
        ],
        "{replies:?}"
    );
    assert!(replies.iter().any(|r| r.from == "127.0.0.1:9233#2"));
}

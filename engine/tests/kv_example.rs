//! The replicated key-value map of `examples/kv.rs`, included as a module so the map and the
//! codec are tested as the example has them: over the in-memory network, three founders and a
//! joiner end with the map a reference model builds from the group's total order; the command
//! codec refuses truncated and garbage bytes (counted, never a panic); a snapshot restores
//! into an equal map, and a damaged one is refused whole. Bounded waits only decide failure
//! (a hang), never a verdict.

#[path = "../examples/kv.rs"]
#[allow(dead_code)] // `main` and a few accessors serve the example only
mod kv;

use cohort::node::{Delivery, Handler, View};
use cohort::{Driver, Group, MemoryNetwork, Node, Order};
use kv::{
    random_command, Command, CommandError, KvReplica, ReplicatedMap, SnapshotError, Xorshift,
    KEY_BYTES_MAX, SNAPSHOT_VERSION, VALUE_BYTES_MAX,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The example's handler, plus the payloads it was delivered, in order, and where it restored.
#[derive(Clone)]
struct Recorded {
    replica: KvReplica,
    log: Arc<Mutex<Vec<Vec<u8>>>>,
    restored_delivered: Arc<Mutex<Option<u64>>>,
}

impl Recorded {
    fn new() -> Self {
        Recorded {
            replica: KvReplica::new("test", false),
            log: Arc::default(),
            restored_delivered: Arc::default(),
        }
    }
    fn log(&self) -> Vec<Vec<u8>> {
        self.log.lock().unwrap().clone()
    }
    fn map(&self) -> ReplicatedMap {
        self.replica.with_map(Clone::clone)
    }
}

impl Handler for Recorded {
    fn on_deliver(&mut self, d: &Delivery<'_>) {
        assert_eq!(
            d.order,
            Order::Total,
            "every command travels in total order"
        );
        self.log.lock().unwrap().push(d.payload.to_vec());
        self.replica.on_deliver(d);
    }
    fn on_view(&mut self, view: &View) {
        self.replica.on_view(view);
    }
    fn snapshot(&mut self) -> Vec<u8> {
        self.replica.snapshot()
    }
    fn restore(&mut self, state: &[u8]) {
        self.replica.restore(state);
        *self.restored_delivered.lock().unwrap() = Some(self.replica.with_map(|m| m.delivered()));
    }
}

/// The reference model: a plain map, built from the delivered bytes in order by its own
/// reading of the format (malformed commands skipped).
fn reference_model(log: &[Vec<u8>]) -> BTreeMap<String, Vec<u8>> {
    let mut model = BTreeMap::new();
    for bytes in log {
        match Command::decode(bytes) {
            Ok(Command::Set { key, value }) => {
                model.insert(key, value);
            }
            Ok(Command::Delete { key }) => {
                model.remove(&key);
            }
            Err(_) => {}
        }
    }
    model
}

fn node(net: &MemoryNetwork, addr: &str) -> Node {
    Node::builder()
        .bind(addr.parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .heartbeat(Duration::from_millis(20))
        .suspect_timeout(Duration::from_millis(1_000))
        .start()
        .expect("node starts")
}

fn wait_delivered(apps: &[Recorded], commands: u64) {
    let replicas: Vec<KvReplica> = apps.iter().map(|a| a.replica.clone()).collect();
    assert!(
        kv::wait_delivered(&replicas, commands, SETTLE_TIMEOUT),
        "timed out waiting for {commands} commands at every member: {:?}",
        replicas
            .iter()
            .map(|r| r.with_map(|m| m.delivered()))
            .collect::<Vec<_>>()
    );
}

fn write_concurrently(groups: &[Group], seed: u64, writes: u64) {
    std::thread::scope(|s| {
        for (i, g) in groups.iter().enumerate() {
            s.spawn(move || {
                kv::write_random(g, seed + i as u64, writes, 64, 24).expect("writes");
            });
        }
    });
}

#[test]
fn three_founders_and_a_joiner_hold_the_map_the_total_order_builds() {
    let net = MemoryNetwork::new(61);
    let founders: Vec<Node> = ["127.0.0.1:9601", "127.0.0.1:9602", "127.0.0.1:9603"]
        .iter()
        .map(|a| node(&net, a))
        .collect();
    let members: Vec<SocketAddr> = founders.iter().map(Node::local_addr).collect();
    let mut apps: Vec<Recorded> = (0..3).map(|_| Recorded::new()).collect();
    let mut groups: Vec<Group> = founders
        .iter()
        .zip(&apps)
        .map(|(n, app)| n.join("kv", &members, app.clone()).unwrap())
        .collect();

    // Before the join: 3 × 200 writes on 64 keys (so the order matters), and 3 garbage
    // commands that every member must skip alike.
    write_concurrently(&groups, 1_000, 200);
    for garbage in [&[][..], &[9, 1, 2][..], &[1, 5, 0, b'k'][..]] {
        groups[1]
            .send_blocking(Order::Total, false, garbage)
            .unwrap();
    }
    wait_delivered(&apps, 603);

    let joiner = node(&net, "127.0.0.1:9604");
    let app = Recorded::new();
    groups.push(
        joiner
            .join_with_seeds("kv", &members[2..], app.clone())
            .expect("admitted"),
    );
    apps.push(app);
    let restored_at = apps[3]
        .restored_delivered
        .lock()
        .unwrap()
        .expect("the joiner restored before its first view");
    assert_eq!(
        restored_at, 603,
        "the snapshot holds everything before the join"
    );

    write_concurrently(&groups, 2_000, 100);
    wait_delivered(&apps, 1_003);

    let order = apps[0].log();
    assert_eq!(order.len(), 1_003);
    for app in &apps[1..3] {
        assert!(app.log() == order, "founders delivered in one total order");
    }
    assert!(
        apps[3].log() == order[603..],
        "the joiner delivered exactly the commands after its snapshot, in the same order"
    );
    let model = reference_model(&order);
    assert!(model.len() > 10, "the writes left a non-trivial map");
    for (i, app) in apps.iter().enumerate() {
        let map = app.map();
        assert!(
            *map.entries() == model,
            "member {i} holds the reference model's map"
        );
        assert_eq!((map.applied(), map.malformed()), (1_000, 3), "member {i}");
        assert_eq!(map.digest(), apps[0].map().digest());
    }
    drop(groups);
}

#[test]
fn a_joiner_admitted_during_a_burst_of_writes_restores_a_prefix_and_delivers_the_rest() {
    let net = MemoryNetwork::new(62);
    let founders: Vec<Node> = ["127.0.0.1:9611", "127.0.0.1:9612", "127.0.0.1:9613"]
        .iter()
        .map(|a| node(&net, a))
        .collect();
    let members: Vec<SocketAddr> = founders.iter().map(Node::local_addr).collect();
    let mut apps: Vec<Recorded> = (0..3).map(|_| Recorded::new()).collect();
    let mut groups: Vec<Group> = founders
        .iter()
        .zip(&apps)
        .map(|(n, app)| n.join("kv", &members, app.clone()).unwrap())
        .collect();
    write_concurrently(&groups, 2_500, 100);
    wait_delivered(&apps, 300);
    let joiner = node(&net, "127.0.0.1:9614");
    let app = Recorded::new();
    // The founders write while the fourth node joins: the snapshot cuts the stream somewhere
    // after the 300 delivered everywhere before the join started.
    let joined = std::thread::scope(|s| {
        for (i, g) in groups.iter().enumerate() {
            s.spawn(move || kv::write_random(g, 3_000 + i as u64, 300, 64, 24).expect("writes"));
        }
        joiner
            .join_with_seeds("kv", &members[..1], app.clone())
            .expect("admitted")
    });
    groups.push(joined);
    apps.push(app);
    write_concurrently(&groups, 4_000, 50);
    wait_delivered(&apps, 1_400);

    let order = apps[0].log();
    assert_eq!(order.len(), 1_400);
    for app in &apps[1..3] {
        assert!(app.log() == order, "founders delivered in one total order");
    }
    let restored_at = apps[3]
        .restored_delivered
        .lock()
        .unwrap()
        .expect("the joiner restored") as usize;
    assert!(
        restored_at >= 300,
        "the snapshot holds what preceded the join"
    );
    assert!(
        apps[3].log() == order[restored_at..],
        "the joiner delivered exactly the commands after its snapshot (at {restored_at})"
    );
    let model = reference_model(&order);
    for (i, app) in apps.iter().enumerate() {
        assert!(
            *app.map().entries() == model,
            "member {i} holds the reference model's map"
        );
    }
    drop(groups);
}

// ---------------------------------------------------------------- the command codec

fn sample_commands() -> Vec<Command> {
    vec![
        Command::Set {
            key: "k".into(),
            value: b"value".to_vec(),
        },
        Command::Set {
            key: String::new(),
            value: Vec::new(),
        },
        Command::Set {
            key: "ключ".into(), // multi-byte UTF-8
            value: vec![0xff; VALUE_BYTES_MAX],
        },
        Command::Delete {
            key: "x".repeat(KEY_BYTES_MAX),
        },
    ]
}

#[test]
fn a_command_reads_back_as_written() {
    for command in sample_commands() {
        assert_eq!(Command::decode(&command.encode()), Ok(command));
    }
}

#[test]
fn every_truncation_of_a_command_is_refused_and_counted() {
    for command in sample_commands() {
        let bytes = command.encode();
        let mut map = ReplicatedMap::new();
        for len in 0..bytes.len() {
            let e = map.apply_bytes(&bytes[..len]).unwrap_err();
            let expected = if len == 0 {
                CommandError::Empty
            } else {
                CommandError::Truncated
            };
            assert_eq!(e, expected, "{command:?} cut at {len}");
        }
        assert_eq!(map.malformed(), bytes.len() as u64);
        assert_eq!((map.applied(), map.entries().len()), (0, 0));
    }
}

#[test]
fn garbage_commands_are_refused_with_the_reason() {
    let set = |key_len: u16, key: &[u8], value_len: u32| {
        let mut b = vec![1];
        b.extend_from_slice(&key_len.to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(&value_len.to_le_bytes());
        b
    };
    assert_eq!(
        Command::decode(&[7, 0, 0]),
        Err(CommandError::UnknownTag(7))
    );
    assert_eq!(
        Command::decode(&[2, 0, 0, 1]),
        Err(CommandError::TrailingBytes(1))
    );
    assert_eq!(
        Command::decode(&set(u16::MAX, b"", 0)),
        Err(CommandError::KeyTooLong(u16::MAX as usize))
    );
    assert_eq!(
        Command::decode(&set(2, &[0xc3, 0x28], 0)),
        Err(CommandError::KeyNotUtf8)
    );
    // A huge announced value is refused by its length, before anything is allocated.
    assert_eq!(
        Command::decode(&set(1, b"k", u32::MAX)),
        Err(CommandError::ValueTooLong(u32::MAX as usize))
    );
    assert_eq!(
        Command::decode(&set(1, b"k", 10)),
        Err(CommandError::Truncated)
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_are_applied_or_counted(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        tag in 0u8..4,
    ) {
        // Half the cases start with a valid tag so that the deeper checks are reached.
        let mut bytes = bytes;
        if tag > 0 && !bytes.is_empty() {
            bytes[0] = tag;
        }
        let mut map = ReplicatedMap::new();
        match map.apply_bytes(&bytes) {
            Ok(()) => {
                prop_assert_eq!((map.applied(), map.malformed()), (1, 0));
                // Accepted bytes are the canonical encoding of what they decode to.
                prop_assert_eq!(Command::decode(&bytes).unwrap().encode(), bytes);
            }
            Err(_) => {
                prop_assert_eq!((map.applied(), map.malformed()), (0, 1));
                prop_assert!(map.entries().is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_snapshots_never_panic_and_a_refused_one_changes_nothing(
        bytes in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let mut bytes = bytes;
        if let Some(b) = bytes.first_mut() {
            *b = SNAPSHOT_VERSION; // reach past the version check
        }
        let mut map = filled_map(7, 20);
        let before = map.clone();
        if map.restore(&bytes).is_err() {
            prop_assert_eq!(map.entries(), before.entries());
            prop_assert_eq!(map.applied(), before.applied());
            prop_assert_eq!(map.snapshots_refused(), 1);
        }
    }
}

// ---------------------------------------------------------------- snapshots

fn filled_map(seed: u64, commands: usize) -> ReplicatedMap {
    let mut random = Xorshift(seed | 1);
    let mut map = ReplicatedMap::new();
    for _ in 0..commands {
        map.apply(random_command(&mut random, 32, 40));
    }
    map.apply_bytes(b"garbage").unwrap_err();
    map
}

#[test]
fn a_snapshot_restored_into_a_fresh_map_equals_the_original() {
    let original = filled_map(42, 500);
    assert!(original.entries().len() > 5);
    let mut fresh = ReplicatedMap::new();
    fresh.restore(&original.snapshot()).expect("restores");
    assert_eq!(fresh, original);
    assert_eq!(fresh.digest(), original.digest());
    assert_eq!((fresh.applied(), fresh.malformed()), (500, 1));
    // Restoring replaces what was there.
    let mut other = filled_map(43, 100);
    other.restore(&original.snapshot()).unwrap();
    assert_eq!(other.entries(), original.entries());
}

#[test]
fn a_damaged_snapshot_is_refused_whole() {
    let original = filled_map(5, 200);
    let snapshot = original.snapshot();
    let mut map = ReplicatedMap::new();
    for len in 0..snapshot.len() {
        assert!(map.restore(&snapshot[..len]).is_err(), "cut at {len}");
    }
    assert_eq!(map.snapshots_refused(), snapshot.len() as u64);
    assert!(map.entries().is_empty());

    let mut other_version = snapshot.clone();
    other_version[0] = SNAPSHOT_VERSION + 1;
    assert_eq!(
        map.restore(&other_version),
        Err(SnapshotError::UnknownVersion(SNAPSHOT_VERSION + 1))
    );
    let mut trailing = snapshot.clone();
    trailing.push(0);
    assert_eq!(map.restore(&trailing), Err(SnapshotError::TrailingBytes(1)));

    // Two entries "b" then "a": keys must ascend.
    let mut swapped = vec![SNAPSHOT_VERSION];
    swapped.extend_from_slice(&[0; 24]);
    swapped.extend_from_slice(&2u32.to_le_bytes());
    for key in [b"b", b"a"] {
        swapped.extend_from_slice(&1u16.to_le_bytes());
        swapped.extend_from_slice(key);
        swapped.extend_from_slice(&0u32.to_le_bytes());
    }
    assert_eq!(map.restore(&swapped), Err(SnapshotError::KeysOutOfOrder));
    assert!(map.entries().is_empty());
}

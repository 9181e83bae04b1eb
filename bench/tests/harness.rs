//! The harness as a user meets it: the binary's argument errors, its JSON lines and plots, and
//! small real runs of each scenario. Nothing here judges speed: only that the harness measures
//! what it says (every message counted, every field written, ratios computed from the
//! ceiling it measured).

use std::path::Path;
use std::process::{Command, Output};

use cohort_bench::axes::{BenchOrder, Senders};
use cohort_bench::ceiling::{DriverName, GsoMode};
use cohort_bench::group_ceiling::{run_group_point, Addressing, GroupPoint};
use cohort_bench::inproc::{run_point as run_inproc, InprocPoint};
use cohort_bench::latency::{run_floor, IdleName, LatencyPoint, LatencyResult};
use cohort_bench::loopback::{
    datagram_bytes_for_payload, run_point as run_loopback, LoopbackPoint, OwnMessages, SendApi,
    Threading, NODE_DATAGRAM_BYTES,
};
use cohort_bench::output::{read_json_lines, ResultRecord};
use cohort_bench::{plots, suite};

/// DESIGN §8's fields, in order.
const DESIGN_FIELDS: [&str; 13] = [
    "scenario",
    "transport",
    "order",
    "size",
    "members",
    "senders",
    "msgs_per_s",
    "mb_per_s",
    "p50_us",
    "p99_us",
    "p999_us",
    "ceiling_msgs_per_s",
    "ratio",
];

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort-bench"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("running cohort-bench")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn no_scenario_is_a_clear_error_that_names_quick() {
    let o = bench(&[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("--quick") && e.contains("subcommand"), "{e}");
}

#[test]
fn out_of_range_arguments_are_refused_with_the_flag_named() {
    for (args, needle) in [
        (&["inproc", "--seconds", "0"][..], "--seconds"),
        (&["inproc", "--members", "65"][..], "--members: 65"),
        (&["inproc", "--sizes", "0"][..], "--sizes: 0"),
        (&["inproc", "--messages", "0"][..], "--messages"),
        (&["loopback", "--drivers", "memory"][..], "inproc"),
        (&["loopback", "--members", "1"][..], "--members: 1"),
        (
            &["loopback", "--repeat", "0"][..],
            "--repeat must be in 1..=15",
        ),
        (&["all", "--repeat", "16"][..], "--repeat must be in 1..=15"),
        (&["latency", "--rates", "0"][..], "--rates: 0"),
    ] {
        let o = bench(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = stderr(&o);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}

#[test]
fn unknown_order_lists_the_orders_there_are() {
    let o = bench(&["inproc", "--orders", "fastest"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("safe-total") && e.contains("causal"), "{e}");
}

fn assert_design_fields(line: &str) {
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    let obj = v.as_object().expect("an object");
    for f in DESIGN_FIELDS {
        assert!(obj.contains_key(f), "missing {f} in {line}");
    }
    // The DESIGN fields come first, in DESIGN's order.
    let at: Vec<usize> = DESIGN_FIELDS
        .iter()
        .map(|f| line.find(&format!("\"{f}\":")).unwrap())
        .collect();
    assert_eq!(at[0], 1, "{line}");
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
}

#[test]
fn a_tiny_inproc_run_writes_complete_json_lines_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out/r.jsonl");
    let plots = dir.path().join("plots");
    let o = bench(&[
        "inproc",
        "--members",
        "2,3",
        "--orders",
        "fifo,safe-total",
        "--messages",
        "200",
        "--seconds",
        "30",
        "--json",
        json.to_str().unwrap(),
        "--plots",
        plots.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("ratio") && stdout.contains("rx ns/msg"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&json).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    for line in &lines {
        assert_design_fields(line);
    }
    for r in read_json_lines(&json).unwrap() {
        assert_eq!(r.scenario, "inproc");
        assert_eq!(r.extra["complete"], serde_json::Value::Bool(true));
        assert_eq!(r.extra["msgs_sent"], serde_json::json!(200));
        assert!(r.ceiling_msgs_per_s > 0.0);
        assert!((r.ratio - r.msgs_per_s / r.ceiling_msgs_per_s).abs() < 1e-9);
    }
    for stem in ["cpu-per-msg.svg", "cpu-per-msg.png"] {
        let len = std::fs::metadata(plots.join(stem)).unwrap().len();
        assert!(len > 0, "{stem} is empty");
    }
}

#[test]
fn inproc_counts_every_delivery_at_every_member_with_all_senders() {
    let r = run_inproc(InprocPoint {
        members: 4,
        senders: Senders::All,
        order: BenchOrder::Causal,
        size: 16,
        messages: 400,
        seconds: 30.0,
    })
    .unwrap();
    assert!(r.complete);
    assert_eq!(r.msgs_sent, 400);
    assert!(r.delivered.iter().all(|&d| d == 400), "{:?}", r.delivered);
    // Each member delivers the 300 messages of the other three.
    assert!(r.delivered_from_others.iter().all(|&d| d == 300));
    let rec = r.record(1000.0);
    assert_eq!(rec.senders, 4);
    assert!((rec.ratio - rec.msgs_per_s / 1000.0).abs() < 1e-9);
}

#[test]
fn group_ceiling_moves_packed_messages_between_member_threads() {
    let c = run_group_point(GroupPoint {
        driver: DriverName::Mmsg,
        gso: false,
        addressing: Addressing::Fanout,
        members: 2,
        senders: 2,
        size: 64,
        seconds: 0.05,
        datagram_bytes: 1472,
        batch: 8,
    })
    .unwrap();
    assert!(c.msgs_received > 0);
    assert!(c.msgs_received <= c.msgs_sent);
    assert_eq!(c.unpack_errors, 0);
    assert_eq!(c.payload_bytes_received, c.msgs_received * 64);
}

/// The bench's safety cap must sit far above what loopback moves, or the rate is the cap's.
fn assert_uncapped(r: &cohort_bench::loopback::LoopbackResult) {
    assert!(
        !r.send_cap_reached,
        "{} sent: the send cap was reached",
        r.msgs_sent
    );
}

#[test]
fn a_short_loopback_run_delivers_everything_it_sent() {
    let r = run_loopback(LoopbackPoint {
        driver: DriverName::Mmsg,
        addressing: Addressing::Fanout,
        members: 2,
        senders: Senders::One,
        order: BenchOrder::Total,
        size: 64,
        seconds: 0.2,
        idle: cohort::Idle::Backoff,
        threading: Threading::Poller,
        batch: 1,
        api: SendApi::Publisher,
        own: OwnMessages::Discard,
        datagram_bytes: NODE_DATAGRAM_BYTES,
        gso: true,
    })
    .unwrap();
    assert!(r.msgs_sent > 0);
    assert!(r.complete, "not every message was delivered");
    assert_uncapped(&r);
    let rec = r.record(r.msgs_per_s() * 2.0);
    assert!((rec.ratio - 0.5).abs() < 1e-9);
    assert_eq!(rec.transport, "sendmmsg/fanout");
    assert_eq!(
        rec.extra.get("send_api"),
        Some(&serde_json::Value::from("publisher"))
    );
    // Poller threads idle on their own: no idle turns of the members' threads to count.
    assert_eq!(r.idle_yields, None);
    assert!(!rec.extra.contains_key("receiver_idle_yields"));
}

#[test]
fn a_loopback_run_through_group_handles_without_offloads_is_labelled_so_and_delivers_everything() {
    let r = run_loopback(LoopbackPoint {
        driver: DriverName::Mmsg,
        addressing: Addressing::Fanout,
        members: 2,
        senders: Senders::One,
        order: BenchOrder::Fifo,
        size: 64,
        seconds: 0.2,
        idle: cohort::Idle::Backoff,
        threading: Threading::Invoker,
        batch: 1,
        api: SendApi::Handle,
        own: OwnMessages::Discard,
        datagram_bytes: NODE_DATAGRAM_BYTES,
        gso: false,
    })
    .unwrap();
    assert!(r.msgs_sent > 0);
    assert!(r.complete, "not every message was delivered");
    let rec = r.record(1.0);
    assert_eq!(rec.transport, "sendmmsg/fanout/invoker/nogso/handle");
    assert_eq!(rec.extra.get("gso"), Some(&serde_json::Value::from("off")));
    assert_eq!(
        rec.extra.get("send_api"),
        Some(&serde_json::Value::from("handle"))
    );
}

#[test]
fn a_short_invoker_mode_loopback_run_delivers_everything_it_sent() {
    let r = run_loopback(LoopbackPoint {
        driver: DriverName::Uring,
        addressing: Addressing::Fanout,
        members: 3,
        senders: Senders::All,
        order: BenchOrder::Causal,
        size: 64,
        seconds: 0.2,
        idle: cohort::Idle::Backoff,
        threading: Threading::Invoker,
        batch: 16,
        api: SendApi::Publisher,
        own: OwnMessages::Deliver,
        datagram_bytes: NODE_DATAGRAM_BYTES,
        gso: true,
    })
    .unwrap();
    assert!(r.msgs_sent > 0);
    assert!(r.complete, "not every message was delivered");
    assert_uncapped(&r);
    let rec = r.record(1.0);
    assert!(
        rec.transport.ends_with("/fanout/invoker/batch16/own"),
        "{}",
        rec.transport
    );
    assert_eq!(rec.extra.get("batch"), Some(&serde_json::Value::from(16)));
    assert_eq!(
        rec.extra.get("send_api"),
        Some(&serde_json::Value::from("handle (send_batch)"))
    );
    assert_eq!(
        rec.extra.get("send_cap_reached"),
        Some(&serde_json::Value::from(false))
    );
    assert_eq!(
        rec.extra.get("own_messages"),
        Some(&serde_json::Value::from("delivered"))
    );
    // The nodes' counters are there, and each send call carried at least one datagram.
    let count = |k: &str| {
        rec.extra
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap()
    };
    assert!(count("datagrams_sent") > 0 && count("datagrams_received") > 0);
    assert!(count("send_calls") <= count("datagrams_sent"));
    // Idle turns are counted per side; every member sends here, so none is a receiver only.
    let yields = r.idle_yields.expect("invoker mode counts idle turns");
    assert_eq!(yields.others, 0, "{yields:?}");
    assert_eq!(count("sender_idle_yields"), yields.senders);
    assert_eq!(count("receiver_idle_yields"), 0);
}

#[test]
fn a_payload_larger_than_the_node_datagram_is_refused_and_runs_in_jumbo_datagrams() {
    let too_large = LoopbackPoint {
        driver: DriverName::Mmsg,
        addressing: Addressing::Fanout,
        members: 2,
        senders: Senders::One,
        order: BenchOrder::Fifo,
        size: 8192,
        seconds: 0.1,
        idle: cohort::Idle::Backoff,
        threading: Threading::Poller,
        batch: 1,
        api: SendApi::Publisher,
        own: OwnMessages::Discard,
        datagram_bytes: NODE_DATAGRAM_BYTES,
        gso: true,
    };
    let e = run_loopback(too_large).expect_err("8192 B does not fit a 1472 B datagram");
    assert!(format!("{e:#}").contains("datagram size 1472 B"), "{e:#}");
    let e = run_loopback(LoopbackPoint {
        threading: Threading::Invoker,
        ..too_large
    })
    .expect_err("nor in invoker mode (and the run is called off, not hung)");
    assert!(format!("{e:#}").contains("datagram size 1472 B"), "{e:#}");
    // The harness runs it in the datagram size it picks for the payload: 8972 B (jumbo).
    let jumbo = datagram_bytes_for_payload(8192, 2);
    assert_eq!(jumbo, 8972);
    assert_eq!(datagram_bytes_for_payload(1024, 2), NODE_DATAGRAM_BYTES);
    for threading in [Threading::Poller, Threading::Invoker] {
        let r = run_loopback(LoopbackPoint {
            threading,
            datagram_bytes: jumbo,
            seconds: 0.2,
            ..too_large
        })
        .unwrap();
        assert!(r.msgs_sent > 0);
        assert!(
            r.complete,
            "{threading:?}: not every 8192 B message was delivered"
        );
        assert_eq!(
            r.record(1.0).extra.get("datagram_bytes"),
            Some(&serde_json::Value::from(8972))
        );
    }
}

fn raw_floor_at_1k(driver: DriverName, idle: IdleName) -> LatencyResult {
    run_floor(LatencyPoint {
        driver,
        idle,
        order: BenchOrder::Total,
        rate: 1_000,
        seconds: 0.2,
        threading: Threading::Invoker,
    })
    .unwrap()
}

#[test]
fn a_short_raw_floor_run_records_every_scheduled_message_after_warm_up() {
    // Both drivers, and both idle strategies (Backoff waits in the transport when idle).
    for (driver, idle, label) in [
        (DriverName::Uring, IdleName::BusySpin, "io_uring"),
        (DriverName::Mmsg, IdleName::Backoff, "sendmmsg"),
    ] {
        let r = raw_floor_at_1k(driver, idle);
        assert!(r.raw_floor);
        assert_eq!(r.scheduled, 200, "1 k msg/s for 0.2 s");
        assert_eq!(r.delivered, r.scheduled, "{label}: every datagram arrived");
        assert_eq!(r.undelivered, 0);
        assert!(!r.sender_stalled);
        // The first 10 % (20 messages) are warm-up; nothing undelivered adds lower bounds.
        assert_eq!(r.recorded, 180);
        assert!(r.p50_us > 0.0, "{label}: {r:?}");
        assert!(
            r.p50_us <= r.p99_us && r.p99_us <= r.max_us,
            "{label}: {r:?}"
        );
        // The row the table and JSON lines get: its own transport and threading, no order.
        let rec = r.record();
        assert_eq!(rec.scenario, "latency");
        assert_eq!(rec.transport, format!("{label}/raw"));
        assert_eq!(rec.order, "none");
        assert_eq!(rec.size, 16);
        assert_eq!((rec.members, rec.senders), (2, 1));
        assert_eq!(rec.ceiling_msgs_per_s, 1_000.0);
        assert_eq!(rec.p99_us, Some(r.p99_us));
        let text = |k: &str| rec.extra.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        assert_eq!(text("threading").as_deref(), Some("raw"));
        assert_eq!(text("idle").as_deref(), Some(idle.label()));
        assert_eq!(text("driver").as_deref(), Some(label));
        assert_eq!(rec.extra["delivered"], 200);
        assert_eq!(rec.extra["lost"], 0);
        assert_design_fields(&serde_json::to_string(&rec).unwrap());
    }
    let zero_rate = LatencyPoint {
        driver: DriverName::Mmsg,
        idle: IdleName::BusySpin,
        order: BenchOrder::Fifo,
        rate: 0,
        seconds: 0.2,
        threading: Threading::Poller,
    };
    assert!(run_floor(zero_rate).is_err(), "a zero rate is refused");
}

fn record(
    scenario: &str,
    transport: &str,
    order: &str,
    size: usize,
    members: usize,
) -> ResultRecord {
    ResultRecord {
        scenario: scenario.into(),
        transport: transport.into(),
        order: order.into(),
        size,
        members,
        senders: 1,
        msgs_per_s: 1000.0 * size as f64,
        mb_per_s: 1.0,
        p50_us: None,
        p99_us: None,
        p999_us: None,
        ceiling_msgs_per_s: 2000.0 * size as f64,
        ratio: 0.5,
        extra: serde_json::Map::new(),
    }
}

fn synthetic_records() -> Vec<ResultRecord> {
    let mut rs = Vec::new();
    for order in ["fifo", "causal", "total", "safe-total"] {
        for size in [16, 64, 256] {
            rs.push(record("loopback", "io_uring/fanout", order, size, 2));
        }
        for (members, ns) in [(3, 100.0), (64, 180.0)] {
            let mut r = record("inproc", "memory", order, 64, members);
            r.extra.insert("receiver_ns_per_msg".into(), ns.into());
            rs.push(r);
        }
    }
    for (idle, rate, p99) in [
        ("busyspin", 10_000.0, 25.0),
        ("backoff", 10_000.0, 80.0),
        ("busyspin", 1_000.0, 20.0),
    ] {
        let mut r = latency_record("io_uring/fanout", "fifo", (rate, idle, "poller"), p99, 2.0);
        r.extra.insert("max_us".into(), (p99 * 5.0).into());
        r.extra.insert("floor_p99_us".into(), (p99 / 2.0).into());
        rs.push(r);
        // The raw floor of the same point: a row of its own.
        let mut f = floor_record(rate, idle, p99 / 2.0);
        f.extra.insert("max_us".into(), p99.into());
        rs.push(f);
    }
    rs
}

/// A latency record at (offered rate, idle strategy, threading) with p50 = p99 / 3 and
/// p99.9 = p99 x `p999_factor`.
fn latency_record(
    transport: &str,
    order: &str,
    (rate, idle, threading): (f64, &str, &str),
    p99: f64,
    p999_factor: f64,
) -> ResultRecord {
    let mut r = record("latency", transport, order, 16, 2);
    r.ceiling_msgs_per_s = rate;
    r.p50_us = Some(p99 / 3.0);
    r.p99_us = Some(p99);
    r.p999_us = Some(p99 * p999_factor);
    r.extra.insert("idle".into(), idle.into());
    r.extra.insert("threading".into(), threading.into());
    r
}

fn floor_record(rate: f64, idle: &str, p99: f64) -> ResultRecord {
    latency_record("io_uring/raw", "none", (rate, idle, "raw"), p99, 1.5)
}

#[test]
fn plots_are_written_for_each_kind_of_result() {
    let dir = tempfile::tempdir().unwrap();
    let report = plots::write_all(&synthetic_records(), dir.path()).unwrap();
    let names: Vec<String> = report
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "throughput-io-uring-fanout-s1-m2.svg",
        "throughput-io-uring-fanout-s1-m2.png",
        "latency.svg",
        "latency.png",
        "cpu-per-msg.svg",
        "cpu-per-msg.png",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
        assert!(std::fs::metadata(dir.path().join(expected)).unwrap().len() > 0);
    }
    let svg = std::fs::read_to_string(dir.path().join("latency.svg")).unwrap();
    if !report.without_text {
        assert!(svg.contains("busyspin p99"), "the legend names each series");
        assert!(
            svg.contains("raw busyspin p99"),
            "the raw floor is a series of its own"
        );
    }
}

#[test]
fn targets_are_judged_from_the_records_with_their_figures() {
    let verdicts = suite::targets(&synthetic_records());
    let find = |needle: &str| {
        verdicts
            .iter()
            .find(|v| v.target.contains(needle))
            .unwrap_or_else(|| panic!("no verdict for {needle}: {verdicts:?}"))
    };
    // Ratio 0.5 misses 0.8 (fbcast) and 0.7 (abcast) but meets 0.4 (safe abcast).
    assert_eq!(find("fbcast ≥ 0.8").met, Some(false));
    assert_eq!(find("abcast ≥ 0.7").met, Some(false));
    assert_eq!(find("safe abcast ≥ 0.4").met, Some(true));
    // 180 / 100 = 1.8 > 1.5.
    let g = find("3 to 64 members (fifo");
    assert_eq!(g.met, Some(false));
    assert!((g.figure.unwrap() - 1.8).abs() < 1e-9);
    // Only the BusySpin point at 10 k msg/s is judged, not its raw floor: p99 25 µs < 30 µs,
    // with the floor's p99 beside it.
    let lat: Vec<_> = verdicts
        .iter()
        .filter(|v| v.target.contains("p99"))
        .collect();
    assert_eq!(lat.len(), 1);
    assert_eq!(lat[0].met, Some(true));
    assert!(lat[0].target.contains("io_uring/fanout"), "{:?}", lat[0]);
    assert_eq!(lat[0].detail, "p99 25.0 µs; raw path p99 12.5 µs");
    // The table shows the floor's p99 on the Cohort row and the floor as its own row.
    let tables = suite::tables(&synthetic_records());
    let (_, t) = tables
        .iter()
        .find(|(title, _)| title.starts_with("latency"))
        .unwrap();
    let text = t.render();
    assert!(
        text.contains("raw p99 µs") && text.contains("io_uring/raw"),
        "{text}"
    );
    assert!(
        text.contains("12.5"),
        "the floor's p99 on the Cohort row: {text}"
    );
    assert_eq!(find("netns").met, None);
}

#[test]
fn plot_subcommand_redraws_from_a_json_file() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.jsonl");
    let mut text = String::new();
    for r in synthetic_records() {
        text.push_str(&serde_json::to_string(&r).unwrap());
        text.push('\n');
    }
    std::fs::write(&json, text).unwrap();
    let out = dir.path().join("p");
    let o = bench(&[
        "plot",
        "--json",
        json.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(Path::new(&out.join("latency.png")).exists());
    // A file that is not JSON lines is an error naming the line.
    std::fs::write(&json, "{\"scenario\":\"x\"}\nnot json\n").unwrap();
    let o = bench(&[
        "plot",
        "--json",
        json.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("r.jsonl:1"), "{}", stderr(&o));
}

#[test]
fn a_repeated_loopback_path_reports_each_point_once_with_its_median_run_and_range() {
    let plan = suite::Plan {
        loopback: vec![suite::LoopbackPlan {
            drivers: vec![DriverName::Mmsg],
            addressing: vec![Addressing::Fanout],
            members: vec![2],
            senders: vec![Senders::One],
            orders: vec![BenchOrder::Fifo, BenchOrder::Total],
            sizes: vec![64],
            seconds: 0.1,
            ceiling_seconds: 0.05,
            idle: IdleName::Backoff,
            threading: vec![Threading::Invoker],
            batch: 1,
            api: SendApi::Publisher,
            own: OwnMessages::Discard,
            gso: GsoMode::Both,
            repeat: 3,
        }],
        ..suite::Plan::default()
    };
    assert_eq!(
        suite::plan_steps(&plan),
        2 * 3 * (1 + 2),
        "GSO off and on, each 3 runs of a ceiling and 2 orders"
    );
    let outcome = suite::run_plan(
        &plan,
        &suite::Outputs {
            json: None,
            plots: None,
        },
    )
    .unwrap();
    assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);
    assert_eq!(
        outcome.records.len(),
        4,
        "one record per order and GSO setting, not per run"
    );
    let off: Vec<_> = outcome
        .records
        .iter()
        .filter(|r| r.transport.ends_with("/nogso"))
        .collect();
    assert_eq!(off.len(), 2, "the GSO-off path is labelled so");
    for r in &off {
        assert_eq!(r.extra.get("gso"), Some(&serde_json::Value::from("off")));
        assert_eq!(
            r.extra.get("ceiling_gso"),
            Some(&serde_json::Value::from(false)),
            "its ceiling ran without GSO too"
        );
    }
    for r in &outcome.records {
        let f = |k: &str| r.extra.get(k).and_then(|v| v.as_f64()).unwrap();
        assert_eq!(f("repeat"), 3.0);
        assert_eq!(f("runs"), 3.0);
        assert!(
            f("ratio_min") <= r.ratio && r.ratio <= f("ratio_max"),
            "{} within [{}, {}]",
            r.ratio,
            f("ratio_min"),
            f("ratio_max")
        );
        assert_eq!(
            r.extra.get("complete"),
            Some(&serde_json::Value::from(true))
        );
    }
}

#[test]
fn the_median_run_is_the_middle_ratio_and_one_run_carries_no_range() {
    let run = |ratio: f64| ResultRecord {
        ratio,
        ..synthetic_records()[0].clone()
    };
    let m = suite::median_ratio_run(vec![run(0.3), run(0.1), run(0.2), run(0.4)], 4).unwrap();
    assert_eq!(m.ratio, 0.3, "the upper median of an even count");
    assert_eq!(m.extra.get("ratio_min").and_then(|v| v.as_f64()), Some(0.1));
    assert_eq!(m.extra.get("ratio_max").and_then(|v| v.as_f64()), Some(0.4));
    let one = suite::median_ratio_run(vec![run(0.5)], 1).unwrap();
    assert_eq!(one.ratio, 0.5);
    assert!(
        !one.extra.contains_key("ratio_min"),
        "one run planned: no range"
    );
    assert!(suite::median_ratio_run(Vec::new(), 3).is_none());
}

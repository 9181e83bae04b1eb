//! The checker's own specification: for each property a small hand-made trace that violates
//! exactly that property must be reported under exactly that property, and valid traces
//! (mixed orders, view changes with crashes, joins, safe messages, a blocked minority) must
//! pass. A proptest feeds traces generated from a centralized sequential execution, valid by
//! construction.

use cohort::checker::{check, CheckConfig, Property, Report, VIOLATIONS_STORED_PER_PROPERTY_MAX};
use cohort::trace::{MemberTrace, TraceEvent};
use cohort::Order;
use std::collections::{BTreeMap, HashMap};

const GROUP: &str = "g";

/// A tiny trace builder: one file per member, group "g"; events carry the member's current
/// view and a sent message's order unless given explicitly.
#[derive(Default)]
struct Run {
    files: BTreeMap<String, Vec<TraceEvent>>,
    current_view: HashMap<String, u64>,
    next_seq: HashMap<String, u64>,
    sent_order: HashMap<String, Order>,
}

impl Run {
    fn push(&mut self, node: &str, ev: TraceEvent) {
        self.files.entry(node.to_owned()).or_default().push(ev);
    }

    fn view_of(&self, node: &str) -> u64 {
        self.current_view.get(node).copied().unwrap_or(0)
    }

    /// `node` installs `view` with `members`.
    fn view(&mut self, node: &str, view: u64, members: &[&str]) -> &mut Self {
        self.current_view.insert(node.to_owned(), view);
        self.push(
            node,
            TraceEvent::View {
                node: node.into(),
                group: GROUP.into(),
                view,
                members: members.iter().map(|m| m.to_string()).collect(),
            },
        );
        self
    }

    /// Every listed member installs `view` with exactly those members.
    fn install(&mut self, view: u64, members: &[&str]) -> &mut Self {
        for m in members {
            self.view(m, view, members);
        }
        self
    }

    fn send_with(&mut self, node: &str, order: Order, safe: bool) -> String {
        let seq = self.next_seq.entry(node.to_owned()).or_insert(0);
        *seq += 1;
        let msg = format!("{node}/{seq}");
        self.sent_order.insert(msg.clone(), order);
        let view = self.view_of(node);
        self.push(
            node,
            TraceEvent::Send {
                node: node.into(),
                group: GROUP.into(),
                view,
                msg: msg.clone(),
                order,
                safe,
            },
        );
        msg
    }

    fn send(&mut self, node: &str, order: Order) -> String {
        self.send_with(node, order, false)
    }

    /// `node` delivers `msg` in its current view, with the order it was sent with.
    fn deliver(&mut self, node: &str, msg: &str) -> &mut Self {
        let order = self.sent_order.get(msg).copied().unwrap_or(Order::Fifo);
        let view = self.view_of(node);
        self.deliver_as(node, view, msg, order)
    }

    fn deliver_as(&mut self, node: &str, view: u64, msg: &str, order: Order) -> &mut Self {
        self.push(
            node,
            TraceEvent::Deliver {
                node: node.into(),
                group: GROUP.into(),
                view,
                msg: msg.into(),
                order,
            },
        );
        self
    }

    /// Each listed member delivers each listed message, in that order.
    fn deliver_all(&mut self, nodes: &[&str], msgs: &[&str]) -> &mut Self {
        for n in nodes {
            for m in msgs {
                self.deliver(n, m);
            }
        }
        self
    }

    fn block(&mut self, node: &str) -> &mut Self {
        let view = self.view_of(node);
        self.push(
            node,
            TraceEvent::Block {
                node: node.into(),
                group: GROUP.into(),
                view,
            },
        );
        self
    }

    fn leave(&mut self, node: &str) -> &mut Self {
        let view = self.view_of(node);
        self.push(
            node,
            TraceEvent::Leave {
                node: node.into(),
                group: GROUP.into(),
                view,
            },
        );
        self
    }

    fn traces(&self) -> Vec<MemberTrace> {
        self.files
            .iter()
            .map(|(node, events)| MemberTrace {
                source: format!("{node}.jsonl"),
                events: events.clone(),
            })
            .collect()
    }

    fn check(&self) -> Report {
        check(&self.traces(), &CheckConfig::default())
    }

    fn check_complete(&self) -> Report {
        check(
            &self.traces(),
            &CheckConfig {
                require_complete: true,
                ..Default::default()
            },
        )
    }
}

fn show(report: &Report) -> String {
    report
        .violations
        .iter()
        .map(|v| format!("  {v}\n"))
        .collect()
}

#[track_caller]
fn assert_clean(report: &Report) {
    assert!(
        report.is_ok(),
        "expected no violation, got:\n{}",
        show(report)
    );
}

/// The report holds violations of `property` and of no other property.
#[track_caller]
fn assert_only(report: &Report, property: Property) {
    assert_eq!(
        report.violated(),
        vec![property],
        "expected only {property} violations, got:\n{}",
        show(report)
    );
    assert!(report.violations.iter().all(|v| v.property == property));
}

// ---------------------------------------------------------------------------------------------
// Valid traces.

#[test]
fn fixed_view_with_mixed_orders_is_clean_and_complete() {
    let mut r = Run::default();
    let all = ["a", "b", "c"];
    r.install(1, &all);
    let f1 = r.send("a", Order::Fifo);
    let c1 = r.send("a", Order::Causal);
    r.deliver_all(&["a", "b"], &[&f1, &c1]);
    let c2 = r.send("b", Order::Causal); // after delivering c1: c1 → c2
    let t1 = r.send("c", Order::Total);
    let g1 = r.send("c", Order::Gbcast);
    let t2 = r.send("a", Order::Total);
    // Everyone: f1 c1 c2 t1 g1 t2 — c delivers a's fifo later but still in order.
    r.deliver_all(&["a", "b"], &[&c2, &t1, &g1, &t2]);
    r.deliver_all(&["c"], &[&f1, &c1, &c2, &t1, &g1, &t2]);
    let report = r.check_complete();
    assert_clean(&report);
    assert_eq!(
        (report.members, report.sends, report.deliveries),
        (3, 6, 18)
    );
}

#[test]
fn interleaved_deliveries_that_respect_every_order_are_clean() {
    // Different members interleave fifo streams differently; causal and total still hold.
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let a1 = r.send("a", Order::Fifo);
    let a2 = r.send("a", Order::Fifo);
    let b1 = r.send("b", Order::Fifo);
    let b2 = r.send("b", Order::Fifo);
    let ta = r.send("a", Order::Total);
    let tb = r.send("b", Order::Total);
    r.deliver_all(&["a"], &[&a1, &b1, &a2, &b2, &tb, &ta]);
    r.deliver_all(&["b"], &[&b1, &b2, &a1, &a2, &tb, &ta]);
    r.deliver_all(&["c"], &[&b1, &a1, &b2, &a2, &tb, &ta]);
    assert_clean(&r.check_complete());
}

#[test]
fn view_change_with_a_crash_is_clean() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let m1 = r.send("a", Order::Causal);
    let m2 = r.send("c", Order::Total);
    r.deliver_all(&["a", "b"], &[&m1, &m2]);
    r.deliver("c", &m1); // then c crashes: its trace ends without m2
    r.install(2, &["a", "b"]);
    let m3 = r.send("b", Order::Total);
    r.deliver_all(&["a", "b"], &[&m3]);
    assert_clean(&r.check());
}

#[test]
fn a_sender_that_crashes_before_delivering_its_message_is_exempt() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let _lost = r.send("c", Order::Fifo); // c crashes before anyone delivers it
    r.install(2, &["a", "b"]);
    assert_clean(&r.check());
}

#[test]
fn a_safe_message_delivered_by_every_survivor_is_clean() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let s = r.send_with("a", Order::Total, true);
    r.deliver_all(&["a", "b"], &[&s]); // c crashes without it: allowed
    r.install(2, &["a", "b"]);
    assert_clean(&r.check());
}

#[test]
fn a_joiner_and_a_blocked_minority_are_clean() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let m1 = r.send("a", Order::Fifo);
    r.deliver_all(&["a", "b", "c"], &[&m1]);
    r.block("c"); // partitioned away: c stops
    r.install(2, &["a", "b"]);
    r.install(3, &["a", "b", "d"]); // d joins (a new member id)
    let m2 = r.send("d", Order::Causal);
    r.deliver_all(&["a", "b", "d"], &[&m2]);
    assert_clean(&r.check());
}

#[test]
fn groups_are_checked_separately() {
    // The same message id in two groups is two messages.
    let mut traces = Vec::new();
    for group in ["g1", "g2"] {
        traces.push(MemberTrace {
            source: format!("a-{group}.jsonl"),
            events: vec![
                TraceEvent::View {
                    node: "a".into(),
                    group: group.into(),
                    view: 1,
                    members: vec!["a".into()],
                },
                TraceEvent::Send {
                    node: "a".into(),
                    group: group.into(),
                    view: 1,
                    msg: "a/1".into(),
                    order: Order::Fifo,
                    safe: false,
                },
                TraceEvent::Deliver {
                    node: "a".into(),
                    group: group.into(),
                    view: 1,
                    msg: "a/1".into(),
                    order: Order::Fifo,
                },
            ],
        });
    }
    let report = check(&traces, &CheckConfig::default());
    assert_clean(&report);
    assert_eq!((report.groups, report.members), (2, 1));
}

// ---------------------------------------------------------------------------------------------
// One violation per property.

#[test]
fn catches_a_member_installing_a_view_without_itself() {
    let mut r = Run::default();
    r.view("a", 1, &["b", "c"]);
    r.view("b", 1, &["b", "c"]);
    let report = r.check();
    assert_only(&report, Property::SelfInclusion);
    assert!(report.violations[0].detail.contains("a installed view 1"));
}

#[test]
fn catches_view_ids_going_back() {
    let mut r = Run::default();
    r.install(2, &["a", "b"]);
    r.view("a", 1, &["a", "b"]);
    assert_only(&r.check(), Property::LocalMonotonicity);
}

#[test]
fn catches_a_sender_going_on_without_its_own_message() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let m = r.send("a", Order::Fifo); // nobody delivers it
    r.install(2, &["a", "b"]);
    let report = r.check();
    assert_only(&report, Property::SelfDelivery);
    assert!(report.violations[0].detail.contains(&m));
}

#[test]
fn catches_a_delivery_of_a_message_never_sent() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    r.deliver_as("b", 1, "a/1", Order::Fifo);
    let report = r.check();
    assert_only(&report, Property::Integrity);
    assert!(report.violations[0].detail.contains("no member sent"));
}

fn check_with_crashed(r: &Run, crashed: &[&str]) -> Report {
    check(
        &r.traces(),
        &CheckConfig {
            crashed: crashed.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        },
    )
}

#[test]
fn a_killed_members_message_without_its_send_event_is_taken_as_sent_when_listed() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    // c's trace was lost with the process (kill -9): only its messages' deliveries remain.
    r.deliver_as("a", 1, "c/1", Order::Total);
    r.deliver_as("b", 1, "c/1", Order::Total);
    r.install(2, &["a", "b"]);
    assert_clean(&check_with_crashed(&r, &["c"]));
    // Listing someone else gives c no allowance.
    assert_only(&check_with_crashed(&r, &["a"]), Property::Integrity);
}

#[test]
fn a_killed_members_assumed_sends_are_still_checked() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    r.deliver_as("a", 1, "c/1", Order::Total);
    r.deliver_as("a", 1, "c/1", Order::Total);
    r.deliver_as("b", 1, "c/1", Order::Fifo); // another order than a saw
    let report = check_with_crashed(&r, &["c"]);
    let props: Vec<Property> = report.violations.iter().map(|v| v.property).collect();
    assert!(
        props.contains(&Property::NoDuplication),
        "{}",
        show(&report)
    );
    assert!(props.contains(&Property::Integrity), "{}", show(&report));
}

#[test]
fn catches_a_delivery_with_another_order_than_sent() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let m = r.send("a", Order::Fifo);
    r.deliver("a", &m).deliver_as("b", 1, &m, Order::Total);
    assert_only(&r.check(), Property::Integrity);
}

#[test]
fn catches_a_member_sending_under_another_members_id() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    r.push(
        "b",
        TraceEvent::Send {
            node: "b".into(),
            group: GROUP.into(),
            view: 1,
            msg: "a/1".into(),
            order: Order::Fifo,
            safe: false,
        },
    );
    assert_only(&r.check(), Property::Integrity);
}

#[test]
fn catches_an_event_claiming_a_view_the_member_is_not_in() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let m = r.send("a", Order::Fifo);
    r.deliver("a", &m).deliver_as("b", 2, &m, Order::Fifo);
    assert_only(&r.check(), Property::Integrity);
}

#[test]
fn catches_a_malformed_message_id() {
    let mut r = Run::default();
    r.install(1, &["a"]);
    r.deliver_as("a", 1, "garbage", Order::Fifo);
    assert_only(&r.check(), Property::Integrity);
}

#[test]
fn catches_a_duplicate_delivery() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let m = r.send("a", Order::Fifo);
    r.deliver_all(&["a", "b"], &[&m]);
    r.deliver("b", &m);
    let report = r.check();
    assert_only(&report, Property::NoDuplication);
    assert_eq!(report.violation_count(), 1);
}

#[test]
fn catches_a_delivery_in_a_later_view_than_sent() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let m = r.send("a", Order::Fifo);
    r.deliver("a", &m);
    r.install(2, &["a", "b"]);
    r.deliver("b", &m);
    let report = r.check();
    assert_only(&report, Property::SendingView);
    assert!(report.violations[0].detail.contains("in view 2"));
}

#[test]
fn catches_members_going_to_the_same_view_with_different_messages() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let m = r.send("a", Order::Fifo);
    r.deliver_all(&["a", "b"], &[&m]); // c misses it
    r.install(2, &["a", "b", "c"]);
    let report = r.check();
    assert_only(&report, Property::VirtualSynchrony);
    assert_eq!(report.violation_count(), 1);
    assert!(report.violations[0]
        .detail
        .starts_with("group g: c went from view 1 to view 2"));
}

#[test]
fn catches_two_members_installing_one_view_id_with_different_members() {
    let mut r = Run::default();
    r.view("a", 1, &["a", "b"]);
    r.view("b", 1, &["a", "b", "c"]);
    assert_only(&r.check(), Property::VirtualSynchrony);
}

#[test]
fn catches_fifo_messages_delivered_out_of_send_order() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let m1 = r.send("a", Order::Fifo);
    let m2 = r.send("a", Order::Fifo);
    r.deliver_all(&["a"], &[&m1, &m2]);
    r.deliver_all(&["b"], &[&m2, &m1]);
    let report = r.check();
    assert_only(&report, Property::Fifo);
    assert_eq!(report.violation_count(), 1, "one swap, one report");
}

#[test]
fn catches_a_fifo_hole_never_filled() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let m1 = r.send("a", Order::Total);
    let m2 = r.send("a", Order::Total);
    r.deliver_all(&["a"], &[&m1, &m2]);
    r.deliver_all(&["b"], &[&m2]); // b's trace ends: no view change, so only fifo is broken
    assert_only(&r.check(), Property::Fifo);
}

#[test]
fn catches_a_hole_in_a_senders_sequence_numbers() {
    let mut r = Run::default();
    r.install(1, &["a"]);
    r.next_seq.insert("a".into(), 1); // a/2 is the first send
    let m = r.send("a", Order::Fifo);
    r.deliver("a", &m);
    assert_only(&r.check(), Property::Fifo);
}

#[test]
fn catches_a_causal_message_delivered_before_its_cause() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let cause = r.send("a", Order::Causal);
    r.deliver_all(&["a", "b"], &[&cause]);
    let effect = r.send("b", Order::Causal);
    r.deliver_all(&["a", "b"], &[&effect]);
    r.deliver_all(&["c"], &[&effect, &cause]);
    let report = r.check();
    assert_only(&report, Property::Causal);
    assert!(report.violations[0].detail.contains(&format!(
        "c delivered causal {effect} in view 1 before {cause}"
    )));
}

#[test]
fn catches_a_causal_message_whose_cause_is_never_delivered() {
    // The cause is a fifo message: causality counts every send and delivery.
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let cause = r.send("a", Order::Fifo);
    r.deliver_all(&["a", "b"], &[&cause]);
    let effect = r.send("b", Order::Causal);
    r.deliver_all(&["a", "b", "c"], &[&effect]);
    // c's trace ends here (it crashes): still, it delivered effect without cause.
    assert_only(&r.check(), Property::Causal);
}

#[test]
fn catches_a_happens_before_cycle_without_hanging() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    r.deliver_as("a", 1, "b/1", Order::Fifo);
    let a1 = r.send("a", Order::Fifo);
    r.deliver("b", &a1);
    let b1 = r.send("b", Order::Fifo);
    assert_eq!(b1, "b/1");
    r.deliver("a", &a1).deliver("b", &b1);
    assert_only(&r.check(), Property::Causal);
}

#[test]
fn catches_two_members_delivering_total_messages_in_different_orders() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let x = r.send("a", Order::Total);
    let y = r.send("b", Order::Total);
    r.deliver_all(&["a"], &[&x, &y]);
    r.deliver_all(&["b"], &[&y, &x]);
    let report = r.check();
    assert_only(&report, Property::Total);
    assert_eq!(report.violation_count(), 1);
}

#[test]
fn catches_total_orders_that_no_single_sequence_explains() {
    // Pairwise consistent (each pair shares one message), but x < y < z < x.
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let x = r.send("a", Order::Total);
    let y = r.send("b", Order::Total);
    let z = r.send("c", Order::Total);
    r.deliver_all(&["a"], &[&x, &y]);
    r.deliver_all(&["b"], &[&y, &z]);
    r.deliver_all(&["c"], &[&z, &x]);
    let report = r.check();
    assert_only(&report, Property::Total);
    assert!(report.violations[0]
        .detail
        .contains("no single total order"));
}

#[test]
fn catches_a_total_message_delivered_before_its_causal_predecessor() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let cause = r.send("a", Order::Total);
    r.deliver_all(&["b"], &[&cause]);
    let effect = r.send("b", Order::Total);
    r.deliver_all(&["c"], &[&effect, &cause]);
    // a and b crash before delivering more; no two members share two total messages.
    let report = r.check();
    assert_only(&report, Property::Total);
    assert!(report.violations[0].detail.contains("causally precedes"));
}

#[test]
fn catches_members_delivering_different_messages_before_a_gbcast() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let g = r.send("a", Order::Gbcast);
    let m = r.send("b", Order::Fifo);
    r.deliver_all(&["a"], &[&m, &g]);
    r.deliver_all(&["b"], &[&g, &m]);
    let report = r.check();
    assert_only(&report, Property::Gbcast);
    assert_eq!(report.violation_count(), 1);
}

#[test]
fn catches_a_member_passing_a_gbcast_it_never_delivers() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let g = r.send("a", Order::Gbcast);
    let m = r.send("b", Order::Fifo);
    r.deliver_all(&["a", "b"], &[&g, &m]);
    r.deliver_all(&["c"], &[&m]); // c then crashes: it delivered m, which follows g
    let report = r.check();
    assert_only(&report, Property::Gbcast);
    assert!(report.violations[0]
        .detail
        .contains("c delivered b/1 without delivering gbcast a/1"));
}

#[test]
fn a_member_that_fails_after_delivering_only_its_own_message_does_not_pass_a_gbcast() {
    // c delivers its own m (nobody else ever gets it) and then fails before g reaches it:
    // non-uniform delivery, not a gbcast order violation; a and b agree on everything.
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let g = r.send("a", Order::Gbcast);
    let m = r.send("c", Order::Fifo);
    r.deliver_all(&["a", "b"], &[&g]);
    r.deliver_all(&["c"], &[&m]);
    assert_clean(&r.check());
}

#[test]
fn catches_a_safe_message_a_survivor_never_delivers() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let s = r.send_with("a", Order::Fifo, true);
    r.deliver("a", &s); // a delivers it, then crashes
    r.install(2, &["b", "c"]); // b and c go on without it
    let report = r.check();
    assert_only(&report, Property::Safe);
    assert_eq!(report.violation_count(), 2);
}

#[test]
fn an_unsafe_message_may_die_with_its_only_deliverer() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let s = r.send_with("a", Order::Fifo, false);
    r.deliver("a", &s);
    r.install(2, &["b", "c"]);
    assert_clean(&r.check());
}

#[test]
fn catches_a_minority_installing_the_next_view() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    r.view("a", 2, &["a"]);
    let report = r.check();
    assert_only(&report, Property::PrimaryComponent);
    assert!(report.violations[0]
        .detail
        .contains("holds 1 of the 3 members"));
}

#[test]
fn members_leaving_gracefully_may_leave_a_minority_in_the_next_view() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    r.leave("a").leave("b");
    r.view("c", 2, &["c"]);
    assert_clean(&r.check());
}

#[test]
fn catches_a_minority_view_when_only_some_absent_members_left() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c", "d", "e"]);
    r.leave("a");
    r.install(2, &["e"]); // a left, b, c and d did not: 2 of 5 took part, no majority
    assert_only(&r.check(), Property::PrimaryComponent);
}

#[test]
fn catches_an_even_split_installing_the_next_view() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c", "d"]);
    r.install(2, &["a", "b"]);
    assert_only(&r.check(), Property::PrimaryComponent);
}

#[test]
fn catches_a_blocked_member_delivering() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let m = r.send("a", Order::Fifo);
    r.deliver_all(&["a", "b"], &[&m]);
    r.block("c").deliver("c", &m);
    assert_only(&r.check(), Property::PrimaryComponent);
}

#[test]
fn catches_a_blocked_member_installing_a_view_under_the_same_id() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    r.block("c");
    r.install(2, &["a", "b", "c"]);
    let report = r.check();
    assert_only(&report, Property::PrimaryComponent);
    assert_eq!(report.violation_count(), 1);
}

#[test]
fn completeness_is_only_demanded_when_asked() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let m = r.send("a", Order::Fifo);
    r.deliver("a", &m); // b never delivers it, and no view change follows
    assert_clean(&r.check());
    let report = r.check_complete();
    assert_only(&report, Property::Completeness);
    assert!(report.violations[0].detail.contains("b installed view 1"));
}

#[test]
fn stores_a_bounded_number_of_violations_but_counts_them_all() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let m = r.send("a", Order::Fifo);
    r.deliver_all(&["a"], &[&m]);
    for _ in 0..51 {
        r.deliver("b", &m);
    }
    let report = r.check();
    assert_only(&report, Property::NoDuplication);
    assert_eq!(report.violation_count(), 50);
    assert_eq!(report.violations.len(), VIOLATIONS_STORED_PER_PROPERTY_MAX);
}

#[test]
fn an_empty_run_is_clean() {
    assert_clean(&check(&[], &CheckConfig::default()));
}

// ---------------------------------------------------------------------------------------------
// Valid by construction: a centralized sequential execution. Every message sent in a view is
// appended to one log; each member delivers a prefix of that log at its own pace; a view change
// first lets every surviving member deliver the whole log (flush), then installs the survivors
// (plus, maybe, a joiner under a new id). Crashes keep a strict majority of the view; a crashed
// member's trace just ends (or ends with `block`). Such traces satisfy properties 1–10.

mod centralized {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    pub enum Action {
        Send { who: u8, order: u8, safe: bool },
        Deliver { who: u8, count: u8 },
        Crash { who: u8, block: bool },
        ViewChange { join: bool },
    }

    pub fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            4 => (any::<u8>(), 0u8..4, any::<bool>())
                .prop_map(|(who, order, safe)| Action::Send { who, order, safe }),
            4 => (any::<u8>(), 1u8..5).prop_map(|(who, count)| Action::Deliver { who, count }),
            1 => (any::<u8>(), any::<bool>()).prop_map(|(who, block)| Action::Crash { who, block }),
            1 => any::<bool>().prop_map(|join| Action::ViewChange { join }),
        ]
    }

    pub struct Execution {
        pub run: Run,
        pub crashed_any: bool,
    }

    /// Plays `actions` from an initial view of `size` members; with `settle`, every live member
    /// delivers the whole log at the end.
    pub fn execute(size: usize, actions: &[Action], settle: bool) -> Execution {
        let mut run = Run::default();
        let mut view_id = 1u64;
        let mut view: Vec<String> = (0..size).map(|i| format!("m{i}")).collect();
        let mut live: Vec<String> = view.clone();
        let mut log: Vec<String> = Vec::new();
        let mut pos: HashMap<String, usize> = HashMap::new();
        let mut joiners = 0;
        let mut crashed_any = false;
        let install = |run: &mut Run, id: u64, members: &[String]| {
            let names: Vec<&str> = members.iter().map(|s| s.as_str()).collect();
            run.install(id, &names);
        };
        install(&mut run, view_id, &view);
        let deliver_upto = |run: &mut Run,
                            pos: &mut HashMap<String, usize>,
                            log: &[String],
                            who: &str,
                            n: usize| {
            let p = pos.entry(who.to_owned()).or_insert(0);
            let end = p.saturating_add(n).min(log.len());
            for m in &log[*p..end] {
                run.deliver(who, m);
            }
            *p = end;
        };
        for a in actions {
            match *a {
                Action::Send { who, order, safe } => {
                    let who = live[who as usize % live.len()].clone();
                    let order = Order::ALL[order as usize % 4];
                    log.push(run.send_with(&who, order, safe));
                }
                Action::Deliver { who, count } => {
                    let who = live[who as usize % live.len()].clone();
                    deliver_upto(&mut run, &mut pos, &log, &who, count as usize);
                }
                Action::Crash { who, block } => {
                    // Survivors must stay a strict majority of the view.
                    if (live.len() - 1) * 2 > view.len() {
                        let who = live.remove(who as usize % live.len());
                        if block {
                            run.block(&who);
                        }
                        crashed_any = true;
                    }
                }
                Action::ViewChange { join } => {
                    for who in &live {
                        deliver_upto(&mut run, &mut pos, &log, who, usize::MAX);
                    }
                    log.clear();
                    pos.clear();
                    if join {
                        joiners += 1;
                        live.push(format!("j{joiners}"));
                    }
                    view_id += 1;
                    view = live.clone();
                    install(&mut run, view_id, &view);
                }
            }
        }
        if settle {
            for who in &live {
                deliver_upto(&mut run, &mut pos, &log, who, usize::MAX);
            }
        }
        Execution { run, crashed_any }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn centralized_executions_pass(
            size in 1usize..6,
            actions in proptest::collection::vec(action(), 0..80),
            settle in any::<bool>(),
        ) {
            let ex = execute(size, &actions, settle);
            let report = ex.run.check();
            prop_assert!(report.is_ok(), "violations:\n{}", show(&report));
            if settle && !ex.crashed_any {
                let report = ex.run.check_complete();
                prop_assert!(report.is_ok(), "violations:\n{}", show(&report));
            }
        }

        #[test]
        fn a_replayed_delivery_is_caught_as_duplication_only(
            size in 1usize..6,
            actions in proptest::collection::vec(action(), 0..80),
            pick in any::<prop::sample::Index>(),
        ) {
            let ex = execute(size, &actions, true);
            let mut traces = ex.run.traces();
            let deliveries: Vec<(usize, TraceEvent)> = traces
                .iter()
                .enumerate()
                .flat_map(|(t, tr)| tr.events.iter().map(move |e| (t, e.clone())))
                .filter(|(_, e)| matches!(e, TraceEvent::Deliver { .. }))
                .collect();
            prop_assume!(!deliveries.is_empty());
            let (t, ev) = deliveries[pick.index(deliveries.len())].clone();
            // (A blocked member delivering again would also break property 10.)
            prop_assume!(!matches!(traces[t].events.last(), Some(TraceEvent::Block { .. })));
            let TraceEvent::Deliver { node, group, msg, order, .. } = ev else { unreachable!() };
            // Replayed at the end of the member's trace, in the view it is in by then.
            let view = traces[t].events.iter().rev().find_map(|e| match e {
                TraceEvent::View { view, .. } => Some(*view),
                _ => None,
            }).unwrap();
            traces[t].events.push(TraceEvent::Deliver { node, group, view, msg, order });
            let report = check(&traces, &CheckConfig::default());
            prop_assert_eq!(report.violated(), vec![Property::NoDuplication], "{}", show(&report));
        }

        #[test]
        fn a_swap_of_two_deliveries_from_one_sender_is_caught_as_fifo(
            size in 1usize..6,
            actions in proptest::collection::vec(action(), 0..80),
            pick in any::<prop::sample::Index>(),
        ) {
            let ex = execute(size, &actions, true);
            let mut traces = ex.run.traces();
            // Adjacent deliveries of one member, same sender, same view.
            let mut candidates = Vec::new();
            for (t, tr) in traces.iter().enumerate() {
                for (i, pair) in tr.events.windows(2).enumerate() {
                    if let (
                        TraceEvent::Deliver { msg: m1, view: v1, .. },
                        TraceEvent::Deliver { msg: m2, view: v2, .. },
                    ) = (&pair[0], &pair[1])
                    {
                        let s1 = m1.rsplit_once('/').unwrap().0;
                        let s2 = m2.rsplit_once('/').unwrap().0;
                        if s1 == s2 && v1 == v2 {
                            candidates.push((t, i));
                        }
                    }
                }
            }
            prop_assume!(!candidates.is_empty());
            let (t, i) = candidates[pick.index(candidates.len())];
            traces[t].events.swap(i, i + 1);
            let report = check(&traces, &CheckConfig::default());
            prop_assert!(report.violated().contains(&Property::Fifo), "{}", show(&report));
        }

        #[test]
        fn arbitrary_events_never_panic(
            events in proptest::collection::vec(
                (0u8..4, 0usize..3, 0u64..4, 0usize..8, 0u8..4, any::<bool>(), 0usize..3),
                0..60,
            ),
        ) {
            let nodes = ["a", "b", "c"];
            let msgs = ["a/1", "a/2", "b/1", "b/3", "c/0", "x", "a/18446744073709551615", "/"];
            let lists = [vec!["a", "b", "c"], vec!["a"], vec![]];
            let mut traces: Vec<MemberTrace> = nodes
                .iter()
                .map(|n| MemberTrace { source: n.to_string(), events: Vec::new() })
                .collect();
            for (kind, node, view, msg, order, safe, list) in events {
                let n = nodes[node].to_string();
                let group = GROUP.to_string();
                let msg = msgs[msg].to_string();
                let order = Order::ALL[order as usize];
                let ev = match kind {
                    0 => TraceEvent::View {
                        node: n, group, view,
                        members: lists[list].iter().map(|s| s.to_string()).collect(),
                    },
                    1 => TraceEvent::Send { node: n, group, view, msg, order, safe },
                    2 => TraceEvent::Deliver { node: n, group, view, msg, order },
                    _ => TraceEvent::Block { node: n, group, view },
                };
                traces[node].events.push(ev);
            }
            let report = check(&traces, &CheckConfig { require_complete: true, ..Default::default() });
            prop_assert!(report.violations.len() <= Property::ALL.len() * VIOLATIONS_STORED_PER_PROPERTY_MAX);
        }

        #[test]
        fn a_delivery_moved_to_another_member_is_never_a_panic(
            size in 1usize..6,
            actions in proptest::collection::vec(action(), 0..60),
            from in any::<prop::sample::Index>(),
            to in any::<prop::sample::Index>(),
        ) {
            // Corrupt a valid trace by swapping two events of one member: the checker must
            // still terminate without panicking (the verdict depends on the events swapped).
            let ex = execute(size, &actions, true);
            let mut traces = ex.run.traces();
            let which = from.index(traces.len());
            let t = &mut traces[which];
            if !t.events.is_empty() {
                let i = from.index(t.events.len());
                let j = to.index(t.events.len());
                t.events.swap(i, j);
            }
            let _ = check(&traces, &CheckConfig { require_complete: true, ..Default::default() });
        }
    }
}

#[test]
fn catches_a_member_skipping_a_view_that_lists_it() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    r.view("a", 2, &["a", "b", "c"])
        .view("c", 2, &["a", "b", "c"]);
    r.install(3, &["a", "b", "c"]);
    let report = r.check();
    assert_only(&report, Property::VirtualSynchrony);
    assert!(report.violations[0]
        .detail
        .contains("b went from view 1 to view 3, skipping view 2"));
}

#[test]
fn catches_an_excluded_member_coming_back_under_the_same_id() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    r.install(2, &["a", "b"]);
    r.install(3, &["a", "b", "c"]); // c must rejoin as a new member id
    let report = r.check();
    assert_only(&report, Property::PrimaryComponent);
    assert!(report.violations[0]
        .detail
        .contains("c was excluded by view 2"));
}

/// Timing, not a verdict: `cargo test --release -p cohort --test checker -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_check_time_for_nine_members() {
    for messages in [10_000usize, 90_000] {
        let members: Vec<String> = (0..9).map(|i| format!("10.0.0.{i}:7000#1")).collect();
        let names: Vec<&str> = members.iter().map(|s| s.as_str()).collect();
        let mut r = Run::default();
        r.install(1, &names);
        let mut batch = Vec::new();
        for i in 0..messages {
            let order = Order::ALL[i % 4];
            batch.push(r.send(names[i % 9], order));
            if batch.len() == 64 || i + 1 == messages {
                r.deliver_all(
                    &names,
                    &batch.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                );
                batch.clear();
            }
        }
        let traces = r.traces();
        let start = std::time::Instant::now();
        let report = check(
            &traces,
            &CheckConfig {
                require_complete: true,
                ..Default::default()
            },
        );
        let took = start.elapsed();
        assert_clean(&report);
        println!(
            "9 members, {messages} messages, {} deliveries: check took {:?}",
            report.deliveries, took
        );
    }
}

#[test]
fn the_report_prints_a_summary_then_the_violations_then_what_was_not_stored() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let m = r.send("a", Order::Fifo);
    r.deliver_all(&["a", "b"], &[&m]);
    for _ in 0..VIOLATIONS_STORED_PER_PROPERTY_MAX + 2 {
        r.deliver("b", &m);
    }
    let text = r.check().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "check-trace: members=2 sends=1 deliveries=24 violations=22"
    );
    assert_eq!(
        lines[1],
        "no-duplication (5): group g: b delivered a/1 again (view 1)"
    );
    assert_eq!(lines.len(), 1 + VIOLATIONS_STORED_PER_PROPERTY_MAX + 1);
    assert_eq!(
        lines[lines.len() - 1],
        "no-duplication (5): 2 more not shown (22 in all)"
    );
}

#[test]
fn the_order_of_the_trace_files_does_not_matter() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let cause = r.send("a", Order::Causal);
    r.deliver_all(&["a", "b"], &[&cause]);
    let effect = r.send("b", Order::Total);
    r.deliver_all(&["a", "b"], &[&effect]);
    r.deliver_all(&["c"], &[&cause, &effect]);
    let mut traces = r.traces();
    traces.reverse(); // receivers first
    assert_clean(&check(&traces, &CheckConfig::default()));
    // A causal violation is found the same way.
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let cause = r.send("a", Order::Fifo);
    r.deliver_all(&["a", "b"], &[&cause]);
    let effect = r.send("b", Order::Causal);
    r.deliver_all(&["a", "b"], &[&effect]);
    r.deliver_all(&["c"], &[&effect, &cause]);
    let mut traces = r.traces();
    traces.reverse();
    assert_only(&check(&traces, &CheckConfig::default()), Property::Causal);
}

#[test]
fn a_violation_names_its_group() {
    let mut traces = Vec::new();
    for (group, replay) in [("g1", false), ("g2", true)] {
        let mut events = vec![
            TraceEvent::View {
                node: "a".into(),
                group: group.into(),
                view: 1,
                members: vec!["a".into()],
            },
            TraceEvent::Send {
                node: "a".into(),
                group: group.into(),
                view: 1,
                msg: "a/1".into(),
                order: Order::Fifo,
                safe: false,
            },
        ];
        let deliver = TraceEvent::Deliver {
            node: "a".into(),
            group: group.into(),
            view: 1,
            msg: "a/1".into(),
            order: Order::Fifo,
        };
        events.push(deliver.clone());
        if replay {
            events.push(deliver);
        }
        traces.push(MemberTrace {
            source: format!("a-{group}.jsonl"),
            events,
        });
    }
    let report = check(&traces, &CheckConfig::default());
    assert_only(&report, Property::NoDuplication);
    assert!(report.violations[0]
        .detail
        .starts_with("group g2: a delivered a/1 again"));
}

#[test]
fn a_message_missing_at_the_end_of_a_view_is_virtual_synchrony_not_a_fifo_hole() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let m1 = r.send("a", Order::Fifo);
    let m2 = r.send("a", Order::Fifo);
    r.deliver_all(&["a"], &[&m1, &m2]);
    r.deliver_all(&["b"], &[&m1]); // b misses a/2 ...
    r.install(2, &["a", "b"]);
    let m3 = r.send("a", Order::Fifo);
    r.deliver_all(&["a", "b"], &[&m3]); // ... and a/3 starts view 2's stream: no fifo hole
    let report = r.check();
    assert_only(&report, Property::VirtualSynchrony);
    assert_eq!(report.violation_count(), 1);
}

#[test]
fn a_joiner_need_not_deliver_causal_predecessors_from_before_it_joined() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let old = r.send("a", Order::Causal);
    r.deliver_all(&["a", "b"], &[&old]);
    r.install(2, &["a", "b", "j"]);
    let new = r.send("b", Order::Causal); // old → new, but j was not in view 1
    r.deliver_all(&["a", "b", "j"], &[&new]);
    assert_clean(&r.check_complete());
}

#[test]
fn a_senders_own_causal_messages_out_of_order_are_a_fifo_violation_only() {
    let mut r = Run::default();
    r.install(1, &["a", "b"]);
    let c1 = r.send("a", Order::Causal);
    let c2 = r.send("a", Order::Causal);
    r.deliver_all(&["a"], &[&c1, &c2]);
    r.deliver_all(&["b"], &[&c2, &c1]);
    let report = r.check();
    assert_only(&report, Property::Fifo);
    assert_eq!(report.violation_count(), 1);
}

#[test]
fn a_safe_message_missed_next_to_a_deliverer_is_reported_once_as_virtual_synchrony() {
    let mut r = Run::default();
    r.install(1, &["a", "b", "c"]);
    let s = r.send_with("a", Order::Fifo, true);
    r.deliver_all(&["a", "b"], &[&s]);
    r.install(2, &["a", "b", "c"]); // c goes on with a and b, without s
    let report = r.check();
    assert_only(&report, Property::VirtualSynchrony);
    assert_eq!(report.violation_count(), 1);
}

//! Named membership scenarios in the deterministic simulator, one per classic trap of view
//! changes. Every run goes through the trace checker (properties 1–10, completeness among
//! survivors) and the simulator's own checks (per-sender sequence and payload, the same
//! application state at every install, a joiner's restored state equal to it); each scenario
//! then asserts what its trap is about.

use cohort::sim::group::{run, Fault, FaultKinds, GroupSimConfig, GroupSimOutcome};
use cohort::trace::TraceEvent;
use cohort::Order;

const MS: u64 = 1_000_000;

fn scenario(seed: u64, members: usize, script: Vec<(u64, Fault)>) -> GroupSimConfig {
    let mut c = GroupSimConfig::new(seed, members, 60);
    c.orders = vec![Order::Fifo, Order::Causal, Order::Total];
    c.net.loss = 0.02;
    c.net.reorder = 0.1;
    c.script = script;
    c.time_limit_ns = 20_000 * MS;
    c
}

fn assert_clean(o: &GroupSimOutcome) {
    assert!(
        o.is_ok() && o.completed,
        "seed {}: {:#?}",
        o.seed,
        o.describe().iter().take(12).collect::<Vec<_>>()
    );
}

/// Views installed by `id`, in order.
fn views_of(o: &GroupSimOutcome, id: &str) -> Vec<(u64, Vec<String>)> {
    o.traces
        .iter()
        .flat_map(|t| &t.events)
        .filter_map(|e| match e {
            TraceEvent::View {
                node,
                view,
                members,
                ..
            } if node == id => Some((*view, members.clone())),
            _ => None,
        })
        .collect()
}

fn blocked(o: &GroupSimOutcome, id: &str) -> bool {
    o.traces
        .iter()
        .flat_map(|t| &t.events)
        .any(|e| matches!(e, TraceEvent::Block { node, .. } if node == id))
}

fn final_members(o: &GroupSimOutcome) -> Vec<String> {
    o.final_view.clone().expect("a final view").1
}

#[test]
fn sender_crash_mid_burst_leaves_survivors_with_the_same_messages() {
    for seed in 0..4 {
        // m1 crashes while it is sending (bursts every ~2 ms from the start).
        let o = run(scenario(seed, 4, vec![(7 * MS, Fault::Crash(1))]));
        assert_clean(&o);
        let members = final_members(&o);
        assert_eq!(members, ["m0", "m2", "m3"], "seed {seed}");
        // Every survivor delivered exactly the same prefix of m1's messages.
        let got: Vec<u64> = members
            .iter()
            .map(|m| o.final_states[m].get("m1").copied().unwrap_or(0))
            .collect();
        assert!(got.windows(2).all(|w| w[0] == w[1]), "seed {seed}: {got:?}");
        assert!(
            got[0] > 0 && got[0] < 60,
            "seed {seed}: crashed mid-burst, {got:?}"
        );
    }
}

#[test]
fn a_message_only_one_survivor_received_is_flushed_to_all() {
    for seed in 0..4 {
        // From 6 ms on, m3's datagrams reach only m0; m3 crashes at 10 ms. Whatever of m3's
        // m0 alone received, m1 and m2 get from m0 during the flush.
        let o = run(scenario(
            seed,
            4,
            vec![
                (6 * MS, Fault::OnlyTo(3, vec![0])),
                (10 * MS, Fault::Crash(3)),
            ],
        ));
        assert_clean(&o);
        let at = |m: &str| o.final_states[m].get("m3").copied().unwrap_or(0);
        assert_eq!(at("m1"), at("m0"), "seed {seed}");
        assert_eq!(at("m2"), at("m0"), "seed {seed}");
        assert!(at("m0") > 0, "seed {seed}");
    }
}

#[test]
fn a_message_only_one_survivor_received_is_flushed_to_all_even_if_it_was_the_last_one_sent() {
    // The same trap without loss or reordering: m2 sends to m0 only from the very start, so
    // every message m2 sends before crashing reaches the others through m0 alone.
    let mut c = scenario(
        7,
        3,
        vec![(0, Fault::OnlyTo(2, vec![0])), (9 * MS, Fault::Crash(2))],
    );
    c.net.loss = 0.0;
    c.net.reorder = 0.0;
    let o = run(c);
    assert_clean(&o);
    let m0 = o.final_states["m0"].get("m2").copied().unwrap_or(0);
    let m1 = o.final_states["m1"].get("m2").copied().unwrap_or(0);
    assert!(m0 > 0);
    assert_eq!(m1, m0, "m1 got every one of m2's messages by relay");
}

#[test]
fn leader_crash_during_a_view_change_is_finished_by_the_next_oldest() {
    let mut taken_over = 0;
    for seed in 0..6 {
        // m3 crashes; the leader m0 crashes right after proposing its exclusion (some
        // members may have reported, fetched, even committed). m1 takes over and finishes.
        let o = run(scenario(
            seed,
            5,
            vec![
                (5 * MS, Fault::Crash(3)),
                (6 * MS, Fault::CrashLeaderMidChange),
            ],
        ));
        assert_clean(&o);
        assert_eq!(final_members(&o), ["m1", "m2", "m4"], "seed {seed}");
        let views = views_of(&o, "m1");
        if views.len() == 2 {
            taken_over += 1; // m0's change never installed: m1 finished it
        }
    }
    assert!(taken_over > 0, "no seed crashed the leader mid-change");
}

#[test]
fn partition_two_three_majority_goes_on_minority_blocks_then_rejoins_with_state() {
    for seed in 0..3 {
        let mut c = scenario(
            seed,
            5,
            vec![
                (8 * MS, Fault::Partition(vec![3, 4])),
                (60 * MS, Fault::Heal),
            ],
        );
        c.state_bytes = 4096;
        let o = run(c);
        assert_clean(&o);
        // The minority blocked under its old ids…
        assert!(blocked(&o, "m3") && blocked(&o, "m4"), "seed {seed}");
        // …the majority installed a view without them…
        let m0 = views_of(&o, "m0");
        assert!(
            m0.iter().any(|(_, ms)| ms == &["m0", "m1", "m2"]),
            "seed {seed}: {m0:?}"
        );
        // …and after the heal they came back as new incarnations with the group's state.
        let last = final_members(&o);
        assert!(last.contains(&"m3#2".to_string()) && last.contains(&"m4#2".to_string()));
        for id in ["m3#2", "m4#2"] {
            assert!(
                o.restores.iter().any(|(r, b)| r == id && *b >= 4096),
                "seed {seed}: {id} restored {:?}",
                o.restores
            );
            assert_eq!(o.final_states[id], o.final_states["m0"], "seed {seed}");
        }
    }
}

#[test]
fn join_during_a_burst_with_a_large_state() {
    // A 16 MiB application state streamed to a joiner while the others keep sending.
    let mut c = scenario(3, 3, vec![(4 * MS, Fault::Join(3))]);
    c.state_bytes = 16 << 20;
    c.messages_per_member = 200;
    c.app_gap_ns = MS;
    let o = run(c);
    assert_clean(&o);
    assert_eq!(final_members(&o), ["m0", "m1", "m2", "m3"]);
    assert!(o.restores.iter().any(|(r, b)| r == "m3" && *b >= 16 << 20));
    // The joiner's state plus what it delivered since equals everyone else's.
    assert_eq!(o.final_states["m3"], o.final_states["m0"]);
    assert_eq!(
        o.accepted["m3"], 200,
        "the joiner sent all its messages too"
    );
}

#[test]
fn leave_while_sending_delivers_the_leavers_messages_first() {
    for seed in 0..4 {
        let o = run(scenario(seed, 4, vec![(9 * MS, Fault::Leave(2))]));
        assert_clean(&o);
        assert_eq!(final_members(&o), ["m0", "m1", "m3"]);
        // Everything m2 had sent when it left was delivered by everyone who stays.
        let sent = o.accepted["m2"];
        assert!(
            sent > 0 && sent < 60,
            "seed {seed}: left mid-run after {sent}"
        );
        for m in ["m0", "m1", "m3"] {
            assert_eq!(o.final_states[m]["m2"], sent, "seed {seed} at {m}");
        }
        assert!(!blocked(&o, "m2"), "a leave is not a block");
    }
}

#[test]
fn a_majority_leaving_at_once_leaves_and_the_last_member_goes_on_alone() {
    // Seeds where a commit to the last member is lost (the leavers must repeat it) included.
    for seed in 0..16 {
        let o = run(scenario(
            seed,
            3,
            vec![(9 * MS, Fault::Leave(0)), (9 * MS, Fault::Leave(1))],
        ));
        assert_clean(&o);
        // Leavers take part in the change that removes them: no majority has to stay.
        assert_eq!(final_members(&o), ["m2"], "seed {seed}");
        for m in ["m0", "m1"] {
            assert!(!blocked(&o, m), "seed {seed}: {m} left, it did not block");
            assert_eq!(
                o.final_states["m2"][m], o.accepted[m],
                "seed {seed}: {m}'s sends"
            );
        }
    }
}

#[test]
fn every_member_leaving_at_once_is_done_without_waiting_out_the_change_timeout() {
    // A leaver lingers until the members of the next view confirm it; when they leave right
    // after, they confirm as they install that view (their repeated-commit answer would come
    // too late: a member that left answers nothing). The sims' change timeout is 20 ms.
    const CHANGE_TIMEOUT_NS: u64 = 20 * MS;
    for members in [2, 3] {
        for seed in 0..12 {
            let script = (0..members).map(|i| (9 * MS, Fault::Leave(i))).collect();
            let o = run(scenario(seed, members, script));
            assert_clean(&o);
            assert_eq!(o.left_at.len(), members, "seed {seed}: every member left");
            for (m, at) in &o.left_at {
                let took = at - 9 * MS;
                assert!(
                    took < CHANGE_TIMEOUT_NS,
                    "seed {seed}, {members} members: {m} took {} ms to leave (waited out the change timeout)",
                    took / MS
                );
            }
        }
    }
}

#[test]
fn two_concurrent_failures_are_handled_in_one_or_two_changes() {
    for seed in 0..4 {
        let o = run(scenario(
            seed,
            5,
            vec![(6 * MS, Fault::Crash(1)), (6 * MS, Fault::Crash(4))],
        ));
        assert_clean(&o);
        assert_eq!(final_members(&o), ["m0", "m2", "m3"], "seed {seed}");
        let views = views_of(&o, "m0");
        assert!(
            views.len() <= 3,
            "seed {seed}: both crashes batched into at most two changes: {views:?}"
        );
    }
}

#[test]
fn a_minority_without_a_majority_never_installs_a_view() {
    // 3 of 5 crash at once: the two survivors hold no majority and block; nothing is
    // installed after view 1 (the run cannot settle: a liveness failure, by design).
    let mut c = scenario(
        1,
        5,
        vec![
            (6 * MS, Fault::Crash(0)),
            (6 * MS, Fault::Crash(1)),
            (6 * MS, Fault::Crash(2)),
        ],
    );
    c.time_limit_ns = 300 * MS;
    let o = run(c);
    assert!(!o.completed, "two of five cannot go on");
    assert!(o.report.is_ok(), "{:?}", o.report.violations);
    assert!(blocked(&o, "m3") && blocked(&o, "m4"));
    for id in ["m3", "m4"] {
        assert_eq!(views_of(&o, id).iter().map(|v| v.0).max(), Some(1));
    }
}

#[test]
fn random_faults_of_every_kind_hold_every_property() {
    for seed in 0..40 {
        let mut c = GroupSimConfig::new(seed, 3 + seed as usize % 5, 40);
        c.orders = Order::ALL.to_vec();
        c.faults = FaultKinds::ALL;
        c.faults_max = 4;
        c.net.loss = 0.05;
        c.net.dup = 0.02;
        c.net.reorder = 0.2;
        assert_clean(&run(c));
    }
}

#[test]
fn one_seed_with_faults_replays_exactly() {
    let make = || {
        let mut c = GroupSimConfig::new(11, 5, 30);
        c.faults = FaultKinds::ALL;
        c.net.loss = 0.05;
        c
    };
    let (a, b) = (run(make()), run(make()));
    assert_eq!(a.faults, b.faults);
    assert_eq!(a.virtual_time_ns, b.virtual_time_ns);
    assert_eq!(a.final_states, b.final_states);
}

/// A 3-member group that m3 asks to join at 4 ms, m3 cut off 100 µs later (its request has
/// reached the leader, 20–40 µs, its state has not reached it), then `later`; no random loss.
fn joiner_cut_off_then(seed: u64, later: &[(u64, Fault)]) -> GroupSimOutcome {
    let mut faults = vec![
        (4 * MS, Fault::Join(3)),
        (4 * MS + 100_000, Fault::Partition(vec![3])),
    ];
    faults.extend_from_slice(later);
    let mut c = scenario(seed, 3, faults);
    c.net.loss = 0.0;
    run(c)
}

#[test]
fn a_joiner_cut_off_while_its_state_transfer_retries_is_not_suspected() {
    // m3 asks to join, then is cut off for a while: the others install the view that admits
    // it, but its state transfer (which brings it the view) gets through only after the
    // heal, 28 ms after their install — past the 25 ms suspect timeout, within that plus the
    // change timeout (20 ms), the grace a joiner gets.
    for seed in 0..6 {
        let o = joiner_cut_off_then(seed, &[(32 * MS, Fault::Heal)]);
        assert_clean(&o);
        // Admitted once and kept: no exclusion and readmission (nor a block and a new
        // incarnation).
        let four = ["m0", "m1", "m2", "m3"].map(String::from).to_vec();
        for id in ["m0", "m1", "m2"] {
            assert_eq!(
                views_of(&o, id),
                [(1, four[..3].to_vec()), (2, four.clone())],
                "seed {seed}: views at {id}"
            );
        }
        assert_eq!(views_of(&o, "m3"), [(2, four.clone())], "seed {seed}");
        assert!(!blocked(&o, "m3"), "seed {seed}");
    }
}

#[test]
fn a_joiner_whose_provider_fails_before_any_state_arrives_still_gets_in() {
    // m3 asks to join; m0 (leader and state provider) admits it and sends the state, which
    // the partition drops; m0 crashes before its retry (a quarter of the change timeout,
    // 12.5 ms, after its install). No member sends m3 its view again, so m3 keeps asking to
    // join a view that already lists it. Of that view's four members three are alive, but
    // without m3 taking part the next change cannot finish, and once m3's grace runs out
    // m1 and m2 are two of four: they used to block (seed 3703 of the bundle sweep). Now a
    // member that gets a join request from a joiner of its view tells it the view: m3 takes
    // part in the change that excludes m0, without state, and gets it in the next view.
    for seed in 0..6 {
        let o = joiner_cut_off_then(seed, &[(10 * MS, Fault::Crash(0)), (10 * MS, Fault::Heal)]);
        assert_clean(&o);
        let four = ["m0", "m1", "m2", "m3"].map(String::from).to_vec();
        let three = four[1..].to_vec();
        for id in ["m1", "m2"] {
            assert_eq!(
                views_of(&o, id),
                [
                    (1, four[..3].to_vec()),
                    (2, four.clone()),
                    (3, three.clone())
                ],
                "seed {seed}: views at {id}"
            );
            assert!(!blocked(&o, id), "seed {seed}: {id} blocked");
        }
        // m3 never installed view 2 (no state): its first view is the next one.
        assert_eq!(views_of(&o, "m3"), [(3, three.clone())], "seed {seed}");
        assert!(!blocked(&o, "m3"), "seed {seed}");
    }
}

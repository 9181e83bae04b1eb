//! The membership endpoint against hostile or stale input: membership messages it must refuse
//! (counted, never a panic, never a view change), checked directly on an `Endpoint`.

use cohort::membership::control::{self, Cut, Envelope, Msg, Proposal, RANK_NONE};
use cohort::membership::{Endpoint, EndpointConfig, GroupEvent};
use cohort::protocol::Time;
use proptest::prelude::*;

fn founders() -> Vec<String> {
    (0..3).map(|i| format!("m{i}")).collect()
}

fn endpoint(me: usize) -> Endpoint {
    let cfg = EndpointConfig::new("g", 7, &format!("m{me}")).with_heartbeat_ns(1_000_000);
    Endpoint::founder(cfg, founders(), Time::ZERO)
}

fn frame(from_rank: u16, from: &str, view: u64, msg: Msg) -> Vec<u8> {
    let env = Envelope {
        group: 7,
        view,
        from_rank,
        from: from.into(),
        msg,
    };
    let mut buf = vec![0u8; 1472];
    let len = control::encode(&env, &mut buf).expect("fits");
    buf.truncate(len);
    buf
}

fn cut(keep: u64, ballot: u64) -> Cut {
    Cut {
        proposal: Proposal {
            ballot,
            keep,
            joiners: vec![],
        },
        cut: vec![0, 0, 0],
        holders: vec![0, 1, 2],
        need_state: 0,
    }
}

fn drain_events(ep: &mut Endpoint) -> Vec<GroupEvent> {
    let mut out = Vec::new();
    while let Some(e) = ep.poll_event() {
        out.push(e);
    }
    out
}

#[test]
fn a_commit_keeping_no_majority_is_refused() {
    let mut ep = endpoint(2);
    drain_events(&mut ep);
    // Keeps only m0 of three: not a majority of the view.
    ep.handle_datagram(
        Time(10),
        &frame(0, "m0", 1, Msg::Commit(cut(0b001, 1 << 16))),
    );
    assert!(!ep.is_changing());
    assert!(ep.stats().control_dropped >= 1);
    assert_eq!(ep.view_id(), 1);
}

#[test]
fn a_commit_for_another_view_or_from_a_forged_rank_is_refused() {
    let mut ep = endpoint(2);
    ep.handle_datagram(
        Time(10),
        &frame(0, "m0", 5, Msg::Commit(cut(0b011, 1 << 16))),
    );
    ep.handle_datagram(
        Time(10),
        &frame(1, "m0", 1, Msg::Commit(cut(0b011, 1 << 16))),
    );
    assert!(!ep.is_changing());
    assert_eq!(ep.stats().control_dropped, 2);
}

#[test]
fn a_proposal_whose_ballot_names_another_leader_is_ignored() {
    let mut ep = endpoint(2);
    // Sent by rank 1 but the ballot says rank 0 leads it.
    let p = Proposal {
        ballot: 1 << 16,
        keep: 0b111,
        joiners: vec![],
    };
    ep.handle_datagram(Time(10), &frame(1, "m1", 1, Msg::Propose(p)));
    assert!(!ep.is_changing());
}

#[test]
fn a_state_stream_larger_than_the_bound_is_refused_by_a_joiner() {
    let mut cfg = EndpointConfig::new("g", 7, "m9").with_heartbeat_ns(1_000_000);
    cfg.state_bytes_max = 1 << 20;
    let mut ep = Endpoint::joiner(cfg, founders(), Time::ZERO);
    let chunk = Msg::State {
        offset: 0,
        total: 1 << 30,
        chunk: vec![0; 1000],
    };
    ep.handle_datagram(Time(10), &frame(RANK_NONE, "m0", 2, chunk));
    assert!(!ep.is_installed());
    assert_eq!(ep.view_id(), 0, "still joining");
    assert_eq!(ep.stats().control_dropped, 1);
}

#[test]
fn a_member_never_suspects_anyone_while_it_hears_them() {
    // Three founders exchanging frames for 100 ms of virtual time: no view change.
    let mut eps: Vec<Endpoint> = (0..3).map(endpoint).collect();
    let mut buf = vec![0u8; 1500];
    for step in 0..1000u64 {
        let now = Time(step * 100_000);
        let mut sent = Vec::new();
        for (i, ep) in eps.iter_mut().enumerate() {
            ep.handle_timeout(now);
            while let Some(t) = ep.poll_transmit(now, &mut buf) {
                sent.push((i, buf[..t.len].to_vec()));
            }
        }
        for (from, bytes) in sent {
            for (j, ep) in eps.iter_mut().enumerate() {
                if j != from {
                    ep.handle_datagram(now, &bytes);
                }
            }
        }
    }
    for ep in &eps {
        assert_eq!(ep.view_id(), 1);
        assert_eq!(ep.stats().suspicions, 0);
    }
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic_an_endpoint(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut ep = endpoint(1);
        ep.handle_datagram(Time(1), &bytes);
        // Also as a membership frame with a valid header and an arbitrary body.
        let mut framed = frame(0, "m0", 1, Msg::Join);
        framed.truncate(32);
        framed.extend_from_slice(&bytes);
        ep.handle_datagram(Time(2), &framed);
        let mut buf = vec![0u8; 1500];
        while ep.poll_transmit(Time(3), &mut buf).is_some() {}
        prop_assert_eq!(ep.view_id(), 1);
    }
}

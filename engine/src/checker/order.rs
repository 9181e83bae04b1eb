//! Ordering checks: causal, total and gbcast (property 8).
//!
//! **Happens-before** is derived from the logs: a member's events in local order, and a
//! delivery of m after send(m). Every send gets a vector clock indexed by sender: entry s is
//! the highest sequence number of s's sends in its causal past (inclusive of itself). Since a
//! sender's sends are in its local order, the causal past restricted to one sender is a
//! prefix of its sequence numbers, so this vector is exact. Members' logs are replayed with a
//! worklist: a member runs until it reaches a delivery whose send has not been replayed yet,
//! and waits on it. A delivery of a message that was never sent is skipped (an integrity
//! violation, reported elsewhere). If every remaining member waits, the logs contain a
//! happens-before cycle (a message delivered before, causally, it was sent): that is reported
//! as a causal violation and the waiting delivery of the lowest member is skipped.
//!
//! With `pred(b, s)` = the messages of sender s in b's causal past that were sent in b's view,
//! for a valid delivery (see [`super::deliveries`]) of b by r:
//!
//! * **causal** (b is causal): for every sender s other than b's own, r has delivered the
//!   latest message of `pred(b, s)` before b. b's own sender's earlier messages are fifo's
//!   business (property 8 fifo applies to every message), and with fifo that means r delivered
//!   all of `pred(b, ·)` before b. Causal predecessors from earlier views are not checked
//!   here: a member that was in both views delivered them before the view change (properties
//!   3, 6 and 7), and a member that joined later never sees them.
//! * **total, consistent with causality** (b is total; also applied to gbcast b): for every
//!   other sender s, r does not deliver a message of `pred(b, s)` *after* b (it may not
//!   deliver it at all, e.g. if it crashes first).
//! * **total, same order**: per view, the sequences of total messages the members delivered
//!   (valid deliveries) are merged into a graph with an edge between consecutive messages of
//!   each sequence. If the graph is acyclic, a topological order exists and every two members
//!   order their common messages the same way. If it has a cycle, every pair of members is
//!   compared (by position in one member's sequence, linear per pair) and the first inverted
//!   pair reported; a cycle with no inverted pair (a→b at one member, b→c at another, c→a at
//!   a third) is reported too, as no single total order explains it.
//! * **gbcast**: per view v and gbcast message g delivered in v, with the reference member
//!   being the lowest-indexed member that delivered g: (a) every member that delivered g
//!   delivered, before g in v, exactly the set of messages the reference delivered before g
//!   (compared by count and an order-independent hash of the prefix, then diffed when they
//!   differ); so what comes after g is also the same, up to what a member delivered before
//!   leaving the view; (b) a member of v that did not deliver g delivered nothing in v that is
//!   not before g at the reference (it would have passed g). "Never split by a view change"
//!   is property 6 (g is delivered in the view it was sent in) plus property 7 (members going
//!   on from v all go to the same next view — no view skipped — and all delivered g or none
//!   did), checked for gbcast like for any message. Like a view change, g may be delivered
//!   by a member that then crashes and by no survivor (unless g is also safe).

use super::deliveries::{msg_hash, Delivered};
use super::model::{Ev, Group, MemberIx, MsgIx};
use super::FastMap;
use super::{list, Property, Violations};
use crate::Order;
use std::collections::{BTreeMap, VecDeque};

pub(crate) fn check_order(g: &Group, d: &Delivered, v: &mut Violations) {
    happens_before(g, d, v);
    total_same_order(g, d, v);
    gbcast(g, d, v);
}

fn happens_before(g: &Group, d: &Delivered, v: &mut Violations) {
    let n = g.members.len();
    let gn = &g.name;
    // Vector clocks have one column per member that sent something.
    let mut column: Vec<usize> = vec![usize::MAX; n];
    let mut senders: Vec<MemberIx> = Vec::new();
    for m in &g.msgs {
        if m.send.is_some() && column[m.sender as usize] == usize::MAX {
            column[m.sender as usize] = senders.len();
            senders.push(m.sender);
        }
    }
    let k = senders.len();
    let mut clocks: Vec<u64> = vec![0; g.msgs.len() * k];
    let mut sent = vec![false; g.msgs.len()];
    let sized = |r: usize| if g.members[r].events.is_empty() { 0 } else { k };
    let mut clock: Vec<Vec<u64>> = (0..n).map(|r| vec![0; sized(r)]).collect();
    // Per member and sender column: highest seq validly delivered among messages of its
    // current view.
    let mut high: Vec<Vec<u64>> = (0..n).map(|r| vec![0; sized(r)]).collect();
    let mut cursor = vec![0usize; n];
    let mut waiters: FastMap<MsgIx, Vec<MemberIx>> = FastMap::default();
    let mut queue: VecDeque<MemberIx> = (0..n as MemberIx).collect();
    loop {
        while let Some(r) = queue.pop_front() {
            let ru = r as usize;
            let events = &g.members[ru].events;
            while cursor[ru] < events.len() {
                let i = cursor[ru];
                match events[i] {
                    Ev::View => high[ru].fill(0),
                    Ev::Block => {}
                    Ev::Send { msg } => {
                        let seq = g.msgs[msg as usize].seq;
                        let c = column[ru];
                        clock[ru][c] = clock[ru][c].max(seq);
                        let base = msg as usize * k;
                        clocks[base..base + k].copy_from_slice(&clock[ru]);
                        sent[msg as usize] = true;
                        if let Some(w) = waiters.remove(&msg) {
                            queue.extend(w);
                        }
                    }
                    Ev::Deliver { msg, view, .. } => {
                        let m = &g.msgs[msg as usize];
                        if let Some(send) = &m.send {
                            if !sent[msg as usize] {
                                waiters.entry(msg).or_default().push(r);
                                break;
                            }
                            let base = msg as usize * k;
                            let vc = &clocks[base..base + k];
                            if d.valid[ru][i] {
                                let clocks = Clocks {
                                    senders: &senders,
                                    b: vc,
                                    high: &high[ru],
                                };
                                check_delivery(g, d, r, msg, send.order, view, clocks, v);
                                let h = &mut high[ru][column[m.sender as usize]];
                                *h = (*h).max(m.seq);
                            }
                            for (c, &x) in clock[ru].iter_mut().zip(vc) {
                                *c = (*c).max(x);
                            }
                        }
                    }
                }
                cursor[ru] += 1;
            }
        }
        // Everyone finished, or the rest wait on each other: a happens-before cycle.
        let Some(r) = (0..n).find(|&r| cursor[r] < g.members[r].events.len()) else {
            break;
        };
        if let Ev::Deliver { msg, view, .. } = g.members[r].events[cursor[r]] {
            v.add(Property::Causal, || {
                format!(
                    "group {gn}: {} delivered {} in view {view} before, causally, it was sent (happens-before cycle through this delivery)",
                    g.member(r as MemberIx),
                    g.msg_name(msg)
                )
            });
            if let Some(w) = waiters.get_mut(&msg) {
                w.retain(|&q| q as usize != r);
            }
        }
        cursor[r] += 1;
        queue.push_back(r as MemberIx);
    }
}

/// Vector clock columns at one delivery.
struct Clocks<'a> {
    /// The member of each column.
    senders: &'a [MemberIx],
    /// The delivered message's clock.
    b: &'a [u64],
    /// The receiver's highest sequence number validly delivered in its view, per column.
    high: &'a [u64],
}

/// The causal and total-vs-causality checks of one valid delivery of `b` by `r` in `view`.
#[allow(clippy::too_many_arguments)]
fn check_delivery(
    g: &Group,
    d: &Delivered,
    r: MemberIx,
    b: MsgIx,
    order: Order,
    view: u64,
    clocks: Clocks<'_>,
    v: &mut Violations,
) {
    if order == Order::Fifo {
        return;
    }
    let gn = &g.name;
    let bm = &g.msgs[b as usize];
    for (c, (&j, &h)) in clocks.b.iter().zip(clocks.high).enumerate() {
        let s = clocks.senders[c];
        if s == bm.sender || h >= j {
            continue; // own messages are fifo's business; or the predecessors were delivered
        }
        let Some(a) = g.msg(s, j) else { continue };
        if g.msgs[a as usize].send.as_ref().map(|x| x.view) != Some(view) {
            continue; // its latest predecessor from s is of an earlier view: none in this view
        }
        let first = g.first_seq.get(&(s, view)).copied().unwrap_or(1);
        let earliest = g.msg(s, (h + 1).max(first)).unwrap_or(a);
        match order {
            Order::Causal => v.add(Property::Causal, || {
                format!(
                    "group {gn}: {} delivered causal {} in view {view} before {}, which causally precedes it",
                    g.member(r),
                    g.msg_name(b),
                    g.msg_name(earliest)
                )
            }),
            Order::Total | Order::Gbcast => {
                let later = d.high_seq.get(&(r, view, s)).copied().unwrap_or(0);
                if later > h {
                    let property = if order == Order::Total {
                        Property::Total
                    } else {
                        Property::Gbcast
                    };
                    v.add(property, || {
                        format!(
                            "group {gn}: {} delivered {order} {} in view {view} before {}, which causally precedes it (delivered later)",
                            g.member(r),
                            g.msg_name(b),
                            g.msg_name(earliest)
                        )
                    });
                }
            }
            Order::Fifo => {}
        }
    }
}

/// Valid deliveries per view: view -> [(member, its sequence in that view)], by member.
fn by_view(d: &Delivered) -> BTreeMap<u64, Vec<(MemberIx, &[MsgIx])>> {
    let mut out: BTreeMap<u64, Vec<(MemberIx, &[MsgIx])>> = BTreeMap::new();
    for (&(r, view), seq) in &d.in_view {
        out.entry(view).or_default().push((r, &seq[..]));
    }
    for members in out.values_mut() {
        members.sort_unstable_by_key(|&(r, _)| r);
    }
    out
}

fn total_same_order(g: &Group, d: &Delivered, v: &mut Violations) {
    let gn = &g.name;
    let is_total = |m: &MsgIx| {
        g.msgs[*m as usize]
            .send
            .as_ref()
            .is_some_and(|s| s.order == Order::Total)
    };
    for (view, members) in by_view(d) {
        let seqs: Vec<(MemberIx, Vec<MsgIx>)> = members
            .iter()
            .map(|&(r, seq)| (r, seq.iter().copied().filter(is_total).collect::<Vec<_>>()))
            .filter(|(_, s)| s.len() > 1)
            .collect();
        if seqs.len() < 2 {
            continue;
        }
        // Graph of consecutive pairs; Kahn's algorithm.
        let mut node: FastMap<MsgIx, usize> = FastMap::default();
        let mut names: Vec<MsgIx> = Vec::new();
        let mut edges: Vec<(usize, usize)> = Vec::new();
        for (_, s) in &seqs {
            let ix: Vec<usize> = s
                .iter()
                .map(|&m| {
                    *node.entry(m).or_insert_with(|| {
                        names.push(m);
                        names.len() - 1
                    })
                })
                .collect();
            edges.extend(ix.windows(2).map(|w| (w[0], w[1])));
        }
        let k = names.len();
        let mut indegree = vec![0usize; k];
        let mut start = vec![0usize; k + 1];
        for &(a, b) in &edges {
            start[a + 1] += 1;
            indegree[b] += 1;
        }
        for i in 0..k {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut targets = vec![0usize; edges.len()];
        for &(a, b) in &edges {
            targets[fill[a]] = b;
            fill[a] += 1;
        }
        let mut ready: Vec<usize> = (0..k).filter(|&i| indegree[i] == 0).collect();
        let mut sorted = 0usize;
        while let Some(a) = ready.pop() {
            sorted += 1;
            for &b in &targets[start[a]..start[a + 1]] {
                indegree[b] -= 1;
                if indegree[b] == 0 {
                    ready.push(b);
                }
            }
        }
        if sorted == k {
            continue;
        }
        // A cycle: compare pairs of members to name the inversions.
        let mut inverted = false;
        for (i, (p, ps)) in seqs.iter().enumerate() {
            let pos: FastMap<MsgIx, usize> = ps.iter().enumerate().map(|(i, &m)| (m, i)).collect();
            for (q, qs) in &seqs[i + 1..] {
                let mut prev: Option<(usize, MsgIx)> = None;
                for &m in qs {
                    let Some(&pm) = pos.get(&m) else { continue };
                    if let Some((pp, pmsg)) = prev {
                        if pm < pp {
                            inverted = true;
                            v.add(Property::Total, || {
                                format!(
                                    "group {gn}: in view {view}, {} delivered total {} before {} but {} delivered {} before {}",
                                    g.member(*p),
                                    g.msg_name(m),
                                    g.msg_name(pmsg),
                                    g.member(*q),
                                    g.msg_name(pmsg),
                                    g.msg_name(m)
                                )
                            });
                            break;
                        }
                    }
                    prev = Some((pm, m));
                }
            }
        }
        if !inverted {
            let cycle: Vec<MsgIx> = (0..k)
                .filter(|&i| indegree[i] > 0)
                .map(|i| names[i])
                .collect();
            v.add(Property::Total, || {
                format!(
                    "group {gn}: in view {view}, no single total order explains the members' deliveries (cycle among {})",
                    list(cycle.iter().map(|&m| g.msg_name(m)))
                )
            });
        }
    }
}

fn gbcast(g: &Group, d: &Delivered, v: &mut Violations) {
    let gn = &g.name;
    let is_gbcast = |m: MsgIx| {
        g.msgs[m as usize]
            .send
            .as_ref()
            .is_some_and(|s| s.order == Order::Gbcast)
    };
    for (view, members) in by_view(d) {
        // gbcast message -> (reference member slot, its position there)
        let mut reference: BTreeMap<MsgIx, (usize, usize)> = BTreeMap::new();
        for (slot, &(_, seq)) in members.iter().enumerate() {
            for (pos, &m) in seq.iter().enumerate() {
                if is_gbcast(m) {
                    reference.entry(m).or_insert((slot, pos));
                }
            }
        }
        if reference.is_empty() {
            continue;
        }
        // Prefix (count is the position) and hash sums per member; positions at each member.
        let prefix: Vec<Vec<u64>> = members
            .iter()
            .map(|&(_, seq)| {
                let mut acc = 0u64;
                let mut out = Vec::with_capacity(seq.len() + 1);
                out.push(0);
                for &m in seq {
                    acc = acc.wrapping_add(msg_hash(m));
                    out.push(acc);
                }
                out
            })
            .collect();
        // Positions of the gbcast messages at each member; full position maps only for the
        // members used as a reference, built when first needed.
        let gpos: Vec<FastMap<MsgIx, usize>> = members
            .iter()
            .map(|&(_, seq)| {
                seq.iter()
                    .enumerate()
                    .filter(|&(_, &m)| is_gbcast(m))
                    .map(|(i, &m)| (m, i))
                    .collect()
            })
            .collect();
        let positions_of = |seq: &[MsgIx]| -> FastMap<MsgIx, usize> {
            seq.iter().enumerate().map(|(i, &m)| (m, i)).collect()
        };
        let mut full: Vec<Option<FastMap<MsgIx, usize>>> = vec![None; members.len()];
        // Per (reference slot, member slot): the highest reference position of anything the
        // member delivered that the reference delivered too (None: nothing).
        let mut reach: FastMap<(usize, usize), Option<usize>> = FastMap::default();
        for (&gm, &(rslot, rpos)) in &reference {
            let (rm, rseq) = members[rslot];
            for (slot, &(q, qseq)) in members.iter().enumerate() {
                if slot == rslot {
                    continue;
                }
                match gpos[slot].get(&gm) {
                    Some(&qpos) => {
                        if qpos == rpos && prefix[slot][qpos] == prefix[rslot][rpos] {
                            continue;
                        }
                        v.add(Property::Gbcast, || {
                            let at_r = positions_of(rseq);
                            let at_q = positions_of(qseq);
                            let at_ref = |m: &MsgIx| at_r.get(m).copied().unwrap_or(usize::MAX);
                            let only_q: Vec<MsgIx> =
                                qseq[..qpos].iter().copied().filter(|m| at_ref(m) > rpos).collect();
                            let only_r: Vec<MsgIx> = rseq[..rpos]
                                .iter()
                                .copied()
                                .filter(|m| at_q.get(m).is_none_or(|&p| p > qpos))
                                .collect();
                            format!(
                                "group {gn}: in view {view}, {} and {} delivered different messages before gbcast {}: only {} before it: [{}]; only {} before it: [{}]",
                                g.member(q),
                                g.member(rm),
                                g.msg_name(gm),
                                g.member(q),
                                list(only_q.iter().map(|&m| g.msg_name(m))),
                                g.member(rm),
                                list(only_r.iter().map(|&m| g.msg_name(m))),
                            )
                        });
                    }
                    None => {
                        // q never delivered g: everything it delivered that the reference
                        // delivered must precede g there. (Messages the reference never
                        // delivered are a member's own business when it fails before g —
                        // non-uniform delivery; a member that goes on is held to the same set
                        // by virtual synchrony, property 7.)
                        let at_r = full[rslot].get_or_insert_with(|| positions_of(rseq));
                        let at_ref = |m: &MsgIx| at_r.get(m).copied();
                        let furthest = *reach
                            .entry((rslot, slot))
                            .or_insert_with(|| qseq.iter().filter_map(at_ref).max());
                        if furthest.is_none_or(|f| f < rpos) {
                            continue;
                        }
                        v.add(Property::Gbcast, || {
                            let m = qseq
                                .iter()
                                .copied()
                                .find(|m| at_ref(m).is_some_and(|p| p > rpos))
                                .unwrap_or(gm);
                            format!(
                                "group {gn}: in view {view}, {} delivered {} without delivering gbcast {} first ({} did not deliver {} before {})",
                                g.member(q),
                                g.msg_name(m),
                                g.msg_name(gm),
                                g.member(rm),
                                g.msg_name(m),
                                g.msg_name(gm),
                            )
                        });
                    }
                }
            }
        }
    }
}

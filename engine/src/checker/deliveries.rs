//! Delivery checks per member, then across members and views.
//!
//! Per member ([`check_deliveries`]), each delivery in local order:
//!
//! * **4 integrity**: the message has a send event (by the member its id names) and is
//!   delivered with the order it was sent with.
//! * **5 no duplication**: the member has not delivered that message id before (any view).
//! * **6 sending view**: the member's current view is the view the sender was in when it
//!   sent the message.
//! * **8 fifo, no holes**: within one view, a receiver's deliveries from one sender are, in
//!   its local order, exactly that sender's sends of the view in sequence order starting from
//!   the sender's first send in that view — a gap-free prefix. When a receiver delivers
//!   `s/k` sent in view v, it must already have delivered every `s/j` sent in v with `j < k`.
//!   One violation per hole (the late delivery that fills it is not reported again).
//!   Across views, "no holes" means a member passing from view u to view v has delivered
//!   everything of u that the other members passing from u to v delivered — property 7 —
//!   and a sender that goes on has delivered all its own messages of u — property 3; so
//!   fifo itself is checked per view, and a message missing at the end of a view is a 3 or
//!   7 (or completeness) violation, never a fifo one.
//!
//! Only *valid* deliveries (sent, first delivery, in the sending view) feed the later checks,
//! so one bad delivery is reported once.
//!
//! Across members ([`check_views`]), with "r goes from v to w" meaning that w is the view r
//! installs right after v:
//!
//! * **7 virtual synchrony**: the members that go from v to the same w delivered the same set
//!   of messages sent in v. Reported per member that misses messages others of its class
//!   delivered, listing them.
//! * **3 self delivery**: a sender that goes on from its sending view v to any next view has
//!   delivered its message. A sender whose trace ends in v, or that blocks, is exempt (crashed
//!   or excluded). Not reported where 7 already reports it (another member going from v to
//!   the same next view delivered the message).
//! * **9 safe**: if any member delivered a safe message sent in v, every member that
//!   installed v and goes on to a next view delivered it. Not reported where 7 already does.
//!   (That safe delivery *waits for stability* is not visible in a trace: not checked.)
//! * **7 same sequence of views**: a member installs every view between two views it
//!   installs: if r installs u and then x, no view w with u < w < x was installed by anyone.
//!   If w lists r, r skipped it (7); if not, r was excluded by w and came back under the same
//!   member id (10: it must rejoin as a new member). So every member going on from v goes to
//!   the same next view, and the 7 check above compares all of them.
//! * **10 primary component (majority)**: whenever a member goes from u to w, w contains a
//!   strict majority of u's members, counting those that left gracefully (a `leave` event in
//!   u or before) as taking part. Reported once per (u, w).
//! * **completeness** (only when asked): every member that installed a view delivered every
//!   message sent in it. Reported per (member, view), listing the missing messages.

use super::model::{Ev, Group, MemberIx, MsgIx};
use super::FastMap;
use super::{list, CheckConfig, Property, Violations};
use std::collections::{BTreeMap, BTreeSet};

/// What the delivery pass learnt, for the later passes.
pub(crate) struct Delivered {
    /// Per member, a bitset over messages: delivered at least once (in any view).
    bits: Vec<Vec<u64>>,
    /// Per member, per event index: whether it is a valid delivery.
    pub valid: Vec<Vec<bool>>,
    /// Valid deliveries of each (member, view), in local order.
    pub in_view: FastMap<(MemberIx, u64), Vec<MsgIx>>,
    /// Highest sequence number of each (member, view, sender) among valid deliveries.
    pub high_seq: FastMap<(MemberIx, u64, MemberIx), u64>,
    /// The first member (by index) that delivered each message.
    pub first_deliverer: Vec<Option<MemberIx>>,
}

impl Delivered {
    pub fn has(&self, r: MemberIx, m: MsgIx) -> bool {
        self.bits[r as usize][m as usize / 64] & (1 << (m % 64)) != 0
    }

    fn set(&mut self, r: MemberIx, m: MsgIx) {
        self.bits[r as usize][m as usize / 64] |= 1 << (m % 64);
    }
}

pub(crate) fn check_deliveries(g: &Group, v: &mut Violations) -> Delivered {
    let n = g.members.len();
    let words = g.msgs.len().div_ceil(64);
    let mut d = Delivered {
        bits: vec![vec![0u64; words]; n],
        valid: Vec::with_capacity(n),
        in_view: FastMap::default(),
        high_seq: FastMap::default(),
        first_deliverer: vec![None; g.msgs.len()],
    };
    let gn = &g.name;
    // Per sender: (send view, highest seq) of the member's last valid delivery from it, and
    // the highest seq validly delivered in the current view; reset for each member.
    let mut fifo: Vec<Option<(u64, u64)>> = vec![None; n];
    let mut high: Vec<u64> = vec![0; n];
    let mut touched: Vec<MemberIx> = Vec::new();
    for (r, member) in g.members.iter().enumerate() {
        let r = r as MemberIx;
        let node = &member.name;
        let mut valid = vec![false; member.events.len()];
        let mut current: Option<u64> = None;
        let mut in_view: Vec<MsgIx> = Vec::new();
        let flush = |d: &mut Delivered,
                     view: Option<u64>,
                     in_view: &mut Vec<MsgIx>,
                     high: &mut [u64],
                     touched: &[MemberIx]| {
            let Some(view) = view else { return };
            if !in_view.is_empty() {
                d.in_view.entry((r, view)).or_default().append(in_view);
            }
            for &s in touched {
                if high[s as usize] > 0 {
                    let h = d.high_seq.entry((r, view, s)).or_insert(0);
                    *h = (*h).max(high[s as usize]);
                    high[s as usize] = 0;
                }
            }
        };
        for (i, ev) in member.events.iter().enumerate() {
            let (msg, view, order) = match *ev {
                Ev::Deliver { msg, view, order } => (msg, view, order),
                Ev::View => {
                    flush(&mut d, current, &mut in_view, &mut high, &touched);
                    current = None;
                    continue;
                }
                _ => continue,
            };
            if current != Some(view) {
                flush(&mut d, current, &mut in_view, &mut high, &touched);
                current = Some(view);
            }
            let m = &g.msgs[msg as usize];
            let Some(send) = &m.send else {
                v.add(Property::Integrity, || {
                    format!(
                        "group {gn}: {node} delivered {} in view {view} but no member sent it",
                        g.msg_name(msg)
                    )
                });
                continue;
            };
            if order != send.order {
                v.add(Property::Integrity, || {
                    format!(
                        "group {gn}: {node} delivered {} in view {view} as {order} but it was sent as {}",
                        g.msg_name(msg),
                        send.order
                    )
                });
            }
            if d.has(r, msg) {
                v.add(Property::NoDuplication, || {
                    format!(
                        "group {gn}: {node} delivered {} again (view {view})",
                        g.msg_name(msg)
                    )
                });
                continue;
            }
            d.set(r, msg);
            d.first_deliverer[msg as usize].get_or_insert(r);
            if send.view != view {
                v.add(Property::SendingView, || {
                    format!(
                        "group {gn}: {node} delivered {} in view {view} but it was sent in view {}",
                        g.msg_name(msg),
                        send.view
                    )
                });
                continue;
            }
            valid[i] = true;
            let sender = m.sender as usize;
            let expected = match fifo[sender] {
                Some((fv, seq)) if fv == view => seq.saturating_add(1),
                _ => g.first_seq.get(&(m.sender, view)).copied().unwrap_or(1),
            };
            if m.seq > expected {
                let s = g.member(m.sender);
                v.add(Property::Fifo, || {
                    format!(
                        "group {gn}: {node} delivered {s}/{} in view {view} before {s}/{expected} (sent earlier in the same view)",
                        m.seq
                    )
                });
            }
            if fifo[sender].is_none() {
                touched.push(m.sender);
            }
            fifo[sender] = Some(match fifo[sender] {
                Some((fv, seq)) if fv == view => (view, seq.max(m.seq)),
                _ => (view, m.seq),
            });
            high[sender] = high[sender].max(m.seq);
            in_view.push(msg);
        }
        flush(&mut d, current, &mut in_view, &mut high, &touched);
        for &s in &touched {
            fifo[s as usize] = None;
        }
        touched.clear();
        d.valid.push(valid);
    }
    d
}

/// An order-independent hash of one message, to be summed over a set (splitmix64).
pub(crate) fn msg_hash(m: MsgIx) -> u64 {
    let mut z = u64::from(m).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn check_views(g: &Group, d: &Delivered, config: &CheckConfig, v: &mut Violations) {
    let gn = &g.name;
    // (v, w) -> members going from v to w; (r, v) -> w; v -> members that installed v.
    let mut classes: BTreeMap<(u64, u64), Vec<MemberIx>> = BTreeMap::new();
    let mut next_view: FastMap<(MemberIx, u64), u64> = FastMap::default();
    let mut installers: BTreeMap<u64, Vec<MemberIx>> = BTreeMap::new();
    for (r, member) in g.members.iter().enumerate() {
        let r = r as MemberIx;
        for (i, &view) in member.installs.iter().enumerate() {
            let list = installers.entry(view).or_default();
            if list.last() != Some(&r) {
                list.push(r);
            }
            if let Some(&next) = member.installs.get(i + 1) {
                next_view.entry((r, view)).or_insert(next);
                classes.entry((view, next)).or_default().push(r);
            }
        }
    }
    let class_delivered = |view: u64, next: u64, m: MsgIx| -> bool {
        classes
            .get(&(view, next))
            .is_some_and(|c| c.iter().any(|&q| d.has(q, m)))
    };

    // 7: same next view, same set.
    for (&(view, next), class) in &classes {
        if class.len() < 2 {
            continue;
        }
        // Fast path: same count and same order-independent hash of the valid deliveries.
        let digest = |r: MemberIx| {
            d.in_view.get(&(r, view)).map_or((0, 0), |seq| {
                let sum = seq
                    .iter()
                    .fold(0u64, |acc, &m| acc.wrapping_add(msg_hash(m)));
                (seq.len(), sum)
            })
        };
        let first = digest(class[0]);
        if class[1..].iter().all(|&r| digest(r) == first) {
            continue;
        }
        let mut union: BTreeSet<MsgIx> = BTreeSet::new();
        for &r in class {
            if let Some(seq) = d.in_view.get(&(r, view)) {
                union.extend(seq.iter().copied());
            }
        }
        for &r in class {
            let missing: Vec<MsgIx> = union.iter().copied().filter(|&m| !d.has(r, m)).collect();
            if missing.is_empty() {
                continue;
            }
            let by = class
                .iter()
                .copied()
                .find(|&q| d.has(q, missing[0]))
                .map_or("?", |q| g.member(q));
            v.add(Property::VirtualSynchrony, || {
                format!(
                    "group {gn}: {} went from view {view} to view {next} without delivering {} message(s) of view {view} that other members going to view {next} delivered: {} ({} delivered by {by})",
                    g.member(r),
                    missing.len(),
                    list(missing.iter().map(|&m| g.msg_name(m))),
                    g.msg_name(missing[0]),
                )
            });
        }
    }

    for (mi, m) in g.msgs.iter().enumerate() {
        let mi = mi as MsgIx;
        let Some(send) = &m.send else { continue };
        // 3: a sender that goes on delivered its own message.
        if let Some(&next) = next_view.get(&(m.sender, send.view)) {
            if !d.has(m.sender, mi) && !class_delivered(send.view, next, mi) {
                v.add(Property::SelfDelivery, || {
                    format!(
                        "group {gn}: {} sent {} in view {} and went on to view {next} without delivering it",
                        g.member(m.sender),
                        g.msg_name(mi),
                        send.view
                    )
                });
            }
        }
        // 9: a safe message delivered anywhere is delivered by every member that goes on.
        if send.safe {
            if let Some(deliverer) = d.first_deliverer[mi as usize] {
                for &r in installers.get(&send.view).map_or(&[][..], |l| &l[..]) {
                    let Some(&next) = next_view.get(&(r, send.view)) else {
                        continue;
                    };
                    if !d.has(r, mi) && !class_delivered(send.view, next, mi) {
                        v.add(Property::Safe, || {
                            format!(
                                "group {gn}: {} went from view {} to view {next} without delivering safe message {}, which {} delivered",
                                g.member(r),
                                send.view,
                                g.msg_name(mi),
                                g.member(deliverer)
                            )
                        });
                    }
                }
            }
        }
    }

    // 7 / 10: no view skipped between two consecutive installs.
    for (r, member) in g.members.iter().enumerate() {
        let r = r as MemberIx;
        for pair in member.installs.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            if to <= from.saturating_add(1) {
                continue;
            }
            for (&between, list) in g.views.range(from + 1..to) {
                let node = g.member(r);
                if list.binary_search(&r).is_ok() {
                    v.add(Property::VirtualSynchrony, || {
                        format!("group {gn}: {node} went from view {from} to view {to}, skipping view {between} that lists it")
                    });
                } else {
                    v.add(Property::PrimaryComponent, || {
                        format!("group {gn}: {node} was excluded by view {between} and came back in view {to} under the same member id (after view {from})")
                    });
                }
            }
        }
    }

    // 10: each next view holds a majority of the view it succeeds.
    for &(view, next) in classes.keys() {
        let (Some(prev), Some(new)) = (g.views.get(&view), g.views.get(&next)) else {
            continue;
        };
        let kept = new.iter().filter(|m| prev.binary_search(m).is_ok()).count();
        // Members that left gracefully took part in the change that removed them.
        let left = prev
            .iter()
            .filter(|&&m| new.binary_search(&m).is_err())
            .filter(|&&m| g.members[m as usize].left_in.is_some_and(|l| l <= view))
            .count();
        if (kept + left) * 2 <= prev.len() {
            let who = list(classes[&(view, next)].iter().map(|&r| g.member(r)));
            v.add(Property::PrimaryComponent, || {
                format!(
                    "group {gn}: view {next} (installed after view {view} by {who}) holds {kept} of the {} members of view {view}: not a majority",
                    prev.len()
                )
            });
        }
    }

    if config.require_survivor_complete {
        let last = |r: MemberIx| g.members[r as usize].installs.last().copied();
        let latest = (0..g.members.len() as MemberIx).filter_map(last).max();
        let survivor = |r: MemberIx| latest.is_some() && last(r) == latest;
        let mut missing: BTreeMap<(MemberIx, u64), Vec<MsgIx>> = BTreeMap::new();
        for (mi, m) in g.msgs.iter().enumerate() {
            let mi = mi as MsgIx;
            let Some(send) = &m.send else { continue };
            if !survivor(m.sender) {
                continue;
            }
            for &r in installers.get(&send.view).map_or(&[][..], |l| &l[..]) {
                if survivor(r) && !d.has(r, mi) {
                    missing.entry((r, send.view)).or_default().push(mi);
                }
            }
        }
        for ((r, view), msgs) in missing {
            v.add(Property::Completeness, || {
                format!(
                    "group {gn}: {} stayed in the group from view {view} on but did not deliver {} message(s) that members who also stayed sent in it: {}",
                    g.member(r),
                    msgs.len(),
                    list(msgs.iter().map(|&m| g.msg_name(m)))
                )
            });
        }
    }

    if config.require_complete {
        let mut missing: BTreeMap<(MemberIx, u64), Vec<MsgIx>> = BTreeMap::new();
        for (mi, m) in g.msgs.iter().enumerate() {
            let mi = mi as MsgIx;
            let Some(send) = &m.send else { continue };
            for &r in installers.get(&send.view).map_or(&[][..], |l| &l[..]) {
                if !d.has(r, mi) {
                    missing.entry((r, send.view)).or_default().push(mi);
                }
            }
        }
        for ((r, view), msgs) in missing {
            v.add(Property::Completeness, || {
                format!(
                    "group {gn}: {} installed view {view} but did not deliver {} message(s) sent in it: {}",
                    g.member(r),
                    msgs.len(),
                    list(msgs.iter().map(|&m| g.msg_name(m)))
                )
            });
        }
    }
}

//! Interning and per-log checks.
//!
//! Splits the traces by group, interns member ids and message ids (`"N/SEQ"` → sender, seq)
//! to dense integers, and replays each member's log to attach to every event the view the
//! member was in (the last view it installed before the event: that, not the event's `view`
//! field, is the truth the other passes use). Checks what one log shows on its own:
//!
//! * **1 self inclusion**: every `view` event lists the installing member.
//! * **2 local monotonicity**: each `view` event's id is greater than the member's previous.
//! * **4 integrity (event level)**: message ids parse; a member only sends messages whose id
//!   names itself; sends and deliveries happen after the member installed a view, and their
//!   `view` field is the member's current view. A delivery before any view is dropped.
//! * **8 fifo (sender side)**: a sender's sequence numbers in a group are 1, 2, 3, … in send
//!   order (one sequence space per sender and group, across views, no holes, no reuse). A
//!   reused sequence number's second send is dropped.
//! * **7 virtual synchrony (view agreement)**: every member that installs view id V installs
//!   it with the same ordered member list.
//! * **10 primary component (blocking)**: after a `block`, the member installs no view and
//!   delivers nothing.
//!
//! If one member id's events are spread over several files they are concatenated in file
//! (name) order.

use super::{FastMap, FastSet};
use super::{Property, Violations};
use crate::trace::{parse_msg_id, MemberTrace, TraceEvent};
use crate::Order;
use std::collections::BTreeMap;
use std::rc::Rc;

pub(crate) type MemberIx = u32;
pub(crate) type MsgIx = u32;

/// One event of a member's log, interned.
pub(crate) enum Ev {
    View,
    Send {
        msg: MsgIx,
    },
    Deliver {
        msg: MsgIx,
        /// The view the member was in (its last installed view).
        view: u64,
        order: Order,
    },
    Block,
}

pub(crate) struct Member {
    pub name: String,
    pub events: Vec<Ev>,
    /// View ids in installation order.
    pub installs: Vec<u64>,
    /// The first view in which the member asked to leave (a graceful departure).
    pub left_in: Option<u64>,
}

pub(crate) struct SendInfo {
    /// The view the sender was in (or, if it had none, the view its event claimed).
    pub view: u64,
    pub order: Order,
    pub safe: bool,
}

pub(crate) struct Msg {
    pub sender: MemberIx,
    pub seq: u64,
    pub send: Option<SendInfo>,
}

pub(crate) struct Group {
    pub name: String,
    pub members: Vec<Member>,
    pub msgs: Vec<Msg>,
    pub msg_ix: FastMap<(MemberIx, u64), MsgIx>,
    /// Each view id's member list, as first installed, deduplicated and sorted by index.
    pub views: BTreeMap<u64, Vec<MemberIx>>,
    /// Per sender, its messages by sequence number (`[seq - 1]`), for the messages whose
    /// sequence numbers are dense from 1 (all of them in a valid trace); `msg_ix` has all.
    pub by_seq: Vec<Vec<MsgIx>>,
    /// The first sequence number each sender sent in each view.
    pub first_seq: FastMap<(MemberIx, u64), u64>,
}

impl Group {
    pub fn member(&self, m: MemberIx) -> &str {
        &self.members[m as usize].name
    }

    /// `"sender/seq"`.
    pub fn msg_name(&self, m: MsgIx) -> String {
        let msg = &self.msgs[m as usize];
        format!("{}/{}", self.member(msg.sender), msg.seq)
    }

    pub fn msg(&self, sender: MemberIx, seq: u64) -> Option<MsgIx> {
        let dense = self.by_seq.get(sender as usize).and_then(|v| {
            let i = usize::try_from(seq.checked_sub(1)?).ok()?;
            v.get(i).copied()
        });
        dense.or_else(|| self.msg_ix.get(&(sender, seq)).copied())
    }
}

/// Gives each message of a `crashed` member that has no send event (its trace was cut
/// short) the send its first delivery implies: that view and order, not safe, placed after
/// the member's last recorded event (so its causal past is taken as what the trace shows —
/// a lower bound of the true one: the causal checks stay sound, only less strict).
pub(crate) fn assume_sends_of_crashed(g: &mut Group, crashed: &[String]) {
    let mut assumed: Vec<MsgIx> = Vec::new();
    let is_crashed: Vec<bool> = g
        .members
        .iter()
        .map(|m| crashed.contains(&m.name))
        .collect();
    for r in 0..g.members.len() {
        for i in 0..g.members[r].events.len() {
            if let Ev::Deliver { msg, view, order } = g.members[r].events[i] {
                let m = &mut g.msgs[msg as usize];
                if m.send.is_none() && is_crashed[m.sender as usize] {
                    m.send = Some(SendInfo {
                        view,
                        order,
                        safe: false,
                    });
                    assumed.push(msg);
                }
            }
        }
    }
    assumed.sort_by_key(|&m| (g.msgs[m as usize].sender, g.msgs[m as usize].seq));
    for msg in assumed {
        let sender = g.msgs[msg as usize].sender as usize;
        g.members[sender].events.push(Ev::Send { msg });
    }
}

pub(crate) struct Built {
    pub groups: Vec<Group>,
    pub members: usize,
    pub sends: usize,
    pub deliveries: usize,
}

/// A member's replay state while building.
#[derive(Default)]
struct Replay {
    view: Option<u64>,
    last_seq_sent: u64,
    blocked: bool,
}

struct GroupBuilder {
    /// The group's name, cheap to clone into violation messages.
    name: Rc<str>,
    group: Group,
    member_ix: FastMap<String, MemberIx>,
    replay: Vec<Replay>,
    /// The member looked up last as an event's node, and as a message's sender (most lookups
    /// repeat them).
    last_node: Option<MemberIx>,
    last_sender: Option<MemberIx>,
    conflicting_views: FastSet<u64>,
}

impl GroupBuilder {
    fn new(name: &str) -> Self {
        GroupBuilder {
            name: name.into(),
            group: Group {
                name: name.to_owned(),
                members: Vec::new(),
                msgs: Vec::new(),
                msg_ix: FastMap::default(),
                views: BTreeMap::new(),
                first_seq: FastMap::default(),
                by_seq: Vec::new(),
            },
            member_ix: FastMap::default(),
            replay: Vec::new(),
            last_node: None,
            last_sender: None,
            conflicting_views: FastSet::default(),
        }
    }

    /// The index of the member that is an event's node.
    fn node(&mut self, name: &str) -> MemberIx {
        let m = self.member_cached(name, self.last_node);
        self.last_node = Some(m);
        m
    }

    /// The index of the member that a message id names.
    fn sender(&mut self, name: &str) -> MemberIx {
        let m = self.member_cached(name, self.last_sender);
        self.last_sender = Some(m);
        m
    }

    fn member_cached(&mut self, name: &str, cached: Option<MemberIx>) -> MemberIx {
        match cached {
            Some(m) if self.group.members[m as usize].name == name => m,
            _ => self.member(name),
        }
    }

    fn member(&mut self, name: &str) -> MemberIx {
        if let Some(&m) = self.member_ix.get(name) {
            return m;
        }
        let m = self.group.members.len() as MemberIx;
        self.group.members.push(Member {
            name: name.to_owned(),
            events: Vec::new(),
            installs: Vec::new(),
            left_in: None,
        });
        self.replay.push(Replay::default());
        self.member_ix.insert(name.to_owned(), m);
        m
    }

    fn finish(mut self) -> Group {
        let g = &mut self.group;
        let mut per_sender: Vec<Vec<(u64, MsgIx)>> = vec![Vec::new(); g.members.len()];
        for (m, msg) in g.msgs.iter().enumerate() {
            per_sender[msg.sender as usize].push((msg.seq, m as MsgIx));
        }
        g.by_seq = per_sender
            .into_iter()
            .map(|mut msgs| {
                msgs.sort_unstable();
                msgs.iter()
                    .enumerate()
                    .take_while(|&(i, &(seq, _))| seq == i as u64 + 1)
                    .map(|(_, &(_, m))| m)
                    .collect()
            })
            .collect();
        self.group
    }

    fn msg(&mut self, sender: MemberIx, seq: u64) -> MsgIx {
        let group = &mut self.group;
        *group.msg_ix.entry((sender, seq)).or_insert_with(|| {
            group.msgs.push(Msg {
                sender,
                seq,
                send: None,
            });
            (group.msgs.len() - 1) as MsgIx
        })
    }
}

pub(crate) fn build(traces: &[MemberTrace], v: &mut Violations) -> Built {
    let mut builders: Vec<GroupBuilder> = Vec::new();
    let mut builder_ix: FastMap<&str, usize> = FastMap::default();
    let mut nodes: FastSet<&str> = FastSet::default();
    let (mut sends, mut deliveries) = (0, 0);
    for trace in traces {
        // Consecutive events of a file almost always share node and group.
        let mut last_node: Option<&str> = None;
        let mut last_group: Option<(&str, usize)> = None;
        for ev in &trace.events {
            if last_node != Some(ev.node()) {
                nodes.insert(ev.node());
                last_node = Some(ev.node());
            }
            let gname = ev.group();
            let bi = match last_group {
                Some((name, bi)) if name == gname => bi,
                _ => {
                    let bi = *builder_ix.entry(gname).or_insert_with(|| {
                        builders.push(GroupBuilder::new(gname));
                        builders.len() - 1
                    });
                    last_group = Some((gname, bi));
                    bi
                }
            };
            let b = &mut builders[bi];
            match ev {
                TraceEvent::View {
                    node,
                    view,
                    members,
                    ..
                } => on_view(b, node, *view, members, v),
                TraceEvent::Send {
                    node,
                    view,
                    msg,
                    order,
                    safe,
                    ..
                } => {
                    sends += 1;
                    on_send(b, node, *view, msg, *order, *safe, v)
                }
                TraceEvent::Deliver {
                    node,
                    view,
                    msg,
                    order,
                    ..
                } => {
                    deliveries += 1;
                    on_deliver(b, node, *view, msg, *order, v)
                }
                TraceEvent::Leave { node, view, .. } => {
                    let r = b.node(node);
                    let left = &mut b.group.members[r as usize].left_in;
                    *left = Some(left.map_or(*view, |l| l.min(*view)));
                }
                TraceEvent::Block { node, .. } => {
                    let r = b.node(node);
                    let replay = &mut b.replay[r as usize];
                    if !replay.blocked {
                        replay.blocked = true;
                        b.group.members[r as usize].events.push(Ev::Block);
                    }
                }
            }
        }
    }
    let mut groups: Vec<Group> = builders.into_iter().map(|b| b.finish()).collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Built {
        groups,
        members: nodes.len(),
        sends,
        deliveries,
    }
}

fn on_view(b: &mut GroupBuilder, node: &str, view: u64, names: &[String], v: &mut Violations) {
    let g = b.name.clone();
    let r = b.node(node);
    let mut list: Vec<MemberIx> = names.iter().map(|n| b.member(n)).collect();
    list.sort_unstable();
    list.dedup();
    if b.replay[r as usize].blocked {
        v.add(Property::PrimaryComponent, || {
            format!("group {g}: {node} installed view {view} after it blocked (a blocked member must rejoin under a new member id)")
        });
    }
    if !list.contains(&r) {
        v.add(Property::SelfInclusion, || {
            format!(
                "group {g}: {node} installed view {view} whose members [{}] do not include it",
                names.join(", ")
            )
        });
    }
    if let Some(prev) = b.replay[r as usize].view {
        if view <= prev {
            v.add(Property::LocalMonotonicity, || {
                format!("group {g}: {node} installed view {view} after view {prev}")
            });
        }
    }
    match b.group.views.get(&view) {
        None => {
            b.group.views.insert(view, list);
        }
        Some(first) if *first != list => {
            if b.conflicting_views.insert(view) {
                let first = first.clone();
                let gr = &b.group;
                v.add(Property::VirtualSynchrony, || {
                    format!(
                        "group {g}: view {view} installed with different member lists: [{}] and, at {node}, [{}]",
                        super::list(first.iter().map(|&m| gr.member(m))),
                        names.join(", ")
                    )
                });
            }
        }
        Some(_) => {}
    }
    b.replay[r as usize].view = Some(view);
    let member = &mut b.group.members[r as usize];
    member.installs.push(view);
    member.events.push(Ev::View);
}

/// Checks an event's view field against the member's current view; returns the view to use.
/// `what` is e.g. `("sent", "a/1")`.
fn event_view(
    b: &GroupBuilder,
    r: MemberIx,
    (verb, id): (&str, &str),
    field: u64,
    v: &mut Violations,
) -> Option<u64> {
    let g = &b.group.name;
    let node = b.group.member(r);
    match b.replay[r as usize].view {
        None => {
            v.add(Property::Integrity, || {
                format!(
                    "group {g}: {node} {verb} {id} before installing any view (event says view {field})"
                )
            });
            None
        }
        Some(cur) => {
            if cur != field {
                v.add(Property::Integrity, || {
                    format!(
                        "group {g}: {node} {verb} {id} in view {cur} but the event says view {field}"
                    )
                });
            }
            Some(cur)
        }
    }
}

fn on_send(
    b: &mut GroupBuilder,
    node: &str,
    field_view: u64,
    id: &str,
    order: Order,
    safe: bool,
    v: &mut Violations,
) {
    let g = b.name.clone();
    let r = b.node(node);
    let Some((sender_name, seq)) = parse_msg_id(id) else {
        v.add(Property::Integrity, || {
            format!(
                "group {g}: {node} sent a message with malformed id {id:?} in view {field_view} (want \"SENDER/SEQ\")"
            )
        });
        return;
    };
    if sender_name != node {
        v.add(Property::Integrity, || {
            format!("group {g}: {node} sent message {id} in view {field_view} but its id names another sender")
        });
        return;
    }
    let view = event_view(b, r, ("sent", id), field_view, v).unwrap_or(field_view);
    let last = b.replay[r as usize].last_seq_sent;
    if Some(seq) != last.checked_add(1) {
        v.add(Property::Fifo, || {
            if seq <= last {
                format!("group {g}: {node} sent {id} in view {view} after {node}/{last}: sequence number reused or going back")
            } else {
                format!("group {g}: {node} sent {id} in view {view} after {node}/{last}: hole in its sequence numbers")
            }
        });
    }
    b.replay[r as usize].last_seq_sent = last.max(seq);
    let m = b.msg(r, seq);
    let msg = &mut b.group.msgs[m as usize];
    if msg.send.is_some() {
        return; // reuse, reported above
    }
    msg.send = Some(SendInfo { view, order, safe });
    b.group.first_seq.entry((r, view)).or_insert(seq);
    b.group.members[r as usize].events.push(Ev::Send { msg: m });
}

fn on_deliver(
    b: &mut GroupBuilder,
    node: &str,
    field_view: u64,
    id: &str,
    order: Order,
    v: &mut Violations,
) {
    let g = b.name.clone();
    let r = b.node(node);
    let Some((sender_name, seq)) = parse_msg_id(id) else {
        v.add(Property::Integrity, || {
            format!("group {g}: {node} delivered a message with malformed id {id:?} in view {field_view}")
        });
        return;
    };
    if b.replay[r as usize].blocked {
        v.add(Property::PrimaryComponent, || {
            format!("group {g}: {node} delivered {id} in view {field_view} after it blocked")
        });
    }
    let Some(view) = event_view(b, r, ("delivered", id), field_view, v) else {
        return;
    };
    let sender = b.sender(sender_name);
    let m = b.msg(sender, seq);
    b.group.members[r as usize].events.push(Ev::Deliver {
        msg: m,
        view,
        order,
    });
}

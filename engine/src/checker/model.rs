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

use super::{Property, Violations};
use crate::trace::{parse_msg_id, MemberTrace, TraceEvent};
use crate::Order;
use std::collections::{BTreeMap, HashMap, HashSet};

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
    pub msg_ix: HashMap<(MemberIx, u64), MsgIx>,
    /// Each view id's member list, as first installed, deduplicated and sorted by index.
    pub views: BTreeMap<u64, Vec<MemberIx>>,
    /// The first sequence number each sender sent in each view.
    pub first_seq: HashMap<(MemberIx, u64), u64>,
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
        self.msg_ix.get(&(sender, seq)).copied()
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
    group: Group,
    member_ix: HashMap<String, MemberIx>,
    replay: Vec<Replay>,
    conflicting_views: HashSet<u64>,
}

impl GroupBuilder {
    fn new(name: &str) -> Self {
        GroupBuilder {
            group: Group {
                name: name.to_owned(),
                members: Vec::new(),
                msgs: Vec::new(),
                msg_ix: HashMap::new(),
                views: BTreeMap::new(),
                first_seq: HashMap::new(),
            },
            member_ix: HashMap::new(),
            replay: Vec::new(),
            conflicting_views: HashSet::new(),
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
        });
        self.replay.push(Replay::default());
        self.member_ix.insert(name.to_owned(), m);
        m
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
    let mut builders: BTreeMap<&str, GroupBuilder> = BTreeMap::new();
    let mut nodes: HashSet<&str> = HashSet::new();
    let (mut sends, mut deliveries) = (0, 0);
    for trace in traces {
        for ev in &trace.events {
            nodes.insert(ev.node());
            let gname = ev.group();
            let b = builders
                .entry(gname)
                .or_insert_with(|| GroupBuilder::new(gname));
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
                TraceEvent::Block { node, .. } => {
                    let r = b.member(node);
                    let replay = &mut b.replay[r as usize];
                    if !replay.blocked {
                        replay.blocked = true;
                        b.group.members[r as usize].events.push(Ev::Block);
                    }
                }
            }
        }
    }
    Built {
        groups: builders.into_values().map(|b| b.group).collect(),
        members: nodes.len(),
        sends,
        deliveries,
    }
}

fn on_view(b: &mut GroupBuilder, node: &str, view: u64, names: &[String], v: &mut Violations) {
    let g = b.group.name.clone();
    let r = b.member(node);
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
fn event_view(
    b: &GroupBuilder,
    r: MemberIx,
    what: &str,
    field: u64,
    v: &mut Violations,
) -> Option<u64> {
    let g = &b.group.name;
    let node = b.group.member(r);
    match b.replay[r as usize].view {
        None => {
            v.add(Property::Integrity, || {
                format!(
                    "group {g}: {node} {what} before installing any view (event says view {field})"
                )
            });
            None
        }
        Some(cur) => {
            if cur != field {
                v.add(Property::Integrity, || {
                    format!(
                        "group {g}: {node} {what} in view {cur} but the event says view {field}"
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
    let g = b.group.name.clone();
    let r = b.member(node);
    let Some((sender_name, seq)) = parse_msg_id(id) else {
        v.add(Property::Integrity, || {
            format!(
                "group {g}: {node} sent a message with malformed id {id:?} (want \"SENDER/SEQ\")"
            )
        });
        return;
    };
    if sender_name != node {
        v.add(Property::Integrity, || {
            format!("group {g}: {node} sent message {id} whose id names another sender")
        });
        return;
    }
    let view = event_view(b, r, &format!("sent {id}"), field_view, v).unwrap_or(field_view);
    let last = b.replay[r as usize].last_seq_sent;
    if seq != last + 1 {
        v.add(Property::Fifo, || {
            if seq <= last {
                format!("group {g}: {node} sent {id} after {node}/{last}: sequence number reused or going back")
            } else {
                format!("group {g}: {node} sent {id} after {node}/{last}: hole in its sequence numbers")
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
    let g = b.group.name.clone();
    let r = b.member(node);
    let Some((sender_name, seq)) = parse_msg_id(id) else {
        v.add(Property::Integrity, || {
            format!("group {g}: {node} delivered a message with malformed id {id:?}")
        });
        return;
    };
    if b.replay[r as usize].blocked {
        v.add(Property::PrimaryComponent, || {
            format!("group {g}: {node} delivered {id} after it blocked")
        });
    }
    let Some(view) = event_view(b, r, &format!("delivered {id}"), field_view, v) else {
        return;
    };
    let sender = b.member(sender_name);
    let m = b.msg(sender, seq);
    b.group.members[r as usize].events.push(Ev::Deliver {
        msg: m,
        view,
        order,
    });
}

//! Cohort: a virtual synchrony engine.
//!
//! Process groups whose members see the same sequence of membership views and, between two
//! views, the same set of messages, each delivered with the ordering it asked for (see
//! `shared/DESIGN.md` §1). The crate is built in layers:
//!
//! * [`trace`] — the JSON-lines trace format every test layer shares;
//! * [`checker`] — the trace checker of properties 1–10;
//! * [`stats`] — the per-poller and per-group counters `cohort stat` reads from outside;
//! * `wire`, `protocol`, `sim` — the sans-IO protocol core and its deterministic simulator;
//! * [`runtime`] — the poller thread and trace writer around the core;
//! * [`node`] — the public API: [`Node`], [`Group`], [`Handler`].

pub mod checker;
pub mod membership;
pub mod node;
pub mod protocol;
pub mod runtime;
pub mod sim;
pub mod stats;
pub mod trace;
pub mod wire;

pub use cohort_transport::MemoryNetwork;
pub use node::{
    Claim, Delivery, Driver, Group, Handler, Node, NodeBuilder, Publisher, PublisherClaim, View,
};
pub use protocol::Seq;
pub use runtime::Idle;

use serde::{Deserialize, Serialize};

/// The ordering a multicast asks for. Any of them may additionally ask for *safe*
/// (dynamically uniform) delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// fbcast: per sender, in send order.
    Fifo,
    /// cbcast: causal order (implies FIFO).
    Causal,
    /// abcast: one total order at every member, consistent with causality.
    Total,
    /// gbcast: ordered against everything, view changes included.
    Gbcast,
}

impl Order {
    pub const ALL: [Order; 4] = [Order::Fifo, Order::Causal, Order::Total, Order::Gbcast];

    pub fn name(self) -> &'static str {
        match self {
            Order::Fifo => "fifo",
            Order::Causal => "causal",
            Order::Total => "total",
            Order::Gbcast => "gbcast",
        }
    }
}

impl std::str::FromStr for Order {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fifo" | "fbcast" => Ok(Order::Fifo),
            "causal" | "cbcast" => Ok(Order::Causal),
            "total" | "abcast" => Ok(Order::Total),
            "gbcast" => Ok(Order::Gbcast),
            other => Err(format!(
                "unknown order {other:?}: expected fifo, causal, total or gbcast"
            )),
        }
    }
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

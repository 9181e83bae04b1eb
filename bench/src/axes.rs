//! The axes every scenario shares: the ordering asked for (with or without safe delivery) and
//! how many members send.

use cohort::Order;

/// An ordering as the benchmark names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum BenchOrder {
    /// fbcast.
    Fifo,
    /// cbcast.
    Causal,
    /// abcast.
    Total,
    /// abcast with safe (dynamically uniform) delivery.
    SafeTotal,
}

impl BenchOrder {
    pub const ALL: [BenchOrder; 4] = [
        BenchOrder::Fifo,
        BenchOrder::Causal,
        BenchOrder::Total,
        BenchOrder::SafeTotal,
    ];

    pub fn label(self) -> &'static str {
        match self {
            BenchOrder::Fifo => "fifo",
            BenchOrder::Causal => "causal",
            BenchOrder::Total => "total",
            BenchOrder::SafeTotal => "safe-total",
        }
    }

    /// The engine's order and safe flag.
    pub fn order(self) -> (Order, bool) {
        match self {
            BenchOrder::Fifo => (Order::Fifo, false),
            BenchOrder::Causal => (Order::Causal, false),
            BenchOrder::Total => (Order::Total, false),
            BenchOrder::SafeTotal => (Order::Total, true),
        }
    }

    pub fn from_label(s: &str) -> Option<BenchOrder> {
        BenchOrder::ALL.into_iter().find(|o| o.label() == s)
    }
}

/// How many members send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Senders {
    /// Rank 1 (rank 0 in a group of one) sends; the others only receive.
    One,
    /// Every member sends.
    All,
}

impl Senders {
    pub fn count(self, members: usize) -> usize {
        match self {
            Senders::One => 1,
            Senders::All => members,
        }
    }
}

/// Formats a measured figure with three significant digits (`-` when absent).
pub fn sig3(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_safe_total_is_total_with_safe() {
        for o in BenchOrder::ALL {
            assert_eq!(BenchOrder::from_label(o.label()), Some(o));
        }
        assert_eq!(BenchOrder::SafeTotal.order(), (Order::Total, true));
        assert_eq!(Senders::All.count(5), 5);
        assert_eq!(Senders::One.count(5), 1);
    }
}

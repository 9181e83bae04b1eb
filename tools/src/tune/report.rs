//! The report: one item per setting with a verdict, printed as text (the same lines as
//! `tuning/cohort-tune.sh check`) or as one JSON object.

use serde::Serialize;

/// How an item stands against the recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "OK")]
    Ok,
    /// Works, but slower or less predictable than it should be.
    #[serde(rename = "WARN")]
    Warn,
    /// Cohort will lose packets or fail to start its fast path: the host is not ready.
    #[serde(rename = "FAIL")]
    Fail,
    /// Does not apply here (no such device, feature, tool or kernel file).
    #[serde(rename = "N/A")]
    NotApplicable,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::NotApplicable => "N/A",
        }
    }
}

/// One checked setting.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    pub item: String,
    pub area: &'static str,
    pub verdict: Verdict,
    pub current: String,
    pub recommended: String,
    /// The command that fixes it ("-" when nothing to do).
    pub fix: String,
}

/// Counts per verdict.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
    pub na: usize,
    /// No item FAILs.
    pub ready: bool,
}

/// The inputs the report was made for.
#[derive(Clone, Debug, Serialize)]
pub struct Inputs {
    pub iface: Option<String>,
    pub cpus: Vec<u32>,
    pub pollers: u32,
    pub ports: Vec<u16>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub inputs: Inputs,
    pub items: Vec<Item>,
    pub summary: Summary,
}

/// The report's fields never contain the column separator.
fn field(s: &str) -> String {
    s.replace('|', "/")
}

fn line(verdict: &str, item: &str, current: &str, recommended: &str, fix: &str) -> String {
    format!("{verdict:<4} | {item:<34} | {current:<24} | {recommended:<22} | {fix}\n")
}

pub fn join_commas<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Report {
    pub fn new(inputs: Inputs, items: Vec<Item>) -> Report {
        let mut summary = Summary::default();
        for it in &items {
            match it.verdict {
                Verdict::Ok => summary.ok += 1,
                Verdict::Warn => summary.warn += 1,
                Verdict::Fail => summary.fail += 1,
                Verdict::NotApplicable => summary.na += 1,
            }
        }
        summary.ready = summary.fail == 0;
        Report {
            inputs,
            items,
            summary,
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = format!(
            "# cohort tune check: iface={} cpus={} pollers={} ports={}\n",
            self.inputs.iface.as_deref().unwrap_or("none"),
            join_commas(&self.inputs.cpus),
            self.inputs.pollers,
            join_commas(&self.inputs.ports)
        );
        out.push_str(&line("VERDICT", "ITEM", "CURRENT", "RECOMMENDED", "FIX"));
        for it in &self.items {
            out.push_str(&line(
                it.verdict.label(),
                &it.item,
                &field(&it.current),
                &field(&it.recommended),
                &field(&it.fix),
            ));
        }
        let s = &self.summary;
        let tail = if s.ready {
            "READY: no item FAILs".to_string()
        } else {
            format!("NOT READY: {} item(s) FAIL", s.fail)
        };
        out.push_str(&format!(
            "SUMMARY | {} OK, {} WARN, {} FAIL, {} N/A | {tail}\n",
            s.ok, s.warn, s.fail, s.na
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(verdict: Verdict) -> Item {
        Item {
            item: "x".into(),
            area: "sysctl",
            verdict,
            current: "a|b".into(),
            recommended: "c".into(),
            fix: "-".into(),
        }
    }

    #[test]
    fn one_fail_makes_the_host_not_ready_and_pipes_never_break_columns() {
        let inputs = Inputs {
            iface: None,
            cpus: vec![1],
            pollers: 1,
            ports: vec![],
        };
        let r = Report::new(inputs, vec![item(Verdict::Ok), item(Verdict::Fail)]);
        assert!(!r.summary.ready);
        let text = r.to_text();
        assert!(text.contains("| a/b "), "{text}");
        assert!(
            text.ends_with("SUMMARY | 1 OK, 0 WARN, 1 FAIL, 0 N/A | NOT READY: 1 item(s) FAIL\n")
        );
    }
}

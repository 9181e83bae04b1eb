//! Shared result output of every benchmark scenario: one [`ResultRecord`] per measured point,
//! printed as a table on stdout and appended as JSON lines to a file.
//!
//! Field names follow DESIGN §8 (`scenario, transport, order, size, members, senders,
//! msgs_per_s, mb_per_s, p50_us, p99_us, p999_us, ceiling_msgs_per_s, ratio`); scenarios add
//! their own fields after those.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One measured point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultRecord {
    pub scenario: String,
    /// The path: "loopback" (kernel UDP on 127.0.0.1) or "memory" (in-process).
    pub transport: String,
    /// Ordering asked for; "none" for the raw ceiling.
    pub order: String,
    /// Message payload bytes.
    pub size: usize,
    pub members: usize,
    pub senders: usize,
    pub msgs_per_s: f64,
    /// Payload megabytes (10^6 B) per second.
    pub mb_per_s: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub ceiling_msgs_per_s: f64,
    pub ratio: f64,
    /// Scenario-specific fields (e.g. driver, gso, datagrams_per_s), flattened into the line.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Appends JSON lines to a file (created if missing).
pub struct JsonLines {
    out: BufWriter<File>,
}

impl JsonLines {
    pub fn append(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonLines {
            out: BufWriter::new(file),
        })
    }

    pub fn write(&mut self, record: &ResultRecord) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// Reads every record of a JSON lines file; a line that is not a record is an error naming
/// its line number.
pub fn read_json_lines(path: &Path) -> anyhow::Result<Vec<ResultRecord>> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a result record", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// A progress display on stderr: `[k/n] what (elapsed)`, rewritten in place on a terminal,
/// one line each otherwise.
pub struct Progress {
    total: usize,
    done: usize,
    start: std::time::Instant,
    terminal: bool,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        use std::io::IsTerminal;
        Progress {
            total,
            done: 0,
            start: std::time::Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Announces the next point.
    pub fn next(&mut self, what: &str) {
        self.done += 1;
        let line = format!(
            "[{:>3}/{}] {:>5.1} s  {what}",
            self.done,
            self.total,
            self.start.elapsed().as_secs_f64()
        );
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    /// Ends the display (a newline on a terminal).
    pub fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// A plain text table: a header row and right-aligned columns sized to their content.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                width[i] = width[i].max(cell.len());
            }
        }
        let mut s = String::new();
        let line = |cells: &[String], s: &mut String| {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .take(columns)
                .map(|(i, c)| format!("{c:>w$}", w = width[i]))
                .collect();
            s.push_str(&format!("| {} |\n", parts.join(" | ")));
        };
        line(&self.header, &mut s);
        let rule: Vec<String> = width
            .iter()
            .map(|w| format!("{}:", "-".repeat(w + 1)))
            .collect();
        s.push_str(&format!("|{}|\n", rule.join("|")));
        for row in &self.rows {
            line(row, &mut s);
        }
        s
    }
}

/// Formats a rate with thousands separators (e.g. `1,234,567`).
pub fn thousands(value: f64) -> String {
    let digits = (value.round() as u64).to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or("?"))
        .collect();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_as_markdown() {
        let mut t = Table::new(&["driver", "msgs/s"]);
        t.row(vec!["io_uring".into(), thousands(1234567.4)]);
        let s = t.render();
        assert_eq!(
            s,
            "|   driver |    msgs/s |\n|---------:|----------:|\n| io_uring | 1,234,567 |\n"
        );
    }

    #[test]
    fn record_serialises_design_fields_then_extras() {
        let mut extra = serde_json::Map::new();
        extra.insert("driver".into(), "io_uring".into());
        let r = ResultRecord {
            scenario: "ceiling".into(),
            transport: "loopback".into(),
            order: "none".into(),
            size: 16,
            members: 2,
            senders: 1,
            msgs_per_s: 10.0,
            mb_per_s: 0.00016,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            ceiling_msgs_per_s: 10.0,
            ratio: 1.0,
            extra,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.starts_with("{\"scenario\":\"ceiling\",\"transport\":\"loopback\""));
        assert!(line.contains("\"p50_us\":null"));
        assert!(line.ends_with("\"ratio\":1.0,\"driver\":\"io_uring\"}"));
    }
}

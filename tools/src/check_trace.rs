//! `cohort check-trace DIR`: checks a directory of trace files (one `*.jsonl` per member,
//! DESIGN §1) against properties 1–10 with the engine's checker.
//!
//! Prints `check-trace: members=M sends=S deliveries=D violations=V`, then one line per stored
//! violation (`property (n): detail`), and, when some were not stored, how many per property.
//! Exit code: 0 clean, 1 violations, 2 unreadable input (the error names the file and line).

use cohort::checker::{check, CheckConfig, Report};
use cohort::trace::read_trace_dir;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Directory holding the members' `*.jsonl` trace files.
    pub dir: PathBuf,
    /// Also demand completeness: every member delivers every message sent in every view it
    /// installed (for fault-free runs whose traces end after traffic settled).
    #[arg(long, conflicts_with = "survivors_complete")]
    pub complete: bool,
    /// Demand completeness among survivors only (runs with failures): the members in the
    /// group's latest view delivered every message a survivor sent in views they installed.
    #[arg(long)]
    pub survivors_complete: bool,
    /// Members killed without warning (kill -9), by member id: their traces may be cut short,
    /// so their messages that others delivered are taken as sent.
    #[arg(long, value_delimiter = ',', value_name = "ID,..")]
    pub crashed: Vec<String>,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

const EXIT_VIOLATIONS: u8 = 1;
const EXIT_UNREADABLE: u8 = 2;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let traces = match read_trace_dir(&args.dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cohort check-trace: {e}");
            return Ok(ExitCode::from(EXIT_UNREADABLE));
        }
    };
    if traces.is_empty() {
        eprintln!(
            "cohort check-trace: no *.jsonl trace files in {}",
            args.dir.display()
        );
        return Ok(ExitCode::from(EXIT_UNREADABLE));
    }
    let report = check(
        &traces,
        &CheckConfig {
            require_complete: args.complete,
            require_survivor_complete: args.survivors_complete,
            crashed: args.crashed.clone(),
        },
    );
    if args.json {
        println!("{}", to_json(&report));
    } else {
        print!("{report}");
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_VIOLATIONS)
    })
}

fn to_json(report: &Report) -> serde_json::Value {
    let counts: serde_json::Map<String, serde_json::Value> = report
        .violation_counts
        .iter()
        .map(|(p, &c)| (p.name().to_owned(), c.into()))
        .collect();
    serde_json::json!({
        "members": report.members,
        "groups": report.groups,
        "sends": report.sends,
        "deliveries": report.deliveries,
        "violation_count": report.violation_count(),
        "violation_counts": counts,
        "violations": report.violations.iter().map(|v| serde_json::json!({
            "property": v.property.name(),
            "number": v.property.number(),
            "detail": v.detail,
        })).collect::<Vec<_>>(),
    })
}

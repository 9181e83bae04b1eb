//! `cohort-bench`: Cohort's benchmark harness.
//!
//! * `cohort-bench --quick` — a representative subset (under a minute) with ratios and the
//!   issue-8 targets;
//! * `cohort-bench all --json FILE --plots DIR` — the full matrix, JSON lines and plots;
//! * `cohort-bench inproc|loopback|latency|netns ...` — one scenario with its own axes
//!   (`netns` needs root: 3 namespace hosts on a bridge, `cohort member` processes);
//! * `cohort-bench ceiling ...` — the raw ceiling alone (1 sender, 1 receiver, per driver);
//! * `cohort-bench plot --json FILE --out DIR` — plots from an earlier run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand};
use cohort_bench::axes::{BenchOrder, Senders};
use cohort_bench::ceiling::{self, DriverName, GsoMode};
use cohort_bench::group_ceiling::Addressing;
use cohort_bench::latency::IdleName;
use cohort_bench::loopback::{OwnMessages, SendApi, Threading};
use cohort_bench::netns::NetnsPlan;
use cohort_bench::suite::{self, InprocPlan, LatencyPlan, LoopbackPlan, Outputs, Plan};

/// Longest run accepted for one point, in seconds.
const POINT_SECONDS_MAX: f64 = 600.0;
/// Most messages accepted for one inproc point.
const INPROC_MESSAGES_MAX: u64 = 100_000_000;

#[derive(Parser)]
#[command(
    name = "cohort-bench",
    version,
    about = "Cohort benchmark harness: inproc, loopback, latency and netns scenarios against the raw ceiling",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Run the representative subset (under a minute) and print ratios and targets.
    #[arg(long)]
    quick: bool,
    /// With --quick: append JSON lines to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// With --quick: write plots (SVG and PNG) into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args, Debug, Clone)]
struct OutputArgs {
    /// Append one JSON line per result to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write plots (SVG and PNG) into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
}

impl OutputArgs {
    fn outputs(&self) -> Outputs {
        Outputs {
            json: self.json.clone(),
            plots: self.plots.clone(),
        }
    }
}

#[derive(clap::Args, Debug)]
struct AllArgs {
    /// Runs per loopback path (its ceiling, then every order, each time); each point reports
    /// its median-ratio run with the range. The other scenarios run once.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The representative subset (same as --quick).
    Quick(OutputArgs),
    /// The full matrix of every scenario.
    All(AllArgs),
    /// Pure protocol cost: N sans-IO members in one thread.
    Inproc(InprocArgs),
    /// Member nodes over UDP on 127.0.0.1, against the raw group ceiling of each path.
    Loopback(LoopbackArgs),
    /// One-way latency at fixed offered rates (2 members, loopback), each after the raw floor
    /// of the same path (the same schedule over plain UDP, no protocol).
    Latency(LatencyArgs),
    /// 3 hosts in network namespaces on a bridge (root): `cohort member` processes, IP
    /// multicast, with and without random loss, against the raw ceiling of the same path.
    Netns(NetnsArgs),
    /// Raw ceiling: packed messages over plain UDP (or memory), no protocol, per driver and size.
    Ceiling(ceiling::Args),
    /// Plots from a JSON lines file of an earlier run.
    Plot(PlotArgs),
}

#[derive(clap::Args, Debug)]
struct InprocArgs {
    /// Group sizes, comma-separated (1..=64).
    #[arg(long, value_delimiter = ',', default_value = "2,3,8,16,32,64")]
    members: Vec<usize>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "fifo,causal,total,safe-total"
    )]
    orders: Vec<BenchOrder>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "one")]
    senders: Vec<Senders>,
    /// Payload sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    sizes: Vec<usize>,
    /// Messages per point (split over the senders).
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// Upper bound of each point, in seconds.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(clap::Args, Debug)]
struct LoopbackArgs {
    #[arg(long, value_enum, value_delimiter = ',', default_value = "uring,mmsg")]
    drivers: Vec<DriverName>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "fanout,multicast"
    )]
    addressing: Vec<Addressing>,
    /// Group sizes, comma-separated (2..=16).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    members: Vec<usize>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "one,all")]
    senders: Vec<Senders>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "fifo,causal,total,safe-total"
    )]
    orders: Vec<BenchOrder>,
    /// Payload sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024,8192")]
    sizes: Vec<usize>,
    /// Send period of each point, in seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Run time of each raw ceiling, in seconds.
    #[arg(long, default_value_t = 1.0)]
    ceiling_seconds: f64,
    /// Idle strategy of the nodes' pollers.
    #[arg(long, value_enum, default_value = "backoff")]
    idle: IdleName,
    /// Who runs the nodes' turns: a poller thread per node, or each member's own thread
    /// (invoker mode).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "poller,invoker"
    )]
    threading: Vec<Threading>,
    /// Messages per send call: 1 sends each with `--api`, more sends bursts of that many
    /// with `Group::send_batch` (one stage lock per burst); 1..=4096.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// How single sends are made: `publisher` (the group's exclusive `Publisher`, no lock:
    /// the default) or `handle` (`Group::send`, the locked stage any thread may share).
    #[arg(long, value_enum, default_value = "publisher")]
    api: SendApi,
    /// Whether a sender's handler gets its own messages: `discard` (the default: the
    /// handlers count only the others') or `deliver` (one upcall per own message more).
    #[arg(long, value_enum, default_value = "discard")]
    own_messages: OwnMessages,
    /// UDP GSO+GRO on the nodes (`NodeBuilder::gso`, `gro`) and in each path's ceiling: `on`
    /// (the default, what a node asks for), `off`, or `both` (each path twice; labels of the
    /// off runs end in `/nogso`).
    #[arg(long, value_enum, default_value = "on")]
    gso: GsoMode,
    /// Runs of each path (its ceiling, then every order); each point reports the run with the
    /// median ratio, with the range beside it (JSON `ratio_min`, `ratio_max`).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(clap::Args, Debug)]
struct LatencyArgs {
    #[arg(long, value_enum, value_delimiter = ',', default_value = "uring")]
    drivers: Vec<DriverName>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "busy-spin,backoff"
    )]
    idle: Vec<IdleName>,
    /// Offered rates in messages per second, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    rates: Vec<u64>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fifo")]
    orders: Vec<BenchOrder>,
    /// Who runs the nodes' turns: poller threads, or the members' own threads (invoker
    /// mode; measured once, spinning, under the busy-spin label).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "poller,invoker"
    )]
    threading: Vec<Threading>,
    /// Schedule length of each point, in seconds.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(clap::Args, Debug)]
struct NetnsArgs {
    #[arg(long, value_enum, default_value = "uring")]
    driver: DriverName,
    /// Preferred addressing (multicast falls back to fan-out, saying so, when it fails).
    #[arg(long, value_enum, default_value = "multicast")]
    addressing: Addressing,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "one,all")]
    senders: Vec<Senders>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fifo,total")]
    orders: Vec<BenchOrder>,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages per point, split over the senders.
    #[arg(long, default_value_t = 400_000)]
    messages: u64,
    /// Random loss rates in percent, comma-separated (0 = loss-free; the loss ratio needs 0).
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    loss: Vec<u8>,
    /// Bound of each point (the members' --duration), in seconds.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Run time of each raw ceiling, in seconds.
    #[arg(long, default_value_t = 1.0)]
    ceiling_seconds: f64,
    /// Runs per point (loss-free and lossy alternating); the median steady rate is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// The `cohort` binary [default: next to cohort-bench, or $COHORT_BIN].
    #[arg(long)]
    cohort: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(clap::Args, Debug)]
struct PlotArgs {
    /// JSON lines written by an earlier run.
    #[arg(long)]
    json: PathBuf,
    /// Directory for the plots.
    #[arg(long)]
    out: PathBuf,
}

fn check_seconds(name: &str, s: f64) -> anyhow::Result<()> {
    if !(s > 0.0 && s <= POINT_SECONDS_MAX) {
        bail!("--{name} must be in (0, {POINT_SECONDS_MAX}], got {s}");
    }
    Ok(())
}

fn check_nonempty<T>(name: &str, v: &[T]) -> anyhow::Result<()> {
    if v.is_empty() {
        bail!("--{name} needs at least one value");
    }
    Ok(())
}

fn check_sizes(sizes: &[usize]) -> anyhow::Result<()> {
    check_nonempty("sizes", sizes)?;
    if let Some(s) = sizes.iter().find(|&&s| s == 0 || s > 65_000) {
        bail!("--sizes: {s} B is out of range 1..=65000");
    }
    Ok(())
}

fn inproc_plan(a: &InprocArgs) -> anyhow::Result<Plan> {
    check_seconds("seconds", a.seconds)?;
    check_sizes(&a.sizes)?;
    check_nonempty("members", &a.members)?;
    check_nonempty("orders", &a.orders)?;
    check_nonempty("senders", &a.senders)?;
    let max = cohort::protocol::MEMBERS_MAX;
    if let Some(m) = a.members.iter().find(|&&m| m == 0 || m > max) {
        bail!("--members: {m} is out of range 1..={max}");
    }
    if a.messages == 0 || a.messages > INPROC_MESSAGES_MAX {
        bail!("--messages must be in 1..={INPROC_MESSAGES_MAX}");
    }
    Ok(Plan {
        inproc: Some(InprocPlan {
            members: a.members.clone(),
            orders: a.orders.clone(),
            senders: a.senders.clone(),
            sizes: a.sizes.clone(),
            size_sweep: vec![],
            size_sweep_members: 3,
            messages: a.messages,
            seconds: a.seconds,
            ceiling_seconds: 0.2,
        }),
        ..Plan::default()
    })
}

fn check_repeat(repeat: usize) -> anyhow::Result<()> {
    if repeat == 0 || repeat > cohort_bench::ceiling::REPEAT_MAX {
        bail!(
            "--repeat must be in 1..={}",
            cohort_bench::ceiling::REPEAT_MAX
        );
    }
    Ok(())
}

fn loopback_plan(a: &LoopbackArgs) -> anyhow::Result<Plan> {
    check_seconds("seconds", a.seconds)?;
    check_seconds("ceiling-seconds", a.ceiling_seconds)?;
    check_sizes(&a.sizes)?;
    check_nonempty("drivers", &a.drivers)?;
    check_nonempty("addressing", &a.addressing)?;
    check_nonempty("members", &a.members)?;
    check_nonempty("orders", &a.orders)?;
    check_nonempty("senders", &a.senders)?;
    check_nonempty("threading", &a.threading)?;
    if a.batch == 0 || a.batch > 4096 {
        bail!("--batch: {} is out of range 1..=4096", a.batch);
    }
    check_repeat(a.repeat)?;
    if a.drivers.contains(&DriverName::Memory) {
        bail!("--drivers: loopback runs the kernel drivers (uring, mmsg); use `inproc` for memory");
    }
    let max = cohort_bench::group_ceiling::MEMBERS_MAX.min(cohort_bench::loopback::MEMBERS_MAX);
    if let Some(m) = a.members.iter().find(|&&m| m < 2 || m > max) {
        bail!("--members: {m} is out of range 2..={max}");
    }
    Ok(Plan {
        loopback: vec![LoopbackPlan {
            drivers: a.drivers.clone(),
            addressing: a.addressing.clone(),
            members: a.members.clone(),
            senders: a.senders.clone(),
            orders: a.orders.clone(),
            sizes: a.sizes.clone(),
            seconds: a.seconds,
            ceiling_seconds: a.ceiling_seconds,
            idle: a.idle,
            threading: a.threading.clone(),
            batch: a.batch,
            api: a.api,
            own: a.own_messages,
            gso: a.gso,
            repeat: a.repeat,
        }],
        ..Plan::default()
    })
}

fn latency_plan(a: &LatencyArgs) -> anyhow::Result<Plan> {
    check_seconds("seconds", a.seconds)?;
    check_nonempty("drivers", &a.drivers)?;
    check_nonempty("idle", &a.idle)?;
    check_nonempty("rates", &a.rates)?;
    check_nonempty("orders", &a.orders)?;
    check_nonempty("threading", &a.threading)?;
    if a.drivers.contains(&DriverName::Memory) {
        bail!("--drivers: latency runs the kernel drivers (uring, mmsg)");
    }
    if let Some(r) = a.rates.iter().find(|&&r| r == 0 || r > 10_000_000) {
        bail!("--rates: {r} msg/s is out of range 1..=10000000");
    }
    Ok(Plan {
        latency: Some(LatencyPlan {
            drivers: a.drivers.clone(),
            idles: a.idle.clone(),
            rates: a.rates.clone(),
            orders: a.orders.clone(),
            seconds: a.seconds,
            threading: a.threading.clone(),
        }),
        ..Plan::default()
    })
}

fn netns_plan(a: &NetnsArgs) -> anyhow::Result<Plan> {
    check_seconds("seconds", a.seconds)?;
    check_seconds("ceiling-seconds", a.ceiling_seconds)?;
    check_sizes(std::slice::from_ref(&a.size))?;
    check_nonempty("senders", &a.senders)?;
    check_nonempty("orders", &a.orders)?;
    check_nonempty("loss", &a.loss)?;
    if a.driver == DriverName::Memory {
        bail!("--driver: netns runs the kernel drivers (uring, mmsg)");
    }
    check_repeat(a.repeat)?;
    if let Some(l) = a.loss.iter().find(|&&l| l > 100) {
        bail!("--loss: {l} is not a percentage (0..=100)");
    }
    let max = cohort_bench::netns::MESSAGES_MAX;
    if a.messages == 0 || a.messages > max {
        bail!("--messages must be in 1..={max}");
    }
    Ok(Plan {
        netns: Some(NetnsPlan {
            driver: a.driver,
            addressing: a.addressing,
            senders: a.senders.clone(),
            orders: a.orders.clone(),
            size: a.size,
            messages: a.messages,
            loss_percents: a.loss.clone(),
            seconds_max: a.seconds,
            repeat: a.repeat,
            ceiling_seconds: a.ceiling_seconds,
            cohort: a.cohort.clone(),
        }),
        ..Plan::default()
    })
}

fn run_and_print(plan: &Plan, outputs: &Outputs) -> anyhow::Result<ExitCode> {
    let start = std::time::Instant::now();
    let outcome = suite::run_plan(plan, outputs)?;
    suite::print_outcome(&outcome);
    if let Some(j) = &outputs.json {
        println!("\nJSON lines appended to {}", j.display());
    }
    println!(
        "\n{} results in {:.1} s{}",
        outcome.records.len(),
        start.elapsed().as_secs_f64(),
        match (
            !plan.loopback.is_empty() || plan.latency.is_some(),
            plan.netns.is_some(),
        ) {
            (true, true) => " (loopback and latency members are threads with one Node each, in this process; netns members are `cohort member` processes)",
            (true, false) => " (loopback and latency members are threads with one Node each, in this process)",
            (false, true) => " (netns members are `cohort member` processes, one per namespace)",
            (false, false) => "",
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None if cli.quick => run_and_print(
            &suite::quick(),
            &Outputs {
                json: cli.json,
                plots: cli.plots,
            },
        ),
        None => bail!(
            "nothing to run: pass --quick, or a subcommand (quick, all, inproc, loopback, latency, netns, ceiling, plot); see --help"
        ),
        Some(Command::Quick(o)) => run_and_print(&suite::quick(), &o.outputs()),
        Some(Command::All(a)) => {
            check_repeat(a.repeat)?;
            run_and_print(&suite::full_repeated(a.repeat), &a.out.outputs())
        }
        Some(Command::Inproc(a)) => run_and_print(&inproc_plan(&a)?, &a.out.outputs()),
        Some(Command::Loopback(a)) => run_and_print(&loopback_plan(&a)?, &a.out.outputs()),
        Some(Command::Latency(a)) => run_and_print(&latency_plan(&a)?, &a.out.outputs()),
        Some(Command::Netns(a)) => run_and_print(&netns_plan(&a)?, &a.out.outputs()),
        Some(Command::Ceiling(args)) => ceiling::run(args),
        Some(Command::Plot(a)) => {
            let report = suite::plot_file(&a.json, &a.out)?;
            for f in &report.files {
                println!("{}", f.display());
            }
            if report.without_text {
                println!("(no TrueType font found: the plots are drawn without text)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cohort-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

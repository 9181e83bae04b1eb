//! Plots of the results, each as SVG and PNG (plotters):
//!
//! * `throughput-<transport>-s<senders>-m<members>`: loopback msgs/s vs payload, one line per
//!   order, and the raw ceiling of the same path as a dashed line;
//! * `latency`: one-way latency percentiles (p50, p99, p99.9; the max is in the table) vs
//!   offered rate, per threading and idle strategy (`poller busyspin p99`), and the raw
//!   floor's p50 and p99 (plain UDP, no protocol) as series of their own (`raw <idle> p50`);
//! * `cpu-per-msg`: inproc receiver CPU ns per delivered message vs group size, per order.
//!
//! Text is laid out (both backends) with a TrueType font read at run time from [`FONT_PATHS`]
//! (DejaVu Sans on Debian); with none of them present the plots are drawn without text and
//! [`PlotReport::without_text`] says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::latency::RAW_LABEL;
use crate::output::ResultRecord;

/// Fonts tried for PNG text, in order.
pub const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];
/// Pixel size of every plot.
pub const PLOT_WIDTH_PX: u32 = 900;
pub const PLOT_HEIGHT_PX: u32 = 560;

/// What [`write_all`] wrote.
#[derive(Debug, Default)]
pub struct PlotReport {
    pub files: Vec<PathBuf>,
    /// No TrueType font was found: the plots have lines and points but no text.
    pub without_text: bool,
}

static FONT_LOADED: OnceLock<bool> = OnceLock::new();

/// Registers the first font of [`FONT_PATHS`] that loads; true if one did.
fn load_font() -> bool {
    *FONT_LOADED.get_or_init(|| {
        for path in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// One line of a chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

/// A chart with log axes (x optionally linear).
struct Chart<'a> {
    title: String,
    x_label: &'a str,
    y_label: &'a str,
    log_x: bool,
    series: Vec<Series>,
}

const COLORS: [RGBColor; 13] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(80, 80, 80),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
];

fn bounds(series: &[Series], pick: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for p in series.iter().flat_map(|s| s.points.iter()) {
        let v = pick(p);
        if v > 0.0 && v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    if hi <= lo {
        hi = lo * 10.0;
    }
    (lo, hi)
}

fn draw<DB: DrawingBackend>(
    area: DrawingArea<DB, Shift>,
    chart: &Chart<'_>,
    text: bool,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (x0, x1) = bounds(&chart.series, |p| p.0);
    let (y0, y1) = bounds(&chart.series, |p| p.1);
    let (y0, y1) = (y0 / 1.5, y1 * 1.5);
    let mut builder = ChartBuilder::on(&area);
    builder.margin(16);
    if text {
        builder
            .caption(&chart.title, ("sans-serif", 20))
            .x_label_area_size(44)
            .y_label_area_size(80);
    } else {
        builder.x_label_area_size(10).y_label_area_size(10);
    }
    macro_rules! body {
        ($ctx:expr) => {{
            let mut ctx = $ctx;
            let mut mesh = ctx.configure_mesh();
            if text {
                mesh.x_desc(chart.x_label).y_desc(chart.y_label);
            } else {
                mesh.disable_x_mesh()
                    .disable_y_mesh()
                    .x_labels(0)
                    .y_labels(0);
            }
            mesh.draw().map_err(|e| anyhow::anyhow!("{e}"))?;
            for (i, s) in chart.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let style = ShapeStyle::from(&color).stroke_width(2);
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.0 > 0.0 && p.1 > 0.0)
                    .collect();
                let drawn = if s.dashed {
                    ctx.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                } else {
                    ctx.draw_series(LineSeries::new(pts.clone(), style))
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                };
                if text {
                    drawn.label(s.name.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                }
                ctx.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            if text {
                ctx.configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::LowerLeft)
                    .draw()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }};
    }
    if chart.log_x {
        body!(builder
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(|e| anyhow::anyhow!("{e}"))?);
    } else {
        let pad = (x1 - x0) * 0.05;
        body!(builder
            .build_cartesian_2d((x0 - pad)..(x1 + pad), (y0..y1).log_scale())
            .map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    area.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn write_chart(
    dir: &Path,
    stem: &str,
    chart: &Chart<'_>,
    report: &mut PlotReport,
) -> anyhow::Result<()> {
    // plotters lays text out with the registered font for both backends.
    let text = load_font();
    report.without_text |= !text;
    let svg = dir.join(format!("{stem}.svg"));
    draw(
        SVGBackend::new(&svg, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area(),
        chart,
        text,
    )
    .with_context(|| format!("drawing {}", svg.display()))?;
    report.files.push(svg);
    let png = dir.join(format!("{stem}.png"));
    draw(
        BitMapBackend::new(&png, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area(),
        chart,
        text,
    )
    .with_context(|| format!("drawing {}", png.display()))?;
    report.files.push(png);
    Ok(())
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Writes every plot the records allow into `dir` (created if missing).
pub fn write_all(records: &[ResultRecord], dir: &Path) -> anyhow::Result<PlotReport> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut report = PlotReport::default();

    // Throughput vs payload, per loopback path (transport, senders, members).
    let mut paths: BTreeMap<(String, usize, usize), Vec<&ResultRecord>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.scenario == "loopback") {
        paths
            .entry((r.transport.clone(), r.senders, r.members))
            .or_default()
            .push(r);
    }
    for ((transport, senders, members), rs) in &paths {
        let mut by_order: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let mut ceiling: BTreeMap<usize, f64> = BTreeMap::new();
        for r in rs {
            by_order
                .entry(r.order.clone())
                .or_default()
                .push((r.size as f64, r.msgs_per_s));
            ceiling.insert(r.size, r.ceiling_msgs_per_s);
        }
        let mut series: Vec<Series> = by_order
            .into_iter()
            .map(|(name, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    name,
                    points,
                    dashed: false,
                }
            })
            .collect();
        series.push(Series {
            name: "raw ceiling".into(),
            points: ceiling.into_iter().map(|(s, c)| (s as f64, c)).collect(),
            dashed: true,
        });
        let chart = Chart {
            title: format!(
                "loopback {transport}, {members} members, {senders} sender(s): msgs/s vs payload"
            ),
            x_label: "payload bytes",
            y_label: "delivered msgs/s (group rate)",
            log_x: true,
            series,
        };
        let stem = format!("throughput-{}-s{senders}-m{members}", file_safe(transport));
        write_chart(dir, &stem, &chart, &mut report)?;
    }

    // Latency percentiles vs offered rate.
    let lat: Vec<&ResultRecord> = records.iter().filter(|r| r.scenario == "latency").collect();
    if !lat.is_empty() {
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in &lat {
            let idle = r
                .extra
                .get("idle")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string();
            let rate = r.ceiling_msgs_per_s;
            let threading = r
                .extra
                .get("threading")
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            let raw = threading == RAW_LABEL;
            // The floor only as a reference (p50, p99), and no max for Cohort's rows (it is in
            // the table): a series per threading and idle strategy keeps poller and invoker
            // rows apart, and all of it would be more lines than a reader can follow.
            let percentiles = if raw {
                &[("p50", r.p50_us), ("p99", r.p99_us)][..]
            } else {
                &[("p50", r.p50_us), ("p99", r.p99_us), ("p99.9", r.p999_us)][..]
            };
            for &(name, v) in percentiles {
                if let Some(v) = v {
                    let key = if raw {
                        format!("{RAW_LABEL} {idle} {name}")
                    } else {
                        format!("{threading} {idle} {name}")
                    };
                    series.entry(key).or_default().push((rate, v));
                }
            }
        }
        let series = series
            .into_iter()
            .map(|(name, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let dashed = name.contains("backoff");
                Series {
                    name,
                    points,
                    dashed,
                }
            })
            .collect();
        let chart = Chart {
            title: "one-way latency vs offered rate (2 members, loopback)".into(),
            x_label: "offered msgs/s",
            y_label: "latency µs",
            log_x: true,
            series,
        };
        write_chart(dir, "latency", &chart, &mut report)?;
    }

    // CPU per delivered message vs group size.
    let cpu: Vec<&ResultRecord> = records
        .iter()
        .filter(|r| r.scenario == "inproc" && r.senders == 1)
        .collect();
    if !cpu.is_empty() {
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in &cpu {
            if let Some(ns) = r.extra.get("receiver_ns_per_msg").and_then(|v| v.as_f64()) {
                series
                    .entry(format!("{} {} B", r.order, r.size))
                    .or_default()
                    .push((r.members as f64, ns));
            }
        }
        // A payload measured at one group size only (the size sweep) is no line: left out.
        let series = series
            .into_iter()
            .filter(|(_, points)| points.len() >= 2)
            .map(|(name, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    name,
                    points,
                    dashed: false,
                }
            })
            .collect();
        let chart = Chart {
            title: "inproc: receiver CPU per delivered message vs group size (1 sender)".into(),
            x_label: "members",
            y_label: "ns per delivered message",
            log_x: false,
            series,
        };
        write_chart(dir, "cpu-per-msg", &chart, &mut report)?;
    }
    Ok(report)
}

//! The figure of `bench/sweep.sh`: latency against achieved throughput, the
//! form of the Electrode paper's figures. One panel per replica count
//! (columns) and CPU placement (rows), one colour per configuration (and
//! application); p50 solid with a marker per offered rate, p99 dashed;
//! latency on a log axis, since an overloaded point's p99 is orders of
//! magnitude above an idle one's p50.
//!
//!     cargo run --release --example plot_sweep -- bench/results/sweep-STAMP.json out.svg
//!
//! Reads the sweep's JSON: `runs` with `kind` "open" are the open-loop
//! points (`replicas`, `placement`, `configuration`, `app`, and the client's own report
//! under `client`); every other run (the closed-loop saturation runs) is
//! not drawn. Writes SVG through plotters' SVG backend, whose text is SVG
//! `<text>`, so no font files are needed.

use std::path::Path;

use anyhow::{bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

/// One open-loop run as drawn.
#[derive(Clone, Debug, PartialEq)]
struct Point {
    offered_ops_per_s: f64,
    throughput_ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// One configuration (and application) in one panel, by offered rate.
#[derive(Debug, PartialEq)]
struct Line {
    label: String,
    points: Vec<Point>,
}

/// All lines of one replica count in one placement.
#[derive(Debug, PartialEq)]
struct Panel {
    replicas: u64,
    placement: String,
    lines: Vec<Line>,
}

#[derive(Debug, PartialEq)]
struct Series {
    /// By placement (in the order they first appear), then replica count.
    panels: Vec<Panel>,
    /// Open-loop runs with no measured operation (no latency to draw).
    dropped: usize,
}

fn field<'a>(run: &'a Value, index: usize, path: &[&str]) -> anyhow::Result<&'a Value> {
    let mut value = run;
    for key in path {
        value = value.get(key).with_context(|| format!("runs[{index}] has no {}", path.join(".")))?;
    }
    Ok(value)
}

fn number(run: &Value, index: usize, path: &[&str]) -> anyhow::Result<f64> {
    field(run, index, path)?
        .as_f64()
        .with_context(|| format!("runs[{index}].{} is not a number", path.join(".")))
}

fn text<'a>(run: &'a Value, index: usize, key: &str) -> anyhow::Result<&'a str> {
    field(run, index, &[key])?.as_str().with_context(|| format!("runs[{index}].{key} is not a string"))
}

/// The sweep's open-loop runs grouped for drawing: panels by placement (in
/// the order they first appear) and replica count (ascending), lines in
/// the order their configuration first appears in the file (the sweep's
/// configuration order, so colours match across panels), points by
/// offered rate.
fn series(doc: &Value) -> anyhow::Result<Series> {
    let runs = doc.get("runs").and_then(Value::as_array).context("no \"runs\" array: not a sweep result")?;
    let mut labels: Vec<String> = Vec::new();
    let mut placements: Vec<String> = Vec::new();
    let mut panels: Vec<Panel> = Vec::new();
    let mut dropped = 0;
    for (index, run) in runs.iter().enumerate() {
        if text(run, index, "kind")? != "open" {
            continue;
        }
        let replicas = field(run, index, &["replicas"])?
            .as_u64()
            .with_context(|| format!("runs[{index}].replicas is not a count"))?;
        let placement = text(run, index, "placement")?.to_string();
        if !placements.contains(&placement) {
            placements.push(placement.clone());
        }
        let label = format!("{}, {}", text(run, index, "configuration")?, text(run, index, "app")?);
        if !labels.contains(&label) {
            labels.push(label.clone());
        }
        if number(run, index, &["client", "ops"])? == 0.0 {
            dropped += 1;
            continue;
        }
        let point = Point {
            offered_ops_per_s: number(run, index, &["client", "offered_ops_per_s"])?,
            throughput_ops_per_s: number(run, index, &["client", "throughput_ops_per_s"])?,
            p50_us: number(run, index, &["client", "p50_us"])?,
            p99_us: number(run, index, &["client", "p99_us"])?,
        };
        let panel = match panels.iter().position(|p| p.replicas == replicas && p.placement == placement) {
            Some(i) => &mut panels[i],
            None => {
                panels.push(Panel { replicas, placement, lines: Vec::new() });
                panels.last_mut().expect("just pushed")
            }
        };
        match panel.lines.iter_mut().find(|l| l.label == label) {
            Some(line) => line.points.push(point),
            None => panel.lines.push(Line { label, points: vec![point] }),
        }
    }
    panels.sort_by_key(|p| (placements.iter().position(|x| *x == p.placement), p.replicas));
    for panel in &mut panels {
        panel.lines.sort_by_key(|l| labels.iter().position(|x| *x == l.label));
        for line in &mut panel.lines {
            line.points.sort_by(|a, b| a.offered_ops_per_s.total_cmp(&b.offered_ops_per_s));
        }
    }
    Ok(Series { panels, dropped })
}

/// Colour of the label's line, fixed by its first appearance in the file.
fn colour(labels: &[&str], label: &str) -> RGBColor {
    const COLOURS: [RGBColor; 6] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x8c, 0x56, 0x4b),
    ];
    COLOURS[labels.iter().position(|l| *l == label).unwrap_or(0) % COLOURS.len()]
}

impl Series {
    /// The grid: placements (rows, in order) and replica counts (columns).
    fn grid(&self) -> (Vec<&str>, Vec<u64>) {
        let (mut rows, mut columns): (Vec<&str>, Vec<u64>) = (Vec::new(), Vec::new());
        for panel in &self.panels {
            if !rows.contains(&panel.placement.as_str()) {
                rows.push(&panel.placement);
            }
            if !columns.contains(&panel.replicas) {
                columns.push(panel.replicas);
            }
        }
        columns.sort_unstable();
        (rows, columns)
    }
}

/// Draws the panels on a grid under the title lines (the first one large).
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &Series,
    titles: &[&str],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    if series.panels.is_empty() {
        bail!("no open-loop point with a measured operation to draw");
    }
    root.fill(&WHITE)?;
    let mut body = root.clone();
    for (i, line) in titles.iter().enumerate() {
        body = body.titled(line, ("sans-serif", if i == 0 { 18 } else { 13 }))?;
    }
    let (rows, columns) = series.grid();
    let cells = body.split_evenly((rows.len(), columns.len()));
    let mut labels: Vec<&str> = Vec::new();
    for line in series.panels.iter().flat_map(|p| &p.lines) {
        if !labels.contains(&line.label.as_str()) {
            labels.push(&line.label);
        }
    }
    for panel in &series.panels {
        let row = rows.iter().position(|r| *r == panel.placement).expect("a row per placement");
        let column = columns.iter().position(|c| *c == panel.replicas).expect("a column per count");
        let area = &cells[row * columns.len() + column];
        let points = || panel.lines.iter().flat_map(|l| &l.points);
        let x_max = points().map(|p| p.throughput_ops_per_s).fold(0.0, f64::max) * 1.08;
        let y_min = points().map(|p| p.p50_us.min(p.p99_us)).fold(f64::INFINITY, f64::min).max(1.0) * 0.7;
        let y_max = points().map(|p| p.p99_us.max(p.p50_us)).fold(0.0, f64::max).max(y_min * 2.0) * 1.4;
        let f = panel.replicas.saturating_sub(1) / 2;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} replicas (f = {f}), {} placement", panel.replicas, panel.placement),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max.max(1.0), (y_min..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("achieved ops/s")
            .y_desc("latency µs (p50 solid, p99 dashed)")
            .x_labels(6)
            .x_label_formatter(&|x| format!("{:.0}k", x / 1000.0))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for line in &panel.lines {
            let c = colour(&labels, &line.label);
            let p50: Vec<(f64, f64)> =
                line.points.iter().map(|p| (p.throughput_ops_per_s, p.p50_us)).collect();
            let p99: Vec<(f64, f64)> =
                line.points.iter().map(|p| (p.throughput_ops_per_s, p.p99_us)).collect();
            chart
                .draw_series(LineSeries::new(p50.clone(), c.stroke_width(2)))?
                .label(line.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(p50.iter().map(|&xy| Circle::new(xy, 3, c.filled())))?;
            chart.draw_series(DashedLineSeries::new(p99, 6, 4, c.stroke_width(1)))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

const TITLE: &str = "electrode: latency against achieved throughput, open loop";

/// The figure's title lines: TITLE, then the sweep's parameters and its
/// placements (those present in the file).
fn titles(doc: &Value) -> Vec<String> {
    let mut lines = vec![TITLE.to_string(), parameters(doc)];
    if let Some(placements) = doc.get("placements").and_then(Value::as_object) {
        let described: Vec<String> = placements
            .iter()
            .filter_map(|(name, what)| Some(format!("{name}: {}", what.as_str()?)))
            .collect();
        lines.push(described.join("; "));
    }
    lines
}

fn parameters(doc: &Value) -> String {
    let mut parts = vec![String::from("latency from each request's intended send time")];
    if let (Some(t), Some(s)) = (
        doc.get("client_threads").and_then(Value::as_u64),
        doc.get("client_sessions_per_thread").and_then(Value::as_u64),
    ) {
        parts.push(format!("client {t} threads x {s} sessions"));
    }
    if let Some(seconds) = doc.get("point_seconds").and_then(Value::as_f64) {
        parts.push(format!("{seconds} s per point"));
    }
    if let Some(stamp) = doc.get("stamp").and_then(Value::as_str) {
        parts.push(format!("sweep {stamp}"));
    }
    parts.join(", ")
}

fn plot(input: &Path, output: &Path) -> anyhow::Result<()> {
    let raw = std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let doc: Value = serde_json::from_str(&raw).with_context(|| format!("parsing {}", input.display()))?;
    let series = series(&doc).with_context(|| format!("reading the sweep in {}", input.display()))?;
    if series.dropped > 0 {
        eprintln!("plot_sweep: {} open-loop run(s) without a measured operation not drawn", series.dropped);
    }
    let (rows, columns) = series.grid();
    let size = (40 + 520 * columns.len() as u32, 80 + 440 * rows.len() as u32);
    let root = SVGBackend::new(output, size).into_drawing_area();
    let titles = titles(&doc);
    let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
    draw(&root, &series, &titles).with_context(|| format!("drawing {}", output.display()))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        bail!("usage: plot_sweep SWEEP.json OUT.svg");
    };
    plot(Path::new(input), Path::new(output))?;
    println!("written {output}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open(replicas: u64, configuration: &str, offered: f64, throughput: f64, p50: f64, p99: f64) -> Value {
        json!({"replicas": replicas, "configuration": configuration, "app": "null", "kind": "open",
               "placement": "shared", "percent": 0,
               "client": {"ops": 100, "offered_ops_per_s": offered, "throughput_ops_per_s": throughput,
                          "p50_us": p50, "p99_us": p99}})
    }

    fn split(mut run: Value) -> Value {
        run["placement"] = json!("split");
        run
    }

    fn point(offered: f64, throughput: f64, p50: f64, p99: f64) -> Point {
        Point { offered_ops_per_s: offered, throughput_ops_per_s: throughput, p50_us: p50, p99_us: p99 }
    }

    #[test]
    fn groups_by_placement_and_replicas_then_configuration_and_orders_points_by_offered_rate() {
        let mut idle = open(3, "all", 1000.0, 0.0, 0.0, 0.0);
        idle["client"]["ops"] = json!(0);
        let doc = json!({"runs": [
            {"replicas": 3, "configuration": "userspace", "app": "null", "kind": "saturation",
             "placement": "shared",
             "client": {"ops": 5, "throughput_ops_per_s": 9e4, "p50_us": 1.0, "p99_us": 2.0}},
            open(5, "userspace", 2000.0, 1990.0, 60.0, 90.0),
            split(open(3, "userspace", 500.0, 500.0, 20.0, 30.0)),
            open(3, "all", 3000.0, 2990.0, 40.0, 70.0),
            open(3, "userspace", 2000.0, 1995.0, 50.0, 80.0),
            open(3, "userspace", 1000.0, 998.0, 45.0, 75.0),
            idle,
            open(3, "all", 1000.0, 999.0, 30.0, 50.0),
        ]});
        let got = series(&doc).unwrap();
        let want = Series {
            panels: vec![
                Panel {
                    replicas: 3,
                    placement: "shared".into(),
                    lines: vec![
                        Line {
                            label: "userspace, null".into(),
                            points: vec![point(1000.0, 998.0, 45.0, 75.0), point(2000.0, 1995.0, 50.0, 80.0)],
                        },
                        Line {
                            label: "all, null".into(),
                            points: vec![point(1000.0, 999.0, 30.0, 50.0), point(3000.0, 2990.0, 40.0, 70.0)],
                        },
                    ],
                },
                Panel {
                    replicas: 5,
                    placement: "shared".into(),
                    lines: vec![Line {
                        label: "userspace, null".into(),
                        points: vec![point(2000.0, 1990.0, 60.0, 90.0)],
                    }],
                },
                Panel {
                    replicas: 3,
                    placement: "split".into(),
                    lines: vec![Line {
                        label: "userspace, null".into(),
                        points: vec![point(500.0, 500.0, 20.0, 30.0)],
                    }],
                },
            ],
            dropped: 1,
        };
        assert_eq!(got, want);
        assert_eq!(got.grid(), (vec!["shared", "split"], vec![3, 5]));
    }

    #[test]
    fn a_run_without_its_numbers_is_an_error_naming_the_field() {
        let mut run = open(3, "all", 1000.0, 999.0, 30.0, 50.0);
        run["client"].as_object_mut().unwrap().remove("p99_us");
        let err = series(&json!({"runs": [open(3, "all", 10.0, 10.0, 1.0, 2.0), run]})).unwrap_err();
        assert!(format!("{err:#}").contains("runs[1] has no client.p99_us"), "{err:#}");
        let err = series(&json!({"points": []})).unwrap_err();
        assert!(format!("{err:#}").contains("not a sweep result"), "{err:#}");
        let mut run = open(3, "all", 1000.0, 999.0, 30.0, 50.0);
        run["replicas"] = json!("three");
        assert!(series(&json!({"runs": [run]})).is_err());
        let mut run = open(3, "all", 1000.0, 999.0, 30.0, 50.0);
        run.as_object_mut().unwrap().remove("placement");
        let err = series(&json!({"runs": [run]})).unwrap_err();
        assert!(format!("{err:#}").contains("runs[0] has no placement"), "{err:#}");
    }

    #[test]
    fn draws_a_panel_per_replica_count_and_placement_with_a_legend() {
        let doc = json!({"stamp": "T0", "placements": {"shared": "client on CPU 0"}, "runs": [
            open(3, "userspace", 1000.0, 998.0, 45.0, 75.0),
            open(3, "userspace", 2000.0, 1995.0, 50.0, 800.0),
            open(7, "all", 1000.0, 999.0, 30.0, 50.0),
            split(open(7, "all", 1000.0, 999.0, 30.0, 50.0)),
        ]});
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (1080, 960)).into_drawing_area();
            let titles = titles(&doc);
            let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
            draw(&root, &series(&doc).unwrap(), &titles).unwrap();
        }
        for text in [
            "3 replicas (f = 1), shared placement",
            "7 replicas (f = 3), shared placement",
            "7 replicas (f = 3), split placement",
            "userspace, null",
            "all, null",
            "sweep T0",
            "shared: client on CPU 0",
        ] {
            assert!(svg.contains(text), "{text} missing from the SVG");
        }
        // No panel for a placement and count without points.
        assert!(!svg.contains("3 replicas (f = 1), split placement"));
        // A marker per p50 point.
        assert_eq!(svg.matches("<circle").count(), 4);
        let empty = json!({"runs": []});
        let mut svg = String::new();
        let root = SVGBackend::with_string(&mut svg, (100, 100)).into_drawing_area();
        assert!(draw(&root, &series(&empty).unwrap(), &["x"]).is_err());
    }
}

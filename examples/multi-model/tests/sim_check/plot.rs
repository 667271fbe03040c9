//! The sim-check plot: one column per trace; the top row the replicas
//! (starting or ready), the bottom row the p99 latency of each period,
//! measured and simulated on the same axes, as SVG (labels stay text, as
//! in the other plots of the project: no font file needed to draw them).

use std::path::Path;
use std::time::Duration;

use convoy_autoscale_sim::TimelinePoint;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const COLUMN: u32 = 520;
const ROW: u32 = 300;
const HEADER: u32 = 40;
const TOP: i32 = 36;
const LEFT: i32 = 64;
const BOTTOM: i32 = 36;
const RIGHT: i32 = 16;
const FONT: &str = "sans-serif";

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Error = Box<dyn std::error::Error>;
/// A named line: legend, points (minutes, value), colour.
type Series = (&'static str, Vec<(f64, f64)>, RGBAColor);

/// One trace's two timelines.
pub struct Comparison {
    /// The trace's name.
    pub trace: String,
    /// The latency objective.
    pub slo: Duration,
    /// The real server's timeline.
    pub real: Vec<TimelinePoint>,
    /// The simulator's.
    pub simulated: Vec<TimelinePoint>,
}

fn measured_color() -> RGBAColor {
    Palette99::pick(0).to_rgba()
}

fn simulated_color() -> RGBAColor {
    Palette99::pick(1).to_rgba()
}

fn label(area: &Area<'_>, (x, y): (i32, i32), s: &str, size: u32, pos: Pos) -> Result<(), Error> {
    let style = TextStyle::from((FONT, size).into_font())
        .color(&BLACK)
        .pos(pos);
    area.draw_text(s, &style, (x, y))?;
    Ok(())
}

fn top_left() -> Pos {
    Pos::new(HPos::Left, VPos::Top)
}

fn value_label(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One panel: grid with values, the series, a title and a legend.
fn panel(
    area: &Area<'_>,
    title: &str,
    x_max: f64,
    y_max: f64,
    series: &[Series],
    legend: bool,
) -> Result<(), Error> {
    let plot = area.margin(TOP as u32, BOTTOM as u32, LEFT as u32, RIGHT as u32);
    let (pw, ph) = plot.dim_in_pixel();
    let (pw, ph) = (pw as i32, ph as i32);
    let grid = BLACK.mix(0.09);
    let mut chart = ChartBuilder::on(&plot).build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    for k in 0..=4 {
        let frac = f64::from(k) / 4.0;
        let (x, y) = (x_max * frac, y_max * frac);
        chart.draw_series(LineSeries::new([(0.0, y), (x_max, y)], grid))?;
        chart.draw_series(LineSeries::new([(x, 0.0), (x, y_max)], grid))?;
        let py = TOP + ph - (f64::from(ph) * frac) as i32;
        label(
            area,
            (LEFT - 6, py),
            &value_label(y),
            14,
            Pos::new(HPos::Right, VPos::Center),
        )?;
        let px = LEFT + (f64::from(pw) * frac) as i32;
        label(
            area,
            (px, TOP + ph + 6),
            &value_label(x),
            14,
            Pos::new(HPos::Center, VPos::Top),
        )?;
    }
    for (_, points, color) in series {
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))?;
    }
    area.draw(&Rectangle::new(
        [(LEFT, TOP), (LEFT + pw, TOP + ph)],
        BLACK.stroke_width(1),
    ))?;
    label(area, (LEFT, 10), title, 17, top_left())?;
    if legend {
        let mut y = TOP + 8;
        for (name, _, color) in series {
            let x = LEFT + 10;
            area.draw(&Rectangle::new([(x, y), (x + 14, y + 9)], color.filled()))?;
            label(area, (x + 20, y - 3), name, 14, top_left())?;
            y += 18;
        }
    }
    Ok(())
}

fn minutes(p: &TimelinePoint) -> f64 {
    p.at.as_secs_f64() / 60.0
}

/// Writes the plot of `comparisons` to `path` (SVG).
pub fn write(path: &Path, comparisons: &[Comparison]) -> Result<(), Error> {
    let columns = u32::try_from(comparisons.len().max(1))?;
    let size = (COLUMN * columns, HEADER + 2 * ROW);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        label(
            &root,
            (12, 10),
            "multi-model server (measured) against convoy-autoscale-sim (simulated): \
             Adaptive, the same arrivals, replica model and cold start; x: minutes into the trace",
            18,
            top_left(),
        )?;
        let body = root.margin(HEADER, 0, 0, 0);
        let cells = body.split_evenly((2, comparisons.len().max(1)));
        for (i, c) in comparisons.iter().enumerate() {
            let x_max = c
                .real
                .iter()
                .chain(&c.simulated)
                .map(minutes)
                .fold(1.0, f64::max);
            let replicas = |t: &[TimelinePoint]| -> Vec<(f64, f64)> {
                t.iter()
                    .map(|p| (minutes(p), f64::from(p.replicas)))
                    .collect()
            };
            let (real, sim) = (replicas(&c.real), replicas(&c.simulated));
            let r_max = real.iter().chain(&sim).map(|p| p.1).fold(1.0, f64::max) * 1.1;
            panel(
                &cells[i],
                &format!("{}: replicas (starting + ready)", c.trace),
                x_max,
                r_max,
                &[
                    ("measured", real, measured_color()),
                    ("simulated", sim, simulated_color()),
                ],
                true,
            )?;
            let cap = 4.0 * c.slo.as_secs_f64() * 1e3;
            let p99 = |t: &[TimelinePoint]| -> Vec<(f64, f64)> {
                t.iter()
                    .filter_map(|p| {
                        let ms = p.latency_p99?.as_secs_f64() * 1e3;
                        Some((minutes(p), ms.min(cap)))
                    })
                    .collect()
            };
            let slo = c.slo.as_secs_f64() * 1e3;
            panel(
                &cells[comparisons.len() + i],
                &format!("p99 of each period, ms (capped at {:.0})", cap),
                x_max,
                cap * 1.05,
                &[
                    ("SLO", vec![(0.0, slo), (x_max, slo)], BLACK.mix(0.5)),
                    ("measured", p99(&c.real), measured_color()),
                    ("simulated", p99(&c.simulated), simulated_color()),
                ],
                i == 0,
            )?;
        }
        root.present()?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg)?;
    Ok(())
}

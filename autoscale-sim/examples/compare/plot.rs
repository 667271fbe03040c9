//! The comparison plot: one column per trace; rows are load, replicas and
//! p99 latency over time, one colour per policy.
//!
//! Written as SVG: the labels stay real text, drawn by whatever shows the
//! picture in its own fonts, and no font file is needed to make it.

use std::path::Path;
use std::time::Duration;

use convoy_autoscale_sim::Report;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const WIDTH: u32 = 1400;
const ROW: u32 = 300;
const HEADER: u32 = 76;
const PAD: i32 = 44;
const FONT: &str = "sans-serif";
/// Label size in plotters' units (about 12 px of SVG text).
const TEXT: u32 = 15;

/// Entries of plotters' palette for the policies, in the order of
/// `builtin_contenders` then the default: Ray red, HPA orange, KPA purple
/// and brown, LatencySlo blue, QueueModel green, teal, grey, and the
/// default magenta (the palette's pale entries would vanish on white).
const PALETTE: [usize; 9] = [0, 4, 5, 12, 3, 1, 10, 19, 7];

fn color(i: usize) -> RGBAColor {
    Palette99::pick(PALETTE[i % PALETTE.len()]).to_rgba()
}

/// Line width of policy `i` of `n`: the default (last) stands out.
fn width(i: usize, n: usize) -> u32 {
    if i + 1 == n {
        2
    } else {
        1
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// A line: its points (hours, value), colour and width.
type Series = (Vec<(f64, f64)>, RGBAColor, u32);
type Error = Box<dyn std::error::Error>;

fn style(color: RGBAColor, pos: Pos) -> TextStyle<'static> {
    TextStyle {
        font: (FONT, TEXT).into_font(),
        color: color.to_backend_color(),
        pos,
    }
}

/// Draws `s` at (x, y), anchored there by `pos`.
fn text(area: &Area<'_>, x: i32, y: i32, s: &str, color: RGBAColor, pos: Pos) -> Result<(), Error> {
    area.draw_text(s, &style(color, pos), (x, y))?;
    Ok(())
}

fn top_left() -> Pos {
    Pos::new(HPos::Left, VPos::Top)
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One panel: a frame, horizontal grid lines with their values on the
/// left, a title, and the series.
fn panel(
    area: &Area<'_>,
    title: &str,
    hours: f64,
    y_max: f64,
    series: &[Series],
    threshold: Option<(f64, &str)>,
) -> Result<(), Error> {
    let (w, h) = area.dim_in_pixel();
    let plot = area.margin(22, 18, PAD as u32 + 12, 12);
    let mut chart = ChartBuilder::on(&plot).build_cartesian_2d(0.0..hours, 0.0..y_max)?;
    let (pw, ph) = plot.dim_in_pixel();
    let (ox, oy) = (PAD + 12, 22);
    for k in 0..=4 {
        let y = y_max * f64::from(k) / 4.0;
        chart.draw_series(LineSeries::new([(0.0, y), (hours, y)], BLACK.mix(0.09)))?;
        let py = oy + ph as i32 - (ph as f64 * f64::from(k) / 4.0) as i32;
        let right_middle = Pos::new(HPos::Right, VPos::Center);
        text(
            area,
            ox - 6,
            py,
            &fmt_value(y),
            BLACK.to_rgba(),
            right_middle,
        )?;
    }
    for (points, color, width) in series {
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(*width),
        ))?;
    }
    if let Some((y, label)) = threshold {
        chart.draw_series(LineSeries::new(
            [(0.0, y), (hours, y)],
            BLACK.stroke_width(1),
        ))?;
        let py = oy + ph as i32 - (ph as f64 * y / y_max) as i32;
        let right_bottom = Pos::new(HPos::Right, VPos::Bottom);
        text(
            area,
            ox + pw as i32 - 4,
            py - 2,
            label,
            BLACK.to_rgba(),
            right_bottom,
        )?;
    }
    area.draw(&Rectangle::new(
        [(ox, oy), (ox + pw as i32, oy + ph as i32)],
        BLACK.stroke_width(1),
    ))?;
    text(area, ox, 4, title, BLACK.to_rgba(), top_left())?;
    // Time axis: hours at both ends.
    let end = format!("{hours:.1} h");
    let left_bottom = Pos::new(HPos::Left, VPos::Bottom);
    text(area, ox, h as i32 - 2, "0 h", BLACK.to_rgba(), left_bottom)?;
    let right_bottom = Pos::new(HPos::Right, VPos::Bottom);
    text(
        area,
        w as i32 - 12,
        h as i32 - 2,
        &end,
        BLACK.to_rgba(),
        right_bottom,
    )?;
    Ok(())
}

/// One column of the plot.
pub(crate) struct Panel<'a> {
    /// Trace name.
    pub(crate) trace: &'a str,
    /// Its reports, one per policy, in legend order.
    pub(crate) reports: Vec<&'a Report>,
    /// The oracle's replicas per minute.
    pub(crate) oracle: &'a [u32],
}

/// Writes the plot for `panels` to `path` (SVG).
pub(crate) fn draw(path: &Path, panels: &[Panel<'_>], slo: Duration) -> Result<(), Error> {
    let mut svg = String::new();
    draw_into(&mut svg, HEADER + 3 * ROW, panels, slo)?;
    std::fs::write(path, svg)?;
    Ok(())
}

fn draw_into(
    svg: &mut String,
    height: u32,
    panels: &[Panel<'_>],
    slo: Duration,
) -> Result<(), Error> {
    let root = SVGBackend::with_string(svg, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);

    // Legend.
    let policies: Vec<&str> = panels
        .first()
        .map(|p| p.reports.iter().map(|r| r.policy.as_str()).collect())
        .unwrap_or_default();
    let (mut x, mut y) = (12, 6);
    for (i, policy) in policies.iter().enumerate() {
        let color = color(i);
        let (w, _) = header.estimate_text_size(policy, &style(color, top_left()))?;
        if x + 30 + w as i32 > WIDTH as i32 - 12 {
            (x, y) = (12, y + 22);
        }
        header.draw(&Rectangle::new(
            [(x, y + 4), (x + 24, y + 9)],
            color.filled(),
        ))?;
        text(&header, x + 30, y, policy, color, top_left())?;
        x += 30 + w as i32 + 20;
    }
    text(
        &header,
        12,
        y + 26,
        "grey: trace rate (row 1), offline oracle replicas (row 2); black: measured load / SLO",
        BLACK.to_rgba(),
        top_left(),
    )?;

    let columns = body.split_evenly((3, panels.len().max(1)));
    let slo_s = slo.as_secs_f64();
    for (
        c,
        Panel {
            trace,
            reports,
            oracle: per_minute,
        },
    ) in panels.iter().enumerate()
    {
        let Some(first) = reports.first() else {
            continue;
        };
        let hours = first.duration.as_secs_f64() / 3600.0;
        let at = |d: Duration| d.as_secs_f64() / 3600.0;

        let load: Vec<(f64, f64)> = first
            .timeline
            .iter()
            .map(|p| (at(p.at), p.arrival_rps))
            .collect();
        let rate: Vec<(f64, f64)> = first
            .timeline
            .iter()
            .map(|p| (at(p.at), p.trace_rps))
            .collect();
        let peak = load.iter().chain(&rate).map(|p| p.1).fold(1.0, f64::max) * 1.1;
        panel(
            &columns[c],
            &format!("{trace}: load (requests/s)"),
            hours,
            peak,
            &[(load, BLACK.to_rgba(), 1), (rate, BLACK.mix(0.33), 2)],
            None,
        )?;

        let mut replicas = Vec::new();
        let mut oracle = Vec::new();
        for (m, n) in per_minute.iter().enumerate() {
            oracle.push((m as f64 / 60.0, f64::from(*n)));
            oracle.push(((m + 1) as f64 / 60.0, f64::from(*n)));
        }
        replicas.push((oracle, BLACK.mix(0.33), 2));
        let mut top: f64 = per_minute.iter().copied().max().map_or(1.0, f64::from);
        for (i, r) in reports.iter().enumerate() {
            let points: Vec<(f64, f64)> = r
                .timeline
                .iter()
                .map(|p| (at(p.at), f64::from(p.replicas)))
                .collect();
            top = points.iter().map(|p| p.1).fold(top, f64::max);
            replicas.push((points, color(i), width(i, reports.len())));
        }
        panel(
            &columns[panels.len() + c],
            &format!("{trace}: replicas (starting + ready)"),
            hours,
            (top * 1.1).ceil(),
            &replicas,
            None,
        )?;

        let cap = slo_s * 4.0;
        let mut p99 = Vec::new();
        for (i, r) in reports.iter().enumerate() {
            let points: Vec<(f64, f64)> = r
                .timeline
                .iter()
                .filter_map(|p| p.latency_p99.map(|l| (at(p.at), l.as_secs_f64().min(cap))))
                .collect();
            p99.push((points, color(i), width(i, reports.len())));
        }
        panel(
            &columns[2 * panels.len() + c],
            &format!("{trace}: p99 latency per 10 s (s, capped at 4x SLO)"),
            hours,
            cap,
            &p99,
            Some((slo_s, "SLO")),
        )?;
    }
    root.present()?;
    Ok(())
}

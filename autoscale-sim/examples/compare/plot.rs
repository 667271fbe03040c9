//! The comparison plot: one column per trace; rows are load, replicas and
//! p99 latency over time, one colour per policy.
//!
//! Text is drawn from the `font8x8` bitmap font, pixel by pixel, so the
//! plot needs no system font library (plotters' text support would).

use std::path::Path;
use std::time::Duration;

use convoy_autoscale_sim::Report;
use font8x8::UnicodeFonts;
use plotters::coord::Shift;
use plotters::prelude::*;

const WIDTH: u32 = 1400;
const ROW: u32 = 300;
const HEADER: u32 = 56;
const PAD: i32 = 44;

/// One colour per policy, in the order of `builtin_contenders`, then the default.
const COLORS: [RGBColor; 9] = [
    RGBColor(230, 25, 75),  // TargetOngoing (Ray default): red
    RGBColor(245, 130, 48), // Hpa: orange
    RGBColor(145, 30, 180), // Kpa: purple
    RGBColor(170, 110, 40), // Kpa (utilization 1.0): brown
    RGBColor(0, 130, 200),  // LatencySlo: blue
    RGBColor(60, 180, 75),  // QueueModel: green
    RGBColor(0, 190, 190),  // LatencySlo (SLO/4, 4x): cyan
    RGBColor(70, 70, 70),   // Max: dark grey
    RGBColor(240, 50, 230), // Adaptive (default): magenta
];
const GREY: RGBColor = RGBColor(170, 170, 170);
const GRID: RGBColor = RGBColor(232, 232, 232);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// A line: its points (hours, value), colour and width.
type Series = (Vec<(f64, f64)>, RGBColor, u32);
type Error = Box<dyn std::error::Error>;

/// Draws `text` with its top-left corner at (x, y), each font pixel
/// `scale` × `scale` screen pixels.
fn text(
    area: &Area<'_>,
    x: i32,
    y: i32,
    s: &str,
    color: RGBColor,
    scale: i32,
) -> Result<(), Error> {
    for (i, c) in s.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(c) else {
            continue;
        };
        let gx = x + i as i32 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let (px, py) = (gx + col * scale, y + row as i32 * scale);
                    for dx in 0..scale {
                        for dy in 0..scale {
                            area.draw_pixel((px + dx, py + dy), &color)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
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
        chart.draw_series(LineSeries::new([(0.0, y), (hours, y)], GRID))?;
        let py = oy + ph as i32 - (ph as f64 * f64::from(k) / 4.0) as i32;
        let label = fmt_value(y);
        text(
            area,
            ox - 6 - 8 * label.len() as i32,
            py - 4,
            &label,
            BLACK,
            1,
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
        text(
            area,
            ox + pw as i32 - 8 * label.len() as i32 - 4,
            py - 11,
            label,
            BLACK,
            1,
        )?;
    }
    area.draw(&Rectangle::new(
        [(ox, oy), (ox + pw as i32, oy + ph as i32)],
        BLACK.stroke_width(1),
    ))?;
    text(area, ox, 6, title, BLACK, 1)?;
    // Time axis: hours at both ends.
    let end = format!("{hours:.1} h");
    text(area, ox, h as i32 - 14, "0 h", BLACK, 1)?;
    text(
        area,
        w as i32 - 12 - 8 * end.len() as i32,
        h as i32 - 14,
        &end,
        BLACK,
        1,
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

/// Writes the plot for `panels` to `path`.
pub(crate) fn draw(path: &Path, panels: &[Panel<'_>], slo: Duration) -> Result<(), Error> {
    let height = HEADER + 3 * ROW;
    let mut rgb = vec![0u8; WIDTH as usize * height as usize * 3];
    draw_into(&mut rgb, height, panels, slo)?;
    write_indexed_png(path, &rgb, WIDTH, height)
}

/// The plot uses a handful of flat colours, so an indexed PNG is a fraction
/// of the size of an RGB one; blended pixels (wide lines) snap to the
/// nearest colour of the palette.
fn write_indexed_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<(), Error> {
    // Each colour and its tints toward white, which anti-aliased lines blend to.
    let mut palette: Vec<[u8; 3]> = vec![[255, 255, 255]];
    for c in [BLACK, GREY, GRID].iter().chain(&COLORS) {
        for alpha in [1.0, 0.75, 0.5, 0.25] {
            let tint = |v: u8| (f64::from(v) * alpha + 255.0 * (1.0 - alpha)).round() as u8;
            palette.push([tint(c.0), tint(c.1), tint(c.2)]);
        }
    }
    let mut nearest = std::collections::HashMap::new();
    let pixels: Vec<u8> = rgb
        .chunks_exact(3)
        .map(|px| {
            *nearest.entry([px[0], px[1], px[2]]).or_insert_with(|| {
                let distance = |c: &[u8; 3]| -> i32 {
                    (0..3)
                        .map(|k| (i32::from(c[k]) - i32::from(px[k])).pow(2))
                        .sum()
                };
                (0..palette.len())
                    .min_by_key(|&i| distance(&palette[i]))
                    .map_or(0, |i| i as u8)
            })
        })
        .collect();
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(palette.concat());
    encoder.set_compression(png::Compression::Best);
    encoder.write_header()?.write_image_data(&pixels)?;
    Ok(())
}

fn draw_into(
    rgb: &mut [u8],
    height: u32,
    panels: &[Panel<'_>],
    slo: Duration,
) -> Result<(), Error> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);

    // Legend.
    let policies: Vec<&str> = panels
        .first()
        .map(|p| p.reports.iter().map(|r| r.policy.as_str()).collect())
        .unwrap_or_default();
    let mut x = 12;
    for (i, policy) in policies.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        header.draw(&Rectangle::new([(x, 10), (x + 24, 14)], color.filled()))?;
        text(&header, x + 30, 8, policy, color, 1)?;
        x += 30 + 8 * policy.len() as i32 + 24;
    }
    text(
        &header,
        12,
        32,
        "grey: trace rate (row 1), offline oracle replicas (row 2); black: measured load / SLO",
        BLACK,
        1,
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
            &[(load, BLACK, 1), (rate, GREY, 2)],
            None,
        )?;

        let mut replicas = Vec::new();
        let mut oracle = Vec::new();
        for (m, n) in per_minute.iter().enumerate() {
            oracle.push((m as f64 / 60.0, f64::from(*n)));
            oracle.push(((m + 1) as f64 / 60.0, f64::from(*n)));
        }
        replicas.push((oracle, GREY, 2));
        let mut top: f64 = per_minute.iter().copied().max().map_or(1.0, f64::from);
        for (i, r) in reports.iter().enumerate() {
            let points: Vec<(f64, f64)> = r
                .timeline
                .iter()
                .map(|p| (at(p.at), f64::from(p.replicas)))
                .collect();
            top = points.iter().map(|p| p.1).fold(top, f64::max);
            replicas.push((points, COLORS[i % COLORS.len()], 1));
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
            p99.push((points, COLORS[i % COLORS.len()], 1));
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

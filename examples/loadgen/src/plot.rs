//! The sweep plot: achieved throughput (left) and p50/p99 latency (right)
//! against offered load, as a PNG.
//!
//! Labels are drawn from the `font8x8` bitmap font as filled squares, so
//! the plot needs no font files or font library on the machine.

use std::path::Path;

use font8x8::UnicodeFonts;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::sweep::SweepPoint;
use crate::LoadError;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 480;
const TOP: i32 = 44;
const LEFT: i32 = 80;
const BOTTOM: i32 = 44;
const RIGHT: i32 = 24;

const THROUGHPUT: RGBColor = RGBColor(0, 110, 190);
const P50: RGBColor = RGBColor(60, 160, 70);
const P99: RGBColor = RGBColor(210, 40, 60);
const IDEAL: RGBColor = RGBColor(175, 175, 175);
const GRID: RGBColor = RGBColor(232, 232, 232);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// A named line: its legend, points (offered, value) and colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn plot_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::new(format!("plot: {e}"))
}

/// Writes `s` with its top-left corner at `(x, y)`, each font pixel a
/// `scale` × `scale` block of screen pixels.
fn label(
    area: &Area<'_>,
    (x, y): (i32, i32),
    s: &str,
    color: RGBColor,
    scale: i32,
) -> Result<(), LoadError> {
    let glyphs = s.chars().filter_map(|c| font8x8::BASIC_FONTS.get(c));
    for (i, glyph) in (0i32..).zip(glyphs) {
        let left = x + i * 8 * scale;
        for (row, bits) in (0i32..).zip(glyph) {
            let lit = (0..8).filter(|c| bits & (1 << c) != 0);
            for (col, dx, dy) in
                lit.flat_map(|c| (0..scale * scale).map(move |k| (c, k % scale, k / scale)))
            {
                let pixel = (left + col * scale + dx, y + row * scale + dy);
                area.draw_pixel(pixel, &color).map_err(plot_err)?;
            }
        }
    }
    Ok(())
}

/// Width in pixels of `s` in the bitmap font at scale 1.
fn text_width(s: &str) -> i32 {
    8 * s.chars().count() as i32
}

/// A short label for an axis value: `12k`, `350`, `42.5`, `0.25`.
fn value_label(v: f64) -> String {
    let (scaled, suffix) = if v >= 10_000.0 {
        (v / 1000.0, "k")
    } else {
        (v, "")
    };
    let decimals = match scaled {
        s if s >= 100.0 || !suffix.is_empty() => 0,
        s if s >= 10.0 => 1,
        _ => 2,
    };
    format!("{scaled:.decimals$}{suffix}")
}

/// One panel: frame, grid with values, the series, a title, axis names and
/// a legend.
fn panel(
    area: &Area<'_>,
    title: &str,
    y_name: &str,
    x_max: f64,
    y_max: f64,
    series: &[Series<'_>],
) -> Result<(), LoadError> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let plot = area.margin(TOP as u32, BOTTOM as u32, LEFT as u32, RIGHT as u32);
    let (pw, ph) = plot.dim_in_pixel();
    let (pw, ph) = (pw as i32, ph as i32);
    let mut chart = ChartBuilder::on(&plot)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    for k in 0..=4 {
        let frac = f64::from(k) / 4.0;
        let (x, y) = (x_max * frac, y_max * frac);
        chart
            .draw_series(LineSeries::new([(0.0, y), (x_max, y)], GRID))
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new([(x, 0.0), (x, y_max)], GRID))
            .map_err(plot_err)?;
        let py = TOP + ph - (f64::from(ph) * frac) as i32;
        let text = value_label(y);
        label(
            area,
            (LEFT - 6 - text_width(&text), py - 4),
            &text,
            BLACK,
            1,
        )?;
        let px = LEFT + (f64::from(pw) * frac) as i32;
        let text = value_label(x);
        label(
            area,
            (px - text_width(&text) / 2, TOP + ph + 8),
            &text,
            BLACK,
            1,
        )?;
    }
    for (_, points, color) in series {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    area.draw(&Rectangle::new(
        [(LEFT, TOP), (LEFT + pw, TOP + ph)],
        BLACK.stroke_width(1),
    ))
    .map_err(plot_err)?;
    label(area, (LEFT, 10), title, BLACK, 2)?;
    label(area, (LEFT + 4, TOP + 4), y_name, BLACK, 1)?;
    let x_name = "offered load (requests/s)";
    label(
        area,
        (w - RIGHT - text_width(x_name), h - 16),
        x_name,
        BLACK,
        1,
    )?;
    let mut y = TOP + 20;
    for (name, _, color) in series {
        let x = LEFT + 12;
        area.draw(&Rectangle::new([(x, y), (x + 14, y + 7)], color.filled()))
            .map_err(plot_err)?;
        label(area, (x + 20, y), name, BLACK, 1)?;
        y += 14;
    }
    Ok(())
}

/// Draws `points` (a rate sweep) into the RGB buffer `rgb` of
/// [`WIDTH`] × [`HEIGHT`] pixels.
fn draw(rgb: &mut [u8], title: &str, points: &[SweepPoint]) -> Result<(), LoadError> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    let x_max = points.iter().map(|p| p.offered_per_s).fold(1.0, f64::max) * 1.05;
    let served: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.offered_per_s, p.summary.items_per_s))
        .collect();
    let y_max = served.iter().map(|p| p.1).fold(x_max, f64::max) * 1.05;
    panel(
        &left,
        &format!("{title}: throughput"),
        "answered/s",
        x_max,
        y_max,
        &[
            ("offered (ideal)", vec![(0.0, 0.0), (x_max, x_max)], IDEAL),
            ("answered", served, THROUGHPUT),
        ],
    )?;
    let p50: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.offered_per_s, p.summary.p50_ms))
        .collect();
    let p99: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.offered_per_s, p.summary.p99_ms))
        .collect();
    let lat_max = p99.iter().chain(&p50).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    panel(
        &right,
        "latency from intended send",
        "ms",
        x_max,
        lat_max,
        &[("p50", p50, P50), ("p99", p99, P99)],
    )?;
    root.present().map_err(plot_err)
}

/// Writes the sweep plot of `points` to `path` (PNG, 1200 × 480).
pub fn sweep_plot(path: &Path, title: &str, points: &[SweepPoint]) -> Result<(), LoadError> {
    if points.is_empty() {
        return Err(LoadError::new("plot: no sweep points"));
    }
    let mut rgb = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    draw(&mut rgb, title, points)?;
    let io = |e: std::io::Error| LoadError::new(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let mut encoder = png::Encoder::new(file, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(&rgb))
        .map_err(plot_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Summary;
    use std::collections::BTreeMap;

    fn point(offered: f64, served: f64, p99: f64) -> SweepPoint {
        SweepPoint {
            offered_per_s: offered,
            summary: Summary {
                mode: "open",
                concurrency: 64,
                offered_per_s: Some(offered),
                ok: 100,
                errors: 0,
                errors_by_kind: BTreeMap::new(),
                elapsed_s: 1.0,
                items_per_s: served,
                p50_ms: p99 / 3.0,
                p90_ms: p99 / 2.0,
                p99_ms: p99,
                max_ms: p99,
            },
        }
    }

    #[test]
    fn axis_labels_are_short() {
        let labels: Vec<String> = [25_000.0, 350.0, 42.5, 0.25].map(value_label).into();
        assert_eq!(labels, ["25k", "350", "42.5", "0.25"]);
    }

    #[test]
    fn writes_a_png_with_the_curves_and_labels() {
        let points = [
            point(10.0, 10.0, 5.0),
            point(20.0, 19.5, 8.0),
            point(40.0, 25.0, 400.0),
        ];
        let mut rgb = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
        draw(&mut rgb, "identity", &points).unwrap();
        let has = |c: RGBColor| rgb.chunks(3).any(|px| px == [c.0, c.1, c.2]);
        assert!(has(THROUGHPUT) && has(P50) && has(P99) && has(BLACK_RGB));
        let path = std::env::temp_dir().join(format!("loadgen-plot-{}.png", std::process::id()));
        sweep_plot(&path, "identity", &points).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        std::fs::remove_file(&path).unwrap();
        assert!(sweep_plot(&path, "x", &[]).is_err());
    }

    const BLACK_RGB: RGBColor = RGBColor(0, 0, 0);
}

//! The sweep plot: achieved throughput (left) and p50/p99 latency (right)
//! against offered load, as SVG.
//!
//! SVG keeps the labels as real text, drawn by whatever shows the picture
//! (a browser, GitHub's README view) in its own fonts: sharp at any size,
//! and no font file or font library is needed where the plot is made.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::sweep::SweepPoint;
use crate::LoadError;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 480;
const TOP: i32 = 44;
const LEFT: i32 = 80;
const BOTTOM: i32 = 44;
const RIGHT: i32 = 24;
const FONT: &str = "sans-serif";

// plotters' own palette: the throughput line, p50 and p99.
fn throughput() -> PaletteColor<Palette99> {
    Palette99::pick(1)
}
fn p50() -> PaletteColor<Palette99> {
    Palette99::pick(3)
}
fn p99() -> PaletteColor<Palette99> {
    Palette99::pick(0)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// A named line: its legend, points (offered, value) and colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBAColor);

fn plot_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::new(format!("plot: {e}"))
}

/// Writes `s` at `(x, y)`, anchored there by `pos`, `size` pixels high.
fn label(
    area: &Area<'_>,
    (x, y): (i32, i32),
    s: &str,
    size: u32,
    pos: Pos,
) -> Result<(), LoadError> {
    let style = TextStyle::from((FONT, size).into_font())
        .color(&BLACK)
        .pos(pos);
    area.draw_text(s, &style, (x, y)).map_err(plot_err)
}

fn top_left() -> Pos {
    Pos::new(HPos::Left, VPos::Top)
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
    let grid = BLACK.mix(0.09);
    let mut chart = ChartBuilder::on(&plot)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    for k in 0..=4 {
        let frac = f64::from(k) / 4.0;
        let (x, y) = (x_max * frac, y_max * frac);
        chart
            .draw_series(LineSeries::new([(0.0, y), (x_max, y)], grid))
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new([(x, 0.0), (x, y_max)], grid))
            .map_err(plot_err)?;
        let py = TOP + ph - (f64::from(ph) * frac) as i32;
        let right_middle = Pos::new(HPos::Right, VPos::Center);
        label(area, (LEFT - 6, py), &value_label(y), 16, right_middle)?;
        let px = LEFT + (f64::from(pw) * frac) as i32;
        let centre_top = Pos::new(HPos::Center, VPos::Top);
        label(area, (px, TOP + ph + 6), &value_label(x), 16, centre_top)?;
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
    label(area, (LEFT, 10), title, 24, top_left())?;
    label(area, (LEFT + 6, TOP + 6), y_name, 16, top_left())?;
    let bottom_right = Pos::new(HPos::Right, VPos::Bottom);
    label(
        area,
        (w - RIGHT, h - 4),
        "offered load (requests/s)",
        16,
        bottom_right,
    )?;
    let mut y = TOP + 26;
    for (name, _, color) in series {
        let x = LEFT + 12;
        area.draw(&Rectangle::new([(x, y), (x + 14, y + 9)], color.filled()))
            .map_err(plot_err)?;
        label(area, (x + 20, y - 2), name, 16, top_left())?;
        y += 18;
    }
    Ok(())
}

/// Draws `points` (a rate sweep) as an SVG document of [`WIDTH`] ×
/// [`HEIGHT`] pixels into `svg`.
fn draw(svg: &mut String, title: &str, points: &[SweepPoint]) -> Result<(), LoadError> {
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
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
            (
                "offered (ideal)",
                vec![(0.0, 0.0), (x_max, x_max)],
                BLACK.mix(0.3),
            ),
            ("answered", served, throughput().to_rgba()),
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
        &[
            ("p50", p50, self::p50().to_rgba()),
            ("p99", p99, self::p99().to_rgba()),
        ],
    )?;
    root.present().map_err(plot_err)
}

/// Writes the sweep plot of `points` to `path` (SVG, 1200 × 480; the
/// path must end in `.svg`).
pub fn sweep_plot(path: &Path, title: &str, points: &[SweepPoint]) -> Result<(), LoadError> {
    if points.is_empty() {
        return Err(LoadError::new("plot: no sweep points"));
    }
    if path.extension().is_none_or(|e| e != "svg") {
        return Err(LoadError::new(format!(
            "plot: {} does not end in .svg (plots are SVG)",
            path.display()
        )));
    }
    let mut svg = String::new();
    draw(&mut svg, title, points)?;
    let io = |e: std::io::Error| LoadError::new(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, svg).map_err(io)
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

    /// `#rrggbb` as plotters writes a colour into SVG.
    fn hex(c: impl Color) -> String {
        let (r, g, b) = c.to_backend_color().rgb;
        format!("#{r:02X}{g:02X}{b:02X}")
    }

    #[test]
    fn writes_an_svg_with_the_curves_and_real_text_labels() {
        let points = [
            point(10.0, 10.0, 5.0),
            point(20.0, 19.5, 8.0),
            point(40.0, 25.0, 400.0),
        ];
        let mut svg = String::new();
        draw(&mut svg, "identity", &points).unwrap();
        for c in [hex(throughput()), hex(p50()), hex(p99())] {
            assert!(svg.contains(&c), "no {c} curve in {svg}");
        }
        for text in [
            "identity: throughput",
            "latency from intended send",
            "offered load (requests/s)",
            "answered/s",
            "p99",
            "42.0",
        ] {
            // plotters writes each text element on lines of its own.
            let flat = svg.replace('\n', "");
            assert!(flat.contains(&format!(">{text}<")), "no text {text:?}");
        }
        let path = std::env::temp_dir().join(format!("loadgen-plot-{}.svg", std::process::id()));
        sweep_plot(&path, "identity", &points).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.starts_with("<svg"), "{}", &written[..40]);
        std::fs::remove_file(&path).unwrap();
        assert!(sweep_plot(&path, "x", &[]).is_err());
        assert!(sweep_plot(&path.with_extension("png"), "x", &points).is_err());
    }
}

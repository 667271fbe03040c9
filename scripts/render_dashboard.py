#!/usr/bin/env python3
"""Render convoy's Grafana dashboard from a real Prometheus, without Grafana.

Reads observability/grafana/dashboard.json, runs every panel's queries
against a Prometheus HTTP API (`/api/v1/query_range`) over a time window,
and draws the panels where the dashboard's `gridPos` puts them: titles,
legends from `legendFormat`, y axes in the panel's unit. The result is one
PNG (and, with --panel-dir, one PNG per panel).

    .venv/bin/python3 scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 \\
        --last 120s --out docs/images/grafana-dashboard.png

A panel whose queries all come back empty is drawn with "No data", as
Grafana does, and named on standard output as `no data: <title>`; the last
line is `panels: N drawn, M with no data`. The exit status is 0 unless
Prometheus cannot be reached or a query fails (1), or a bad argument (2).

Template variables: `$__interval` is the step, `$__rate_interval` is
max(step + scrape interval, 4 × scrape interval) as in Grafana,
`$__range` the window; a dashboard variable takes its `current` value, or
the value given with `--var name=value`. The `datasource` variable needs
none: the Prometheus is the one on the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "observability/grafana/dashboard.json"

# Grafana's dark theme, and its palette's base colours then their dark shades
# (twelve series before a colour repeats).
BACKGROUND = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
MUTED = "#8e8e9e"
GRID = "#2c3235"
PALETTE = [
    "#73BF69", "#FADE2A", "#5794F2", "#FF9830", "#F2495C", "#B877D9",
    "#37872D", "#E0B400", "#1F60C4", "#FA6400", "#C4162A", "#8F3BB8",
]

# Grafana's grid: 24 columns; one row unit is 30 px plus an 8 px gap.
COLUMNS = 24
COLUMN_IN = 0.72
ROW_IN = 0.40


def parse_duration(text: str) -> float:
    """`90s`, `2m`, `1h30m`, `500ms` or plain seconds, as seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"bad duration: {text!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * scale[u] for n, u in parts)


def parse_time(text: str) -> float:
    """Unix seconds or an RFC 3339 / ISO 8601 time (UTC when no zone)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad time: {text!r}") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def prom_duration(seconds: float) -> str:
    """Seconds as a PromQL duration (whole milliseconds)."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


# ---------------------------------------------------------------- queries


@dataclass
class Series:
    label: str
    times: list[float]
    values: list[float]


@dataclass
class PanelData:
    panel: dict
    series: list[Series] = field(default_factory=list)
    empty_targets: list[str] = field(default_factory=list)


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's `$name`, `${name}` and `[[name]]` forms (longest names first,
    so `$__range_s` is not read as `$__range` + `_s`)."""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        name = name.split(":", 1)[0]  # ${name:format}: the format is not needed here
        if name not in variables:
            raise SystemExit(f"render_dashboard: unknown variable ${name} in {expr!r} (give --var {name}=VALUE)")
        return variables[name]

    return re.sub(r"\$\{([A-Za-z0-9_:]+)\}|\[\[([A-Za-z0-9_]+)\]\]|\$([A-Za-z_][A-Za-z0-9_]*)", repl, expr)


def legend(fmt: str | None, metric: dict[str, str]) -> str:
    """`legendFormat` with `{{label}}` replaced (a missing label is empty, as
    in Grafana); without a format, the series as `name{a="b"}`."""
    if fmt and fmt != "__auto":
        return re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt).strip()
    name = metric.get("__name__", "")
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{labels}}}" if labels else (name or "{}")


def query_range(url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": prom_duration(step)})
    req = f"{url.rstrip('/')}/api/v1/query_range?{params}"
    try:
        with urllib.request.urlopen(req, timeout=30) as rsp:
            body = json.load(rsp)
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise SystemExit(f"render_dashboard: query failed ({e.code}): {expr}\n{detail}") from e
    except (urllib.error.URLError, OSError) as e:
        raise SystemExit(f"render_dashboard: cannot reach Prometheus at {url}: {e}") from e
    if body.get("status") != "success":
        raise SystemExit(f"render_dashboard: query failed: {expr}: {body}")
    return body["data"]["result"]


def fetch(panel: dict, url: str, variables: dict[str, str], start: float, end: float, step: float) -> PanelData:
    data = PanelData(panel)
    for target in panel.get("targets", []):
        if target.get("hide") or not target.get("expr"):
            continue
        expr = substitute(target["expr"], variables)
        result = query_range(url, expr, start, end, step)
        if not result:
            data.empty_targets.append(target.get("refId", "?"))
        for r in result:
            times: list[float] = []
            values: list[float] = []
            for t, v in r["values"]:
                # A missing step breaks the line rather than joining across it.
                if times and t - times[-1] > 1.5 * step:
                    times.append(times[-1] + step)
                    values.append(math.nan)
                times.append(float(t))
                values.append(float(v))
            data.series.append(Series(legend(target.get("legendFormat"), r["metric"]), times, values))
    return data


# ------------------------------------------------------------------ units


def _scaled(value: float, steps: list[tuple[float, str]], digits: int = 3) -> str:
    """`value` in the first (largest) factor it reaches, else the last."""
    for factor, suffix in steps:
        if abs(value) >= factor:
            break
    return f"{value / factor:.{digits}g}{suffix}"


def formatter(unit: str):
    """A tick label function for Grafana's unit ids (the ones convoy's
    dashboard uses, and a few neighbours)."""

    def seconds(v: float) -> str:
        if v == 0:
            return "0 s"
        return _scaled(v, [(3600, " h"), (60, " min"), (1, " s"), (1e-3, " ms"), (1e-6, " µs"), (1e-9, " ns")])

    def short(v: float) -> str:
        if v == 0:
            return "0"
        return _scaled(v, [(1e12, " T"), (1e9, " B"), (1e6, " M"), (1e3, " K"), (1, "")])

    def iec(v: float) -> str:
        if v == 0:
            return "0 B"
        return _scaled(v, [(2**50, " PiB"), (2**40, " TiB"), (2**30, " GiB"), (2**20, " MiB"), (2**10, " KiB"), (1, " B")])

    table = {
        "s": seconds,
        "ms": lambda v: seconds(v / 1e3),
        "µs": lambda v: seconds(v / 1e6),
        "us": lambda v: seconds(v / 1e6),
        "ns": lambda v: seconds(v / 1e9),
        "percent": lambda v: f"{v:.3g}%",
        "percentunit": lambda v: f"{v * 100:.3g}%",
        "bytes": iec,
        "decbytes": lambda v: _scaled(v, [(1e12, " TB"), (1e9, " GB"), (1e6, " MB"), (1e3, " kB"), (1, " B")]) if v else "0 B",
        "reqps": lambda v: f"{short(v)} req/s",
        "rps": lambda v: f"{short(v)} req/s",
        "ops": lambda v: f"{short(v)} ops/s",
        "short": short,
        "none": lambda v: f"{v:g}",
    }
    return table.get(unit, short)


# ---------------------------------------------------------------- drawing


def grid_of(panels: list[dict]) -> tuple[int, dict[int, tuple[int, int, int, int]]]:
    """Each panel's (x, y, w, h) in grid units, and the grid's height. A
    subset keeps the dashboard's layout but closes vertical gaps."""
    boxes = {}
    for i, p in enumerate(panels):
        g = p.get("gridPos", {})
        boxes[i] = (g.get("x", 0), g.get("y", 0), g.get("w", 12), g.get("h", 8))
    rows = sorted({y for _, y, _, _ in boxes.values()})
    shift, y_new, last_bottom = {}, 0, 0
    for y in rows:
        h = max(b[3] for b in boxes.values() if b[1] == y)
        y_new = min(y, last_bottom) if shift else 0
        shift[y] = y_new
        last_bottom = y_new + h
    boxes = {i: (x, shift[y], w, h) for i, (x, y, w, h) in boxes.items()}
    return max(y + h for _, y, _, h in boxes.values()), boxes


def draw_panel(fig, rect_in: tuple[float, float, float, float], fig_size: tuple[float, float], data: PanelData,
               start: float, end: float) -> None:
    """Draws one panel in the figure region `rect_in` (inches from the
    figure's top left: x, y, w, h)."""
    fw, fh = fig_size
    x, y, w, h = rect_in
    pad = 0.06
    box = FancyBboxPatch(
        ((x + pad) / fw, 1 - (y + h - pad) / fh), (w - 2 * pad) / fw, (h - 2 * pad) / fh,
        boxstyle="round,pad=0,rounding_size=0.004", transform=fig.transFigure,
        facecolor=PANEL, edgecolor=BORDER, linewidth=0.8, zorder=0,
    )
    fig.add_artist(box)
    panel = data.panel
    fig.text((x + 0.18) / fw, 1 - (y + 0.26) / fh, panel.get("title", ""), color=TEXT, fontsize=10.5,
             fontweight="bold", va="center", ha="left")

    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    show_legend = panel.get("options", {}).get("legend", {}).get("showLegend", True)
    series = data.series
    labels = [s.label for s in series]
    # Legend entries in a list below the graph, as many per row as fit.
    longest = max((len(label) for label in labels), default=0)
    per_row = max(1, int((w - 0.4) // (0.32 + 0.068 * longest))) if labels else 1
    legend_rows = math.ceil(len(labels) / per_row) if (labels and show_legend) else 0
    legend_h = 0.08 + 0.21 * legend_rows if legend_rows else 0.0

    left, right, top, bottom = 0.95, 0.22, 0.50, 0.36 + legend_h
    ax = fig.add_axes([(x + left) / fw, 1 - (y + h - bottom) / fh, (w - left - right) / fw, (h - top - bottom) / fh])
    ax.set_facecolor(PANEL)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.tick_params(colors=MUTED, labelsize=7.5, length=0)
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    t0 = mdates.date2num(dt.datetime.fromtimestamp(start, dt.timezone.utc))
    t1 = mdates.date2num(dt.datetime.fromtimestamp(end, dt.timezone.utc))
    ax.set_xlim(t0, t1)
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7, tz=dt.timezone.utc))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=dt.timezone.utc))

    if not series:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", va="center", color=MUTED, fontsize=13)
        return

    fmt = formatter(unit)
    # Grafana's time series defaults: 1 px lines, no fill.
    custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
    line_width = 1.2 * float(custom.get("lineWidth", 1))
    fill = float(custom.get("fillOpacity", 0)) / 100
    handles = []
    low, high = 0.0, 0.0
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        times = [mdates.date2num(dt.datetime.fromtimestamp(t, dt.timezone.utc)) for t in s.times]
        (line,) = ax.plot(times, s.values, color=color, linewidth=line_width)
        if fill > 0:
            ax.fill_between(times, s.values, color=color, alpha=fill, linewidth=0)
        handles.append(line)
        finite = [v for v in s.values if math.isfinite(v)]
        if finite:
            low, high = min(low, min(finite)), max(high, max(finite))
    if high <= low:
        high = low + 1
    ax.set_ylim(bottom=low - 0.05 * (high - low) if low < 0 else 0, top=high + 0.08 * (high - low))
    # Counts (replicas, weights) get whole-number ticks.
    whole = all(v == int(v) for s in series for v in s.values if math.isfinite(v))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=whole))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))

    if legend_rows:
        leg = fig.legend(
            handles, labels, loc="upper left", ncol=per_row, frameon=False, fontsize=7.5,
            bbox_to_anchor=((x + 0.2) / fw, 1 - (y + h - legend_h - 0.08) / fh),
            handlelength=1.0, handletextpad=0.4, columnspacing=1.2, labelcolor=TEXT, borderaxespad=0,
        )
        for line in leg.get_lines():
            line.set_linewidth(3)


def render(datas: list[PanelData], title: str, subtitle: str, start: float, end: float, out: Path) -> None:
    height_units, boxes = grid_of([d.panel for d in datas])
    header = 0.75
    fw = COLUMNS * COLUMN_IN
    fh = header + height_units * ROW_IN
    fig = plt.figure(figsize=(fw, fh), facecolor=BACKGROUND)
    fig.text(0.14 / fw, 1 - 0.28 / fh, title, color=TEXT, fontsize=14, fontweight="bold", va="center")
    fig.text(0.14 / fw, 1 - 0.56 / fh, subtitle, color=MUTED, fontsize=8.5, va="center")
    for i, d in enumerate(datas):
        x, y, w, h = boxes[i]
        rect = (x * COLUMN_IN, header + y * ROW_IN, w * COLUMN_IN, h * ROW_IN)
        draw_panel(fig, rect, (fw, fh), d, start, end)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, facecolor=BACKGROUND)
    plt.close(fig)


def render_one(d: PanelData, title: str, subtitle: str, start: float, end: float, out: Path) -> None:
    panel = dict(d.panel, gridPos={"x": 0, "y": 0, "w": COLUMNS, "h": d.panel.get("gridPos", {}).get("h", 8)})
    render([PanelData(panel, d.series, d.empty_targets)], title, subtitle, start, end, out)


# ------------------------------------------------------------------- main


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "panel"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboard", type=Path, default=DASHBOARD, help="dashboard JSON (default: %(default)s)")
    ap.add_argument("--out", type=Path, required=True, help="the PNG of the whole dashboard")
    ap.add_argument("--panel-dir", type=Path, help="also write one PNG per panel here")
    ap.add_argument("--panels", help="comma-separated panel ids or titles to draw (default: all)")
    ap.add_argument("--start", type=parse_time, help="window start: unix seconds or RFC 3339")
    ap.add_argument("--end", type=parse_time, help="window end (default: now)")
    ap.add_argument("--last", type=parse_duration, help="window: the last DURATION up to --end (default 120s)")
    ap.add_argument("--step", type=parse_duration, help="query resolution (default: window / 240, at least the scrape interval)")
    ap.add_argument("--scrape-interval", type=parse_duration, default=1.0,
                    help="Prometheus's scrape interval, for $__rate_interval (default 1s)")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="a dashboard variable's value")
    ap.add_argument("--title", help="heading (default: the dashboard's title)")
    args = ap.parse_args(argv)

    end = args.end if args.end is not None else time.time()
    if args.start is not None and args.last is not None:
        ap.error("give --start or --last, not both")
    start = args.start if args.start is not None else end - (args.last or 120.0)
    if start >= end:
        ap.error("the window is empty (start >= end)")
    span = end - start
    step = args.step or max(args.scrape_interval, round(span / 240, 3))

    dashboard = json.loads(args.dashboard.read_text())
    variables: dict[str, str] = {}
    for v in dashboard.get("templating", {}).get("list", []):
        current = v.get("current") or {}
        value = current.get("value")
        if isinstance(value, list):
            value = "|".join(value)
        # The datasource is the Prometheus given on the command line.
        variables[v["name"]] = str(value) if value is not None else ("prometheus" if v.get("type") == "datasource" else "")
    for kv in args.var:
        name, sep, value = kv.partition("=")
        if not sep:
            ap.error(f"--var wants NAME=VALUE, got {kv!r}")
        variables[name] = value
    rate_interval = max(step + args.scrape_interval, 4 * args.scrape_interval)
    variables.update({
        "__interval": prom_duration(step),
        "__interval_ms": str(round(step * 1000)),
        "__rate_interval": prom_duration(rate_interval),
        "__range": prom_duration(span),
        "__range_s": str(round(span)),
        "__range_ms": str(round(span * 1000)),
    })

    panels = [p for p in dashboard.get("panels", []) if p.get("type") != "row"]
    # Panels nested in collapsed rows.
    for row in dashboard.get("panels", []):
        if row.get("type") == "row":
            panels.extend(row.get("panels", []))
    if args.panels:
        wanted = {w.strip() for w in args.panels.split(",") if w.strip()}
        panels = [p for p in panels if str(p.get("id")) in wanted or p.get("title") in wanted]
        if not panels:
            ap.error(f"no panel matches {args.panels!r}")

    datas = [fetch(p, args.prometheus, variables, start, end, step) for p in panels]

    def utc(t: float, fmt: str) -> str:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime(fmt)

    title = args.title or dashboard.get("title", "dashboard")
    subtitle = (
        f"{args.dashboard.name} rendered by scripts/render_dashboard.py from Prometheus · "
        f"{utc(start, '%Y-%m-%d %H:%M:%S')} – {utc(end, '%H:%M:%S')} UTC · step {prom_duration(step)} · "
        f"$__rate_interval {prom_duration(rate_interval)}"
    )
    render(datas, title, subtitle, start, end, args.out)
    print(f"wrote {args.out}")
    if args.panel_dir:
        for d in datas:
            out = args.panel_dir / f"{d.panel.get('id', 0):02d}-{slug(d.panel.get('title', ''))}.png"
            render_one(d, d.panel.get("title", ""), subtitle, start, end, out)
        print(f"wrote {len(datas)} panels to {args.panel_dir}")

    no_data = 0
    for d in datas:
        name = d.panel.get("title", "")
        if not d.series:
            no_data += 1
            print(f"no data: {name}")
        elif d.empty_targets:
            print(f"empty queries in {name}: {', '.join(d.empty_targets)}")
    print(f"panels: {len(datas)} drawn, {no_data} with no data")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Small inline-SVG charts for the HTML report: no plotting library, no network, milliseconds.

A report must open offline and ``edge report`` must answer in well under a
second, so the few chart kinds it needs are drawn here directly as SVG text.
Every text is placed against an estimate of its width (:func:`text_width`) so
that no label is clipped or covers another: tick labels too close to the last
one are dropped, point labels go through a small placement pass
(:func:`_place_label`), and legends sit in a panel of their own beside the plot.

Latencies span six orders of magnitude between models and a few between the median
and the slowest run of one model, so latency axes are logarithmic and their ticks
are written in the unit that fits (``2 us``, ``0.5 ms``, ``1 s``).

Example::

    svg = latency_plot("Latency", [Distribution("fp32", samples)], plot_id="plot-latency")
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

# The drawing layer lives in svgaxes; its public names stay importable from here, where the
# report and the tests have always taken them.
from toolkit.report.svgaxes import (
    _BOTTOM,
    _INSET,
    _TOP,
    PALETTE,
    WIDTH,
    _Box,
    _Canvas,
    _legend,
    _legend_width,
    _Scale,
    _x_axis,
    _y_axis,
    format_bytes,
    short_duration,
    text_width,
)
from toolkit.units import format_duration
from toolkit.units import format_energy as format_energy  # one energy format: the report's


@dataclass(frozen=True)
class Distribution:
    """One row of a latency chart: a variant's samples (ms), its colour and its key."""

    label: str
    samples: Sequence[float]
    color: int = 0
    key: str = ""


@dataclass(frozen=True)
class Point:
    """One marker of a trade-off chart; ``size`` sets its area, ``front`` its outline."""

    label: str
    x: float
    y: float
    size: float
    color: int = 0
    on_front: bool = False
    key: str = ""


@dataclass(frozen=True)
class Series:
    """One line of a threads chart: ``(threads, p50 ms, p99 ms)`` points."""

    label: str
    points: Sequence[tuple[int, float, float]]
    color: int = 0


@dataclass(frozen=True)
class BarRow:
    """One row of a bar chart: a bar per series, each ``(value, text shown at its end)``;
    the first bar's colour is ``color``, the next ones follow it in the palette."""

    label: str
    bars: Sequence[tuple[float, str]]
    key: str = ""
    color: int = 0



def latency_plot(title: str, rows: Sequence[Distribution], *, plot_id: str,
                 legend: Sequence[tuple[int, str]] = (), separators: Sequence[int] = ()
                 ) -> str:
    """Horizontal box plots on a log axis: box p25..p75, bar at the median (its value above),
    whiskers p5..p95, a diamond at p99, a density strip under the box for the runs beyond
    the whiskers.

    The axis ends at four times the largest p99: a few runs 1000x slower than the median
    (a shared machine's hiccup) would otherwise squeeze every box to a pixel; they are
    counted at the right edge instead.  ``separators``: row indexes a thin line goes above.
    """
    row_height = 42
    height = _TOP + 10 + _BOTTOM + row_height * len(rows)
    arrays = [np.asarray(r.samples, dtype=np.float64) for r in rows]
    arrays = [a[np.isfinite(a) & (a > 0)] for a in arrays]
    stats = [np.percentile(a, [5, 25, 50, 75, 95, 99]) if a.size else None for a in arrays]
    largest_p99 = max((float(s[5]) for s in stats if s is not None), default=1.0)
    slowest = max((float(a.max()) for a in arrays if a.size), default=1.0)
    fastest = min((float(a.min()) for a in arrays if a.size), default=0.5)
    high = min(slowest, 4 * largest_p99) * 1.15
    clipped = slowest > high
    left = min(max(text_width(max((r.label for r in rows), key=len, default=""), 12) + 18,
                   70.0), 280.0)
    panel = _legend_width([name for _, name in legend]) if legend else 0.0
    gutter = 112.0 if clipped else 16.0
    right = WIDTH - panel - gutter
    scale = _Scale(fastest / 1.25, high, left, right, log=True)
    canvas = _Canvas(title, plot_id, height)
    axis_y = height - _BOTTOM
    _x_axis(canvas, scale, axis_y, _TOP, "latency per inference (log scale)", short_duration)
    for index, (row, values, stat) in enumerate(zip(rows, arrays, stats, strict=True)):
        y = _TOP + 10 + row_height * index + row_height / 2 + 4
        if index in separators:
            top = y - row_height / 2
            canvas.parts.append(f'<line x1="4" x2="{right:.1f}" y1="{top:.1f}" y2="{top:.1f}" '
                                'stroke="#bbb"/>')
        canvas.text(left - 8, y + 4, row.label, width=left - 12, size=12, anchor="end",
                    extra=f' data-variant="{escape(row.key)}"')
        if stat is None:
            canvas.text(left + 6, y + 4, "no samples")
            continue
        p5, p25, p50, p75, p95, p99 = (float(v) for v in stat)
        color = PALETTE[row.color % len(PALETTE)]
        whisker_end = min(scale(p95), right)
        canvas.parts.append(f'<line x1="{scale(p5):.1f}" x2="{whisker_end:.1f}" y1="{y:.1f}" '
                            f'y2="{y:.1f}" stroke="{color}"/>')
        x0, x1 = scale(p25), min(scale(p75), right)
        summary = (f"{row.label}: p5 {format_duration(p5)}, p25 {format_duration(p25)}, "
                   f"median {format_duration(p50)}, p75 {format_duration(p75)}, "
                   f"p95 {format_duration(p95)}, p99 {format_duration(p99)}, "
                   f"{values.size} runs")
        canvas.parts.append(f'<rect class="box mark" data-variant="{escape(row.key)}" '
                            f'x="{x0:.1f}" y="{y - 8:.1f}" width="{max(2.0, x1 - x0):.1f}" '
                            f'height="16" fill="{color}" fill-opacity="0.35" stroke="{color}">'
                            f'<title>{escape(summary)}</title></rect>')
        median_x = scale(p50)
        canvas.parts.append(f'<line x1="{median_x:.1f}" x2="{median_x:.1f}" y1="{y - 8:.1f}" '
                            f'y2="{y + 8:.1f}" stroke="#000" stroke-width="2"/>')
        median_text = format_duration(p50)
        half = text_width(median_text, 10) / 2
        canvas.text(min(max(median_x, left + half + 2), right - half - 2), y - 12,
                    median_text, size=10, anchor="middle")
        if p99 <= high:
            px = scale(p99)
            canvas.parts.append(f'<path d="M{px:.1f} {y - 5:.1f} L{px + 5:.1f} {y:.1f} '
                                f'L{px:.1f} {y + 5:.1f} L{px - 5:.1f} {y:.1f} Z" '
                                f'fill="#b00" class="p99"><title>p99 '
                                f'{escape(format_duration(p99))}</title></path>')
        beyond = values[(values < p5) | (values > p95)]
        canvas.parts.extend(_density_strip(scale, beyond[beyond <= high], y + 11, color,
                                           row.key))
        off_axis = values[values > high]
        if off_axis.size:
            canvas.parts.append(f'<path d="M{right + 2:.1f} {y - 5:.1f} L{right + 9:.1f} '
                                f'{y:.1f} L{right + 2:.1f} {y + 5:.1f} Z" fill="{color}">'
                                f'<title>{off_axis.size} runs beyond the axis, the slowest '
                                f'{escape(format_duration(float(off_axis.max())))}</title>'
                                '</path>')
            runs = "1 run:" if off_axis.size == 1 else f"{off_axis.size} runs \u2264"
            canvas.text(right + 12, y + 4,
                        f"{runs} {short_duration(float(off_axis.max()))}", size=10)
    if legend:
        _legend(canvas, WIDTH - panel + 8, _TOP + 20,
                [(PALETTE[c % len(PALETTE)], name) for c, name in legend])
    return canvas.svg()


def _density_strip(scale: _Scale, values: np.ndarray, y: float, color: str,
                   key: str) -> list[str]:
    """The runs beyond the whiskers as a strip under the box: one cell per few pixels,
    darker where more runs fell.  Thousands of dots on the box's own line read as the box
    (a tight run's real box vanished under its tail); a strip below it cannot."""
    if not values.size:
        return []
    cell = 3.0
    columns = np.floor((np.array([scale(v) for v in values]) - scale.start) / cell)
    cells, counts = np.unique(columns, return_counts=True)
    most = int(counts.max())
    parts = [f'<g class="outliers" data-variant="{escape(key)}"><title>{values.size} '
             f'run{"s" * (values.size != 1)} beyond the whiskers (the darker, the more '
             f'runs)</title>']
    parts.extend(f'<rect x="{scale.start + cell * c:.1f}" y="{y:.1f}" width="{cell:g}" '
                 f'height="4" fill="{color}" fill-opacity="{0.2 + 0.8 * n / most:.2f}"/>'
                 for c, n in zip(cells, counts, strict=True))
    parts.append("</g>")
    return parts


def tradeoff_plot(title: str, points: Sequence[Point], *, plot_id: str,
                  legend: Sequence[tuple[int, str]] = ()) -> str:
    """Accuracy (y, %) against median latency (x, ms) with marker area = file size.

    Points with ``on_front`` get a dark outline and are joined per colour by a dashed
    line (the Pareto front); a panel at the right explains marker sizes, the front and
    the colours in ``legend``.  The y axis never passes 100 %.
    """
    height = 400.0
    xs = [p.x for p in points] or [1.0]
    ys = [p.y for p in points] or [100.0]
    spread = max(ys) - min(ys)
    pad = max(0.15 * spread, 0.5)
    y_low, y_high = max(0.0, min(ys) - pad), min(100.0, max(ys) + pad)
    log_x = max(xs) / max(min(xs), 1e-12) > 3
    x_low, x_high = (min(xs) / 1.1, max(xs) * 1.1) if log_x else (
        min(xs) - 0.1 * (max(xs) - min(xs) or max(xs)),
        max(xs) + 0.1 * (max(xs) - min(xs) or max(xs)))
    largest = max((p.size for p in points), default=1.0) or 1.0
    sizes = sorted({p.size for p in points if p.size > 0})
    size_names = [format_bytes(s) for s in _legend_sizes(sizes)]
    panel = max(_legend_width([name for _, name in legend] + ["Pareto front"]),
                text_width("file size (area)", 11) + 16,
                2 * _radius(largest, largest) + 14 + max(
                    (text_width(n, 11) for n in size_names), default=0)) + 8
    left, right = 70.0, WIDTH - panel - 10
    top, bottom = float(_TOP), height - _BOTTOM
    sx = _Scale(max(x_low, 1e-12), x_high, left + _INSET, right - _INSET, log=log_x)
    sy = _Scale(y_low, y_high, bottom - _INSET, top + _INSET)
    frame = _Box(left + 1, top, right, bottom - 1)
    canvas = _Canvas(title, plot_id, height)
    _x_axis(canvas, sx, bottom, top,
            "median latency per inference" + (" (log scale)" if log_x else ""), short_duration)
    canvas.parts.append(f'<line x1="{left}" x2="{right:.1f}" y1="{bottom:.1f}" '
                        f'y2="{bottom:.1f}" stroke="#444"/>')
    _y_axis(canvas, sy, left, right, "accuracy (%)", lambda v: f"{v:g}")
    for group in sorted({p.color for p in points}):
        front = sorted((p for p in points if p.on_front and p.color == group),
                       key=lambda p: p.x)
        if len(front) > 1:
            path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in front)
            canvas.parts.append(f'<polyline points="{path}" fill="none" '
                                f'stroke="{PALETTE[group % len(PALETTE)]}" '
                                'stroke-dasharray="6 4" stroke-width="1.5"/>')
    markers = [(p, sx(p.x), sy(p.y), _radius(p.size, largest)) for p in points]
    for p, cx, cy, r in sorted(markers, key=lambda m: -m[3]):  # small ones drawn on top
        color = PALETTE[p.color % len(PALETTE)]
        canvas.parts.append(
            f'<circle class="mark" data-variant="{escape(p.key)}" cx="{cx:.1f}" cy="{cy:.1f}" '
            f'r="{r:.1f}" fill="{color}" fill-opacity="0.45" '
            f'stroke="{"#111" if p.on_front else color}" '
            f'stroke-width="{2.2 if p.on_front else 1}"><title>{escape(p.label)}: median '
            f'{escape(format_duration(p.x))}, accuracy {p.y:.2f} %, '
            f'{escape(format_bytes(p.size))}{", on the Pareto front" if p.on_front else ""}'
            '</title></circle>')
    obstacles = [_Box(cx - r, cy - r, cx + r, cy + r) for _, cx, cy, r in markers]
    placed: list[_Box] = []
    for p, cx, cy, r in sorted(markers, key=lambda m: (not m[0].on_front, m[1])):
        x, y, anchor, box = _place_label(p.label, cx, cy, r, frame, obstacles, placed)
        placed.append(box)
        if leader := _leader(cx, cy, r, box):
            canvas.parts.append(leader)
        canvas.text(x, y, p.label, anchor=anchor,
                    extra=f' class="point-label" data-variant="{escape(p.key)}" '
                    'paint-order="stroke" stroke="#fff" stroke-width="3"')
    _tradeoff_legend(canvas, right + 18, top + 12, sizes, largest, legend)
    return canvas.svg()


def _radius(size: float, largest: float) -> float:
    return 3.0 + 15.0 * math.sqrt(max(size, 0.0) / largest)


def _legend_sizes(sizes: list[float]) -> list[float]:
    """The largest and smallest sizes (and one between when they are far apart)."""
    if not sizes:
        return []
    chosen = [sizes[-1]]
    if sizes[0] < 0.7 * sizes[-1]:
        if sizes[0] < 0.15 * sizes[-1]:
            chosen.append(math.sqrt(sizes[0] * sizes[-1]))
        chosen.append(sizes[0])
    return chosen


def _tradeoff_legend(canvas: _Canvas, x: float, y: float, sizes: list[float],
                     largest: float, legend: Sequence[tuple[int, str]]) -> None:
    canvas.text(x, y, "file size (area)")
    y += 10
    for size in _legend_sizes(sizes):
        r = _radius(size, largest)
        cx = x + _radius(largest, largest)
        canvas.parts.append(f'<circle cx="{cx:.1f}" cy="{y + r:.1f}" r="{r:.1f}" '
                            'fill="#999" fill-opacity="0.3" stroke="#666"/>')
        canvas.text(cx + _radius(largest, largest) + 8, y + r + 4, format_bytes(size))
        y += 2 * r + 8
    y += 14
    canvas.parts.append(f'<line x1="{x:.1f}" x2="{x + 24:.1f}" y1="{y - 4:.1f}" '
                        f'y2="{y - 4:.1f}" stroke="#333" stroke-dasharray="6 4" '
                        'stroke-width="1.5"/>')
    canvas.parts.append(f'<circle cx="{x + 12:.1f}" cy="{y - 4:.1f}" r="4" fill="none" '
                        'stroke="#111" stroke-width="2.2"/>')
    canvas.text(x + 30, y, "Pareto front")
    if len(legend) > 1:
        _legend(canvas, x, y + 22, [(PALETTE[c % len(PALETTE)], name) for c, name in legend])


#: Directions tried around a marker, in order of preference (degrees, y pointing down).
_DIRECTIONS = (0, 180, -90, 90, -45, 45, -135, 135, -22.5, 22.5, -157.5, 157.5, -67.5, 67.5,
               -112.5, 112.5)


def _place_label(label: str, cx: float, cy: float, r: float, frame: _Box,
                 obstacles: Sequence[_Box], placed: Sequence[_Box]
                 ) -> tuple[float, float, str, _Box]:
    """Where ``label`` of the marker at (cx, cy) goes: the first spot around it (right,
    left, above, below, the diagonals, then further out) whose text box stays inside
    ``frame`` and touches no marker but its own and no label already placed; the least
    crowded spot when none is free.  Returns the text's x, baseline y, anchor and box."""
    width, ascent, descent = text_width(label, 11), 10.0, 3.0
    own = _Box(cx - r, cy - r, cx + r, cy + r)
    best: tuple[float, tuple[float, float, str, _Box]] | None = None
    for gap in (3.0, 12.0, 24.0, 40.0, 60.0, 85.0):
        for degrees in _DIRECTIONS:
            cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
            px, py = cx + (r + gap) * cos, cy + (r + gap) * sin
            anchor = "start" if cos > 0.3 else "end" if cos < -0.3 else "middle"
            x0 = px if anchor == "start" else px - width if anchor == "end" else px - width / 2
            top = py - ascent - descent if sin < -0.3 else py if sin > 0.3 \
                else py - (ascent + descent) / 2
            box = _Box(x0 - 1, top, x0 + width + 1, top + ascent + descent)
            if not box.within(frame):
                continue
            crowd = sum(box.overlaps(o) for o in obstacles if o != own) \
                + 3 * sum(box.overlaps(o) for o in placed)
            if crowd == 0:
                return px, top + ascent, anchor, box
            if best is None or crowd < best[0]:
                best = (crowd, (px, top + ascent, anchor, box))
    if best is not None:
        return best[1]
    return cx + r + 3, cy + 4, "start", _Box(cx + r + 2, cy - 6, cx + r + 4 + width, cy + 7)


def _leader(cx: float, cy: float, r: float, box: _Box) -> str:
    """A thin line from a marker's edge to its label when the label had to move away."""
    nx, ny = min(max(cx, box.x0), box.x1), min(max(cy, box.y0), box.y1)
    distance = math.hypot(nx - cx, ny - cy)
    if distance <= r + 8:
        return ""
    ex, ey = cx + (nx - cx) * r / distance, cy + (ny - cy) * r / distance
    return (f'<line x1="{ex:.1f}" y1="{ey:.1f}" x2="{nx:.1f}" y2="{ny:.1f}" stroke="#888" '
            'stroke-width="0.8"/>')


def threads_plot(title: str, series: Sequence[Series], *, plot_id: str) -> str:
    """Median latency (log axis, bar up to p99) against thread count, a line per recipe;
    the legend says each recipe's fastest count and its speed-up over the fewest threads."""
    height = 340.0
    counts = sorted({t for s in series for t, _, _ in s.points})
    values = [v for s in series for _, p50, p99 in s.points for v in (p50, p99)] or [1.0]
    names = []
    for s in series:
        ordered = sorted(s.points)
        best = min(ordered, key=lambda p: p[1])
        fewest = ordered[0]
        plural = "s" * (best[0] != 1)
        names.append(f"{s.label}: fastest on {best[0]} thread{plural}" if best is fewest
                     or best[1] <= 0 else f"{s.label}: {fewest[1] / best[1]:.2f}x faster on "
                     f"{best[0]} than on {fewest[0]}")
    panel = _legend_width(names) + 8
    left, right = 78.0, WIDTH - panel - 10
    top, bottom = float(_TOP), height - _BOTTOM
    sy = _Scale(min(values) / 1.3, max(values) * 1.3, bottom - 10, top + 10, log=True)
    canvas = _Canvas(title, plot_id, height)
    _y_axis(canvas, sy, left, right, "latency per inference (log)", short_duration)
    step = (right - left - 60) / max(len(counts) - 1, 1)

    def x_of(threads: int) -> float:
        return left + 30 + step * counts.index(threads)

    canvas.parts.append(f'<line x1="{left}" x2="{right:.1f}" y1="{bottom:.1f}" '
                        f'y2="{bottom:.1f}" stroke="#444"/>')
    for threads in counts:
        canvas.text(x_of(threads), bottom + 15, str(threads), anchor="middle")
    canvas.text((left + right) / 2, height - 8, "threads", size=12, anchor="middle")
    for s in series:
        color = PALETTE[s.color % len(PALETTE)]
        ordered = sorted(s.points)
        if len(ordered) > 1:
            path = " ".join(f"{x_of(t):.1f},{sy(p50):.1f}" for t, p50, _ in ordered)
            canvas.parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                                'stroke-width="2"/>')
        for threads, p50, p99 in ordered:
            x = x_of(threads)
            canvas.parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{sy(p50):.1f}" '
                                f'y2="{sy(p99):.1f}" stroke="{color}" stroke-opacity="0.6"/>')
            canvas.parts.append(f'<line x1="{x - 4:.1f}" x2="{x + 4:.1f}" y1="{sy(p99):.1f}" '
                                f'y2="{sy(p99):.1f}" stroke="{color}"/>')
            canvas.parts.append(
                f'<circle class="mark" data-variant="{escape(s.label)}-t{threads}" '
                f'cx="{x:.1f}" cy="{sy(p50):.1f}" r="4.5" fill="{color}"><title>'
                f'{escape(s.label)} on {threads} threads: median {escape(format_duration(p50))}'
                f', p99 {escape(format_duration(p99))}</title></circle>')
    _legend(canvas, right + 18, top + 14,
            [(PALETTE[s.color % len(PALETTE)], name) for s, name in zip(series, names,
                                                                        strict=True)])
    return canvas.svg()


def bar_plot(title: str, rows: Sequence[BarRow], *, plot_id: str, axis: str,
             label: Callable[[float], str], legend: Sequence[tuple[int, str]] = ()) -> str:
    """Horizontal bars from zero, one group per row and a bar per series, each with its
    text; ``legend`` names the colours ``(palette index, name)``."""
    per_row = max((len(r.bars) for r in rows), default=1)
    bar, row_height = 14.0, 14.0 * per_row + 12
    height = _TOP + 8 + _BOTTOM + row_height * len(rows)
    left = min(max(text_width(max((r.label for r in rows), key=len, default=""), 12) + 18,
                   70.0), 280.0)
    panel = _legend_width([name for _, name in legend]) + 8 if legend else 0.0
    widest = max((text_width(text, 10) for r in rows for _, text in r.bars), default=0.0)
    right = WIDTH - panel - 12
    high = max((v for r in rows for v, _ in r.bars), default=1.0) or 1.0
    scale = _Scale(0.0, high, left, right - widest - 10)
    canvas = _Canvas(title, plot_id, height)
    _x_axis(canvas, scale, height - _BOTTOM, _TOP, axis, label)
    for index, row in enumerate(rows):
        y_top = _TOP + 8 + row_height * index + 6
        canvas.text(left - 8, y_top + bar * per_row / 2 + 4, row.label, width=left - 12,
                    size=12, anchor="end")
        for number, (value, text) in enumerate(row.bars):
            y = y_top + bar * number
            color = PALETTE[(row.color + number) % len(PALETTE)]
            end = scale(max(value, 0.0))
            canvas.parts.append(f'<rect class="mark" data-variant="{escape(row.key)}" '
                                f'x="{left:.1f}" y="{y:.1f}" width="{max(end - left, 1.5):.1f}" '
                                f'height="{bar - 2:.1f}" fill="{color}"><title>'
                                f'{escape(row.label)}: {escape(text)}</title></rect>')
            canvas.text(max(end, left + 1.5) + 4, y + bar - 4, text, size=10)
    if legend:
        _legend(canvas, right + 18, _TOP + 14,
                [(PALETTE[c % len(PALETTE)], name) for c, name in legend])
    return canvas.svg()


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """Labels of ``(label, cost, quality)`` points no other point beats on both (lower cost)."""
    front = []
    for label, cost, quality in points:
        dominated = any(c <= cost and q >= quality and (c < cost or q > quality)
                        for other, c, q in points if other != label)
        if not dominated:
            front.append(label)
    return front


def trend_plot(title: str, values: Sequence[float], changes: Sequence[int], *, plot_id: str,
               label: Callable[[float], str], caption: str,
               names: Sequence[str] = (), links: Sequence[str] = ()) -> str:
    """A figure over runs (x: run number, oldest first), each segment's median drawn as a
    level and a dashed line before each run in ``changes`` (the first of a new level);
    ``names`` (one per run) are the points' tooltips, ``links`` (one per run, "" for none)
    the URLs a click on each point opens."""
    height = 340.0
    left, right = 78.0, WIDTH - 20.0
    top, bottom = float(_TOP), height - _BOTTOM
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
    sx = _Scale(1, max(len(values), 2), left + 12, right - 12)
    sy = _Scale(low - pad, high + pad, bottom - 6, top + 6)
    canvas = _Canvas(title, plot_id, height)
    _y_axis(canvas, sy, left, right, caption, label)
    _x_axis(canvas, sx, bottom, top, "run (oldest first)", lambda v: f"{v:g}")
    bounds = [0, *changes, len(values)]
    for start, end in itertools.pairwise(bounds):
        level = float(np.median(values[start:end]))
        canvas.parts.append(f'<line class="level" x1="{sx(start + 1):.1f}" '
                            f'x2="{sx(end):.1f}" y1="{sy(level):.1f}" y2="{sy(level):.1f}" '
                            f'stroke="{PALETTE[1]}" stroke-width="2"/>')
    for index in changes:
        x = (sx(index) + sx(index + 1)) / 2
        canvas.parts.append(f'<line class="change" x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" '
                            f'y2="{bottom:.1f}" stroke="{PALETTE[3]}" stroke-dasharray="5 4"/>')
        canvas.text(x + 4, top + 12, f"change at run {index + 1}", size=11,
                    extra=f' fill="{PALETTE[3]}"')
    path = " ".join(f"{sx(i + 1):.1f},{sy(v):.1f}" for i, v in enumerate(values))
    canvas.parts.append(f'<polyline points="{path}" fill="none" stroke="{PALETTE[0]}" '
                        'stroke-opacity="0.5"/>')
    for i, value in enumerate(values):
        name = names[i] if i < len(names) else f"run {i + 1}"
        point = (f'<circle class="mark" cx="{sx(i + 1):.1f}" cy="{sy(value):.1f}" r="3.5" '
                 f'fill="{PALETTE[0]}"><title>{escape(name)}: {escape(label(value))}</title>'
                 '</circle>')
        link = links[i] if i < len(links) else ""
        canvas.parts.append(f'<a href="{escape(link)}">{point}</a>' if link else point)
    return canvas.svg()

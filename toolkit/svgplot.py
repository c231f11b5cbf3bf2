"""Small inline-SVG charts for the HTML report: no plotting library, no network, milliseconds.

A report must open offline and ``edge report`` must answer in well under a
second, so the few chart kinds it needs are drawn here directly as SVG text.

Example::

    svg = box_plot("Latency", [("local/fp32", samples)], unit="ms")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
_WIDTH = 720
_LEFT, _RIGHT, _TOP, _BOTTOM = 150, 30, 36, 44


def box_plot(title: str, groups: Sequence[tuple[str, Sequence[float]]], *, unit: str,
             plot_id: str) -> str:
    """Horizontal box plots: box p25..p75, line at the median, whiskers p5..p95, dots beyond."""
    row = 34
    height = _TOP + _BOTTOM + row * len(groups)
    arrays = [np.asarray(values, dtype=np.float64) for _, values in groups]
    low = min((float(a.min()) for a in arrays if a.size), default=0.0)
    high = max((float(a.max()) for a in arrays if a.size), default=1.0)
    scale = _Scale(min(0.0, low) if low < 0 else low * 0.95, high * 1.02 if high > 0 else 1.0,
                   _LEFT, _WIDTH - _RIGHT)
    parts = [_frame(title, height, plot_id), _x_axis(scale, height - _BOTTOM, unit, height)]
    for index, ((label, _), values) in enumerate(zip(groups, arrays, strict=True)):
        y = _TOP + row * index + row / 2
        color = PALETTE[index % len(PALETTE)]
        parts.append(_label(label, y))
        if not values.size:
            continue
        p5, p25, p50, p75, p95 = np.percentile(values, [5, 25, 50, 75, 95])
        parts.append(f'<line x1="{scale(p5):.1f}" x2="{scale(p95):.1f}" y1="{y:.1f}" '
                     f'y2="{y:.1f}" stroke="{color}"/>')
        parts.append(f'<rect x="{scale(p25):.1f}" y="{y - 10:.1f}" '
                     f'width="{max(1.0, scale(p75) - scale(p25)):.1f}" height="20" '
                     f'fill="{color}" fill-opacity="0.35" stroke="{color}">'
                     f'<title>{escape(label)}: p25 {p25:.3f}, median {p50:.3f}, '
                     f'p75 {p75:.3f} {unit}</title></rect>')
        parts.append(f'<line x1="{scale(p50):.1f}" x2="{scale(p50):.1f}" y1="{y - 10:.1f}" '
                     f'y2="{y + 10:.1f}" stroke="#000" stroke-width="2"/>')
        outliers = values[(values < p5) | (values > p95)]
        if outliers.size > 200:  # enough dots to show the tail without bloating the file
            outliers = np.quantile(outliers, np.linspace(0, 1, 200))
        parts.extend(f'<circle cx="{scale(v):.1f}" cy="{y:.1f}" r="1.5" fill="{color}" '
                     'fill-opacity="0.5"/>' for v in outliers)
    parts.append("</svg>")
    return "\n".join(parts)


def scatter_plot(title: str, points: Sequence[tuple[str, float, float, float]], *,
                 x_unit: str, y_unit: str, plot_id: str,
                 fronts: Sequence[Sequence[str]] = (), size_label: str = "") -> str:
    """Labelled points ``(label, x, y, size)``; marker area grows with size.

    Each of ``fronts`` (labels, e.g. one Pareto front per board) is outlined and joined.
    """
    height = 380
    xs = [p[1] for p in points] or [0.0, 1.0]
    ys = [p[2] for p in points] or [0.0, 1.0]
    sx = _Scale(*_padded(min(xs), max(xs)), _LEFT, _WIDTH - _RIGHT)
    sy = _Scale(*_padded(min(ys), max(ys)), height - _BOTTOM, _TOP)
    largest = max((p[3] for p in points), default=1.0) or 1.0
    parts = [_frame(title, height, plot_id), _x_axis(sx, height - _BOTTOM, x_unit, height),
             _y_axis(sy, y_unit)]
    front = {label for labels in fronts for label in labels}
    for labels in fronts:
        chosen = [p for p in sorted(points, key=lambda p: p[1]) if p[0] in labels]
        if len(chosen) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for _, x, y, _ in chosen)
            parts.append(f'<polyline points="{path}" fill="none" stroke="#d62728" '
                         'stroke-dasharray="5 3" stroke-width="1.5"/>')
    for index, (label, x, y, size) in enumerate(points):
        radius = 4 + 14 * math.sqrt(max(size, 0.0) / largest)
        on_front = label in front
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{radius:.1f}" '
                     f'fill="{PALETTE[index % len(PALETTE)]}" fill-opacity="0.55" '
                     f'stroke="{"#d62728" if on_front else "#333"}" '
                     f'stroke-width="{2 if on_front else 1}"><title>{escape(label)}: '
                     f'{x:.3f} {x_unit}, {y:.3f} {y_unit}{size_label and ", "}'
                     f'{escape(size_label)} {size:,.0f}</title></circle>')
        parts.append(f'<text x="{sx(x) + radius + 3:.1f}" y="{sy(y) + 4:.1f}" '
                     f'font-size="12">{escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def bar_chart(title: str, bars: Sequence[tuple[str, float]], *, unit: str, plot_id: str,
              colors: Sequence[int] | None = None) -> str:
    """Horizontal bars, one per label; ``colors`` picks a palette entry per bar."""
    row = 28
    height = _TOP + _BOTTOM + row * len(bars)
    scale = _Scale(0.0, max((v for _, v in bars), default=1.0) * 1.1 or 1.0, _LEFT,
                   _WIDTH - _RIGHT)
    parts = [_frame(title, height, plot_id), _x_axis(scale, height - _BOTTOM, unit, height)]
    for index, (label, value) in enumerate(bars):
        y = _TOP + row * index + row / 2
        color = PALETTE[(colors[index] if colors else index) % len(PALETTE)]
        parts.append(_label(label, y))
        parts.append(f'<rect x="{_LEFT}" y="{y - 9:.1f}" width="{scale(value) - _LEFT:.1f}" '
                     f'height="18" fill="{color}"><title>{escape(label)}: {value:.4g} {unit}'
                     '</title></rect>')
        parts.append(f'<text x="{scale(value) + 4:.1f}" y="{y + 4:.1f}" font-size="11">'
                     f'{value:.4g}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """Labels of ``(label, cost, quality)`` points no other point beats on both (lower cost)."""
    front = []
    for label, cost, quality in points:
        dominated = any(c <= cost and q >= quality and (c < cost or q > quality)
                        for other, c, q in points if other != label)
        if not dominated:
            front.append(label)
    return front


class _Scale:
    """Maps data values in [low, high] to pixels in [start, end] (either direction)."""

    def __init__(self, low: float, high: float, start: float, end: float) -> None:
        self.low, self.high = low, high if high > low else low + 1.0
        self.start, self.end = start, end

    def __call__(self, value: float) -> float:
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)

    def ticks(self, count: int = 6) -> list[float]:
        raw = (self.high - self.low) / count
        step = 10 ** math.floor(math.log10(raw))
        step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
        first = math.ceil(self.low / step) * step
        return [first + i * step for i in range(count + 2) if first + i * step <= self.high]


def _padded(low: float, high: float) -> tuple[float, float]:
    pad = (high - low) * 0.12 or abs(high) * 0.1 or 1.0
    return low - pad, high + pad


def _frame(title: str, height: float, plot_id: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" id="{escape(plot_id)}" '
            f'role="img" aria-label="{escape(title)}" viewBox="0 0 {_WIDTH} {height:.0f}" '
            f'width="{_WIDTH}" height="{height:.0f}" font-family="sans-serif">\n'
            f'<title>{escape(title)}</title>\n'
            f'<text x="{_WIDTH / 2}" y="20" text-anchor="middle" font-size="14" '
            f'font-weight="bold">{escape(title)}</text>')


def _x_axis(scale: _Scale, y: float, unit: str, height: float) -> str:
    parts = [f'<line x1="{scale.start}" x2="{scale.end}" y1="{y:.1f}" y2="{y:.1f}" '
             'stroke="#444"/>']
    for tick in scale.ticks():
        x = scale(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{y:.1f}" '
                     'stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{y + 15:.1f}" text-anchor="middle" '
                     f'font-size="11">{tick:g}</text>')
    parts.append(f'<text x="{(scale.start + scale.end) / 2:.1f}" y="{height - 6:.1f}" '
                 f'text-anchor="middle" font-size="12">{escape(unit)}</text>')
    return "\n".join(parts)


def _y_axis(scale: _Scale, unit: str) -> str:
    parts = [f'<line x1="{_LEFT}" x2="{_LEFT}" y1="{scale.end}" y2="{scale.start}" '
             'stroke="#444"/>']
    for tick in scale.ticks():
        y = scale(tick)
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{tick:g}</text>')
    parts.append(f'<text x="16" y="{(scale.start + scale.end) / 2:.1f}" font-size="12" '
                 f'transform="rotate(-90 16 {(scale.start + scale.end) / 2:.1f})" '
                 f'text-anchor="middle">{escape(unit)}</text>')
    return "\n".join(parts)


def _label(text: str, y: float) -> str:
    return (f'<text x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="12">'
            f'{escape(text)}</text>')

"""The drawing layer under :mod:`toolkit.report.svgplot`: an SVG canvas, scales, axes, legends
and the text-width estimate every placement relies on.

Kept apart from the charts so that each chart reads as what it draws; nothing here knows
what a latency or a recipe is.  Every text is placed against an estimate of its width
(:func:`text_width`) so that no label is clipped or covers another: tick labels too close
to the last one are dropped and legends sit in a panel of their own beside the plot.

Example::

    canvas = _Canvas("Latency", "plot-latency", 200)
    _x_axis(canvas, _Scale(0.1, 10, 80, 900, log=True), 160, 40, "latency", short_duration)
    svg = canvas.svg()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

from toolkit.units import format_duration

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
#: The drawing's own width: the SVG scales to the page's width (``width="100%"``) and keeps
#: its proportions, so this sets the text's size against the page, not the chart's width.
WIDTH = 960
_TOP, _BOTTOM = 40, 46
#: Width of an average character in em.  Chromium's sans-serif on Debian (DejaVu Sans)
#: averages about 0.55 em over names and figures; 0.62 leaves room for wide letters.
_CHAR_EM = 0.62
_INSET = 24  # pixels kept free inside a scatter's frame so the largest marker fits


def text_width(text: str, size: float) -> float:
    """Estimated rendered width of ``text`` at font ``size`` (pixels)."""
    return _CHAR_EM * size * len(text)


def short_duration(ms: float) -> str:
    """A tick label: :func:`format_duration` without trailing zeros (``2 us``, ``0.5 ms``)."""
    text = format_duration(ms)
    number, _, unit = text.partition(" ")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return f"{number} {unit}"


def format_bytes(value: float) -> str:
    """``value`` bytes in B, KiB or MiB to three significant figures."""
    for factor, unit in ((2**20, "MiB"), (2**10, "KiB")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {unit}"
    return f"{value:.0f} B"


@dataclass(frozen=True)
class _Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: _Box) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 \
            and other.y0 < self.y1

    def within(self, other: _Box) -> bool:
        return self.x0 >= other.x0 and self.x1 <= other.x1 and self.y0 >= other.y0 \
            and self.y1 <= other.y1


@dataclass
class _Canvas:
    """An SVG being written: its title, id, height and the parts written so far."""

    title: str
    plot_id: str
    height: float
    parts: list[str] = field(default_factory=list)

    def text(self, x: float, y: float, text: str, *, size: float = 11, anchor: str = "start",
             extra: str = "", width: float | None = None) -> None:
        """``text`` at (x, y); cut with an ellipsis to ``width`` pixels, whole in a tooltip."""
        shown = text if width is None else _fit(text, width, size)
        tooltip = f"<title>{escape(text)}</title>" if shown != text else ""
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:g}" '
                          f'text-anchor="{anchor}"{extra}>{tooltip}{escape(shown)}</text>')

    def svg(self) -> str:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" '
                f'id="{escape(self.plot_id)}" role="img" aria-label="{escape(self.title)}" '
                f'viewBox="0 0 {WIDTH} {self.height:.0f}" width="100%" '
                'font-family="sans-serif">\n'
                f'<title>{escape(self.title)}</title>\n'
                f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="14" '
                f'font-weight="bold">{escape(_fit(self.title, WIDTH - 20, 14))}</text>')
        return "\n".join([head, *self.parts, "</svg>"])


class _Scale:
    """Maps data values in [low, high] to pixels in [start, end], linearly or by log10."""

    def __init__(self, low: float, high: float, start: float, end: float, *,
                 log: bool = False) -> None:
        if log:
            low, high = max(low, 1e-12), max(high, 1e-12)
        if high <= low:
            low, high = (low / 1.5, high * 1.5) if log else (low - 1.0, high + 1.0)
        self.low, self.high, self.start, self.end, self.log = low, high, start, end, log

    def _t(self, value: float) -> float:
        return math.log10(max(value, 1e-12)) if self.log else value

    def __call__(self, value: float) -> float:
        span = self._t(self.high) - self._t(self.low)
        return self.start + (self._t(value) - self._t(self.low)) / span * (self.end - self.start)

    def ticks(self, label: Callable[[float], str], size: float = 11) -> list[float]:
        """Tick values whose labels (``label(v)`` at ``size``) do not touch each other."""
        if self.log and self.high / self.low >= 10:
            candidates: list[float] = []
            for decade in range(math.floor(math.log10(self.low)),
                                math.ceil(math.log10(self.high)) + 1):
                candidates.extend(m * 10.0 ** decade for m in (1, 2, 5))
        else:
            candidates = _nice_ticks(self.low, self.high)
        inside = [v for v in candidates
                  if self.low <= v * (1 + 1e-9) and v <= self.high * (1 + 1e-9)]
        # powers of ten first when they are candidates, then the 2s and 5s where there is room
        decades = [v for v in inside if math.isclose(math.log10(v), round(math.log10(v)))] \
            if self.log and self.high / self.low >= 10 else []
        return self._spaced(inside, label, size, keep=self._spaced(decades, label, size))

    def _spaced(self, values: list[float], label: Callable[[float], str], size: float,
                keep: Sequence[float] = ()) -> list[float]:
        chosen: list[float] = list(keep)
        for value in values:
            if value in chosen:
                continue
            half = text_width(label(value), size) / 2 + 6
            if all(abs(self(value) - self(other)) >= half + text_width(label(other), size) / 2
                   for other in chosen):
                chosen.append(value)
        return sorted(chosen)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * step)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(count + 3)
            if first + i * step <= high * (1 + 1e-9)]


def _fit(text: str, width: float, size: float) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    most = max(1, int(width / (_CHAR_EM * size)))
    return text if len(text) <= most else text[:most - 1] + "\u2026"


def _x_axis(canvas: _Canvas, scale: _Scale, y: float, top: float, caption: str,
            label: Callable[[float], str]) -> None:
    canvas.parts.append(f'<line x1="{scale.start:.1f}" x2="{scale.end:.1f}" y1="{y:.1f}" '
                        f'y2="{y:.1f}" stroke="#444"/>')
    for tick in scale.ticks(label):
        x = scale(tick)
        canvas.parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{y:.1f}" '
                            'stroke="#e4e4e4"/>')
        canvas.text(x, y + 15, label(tick), anchor="middle")
    canvas.text((scale.start + scale.end) / 2, canvas.height - 8, caption, size=12,
                anchor="middle")


def _y_axis(canvas: _Canvas, scale: _Scale, x: float, right: float, caption: str,
            label: Callable[[float], str]) -> None:
    canvas.parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{scale.end:.1f}" '
                        f'y2="{scale.start:.1f}" stroke="#444"/>')
    vertical = _Scale(scale.low, scale.high, 0, abs(scale.start - scale.end), log=scale.log)
    for tick in vertical.ticks(lambda _: "000", size=11):  # spacing by line height
        y = scale(tick)
        canvas.parts.append(f'<line x1="{x:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                            'stroke="#e4e4e4"/>')
        canvas.text(x - 6, y + 4, label(tick), anchor="end")
    middle = (scale.start + scale.end) / 2
    canvas.text(16, middle, caption, size=12, anchor="middle",
                extra=f' transform="rotate(-90 16 {middle:.1f})"')


def _legend(canvas: _Canvas, x: float, y: float,
            entries: Sequence[tuple[str, str]]) -> float:
    """Colour swatches with names from ``(colour, name)``, one a line; returns the next y."""
    for color, name in entries:
        canvas.parts.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="12" height="10" '
                            f'fill="{color}" fill-opacity="0.6" stroke="{color}"/>')
        canvas.text(x + 18, y, name)
        y += 18
    return y


def _legend_width(names: Sequence[str]) -> float:
    return max((text_width(n, 11) for n in names), default=0.0) + 34

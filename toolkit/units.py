"""Durations printed in a unit that fits them, to three significant figures.

Models on boards span six orders of magnitude: a digits CNN takes 15 us, a detector
on a Raspberry Pi 4 takes a second.  A fixed ``%.3f ms`` prints the first as
``0.015`` (two significant figures, and a 2 us model as ``0.002``), so every table
and report shows durations through :func:`format_duration` instead.

Example::

    format_duration(0.00235)  # '2.35 us'
    format_duration(0.684)    # '0.684 ms'
    format_duration(1523.0)   # '1.52 s'
"""

from __future__ import annotations

import math

__all__ = ["format_duration"]

#: (factor from milliseconds, unit, smallest value in milliseconds shown in that unit).
_UNITS = ((1e-3, "s", 1000.0), (1.0, "ms", 0.1), (1e3, "us", 1e-4), (1e6, "ns", 0.0))


def format_duration(ms: float) -> str:
    """``ms`` milliseconds as ``"2.35 us"``, ``"0.684 ms"`` or ``"1.52 s"`` (3 significant figures).

    Below 0.1 ms the unit is us, below 0.1 us ns, from 1000 ms on s; values are rounded to
    three significant figures before the unit is chosen, so 99.96 us prints as ``0.100 ms``.
    """
    if not math.isfinite(ms):
        return f"{ms} ms"
    if ms == 0:
        return "0 ms"
    rounded = float(f"{abs(ms):.3g}")
    sign = "-" if ms < 0 else ""
    factor, unit, _ = next(u for u in _UNITS if rounded >= u[2])  # ns takes what is left
    value = rounded * factor
    decimals = max(0, 2 - math.floor(math.log10(value) + 1e-9))
    return f"{sign}{value:.{decimals}f} {unit}"

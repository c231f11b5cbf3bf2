"""Durations, sizes and energy printed in a unit that fits them.

Models on boards span six orders of magnitude: a digits CNN takes 15 us, a detector
on a Raspberry Pi 4 takes a second.  A fixed ``%.3f ms`` prints the first as
``0.015`` (two significant figures, and a 2 us model as ``0.002``), so every table
and report shows durations through :func:`format_duration` instead.

Example::

    format_duration(0.00235)  # '2.35 us'
    format_duration(0.684)    # '0.684 ms'
    format_duration(1523.0)   # '1.52 s'
    format_size(36_962_304)   # '35.2 MiB'
    format_memory(500_000)    # '0.5 MiB'
    format_energy(9.247)      # '9.25 mJ'

Sizes and memory print as deploy's report prints them (a file in KiB or MiB, peak
memory in MiB, one decimal), energy in J, mJ or uJ, so ``edge check`` and the report
show one figure the same way.
"""

from __future__ import annotations

import math

__all__ = ["format_duration", "format_energy", "format_memory", "format_size"]

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


def format_size(size_bytes: float) -> str:
    """A file size as deploy's report shows it: KiB with one decimal, MiB from 1 MiB on."""
    if size_bytes >= 2**20:
        return f"{size_bytes / 2**20:.1f} MiB"
    return f"{size_bytes / 1024:.1f} KiB"


def format_memory(size_bytes: float) -> str:
    """Peak memory as deploy's report shows it: MiB with one decimal (``35.2 MiB``)."""
    return f"{size_bytes / 2**20:.1f} MiB"


#: (factor from millijoules, unit, smallest value in millijoules shown in that unit).
_ENERGY_UNITS = ((1e-3, "J", 1000.0), (1.0, "mJ", 1.0), (1e3, "uJ", 0.0))


def format_energy(mj: float) -> str:
    """``mj`` millijoules in J, mJ or uJ to three significant figures (``"9.25 mJ"``).

    Below 1 J and above 1 uJ it prints as the report's energy column does (``%.3g``).
    """
    if not math.isfinite(mj):
        return f"{mj} mJ"
    if mj == 0:
        return "0 mJ"
    rounded = float(f"{abs(mj):.3g}")
    sign = "-" if mj < 0 else ""
    factor, unit, _ = next(u for u in _ENERGY_UNITS if rounded >= u[2])
    return f"{sign}{rounded * factor:.3g} {unit}"

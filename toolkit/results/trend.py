"""A figure of one target x variant over the stored runs, with the runs it moved at marked.

:func:`trend` reads the series from the store (oldest run first) and finds its change
points with ruptures' PELT (``ruptures.Pelt``) rather than a hand-written search:

- the series is scaled by its run-to-run noise, estimated robustly as the median absolute
  difference between successive runs (x 1.4826 / sqrt 2, a standard deviation for normal
  noise), so one penalty fits a 15 us model and a 1 s one; a figure most runs repeat
  exactly (a size, an accuracy) is scaled by its mean difference instead, so that any
  lasting move of it is a change;
- the cost is L1 (distance to each segment's median): one slow run on a shared machine is
  not a change, a lasting step is;
- the penalty per change point is :data:`PENALTY_PER_LOG_N` x ln(n) on that scale, which
  in simulation (30 runs, 3 % noise, 7 % of runs 30 % slower) found no change in pure
  noise and a 15 % step at its run or within two of it;
- segments are at least :data:`MIN_SEGMENT` runs long.

How sure each change is: the two-sided Mann-Whitney U test of the runs of the segment
before against those of the segment after (a small p says the two segments differ), and
the move of the median between them.

Example::

    found = trend(store, target="local", variant="int8", metric="p50")
    [(c.run_id, c.change, c.p_value) for c in found.changes]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from toolkit.errors import UsageError
from toolkit.results.store import FigurePoint, ResultsStore

__all__ = ["METRICS", "MIN_RUNS", "MIN_SEGMENT", "PENALTY_PER_LOG_N", "Change", "Trend",
           "changes_of", "compare_levels", "find_changes", "shown_value", "trend"]

#: The figures a trend follows: the path to each in a stored record, and its unit.
METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "p50": (("latency_ms", "p50"), "ms"), "p90": (("latency_ms", "p90"), "ms"),
    "p99": (("latency_ms", "p99"), "ms"), "mean": (("latency_ms", "mean"), "ms"),
    "peak-memory": (("peak_rss_bytes",), "bytes"), "size": (("size_bytes",), "bytes"),
    "accuracy": (("accuracy",), ""), "energy": (("power", "energy_per_inference_j"), "J"),
}
#: The penalty per change point, in units of ln(number of runs), on the noise-scaled series.
PENALTY_PER_LOG_N = 5.0
#: The fewest runs in a segment (and so the fewest runs a series needs for one change).
MIN_SEGMENT = 3
#: Fewer runs than this, and no change is looked for.
MIN_RUNS = 2 * MIN_SEGMENT


@dataclass(frozen=True, kw_only=True)
class Change:
    """The series moved at run ``index`` (its first run of the new level)."""

    index: int
    run_id: str
    before: float  # median of the segment before
    after: float   # median of the segment after
    p_value: float

    @property
    def change(self) -> str:
        return f"{100 * (self.after / self.before - 1):+.1f} %" if self.before else ""


@dataclass(frozen=True, kw_only=True)
class Trend:
    """A series, oldest first, its change points and how they were found."""

    target: str
    variant: str
    metric: str
    unit: str
    model_name: str
    points: list[FigurePoint]
    changes: list[Change] = field(default_factory=list)
    method: str = ""

    def shown(self, value: float) -> str:
        """``value`` of this metric as tables show it (``0.684 ms``, ``35.2 MiB``)."""
        return shown_value(self.metric, value)

    def to_dict(self) -> dict[str, object]:
        return {"target": self.target, "variant": self.variant, "metric": self.metric,
                "unit": self.unit, "model": self.model_name, "method": self.method,
                "points": [vars(p) for p in self.points],
                "changes": [{**vars(c), "change": c.change} for c in self.changes]}


def trend(store: ResultsStore, *, target: str, variant: str, metric: str = "p50",
          model_name: str | None = None) -> Trend:
    """The series of ``metric`` for ``target``/``variant`` with its change points; a
    :class:`UsageError` for an unknown metric, a series of several models with none named,
    or no stored measurement."""
    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    path, unit = METRICS[metric]
    points = store.figure_series(target, variant, path, model_name=model_name)
    models = sorted({p.model_name for p in points})
    if len(models) > 1:
        raise UsageError(f"{target}/{variant} was measured for several models "
                         f"({', '.join(models)}); name one with --model")
    if not points:
        raise UsageError(f"no stored run measured {metric} of {target}/{variant}"
                         + (f" for model {model_name}" if model_name else "")
                         + "; see edge runs list")
    changes, method = changes_of(points, metric)
    return Trend(target=target, variant=variant, metric=metric, unit=unit,
                 model_name=models[0], points=points, changes=changes, method=method)


def shown_value(metric: str, value: float) -> str:
    """``value`` of ``metric`` as tables show it (``0.684 ms``, ``35.2 MiB``, ``3.22 J``)."""
    from toolkit.units import format_duration, format_energy, format_memory, format_size

    unit = METRICS[metric][1]
    if unit == "ms":
        return format_duration(value)
    if unit == "J":
        return format_energy(1000 * value)
    if metric == "size":
        return format_size(value)
    return format_memory(value) if unit == "bytes" else f"{value:.4f}"


def changes_of(points: Sequence[FigurePoint], metric: str) -> tuple[list[Change], str]:
    """The change points of a series of ``metric`` (oldest first), each against the
    segments either side of it, and the method in words (:func:`find_changes`)."""
    indices, method = find_changes([p.value for p in points],
                                   shown=lambda value: shown_value(metric, value))
    bounds = [0, *indices, len(points)]
    return [compare_levels(points, range(bounds[k], index), range(index, bounds[k + 2]))
            for k, index in enumerate(indices)], method


def compare_levels(points: Sequence[FigurePoint], before: range, after: range) -> Change:
    """The runs ``after`` against the runs ``before`` (index ranges of ``points``, each at
    least one run): the medians of both and the Mann-Whitney p-value, as a change at the
    first run of ``after``."""
    old = [points[i].value for i in before]
    new = [points[i].value for i in after]
    return Change(index=after.start, run_id=points[after.start].run_id, before=_median(old),
                  after=_median(new), p_value=_mann_whitney(old, new))


def find_changes(values: list[float], *,
                 shown: Callable[[float], str] = lambda value: f"{value:.3g}"
                 ) -> tuple[list[int], str]:
    """The indices where ``values`` move to a new level (each the first of its segment), and
    the method in words, penalty included (see the module docstring); ``shown`` writes the
    noise in the values' unit."""
    import numpy as np
    import ruptures

    n = len(values)
    if n < MIN_RUNS:
        return [], f"no change looked for: fewer than {MIN_RUNS} runs"
    series = np.asarray(values, dtype=float)
    steps = np.abs(np.diff(series))
    noise = 1.4826 * float(np.median(steps)) / math.sqrt(2)
    if noise <= 0:
        # At least half the runs repeat their predecessor exactly: a figure that does not
        # vary between runs (a file's size, its accuracy).  Its noise is the mean move per
        # run: a lasting step stands far above it.  (The series' own deviation would hold
        # the step itself, and hide a step of 5 runs in 30 whatever its size.)
        noise = 1.4826 * float(np.mean(steps)) / math.sqrt(2) or 1.0
    penalty = PENALTY_PER_LOG_N * math.log(n)
    scaled = ((series - np.median(series)) / noise).reshape(-1, 1)
    ends = ruptures.Pelt(model="l1", min_size=MIN_SEGMENT, jump=1).fit(scaled) \
        .predict(pen=penalty)
    version = ruptures.__version__.lstrip("v")
    method = (f"PELT (ruptures {version}, L1 cost, segments >= {MIN_SEGMENT} "
              f"runs) on the series / its run-to-run noise ({shown(noise)}), penalty "
              f"{PENALTY_PER_LOG_N:g} ln n = {penalty:.1f}")
    return [int(end) for end in ends[:-1]], method


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _mann_whitney(before: list[float], after: list[float]) -> float:
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(before, after, alternative="two-sided").pvalue)

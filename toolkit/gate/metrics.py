"""Each metric of one target x variant, judged: one baseline record against one new record.

Every metric gets one verdict (:data:`VERDICTS`): ``pass``, ``regression``, ``improved``,
``inconclusive`` or ``skipped`` (not measured in both runs).  :mod:`toolkit.gate.check`
pairs the records of two runs, calls :func:`compare_records` on each pair, and merges
the verdicts against several baseline runs.

Latency (p50, p99) is judged on the raw samples:

1. **Within-run noise**: a bootstrap confidence interval of the ratio
   ``new / baseline`` of the quantile, resampled in circular moving blocks of
   ``gate.spread.BLOCK_FRACTION`` of a run (disturbances come in bursts; blocks wrap around
   the end so the first and last samples, where throttling shows, are drawn as often
   as the middle ones).  Samples are floats at the resolution the board measured:
   nothing is rounded, so a 15 us median gives as fine an interval as a 15 ms one.
   At most ``gate.spread.BOOTSTRAP_SAMPLES`` of a run, evenly spaced, are resampled (a wider
   interval than all 50,000 of a microsecond model would give, never a narrower one).
2. **Between-run spread**: one run's bootstrap cannot see how much a second run of
   the same model differs, and that is most of the noise: on a shared 2-core machine
   the median of a 15 us model moved by 9-16 % (SD of its log) between processes
   seconds apart, ten times the noise within one run.  The spread is estimated per
   target x variant x quantile as ``s``, the standard deviation of ``log(q_i)`` over
   the sound runs of the baselines' files on that board: the baseline runs
   themselves (``--baseline`` repeated) and earlier runs of the same files (same
   sha256, same board) in the store (``gate.spread.HISTORY_RUNS`` newest at most), ``k``
   runs, ``k - 1`` degrees of freedom.  Comparing two single runs, each carries its
   own run offset, so the interval is widened on the log scale by ``t * sqrt(2) *
   s`` (``t`` Student's quantile of the confidence with ``k - 1`` degrees of
   freedom), added in quadrature to each side of the bootstrap interval.  ``s`` also
   holds some within-run noise, already in the bootstrap: the widening errs on the
   side of fewer false alarms.  With one sound run only the spread is unknown: a
   change beyond the limit is then ``inconclusive``, never a regression (nor an
   improvement), and the output says what would make it judgeable.
3. **Verdict**: a regression only when the *whole* interval lies above
   ``1 + threshold``, an improvement when it lies below ``1 - threshold``, a pass when
   it lies below ``1 + threshold``; an interval that reaches past the limit without
   lying past it cannot tell either way: ``inconclusive`` (measure longer, or give more
   baseline runs).

Energy per inference is one figure per run (the sensor's average power over the
energy pass, times its duration, over its runs): nothing to resample, and it moves with
that pass's latency (identical files differed by 12.5 % on a constant power rail).  It
is judged like latency on an interval, ``t * sqrt(2) * s`` wide on the log scale each
side, ``s`` the SD of its log over the sound baseline runs
(:func:`toolkit.gate.spread.energy_spread`); with fewer than two such runs it is
``inconclusive`` ("spread unknown"), never a pass, a regression or an improvement on a
bare difference.  Size, peak memory and accuracy are compared directly (deterministic,
or nearly).

A metric cannot prove anything when its measurement on either side is not sound:
a variant INVALID on the board (unstable, too short, throttled, wrong outputs)
makes its timing metrics (latency, energy) ``inconclusive``, with what to do;
size, peak memory and accuracy are still judged.  Samples stored in steps too coarse
for the median (1 us steps of runs stored by older versions, on a model of a few us)
are ``inconclusive`` as well.

Example::

    checks = compare_records(base_record, new_record, Thresholds(), spread={})
    [(c.metric, c.verdict) for c in checks]   # [("latency_p50", "pass"), ...]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from toolkit.errors import ExitCode
from toolkit.gate.spread import bootstrap_ratios, latency_figure, student_t
from toolkit.gate.thresholds import Thresholds
from toolkit.results.record import ResultRecord
from toolkit.units import format_duration, format_energy, format_memory, format_size

__all__ = ["CONDITION_METRICS", "Judged", "MetricCheck", "TIMING_METRICS",
           "UNKNOWN_ENERGY_SPREAD", "UNKNOWN_SPREAD", "VERDICTS", "WIDEST_SHOWN",
           "compare_records", "with_conditions"]

#: Metrics that follow timing noise: an INVALID measurement cannot judge them.
TIMING_METRICS = ("latency_p50", "latency_p99", "energy")
#: Metrics the conditions of a measurement (runtime, threads, accelerator, board, clocks)
#: move: their verdicts say so when the two runs' conditions differ.
CONDITION_METRICS = (*TIMING_METRICS, "peak_memory")
#: How a latency check starts its detail when it could not judge for want of a spread.
UNKNOWN_SPREAD = "one sound run of the baseline file on this board"
#: An interval is printed only while its upper end (as a ratio new / baseline) is at most
#: this many times its lower end: Student's t with 1 or 2 degrees of freedom (two or three
#: runs of the baseline's file) gives intervals like [-99.8 %, +22601.7 %] that say only
#: that the spread between runs is unknown, and they are printed as that.
WIDEST_SHOWN = 2.0
#: How an energy check starts its detail when it could not judge for want of a spread.
UNKNOWN_ENERGY_SPREAD = "spread unknown"
#: Verdicts of one metric, from the gate's point of view.
VERDICTS = ("pass", "regression", "improved", "inconclusive", "skipped")


@dataclass(frozen=True, kw_only=True)
class MetricCheck:
    """One metric of one target x variant: baseline, new value, change, verdict."""

    target: str
    variant: str
    metric: str
    verdict: str  # one of VERDICTS
    baseline: float | None = None
    value: float | None = None
    change: float | None = None  # percent, or points for accuracy
    threshold: float | None = None
    interval: tuple[float, float] | None = None  # bootstrap CI of the change, percent
    detail: str = ""
    #: How the two runs' conditions differed (``threads 1 vs 4; ...``), "" when alike.
    conditions: str = ""

    @property
    def unit(self) -> str:
        return "pt" if self.metric == "accuracy" else "%"

    @property
    def interval_shown(self) -> str:
        """The interval as printed: ``[-1.2, +3.4]``, or ``[spread unknown]`` when it is
        wider than the data allows (:data:`WIDEST_SHOWN`); a regression or an improvement
        so judged keeps the end that decided it (``[> +180.0, spread unknown]``)."""
        if self.interval is None:
            return ""
        low, high = self.interval
        if 1 + low / 100 > 0 and (1 + high / 100) / (1 + low / 100) <= WIDEST_SHOWN:
            return f"[{low:+.1f}, {high:+.1f}]"
        if self.verdict == "regression":
            return f"[> {low:+.1f}, spread unknown]"
        if self.verdict == "improved":
            return f"[< {high:+.1f}, spread unknown]"
        return "[spread unknown]"

    def shown(self, value: float | None) -> str:
        """``value`` (the baseline or the new figure) as deploy's report shows it."""
        if value is None:
            return ""
        formatter = _SHOWN.get(self.metric)
        return formatter(value) if formatter else _fmt(value)


_Check = TypeVar("_Check", bound=MetricCheck)


class Judged(Generic[_Check]):
    """What a gate's outcome (``edge check`` against a baseline, or ``--history``) says of
    its :attr:`checks`: the regressions, what could not be judged, and the exit code."""

    checks: Sequence[_Check]

    @property
    def regressions(self) -> list[_Check]:
        return [c for c in self.checks if c.verdict == "regression"]

    @property
    def inconclusive(self) -> list[_Check]:
        return [c for c in self.checks if c.verdict == "inconclusive"]

    @property
    def exit_code(self) -> ExitCode:
        """FAILED on any regression, else INCOMPLETE when anything is inconclusive, else OK."""
        if self.regressions:
            return ExitCode.FAILED
        return ExitCode.INCOMPLETE if self.inconclusive else ExitCode.OK

    @property
    def passed(self) -> bool:
        """True only when every metric was judged and none regressed."""
        return self.exit_code == ExitCode.OK


def with_conditions(checks: list[_Check], conditions: str) -> list[_Check]:
    """``checks`` with ``conditions`` (how two measurements' conditions differ, ``"threads
    1 vs 4"``) beside each verdict the conditions move (:data:`CONDITION_METRICS`)."""
    if not conditions:
        return checks
    return [dataclasses.replace(
        c, conditions=conditions,
        detail="; ".join(filter(None, [c.detail, f"conditions differ: {conditions}"])))
        if c.metric in CONDITION_METRICS and c.verdict != "skipped" else c for c in checks]


#: How each metric's figures print: in deploy's units (a size in KiB or MiB, not bytes).
_SHOWN = {"latency_p50": format_duration, "latency_p99": format_duration,
          "size": format_size, "peak_memory": format_memory, "energy": format_energy}


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def compare_records(base: ResultRecord, new: ResultRecord, t: Thresholds,
                    spread: dict[tuple[str, str, str], tuple[float, int]]) -> list[MetricCheck]:
    """Every metric of ``new`` against ``base`` (both measured), as the module docstring
    judges it; ``spread`` is the spread between runs by (target, variant, metric)."""
    where = new.key
    base_samples = np.asarray(base.latency_samples_ms, dtype=np.float64)
    new_samples = np.asarray(new.latency_samples_ms, dtype=np.float64)
    if base_samples.size >= 2 and new_samples.size >= 2 and base_samples.min() > 0:
        p50, p99 = bootstrap_ratios(base_samples, new_samples, quantiles=(0.5, 0.99),
                                    resamples=t.resamples, confidence=t.confidence)
        latency = [_latency_check(base_samples, new_samples, metric, key, t, where, found,
                                  (latency_figure(base, key, base_samples),
                                   latency_figure(new, key, new_samples)),
                                  spread.get((*where, metric)))
                   for metric, key, found in (("latency_p50", "p50", p50),
                                              ("latency_p99", "p99", p99))]
    else:
        latency = [dataclasses.replace(
            _relative_check(metric, base.latency(key), new.latency(key), getattr(t, metric),
                            where),
            detail="no raw samples: compared the summaries")
            for metric, key in (("latency_p50", "p50"), ("latency_p99", "p99"))]
    checks = [*latency,
              _relative_check("peak_memory", base.peak_rss_bytes, new.peak_rss_bytes,
                              t.peak_memory, where),
              _relative_check("size", base.size_bytes, new.size_bytes, t.size, where)]
    if base.accuracy is not None and new.accuracy is not None:
        change = 100 * (new.accuracy - base.accuracy)
        verdict = "regression" if change < -t.accuracy else \
            "improved" if change > t.accuracy else "pass"
        checks.append(MetricCheck(target=where[0], variant=where[1], metric="accuracy",
                                  verdict=verdict, baseline=100 * base.accuracy,
                                  value=100 * new.accuracy, change=change,
                                  threshold=t.accuracy))
    else:
        checks.append(MetricCheck(target=where[0], variant=where[1], metric="accuracy",
                                  verdict="skipped", detail="no accuracy in one of the runs"))
    if base.energy_per_inference_mj is not None or new.energy_per_inference_mj is not None:
        checks.append(_energy_check(base, new, t, spread.get((*where, "energy"))))
    unsound = [f"{side} run INVALID ({'; '.join(reasons)})"
               for side, reasons in (("baseline", base.invalid_reasons),
                                     ("new", new.invalid_reasons)) if reasons is not None]
    if not unsound:
        return checks
    detail = f"{', '.join(unsound)}: {_advice(unsound)}"
    return [dataclasses.replace(c, verdict="inconclusive", detail=detail)
            if c.metric in TIMING_METRICS and c.verdict != "skipped" else c for c in checks]


def _latency_check(base_samples: np.ndarray, new_samples: np.ndarray, metric: str,
                   summary_key: str, t: Thresholds, where: tuple[str, str],
                   found: tuple[float, float, float], shown: tuple[float, float],
                   spread: tuple[float, int] | None) -> MetricCheck:
    limit = getattr(t, metric)
    # The interval comes from the stored samples; the figures and the change shown are
    # deploy's (latency_figure), which is what a reader compares them with.
    ratio, low, high = found
    base_value, new_value = shown
    change = 100 * (new_value / base_value - 1)
    detail = f"{base_samples.size} vs {new_samples.size} samples"
    if spread is not None:
        # Each run has its own offset: the two runs' offsets differ by sqrt(2) * spread,
        # and spread comes from few runs (Student's t with runs - 1 degrees of freedom).
        deviation, runs = spread
        widen = student_t(t.confidence, runs - 1) * math.sqrt(2) * deviation
        centre = math.log(ratio)
        low = math.exp(centre - math.hypot(centre - math.log(low), widen))
        high = math.exp(centre + math.hypot(math.log(high) - centre, widen))
        detail += (f"; interval widened by the spread between {runs} runs of the baseline's "
                   f"file ({100 * deviation:.1f} %)")
    step = max(_resolution(base_samples), _resolution(new_samples))
    coarse = step > min(base_value, new_value) * limit / 200
    verdict = "inconclusive" if coarse else "regression" if low > 1 + limit / 100 else \
        "improved" if high < 1 - limit / 100 else "pass" if high <= 1 + limit / 100 else \
        "inconclusive"
    if spread is None and verdict in ("regression", "improved"):
        # The interval holds the noise within each run only; two runs of one model on one
        # board differ by more (measured: 10x more on a shared machine), and by how much
        # is unknown until the baseline's file has been measured twice.
        verdict = "inconclusive"
        detail = (f"{UNKNOWN_SPREAD}: {change:+.1f} % is beyond the noise within "
                  "the two runs, but how much two runs differ here is unknown; give "
                  f"--baseline two or three times, or keep earlier runs in the store; {detail}")
    elif verdict == "inconclusive" and not coarse:
        detail = (f"the interval reaches past the +{limit:g} % limit without lying past it, "
                  "so it cannot tell: measure longer (--min-seconds) on a quieter board, or "
                  f"give more baseline runs (--baseline repeated); {detail}")
    if coarse:
        detail = (f"samples stored in steps of {format_duration(step)}, too coarse for a "
                  f"{format_duration(base_value)} {summary_key} and a {limit:g} % limit: "
                  "measure both runs again with this version of edge (ns resolution)")
    return MetricCheck(target=where[0], variant=where[1], metric=metric, verdict=verdict,
                       baseline=base_value, value=new_value, change=change, threshold=limit,
                       interval=(100 * (low - 1), 100 * (high - 1)), detail=detail)


def _energy_check(base: ResultRecord, new: ResultRecord, t: Thresholds,
                  spread: tuple[float, int] | None) -> MetricCheck:
    """Energy per inference, judged on an interval from its spread between baseline runs.

    Never a verdict on the bare difference: two runs of the same files on a board with a
    constant power rail differed by 12.5 % (the energy pass's latency noise), so without a
    spread the check is ``inconclusive``.
    """
    where = new.key
    before, after = base.energy_per_inference_mj, new.energy_per_inference_mj
    if before is None or after is None or before <= 0 or after <= 0:
        why = "; ".join(f"{side}: {error}" for side, error in (
            ("baseline", _power_error(base)), ("new", _power_error(new))) if error)
        return MetricCheck(target=where[0], variant=where[1], metric="energy",
                           verdict="skipped", baseline=before, value=after,
                           detail="not measured in both runs" + (f" ({why})" if why else ""))
    limit, ratio = t.energy, after / before
    change = 100 * (ratio - 1)
    how = _energy_pass(base, new)
    if spread is None:
        detail = (f"{UNKNOWN_ENERGY_SPREAD}: {change:+.1f} % on one figure per run, and how "
                  "much it differs between runs of the baseline here is unknown (no samples "
                  "to resample); give --baseline two or three times")
        return MetricCheck(target=where[0], variant=where[1], metric="energy",
                           verdict="inconclusive", baseline=before, value=after,
                           change=change, threshold=limit,
                           detail="; ".join(filter(None, [detail, how])))
    # As for latency: each run carries its own offset, sqrt(2) * spread between two runs,
    # with Student's t of runs - 1 degrees of freedom.
    deviation, runs = spread
    half = student_t(t.confidence, runs - 1) * math.sqrt(2) * deviation
    low, high = math.exp(math.log(ratio) - half), math.exp(math.log(ratio) + half)
    verdict = "regression" if low > 1 + limit / 100 else \
        "improved" if high < 1 - limit / 100 else "pass" if high <= 1 + limit / 100 else \
        "inconclusive"
    detail = (f"interval from the spread of energy per inference between {runs} runs of "
              f"the baseline ({100 * deviation:.1f} %)")
    if verdict == "inconclusive":
        detail = (f"the interval reaches past the +{limit:g} % limit without lying past it, "
                  "so it cannot tell: give more baseline runs (--baseline repeated); "
                  + detail)
    return MetricCheck(target=where[0], variant=where[1], metric="energy", verdict=verdict,
                       baseline=before, value=after, change=change, threshold=limit,
                       interval=(100 * (low - 1), 100 * (high - 1)),
                       detail="; ".join(filter(None, [detail, how])))


def _power_error(record: ResultRecord) -> str:
    power = record.measured.get("power")
    return str(power.get("error") or "") if isinstance(power, Mapping) else ""


def _energy_pass(base: ResultRecord, new: ResultRecord) -> str:
    """What the energy changed with: the energy pass's power and time per inference."""
    sides = []
    for record in (base, new):
        power = record.measured.get("power")
        power = power if isinstance(power, Mapping) else {}
        figures = [v for v in (power.get(key) for key in ("active_power_w", "runs",
                                                          "wall_seconds"))
                   if isinstance(v, int | float) and not isinstance(v, bool) and v > 0]
        if len(figures) < 3:
            return ""
        watts, runs, wall = (float(v) for v in figures)
        sides.append((watts, 1000 * wall / runs))
    (w0, ms0), (w1, ms1) = sides
    return (f"energy pass {w0:.3g} W vs {w1:.3g} W, {format_duration(ms0)} vs "
            f"{format_duration(ms1)} per inference")


def _resolution(samples: np.ndarray) -> float:
    """The smallest step between distinct sample values: the clock's step as stored."""
    gaps = np.diff(np.unique(samples))
    return float(gaps.min()) if gaps.size else 0.0


def _relative_check(metric: str, base: float | None, new: float | None, limit: float,
                    where: tuple[str, str]) -> MetricCheck:
    if base is None or new is None or base <= 0:
        return MetricCheck(target=where[0], variant=where[1], metric=metric,
                           verdict="skipped", baseline=base, value=new,
                           detail="not measured in both runs")
    change = 100 * (new / base - 1)
    verdict = "regression" if change > limit else "improved" if change < -limit else "pass"
    return MetricCheck(target=where[0], variant=where[1], metric=metric, verdict=verdict,
                       baseline=float(base), value=float(new), change=change,
                       threshold=limit)


def _advice(reasons: list[str]) -> str:
    """What to do about an INVALID measurement, from the board's reasons."""
    text = " ".join(reasons)
    if "outputs mismatched" in text:
        return "the variant computes wrongly on the board's runtime: fix that first"
    if "throttl" in text.lower() or "under-voltage" in text.lower():
        return "let the board cool (--cooldown-to) or fix its power supply, then rerun"
    if "variation" in text or "too short" in text:
        return "rerun with --min-seconds 5 on a quieter board"
    if "too few runs" in text:
        return "rerun with more time for the runs (--min-seconds, the target's max_seconds)"
    return "rerun the measurement"

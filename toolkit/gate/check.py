"""``edge check``: is a run worse than its baseline, beyond noise, or can it not tell?

Each target x variant present in both runs is judged metric by metric against
:class:`Thresholds`; each metric gets one verdict: ``pass``, ``regression``,
``improved``, ``inconclusive`` or ``skipped`` (not measured in both runs).

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
   sha256, same board) in the store (:data:`HISTORY_RUNS` newest at most), ``k``
   runs, ``k - 1`` degrees of freedom.  Comparing two single runs, each carries its
   own run offset, so the interval is widened on the log scale by ``t * sqrt(2) *
   s`` (``t`` Student's quantile of the confidence with ``k - 1`` degrees of
   freedom), added in quadrature to each side of the bootstrap interval.  ``s`` also
   holds some within-run noise, already in the bootstrap: the widening errs on the
   side of fewer false alarms.  With one sound run only the spread is unknown: a
   change beyond the limit is then ``inconclusive``, never a regression (nor an
   improvement), and the output says what would make it judgeable.
3. **Verdict**, against *each* baseline run: a regression only when the *whole*
   interval lies above ``1 + threshold``, an improvement when it lies below
   ``1 - threshold``, a pass when it lies below ``1 + threshold``; an interval that
   reaches past the limit without lying past it cannot tell either way:
   ``inconclusive`` (measure longer, or give more baseline runs).  Across baseline
   runs, a regression (improvement) must be one against each; a pass against any
   makes a pass; otherwise the metric is inconclusive.

Energy per inference is one figure per run (the sensor's average power over the
energy pass, times its duration, over its runs): nothing to resample, and it moves with
that pass's latency (identical files differed by 12.5 % on a constant power rail).  It
is judged like latency on an interval, ``t * sqrt(2) * s`` wide on the log scale each
side, ``s`` the SD of its log over the sound baseline runs (:func:`energy_spread`);
with fewer than two such runs it is ``inconclusive`` ("spread unknown"), never a pass,
a regression or an improvement on a bare difference.  Size, peak memory and accuracy
are compared directly (deterministic, or nearly).

A metric cannot prove anything when its measurement on either side is not sound:
a variant INVALID on the board (unstable, too short, throttled, wrong outputs)
makes its timing metrics (latency, energy) ``inconclusive``, with what to do;
size, peak memory and accuracy are still judged.  A variant that failed or is
missing on either side is ``inconclusive`` too (nothing was measured).  Samples
stored in steps too coarse for the median (1 us steps of runs stored by older
versions, on a model of a few us) are ``inconclusive`` as well.

:attr:`CheckOutcome.exit_code`: 1 (``ExitCode.FAILED``) when anything regressed,
else 3 (``ExitCode.INCOMPLETE``) when anything is inconclusive, else 0.

Comparing different models, or a target that is a different board in the two
runs, is refused (:class:`CheckRefused`, a usage error).

Example::

    outcome = check_runs([main_1, main_2, main_3], run, Thresholds(latency_p50=5.0))
    outcome.exit_code, outcome.to_markdown(), outcome.to_junit()
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import numpy as np

from toolkit.defaults import THRESHOLD_HELP as THRESHOLD_HELP
from toolkit.errors import CheckRefused, ExitCode, UsageError
from toolkit.gate.conditions import condition_differences, conditions_note
from toolkit.gate.spread import (
    between_run_spread,
    bootstrap_ratios,
    energy_spread,
    latency_figure,
    student_t,
)
from toolkit.results.record import BOARD_IDENTITY, ResultRecord
from toolkit.results.store import EarlierLatency, StoredRun
from toolkit.safe_text import markdown_text
from toolkit.units import format_duration, format_energy, format_memory, format_size

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
class Thresholds:
    """How much worse each metric may get, in percent (accuracy: in points), and how sure to be.

    Example: ``Thresholds.from_mapping({"latency_p50": "3%", "accuracy": 1})``
    """

    latency_p50: float = 5.0
    latency_p99: float = 10.0
    latency_tail: float = 10.0
    peak_memory: float = 5.0
    size: float = 1.0
    accuracy: float = 0.5
    energy: float = 5.0
    confidence: float = 0.95
    resamples: int = 2000

    def __post_init__(self) -> None:
        for name in THRESHOLD_HELP:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                raise UsageError(f"check threshold {name} must be a number >= 0, got {value!r}")
        if not 0.5 <= self.confidence < 1:
            raise UsageError(f"check confidence must be in [0.5, 1), got {self.confidence!r}")
        if not isinstance(self.resamples, int) or not 100 <= self.resamples <= 100_000:
            raise UsageError(f"check resamples must be a whole number in [100, 100000], "
                             f"got {self.resamples!r}")

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, base: Thresholds | None = None,
                     where: str = "check settings") -> Thresholds:
        """Override ``base`` with ``values`` (``"5%"``, ``5`` or ``"5"`` all mean five)."""
        known = {f.name for f in dataclasses.fields(cls)}
        parsed: dict[str, Any] = {}
        for key, raw in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise UsageError(f"{where}: unknown check setting {key!r}; known: "
                                 f"{', '.join(sorted(known))}")
            parsed[name] = _number(raw, f"{where}: {key}", whole=name == "resamples")
        return dataclasses.replace(base or cls(), **parsed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


@dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    """Everything ``edge check`` found; :attr:`exit_code` says what it comes to."""

    baseline: StoredRun
    run: StoredRun
    thresholds: Thresholds
    checks: list[MetricCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Further baseline runs: a regression had to show against each of them too.
    more_baselines: tuple[StoredRun, ...] = ()

    @property
    def regressions(self) -> list[MetricCheck]:
        return [c for c in self.checks if c.verdict == "regression"]

    @property
    def inconclusive(self) -> list[MetricCheck]:
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

    @property
    def summary(self) -> str:
        """One line: passed, the regressions, or what could not be judged and why."""
        if self.regressions:
            return f"{len(self.regressions)} regression(s)" + (
                f", {len(self.inconclusive)} metric(s) inconclusive" if self.inconclusive
                else "") + (
                " (measured under different conditions: see the notes)"
                if any(c.conditions for c in self.regressions) else "")
        if self.inconclusive:
            first = self.inconclusive[0]
            return (f"inconclusive: {len(self.inconclusive)} metric(s) could not be judged, "
                    f"e.g. {first.target}/{first.variant} {first.metric}: {first.detail}")
        return "passed"

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "exit_code": int(self.exit_code),
                "summary": self.summary, "baseline": self.baseline.run_id,
                "more_baselines": [b.run_id for b in self.more_baselines],
                "run": self.run.run_id, "thresholds": self.thresholds.to_dict(),
                "checks": [dataclasses.asdict(c) for c in self.checks], "notes": self.notes}

    def to_markdown(self) -> str:
        """A short summary for a pull-request comment."""
        lines = [f"### edge check: {self.summary}", "",
                 f"Run `{self.run.run_id}` ({_commit(self.run)}) against baseline "
                 f"`{self.baseline.run_id}` ({_commit(self.baseline)})"
                 + "".join(f", `{b.run_id}`" for b in self.more_baselines)
                 + f", model {markdown_text(self.run.model_name)}."
                 + (" A regression or an improvement must show against each baseline run; "
                    "each metric is shown against the run it is closest to."
                    if self.more_baselines else ""),
                 "",
                 "| target | variant | metric | baseline | new | change | limit | verdict |",
                 "|---|---|---|---:|---:|---:|---:|---|"]
        for c in self.checks:
            change = "" if c.change is None else f"{c.change:+.2f} {c.unit}"
            if c.interval is not None:
                change += f" {c.interval_shown}"
            limit = "" if c.threshold is None else \
                (f"-{c.threshold:g} pt" if c.metric == "accuracy" else f"+{c.threshold:g} %")
            mark = {"regression": "**REGRESSION**",
                    "inconclusive": f"inconclusive: {markdown_text(c.detail)}"}.get(
                        c.verdict, c.verdict)
            if c.conditions and c.verdict in ("regression", "improved"):
                mark += f" (conditions differ: {markdown_text(c.conditions)})"
            elif c.conditions and c.verdict == "pass":  # inconclusive: its detail says it
                mark += " (conditions differ: see the notes)"
            # Targets, variants and details name what the boards and the model file named.
            lines.append(f"| {markdown_text(c.target)} | {markdown_text(c.variant)} | "
                         f"{c.metric} | {c.shown(c.baseline)} | {c.shown(c.value)} | {change} "
                         f"| {limit} | {mark} |")
        lines.append("")
        lines.append(f"Latency changes show a {self.thresholds.confidence:.0%} bootstrap "
                     "interval (widened by the spread between runs of the baselines' files on "
                     "the board, when known); a latency regression needs the whole interval "
                     "past the limit, a pass the whole interval below it; one whose ends "
                     f"differ by more than {WIDEST_SHOWN:g}x (too few runs of the baseline's "
                     "file to know the spread) shows as [spread unknown].")
        lines.extend(f"- {markdown_text(note)}" for note in self.notes)
        return "\n".join(lines) + "\n"

    def to_junit(self) -> str:
        """JUnit XML: one test case per target x variant x metric."""
        suite = ElementTree.Element("testsuite", {
            "name": "edge check", "tests": str(len(self.checks)),
            "failures": str(len(self.regressions)), "errors": str(len(self.inconclusive)),
            "skipped": str(sum(c.verdict == "skipped" for c in self.checks))})
        for c in self.checks:
            case = ElementTree.SubElement(suite, "testcase", {
                "classname": f"edge.{c.target}.{c.variant}", "name": c.metric})
            text = _describe(c)
            if c.verdict == "regression":
                ElementTree.SubElement(case, "failure", {"message": text}).text = text
            elif c.verdict == "inconclusive":  # JUnit's "could not run properly"
                ElementTree.SubElement(case, "error", {"message": text}).text = text
            elif c.verdict == "skipped":
                ElementTree.SubElement(case, "skipped", {"message": c.detail})
            else:
                ElementTree.SubElement(case, "system-out").text = text
        ElementTree.indent(suite)
        return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def check_runs(baseline: StoredRun | Sequence[StoredRun], run: StoredRun,
               thresholds: Thresholds | None = None, *,
               history: Sequence[EarlierLatency] = ()) -> CheckOutcome:
    """Judge ``run`` against ``baseline``; :class:`CheckRefused` if they are not comparable.

    ``baseline`` may be several runs of the same model (say, three measurements of main):
    a metric regresses (or improves) only if it does so against *each* of them; it is
    shown against the one it is closest to.  ``history`` (the store's
    :meth:`~toolkit.results.store.ResultsStore.latency_history`) adds earlier runs of the
    baselines' files on the same board to the estimate of the spread between runs.
    """
    thresholds = thresholds or Thresholds()
    baselines = [baseline] if isinstance(baseline, StoredRun) else list(baseline)
    if not baselines:
        raise UsageError("no baseline run given")
    spread = between_run_spread(baselines, history, exclude=run.run_id)
    runs_seen = sorted({runs for _, runs in spread.values()})
    spread.update(energy_spread(baselines))
    outcomes = [_check_one(one, run, thresholds, spread) for one in baselines]
    notes = list(dict.fromkeys(note for outcome in outcomes for note in outcome.notes))
    if runs_seen:
        notes.append(f"The spread between runs comes from {'/'.join(map(str, runs_seen))} "
                     "sound runs of the baselines' files on the same board (the baseline "
                     "runs and earlier runs in the store).")
    grouped: dict[tuple[str, str, str], list[MetricCheck]] = {}
    for outcome in outcomes:
        for c in outcome.checks:
            grouped.setdefault((c.target, c.variant, c.metric), []).append(c)
    checks = [_merge(checks) for checks in grouped.values()]
    if any(c.verdict == "inconclusive" and c.detail.startswith(UNKNOWN_SPREAD)
           for c in checks):
        notes.append("Only one sound run of a baseline file on its board: how much two runs "
                     "of one model differ there is unknown (on a shared 2-core machine, a "
                     "15 us model moved by up to 40 % between runs seconds apart), so a "
                     "latency change cannot be called a regression or an improvement. Give "
                     "--baseline two or three times, or keep earlier runs in the store.")
    if any(c.verdict == "inconclusive" and c.detail.startswith(UNKNOWN_ENERGY_SPREAD)
           for c in checks):
        notes.append("Energy per inference is one figure per run (power averaged over the "
                     "energy pass, divided over its runs), and it moves with that pass's "
                     "latency: without the spread of that figure between runs of the "
                     "baseline, a change is not called a pass, a regression or an "
                     "improvement. Give --baseline two or three times (runs measured with "
                     "the power sensor).")
    return CheckOutcome(baseline=baselines[0], run=run, thresholds=thresholds,
                        checks=checks, notes=notes, more_baselines=tuple(baselines[1:]))


def _merge(checks: list[MetricCheck]) -> MetricCheck:
    """One verdict from a metric's checks against each baseline run.

    A regression (an improvement) must hold against each run that judged the metric;
    one pass makes it a pass; otherwise a check that could not judge makes it
    inconclusive.  Shown: the check of that verdict closest to no change.
    """
    judged = [c for c in checks if c.verdict != "skipped"] or checks
    verdicts = {c.verdict for c in judged}
    if verdicts == {"regression"} or verdicts == {"improved"} or verdicts == {"skipped"}:
        verdict = judged[0].verdict
    elif "pass" in verdicts:
        verdict = "pass"
    elif "inconclusive" in verdicts:
        verdict = "inconclusive"
    else:  # a regression against one run and an improvement against another: run spread
        verdict = "pass"
    same = [c for c in judged if c.verdict == verdict] or judged
    closest = min(same, key=lambda c: abs(c.change) if c.change is not None else 0.0)
    return dataclasses.replace(closest, verdict=verdict)


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


def _check_one(baseline: StoredRun, run: StoredRun, thresholds: Thresholds,
               spread: dict[tuple[str, str, str], tuple[float, int]]) -> CheckOutcome:
    if baseline.model_name != run.model_name:
        raise CheckRefused(f"baseline {baseline.run_id} is model {baseline.model_name!r} but run "
                           f"{run.run_id} is model {run.model_name!r}; compare runs of one model")
    base_targets, new_targets = set(baseline.targets), set(run.targets)
    shared = base_targets & new_targets
    if not shared:
        raise CheckRefused(f"baseline {baseline.run_id} ran on {', '.join(sorted(base_targets))} "
                           f"but run {run.run_id} on {', '.join(sorted(new_targets))}; "
                           "compare runs on the same target")
    for target in sorted(shared):
        _same_board(target, baseline, run)
    notes = []
    if baseline.model_sha256 == run.model_sha256:
        notes.append("The model file is unchanged since the baseline.")
    for target in sorted(new_targets - base_targets):
        notes.append(f"Target {target} has no baseline; not checked.")
    for label, stored in (("baseline", baseline), ("run", run)):
        for r in stored.results:
            reasons = r.invalid_reasons
            if reasons is not None:
                notes.append(f"The {label}'s {r.target}/{r.variant} measurement is "
                             f"INVALID on the board: {'; '.join(reasons)}.")
    base_records = {r.key: r for r in baseline.results}
    new_records = {r.key: r for r in run.results}
    checks: list[MetricCheck] = []
    differing: dict[tuple[str, str], list[str]] = {}
    for key in sorted(set(base_records) | set(new_records)):
        target, variant = key
        if target not in shared:
            continue
        base, new = base_records.get(key), new_records.get(key)

        def unmeasured(detail: str, where: tuple[str, str] = key) -> MetricCheck:
            return _at(where, metric="status", verdict="inconclusive", detail=detail)

        if new is None:
            checks.append(unmeasured(f"in baseline {baseline.run_id} but not measured in the "
                                     "run: measure it, or make a new baseline without it"))
        elif base is None:
            notes.append(f"{target}/{variant} is new; no baseline to compare with.")
        elif not new.ok:
            checks.append(unmeasured(f"failed in the run, nothing measured: "
                                     f"{new.error or ''}"))
        elif not base.ok:
            checks.append(unmeasured(f"failed in baseline {baseline.run_id}, nothing to "
                                     "compare with: re-measure the baseline"))
        else:
            found = _compare_records(base, new, thresholds, spread)
            differences = condition_differences(base, new)
            differing[key] = differences
            checks.extend(_with_conditions(found, "; ".join(differences)))
    notes.extend(_conditions_notes(differing, baseline.run_id, run.run_id))
    return CheckOutcome(baseline=baseline, run=run, thresholds=thresholds, checks=checks,
                        notes=notes)


def _with_conditions(checks: list[MetricCheck], conditions: str) -> list[MetricCheck]:
    """``checks`` with ``conditions`` beside each verdict the conditions move."""
    if not conditions:
        return checks
    return [dataclasses.replace(
        c, conditions=conditions,
        detail="; ".join(filter(None, [c.detail, f"conditions differ: {conditions}"])))
        if c.metric in CONDITION_METRICS and c.verdict != "skipped" else c for c in checks]


def _conditions_notes(differing: dict[tuple[str, str], list[str]], baseline: str,
                      run: str) -> list[str]:
    """One note per target when all its compared variants differ alike, else per variant."""
    notes = []
    for target in sorted({target for target, _ in differing}):
        variants = {variant: found for (where, variant), found in differing.items()
                    if where == target}
        shared = {tuple(found) for found in variants.values()}
        if len(shared) == 1 and len(variants) > 1:
            found = list(next(iter(shared)))
            if found:
                notes.append(conditions_note(target, found, baseline, run))
            continue
        notes.extend(conditions_note(f"{target}/{variant}", found, baseline, run)
                     for variant, found in sorted(variants.items()) if found)
    return notes


def _compare_records(base: ResultRecord, new: ResultRecord, t: Thresholds,
                     spread: dict[tuple[str, str, str], tuple[float, int]]) -> list[MetricCheck]:
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
        checks.append(_at(where, metric="accuracy", verdict=verdict,
                          baseline=100 * base.accuracy, value=100 * new.accuracy,
                          change=change, threshold=t.accuracy))
    else:
        checks.append(_at(where, metric="accuracy", verdict="skipped",
                          detail="no accuracy in one of the runs"))
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
    return _at(where, metric=metric, verdict=verdict, baseline=base_value, value=new_value,
               change=change, threshold=limit,
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
        return _at(where, metric="energy", verdict="skipped", baseline=before, value=after,
                   detail="not measured in both runs" + (f" ({why})" if why else ""))
    limit, ratio = t.energy, after / before
    change = 100 * (ratio - 1)
    how = _energy_pass(base, new)
    if spread is None:
        detail = (f"{UNKNOWN_ENERGY_SPREAD}: {change:+.1f} % on one figure per run, and how "
                  "much it differs between runs of the baseline here is unknown (no samples "
                  "to resample); give --baseline two or three times")
        return _at(where, metric="energy", verdict="inconclusive", baseline=before,
                   value=after, change=change, threshold=limit,
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
    return _at(where, metric="energy", verdict=verdict, baseline=before, value=after,
               change=change, threshold=limit, interval=(100 * (low - 1), 100 * (high - 1)),
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
        return _at(where, metric=metric, verdict="skipped", baseline=base, value=new,
                           detail="not measured in both runs")
    change = 100 * (new / base - 1)
    verdict = "regression" if change > limit else "improved" if change < -limit else "pass"
    return _at(where, metric=metric, verdict=verdict, baseline=float(base), value=float(new),
                       change=change, threshold=limit)


def _at(where: tuple[str, str], **fields: Any) -> MetricCheck:
    return MetricCheck(target=where[0], variant=where[1], **fields)


def _same_board(target: str, baseline: StoredRun, run: StoredRun) -> None:
    def identity(stored: StoredRun) -> dict[str, str]:
        board = next((r.board for r in stored.results if r.target == target and r.board),
                     None)
        return {key: str(board.get(key, "")) if board else "" for key in BOARD_IDENTITY}

    before, after = identity(baseline), identity(run)
    differing = [key for key in BOARD_IDENTITY if before[key] and after[key]
                 and before[key] != after[key]]
    if differing:
        key = differing[0]
        raise CheckRefused(f"target {target} is a different board in the two runs ({key} "
                           f"{before[key]!r} vs {after[key]!r}); make a new baseline on it")


def _number(raw: Any, where: str, *, whole: bool) -> float | int:
    text = raw.strip().removesuffix("%").strip() if isinstance(raw, str) else raw
    try:
        if isinstance(text, bool):
            raise ValueError
        value = int(text) if whole else float(text)
    except (TypeError, ValueError):
        raise UsageError(f"{where} must be a number like 5 or \"5%\", got {raw!r}") from None
    return value


def _describe(c: MetricCheck) -> str:
    text = f"{c.target}/{c.variant} {c.metric}: {c.verdict}"
    if c.change is not None:
        text += f", {c.shown(c.baseline)} -> {c.shown(c.value)} ({c.change:+.2f} {c.unit}"
        if c.interval is not None:
            text += f", interval {c.interval_shown}"
        text += f", limit {c.threshold:g} {c.unit})"
    return text + (f"; {c.detail}" if c.detail else "")


#: How each metric's figures print: in deploy's units (a size in KiB or MiB, not bytes).
_SHOWN = {"latency_p50": format_duration, "latency_p99": format_duration,
          "size": format_size, "peak_memory": format_memory, "energy": format_energy}


def _commit(run: StoredRun) -> str:
    return f"commit {run.git_commit[:12]}" if run.git_commit else "no commit"


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def load_baseline(ref: str, store: Any) -> StoredRun:
    """BASE as the user gives it: a baseline JSON file (``edge runs export``), a run id or a tag."""
    from pathlib import Path

    from toolkit.results.export import load_export

    path = Path(ref)
    if ref.endswith(".json") or path.is_file():
        if not path.is_file():
            raise UsageError(f"baseline file {ref} does not exist")
        return load_export(path)
    if store is None:
        raise UsageError(f"baseline {ref!r} is not a file and there is no results store to "
                         "look it up in")
    run: StoredRun = store.get_run(ref)
    return run

"""``edge check --history``: did a figure of RUN's model step in its newest stored runs?

An unpaired ``edge check`` needs a baseline; this judges RUN against its own past.  For
each target x variant RUN measured and each gated metric (p50, p99, peak memory, size,
accuracy, and energy where RUN measured it), the series is that figure over the stored
runs of RUN's model on that target x variant, oldest first, up to and including RUN (the
newest :data:`HISTORY_RUNS` of them).  Its change points are
:func:`toolkit.results.trend.changes_of`'s, the ones ``edge trend`` marks (ruptures'
PELT, L1 cost on the series scaled by its noise, segments of at least
:data:`~toolkit.results.trend.MIN_SEGMENT` runs).

Which change counts: one whose new level starts among the newest :data:`WINDOW` (10)
runs.  PELT finds a step only once :data:`~toolkit.results.trend.MIN_SEGMENT` (3) runs
sit at its new level, and the more runs there, the surer: a gate that checks every run
can flag a step from the third run after it to the tenth, and a step in the newest two
runs is not seen yet.  In simulation (``python benchmarks/check_history.py --simulate``:
25 runs at one level, 3 % lognormal noise between runs), a 15 % step was flagged at its
run by the check of its 3rd, 4th, 5th, 6th and 10th run in 17, 44, 69, 84 and 99 % of 150
series, and by one of the checks up to its 10th run in all of them; a 10 % step by one
of those in 75 %; 150 series of noise alone were all a pass.  A window of 6 would have
missed one 15 % step in six.  The price of the window: a step
stays flagged until its tenth run, unless it is undone.  The level now (the median of
the runs since the newest change) is compared with the level before the oldest change
in the window (the median of its segment), so a step that came and went within the
window is a pass.  A move past the metric's limit (:class:`~toolkit.gate.thresholds.Thresholds`: the
same ``[tool.edge.check]`` table and ``--threshold`` overrides as ``edge check``) in the
worse direction (slower, larger, more memory, more energy, less accurate) is a
``regression`` when the runs since differ from the runs before with Mann-Whitney
``p < 1 - confidence``; the better direction is ``improved``; past the limit with a larger
p it is ``inconclusive`` (more runs will tell); within the limit, or no change in the
window, a ``pass``.

A series shorter than :data:`~toolkit.results.trend.MIN_RUNS` (6) is never a pass: it is
``inconclusive`` (exit 3), saying how many runs there are.  Runs measured INVALID on the
board are left out of the timing series (p50, p99, energy), as ``edge check`` learns its
spread from sound runs only; RUN itself INVALID makes its timing metrics inconclusive.
A variant RUN failed to measure is inconclusive too.

Beside a change that counts, the check says whether the file changed at that run (its
sha256) and, if so, which packages built it at another version, and which conditions
differ between the run before and the run at the change (runtime, threads, accelerator,
board, clocks: :mod:`toolkit.gate.conditions`).

Example::

    outcome = check_history(store, store.get_run("latest"), Thresholds())
    outcome.exit_code, outcome.to_markdown()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import TYPE_CHECKING

from toolkit.gate import render
from toolkit.gate.conditions import condition_differences, toolchain_differences
from toolkit.gate.metrics import TIMING_METRICS, Judged, MetricCheck, with_conditions
from toolkit.gate.thresholds import Thresholds
from toolkit.results.trend import METRICS, MIN_RUNS, MIN_SEGMENT, changes_of, compare_levels

if TYPE_CHECKING:
    from toolkit.results.record import ResultRecord
    from toolkit.results.store import FigurePoint, ResultsStore, StoredRun

__all__ = ["GATED", "HISTORY_RUNS", "WINDOW", "HistoryCheck", "HistoryOutcome", "check_history",
           "judge_series"]

#: A change point counts when its new level starts among this many newest runs (see the
#: module docstring for why 10).
WINDOW = 10
#: The newest runs of a series that are searched for change points, RUN the last.
HISTORY_RUNS = 100
#: Each gated metric (its name in ``edge check`` and in :class:`Thresholds`), the figure
#: ``edge trend`` follows for it, and the factor from the stored figure to the one shown
#: (accuracy in points, energy in millijoules).
GATED: tuple[tuple[str, str, float], ...] = (
    ("latency_p50", "p50", 1.0), ("latency_p99", "p99", 1.0),
    ("peak_memory", "peak-memory", 1.0), ("size", "size", 1.0),
    ("accuracy", "accuracy", 100.0), ("energy", "energy", 1000.0))
_FIGURES = {metric: (figure, scale) for metric, figure, scale in GATED}


@dataclass(frozen=True, kw_only=True)
class HistoryCheck(MetricCheck):
    """One metric of one target x variant judged on its series: ``baseline`` is the level
    before the change (or None without one), ``value`` the level now."""

    #: Runs in the series (RUN the last).
    runs: int = 0
    #: The run the counted change starts at, and its place in the series (1 = oldest).
    changed_at: str | None = None
    changed_at_number: int | None = None
    p_value: float | None = None
    #: How the change points were found (PELT, its noise scale and penalty).
    method: str = ""


@dataclass(frozen=True, kw_only=True)
class HistoryOutcome(Judged[HistoryCheck]):
    """Everything ``edge check --history`` found; :attr:`exit_code` says what it comes to."""

    run: StoredRun
    thresholds: Thresholds
    checks: list[HistoryCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line: passed, the regressions, or what could not be judged and why."""
        if self.regressions:
            first = self.regressions[0]
            return (f"{len(self.regressions)} regression(s) in the stored history, e.g. "
                    f"{first.target}/{first.variant} {first.metric} {first.change:+.1f} "
                    f"{first.unit} from run {first.changed_at}" + (
                        f", {len(self.inconclusive)} metric(s) inconclusive"
                        if self.inconclusive else ""))
        if self.inconclusive:
            first = self.inconclusive[0]
            return (f"inconclusive: {len(self.inconclusive)} metric(s) could not be judged "
                    f"on their history, e.g. {first.target}/{first.variant} {first.metric}: "
                    f"{first.detail}")
        return "passed"

    def to_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "exit_code": int(self.exit_code),
                "summary": self.summary, "run": self.run.run_id, "history": True,
                "window": WINDOW, "thresholds": self.thresholds.to_dict(),
                "checks": [dataclasses.asdict(c) for c in self.checks], "notes": self.notes}

    def to_markdown(self) -> str:
        return render.history_markdown(self)

    def to_junit(self) -> str:
        return render.junit(self)


def check_history(store: ResultsStore, run: StoredRun,
                  thresholds: Thresholds | None = None) -> HistoryOutcome:
    """Judge each metric of each target x variant of ``run`` on its stored series (see the
    module docstring); ``run`` must be stored in ``store``."""
    thresholds = thresholds or Thresholds()
    runs: dict[str, StoredRun] = {run.run_id: run}

    def record_of(run_id: str, key: tuple[str, str]) -> ResultRecord | None:
        if run_id not in runs:
            runs[run_id] = store.get_run(run_id)
        return next((r for r in runs[run_id].results if r.key == key), None)

    checks: list[HistoryCheck] = []
    for record in run.results:
        target, variant = record.key
        if not record.ok:
            checks.append(HistoryCheck(
                target=target, variant=variant, metric="status", verdict="inconclusive",
                detail=f"not measured in run {run.run_id}: {record.error or record.status}"))
            continue
        for metric, figure, _ in GATED:
            path = METRICS[figure][0]
            points = store.figure_series(target, variant, path, model_name=run.model_name)
            mine = next((i for i, p in enumerate(points) if p.run_id == run.run_id), None)
            if mine is None:
                if metric != "energy":  # only where the board had a power sensor
                    checks.append(HistoryCheck(target=target, variant=variant, metric=metric,
                                               verdict="skipped",
                                               detail=f"not measured in run {run.run_id}"))
                continue
            series = points[:mine + 1]
            if metric in TIMING_METRICS:
                if record.invalid_reasons is not None:
                    checks.append(HistoryCheck(
                        target=target, variant=variant, metric=metric,
                        verdict="inconclusive",
                        detail=f"run {run.run_id} is INVALID on the board "
                               f"({'; '.join(record.invalid_reasons)}): measure it again"))
                    continue
                series = [p for p in series if p.verdict != "INVALID"]
            series = series[-HISTORY_RUNS:]
            found = judge_series(series, target=target, variant=variant, metric=metric,
                                 thresholds=thresholds)
            if found.verdict in ("regression", "improved") and found.changed_at_number:
                found = _across(found, record_of(series[found.changed_at_number - 2].run_id,
                                                 record.key),
                                record_of(series[found.changed_at_number - 1].run_id,
                                          record.key))
            checks.append(found)
    notes = [f"Each series is the figure over the stored runs of model {run.model_name} on "
             f"its target x variant up to run {run.run_id} (the newest {HISTORY_RUNS} at "
             "most; INVALID runs left out of p50, p99 and energy). Change points are "
             f"edge trend's; one counts when its new level starts among the newest {WINDOW} "
             f"runs: PELT needs {MIN_SEGMENT} runs at a new level to see it, so a step in "
             f"the newest {MIN_SEGMENT - 1} runs is flagged from its third run on. The level "
             "now is compared with the level before, against the same limits as edge check; "
             f"a regression also needs Mann-Whitney p < {1 - thresholds.confidence:.2g}."]
    if any(c.verdict == "inconclusive" and c.runs and c.runs < MIN_RUNS for c in checks):
        notes.append(f"A series of fewer than {MIN_RUNS} runs is not searched for change "
                     "points: it is inconclusive, never a pass. Keep measuring (edge deploy "
                     "stores each run) or judge against a baseline (edge check --baseline).")
    return HistoryOutcome(run=run, thresholds=thresholds, checks=checks, notes=notes)


def _across(found: HistoryCheck, before: ResultRecord | None,
            after: ResultRecord | None) -> HistoryCheck:
    """``found`` with what differs between the last run before its change and the first
    after: the conditions of the measurement, and what built a file that changed."""
    if before is None or after is None:
        return found
    built = toolchain_differences(before, after) if before.sha256 != after.sha256 else []
    if built:
        found = dataclasses.replace(found, detail=f"{found.detail} (built with "
                                                  f"{', '.join(built)})")
    return with_conditions([found], "; ".join(condition_differences(before, after)))[0]


def judge_series(series: Sequence[FigurePoint], *, target: str, variant: str, metric: str,
                 thresholds: Thresholds) -> HistoryCheck:
    """``metric``'s verdict (a name of :data:`GATED`) on its series, oldest first, the run
    judged the last point (see the module docstring).

    Example: ``judge_series(points, target="local", variant="int8", metric="latency_p50",
    thresholds=Thresholds()).verdict``
    """
    figure, scale = _FIGURES[metric]
    limit, confidence = getattr(thresholds, metric), thresholds.confidence
    n = len(series)
    now = HistoryCheck(target=target, variant=variant, metric=metric, verdict="pass",
                       value=scale * series[-1].value, threshold=limit, runs=n)
    if n < MIN_RUNS:
        return dataclasses.replace(
            now, verdict="inconclusive",
            detail=f"only {n} stored run(s) up to this one; a change is looked for from "
                   f"{MIN_RUNS} runs")
    changes, method = changes_of(series, figure)
    counted = next((k for k, c in enumerate(changes) if n - c.index <= WINDOW), None)
    if counted is None:
        last = changes[-1] if changes else None
        return dataclasses.replace(
            now, method=method,
            value=scale * median(p.value for p in series[last.index if last else 0:]),
            detail=f"no change point in the newest {WINDOW} of {n} runs"
                   + (f" (the newest at run {last.run_id}, #{last.index + 1})" if last else ""))
    first, newest = changes[counted], changes[-1]
    start = changes[counted - 1].index if counted else 0
    level = compare_levels(series, range(start, first.index), range(newest.index, n))
    before, after = scale * level.before, scale * level.after
    # Accuracy moves in points (higher is better); every other figure in percent (lower).
    if metric == "accuracy":
        change, worse = after - before, before - after
    else:
        change = 100 * (after / before - 1) if before else 0.0
        worse = change
    where = (f"change point at run {first.run_id} (#{first.index + 1} of {n}), "
             f"Mann-Whitney p = {level.p_value:.2g} (the runs since against the "
             f"{first.index - start} before)")
    if newest is not first:
        where += f"; it moved again at run {newest.run_id} (#{newest.index + 1})"
    if series[first.index].sha256 != series[first.index - 1].sha256:
        where += "; the file changed at that run"
    elif series[first.index].sha256:
        where += "; the same file before and after: the board or its conditions moved"
    judged = dataclasses.replace(now, baseline=before, value=after, change=change,
                                 changed_at=first.run_id, changed_at_number=first.index + 1,
                                 p_value=level.p_value, method=method)
    if abs(change) <= limit:
        return dataclasses.replace(judged, detail=f"{where}; within the limit")
    if level.p_value >= 1 - confidence:
        return dataclasses.replace(
            judged, verdict="inconclusive",
            detail=f"{where}: past the limit, but the runs since do not differ surely enough "
                   f"from the runs before (p >= {1 - confidence:.2g}); more runs will tell")
    return dataclasses.replace(judged, verdict="regression" if worse > 0 else "improved",
                               detail=where)

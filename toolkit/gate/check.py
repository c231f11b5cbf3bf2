"""``edge check``: is a run worse than its baseline, beyond noise, or can it not tell?

Each target x variant present in both runs is judged metric by metric against
:class:`Thresholds`; each metric gets one verdict: ``pass``, ``regression``,
``improved``, ``inconclusive`` or ``skipped`` (not measured in both runs).  How each
metric is judged against one baseline run (latency on a bootstrap interval widened by the
spread between runs, energy on its spread between baseline runs, size, peak memory and
accuracy directly; an INVALID measurement proves nothing) is :mod:`toolkit.gate.metrics`;
the noise figures are :mod:`toolkit.gate.spread`.

Across baseline runs (``--baseline`` repeated), a regression (improvement) must be one
against each; a pass against any makes a pass; otherwise the metric is inconclusive.
A variant that failed or is missing on either side is ``inconclusive`` (nothing was
measured).  A difference in how the two runs were measured (runtime, threads,
accelerator, board, clocks: :mod:`toolkit.gate.conditions`) is noted beside the verdicts
it can move.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toolkit.defaults import THRESHOLD_HELP
from toolkit.errors import CheckRefused, UsageError
from toolkit.gate import render
from toolkit.gate.conditions import condition_differences, conditions_note
from toolkit.gate.metrics import (
    UNKNOWN_ENERGY_SPREAD,
    UNKNOWN_SPREAD,
    Judged,
    MetricCheck,
    compare_records,
    with_conditions,
)
from toolkit.gate.spread import between_run_spread, energy_spread
from toolkit.gate.thresholds import Thresholds
from toolkit.results.record import BOARD_IDENTITY
from toolkit.results.store import EarlierLatency, StoredRun

if TYPE_CHECKING:
    from toolkit.results.store import ResultsStore

__all__ = ["THRESHOLD_HELP", "CheckOutcome", "MetricCheck", "Thresholds", "check_runs",
           "load_baseline"]


@dataclass(frozen=True, kw_only=True)
class CheckOutcome(Judged[MetricCheck]):
    """Everything ``edge check`` found; :attr:`exit_code` says what it comes to."""

    baseline: StoredRun
    run: StoredRun
    thresholds: Thresholds
    checks: list[MetricCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Further baseline runs: a regression had to show against each of them too.
    more_baselines: tuple[StoredRun, ...] = ()

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

    def to_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "exit_code": int(self.exit_code),
                "summary": self.summary, "baseline": self.baseline.run_id,
                "more_baselines": [b.run_id for b in self.more_baselines],
                "run": self.run.run_id, "thresholds": self.thresholds.to_dict(),
                "checks": [dataclasses.asdict(c) for c in self.checks], "notes": self.notes}

    def to_markdown(self) -> str:
        """A short summary for a pull-request comment (:func:`toolkit.gate.render.markdown`)."""
        return render.markdown(self)

    def to_junit(self) -> str:
        """JUnit XML: one test case per target x variant x metric."""
        return render.junit(self)


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
            return MetricCheck(target=where[0], variant=where[1], metric="status",
                               verdict="inconclusive", detail=detail)

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
            found = compare_records(base, new, thresholds, spread)
            differences = condition_differences(base, new)
            differing[key] = differences
            checks.extend(with_conditions(found, "; ".join(differences)))
    notes.extend(_conditions_notes(differing, baseline.run_id, run.run_id))
    return CheckOutcome(baseline=baseline, run=run, thresholds=thresholds, checks=checks,
                        notes=notes)


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


def load_baseline(ref: str, store: ResultsStore | None) -> StoredRun:
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
    return store.get_run(ref)

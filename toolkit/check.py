"""``edge check``: is a run worse than its baseline, beyond noise?

Each target x variant present in both runs is judged metric by metric against
:class:`Thresholds`.  Latency is judged on the raw samples: a bootstrap
confidence interval of the ratio ``new / baseline`` of the median (p50) and of
the 99th percentile (resampled in blocks, since disturbances come in bursts); a
latency regression is declared only when the *whole*
interval lies above ``1 + threshold``, so noise between identical runs does not
fail a build, and a real slowdown well past the threshold does.  Size, peak
memory, accuracy and energy per inference are compared directly.

Comparing different models, or a target that is a different board in the two
runs, is refused (:class:`CheckRefused`, a usage error).

Example::

    outcome = check_runs(baseline, run, Thresholds(latency_p50=5.0))
    outcome.passed, outcome.to_markdown(), outcome.to_junit()
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import numpy as np

from .errors import CheckRefused, UsageError
from .store import StoredRun, energy_per_inference_mj

#: Threshold name -> (what it judges, unit of the threshold).
THRESHOLD_HELP = {
    "latency_p50": "latency median, % slower",
    "latency_p99": "latency 99th percentile, % slower",
    "peak_memory": "peak resident memory, % more",
    "size": "artifact size, % larger",
    "accuracy": "accuracy, points lower",
    "energy": "energy per inference, % more",
}
#: Block length of the bootstrap, as a fraction of a run's samples (see bootstrap_ratio).
BLOCK_FRACTION = 0.05
#: Board facts that must agree for two results of one target to be comparable.
BOARD_IDENTITY = ("machine", "cpu_model", "board_model")


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """How much worse each metric may get, in percent (accuracy: in points), and how sure to be.

    Example: ``Thresholds.from_mapping({"latency_p50": "3%", "accuracy": 1})``
    """

    latency_p50: float = 5.0
    latency_p99: float = 10.0
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
    verdict: str  # "pass", "regression", "improved", "skipped"
    baseline: float | None = None
    value: float | None = None
    change: float | None = None  # percent, or points for accuracy
    threshold: float | None = None
    interval: tuple[float, float] | None = None  # bootstrap CI of the change, percent
    detail: str = ""

    @property
    def unit(self) -> str:
        return "pt" if self.metric == "accuracy" else "%"


@dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    """Everything ``edge check`` found; ``passed`` is False when anything regressed."""

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
    def passed(self) -> bool:
        return not self.regressions

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "baseline": self.baseline.run_id,
                "more_baselines": [b.run_id for b in self.more_baselines],
                "run": self.run.run_id, "thresholds": self.thresholds.to_dict(),
                "checks": [dataclasses.asdict(c) for c in self.checks], "notes": self.notes}

    def to_markdown(self) -> str:
        """A short summary for a pull-request comment."""
        head = "passed" if self.passed else f"{len(self.regressions)} regression(s)"
        lines = [f"### edge check: {head}", "",
                 f"Run `{self.run.run_id}` ({_commit(self.run)}) against baseline "
                 f"`{self.baseline.run_id}` ({_commit(self.baseline)})"
                 + "".join(f", `{b.run_id}`" for b in self.more_baselines)
                 + f", model `{self.run.model_name}`."
                 + (" A regression must show against each baseline run; each metric is "
                    "shown against the run it is closest to." if self.more_baselines else ""),
                 "",
                 "| target | variant | metric | baseline | new | change | limit | verdict |",
                 "|---|---|---|---:|---:|---:|---:|---|"]
        for c in self.checks:
            change = "" if c.change is None else f"{c.change:+.2f} {c.unit}"
            if c.interval is not None:
                change += f" [{c.interval[0]:+.1f}, {c.interval[1]:+.1f}]"
            limit = "" if c.threshold is None else \
                (f"-{c.threshold:g} pt" if c.metric == "accuracy" else f"+{c.threshold:g} %")
            mark = {"regression": "**REGRESSION**", "improved": "improved"}.get(c.verdict,
                                                                                   c.verdict)
            lines.append(f"| {c.target} | {c.variant} | {c.metric} | {_fmt(c.baseline)} | "
                         f"{_fmt(c.value)} | {change} | {limit} | {mark} |")
        lines.append("")
        lines.append(f"Latency changes show a {self.thresholds.confidence:.0%} bootstrap "
                     "interval; a latency regression needs the whole interval past the limit.")
        lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines) + "\n"

    def to_junit(self) -> str:
        """JUnit XML: one test case per target x variant x metric."""
        suite = ElementTree.Element("testsuite", {
            "name": "edge check", "tests": str(len(self.checks)),
            "failures": str(len(self.regressions)),
            "skipped": str(sum(c.verdict == "skipped" for c in self.checks))})
        for c in self.checks:
            case = ElementTree.SubElement(suite, "testcase", {
                "classname": f"edge.{c.target}.{c.variant}", "name": c.metric})
            text = _describe(c)
            if c.verdict == "regression":
                ElementTree.SubElement(case, "failure", {"message": text}).text = text
            elif c.verdict == "skipped":
                ElementTree.SubElement(case, "skipped", {"message": c.detail})
            else:
                ElementTree.SubElement(case, "system-out").text = text
        ElementTree.indent(suite)
        return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def check_runs(baseline: StoredRun | Sequence[StoredRun], run: StoredRun,
               thresholds: Thresholds | None = None) -> CheckOutcome:
    """Judge ``run`` against ``baseline``; :class:`CheckRefused` if they are not comparable.

    ``baseline`` may be several runs of the same model (say, three measurements of main):
    then a metric regresses only if it regresses against *each* of them, and is shown
    against the one it is closest to.  One run's bootstrap cannot see how much a second run
    of the same model differs (a tail that sits higher for a whole run on a shared
    machine); several baseline runs show that spread, and a change inside it is not
    blamed on the code.
    """
    thresholds = thresholds or Thresholds()
    baselines = [baseline] if isinstance(baseline, StoredRun) else list(baseline)
    if not baselines:
        raise UsageError("no baseline run given")
    outcomes = [_check_one(one, run, thresholds) for one in baselines]
    if len(outcomes) == 1:
        return outcomes[0]
    merged: dict[tuple[str, str, str], MetricCheck] = {}
    for outcome in outcomes:
        for c in outcome.checks:
            key = (c.target, c.variant, c.metric)
            if key not in merged or _severity(c) < _severity(merged[key]):
                merged[key] = c
    notes = list(dict.fromkeys(note for outcome in outcomes for note in outcome.notes))
    return CheckOutcome(baseline=baselines[0], run=run, thresholds=thresholds,
                        checks=list(merged.values()), notes=notes,
                        more_baselines=tuple(baselines[1:]))


def _severity(c: MetricCheck) -> tuple[int, float]:
    """Order of checks against several baselines: the mildest verdict, then change, first."""
    return (c.verdict == "regression", c.change if c.change is not None else 0.0)


def _check_one(baseline: StoredRun, run: StoredRun, thresholds: Thresholds) -> CheckOutcome:
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
            verdict = r.get("verdict")
            if isinstance(verdict, dict) and verdict.get("status") == "INVALID":
                notes.append(f"The {label}'s {r['target']}/{r['variant']} measurement is "
                             f"INVALID on the board: "
                             f"{'; '.join(str(x) for x in verdict.get('reasons') or [])}.")
    base_records = {(r["target"], r["variant"]): r for r in baseline.results}
    new_records = {(r["target"], r["variant"]): r for r in run.results}
    checks: list[MetricCheck] = []
    for key in sorted(set(base_records) | set(new_records)):
        target, variant = key
        if target not in shared:
            continue
        base, new = base_records.get(key), new_records.get(key)
        if new is None:
            checks.append(MetricCheck(target=target, variant=variant, metric="status",
                                      verdict="regression",
                                      detail="variant is in the baseline but not in the run"))
        elif base is None:
            notes.append(f"{target}/{variant} is new; no baseline to compare with.")
        elif new["status"] != "ok":
            checks.append(MetricCheck(target=target, variant=variant, metric="status",
                                      verdict="regression",
                                      detail=f"variant failed: {new.get('error', '')}"))
        elif base["status"] != "ok":
            notes.append(f"{target}/{variant} failed in the baseline; nothing to compare with.")
        else:
            checks.extend(_compare_records(base, new, thresholds))
    return CheckOutcome(baseline=baseline, run=run, thresholds=thresholds, checks=checks,
                        notes=notes)


def bootstrap_ratio(base: np.ndarray, new: np.ndarray, *, quantile: float, resamples: int,
                    confidence: float, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of the ``quantile`` of ``new`` to that of ``base``, with a bootstrap interval.

    Both samples are resampled independently (percentile bootstrap) in moving blocks of
    :data:`BLOCK_FRACTION` of each run: samples are in time order and the OS or a
    neighbour disturbs runs in bursts, so resampling single samples would treat a burst
    as many independent slow inferences and call a one-off a certainty.  Returns
    ``(ratio, low, high)``.  Seeded, so one pair of runs always gets one verdict.
    """
    rng = np.random.default_rng(seed)
    point = float(np.quantile(new, quantile) / np.quantile(base, quantile))
    ratios = np.empty(resamples)
    # Chunks keep memory near a few MB even for runs of 10,000 samples.
    chunk = max(1, 2_000_000 // max(base.size, new.size))
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        b = np.quantile(base[_block_indices(rng, base.size, rows)], quantile, axis=1)
        n = np.quantile(new[_block_indices(rng, new.size, rows)], quantile, axis=1)
        ratios[start:start + rows] = n / b
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return point, float(low), float(high)


def _block_indices(rng: np.random.Generator, size: int, rows: int) -> np.ndarray:
    """``rows`` moving-block resamples of ``range(size)``, blocks of BLOCK_FRACTION each."""
    length = max(1, int(size * BLOCK_FRACTION))
    count = -(-size // length)
    starts = rng.integers(0, size - length + 1, (rows, count))
    return (starts[:, :, None] + np.arange(length)).reshape(rows, -1)[:, :size]


def _compare_records(base: dict[str, Any], new: dict[str, Any],
                     t: Thresholds) -> list[MetricCheck]:
    where = (new["target"], new["variant"])
    checks = [_latency_check(base, new, "latency_p50", 0.5, "p50", t, where),
              _latency_check(base, new, "latency_p99", 0.99, "p99", t, where),
              _relative_check("peak_memory", base.get("peak_rss_bytes"),
                              new.get("peak_rss_bytes"), t.peak_memory, where),
              _relative_check("size", base.get("size_bytes"), new.get("size_bytes"), t.size,
                              where)]
    if base.get("accuracy") is not None and new.get("accuracy") is not None:
        change = 100 * (new["accuracy"] - base["accuracy"])
        verdict = "regression" if change < -t.accuracy else \
            "improved" if change > t.accuracy else "pass"
        checks.append(_at(where, metric="accuracy", verdict=verdict,
                                  baseline=100 * base["accuracy"], value=100 * new["accuracy"],
                                  change=change, threshold=t.accuracy))
    else:
        checks.append(_at(where, metric="accuracy", verdict="skipped",
                                  detail="no accuracy in one of the runs"))
    base_energy, new_energy = energy_per_inference_mj(base), energy_per_inference_mj(new)
    if base_energy is not None or new_energy is not None:
        checks.append(_relative_check("energy", base_energy, new_energy, t.energy, where))
    return checks


def _latency_check(base: dict[str, Any], new: dict[str, Any], metric: str, quantile: float,
                   summary_key: str, t: Thresholds, where: tuple[str, str]) -> MetricCheck:
    limit = getattr(t, metric)
    base_samples = np.asarray(base.get("latency_samples_ms") or [], dtype=np.float64)
    new_samples = np.asarray(new.get("latency_samples_ms") or [], dtype=np.float64)
    if base_samples.size < 2 or new_samples.size < 2 \
            or np.quantile(base_samples, quantile) <= 0:
        check = _relative_check(metric, (base.get("latency_ms") or {}).get(summary_key),
                                (new.get("latency_ms") or {}).get(summary_key), limit, where)
        return dataclasses.replace(check, detail="no raw samples: compared the summaries")
    ratio, low, high = bootstrap_ratio(base_samples, new_samples, quantile=quantile,
                                       resamples=t.resamples, confidence=t.confidence)
    verdict = "regression" if low > 1 + limit / 100 else \
        "improved" if high < 1 - limit / 100 else "pass"
    return _at(where, metric=metric, verdict=verdict,
               baseline=float(np.quantile(base_samples, quantile)),
               value=float(np.quantile(new_samples, quantile)),
               change=100 * (ratio - 1), threshold=limit,
               interval=(100 * (low - 1), 100 * (high - 1)),
               detail=f"{base_samples.size} vs {new_samples.size} samples")


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
        board = next((r.get("board") for r in stored.results
                      if r["target"] == target and r.get("board")), None) or {}
        return {key: str(board.get(key, "")) for key in BOARD_IDENTITY}

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
        text += f", {_fmt(c.baseline)} -> {_fmt(c.value)} ({c.change:+.2f} {c.unit}"
        if c.interval is not None:
            text += f", interval {c.interval[0]:+.1f} .. {c.interval[1]:+.1f} {c.unit}"
        text += f", limit {c.threshold:g} {c.unit})"
    return text + (f"; {c.detail}" if c.detail else "")


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

    from .store import load_export

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

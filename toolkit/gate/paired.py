"""The paired gate: baseline and candidate files measured side by side on one board.

Two runs measured seconds apart in two processes differ by up to 17 % on a shared machine,
so comparing stored runs can rarely decide.  Here one board job holds both sides' files;
the agent measures each pair interleaved in one child, with a baseline-against-itself
control (:mod:`device_agent.paired`), and sends every block median back.  This module
builds that job from two sets of records, runs it on the target, and judges each pair
again from the blocks with the agent's own statistics (the board's verdict only decided
when to stop measuring):

- ``latency_p50``: the ratio of block medians, against ``Thresholds.latency_p50``;
- ``latency_tail``: the ratio of each block's 90th percentile, against
  ``Thresholds.latency_tail`` (a p99 needs more runs than a block holds);
- ``energy``: the ratio of each block's energy per inference, against ``Thresholds.energy``,
  when the target's ``power_sensor`` opened on the board: after the latency rounds the agent
  runs an energy pass of its own (longer blocks, one power sampler through all of it;
  :func:`device_agent.paired.measure_energy`).  Without a sensor, or when the sensor failed,
  there is no energy metric, and the outcome's notes say why: never an energy verdict without
  an interval.

Both sides are measured with the same runtime, threads and accelerator, so what differs is
the files.  A pair that crashed fails that pair only (``inconclusive``, with the error).
The board's clock policy, read before and after each pair's latency rounds, is said beside
how the pair was measured, and a governor other than ``performance`` is noted as it is
beside a variant's verdict (:func:`device_agent.clocks.governor_condition`): a ratio holds
for that governor, but may differ under another.

Example::

    specs = pair_records(baseline_run, candidate_run)
    outcome = check_paired(load_target("local"), specs, Thresholds())
    outcome.exit_code, outcome.to_markdown()
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict, final
from xml.etree import ElementTree

from device_agent import protocol
from device_agent.clocks import clock_summary, governor_condition
from device_agent.paired import judge, log_ratios
from device_agent.wire import ClockBlock, Job, JobPair
from toolkit.boards.targets import Target
from toolkit.errors import ExitCode, ResultError, UsageError
from toolkit.gate.thresholds import Thresholds
from toolkit.results.record import ResultRecord
from toolkit.results.store import StoredRun
from toolkit.safe_text import markdown_text
from toolkit.units import format_duration, format_energy

#: The metrics a paired check judges, with the block figure each is judged on (energy's
#: blocks are in the pair's ``energy``, present only with a power sensor).
PAIRED_METRICS = {"latency_p50": "block_median_ms", "latency_tail": "block_p90_ms",
                  "energy": "block_energy_mj"}
#: The metrics every measured pair has.
LATENCY_METRICS = ("latency_p50", "latency_tail")
#: The note of a check whose board has no power sensor (the target's ``power_sensor``).
NO_SENSOR = "energy: not measured (no power sensor)"


@final
class EnergyFacts(TypedDict):
    """How a pair's energy pass was measured: the sensor, blocks a side, time, the control."""

    sensor: str
    triples: int
    block_seconds: float
    rounds: int
    seconds: float
    control_ratio: float


@final
class EnergyError(TypedDict):
    """A pair's energy pass that gave no figures: the sensor, and why."""

    sensor: str
    error: str


@final
class PairFacts(TypedDict):
    """How one pair was measured: blocks a side, rounds, time, runtime, the control."""

    triples: int
    block_runs: int
    rounds: int
    seconds: float
    runtime: str
    threads: int | None
    accelerator: str
    control_ratio: float
    #: The clock policy before and after the latency rounds (agents that read it).
    clocks: NotRequired[ClockBlock]
    #: Only when the target names a power sensor.
    energy: NotRequired[EnergyFacts | EnergyError]


@final
class PairError(TypedDict):
    """A pair the agent could not measure, and why."""

    error: str


@dataclass(frozen=True, kw_only=True)
class PairSpec:
    """One variant to measure paired: its name, and each side's file and record."""

    variant: str
    baseline_file: Path
    baseline_sha256: str
    candidate_file: Path
    candidate_sha256: str
    threads: int | None = None
    accelerator: str | None = None
    reference: Path | None = None

    def __post_init__(self) -> None:
        for side, path in (("baseline", self.baseline_file), ("candidate", self.candidate_file)):
            if not path.is_file():
                raise UsageError(f"{self.variant}: the {side}'s file {path} is gone; "
                                 f"deploy the {side} again to measure it")


@dataclass(frozen=True, kw_only=True)
class PairedMetric:
    """One metric of one variant, judged on the paired blocks."""

    target: str
    variant: str
    metric: str
    verdict: str  # pass, regression, improved, inconclusive
    limit: float  # percent
    ratio: float | None = None
    interval: tuple[float, float] | None = None  # of the ratio, widened by the floor
    floor: float | None = None  # the control's reach, as a ratio above 1
    control_ratio: float | None = None
    baseline_ms: float | None = None
    candidate_ms: float | None = None
    #: Energy per inference, the median of each side's blocks (the ``energy`` metric only).
    baseline_mj: float | None = None
    candidate_mj: float | None = None
    triples: int = 0
    detail: str = ""

    @property
    def change(self) -> float | None:
        """Percent slower (negative: faster)."""
        return None if self.ratio is None else (self.ratio - 1) * 100


@dataclass(frozen=True, kw_only=True)
class PairedOutcome:
    """Every paired metric, the measurement facts, and the exit code they come to."""

    target: str
    checks: list[PairedMetric] = field(default_factory=list)
    #: Per variant: block size, rounds, seconds measured, runtime, threads, accelerator.
    measurements: dict[str, PairFacts | PairError] = field(default_factory=dict)
    baseline: str = ""
    candidate: str = ""
    #: What was not measured, and why (energy without a sensor, a sensor that failed), and
    #: what the figures depend on (a governor other than ``performance``).
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[PairedMetric]:
        return [c for c in self.checks if c.verdict == "regression"]

    @property
    def inconclusive(self) -> list[PairedMetric]:
        return [c for c in self.checks if c.verdict == "inconclusive"]

    @property
    def exit_code(self) -> ExitCode:
        if self.regressions:
            return ExitCode.FAILED
        return ExitCode.INCOMPLETE if self.inconclusive or not self.checks else ExitCode.OK

    @property
    def summary(self) -> str:
        if self.regressions:
            worst = max(self.regressions, key=lambda c: c.ratio or 0)
            return (f"{len(self.regressions)} regression(s), e.g. {worst.variant} "
                    f"{worst.metric} {_percent(worst.ratio)} (limit +{worst.limit:g} %)")
        if self.inconclusive:
            first = self.inconclusive[0]
            return (f"cannot tell: {len(self.inconclusive)} metric(s), e.g. {first.variant} "
                    f"{first.metric}: {first.detail}")
        if not self.checks:
            return "cannot tell: no variant was measured on both sides"
        return "passed"

    def for_variant(self, variant: str) -> dict[str, object]:
        """What a stored record keeps of its pair: the baseline run, each metric's verdict and
        figures, and how it was measured."""
        return {"baseline_run": self.baseline, "target": self.target,
                "checks": [dataclasses.asdict(c) for c in self.checks if c.variant == variant],
                "measurement": self.measurements.get(variant, {})}

    def to_dict(self) -> dict[str, object]:
        return {"kind": "paired", "exit_code": int(self.exit_code), "summary": self.summary,
                "target": self.target, "baseline": self.baseline, "candidate": self.candidate,
                "checks": [dataclasses.asdict(c) for c in self.checks],
                "measurements": self.measurements, "notes": self.notes}

    def to_markdown(self) -> str:
        lines = [f"### edge check (paired on {markdown_text(self.target)}): "
                 f"{markdown_text(self.summary)}", "",
                 f"Candidate `{self.candidate}` and baseline `{self.baseline}` measured side by "
                 "side on the board, interleaved in one process, with the baseline against "
                 "itself as a control.", "",
                 "| variant | metric | baseline | candidate | change | interval | limit | "
                 "verdict |",
                 "|---|---|---:|---:|---:|---|---:|---|"]
        for c in self.checks:
            verdict = {"regression": "**REGRESSION**",
                       "inconclusive": f"cannot tell: {markdown_text(c.detail)}"
                       }.get(c.verdict, c.verdict)
            lines.append(f"| {markdown_text(c.variant)} | {c.metric} | "
                         f"{_figure(c, 'baseline')} | {_figure(c, 'candidate')} | "
                         f"{_percent(c.ratio)} | {_interval(c.interval)} | +{c.limit:g} % | "
                         f"{verdict} |")
        lines.append("")
        for variant, facts in self.measurements.items():
            name = markdown_text(variant)
            if "error" in facts:
                lines.append(f"- {name}: not measured: {markdown_text(facts['error'])}")
                continue
            lines.append(f"- {name}: {facts['triples']} blocks a side of {facts['block_runs']} "
                         f"runs in {facts['rounds']} round(s), {facts['seconds']:.1f} s; "
                         f"{markdown_text(facts['runtime'])}, {facts['threads']} thread(s), "
                         f"{markdown_text(facts['accelerator'])}; the baseline against itself: "
                         f"{_percent(facts['control_ratio'])}")
            if "clocks" in facts:
                lines.append(f"- {name} clocks: {markdown_text(_clocks_said(facts['clocks']))}")
            energy = facts.get("energy")
            if energy and "error" not in energy:
                lines.append(f"- {name} energy: {energy['triples']} blocks a side of "
                             f"{energy['block_seconds']:g} s in {energy['rounds']} round(s), "
                             f"{energy['seconds']:.1f} s; sensor "
                             f"{markdown_text(energy['sensor'])}; the baseline against "
                             f"itself: {_percent(energy['control_ratio'])}")
        lines.extend(f"- {markdown_text(note)}" for note in self.notes)
        lines.append("- The interval is the sign-test interval of the median ratio of block "
                     "figures, widened by the control's offset (at least 1 %); a regression "
                     "needs all of it past the limit, a pass all of it below.")
        return "\n".join(lines) + "\n"

    def to_junit(self) -> str:
        suite = ElementTree.Element("testsuite", {
            "name": "edge check (paired)", "tests": str(len(self.checks)),
            "failures": str(len(self.regressions)), "errors": str(len(self.inconclusive))})
        for c in self.checks:
            case = ElementTree.SubElement(suite, "testcase", {
                "classname": f"edge.{c.target}.{c.variant}", "name": c.metric})
            text = (f"{c.variant} {c.metric}: {c.verdict}, {_percent(c.ratio)} "
                    f"{_interval(c.interval)} against +{c.limit:g} %"
                    + (f"; {c.detail}" if c.detail else ""))
            tag = {"regression": "failure", "inconclusive": "error"}.get(c.verdict)
            if tag:
                ElementTree.SubElement(case, tag, {"message": text}).text = text
            else:
                ElementTree.SubElement(case, "system-out").text = text
        if self.notes:
            ElementTree.SubElement(suite, "system-out").text = "\n".join(self.notes)
        ElementTree.indent(suite)
        return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def pair_records(baseline: StoredRun, candidate: StoredRun, *,
                 target: str | None = None) -> tuple[str, list[PairSpec]]:
    """The variants both runs measured well on one target, with each side's file.

    ``target`` (default: the candidate's only target) picks one when the runs hold several.
    """
    targets = sorted({r.target for r in candidate.results})
    if target is None:
        if len(targets) != 1:
            raise UsageError(f"run {candidate.run_id} holds targets {', '.join(targets)}; "
                             "name one with --target")
        target = targets[0]
    base = {r.variant: r for r in baseline.results if r.target == target and r.ok}
    specs = []
    for record in candidate.results:
        if record.target != target or not record.ok or record.variant not in base:
            continue
        specs.append(_spec(record.variant, base[record.variant], baseline, record, candidate))
    if not specs:
        raise UsageError(f"runs {baseline.run_id} and {candidate.run_id} have no variant "
                         f"measured on {target} in both")
    return target, specs


def _spec(variant: str, base: ResultRecord, base_run: StoredRun, new: ResultRecord,
          new_run: StoredRun) -> PairSpec:
    accelerator = new.measured.get("accelerator")
    return PairSpec(variant=variant,
                    baseline_file=_artifact_file(base_run, base),
                    baseline_sha256=base.sha256 or "",
                    candidate_file=_artifact_file(new_run, new),
                    candidate_sha256=new.sha256 or "",
                    threads=new.threads,
                    accelerator=(str(accelerator.get("requested"))
                                 if isinstance(accelerator, dict) else None))


def _artifact_file(run: StoredRun, record: ResultRecord) -> Path:
    name = record.artifact.get("file")
    if not isinstance(name, str) or not record.sha256:
        raise UsageError(f"run {run.run_id} holds no file for {record.variant}; "
                         "deploy it again to measure it paired")
    return Path(run.report_dir) / "artifacts" / name


def paired_job(specs: Sequence[PairSpec], target: Target, thresholds: Thresholds,
               job_id: str) -> tuple[Job, dict[str, Path]]:
    """The board job measuring ``specs`` paired, and the files it needs by board name."""
    variants: list[dict[str, Any]] = []
    pairs: list[JobPair] = []
    files: dict[str, Path] = {}
    for spec in specs:
        base_name, new_name = f"{spec.baseline_sha256}.tflite", f"{spec.candidate_sha256}.tflite"
        files[base_name], files[new_name] = spec.baseline_file, spec.candidate_file
        candidate: dict[str, object] = {"name": f"{spec.variant}~candidate", "file": new_name,
                                        "sha256": spec.candidate_sha256}
        if spec.threads is not None:
            candidate["threads"] = spec.threads
        if spec.accelerator in protocol.ACCELERATORS:
            candidate["accelerator"] = spec.accelerator
        if spec.reference is not None:
            candidate["reference"] = spec.reference.name
            files[spec.reference.name] = spec.reference
        variants += [{"name": f"{spec.variant}~baseline", "file": base_name,
                      "sha256": spec.baseline_sha256}, candidate]
        pairs.append({"name": spec.variant, "baseline": f"{spec.variant}~baseline",
                      "candidate": f"{spec.variant}~candidate"})
    job = protocol.make_job(job_id=job_id, variants=variants, settings={
        "threads": target.threads, "runtime": target.runtime, "accelerator": target.accelerator,
        "api": target.api, "delegate": target.delegate or "",
        "delegate_options": dict(target.delegate_options),
        "power_sensor": target.power_sensor,
        "thermal_zones": ",".join(target.thermal_zones),
        "set_governor": target.set_governor})
    job["pairs"] = pairs
    job["paired"] = {"limit": thresholds.latency_p50 / 100,
                     "tail_limit": thresholds.latency_tail / 100,
                     "energy_limit": thresholds.energy / 100}
    protocol.validate_job(job)
    return job, files


def check_paired(target: Target, specs: Sequence[PairSpec], thresholds: Thresholds, *,
                 baseline: str = "", candidate: str = "",
                 run_job: Callable[[Target, Job, dict[str, Path]], bytes] | None = None
                 ) -> PairedOutcome:
    """Measure ``specs`` paired on ``target`` and judge each pair."""
    from toolkit.run.runner import JobRunner

    job, files = paired_job(specs, target, thresholds, f"paired-{uuid.uuid4().hex[:12]}")
    raw = (run_job or (lambda t, j, f: JobRunner(t).run_job(j, f)))(target, job, files)
    try:
        result = protocol.parse_result(raw, job)
    except protocol.ProtocolError as exc:
        raise ResultError(f"agent on {target.name} answered an invalid result: {exc}",
                          target=target.name) from None
    checks: list[PairedMetric] = []
    measurements: dict[str, PairFacts | PairError] = {}
    for pair in result["pairs"]:
        checks += judge_pair(target.name, pair, thresholds)
        measurements[pair["name"]] = _facts(pair)
    return PairedOutcome(target=target.name, checks=checks, measurements=measurements,
                         baseline=baseline, candidate=candidate,
                         notes=clock_notes(result["pairs"]) + energy_notes(result["pairs"]))


def clock_notes(pairs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The condition a variant's verdict names when its clusters were not on the
    ``performance`` governor, once per condition, with the pairs measured under it."""
    found: dict[str, list[str]] = {}
    for pair in pairs:
        clocks = pair.get("clocks") if pair["status"] == "ok" else None
        if clocks:
            condition = governor_condition([clocks[when] for when in ("before", "after")
                                            if when in clocks])
            if condition:
                found.setdefault(condition, []).append(pair["name"])
    return [f"{', '.join(names)}: {condition}" for condition, names in found.items()]


def energy_notes(pairs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why the measured pairs have no energy metric: :data:`NO_SENSOR` once when the board
    has no power sensor, and each sensor error once, with the variants it cost."""
    errors: dict[str, list[str]] = {}
    notes = []
    for pair in pairs:
        if pair["status"] != "ok":
            continue
        energy = pair.get("energy")
        if energy is None:
            if NO_SENSOR not in notes:
                notes.append(NO_SENSOR)
        elif "error" in energy:
            errors.setdefault(energy["error"], []).append(pair["name"])
    notes += [f"energy of {', '.join(names)}: not measured: {error}"
              for error, names in errors.items()]
    return notes


def judge_pair(target: str, pair: Mapping[str, Any], thresholds: Thresholds
               ) -> list[PairedMetric]:
    """Each paired metric of one pair's answer, judged from its blocks."""
    limits = {"latency_p50": thresholds.latency_p50, "latency_tail": thresholds.latency_tail,
              "energy": thresholds.energy}
    if pair["status"] != "ok":
        return [PairedMetric(target=target, variant=pair["name"], metric=metric,
                             verdict="inconclusive", limit=limits[metric],
                             detail=f"not measured: {pair['error']}")
                for metric in LATENCY_METRICS]
    checks = []
    for metric, figure in PAIRED_METRICS.items():
        if metric == "energy":
            if "block_energy_mj" not in (pair.get("energy") or {}):
                continue  # no sensor, or it failed: energy_notes says which
            blocks = pair["energy"][figure]
            looks = int(protocol.PairedSettings.FIELDS["energy_max_rounds"])
        else:
            blocks = pair[figure]
            looks = int(protocol.PairedSettings.FIELDS["max_rounds"])
        sides = {"baseline": _median(blocks["baseline"]),
                 "candidate": _median(blocks["candidate"])}
        unit = "mj" if metric == "energy" else "ms"
        ratios = log_ratios(blocks)
        judged = judge(ratios["candidate"], ratios["control"], limit=limits[metric] / 100,
                       confidence=protocol.PairedSettings.FIELDS["confidence"], looks=looks)
        low, high = judged["interval"]
        checks.append(PairedMetric(
            target=target, variant=pair["name"], metric=metric, verdict=judged["verdict"],
            limit=limits[metric], ratio=judged["ratio"],
            interval=(low, high) if math.isfinite(high) and low > 0 else None,
            floor=judged["floor"] if math.isfinite(judged["floor"]) else None,
            control_ratio=judged["control_ratio"],
            **{f"{side}_{unit}": value for side, value in sides.items()},
            triples=judged["triples"], detail=judged.get("reason", "")))
    return checks


def _facts(pair: Mapping[str, Any]) -> PairFacts | PairError:
    if pair["status"] != "ok":
        return {"error": pair["error"]}
    ratios = log_ratios(pair["block_median_ms"])
    control = sorted(ratios["control"])[len(ratios["control"]) // 2]
    runtime = pair["runtime"]
    facts: PairFacts = {
        "triples": len(pair["block_median_ms"]["baseline"]), "block_runs": pair["block_runs"],
        "rounds": pair.get("rounds", 1), "seconds": pair["seconds"],
        "runtime": f"{runtime['name']} {runtime['version']}", "threads": pair.get("threads"),
        "accelerator": pair.get("accelerator", "cpu"), "control_ratio": math.exp(control)}
    if pair.get("clocks"):
        facts["clocks"] = pair["clocks"]
    energy = pair.get("energy")
    if energy is not None:
        sensor = energy["sensor"]
        described = sensor["kind"] + (f" (misses {sensor['misses']})"
                                      if sensor.get("misses") else "")
        if "error" in energy:
            facts["energy"] = {"sensor": described, "error": energy["error"]}
        else:
            blocks = energy["block_energy_mj"]
            facts["energy"] = {
                "sensor": described, "triples": len(blocks["baseline"]),
                "block_seconds": energy["block_seconds"], "rounds": energy.get("rounds", 1),
                "seconds": energy["seconds"],
                "control_ratio": math.exp(_median(log_ratios(blocks)["control"]))}
    return facts


def _clocks_said(clocks: ClockBlock) -> str:
    """The clock policy of a pair: once when it held through the rounds, else before and
    after."""
    said = {when: clock_summary(clocks[when]) for when in ("before", "after") if when in clocks}
    if len(set(said.values())) == 1:
        return next(iter(said.values()))
    return "; ".join(f"{when}: {text}" for when, text in said.items())


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _percent(ratio: float | None) -> str:
    return "" if ratio is None or not math.isfinite(ratio) else f"{(ratio - 1) * 100:+.2f} %"


def _interval(interval: tuple[float, float] | None) -> str:
    """The widened interval as percentages; "spread unknown" when it has no finite ends."""
    if interval is None:
        return "spread unknown"
    return f"[{(interval[0] - 1) * 100:+.2f}, {(interval[1] - 1) * 100:+.2f}] %"


def _figure(check: PairedMetric, side: str) -> str:
    """One side's figure in the units deploy prints: a duration, or energy per inference."""
    mj = getattr(check, f"{side}_mj")
    if mj is not None:
        return format_energy(mj)
    ms = getattr(check, f"{side}_ms")
    return "" if ms is None else format_duration(ms)


__all__ = ["EnergyError", "EnergyFacts", "LATENCY_METRICS", "NO_SENSOR", "PAIRED_METRICS",
           "PairError", "PairFacts", "PairSpec", "PairedMetric", "PairedOutcome",
           "check_paired", "clock_notes", "energy_notes", "judge_pair", "pair_records",
           "paired_job"]

"""``edge deploy``: one model on its target boards, a preset of :mod:`toolkit.run.execute`.

The whole loop (model -> compress -> artifacts -> board runner -> agent -> store ->
report) lives there, shared with ``edge bench``; this module fills the plan and says
what failed.  Everything is built in a staging folder beside the final one and moved
into place only when the run succeeded, so a failed run leaves neither artifacts nor
a report behind, and the store holds only validated results.

Example::

    outcome = deploy("examples/digits_cnn.py", targets=["local"], recipes="fp32,int8")
    print(outcome.report["html"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.boards.lab import load_lab
from toolkit.defaults import DEFAULT_BUSY_WAIT_SECONDS
from toolkit.defaults import DEFAULT_OUT_DIR as DEFAULT_OUT_DIR
from toolkit.errors import MatrixIncomplete, UsageError
from toolkit.gate.paired import PairedOutcome, PairSpec
from toolkit.gate.thresholds import Thresholds
from toolkit.model.project import STORE_ENV as STORE_ENV  # the CLI names it in --store's help
from toolkit.results.choose import Choice
from toolkit.results.record import ResultRecord, Stage
from toolkit.results.store import ResultsStore, StoredRun, store_location
from toolkit.run.boards import board_sources
from toolkit.run.execute import BoardJob, BoardStep, execute, measure
from toolkit.run.plan import Policy, RunPlan, Sweep


@dataclass(frozen=True)
class DeployOutcome:
    run: StoredRun
    run_dir: Path
    report: dict[str, Path]
    store_path: Path | str
    #: With an accuracy budget: per target, the variant picked by measured latency, and why.
    choices: list[Choice] = field(default_factory=list)
    #: With ``against``: per target, the candidate measured side by side with the baseline.
    paired: list[PairedOutcome] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        """One line per variant not measured, with its reason (see :func:`failure_lines`)."""
        return failure_lines(self.run.results)

    def incomplete(self) -> MatrixIncomplete | None:
        """The error to exit with when a variant was not measured (the run is stored)."""
        failed = sorted({_failed_name(r) for r in self.run.results if not r.ok})
        if not failed:
            return None
        total = len({r.key for r in self.run.results})
        measured = total - sum(not r.ok for r in self.run.results)
        kept = (f"what was measured is stored in run {self.run.run_id}" if measured
                else f"run {self.run.run_id} stores the failures")
        cells = ("variants" if len({r.target for r in self.run.results}) == 1
                 else "target x variant cells")
        return MatrixIncomplete(f"{total - measured} of {total} {cells} not measured "
                                f"({', '.join(failed)}); {kept}")


def failure_lines(results: list[ResultRecord]) -> list[str]:
    """``"int8-dynamic: not built: ..."``, ``"segv on local: killed by signal ..."``.

    A variant that failed to build failed for every target: it is named once.
    """
    lines = {f"{_failed_name(r)}: {r.error or r.status}": None for r in results if not r.ok}
    return list(lines)


def _failed_name(record: ResultRecord) -> str:
    if record.stage is Stage.COMPRESS:
        return record.variant
    return f"{record.variant} on {record.target}"


def deploy(model_path: str | Path, *, targets: Iterable[str] = ("local",),
           recipes: str | None = None, out_dir: str | Path = DEFAULT_OUT_DIR,
           store_path: str | Path | None = None, targets_dir: str | Path | None = None,
           settings: Mapping[str, object] | None = None,
           threads: Sequence[int] | None = None,
           accelerators: Sequence[str] | None = None,
           tags: Iterable[str] = (),
           max_accuracy_drop: float | None = None,
           conversion_cache: str | Path | None = None,
           lab_file: str | Path | None = None,
           progress: Callable[[str], None] | None = None,
           coordinator: str | None = None, priority: int = 0,
           busy_wait_seconds: float = DEFAULT_BUSY_WAIT_SECONDS,
           against: str | None = None,
           thresholds: Thresholds | None = None,
           calibration: Path | None = None,
           runtimes: Sequence[str] = ()) -> DeployOutcome:
    """Compress ``model_path``, run every variant on every target, store and report.

    The preset of :func:`toolkit.run.execute.execute` for one model: boards one after the
    other, and a board that fails fails the deploy.
    ``recipes``: comma-separated chains; by default ``fp32,int8`` for a model file and
    the file as given for a ``.tflite`` (which is always measured, as the baseline).
    ``threads`` sweeps thread counts (each target's own setting if None): every
    variant runs once per count, named ``VARIANT-tN`` in results when sweeping.
    ``accelerators`` sweeps accelerators (each target's own ``accelerator`` if None) the
    same way: ``VARIANT@gpu`` (``VARIANT@gpu-t2`` with threads) when sweeping.
    ``settings``: job settings (:class:`device_agent.protocol.JobSettings` names) over
    each target file's.
    ``max_accuracy_drop`` (points against fp32): only variants within it run, and each
    target's fastest VALID one, by its own measured latency beyond noise, is picked
    (:mod:`toolkit.results.choose`); every candidate left out is named in the choice with why.
    ``conversion_cache``: a folder where converted variants are kept and found again
    (:mod:`toolkit.compress._cache`); None converts every variant.
    ``targets`` are resolved as ``edge bench`` resolves them: boards and ``tag:NAME`` of
    the lab file (``lab_file``, else ``$EDGE_LAB``, else ``./lab.toml``), else target files.
    ``progress`` is told each stage as it starts, in one line (``"local: measuring fp32,
    int8"``), for a live display; the messages are for people, not for parsing.
    A target ``tag:board=KIND`` is a board the labgrid ``coordinator`` (else the lab
    file's) allots, reserved with ``priority`` (:mod:`toolkit.labgrid.hold`); its results
    are named by the place that ran them.  A board another job holds is waited for up to
    ``busy_wait_seconds`` (0: the deploy fails at once, before compressing).
    ``calibration``: a folder of calibration inputs (one ``.npy``/``.npz`` per sample) for
    full-integer ``int8`` of a ``.tflite`` given (:mod:`toolkit.model.calibration`).
    ``against`` (a run id or tag in the store): after the measurement, each target measures
    every variant's new file side by side with that run's file of the same variant
    (:mod:`toolkit.gate.paired`), judged against ``thresholds``; the figures go into the
    stored records (``measured["paired"]``) and the verdicts into :attr:`DeployOutcome.paired`.
    ``runtimes`` (``tflite``, ``onnxruntime``; none: TFLite): the runtimes a model file's
    variants are built for, measured side by side in one run; ONNX Runtime's are named
    ``VARIANT-ort`` (``fp32-ort``).
    """
    from toolkit.compress import parse_recipes

    # Cheap checks first, so a typo fails in milliseconds, not after a conversion.
    names = [name for name in targets if name.strip()]
    if not names:
        raise UsageError("no target given; use for example --target local")
    chosen = load_lab(lab_file, targets_dir).select_jobs(names, coordinator=coordinator,
                                                         priority=priority)
    plan = RunPlan(models=(Path(model_path),),
                   recipes=tuple(parse_recipes(recipes)) if recipes else (),
                   boards=tuple(board_sources(chosen)), settings=dict(settings or {}),
                   sweep=Sweep(threads=tuple(threads or ()),
                               accelerators=tuple(accelerators or ())),
                   policy=Policy(max_accuracy_drop=max_accuracy_drop,
                                 busy_wait_seconds=busy_wait_seconds,
                                 conversion_cache=Path(conversion_cache) if conversion_cache
                                 else None),
                   out_dir=Path(out_dir), store_path=store_path, tags=tuple(tags),
                   calibration=calibration, runtimes=tuple(runtimes))
    paired: list[PairedOutcome] = []
    steps = None
    if against is not None:
        if threads or accelerators:
            raise UsageError("--against measures with each target's own threads and "
                             "accelerator; drop --threads and --accelerator")
        baseline = _baseline_run(against, plan)
        steps = [_measure_against(baseline, thresholds or Thresholds(), paired, progress)]
    execution = execute(plan, progress=progress, steps=steps)
    [done] = execution.runs
    final_dir = Path(done.run.report_dir)
    return DeployOutcome(run=done.run, run_dir=final_dir, store_path=execution.store_path,
                         report=done.reports, choices=done.choices, paired=paired)


def _baseline_run(ref: str, plan: RunPlan) -> StoredRun:
    """The ``--against`` run, looked up before anything is built: a typo fails at once."""
    from toolkit.gate.check import load_baseline
    from toolkit.run.execute import default_store_path

    location = store_location(plan.store_path) if plan.store_path \
        else default_store_path(plan.out_dir)
    if isinstance(location, Path) and not location.exists():
        raise UsageError(f"--against {ref}: there is no results store at {location} yet; "
                         "deploy the baseline first (and tag it: edge runs tag latest main)")
    with ResultsStore(location, create=False) as store:
        return load_baseline(ref, store)


def _measure_against(baseline: StoredRun, thresholds: Thresholds,
                     outcomes: list[PairedOutcome],
                     progress: Callable[[str], None] | None) -> BoardStep:
    """The board step of ``--against``: measure as usual, then every variant the baseline
    also holds side by side with its file, on the same held board."""
    from toolkit.gate.paired import check_paired

    files = {r.recipe: r for r in baseline.results if r.ok and r.sha256}

    def step(job: BoardJob) -> list[ResultRecord]:
        records = measure(job)
        specs = [PairSpec(variant=a.variant, baseline_file=_stored_file(baseline, files[a.variant]),
                          baseline_sha256=files[a.variant].sha256 or "",
                          candidate_file=a.path, candidate_sha256=a.sha256,
                          reference=job.model.references.get(a.board_name))
                 for a in job.model.artifacts if a.variant in files]
        if not specs:
            outcomes.append(PairedOutcome(target=job.target.name, baseline=baseline.run_id,
                                          candidate=job.model.run_id))
            return records
        if progress:
            progress(f"{job.target.name}: measuring {', '.join(s.variant for s in specs)} "
                     f"side by side with run {baseline.run_id}")
        outcome = check_paired(job.target, specs, thresholds, baseline=baseline.run_id,
                               candidate=job.model.run_id)
        outcomes.append(outcome)
        return [record.replace(measured={**record.measured,
                                         "paired": outcome.for_variant(record.variant)})
                if record.ok and record.variant in outcome.measurements else record
                for record in records]

    return step


def _stored_file(run: StoredRun, record: ResultRecord) -> Path:
    name = record.artifact.get("file")
    return Path(run.report_dir) / "artifacts" / str(name)

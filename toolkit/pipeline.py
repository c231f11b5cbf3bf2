"""The whole loop: model -> compress -> artifacts -> board runner -> agent -> store -> report.

Everything is built in a staging folder beside the final one and moved into
place only when the run succeeded, so a failed run leaves neither artifacts
nor a report behind, and the store holds only validated results.

Example::

    outcome = deploy("examples/digits_cnn.py", targets=["local"], recipes="fp32,int8")
    print(outcome.report["html"])
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_agent import protocol

from .artifact import Artifact, FailedVariant, write_manifest
from .choose import Choice, choose_fastest, split_by_budget
from .compress import Chain, build_artifacts, parse_recipes
from .defaults import DEFAULT_OUT_DIR as DEFAULT_OUT_DIR
from .errors import (
    CompressError,
    EdgeError,
    MatrixIncomplete,
    OutputError,
    ResultError,
    UsageError,
)
from .lab import load_lab
from .model import ModelSource, load_model_source
from .project import STORE_ENV as STORE_ENV  # the CLI names it in --store's help
from .project import git_commit, resolve_store_path
from .reference import compute_references, source_inputs
from .report import write_report
from .results import ResultRecord, Stage
from .runner import JobRunner, check_boards
from .store import ResultsStore, StoredRun, store_location
from .targets import Target

if TYPE_CHECKING:
    from .scheduling import ScheduledTarget

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployOutcome:
    run: StoredRun
    run_dir: Path
    report: dict[str, Path]
    store_path: Path | str
    #: With an accuracy budget: per target, the variant picked by measured latency, and why.
    choices: list[Choice] = field(default_factory=list)

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


def default_store_path(out_dir: Path) -> Path | str:
    """``$EDGE_STORE``, else ``[tool.edge] store`` in pyproject.toml, else OUT/results.sqlite."""
    return resolve_store_path(None, default=out_dir / "results.sqlite")


def deploy(model_path: str | Path, *, targets: Iterable[str] = ("local",),
           recipes: str = "fp32,int8", out_dir: str | Path = DEFAULT_OUT_DIR,
           store_path: str | Path | None = None, targets_dir: str | Path | None = None,
           settings: dict[str, Any] | None = None,
           threads: Sequence[int] | None = None,
           accelerators: Sequence[str] | None = None,
           tags: Iterable[str] = (),
           max_accuracy_drop: float | None = None,
           conversion_cache: str | Path | None = None,
           lab_file: str | Path | None = None,
           progress: Callable[[str], None] | None = None,
           coordinator: str | None = None, priority: int = 0) -> DeployOutcome:
    """Compress ``model_path``, run every variant on every target, store and report.

    ``threads`` sweeps thread counts (each target's own setting if None): every
    variant runs once per count, named ``VARIANT-tN`` in results when sweeping.
    ``accelerators`` sweeps accelerators (each target's own ``accelerator`` if None) the
    same way: ``VARIANT@gpu`` (``VARIANT@gpu-t2`` with threads) when sweeping.
    ``max_accuracy_drop`` (points against fp32): only variants within it run, and each
    target's fastest VALID one, by its own measured latency beyond noise, is picked
    (:mod:`toolkit.choose`); every candidate left out is named in the choice with why.
    ``conversion_cache``: a folder where converted variants are kept and found again
    (:mod:`toolkit.compress._cache`); None converts every variant.
    ``targets`` are resolved as ``edge bench`` resolves them: boards and ``tag:NAME`` of
    the lab file (``lab_file``, else ``$EDGE_LAB``, else ``./lab.toml``), else target files.
    ``progress`` is told each stage as it starts, in one line (``"local: measuring fp32,
    int8"``), for a live display; the messages are for people, not for parsing.
    A target ``tag:board=KIND`` is a board the labgrid ``coordinator`` (else the lab
    file's) allots, reserved with ``priority`` (:mod:`toolkit.scheduling`); its results
    are named by the place that ran them.
    """
    say = progress or _silent
    # Cheap checks first, so a typo fails in milliseconds, not after a conversion.
    names = [name for name in targets if name.strip()]
    if not names:
        raise UsageError("no target given; use for example --target local")
    chosen = load_lab(lab_file, targets_dir).select_jobs(names, coordinator=coordinator,
                                                         priority=priority)
    boards = [t for t in chosen if isinstance(t, Target)]  # the rest: allotted later
    check_accelerators(boards, accelerators)
    configs = parse_recipes(recipes)
    if max_accuracy_drop is not None and "fp32" not in [c.recipe for c in configs]:
        configs = [*parse_recipes("fp32"), *configs]  # the accuracy reference
    out_dir = Path(out_dir)
    store_path = store_location(store_path) if store_path else default_store_path(out_dir)
    # The coordinator answers in a second; loading the model imports torch first (4-8 s).
    check_coordinators([t for t in chosen if not isinstance(t, Target)])
    say(f"loading {Path(model_path).name}")
    source = load_model_source(model_path)
    # Every board is checked before anything is converted or uploaded: a bad host key or a
    # missing runtime is known in seconds, not after the compression.
    say(f"checking {', '.join(t.name for t in chosen)}")
    for problem in check_boards(boards, threads).values():
        if isinstance(problem, EdgeError):
            raise problem
    check_delegates(boards, accelerators)
    run_id = new_run_id()
    staging = make_staging_dir(out_dir, run_id)
    final_dir = out_dir / "runs" / run_id
    try:
        with ResultsStore(store_path) as store:
            artifacts, failed, references = prepare_model(source, configs, staging,
                                                          cache_dir=conversion_cache,
                                                          progress=say)
            over: list[tuple[str, str]] = []
            if max_accuracy_drop is not None:
                for failure in failed:
                    if failure.variant == "fp32":
                        raise CompressError(f"fp32, the accuracy reference of "
                                            f"--max-accuracy-drop, was not built: "
                                            f"{failure.error}", recipe="fp32")
                artifacts, over = split_by_budget(artifacts, max_accuracy_drop)
            # A variant that failed to build stays in the run as a failed record per target.
            per_target: dict[str, list[ResultRecord]] = {}
            for target in chosen:
                say(f"{target.name}: measuring {', '.join(a.variant for a in artifacts)}"
                    if isinstance(target, Target) else f"{target.name}: reserving a board")
                measured = (_run_anywhere(target, run_id, artifacts, settings, threads,
                                          references, say, accelerators) if artifacts else [])
                name = measured[0].target if measured else target.name
                per_target[name] = [*measured, *(f.record(name) for f in failed)]
            choices = ([choose_fastest(name, records, left_out=over)
                        for name, records in per_target.items()]
                       if max_accuracy_drop is not None else [])
            picked = {(choice.target, choice.variant): choice.message for choice in choices}
            results = [record.replace(chosen=picked[record.key]) if record.key in picked
                       else record for records in per_target.values() for record in records]
            run = new_run(run_id, source, final_dir, results, tags)
            say("storing the run and writing its report")
            reports = publish_run(store, run, staging, final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DeployOutcome(run=run, run_dir=final_dir, store_path=store_path,
                         report=reports, choices=choices)


def prepare_model(source: ModelSource, configs: list[Chain], staging: Path, *,
                  cache_dir: str | Path | None = None,
                  progress: Callable[[str], None] | None = None
                  ) -> tuple[list[Artifact], list[FailedVariant], dict[str, Path]]:
    """Compress ``source`` into ``staging/artifacts`` (with its manifest) and its references.

    A variant that cannot be built is returned among the failed, with its reason; the
    others are built all the same.  ``cache_dir``: the conversion cache, if any;
    ``progress``: told each step, as :func:`deploy`'s is.
    """
    say = progress or _silent
    failed: list[FailedVariant] = []
    artifacts = build_artifacts(source, configs, staging / "artifacts",
                                cache_dir=Path(cache_dir) if cache_dir else None, failed=failed,
                                progress=lambda message: say(f"compress {message}"))
    write_manifest(staging / "artifacts", source, artifacts, failed)
    say("reference outputs on this machine")
    return artifacts, failed, _build_references(source, artifacts, staging / "references")


def _silent(_message: str) -> None:
    """The progress callback when nobody watches."""


def new_run(run_id: str, source: ModelSource, final_dir: Path,
            results: list[ResultRecord], tags: Iterable[str] = ()) -> StoredRun:
    return StoredRun(run_id=run_id, created_at=_now(), model_name=source.name,
                     model_path=str(source.path), model_sha256=source.sha256,
                     report_dir=str(final_dir), git_commit=git_commit(source.path),
                     tags=tuple(tags), results=results)


def publish_run(store: ResultsStore, run: StoredRun, staging: Path,
                final_dir: Path) -> dict[str, Path]:
    """Write results into ``staging``, move it to ``final_dir``, store the run, then write
    its reports there; returns the reports written.

    The folder appears whole or not at all, and is removed again if the store refuses the run.
    The run is stored before any report is rendered: a report that cannot be written is
    one warning naming the run (``edge report RUN`` renders it again from the store), never
    a lost measurement.
    """
    (staging / "results.json").write_text(json.dumps(run.to_dict()["results"], indent=2)
                                          + "\n", encoding="utf-8")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(final_dir)
    try:
        store.add_run(run)
    except Exception:
        shutil.rmtree(final_dir, ignore_errors=True)
        raise
    try:
        return write_report(run, final_dir)
    except Exception as exc:  # noqa: BLE001 - any failure: the run is stored, nothing is lost
        _log.warning("run %s is stored, but its report could not be written (%s: %s); "
                     "`edge report %s` renders it again", run.run_id, type(exc).__name__, exc,
                     run.run_id)
        return {}


def make_staging_dir(out_dir: Path, run_id: str) -> Path:
    staging = out_dir / f".staging-{run_id}"
    try:
        (staging / "artifacts").mkdir(parents=True)
    except OSError as exc:
        raise OutputError(f"output folder {out_dir} is not writable: {exc.strerror}",
                          path=out_dir) from None
    return staging


def _build_references(source: ModelSource, artifacts: list[Artifact],
                      folder: Path) -> dict[str, Path]:
    """Host interpreter outputs on real inputs, per artifact, for the board's output check.

    Computed in a child Python: a model that crashes the runtime costs its output
    check, not the deploy (the board then reports the crash as that variant's failure).
    """
    folder.mkdir(parents=True, exist_ok=True)
    made = compute_references([(a.path, folder / f"{a.sha256}.ref.npz") for a in artifacts],
                              source_inputs(source))
    references = {}
    for artifact in artifacts:
        answer = made[artifact.path]
        if isinstance(answer, Path):
            references[artifact.board_name] = answer
        else:  # e.g. a custom op the host lacks, or a crash: deploy it all the same
            _log.warning("no output check for %s: the host interpreter could not run it (%s)",
                         artifact.variant, answer)
    return references


def check_coordinators(slots: Sequence[ScheduledTarget]) -> None:
    """Each coordinator reachable, with a place for each selector, before any work."""
    from .scheduling import check_coordinator

    for slot in slots:
        check_coordinator(slot)


def _run_anywhere(target: Target | ScheduledTarget, run_id: str, artifacts: list[Artifact],
                  settings: dict[str, Any] | None, threads: Sequence[int] | None,
                  references: dict[str, Path], say: Callable[[str], None],
                  accelerators: Sequence[str] | None) -> list[ResultRecord]:
    """:func:`run_on_target` on a board, or on the one the labgrid coordinator allots."""
    if isinstance(target, Target):
        return run_on_target(target, run_id, artifacts, settings, threads, references,
                             accelerators=accelerators)
    from .scheduling import run_scheduled

    variants = ", ".join(a.variant for a in artifacts)
    return run_scheduled(
        target, lambda board: run_on_target(board, run_id, artifacts, settings, threads,
                                            references, accelerators=accelerators),
        on_status=lambda status: say(f"{target.name}: {status}"
                                     + (f"; measuring {variants}"
                                        if status.state == "acquired" else "")))


def run_on_target(target: Target, run_id: str, artifacts: list[Artifact],
                  settings: dict[str, Any] | None, threads: Sequence[int] | None,
                  references: dict[str, Path], *,
                  accelerators: Sequence[str] | None = None) -> list[ResultRecord]:
    counts = list(threads) if threads else [target.threads]
    sweeping = len(counts) > 1
    kinds = list(accelerators) if accelerators else [target.accelerator]
    # An --accelerator sweep names each cell VARIANT@ACCELERATOR: the record's recipe
    # carries it, so that names stay apart in the store and round-trip unchanged.
    planned = [(artifact, count, kind) for artifact in artifacts for kind in kinds
               for count in counts]
    variants = []
    files = {a.board_name: a.path for a in artifacts}
    for artifact, count, kind in planned:
        name = artifact.variant + (f"@{kind}" if len(kinds) > 1 else "")
        variant = {"name": f"{name}-t{count}" if sweeping else name,
                   "file": artifact.board_name, "sha256": artifact.sha256, "threads": count,
                   "accelerator": kind}
        if artifact.board_name in references:
            reference = references[artifact.board_name]
            variant["reference"] = reference.name
            files[reference.name] = reference
        variants.append(variant)
    job = protocol.make_job(job_id=f"{run_id}-{target.name}", variants=variants,
                            settings={"threads": target.threads, "runtime": target.runtime,
                                      **_target_accelerator(target),
                                      **_target_sensors(target, settings), **(settings or {})})
    raw = JobRunner(target).run_job(job, files)
    try:
        result = protocol.parse_result(raw, job)
    except protocol.ProtocolError as exc:
        raise ResultError(f"agent on {target.name} answered an invalid result: {exc}",
                          target=target.name) from None
    records = []
    for (artifact, count, kind), measured in zip(planned, result["variants"], strict=True):
        record = ResultRecord.measured_on(target.name, artifact, measured,
                                          board=result["board"], threads=count, swept=sweeping)
        records.append(record.replace(recipe=f"{artifact.variant}@{kind}") if len(kinds) > 1
                       else record)
    return records


def check_accelerators(targets: Sequence[Target], accelerators: Sequence[str] | None) -> None:
    """A usage error, before any work, for an accelerator no target can be asked for."""
    for kind in accelerators or ():
        if kind not in protocol.ACCELERATORS:
            raise UsageError(f"unknown accelerator {kind!r}; one of "
                             f"{', '.join(protocol.ACCELERATORS)}")
        for target in targets:
            if kind == "delegate" and not target.delegate:
                raise UsageError(f"target {target.name} names no delegate library: set "
                                 f'delegate = "/path/on/the/board/lib.so" in its target file')


def check_delegates(targets: Sequence[Target], accelerators: Sequence[str] | None) -> None:
    """A usage error when a target's delegate library does not load as a delegate on its
    board: the target file names a wrong path, and every variant would fail for it."""
    from .doctor import diagnose

    for target in targets:
        if "delegate" not in (accelerators or [target.accelerator]):
            continue
        checks = diagnose(target, ["delegate"]).checks
        failed = next((c for c in checks if c.name == "accelerator delegate" and not c.ok), None)
        if failed is not None:
            raise UsageError(f"target {target.name}: {failed.detail}")


def _target_accelerator(target: Target) -> dict[str, Any]:
    """The target file's accelerator, API and external delegate, as job settings."""
    return {"accelerator": target.accelerator, "api": target.api,
            "delegate": target.delegate or "",
            "delegate_options": dict(target.delegate_options)}


def _target_sensors(target: Target, settings: dict[str, Any] | None) -> dict[str, str]:
    """The target file's thermal zones, and its power sensor unless the command line chose
    a sensor or a meter."""
    chosen = settings or {}
    sensors = {"thermal_zones": ",".join(target.thermal_zones)}
    if "power_sensor" not in chosen and "power_command" not in chosen:
        sensors["power_sensor"] = target.power_sensor
    return sensors


def new_run_id() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

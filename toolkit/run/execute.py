"""The one flow: check the plan, compress each model, run it on every board, store, report.

``edge deploy`` (:func:`toolkit.run.deploy.deploy`) and ``edge bench``
(:func:`toolkit.run.bench.bench`) are presets over :func:`execute`; each step below is
written once::

    check   names, accelerators, coordinators, the model files, every board (and, with
            --busy-wait 0, its lease or a free labgrid place), delegates: all before
            the first conversion
    build   per model, in a staging folder: variants, manifest, reference outputs;
            with an accuracy budget, only the variants within it go on
    run     per board (one after the other, or all at once), per model: the plan's
            board steps on the held board (:data:`BoardStep`; the first measures)
    store   per model, one run: every board's records, the budget's pick per board;
            the staging folder moves into place whole, then the store takes the run

Example::

    done = execute(plan, progress=print)
    done.runs[0].run.run_id
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gc
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from device_agent import protocol
from toolkit.artifacts.bundle import Artifact
from toolkit.boards.board import local_board_home
from toolkit.errors import (
    AgentError,
    BoardBusyError,
    EdgeError,
    InfrastructureError,
    OutputError,
    ResultError,
    StoreError,
    UsageError,
)
from toolkit.model.load import ModelSource, load_model_source
from toolkit.model.project import git_commit, resolve_store_path
from toolkit.report.profile import with_node_names
from toolkit.report.render import write_report
from toolkit.results.choose import Choice, choose_fastest
from toolkit.results.export import run_folder_files
from toolkit.results.facts import Measurements
from toolkit.results.record import ResultRecord, Stage, Status, artifact_facts
from toolkit.results.store import ResultsStore, StoredRun, store_location
from toolkit.run.boards import BoardSource, LabgridBoard
from toolkit.run.cancel import (
    allow_jobs,
    cancel_running_jobs,
    interrupts_deferred,
    raise_if_interrupted,
)
from toolkit.run.plan import RunPlan, Sweep, job_settings
from toolkit.run.prepare import PreparedModel, build_references, prepare, prepare_model
from toolkit.run.resources import check_resources
from toolkit.run.runner import JobRunner, check_boards
from toolkit.run.staging import hold, release, sweep_staging

if TYPE_CHECKING:
    from toolkit.boards.targets import Target

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoardEvent:
    """What a board is doing now, for a progress display."""

    target: str
    model: str
    state: str  # "waiting" (board busy or queued), "running", "ok", "failed", "skipped"
    detail: str = ""


@dataclass(frozen=True)
class BoardJob:
    """One model on one held board, as a :data:`BoardStep` sees it."""

    target: Target
    model: PreparedModel
    plan: RunPlan


#: A job on a held board, after the ones before it in ``execute(steps=...)``: the records
#: it adds to the run.  :func:`measure` is the first; a preset may add its own after it.
BoardStep = Callable[[BoardJob], list[ResultRecord]]


@dataclass(frozen=True)
class ExecutedRun:
    """One model's stored run, with a budget each board's pick, and the reports written
    (none when rendering failed: the run is stored all the same)."""

    run: StoredRun
    choices: list[Choice]
    reports: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Execution:
    runs: list[ExecutedRun]
    left_out: dict[str, str]  # board -> why it was not used
    store_path: Path | str


def execute(plan: RunPlan, *, progress: Callable[[str], None] | None = None,
            on_event: Callable[[BoardEvent], None] | None = None,
            steps: Sequence[BoardStep] | None = None) -> Execution:
    """Run ``plan``: check it whole, build each model, run ``steps`` on every board, store.

    ``progress`` is told each stage in one line, for people (``"local: measuring fp32,
    int8"``); ``on_event`` gets each board's state.  ``steps`` (default: :func:`measure`)
    run one after the other on each held board, per model.
    """
    say = progress or _silent
    notify = on_event or _silent
    board_steps = list(steps or [measure])
    named = [b.known for b in plan.boards if b.known is not None]
    for kind in plan.sweep.accelerators:
        for target in named:
            if kind == "delegate" and not target.delegate:
                raise UsageError(f"target {target.name} names no delegate library: set "
                                 f'delegate = "/path/on/the/board/lib.so" in its target file')
    # The coordinator answers in a second; loading a model imports torch first (4-8 s).
    for board in plan.boards:
        if isinstance(board, LabgridBoard):
            board.check()
    sources = []
    for path in plan.models:
        say(f"loading {path.name}")
        sources.append(load_model_source(path, calibration=plan.calibration))
        plan.check_model(sources[-1])
        for target in named:
            check_runtime(target, sources[-1], plan.model_runtimes(sources[-1]),
                          asked=bool(plan.runtimes))
    # A model too large for this machine's disk or memory stops here, not minutes into a
    # conversion (or killed by the kernel with no word).
    check_resources([(source, plan.chains(source)) for source in sources], out_dir=plan.out_dir,
                    cache_dir=plan.policy.conversion_cache,
                    board_dirs=[local_board_home()] if any(
                        t.transport == "local" for t in named) else [])
    store_path = (store_location(plan.store_path) if plan.store_path
                  else default_store_path(plan.out_dir))
    left_out = _health(plan, named, notify)
    checking = [b for b in plan.boards if b.name not in left_out]
    say(f"checking {', '.join(b.name for b in checking)}")
    failed_check = _check_boards(plan, checking, notify,
                                 onnx=any("onnxruntime" in plan.model_runtimes(source)
                                          for source in sources))
    ready = [b for b in plan.boards if b.name not in left_out and b.name not in failed_check]
    check_delegates([b.known for b in ready if b.known is not None], plan.sweep.accelerators)

    # The output folder is tried before the store is opened in it: "not writable" says it.
    staging: list[tuple[str, Path]] = []
    prepared: list[PreparedModel] = []
    try:
        for _ in range(len(sources)):  # not the sources: the loop's name would keep one
            run_id = new_run_id()
            staging.append((run_id, make_staging_dir(plan.out_dir, run_id)))
        with ResultsStore(store_path) as store:
            for index, (run_id, folder) in enumerate(staging):
                prepared.append(prepare(plan, sources[index], run_id, folder, say))
                sources[index] = prepared[-1].source  # built: its torch module is let go
            _release_memory()
            raise_if_interrupted()  # one a library swallowed: nothing is measured
            done = _run_boards(plan, ready, prepared, board_steps, say, notify)
            runs = []
            for index, model in enumerate(prepared):
                per_board: dict[str, list[ResultRecord]] = {}
                for board in plan.boards:
                    if board.name in left_out:
                        records = failed_records(board.name, model.artifacts, "unhealthy",
                                                 left_out[board.name], status=Status.SKIPPED)
                    elif board.name in failed_check:
                        problem = failed_check[board.name]
                        records = failed_records(board.name, model.artifacts,
                                                 error_class(problem), str(problem))
                    else:
                        records = done[board.name][index]
                    name = records[0].target if records else board.name
                    per_board[name] = [*records, *(f.record(name) for f in model.failed)]
                runs.append(_store(plan, store, model, per_board, say=say,
                                   concurrent=plan.policy.parallel and len(ready) > 1))
    except BaseException:
        for _, folder in staging:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return Execution(runs=runs, left_out=left_out, store_path=store_path)


def _health(plan: RunPlan, named: list[Target],
            notify: Callable[[BoardEvent], None]) -> dict[str, str]:
    """Boards the policy's health check leaves out, with why."""
    health = plan.policy.health
    if health is None or not named:
        return {}
    with ThreadPoolExecutor(max_workers=len(named), thread_name_prefix="health") as pool:
        reasons = list(pool.map(health, named))
    left_out = {}
    for board, reason in zip(named, reasons, strict=True):
        if reason:
            left_out[board.name] = reason
            notify(BoardEvent(board.name, "", "skipped", reason))
    return left_out


def _check_boards(plan: RunPlan, boards: list[BoardSource],
                  notify: Callable[[BoardEvent], None], *, onnx: bool = False
                  ) -> dict[str, EdgeError]:
    """Connection, host key, Python, numpy, runtime of every named board (with ``onnx``,
    onnxruntime and the execution providers asked for) and, with ``--busy-wait 0``, whether
    each board (a labgrid place too) can be had now, before any compression: failed boards
    and why, or raise."""
    failed: dict[str, EdgeError] = {}
    named = [b.known for b in boards if b.known is not None]
    providers = list(plan.sweep.accelerators) if onnx else None
    for name, answer in check_boards(named, plan.sweep.threads or None, providers).items():
        if isinstance(answer, EdgeError):
            failed[name] = answer
    if plan.policy.busy_wait_seconds == 0:
        for board in boards:
            busy = None if board.name in failed else board.busy_now()
            if busy:
                failed[board.name] = BoardBusyError(f"{busy} (--busy-wait 0: not waiting)",
                                                    target=board.name)
    for name, problem in failed.items():
        if not plan.policy.keep_going:
            raise problem
        notify(BoardEvent(name, "", "failed", f"{error_class(problem)}: {problem}"))
    return failed


def _run_boards(plan: RunPlan, boards: list[BoardSource], prepared: list[PreparedModel],
                steps: list[BoardStep], say: Callable[[str], None],
                notify: Callable[[BoardEvent], None]) -> dict[str, list[list[ResultRecord]]]:
    """Per board, every model's records: one thread per board with ``policy.parallel``."""
    def one_board(board: BoardSource) -> list[list[ResultRecord]]:
        return [_one_job(plan, board, model, steps, say, notify) for model in prepared]

    if not plan.policy.parallel or len(boards) < 2:
        return {board.name: one_board(board) for board in boards}
    pool = ThreadPoolExecutor(max_workers=len(boards), thread_name_prefix="board")
    try:
        futures = {board.name: pool.submit(one_board, board) for board in boards}
        return {name: future.result() for name, future in futures.items()}
    except BaseException:
        cancel_running_jobs()  # Ctrl-C: every board's job is stopped, then its lease released
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        allow_jobs()


def _one_job(plan: RunPlan, board: BoardSource, model: PreparedModel, steps: list[BoardStep],
             say: Callable[[str], None], notify: Callable[[BoardEvent], None]
             ) -> list[ResultRecord]:
    """``steps`` for one model on one board, held once; a board failure becomes failed
    records when the policy keeps going, else it fails the run."""
    name = model.source.name
    if not model.artifacts:  # nothing built (or nothing within the budget): nothing to send
        return []
    variants = ", ".join(a.variant for a in model.artifacts)

    def status(message: str, ready: bool) -> None:
        say(f"{board.name}: " + "; ".join(part for part in
                                          (message, f"measuring {variants}" if ready else "")
                                          if part))
        notify(BoardEvent(board.name, name, "running" if ready else "waiting", message))

    def on_board(target: Target) -> list[ResultRecord]:
        job = BoardJob(target, model, plan)
        return [record for step in steps for record in step(job)]

    try:
        records = board.run(on_board, busy_wait_seconds=plan.policy.busy_wait_seconds,
                            on_status=status)
    except EdgeError as exc:
        if not plan.policy.keep_going:
            raise
        kind = error_class(exc)
        notify(BoardEvent(board.name, name, "failed", f"{kind}: {exc}"))
        return failed_records(board.name, model.artifacts, kind, str(exc))
    failed = sum(not r.ok for r in records)
    where = f"on {records[0].target}" if records and records[0].target != board.name else ""
    notify(BoardEvent(board.name, name, "failed" if failed else "ok",
                      ", ".join(p for p in (where, f"{failed} variant(s) failed" if failed
                                            else "") if p)))
    return records


def measure(job: BoardJob) -> list[ResultRecord]:
    """The first board step: every variant x the sweep, in one agent job."""
    return run_on_target(job.target, job.model.run_id, job.model.artifacts, job.plan.settings,
                         job.plan.sweep, job.model.references)


def run_on_target(target: Target, run_id: str, artifacts: list[Artifact],
                  settings: Mapping[str, object] | None, sweep: Sweep,
                  references: dict[str, Path]) -> list[ResultRecord]:
    """Every artifact x thread count x accelerator of ``sweep`` on ``target``, one job.

    ``settings``: the command line's job settings, over the target file's.
    """
    counts = list(sweep.threads) or [target.threads]
    sweeping = len(counts) > 1
    kinds = list(sweep.accelerators) or [target.accelerator]
    # An --accelerator sweep names each cell VARIANT@ACCELERATOR: the record's recipe
    # carries it, so that names stay apart in the store and round-trip unchanged.
    planned = [(artifact, count, kind) for artifact in artifacts for kind in kinds
               for count in counts]
    variants = []
    files = {a.board_name: a.path for a in artifacts}
    for artifact, count, kind in planned:
        name = artifact.variant + (f"@{kind}" if len(kinds) > 1 else "")
        variant: dict[str, object] = {
            "name": f"{name}-t{count}" if sweeping else name, "file": artifact.board_name,
            "sha256": artifact.sha256, "threads": count, "accelerator": kind}
        if artifact.board_name in references:
            reference = references[artifact.board_name]
            variant["reference"] = reference.name
            files[reference.name] = reference
        variants.append(variant)
    job = protocol.make_job(job_id=f"{run_id}-{target.name}", variants=variants,
                            settings=job_settings(target, settings or {}))
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
        if record.profile is not None:
            measured_here: Measurements = {
                **record.measured, "profile": with_node_names(record.profile, artifact.path)}
            record = record.replace(measured=measured_here)
        records.append(record.replace(recipe=f"{artifact.variant}@{kind}") if len(kinds) > 1
                       else record)
    return records


def _store(plan: RunPlan, store: ResultsStore, model: PreparedModel,
           per_board: dict[str, list[ResultRecord]], *, concurrent: bool,
           say: Callable[[str], None]) -> ExecutedRun:
    """One model's records, with the budget's pick per board, published and stored."""
    choices = ([choose_fastest(name, records, left_out=model.over_budget)
                for name, records in per_board.items()]
               if plan.policy.max_accuracy_drop is not None else [])
    picked = {(choice.target, choice.variant): choice.message for choice in choices}
    results = [record.replace(chosen=picked[record.key]) if record.key in picked else record
               for records in per_board.values() for record in records]
    if concurrent:
        results = mark_shared_machines(results)
    run = new_run(model.run_id, model.source, model.final_dir, results, plan.tags)
    say("storing the run and writing its report")
    reports = publish_run(store, run, model.staging, model.final_dir)
    return ExecutedRun(run=run, choices=choices, reports=reports)


def check_runtime(target: Target, source: ModelSource, runtimes: Sequence[str], *,
                  asked: bool = False) -> None:
    """A usage error, before any work, when the target's ``runtime`` setting cannot read the
    files ``source`` gives on ``runtimes`` (:meth:`RunPlan.model_runtimes`; ``asked``: named
    by ``--runtime``): an ``.onnx`` runs on onnxruntime, a ``.tflite`` on a TFLite runtime,
    ``auto`` on either."""
    if target.runtime == "auto":
        return
    built = f"--runtime {','.join(runtimes)} builds " if asked else ""
    model_file = not source.as_given
    if "onnxruntime" in runtimes and target.runtime != "onnxruntime":
        raise UsageError(
            (f"{built}.onnx files, which run on onnxruntime," if built
             else f"{source.path.name} runs on onnxruntime")
            + f" and target {target.name}'s runtime is {target.runtime}; set runtime = "
            '"auto" or "onnxruntime" in its target file'
            + ("" if not model_file else ", or drop onnxruntime from --runtime"
               if len(runtimes) > 1 else ", or give --runtime tflite"))
    if "tflite" in runtimes and target.runtime == "onnxruntime":
        raise UsageError(
            (f"{built}.tflite files" if built else f"{source.path.name} gives .tflite files")
            + f" and target {target.name}'s runtime is onnxruntime (.onnx only); set runtime = "
            '"auto" or a TFLite runtime in its target file'
            + (", or give --runtime onnxruntime" if model_file else ""))


def check_delegates(targets: Sequence[Target], accelerators: Sequence[str]) -> None:
    """A usage error when a target's delegate library does not load as a delegate on its
    board: the target file names a wrong path, and every variant would fail for it."""
    from toolkit.boards.doctor import diagnose

    for target in targets:
        if "delegate" not in (accelerators or [target.accelerator]):
            continue
        checks = diagnose(target, ["delegate"]).checks
        failed = next((c for c in checks if c.name == "accelerator delegate" and not c.ok), None)
        if failed is not None:
            raise UsageError(f"target {target.name}: {failed.detail}")


def error_class(exc: BaseException) -> str:
    """The failure kinds of :mod:`toolkit.errors`, as a report column says them."""
    for cls, name in ((InfrastructureError, "infrastructure"), (AgentError, "job"),
                      (ResultError, "result"), (UsageError, "usage")):
        if isinstance(exc, cls):
            return name
    return type(exc).__name__


def failed_records(target: str, artifacts: list[Artifact], kind: str, message: str, *,
                   status: Status = Status.ERROR) -> list[ResultRecord]:
    """Every variant of a board that did not run, with the error's class and message."""
    return [ResultRecord(target=target, recipe=a.variant, status=status,
                         stage=Stage.BOARD, error_class=kind, error=message,
                         artifact=artifact_facts(a)) for a in artifacts]


def mark_shared_machines(results: list[ResultRecord]) -> list[ResultRecord]:
    """Note, on each record, the other boards that ran on the same kernel at the same time."""
    by_boot: dict[str, set[str]] = {}
    for record in results:
        boot = record.board.get("boot_id") if record.board else None
        if boot:
            by_boot.setdefault(boot, set()).add(record.target)
    marked = []
    for record in results:
        boot = record.board.get("boot_id") if record.board else None
        others = tuple(sorted(by_boot.get(boot, set()) - {record.target})) if boot else ()
        marked.append(record.replace(measured_beside=others) if others else record)
    return marked


def default_store_path(out_dir: Path) -> Path | str:
    """``$EDGE_STORE``, else ``[tool.edge] store`` in pyproject.toml, else OUT/results.sqlite."""
    return resolve_store_path(None, default=out_dir / "results.sqlite")


def new_run(run_id: str, source: ModelSource, final_dir: Path,
            results: list[ResultRecord], tags: Iterable[str] = ()) -> StoredRun:
    """The run as the store keeps it; its folder absolute, so that ``edge check --paired``
    finds its files and a trend page links its report from any working directory."""
    return StoredRun(run_id=run_id, created_at=_now(), model_name=source.name,
                     model_path=str(source.path), model_sha256=source.sha256,
                     report_dir=str(final_dir.resolve()),
                     git_commit=git_commit(source.path),
                     tags=tuple(tags), results=results)


def publish_run(store: ResultsStore, run: StoredRun, staging: Path,
                final_dir: Path) -> dict[str, Path]:
    """Write the run's files into ``staging``, move it to ``final_dir``, store the run, then
    write its reports there; returns the reports written.

    The folder appears whole or not at all.  A measured run is never thrown away: its
    folder holds ``results.json`` and ``run.json`` before the store is asked, and stays
    when the store refuses the run (damaged, full, unreachable); the :class:`StoreError`
    then says where it is and how to store it later (``edge runs import DIR``).  When the
    folder cannot be written (a full disk) the two files go to the system's temporary
    folder instead, unless the store takes the run.  The run is stored before any report
    is rendered: a report that cannot be written is one warning naming the run (``edge
    report RUN`` renders it again from the store), never a lost measurement.
    """
    raise_if_interrupted()  # one a library swallowed: nothing is stored
    files = run_folder_files(run)
    kept: Path | None = final_dir
    not_written: OSError | None = None
    # Ctrl-C from here waits until the run is both in place and stored (then it is raised):
    # between the two, it left a run folder that no stored run names.
    with interrupts_deferred():
        try:
            for name, text in files.items():
                (staging / name).write_text(text, encoding="utf-8")
            final_dir.parent.mkdir(parents=True, exist_ok=True)
            release(staging)  # its owner file does not go with it
            staging.rename(final_dir)
        except OSError as exc:  # a full disk, most often
            not_written, kept = exc, None
        try:
            if not_written is not None:
                kept = _spare_copy(run.run_id, files)
            store.add_run(run)
        except StoreError as exc:
            if kept is None:
                raise StoreError(f"{exc}, and its folder {final_dir} could not be written "
                                 f"({not_written.strerror if not_written else 'no room'}): "
                                 "the measurement is lost") from None
            raise StoreError(f"{exc}; its results are kept in {kept}: store them later with "
                             f"`edge runs import {kept}`") from None
    if not_written is not None:
        shutil.rmtree(staging, ignore_errors=True)  # the run is stored; free the room
        if kept is not None:
            shutil.rmtree(kept, ignore_errors=True)
        _log.warning("run %s is stored, but its folder %s could not be written (%s); "
                     "`edge report %s` renders its report", run.run_id, final_dir,
                     not_written.strerror or not_written, run.run_id)
        return {}
    try:
        return write_report(run, final_dir)
    except Exception as exc:  # noqa: BLE001 - any failure: the run is stored, nothing is lost
        _log.warning("run %s is stored, but its report could not be written (%s: %s); "
                     "`edge report %s` renders it again", run.run_id, type(exc).__name__, exc,
                     run.run_id)
        return {}


def _spare_copy(run_id: str, files: dict[str, str]) -> Path | None:
    """``files`` in a folder of the system's temporary folder (another disk, often), or
    ``None`` when that cannot be written either."""
    folder = Path(tempfile.gettempdir()) / f"edge-run-{run_id}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return folder


def make_staging_dir(out_dir: Path, run_id: str) -> Path:
    """A new ``OUT/.staging-RUN`` with ``artifacts/``, held by this process until published.

    Stale staging folders, left by deploys that were killed (SIGKILL, OOM, a CI timeout),
    are swept first (:func:`sweep_staging`).
    """
    sweep_staging(out_dir)
    staging = out_dir / f".staging-{run_id}"
    try:
        (staging / "artifacts").mkdir(parents=True)
    except OSError as exc:
        raise OutputError(f"output folder {out_dir} is not writable: {exc.strerror}",
                          path=out_dir) from None
    hold(staging)
    return staging


def new_run_id() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _release_memory() -> None:
    """Give the memory of what is no longer referenced back to the system, now."""
    gc.collect()  # a module's reference cycles (hooks, parametrizations) hold its weights
    with contextlib.suppress(OSError, AttributeError):  # glibc only; elsewhere nothing to do
        ctypes.CDLL(None).malloc_trim(0)  # freed heap pages otherwise stay with the process


def _silent(_message: object) -> None:
    """The progress callback when nobody watches."""


# PreparedModel, build_references and prepare_model live in toolkit.run.prepare (the build
# step); they stay importable from here, where callers have always taken them.
__all__ = ["BoardEvent", "BoardJob", "BoardStep", "Execution", "ExecutedRun",
           "PreparedModel", "build_references", "check_delegates", "check_runtime",
           "default_store_path",
           "error_class", "execute", "failed_records", "make_staging_dir",
           "mark_shared_machines", "measure", "new_run", "new_run_id", "prepare_model",
           "publish_run", "run_on_target"]

"""Lab benchmarking: models x variants x boards, every board busy at once.

Each model is compressed once on the host; then one thread per board runs the
board's jobs one model after the other, so a board never runs two jobs of ours
at a time, and the board's lease (:mod:`toolkit.lock`) keeps other hosts' jobs
off it too: a busy board is waited for, not skipped.  The job runner retries
infrastructure failures a bounded number of times with backoff; a board that
still fails (unreachable, link lost, disk full) marks its cells with the error
class and the other boards finish.  Each model becomes one stored run holding
every board's results, so the report compares boards side by side.

A board entry can also be a labgrid selector (``tag:board=rpi4``, a
:class:`~toolkit.scheduling.ScheduledTarget`): each of its jobs then waits in the
coordinator's queue for a matching place, runs there (under the board's lease too)
and gives the place back; its results are named by the place that ran them.

Example::

    outcome = bench(["examples/digits_cnn.py"], targets=load_lab().select("tag:rpi4"),
                    recipes="fp32,int8")
    outcome.complete, [c.status for c in outcome.cells]
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifact import Artifact, FailedVariant
from .compress import parse_recipes
from .defaults import DEFAULT_BUSY_WAIT_SECONDS as DEFAULT_BUSY_WAIT_SECONDS
from .errors import (
    AgentError,
    BoardBusyError,
    EdgeError,
    InfrastructureError,
    MatrixIncomplete,
    ResultError,
    UsageError,
)
from .model import ModelSource, load_model_source
from .pipeline import (
    DEFAULT_OUT_DIR,
    check_accelerators,
    check_coordinators,
    default_store_path,
    make_staging_dir,
    new_run,
    new_run_id,
    prepare_model,
    publish_run,
    run_on_target,
)
from .results import ResultRecord, Stage, Status, artifact_facts
from .runner import allow_jobs, cancel_running_jobs, check_boards
from .store import ResultsStore, StoredRun, store_location
from .targets import Target

if TYPE_CHECKING:
    from .scheduling import ScheduledTarget, SchedulerStatus


@dataclass(frozen=True)
class BenchEvent:
    """What a board is doing now, for a progress display."""

    target: str
    model: str
    state: str  # "waiting" (board busy), "running", "ok", "failed", "skipped"
    detail: str = ""


@dataclass(frozen=True)
class BenchCell:
    """One target x model x variant of the matrix."""

    target: str
    model: str
    variant: str
    status: Status
    error_class: str = ""  # infrastructure, job, result, usage, unhealthy
    error: str = ""
    p50_ms: float | None = None
    verdict: str = ""  # the agent's VALID / INVALID for a measured cell ("" from older agents)
    verdict_reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status.parse(self.status, f"cell {self.variant}"))

    @property
    def shown_status(self) -> str:
        """What the summary says: VALID, INVALID with its reasons, or the failure's reason."""
        if self.status is Status.OK:
            if self.verdict and self.verdict != "VALID":
                return f"{self.verdict}: {'; '.join(self.verdict_reasons)}".rstrip(": ")
            return self.verdict or "ok"
        kind = f"{self.status} ({self.error_class})" if self.error_class else self.status
        return f"{kind}: {self.error}" if self.error else kind


@dataclass(frozen=True)
class BenchOutcome:
    runs: list[StoredRun]
    cells: list[BenchCell]
    left_out: dict[str, str]  # board -> why it was not used
    store_path: Path | str

    @property
    def complete(self) -> bool:
        """Every cell was measured: a variant that failed to build or to run is a hole too."""
        return all(c.status is Status.OK for c in self.cells)

    def incomplete(self) -> MatrixIncomplete | None:
        """The error to exit with when a cell has no measurement (the rest is stored)."""
        if self.complete:
            return None
        missing = sorted({c.target for c in self.cells
                          if c.status not in (Status.OK, Status.FAILED)})
        failed = [f"{c.model}/{c.target}/{c.variant}" for c in self.cells
                  if c.status is Status.FAILED]
        parts = ([f"no results from {', '.join(missing)}"] if missing else []) + \
            ([f"{len(failed)} of {len(self.cells)} cells failed ({', '.join(failed)})"]
             if failed else [])
        return MatrixIncomplete(f"matrix incomplete: {'; '.join(parts)}")


@dataclass
class _Prepared:
    source: ModelSource
    run_id: str
    staging: Path
    final_dir: Path
    artifacts: list[Artifact]
    failed: list[FailedVariant]
    references: dict[str, Path]

    def failed_records(self, target: Target | ScheduledTarget) -> list[ResultRecord]:
        """The variants that were not built, as failed cells of ``target``."""
        return [failure.record(target.name) for failure in self.failed]


def bench(models: Sequence[str | Path], *, targets: Sequence[Target | ScheduledTarget],
          recipes: str = "fp32,int8",
          out_dir: str | Path = DEFAULT_OUT_DIR, store_path: str | Path | None = None,
          settings: dict[str, Any] | None = None,
          health: Callable[[Target], str | None] | None = None,
          busy_wait_seconds: float = DEFAULT_BUSY_WAIT_SECONDS,
          on_event: Callable[[BenchEvent], None] | None = None,
          tags: Iterable[str] = (),
          accelerators: Sequence[str] | None = None) -> BenchOutcome:
    """Run every model's ``recipes`` on every target; store one run per model.

    ``health(target)`` returns why a board must be left out (None: healthy); a board the
    coordinator allots is checked when it is acquired instead.
    ``accelerators`` sweeps accelerators as :func:`toolkit.pipeline.deploy` does.
    """
    if not targets:
        raise UsageError("no target given; use for example --targets local")
    if not models:
        raise UsageError("no model given")
    boards = [t for t in targets if isinstance(t, Target)]  # the rest: allotted later
    check_accelerators(boards, accelerators)
    configs = parse_recipes(recipes)
    # The coordinator answers in a second; loading the models imports torch first (4-8 s).
    check_coordinators([t for t in targets if not isinstance(t, Target)])
    sources = [load_model_source(model) for model in models]  # typos fail before any work
    out_dir = Path(out_dir)
    store_path = store_location(store_path) if store_path else default_store_path(out_dir)
    notify = on_event or (lambda event: None)

    left_out: dict[str, str] = {}
    if health is not None and boards:
        with ThreadPoolExecutor(max_workers=len(boards), thread_name_prefix="health") as pool:
            reasons = list(pool.map(health, boards))
        for board, reason in zip(boards, reasons, strict=True):
            if reason:
                left_out[board.name] = reason
                notify(BenchEvent(board.name, "", "skipped", reason))
    # The board check (connect, host key, Python, numpy, runtime) before any compression.
    failed_check: dict[str, EdgeError] = {}
    for name, answer in check_boards([t for t in boards if t.name not in left_out]).items():
        if isinstance(answer, EdgeError):
            failed_check[name] = answer
            notify(BenchEvent(name, "", "failed", f"{error_class(answer)}: {answer}"))
    healthy = [t for t in targets if t.name not in left_out and t.name not in failed_check]

    prepared: list[_Prepared] = []
    try:
        with ResultsStore(store_path) as store:
            for source in sources:
                run_id = new_run_id()
                staging = make_staging_dir(out_dir, run_id)
                prepared.append(_Prepared(source, run_id, staging, out_dir / "runs" / run_id,
                                          *prepare_model(source, configs, staging)))
            by_target = _run_matrix(healthy, prepared, settings, busy_wait_seconds, notify,
                                    accelerators)
            runs = []
            for index, model in enumerate(prepared):
                results: list[ResultRecord] = []
                for target in targets:
                    if target.name in left_out:
                        results += _failed_records(target, model.artifacts, "unhealthy",
                                                   left_out[target.name],
                                                   status=Status.SKIPPED)
                    elif target.name in failed_check:
                        problem = failed_check[target.name]
                        results += _failed_records(target, model.artifacts,
                                                   error_class(problem), str(problem))
                    else:
                        results += by_target[target.name][index]
                    results += model.failed_records(target)
                results = _mark_shared_machines(results, concurrent=len(healthy) > 1)
                run = new_run(model.run_id, model.source, model.final_dir, results, tags)
                publish_run(store, run, model.staging, model.final_dir)
                runs.append(run)
    except BaseException:
        for model in prepared:
            shutil.rmtree(model.staging, ignore_errors=True)
        raise
    cells = [BenchCell(target=r.target, model=run.model_name, variant=r.variant,
                       status=r.status, error_class=r.error_class or "", error=r.error or "",
                       p50_ms=r.p50_ms, verdict=r.verdict or "",
                       verdict_reasons=r.verdict_reasons)
             for run in runs for r in run.results]
    return BenchOutcome(runs=runs, cells=cells, left_out=left_out, store_path=store_path)


def _run_matrix(targets: Sequence[Target | ScheduledTarget], prepared: list[_Prepared],
                settings: dict[str, Any] | None, busy_wait_seconds: float,
                notify: Callable[[BenchEvent], None],
                accelerators: Sequence[str] | None = None
                ) -> dict[str, list[list[ResultRecord]]]:
    """One thread per board; each board runs the models one after the other."""
    def board_jobs(target: Target | ScheduledTarget) -> list[list[ResultRecord]]:
        done = []
        for model in prepared:
            done.append(_one_job(target, model, settings, busy_wait_seconds, notify,
                                 accelerators))
        return done

    if not targets:
        return {}
    pool = ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="board")
    try:
        futures = {t.name: pool.submit(board_jobs, t) for t in targets}
        return {name: future.result() for name, future in futures.items()}
    except BaseException:
        cancel_running_jobs()  # Ctrl-C: every board's job is stopped, then its lease released
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        allow_jobs()


def _one_job(target: Target | ScheduledTarget, model: _Prepared,
             settings: dict[str, Any] | None, busy_wait_seconds: float,
             notify: Callable[[BenchEvent], None],
             accelerators: Sequence[str] | None = None) -> list[ResultRecord]:
    """Run one model's variants on one board; a board failure becomes failed records."""
    deadline = time.monotonic() + busy_wait_seconds
    name = model.source.name
    if not model.artifacts:  # every variant failed to build: nothing to send
        return []
    if not isinstance(target, Target):
        return _one_scheduled_job(target, model, settings, busy_wait_seconds, notify)
    while True:
        notify(BenchEvent(target.name, name, "running"))
        try:
            records = run_on_target(target, f"{model.run_id}-{name}", model.artifacts, settings,
                                    None, model.references, accelerators=accelerators)
        except BoardBusyError as exc:
            if time.monotonic() >= deadline:
                return _give_up(target, model, exc, notify)
            notify(BenchEvent(target.name, name, "waiting", str(exc)))
            # Jitter, so hosts waiting for one board do not all knock at the same moment.
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())) * random.uniform(0.5, 1))
            continue
        except EdgeError as exc:
            return _give_up(target, model, exc, notify)
        failed = sum(not r.ok for r in records)
        notify(BenchEvent(target.name, name, "ok" if not failed else "failed",
                          f"{failed} variant(s) failed" if failed else ""))
        return records


def _one_scheduled_job(slot: ScheduledTarget, model: _Prepared,
                       settings: dict[str, Any] | None, busy_wait_seconds: float,
                       notify: Callable[[BenchEvent], None]) -> list[ResultRecord]:
    """Wait in the coordinator's queue, run on the place it allots, give the place back."""
    from .scheduling import run_scheduled

    name = model.source.name

    def status(update: SchedulerStatus) -> None:
        state = "running" if update.state in ("acquired", "reacquired") else "waiting"
        notify(BenchEvent(slot.name, name, state, str(update)))

    def job(target: Target) -> list[ResultRecord]:
        return run_on_target(target, f"{model.run_id}-{name}", model.artifacts, settings, None,
                             model.references)

    notify(BenchEvent(slot.name, name, "waiting", f"reserving {slot.selector}"))
    try:
        records = run_scheduled(slot, job, on_status=status, wait_seconds=busy_wait_seconds)
    except EdgeError as exc:
        return _give_up(slot, model, exc, notify)
    failed = sum(not r.ok for r in records)
    notify(BenchEvent(slot.name, name, "ok" if not failed else "failed",
                      f"on {records[0].target}" + (f", {failed} variant(s) failed" if failed
                                                   else "") if records else ""))
    return records


def _give_up(target: Target | ScheduledTarget, model: _Prepared, exc: EdgeError,
             notify: Callable[[BenchEvent], None]) -> list[ResultRecord]:
    kind = error_class(exc)
    notify(BenchEvent(target.name, model.source.name, "failed", f"{kind}: {exc}"))
    return _failed_records(target, model.artifacts, kind, str(exc))


def error_class(exc: BaseException) -> str:
    """The failure kinds of :mod:`toolkit.errors`, as a report column says them."""
    for cls, name in ((InfrastructureError, "infrastructure"), (AgentError, "job"),
                      (ResultError, "result"), (UsageError, "usage")):
        if isinstance(exc, cls):
            return name
    return type(exc).__name__


def _failed_records(target: Target | ScheduledTarget, artifacts: list[Artifact], kind: str,
                    message: str, *, status: Status = Status.ERROR) -> list[ResultRecord]:
    return [ResultRecord(target=target.name, recipe=a.variant, status=status,
                         stage=Stage.BOARD, error_class=kind, error=message,
                         artifact=artifact_facts(a)) for a in artifacts]


def _mark_shared_machines(results: list[ResultRecord], *,
                          concurrent: bool) -> list[ResultRecord]:
    """Note, on each record, the other boards that ran on the same kernel at the same time."""
    if not concurrent:
        return results
    by_boot: dict[str, set[str]] = {}
    for record in results:
        boot = (record.board or {}).get("boot_id")
        if boot:
            by_boot.setdefault(boot, set()).add(record.target)
    marked = []
    for record in results:
        boot = (record.board or {}).get("boot_id")
        others = tuple(sorted(by_boot.get(boot, set()) - {record.target})) if boot else ()
        marked.append(record.replace(measured_beside=others) if others else record)
    return marked


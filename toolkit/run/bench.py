"""Lab benchmarking: models x variants x boards, every board busy at once.

A preset of :func:`toolkit.run.execute.execute`, which holds the flow it shares with
``edge deploy``.

Each model is compressed once on the host; then one thread per board runs the
board's jobs one model after the other, so a board never runs two jobs of ours
at a time, and the board's lease (:mod:`toolkit.boards.lease`) keeps other hosts' jobs
off it too: a busy board is waited for, not skipped.  The job runner retries
infrastructure failures a bounded number of times with backoff; a board that
still fails (unreachable, link lost, disk full) marks its cells with the error
class and the other boards finish.  Each model becomes one stored run holding
every board's results, so the report compares boards side by side.

A board entry can also be a labgrid selector (``tag:board=rpi4``, a
:class:`~toolkit.labgrid.selector.ScheduledTarget`): each of its jobs then waits in the
coordinator's queue for a matching place, runs there (under the board's lease too)
and gives the place back; its results are named by the place that ran them.

Example::

    outcome = bench(["examples/digits_cnn.py"], targets=load_lab().select("tag:rpi4"),
                    recipes="fp32,int8")
    outcome.complete, [c.status for c in outcome.cells]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.defaults import DEFAULT_BUSY_WAIT_SECONDS as DEFAULT_BUSY_WAIT_SECONDS
from toolkit.defaults import DEFAULT_OUT_DIR
from toolkit.errors import MatrixIncomplete, UsageError
from toolkit.results.record import Status
from toolkit.results.store import StoredRun
from toolkit.run.boards import board_sources
from toolkit.run.execute import BoardEvent as BenchEvent
from toolkit.run.execute import execute
from toolkit.run.plan import Policy, RunPlan, Sweep

if TYPE_CHECKING:
    from toolkit.boards.targets import Target
    from toolkit.labgrid.selector import ScheduledTarget


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
    #: the board's named conditions beside VALID (``stalls: ...``), as the report shows them
    conditions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status.parse(self.status, f"cell {self.variant}"))

    @property
    def caveat(self) -> bool:
        """Measured and VALID, with a condition the board named (``stalls: ...``)."""
        return self.status is Status.OK and self.verdict != "INVALID" and bool(self.conditions)

    @property
    def shown_status(self) -> str:
        """What the summary says: VALID (with the board's conditions, ``VALID; stalls:
        ...``, as the report says it), INVALID with its reasons, or the failure's reason."""
        if self.status is Status.OK:
            if self.verdict and self.verdict != "VALID":
                return f"{self.verdict}: {'; '.join(self.verdict_reasons)}".rstrip(": ")
            return "; ".join([self.verdict or "ok", *self.conditions])
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


def bench(models: Sequence[str | Path], *, targets: Sequence[Target | ScheduledTarget],
          recipes: str | None = None,
          out_dir: str | Path = DEFAULT_OUT_DIR, store_path: str | Path | None = None,
          settings: Mapping[str, object] | None = None,
          health: Callable[[Target], str | None] | None = None,
          busy_wait_seconds: float = DEFAULT_BUSY_WAIT_SECONDS,
          on_event: Callable[[BenchEvent], None] | None = None,
          tags: Iterable[str] = (),
          threads: Sequence[int] | None = None,
          accelerators: Sequence[str] | None = None,
          conversion_cache: str | Path | None = None,
          runtimes: Sequence[str] = ()) -> BenchOutcome:
    """Run every model's ``recipes`` on every target; store one run per model.

    ``recipes`` None: each model's default (``fp32,int8``; a ``.tflite`` as given).

    The preset of :func:`toolkit.run.execute.execute` for a lab: every board at once,
    and a board that fails marks its cells while the others finish.
    ``health(target)`` returns why a board must be left out (None: healthy); a board the
    coordinator allots is checked when it is acquired instead.  ``settings``, ``threads``
    and ``accelerators`` are as :func:`toolkit.run.deploy.deploy` takes them, on every
    board, allotted ones too; so are ``runtimes``, for every model file.
    """
    from toolkit.compress import parse_recipes

    if not targets:
        raise UsageError("no target given; use for example --targets local")
    plan = RunPlan(models=tuple(Path(m) for m in models),
                   recipes=tuple(parse_recipes(recipes)) if recipes else (),
                   boards=tuple(board_sources(targets)),
                   settings=dict(settings or {}),
                   sweep=Sweep(threads=tuple(threads or ()),
                               accelerators=tuple(accelerators or ())),
                   policy=Policy(busy_wait_seconds=busy_wait_seconds, health=health,
                                 keep_going=True, parallel=True,
                                 conversion_cache=Path(conversion_cache) if conversion_cache
                                 else None),
                   out_dir=Path(out_dir), store_path=store_path, tags=tuple(tags),
                   runtimes=tuple(runtimes))
    execution = execute(plan, on_event=on_event)
    runs = [done.run for done in execution.runs]
    cells = [BenchCell(target=r.target, model=run.model_name, variant=r.variant,
                       status=r.status, error_class=r.error_class or "", error=r.error or "",
                       p50_ms=r.p50_ms, verdict=r.verdict or "",
                       verdict_reasons=r.verdict_reasons, conditions=r.verdict_conditions)
             for run in runs for r in run.results]
    return BenchOutcome(runs=runs, cells=cells, left_out=execution.left_out,
                        store_path=execution.store_path)

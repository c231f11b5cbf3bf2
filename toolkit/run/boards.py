"""Where a job runs: a named board, or one a labgrid coordinator allots per job.

A :class:`BoardSource` hides which: :meth:`BoardSource.run` runs a job on the board
and gives it back, waiting while another job holds it (the *busy-wait* policy).
This is the one place that tells :class:`~toolkit.boards.targets.Target` (a target file or a
lab board) from :class:`~toolkit.labgrid.selector.ScheduledTarget` (a labgrid selector).

The job is a callable given the :class:`Target` to run on, rather than a context
manager yielding one, because a labgrid place that stopped answering is
power-cycled and the job run again *inside* the same hold (:mod:`toolkit.labgrid.hold`),
and the board's own lease is taken per job by :class:`~toolkit.run.runner.JobRunner`.

Example::

    [source] = board_sources(load_lab().select_jobs(["local"]))
    records = source.run(lambda target: measure(target), busy_wait_seconds=60,
                         on_status=lambda message, ready: print(message))
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from toolkit.boards.targets import Target
from toolkit.errors import BoardBusyError
from toolkit.run.cancel import cancel_requested

if TYPE_CHECKING:
    from toolkit.labgrid.hold import SchedulerStatus
    from toolkit.labgrid.selector import ScheduledTarget

T = TypeVar("T")

#: ``on_status(message, ready)``: what the hold is doing; ``ready`` once the job starts.
StatusCallback = Callable[[str, bool], None]


@dataclass(frozen=True)
class NamedBoard:
    """A board known before the run: a target file or a lab file's board."""

    target: Target

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def known(self) -> Target | None:
        """The board, known now: checked before anything is converted."""
        return self.target

    def busy_now(self) -> str | None:
        """Why the board cannot be had now (another job holds its lease), or None."""
        from toolkit.boards.lab import board_status

        status = board_status(self.target)
        return f"{self.name} is busy: locked by {status.owner}" if status.state == "held" \
            else None

    def run(self, job: Callable[[Target], T], *, busy_wait_seconds: float,
            on_status: StatusCallback) -> T:
        """``job(target)``; while another job holds the board's lease, wait (with jitter,
        so hosts waiting for one board do not all knock at once) up to ``busy_wait_seconds``."""
        deadline = time.monotonic() + busy_wait_seconds
        while True:
            on_status("", True)
            try:
                return job(self.target)
            except BoardBusyError as exc:
                if busy_wait_seconds == 0:
                    raise BoardBusyError(f"{exc} (--busy-wait 0: not waiting)",
                                         target=self.name) from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BoardBusyError(f"{exc}; gave up after waiting {busy_wait_seconds:g} s "
                                         "(--busy-wait)", target=self.name) from None
                on_status(f"waiting: {exc}", False)
                _sleep(min(5.0, left) * random.uniform(0.5, 1))


@dataclass(frozen=True)
class LabgridBoard:
    """A board the labgrid coordinator allots per job (``tag:board=rpi4``)."""

    slot: ScheduledTarget

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def known(self) -> Target | None:
        """None: the board is known only once a place is acquired."""
        return None

    def check(self) -> None:
        """The coordinator reachable, with a place for the selector, before any work."""
        from toolkit.labgrid import hold

        hold.check_coordinator(self.slot)

    def busy_now(self) -> str | None:
        """Why no place can be had now (each one acquired, allotted or bad), or None: asked
        of the coordinator, nothing reserved or held (:func:`toolkit.labgrid.hold.busy_now`)."""
        from toolkit.labgrid import hold

        return hold.busy_now(self.slot)

    def run(self, job: Callable[[Target], T], *, busy_wait_seconds: float,
            on_status: StatusCallback) -> T:
        """Reserve, wait in the coordinator's queue, acquire, ``job(target)``, release."""
        from toolkit.labgrid import hold

        def status(update: SchedulerStatus) -> None:
            on_status(str(update), update.state in ("acquired", "reacquired"))

        on_status("reserving a board", False)
        return hold.run_scheduled(self.slot, job, on_status=status,
                                  wait_seconds=busy_wait_seconds)


BoardSource = NamedBoard | LabgridBoard


def board_sources(chosen: Sequence[Target | ScheduledTarget]) -> list[BoardSource]:
    """What :meth:`toolkit.boards.lab.Lab.select_jobs` chose, as board sources."""
    return [NamedBoard(item) if isinstance(item, Target) else LabgridBoard(item)
            for item in chosen]


def _sleep(seconds: float) -> None:
    """Sleep, waking every 0.2 s to notice Ctrl-C or SIGTERM (:mod:`toolkit.run.cancel`)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not cancel_requested():
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


__all__ = ["BoardSource", "LabgridBoard", "NamedBoard", "StatusCallback", "board_sources"]

"""Holding a labgrid place while a job runs: reserve, wait in the queue, acquire, release.

A lab that shares boards between people and CI runs labgrid's coordinator: places
with tags, reservations served by priority then age, place locks.  A
:class:`~toolkit.labgrid.selector.ScheduledTarget` says which places a job may get
(:mod:`toolkit.labgrid.selector`); :mod:`toolkit.labgrid.client` speaks to the
coordinator.

:func:`check_coordinator` finds, before any work, a place the job can get;
:func:`busy_now`, for ``--busy-wait 0``, whether one is free now.
:func:`run_scheduled` reserves (``reserve --wait`` semantics), reports the queue
position while it waits, acquires the place, runs the job on it and always
releases, also on errors and Ctrl-C.  A board that stopped answering is
power-cycled or its place marked bad (:mod:`toolkit.labgrid.health`).  The reservation
itself, kept through all of this, is :class:`~toolkit.labgrid.reservation.PlaceHold`.

The coordinator cannot be the only fence: its place locks never expire, and a
restart forgets every lock and reservation.  Each job therefore still takes the
board's own lease (:mod:`toolkit.boards.lease`) underneath, and a job that finds the lease
held (a job the coordinator forgot) waits for it while keeping the place.  When
the coordinator goes away, a waiting job reconnects and reserves again; a running
job goes on under its lease and acquires its place again once the coordinator is
back.  A coordinator that stays away longer than ``reconnect_seconds`` ends a
waiting job with one line (:class:`~toolkit.errors.InfrastructureError`, exit 3).

A place whose holder died (SIGKILL by the OOM killer or a CI timeout) would stay locked
forever: a job that holds a place beats, and a waiting job releases a place whose edge
holder stopped beating and whose board's lease is over (:mod:`toolkit.labgrid.liveness`).

The coordinator has no authentication: anyone who reaches its port can release
any place.  Run it on a trusted network, or reach it through an SSH tunnel.

Example::

    slot = ScheduledTarget.resolve("tag:board=rpi4", coordinator="lab:20408")
    records = run_scheduled(slot, lambda target: run_on_target(target, ...),
                            on_status=print)   # "queue position 2 of 3 for board=rpi4"
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from toolkit.boards.targets import Target
from toolkit.defaults import DEFAULT_BUSY_WAIT_SECONDS
from toolkit.errors import BoardBusyError, InfrastructureError, TargetError
from toolkit.labgrid.client import CALL_TIMEOUT_SECONDS, Session, client_name
from toolkit.labgrid.health import BOOT_SECONDS, POWER_OFF_SECONDS, is_bad
from toolkit.labgrid.liveness import HOLDER_SILENCE_SECONDS
from toolkit.labgrid.reservation import Allocation, PlaceHold, SchedulerStatus
from toolkit.labgrid.selector import ScheduledTarget
from toolkit.run.cancel import cancel_requested

T = TypeVar("T")

#: How long a coordinator may stay away before a waiting job gives up.
RECONNECT_SECONDS = 30.0


def run_scheduled(slot: ScheduledTarget, job: Callable[[Target], T], *,
                  on_status: Callable[[SchedulerStatus], None] | None = None,
                  wait_seconds: float = DEFAULT_BUSY_WAIT_SECONDS,
                  reconnect_seconds: float = RECONNECT_SECONDS,
                  boot_seconds: float = BOOT_SECONDS,
                  power_off_seconds: float = POWER_OFF_SECONDS,
                  holder_silence_seconds: float = HOLDER_SILENCE_SECONDS) -> T:
    """Run ``job(target)`` on a board the coordinator allots to ``slot``; always release.

    While the board's own lease is held by another job (one the coordinator forgot
    in a restart), the place is kept and the job is tried again until
    ``wait_seconds`` have passed since the reservation.  A board that stopped
    answering is power-cycled once (when its place has power control) and given
    ``boot_seconds`` to answer SSH, then the job runs again; otherwise its place is
    marked bad (see :mod:`toolkit.labgrid.health`).  While it waits, a place whose edge
    holder stopped beating ``holder_silence_seconds`` ago and whose board's lease is over
    is released (see the module's docstring).
    """
    notify = on_status or (lambda status: None)
    deadline = time.monotonic() + wait_seconds
    hold = PlaceHold(slot, notify, reconnect_seconds, holder_silence_seconds)
    try:
        held = hold.acquire(wait_seconds)
        cycled = False
        while True:
            try:
                return job(held.target)
            except BoardBusyError as exc:
                if time.monotonic() >= deadline:
                    raise
                notify(SchedulerStatus("lease-busy", f"{held.place} acquired, its lease is "
                                       f"held by another job: {exc}", place=held.place))
                _sleep_unless_cancelled(min(2.0, max(0.0, deadline - time.monotonic()))
                                        * random.uniform(0.5, 1))
            except InfrastructureError as exc:
                if not hold.recover(held, exc, cycled=cycled, boot_seconds=boot_seconds,
                                    off_seconds=power_off_seconds):
                    raise
                cycled = True
    finally:
        hold.release()


@contextlib.contextmanager
def hold_board(slot: ScheduledTarget, *,
               on_status: Callable[[SchedulerStatus], None] | None = None,
               wait_seconds: float = DEFAULT_BUSY_WAIT_SECONDS,
               reconnect_seconds: float = RECONNECT_SECONDS,
               holder_silence_seconds: float = HOLDER_SILENCE_SECONDS) -> Iterator[Allocation]:
    """Reserve a place for ``slot``, wait, acquire it; released on every way out."""
    hold = PlaceHold(slot, on_status or (lambda status: None), reconnect_seconds,
                 holder_silence_seconds)
    try:
        yield hold.acquire(wait_seconds)
    finally:
        hold.release()


def check_coordinator(slot: ScheduledTarget, timeout: float = CALL_TIMEOUT_SECONDS) -> None:
    """Reach the coordinator and find a place ``slot`` can get, before any work is done."""
    session = Session.open(slot.coordinator, client_name(), timeout)
    try:
        places = session.places()
    finally:
        session.close()
    matching = {name: tags for name, tags in places.items() if slot.selector.matches(tags)}
    if matching and all(is_bad(tags) for tags in matching.values()):
        raise InfrastructureError(
            f"every labgrid place tagged {slot.selector} on {slot.coordinator} is marked bad "
            f"by edge ({', '.join(sorted(matching))}): fix the boards, then edge lab "
            "mark-good PLACE (edge doctor shows why)")
    if not matching:
        tagged = "; ".join(f"{name}: {_tags_text(tags)}" for name, tags in sorted(places.items()))
        raise TargetError(f"no labgrid place on {slot.coordinator} is tagged {slot.selector} "
                          f"(places: {tagged or 'none'})")


def busy_now(slot: ScheduledTarget, timeout: float = CALL_TIMEOUT_SECONDS) -> str | None:
    """Why ``slot`` cannot have a place now (each matching place acquired, allotted to a
    reservation or marked bad), or None when one is free: what ``--busy-wait 0`` checks
    before any work.  Nothing is reserved or held: like a named board's lease, the answer
    is the coordinator's now, and a place taken meanwhile is still busy at the job."""
    session = Session.open(slot.coordinator, client_name(), timeout)
    try:
        places = session.all_places()
    finally:
        session.close()
    taken = []
    for place in sorted(places, key=lambda place: place.name):
        tags = dict(place.tags)
        if not slot.selector.matches(tags):
            continue
        if is_bad(tags):
            taken.append(f"{place.name}: marked bad")
        elif place.acquired:
            taken.append(f"{place.name}: acquired by {place.acquired}")
        elif place.reservation:
            taken.append(f"{place.name}: allotted to another reservation")
        else:
            return None
    return (f"no labgrid place tagged {slot.selector} on {slot.coordinator} is free now "
            f"({'; '.join(taken) or 'none is tagged so'})")


def _tags_text(tags: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items())) or "no tags"


def _sleep_unless_cancelled(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cancel_requested():
            raise KeyboardInterrupt("cancelled while waiting for a board")
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))


# Allocation and SchedulerStatus are defined in reservation, with the PlaceHold that makes
# them; they stay importable from here, where callers have always taken them.
__all__ = ["RECONNECT_SECONDS", "Allocation", "SchedulerStatus", "busy_now", "check_coordinator",
           "hold_board", "run_scheduled"]
